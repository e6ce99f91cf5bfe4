"""The ML routes on a real model: /api/v1/ml/embed, OpenAI's /v1/embeddings through the official
client, cache hits, clear 4xx for bad input, 503 when the model's queue is full."""

from __future__ import annotations

import asyncio
import base64
import shutil

import httpx
import numpy as np
import pytest
from app_clients import app_client, client_of, started_app
from metrics import sample
from problem_assertions import assert_problem
from waiting import eventually

from sophia.ml.embeddings import model_version
from sophia.ml.heads import IncompatibleHead
from sophia.ml.labels import DEFAULT_HEAD, DEFAULT_LABELS, LabelHead

MODEL = "all-MiniLM-L6-v2"
OPENAI_BASE = "http://sophia.test/v1"
TEXTS = [
    "Customer asked for a discount on the annual plan.",
    "The integration keeps failing and support has not answered for three days.",
    "Let's schedule the renewal call for next Tuesday.",
]


@pytest.fixture(scope="module")
def ml_settings(settings):
    return settings.model_copy(update={"ml_enabled": True, "ml_max_inputs": 8, "ml_max_input_chars": 500})


@pytest.fixture(scope="module")
async def ml_app(ml_settings):
    """The module's app with its model loaded, shared by its tests (loading one costs 0.3 s)."""
    async with started_app(ml_settings) as app:
        yield app


@pytest.fixture(scope="module")
async def ml(ml_app, api_keys):
    async with client_of(ml_app, api_keys["read"]) as client:
        yield client


def cache_hits() -> float:
    return sum(sample("sophia_cache_hits_total", tier=t) for t in ("l1", "l2"))


async def test_embed_answers_unit_vectors_in_order_and_the_same_text_the_same_vector(ml):
    response = await ml.post("/api/v1/ml/embed", json={"inputs": [*TEXTS, TEXTS[0]]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["dimensions"]) == ("all-MiniLM-L6-v2", 384)
    vectors = np.array(body["embeddings"], dtype=np.float32)
    assert vectors.shape == (4, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(vectors[0], vectors[3])
    similarity = vectors @ vectors.T
    assert similarity[0, 1] < 0.9  # different texts, different vectors


async def test_a_text_embedded_again_comes_from_the_cache(ml):
    text = "Champion is leaving the company next month; we need a new sponsor."
    first = (await ml.post("/api/v1/ml/embed", json={"inputs": [text]})).json()["embeddings"]
    hits = cache_hits()
    again = (await ml.post("/api/v1/ml/embed", json={"inputs": [text]})).json()["embeddings"]
    assert again == first
    assert cache_hits() == hits + 1


async def test_the_official_openai_client_works_unchanged(ml_app, api_keys):
    import openai  # here, not at the top: half a second of every xdist worker's collection

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=ml_app)) as http:
        client = openai.AsyncOpenAI(api_key=api_keys["read"], base_url=OPENAI_BASE, http_client=http)
        floats = await client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
        packed = await client.embeddings.create(model=MODEL, input=TEXTS[0])  # the client asks for base64
        with pytest.raises(openai.UnprocessableEntityError) as unknown:
            await client.embeddings.create(model="text-embedding-3-small", input="x")
        assert "Unknown model" in unknown.value.response.json()["detail"]  # a problem+json body
        stranger = openai.AsyncOpenAI(api_key="sk-wrong", base_url=OPENAI_BASE, http_client=http)
        with pytest.raises(openai.AuthenticationError):
            await stranger.embeddings.create(model=MODEL, input="x")
    assert [item.index for item in floats.data] == [0, 1, 2]
    assert len(floats.data[0].embedding) == 384
    assert floats.usage.prompt_tokens == floats.usage.total_tokens > len(TEXTS)
    assert np.allclose(packed.data[0].embedding, floats.data[0].embedding, atol=1e-6)


async def test_base64_is_little_endian_float32(ml):
    body = {"model": "all-MiniLM-L6-v2", "input": [TEXTS[1]], "encoding_format": "base64"}
    packed = (await ml.post("/v1/embeddings", json=body)).json()["data"][0]["embedding"]
    floats = (await ml.post("/api/v1/ml/embed", json={"inputs": [TEXTS[1]]})).json()["embeddings"][0]
    assert np.allclose(np.frombuffer(base64.b64decode(packed), dtype="<f4"), floats, atol=1e-6)


