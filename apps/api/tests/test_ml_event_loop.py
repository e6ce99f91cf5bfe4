"""CPU-bound ML work never holds the event loop: a real server answers /healthz at once while the
largest embedding requests it accepts are computing."""

from __future__ import annotations

import asyncio
import random
import time

import httpx
import pytest
from live_server import live_server

from sophia.ml.embeddings import MODEL_ID

pytestmark = pytest.mark.load

HEAVY_REQUESTS = 4
POLLS = 100


def maximum_inputs(settings, seed: int) -> list[str]:
    """As many distinct texts (`ml_max_inputs`) as long as a body may carry (`max_body_bytes`):
    each is cut at 256 tokens by the model, so this is the most work one request can ask for."""
    chars = min(settings.ml_max_input_chars, (settings.max_body_bytes - 1024) // settings.ml_max_inputs - 4)
    rng = random.Random(seed)
    words = ["pipeline", "renewal", "discount", "churn", "quarter", "contract", "pilot", "budget"]
    return [
        " ".join(rng.choice(words) for _ in range(chars // 6))[:chars] for _ in range(settings.ml_max_inputs)
    ]


async def test_healthz_answers_within_50_ms_while_four_maximum_embedding_requests_run(
    settings, api_keys, sentence_encoder, tmp_path
):
    bodies = [{"model": MODEL_ID, "input": maximum_inputs(settings, seed)} for seed in range(HEAVY_REQUESTS)]
    # A deadline long enough for the model to take them all: at this machine's pace a full request
    # takes it about 16 s per thread, and one that cannot finish in time is refused at once
    ml_on = {"SOPHIA_ML_ENABLED": "true", "SOPHIA_ML_TIMEOUT_S": "300"}
    async with live_server(settings, "granian", tmp_path, grace_s=1.0, extra_env=ml_on) as live:
        headers = {"Authorization": f"Bearer {api_keys['read']}"}
        async with httpx.AsyncClient(base_url=live.url, timeout=300) as http:
            embed = "/v1/embeddings"
            heavy = [asyncio.create_task(http.post(embed, json=body, headers=headers)) for body in bodies]
            try:
                await computing(http, (HEAVY_REQUESTS - 1) * settings.ml_max_inputs)
                latencies = []
                for _ in range(POLLS):
                    started = time.perf_counter()
                    answer = await http.get("/healthz")
                    latencies.append(time.perf_counter() - started)
                    assert answer.status_code == 200
                    await asyncio.sleep(0.02)
                still_running = sum(not task.done() for task in heavy)
            finally:
                for task in heavy:
                    task.cancel()
                await asyncio.gather(*heavy, return_exceptions=True)
    latencies.sort()
    p95 = latencies[int(POLLS * 0.95) - 1]
    print(f"/healthz under ML load: median {latencies[POLLS // 2] * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms")
    assert still_running == HEAVY_REQUESTS  # the polls all ran while every heavy request computed
    # 95 of 100 within 50 ms. Not all: on two cores the model's threads take both, and the kernel
    # now and then leaves the event loop's thread waiting for one (a single poll of 60-140 ms in
    # about one run of three here; the loop itself runs no model work, see batching.py).
    assert p95 < 0.05


async def computing(http: httpx.AsyncClient, inputs: int) -> None:
    """Until the model's queue holds more than `inputs`: the heavy bodies are in (read, parsed and
    checked on the event loop, which is not what this measures) and are being embedded."""
    async with asyncio.timeout(30):
        while True:
            metrics = (await http.get("/metrics")).text
            depth = [line for line in metrics.splitlines() if line.startswith("sophia_ml_queue_depth")]
            if sum(float(line.rsplit(" ", 1)[1]) for line in depth) > inputs:
                return
            await asyncio.sleep(0.05)
