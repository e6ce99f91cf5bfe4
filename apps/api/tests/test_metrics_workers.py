"""With several workers, /metrics reports every worker's requests, whichever worker answers."""

import re

import httpx
import pytest
from live_server import live_server


@pytest.mark.e2e
async def test_metrics_sum_requests_over_all_workers(settings, api_keys, tmp_path):
    async with live_server(settings, "granian", tmp_path, grace_s=5, workers=2) as live:
        base = f"http://127.0.0.1:{live.port}"
        headers = {"Authorization": f"Bearer {api_keys['read']}"}
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as client:
            for _ in range(40):
                response = await client.get("/api/v1/records/00000000-0000-7000-8000-000000000000")
                assert response.status_code == 404
            # New connections are spread over the workers; each scrape must see all 40.
            for _ in range(6):
                async with httpx.AsyncClient(base_url=base, timeout=10) as scraper:
                    text = (await scraper.get("/metrics")).text
                match = re.search(
                    r"sophia_http_request_duration_seconds_count"
                    r'\{method="GET",route="/api/v1/records/\{record_id\}",'
                    r'status="404"\} (\d+(?:\.\d+)?)',
                    text,
                )
                assert match, text[:2000]
                assert float(match[1]) == 40
                assert "sophia_db_pool_max_connections" in text