@pytest.mark.parametrize(
    ("path", "body", "where"),
    [
        ("/api/v1/ml/embed", {"inputs": []}, ["body", "inputs"]),
        ("/api/v1/ml/embed", {"inputs": ["x"] * 9}, ["body", "inputs"]),
        ("/api/v1/ml/embed", {"inputs": ["ok", "x" * 501]}, ["body", "inputs", 1]),
        ("/api/v1/ml/embed", {"inputs": [1]}, ["body", "inputs", 0]),
        ("/api/v1/ml/embed", {"inputs": ["x"], "extra": 1}, ["body", "extra"]),
        ("/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": []}, ["body", "input"]),
        ("/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": [[1, 2]]}, ["body", "input"]),
        (
            "/v1/embeddings",
            {"model": "all-MiniLM-L6-v2", "input": "x", "dimensions": 64},
            ["body", "dimensions"],
        ),
    ],
    ids=[
        "empty",
        "too-many",
        "too-long",
        "not-text",
        "unknown-field",
        "openai-empty",
        "tokens",
        "dimensions",
    ],
)
async def test_bad_input_is_a_422_naming_where(ml, path, body, where):
    problem = assert_problem(await ml.post(path, json=body), 422)
    location = problem["errors"][0]["location"]
    assert location[: len(where)] == where


async def test_a_full_queue_answers_503_with_retry_after_and_the_model_recovers(settings, api_keys):
    """The first batch waits `ml_max_wait_s` to fill, which holds the queue full while the burst
    arrives: the six requests reach the queue within a few ms of each other (the test passed with
    0.01 s on two busy cores, under coverage), and each batch here costs that wait."""
    tiny = settings.model_copy(update={"ml_enabled": True, "ml_max_queue": 2, "ml_max_wait_s": 0.05})
    async with app_client(tiny, api_keys["read"]) as client:
        texts = [f"queue test {n} {TEXTS[n % 3]}" for n in range(6)]  # uncached, so they queue
        answers = await asyncio.gather(
            *(client.post("/api/v1/ml/embed", json={"inputs": [t]}) for t in texts)
        )
        statuses = sorted(response.status_code for response in answers)
        assert statuses[0] == 200
        assert statuses[-1] == 503
        refused = next(response for response in answers if response.status_code == 503)
        assert int(assert_problem(refused, 503) and refused.headers["retry-after"]) >= 1
        assert (
            await client.post("/api/v1/ml/embed", json={"inputs": ["after the burst"]})
        ).status_code == 200


async def test_a_request_the_model_cannot_take_whole_is_refused_whole_and_none_of_it_computed(
    settings, api_keys
):
    """Six new texts against a queue of four: refused before any is queued. (Queued one by one,
    the first four were computed after the 503, for nobody.)"""
    small = settings.model_copy(update={"ml_enabled": True, "ml_max_queue": 4})
    async with app_client(small, api_keys["read"]) as client:
        computed = sample("sophia_ml_batch_size_sum", model="embeddings")
        refused = await client.post("/api/v1/ml/embed", json={"inputs": [f"whole {n}" for n in range(6)]})
        assert "at most 4 inputs; this request has 6" in assert_problem(refused, 503)["detail"]
        assert int(refused.headers["retry-after"]) >= 1
        answered = await client.post("/api/v1/ml/embed", json={"inputs": ["the request after it"]})
        assert answered.status_code == 200, answered.text
        assert sample("sophia_ml_batch_size_sum", model="embeddings") == computed + 1  # its one input


async def test_readiness_reports_the_model(ml):
    body = (await ml.get("/readyz")).json()
    assert body["checks"]["model:embeddings"] == "ok"


async def test_without_ml_the_routes_do_not_exist(client):
    assert_problem(await client.post("/api/v1/ml/embed", json={"inputs": ["x"]}), 404)


CLASSIFY_TEXTS = {
    "The Salesforce sync has been failing since Monday, please help.": "support_issue",
    "Let's meet Tuesday at 3pm to go through the proposal.": "scheduling",
    "They want to roll it out to the marketing team too, another 50 seats.": "expansion",
}


async def classified(client: httpx.AsyncClient) -> dict:
    response = await client.post("/api/v1/ml/classify", json={"inputs": list(CLASSIFY_TEXTS)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [result["labels"][0] for result in body["results"]] == list(CLASSIFY_TEXTS.values())
    for result in body["results"]:
        scores = list(result["scores"].values())
        assert scores == sorted(scores, reverse=True)
        assert all(result["scores"][label] >= body["threshold"] for label in result["labels"])
    return body


async def test_classify_gives_each_text_its_labels_best_first_from_the_built_in_head(ml):
    body = await classified(ml)
    assert body["model"] == f"few-shot/{MODEL}"
    assert body["version"] == LabelHead.load(DEFAULT_HEAD).version
    assert body["threshold"] == 0.5


async def test_a_label_set_of_ones_own_is_classified_zero_shot(ml_settings, api_keys, tmp_path):
    labels = tmp_path / "labels.json"
    shutil.copy(DEFAULT_LABELS, labels)
    zero_shot = ml_settings.model_copy(update={"ml_labels_file": labels})
    async with app_client(zero_shot, api_keys["read"]) as client:
        body = await classified(client)
    assert body["model"] == f"zero-shot/{MODEL}"
    assert "+zero-shot-" in body["version"]
    assert body["threshold"] == 0.3


async def test_a_trained_head_of_ones_own_serves_and_a_bad_one_stops_the_start(
    ml_settings, api_keys, tmp_path
):
    own = tmp_path / "own.npz"
    weights = np.zeros((384, 2), np.float32)
    head = LabelHead(weights, np.array([2.0, -2.0], np.float32), ("renewal", "legal"), model_version(True))
    head.save(own)
    async with app_client(
        ml_settings.model_copy(update={"ml_classifier_file": own}), api_keys["read"]
    ) as client:
        response = await client.post("/api/v1/ml/classify", json={"inputs": ["Anything at all."]})
    body = response.json()
    assert (body["model"], body["version"]) == (f"few-shot/{MODEL}", head.version)
    assert body["results"] == [{"labels": ["renewal"], "scores": {"renewal": 0.8808, "legal": 0.1192}}]

    fp32 = ml_settings.model_copy(update={"ml_classifier_file": own, "ml_quantized": False})
    with pytest.raises(
        IncompatibleHead, match=r"SOPHIA_ML_CLASSIFIER_FILE: own\.npz was trained on .* not onnx-fp32"
    ):
        async with app_client(fp32, api_keys["read"]):
            pass
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 cut short")
    for path, message in [("corrupt.npz", "is not a head written by Sophia"), ("absent.npz", "cannot read")]:
        broken = ml_settings.model_copy(update={"ml_classifier_file": tmp_path / path})
        with pytest.raises(ValueError, match=f"SOPHIA_ML_CLASSIFIER_FILE: .*{message}"):
            async with app_client(broken, api_keys["read"]):
                pass


async def test_sentiment_labels_texts_with_probabilities_from_the_trained_head(ml):
    texts = [
        "We signed! The customer is thrilled with the rollout.",
        "This outage is unacceptable, we are furious.",
    ]
    response = await ml.post("/api/v1/ml/sentiment", json={"inputs": texts})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == f"head/{MODEL}"
    assert "+head-" in body["version"]
    assert [result["label"] for result in body["results"]] == ["positive", "negative"]
    for result in body["results"]:
        assert abs(sum(result["scores"].values()) - 1.0) < 1e-5


@pytest.mark.load  # builds the fp32 graph: the model-heavy checks run in the load tier
async def test_with_the_fp32_graph_the_heads_do_not_fit_vader_and_zero_shot_serve(settings, api_keys):
    exact = settings.model_copy(update={"ml_enabled": True, "ml_quantized": False})
    async with app_client(exact, api_keys["read"]) as client:
        response = await client.post("/api/v1/ml/sentiment", json={"inputs": ["Great news, thank you!"]})
        ready = (await client.get("/readyz")).json()
        labels = await classified(client)
    assert labels["model"] == f"zero-shot/{MODEL}"
    assert labels["version"].startswith("onnx-fp32-")
    assert (response.json()["model"], response.json()["version"]) == ("vader", "vader-3.3")
    assert response.json()["results"][0]["label"] == "positive"
    assert ready["checks"]["model:sentiment"] == "ok"


async def test_while_the_models_backlog_is_full_a_request_is_refused_before_its_body_is_read(
    settings, api_keys
):
    import threading

    import httpx

    from sophia.api.app import create_app

    tiny = settings.model_copy(update={"ml_enabled": True, "ml_max_queue": 2})
    app = create_app(tiny)
    read = False

    async def body():
        nonlocal read
        read = True
        yield b'{"inputs": ["never parsed"]}'

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {api_keys['read']}", "Content-Type": "application/json"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://sophia.test", headers=headers
        ) as http:
            batcher = app.state.sophia.models.embeddings.batcher
            release = threading.Event()
            holding = asyncio.create_task(batcher.in_model_thread(release.wait, 10))  # the thread is busy
            await eventually(lambda: batcher.room < tiny.ml_max_queue)
            try:
                refused = await http.post("/api/v1/ml/embed", content=body())
                problem = assert_problem(refused, 503)
                assert "The models are busy" in problem["detail"]
                assert refused.headers["retry-after"] == "1"
                assert not read
            finally:
                release.set()
                await holding
            admitted = await http.post("/api/v1/ml/embed", json={"inputs": ["once the backlog is free"]})
            assert admitted.status_code == 200
