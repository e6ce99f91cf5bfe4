"""Embeddings: offline batch encoding in this process (side A) against `POST /api/v1/ml/embed` under
concurrent clients (side B), on the same kind of texts, in the same run.

    uv run python bench/embed.py [--texts 4096] [--batch 16] [--duration 10] [--clients 64] [--json]

Every text is a distinct business sentence of 10-30 words (templates filled from a seeded RNG), and
no text is sent twice, so the prediction cache (keyed per text) never answers B. A encodes `--texts`
of them with the encoder the server runs (`SentenceEncoder.create` with the settings' quantisation,
int8) on all the CPUs (`--offline-threads`) in batches of `--batch`, the size the server's dynamic
batching forms under this load (each B run reports the mean). The server is up but idle while A
runs. B is the real API with `SOPHIA_ML_ENABLED=true`, `--workers` processes with the shipped
model threads each (CPUs / workers, or `--ml-threads`), and its cache under a prefix of this run's
own. Each client posts one new text
a request over its own keep-alive connection for `--duration` s, the first run starting with A's
texts. A and B alternate `--rounds` times.

Then B at a fixed rate of `--rate-share` of its median rate (open loop; latency counts from when
each request was due, so a late client shows), B with `--multi` texts a request, and cache hits:
`--hot` texts already embedded, asked again and again. Every answer is checked: 384 floats for
each text sent. The client writes HTTP/1.1 by hand on asyncio streams: an httpx client saturated
its core at about 370 req/s here (docs/benchmarks.md), CPU the server would miss on a small machine.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import re
import resource
import secrets
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import harness
import orjson
from harness.texts import BusinessTexts
from prometheus_client.parser import text_string_to_metric_families

from sophia.ml.encoder import SentenceEncoder
from sophia.shared.settings import Settings

GOAL = 0.8
DIMENSIONS = 384
EMBED_PATH = "/api/v1/ml/embed"
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
API_SAMPLES = {
    "sophia_ml_batch_size_count": "batches",
    "sophia_ml_batch_size_sum": "batched_texts",
    "sophia_ml_batch_seconds_sum": "model_s",
}
CACHE_SAMPLES = {"sophia_cache_hits_total": "hits", "sophia_cache_misses_total": "misses"}


HEADLINE = harness.Headline(
    anchor="offline encoding, batches of 16, every core",
    subject="`POST /api/v1/ml/embed`, one new text a request",
    a=harness.Figure("raw.per_s", "embeddings/s"),
    b=harness.Figure("api.per_s", "embeddings/s"),
    goals=(harness.Goal(f"B/A ≥ {GOAL}", at_least=GOAL),),
    section="Embeddings served over HTTP",
)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--texts", type=int, default=4_096, help="texts A encodes in a round")
    parser.add_argument("--batch", type=int, default=16, help="A's batch size (what the server forms)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each B run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of B load before measuring")
    parser.add_argument("--clients", type=int, default=64, help="concurrent clients (connections) of B")
    parser.add_argument("--workers", type=int, default=harness.DEFAULT_WORKERS, help="API processes")
    parser.add_argument(
        "--ml-threads", type=int, help="SOPHIA_ML_THREADS of each API process (default: CPUs / workers)"
    )
    parser.add_argument("--offline-threads", type=int, help="A's model threads (default: all the CPUs)")
    parser.add_argument("--rate-share", type=float, default=0.5, help="fixed rate, as a share of B's max")
    parser.add_argument("--rate-duration", type=float, default=10.0, help="seconds of the fixed-rate run")
    parser.add_argument("--multi", type=int, default=8, help="texts a request of that variant (0: skip)")
    parser.add_argument("--hot", type=int, default=256, help="texts asked again in the cache-hit run")
    parser.add_argument("--seed", type=int, default=5, help="seed of the texts")
    harness.add_common_arguments(parser)
    options = parser.parse_args(argv)
    counts = (options.texts, options.batch, options.clients, options.workers, options.rounds, options.hot)
    threads = [value for value in (options.ml_threads, options.offline_threads) if value is not None]
    if min(counts + tuple(threads)) < 1:
        parser.error("--texts, --batch, --clients, --workers, --*-threads, --rounds, --hot must be >= 1")
    if min(options.duration, options.rate_duration) <= 0 or not 0 < options.rate_share <= 1:
        parser.error("--duration and --rate-duration must be > 0, --rate-share in (0, 1]")
    if options.multi < 0 or options.warmup < 0:
        parser.error("--multi and --warmup must be >= 0")
    return options


def request_bodies(texts: list[str], per_request: int) -> list[bytes]:
    return [
        orjson.dumps({"inputs": texts[start : start + per_request]})
        for start in range(0, len(texts) - per_request + 1, per_request)
    ]


class EmbedConnection:
    """One keep-alive HTTP/1.1 connection posting to `/api/v1/ml/embed`, requests written by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> None:
        self._reader, self._writer, self._head = reader, writer, head

    @classmethod
    async def open(cls, server: harness.ApiServer) -> EmbedConnection:
        reader, writer = await asyncio.open_connection(harness.HOST, server.port)
        head = (
            f"POST {EMBED_PATH} HTTP/1.1\r\nHost: {harness.HOST}:{server.port}\r\n"
            f"Authorization: Bearer {server.env.admin_key}\r\nContent-Type: application/json\r\n"
            "Content-Length: "
        ).encode()
        return cls(reader, writer, head)

    async def post(self, body: bytes) -> tuple[int, bytes]:
        """(status, body) of one request; the server answers with a Content-Length."""
        self._writer.write(b"%s%d\r\n\r\n%s" % (self._head, len(body), body))
        head = await self._reader.readuntil(b"\r\n\r\n")
        length = CONTENT_LENGTH.search(head)
        if length is None:
            raise RuntimeError(f"an answer without Content-Length: {head[:200]!r}")
        return int(head[9:12]), await self._reader.readexactly(int(length.group(1)))

    def close(self) -> None:
        self._writer.close()


@asynccontextmanager
async def connections(server: harness.ApiServer, count: int) -> AsyncIterator[list[EmbedConnection]]:
    pool = list(await asyncio.gather(*(EmbedConnection.open(server) for _ in range(count))))
    try:
        yield pool
    finally:
        for connection in pool:
            connection.close()


@dataclass
class Tally:
    """What the clients got: requests, embeddings checked, errors, and each request's latency."""

    per_request: int
    requests: int = 0
    embeddings: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def record(self, status: int, answer: bytes, started: float) -> None:
        self.latencies_ms.append((time.perf_counter() - started) * 1000)
        self.requests += 1
        vectors = orjson.loads(answer).get("embeddings", []) if status == 200 else []
        if len(vectors) == self.per_request and all(len(vector) == DIMENSIONS for vector in vectors):
            self.embeddings += self.per_request
        else:
            self.errors += 1

    def measurement(self, seconds: float, other_cpu: float | None) -> harness.Measurement:
        latencies = sorted(self.latencies_ms)
        return harness.Measurement(
            operations=self.embeddings,
            seconds=seconds,
            p50_ms=harness.percentile(latencies, 0.5) if latencies else None,
            p99_ms=harness.percentile(latencies, 0.99) if latencies else None,
            errors=self.errors,
            other_cpu=other_cpu,
        )


REFUSED_PAUSE_S = 0.05


def next_body(bodies: Iterator[bytes]) -> bytes:
    body = next(bodies, None)
    if body is None:  # sending a text again would be a cache hit
        raise RuntimeError("B ran out of distinct texts: it answered over 3 times as fast as A")
    return body


async def closed_loop(
    server: harness.ApiServer, clients: int, bodies: Iterator[bytes], per_request: int, duration_s: float
) -> tuple[harness.Measurement, Tally]:
    """`clients` connections, each posting the next body as soon as its last was answered. A body
    refused (503: the model's pace says it would not be done in time, so nothing of it was computed)
    is sent again after `REFUSED_PAUSE_S` rather than spending new texts: on a slow machine the
    model refuses most of a burst of many-text requests, and the refusals, each answered at once,
    would use up the texts prepared for the run (counted as errors all the same)."""
    tally = Tally(per_request)

    async def client(connection: EmbedConnection, deadline: float) -> None:
        body = None
        while time.perf_counter() < deadline:
            body = body or next_body(bodies)
            started = time.perf_counter()
            status, answer = await connection.post(body)
            tally.record(status, answer, started)
            if status == 200:
                body = None
            else:
                await asyncio.sleep(REFUSED_PAUSE_S)

    async with connections(server, clients) as pool:
        with harness.OtherCpu() as other_cpu:
            started = time.perf_counter()
            await asyncio.gather(*(client(connection, started + duration_s) for connection in pool))
            seconds = time.perf_counter() - started
    return tally.measurement(seconds, other_cpu.share), tally


async def fixed_rate(
    server: harness.ApiServer, clients: int, bodies: Iterator[bytes], rate: float, duration_s: float
) -> harness.FixedRate:
    """Open loop: a request every 1/`rate` s on an idle connection of `clients`; dropped if none is."""
    tally, dropped, tasks = Tally(1), 0, set[asyncio.Task[None]]()

    async def send(connection: EmbedConnection, body: bytes, due: float) -> None:
        tally.record(*await connection.post(body), due)
        idle.append(connection)

    async with connections(server, clients) as idle:
        before = resource.getrusage(resource.RUSAGE_SELF)
        with harness.OtherCpu() as other_cpu:
            started = time.perf_counter()
            for index in range(round(rate * duration_s)):
                due = started + index / rate
                await asyncio.sleep(max(due - time.perf_counter(), 0))
                if not idle:
                    dropped += 1
                    continue
                task = asyncio.create_task(send(idle.pop(), next_body(bodies), due))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.gather(*tasks)
            seconds = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
    measured, latencies = tally.measurement(seconds, other_cpu.share), sorted(tally.latencies_ms)
    return harness.FixedRate(
        target_per_s=round(rate),
        per_s=tally.requests / seconds,
        requests=tally.requests,
        p50_ms=measured.p50_ms or 0.0,
        p99_ms=measured.p99_ms or 0.0,
        max_ms=latencies[-1] if latencies else 0.0,
        failed=tally.errors,
        dropped=dropped,
        vus=clients,
        generator_cpu_s=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        other_cpu=measured.other_cpu,
    )


def api_counters(server: harness.ApiServer) -> dict[str, float]:
    """The model's batches and the cache's lookups so far, summed over the API's workers."""
    counts = dict.fromkeys(
        [*API_SAMPLES.values(), *(f"{tier}_{kind}" for tier in ("l1", "l2") for kind in ("hits", "misses"))],
        0.0,
    )
    with urllib.request.urlopen(f"{server.base_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in API_SAMPLES:
                counts[API_SAMPLES[sample.name]] += sample.value
            elif sample.name in CACHE_SAMPLES and sample.labels.get("tier") in ("l1", "l2"):
                counts[f"{sample.labels['tier']}_{CACHE_SAMPLES[sample.name]}"] += sample.value
    return counts


@dataclass(frozen=True)
class Window:
    """One measured B run, with what the API counted and the CPU each component took meanwhile."""

    measured: harness.Measurement
    requests: int
    workers: int
    counters: dict[str, float]
    cpu_s: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        counters, seconds, batches = self.counters, self.measured.seconds, self.counters["batches"]
        lookups = sum(counters[f"l1_{kind}"] for kind in ("hits", "misses"))
        return {
            **self.measured.as_dict(),
            "requests": self.requests,
            "requests_per_s": round(self.requests / seconds, 1),
            "mean_server_batch": round(counters["batched_texts"] / batches, 1) if batches else 0.0,
            "model_busy_share": round(counters["model_s"] / (seconds * self.workers), 3),
            "cache_hits": round(counters["l1_hits"] + counters["l2_hits"]),
            "l1_hit_share": round(counters["l1_hits"] / lookups, 4) if lookups else 0.0,
            "counters": {name: round(value, 3) for name, value in counters.items()},
            "cpu_s": self.cpu_s,
        }


def window(
    api: harness.ApiServer, bodies: Iterator[bytes], per_request: int, duration_s: float, clients: int
) -> Window:
    """A closed-loop B run, between two reads of the API's counters."""
    before = api_counters(api)
    with harness.CpuSplit({"api": api.pid or 0}) as cpu:
        measured, tally = harness.run_async(closed_loop(api, clients, bodies, per_request, duration_s))
    after = api_counters(api)
    delta = {name: after[name] - before[name] for name in after}
    return Window(measured, tally.requests, api.workers, delta, cpu.seconds)


def encode_offline(
    encoder: SentenceEncoder, texts: list[str], batch: int, api: harness.ApiServer
) -> tuple[harness.Measurement, dict[str, float]]:
    """Side A: one pass over `texts`, and the CPU each component took meanwhile (the API idle)."""
    with harness.CpuSplit({"api": api.pid or 0}) as cpu, harness.OtherCpu() as other_cpu:
        started = time.perf_counter()
        vectors = encoder.encode(texts, batch_size=batch)
        seconds = time.perf_counter() - started
    if vectors.shape != (len(texts), DIMENSIONS):
        raise RuntimeError(f"the encoder answered {vectors.shape} for {len(texts)} texts")
    return harness.Measurement(len(texts), seconds, other_cpu=other_cpu.share), cpu.seconds


def fresh_bodies(
    texts: BusinessTexts, per_s: float, seconds: float, per_request: int, clients: int
) -> list[bytes]:
    """New texts for `seconds` at three times `per_s` embeddings a second, `per_request` a body."""
    return request_bodies(texts.take(int(3 * per_s * seconds) + 2 * clients * per_request), per_request)


@dataclass
class Runs:
    """Everything measured: A and B alternating, then B at a fixed rate, with several texts, on hits."""

    offline: list[harness.Measurement] = field(default_factory=list)
    offline_cpu_s: list[dict[str, float]] = field(default_factory=list)
    served: list[Window] = field(default_factory=list)
    fixed: harness.FixedRate | None = None
    multi: Window | None = None
    hits: Window | None = None


def measure(env: harness.Environment, settings: Settings, options: argparse.Namespace) -> tuple[Runs, float]:
    """All the runs, and the mean tokens of A's texts."""
    texts = BusinessTexts(options.seed)
    offline_texts = texts.take(options.texts)
    models_dir = env.work_dir / "models"  # the server's too (SOPHIA_DATA_DIR): A builds the graph
    threads, quantized = options.offline_threads, settings.ml_quantized
    encoder = SentenceEncoder.create(models_dir, threads=threads, quantized=quantized)
    warm_texts = offline_texts[: 4 * options.batch]
    started = time.perf_counter()
    encoder.encode(warm_texts, batch_size=options.batch)
    estimate = len(warm_texts) / (time.perf_counter() - started)
    extra_env = {
        "SOPHIA_ML_ENABLED": "true",
        "SOPHIA_DATA_DIR": str(env.work_dir),
        "SOPHIA_CACHE_KEY_PREFIX": f"sophia:bench-embed-{secrets.token_hex(4)}:cache:",
        "SOPHIA_ML_THREADS": str(options.ml_threads),
    }
    runs, clients = Runs(), options.clients
    with harness.ApiServer(env, workers=options.workers, extra_env=extra_env) as api:
        if options.warmup > 0:
            warm = fresh_bodies(texts, estimate, options.warmup, 1, clients)
            window(api, iter(warm), 1, options.warmup, clients)
        for index in range(options.rounds):  # alternating, so a noisy neighbour hits both sides alike
            harness.settle(options.settle)
            offline, offline_cpu = encode_offline(encoder, offline_texts, options.batch, api)
            runs.offline.append(offline)
            runs.offline_cpu_s.append(offline_cpu)
            bodies = request_bodies(offline_texts, 1) if index == 0 else []  # B starts with A's texts
            bodies += fresh_bodies(texts, max(offline.per_s, estimate), options.duration, 1, clients)
            harness.settle(options.settle)
            runs.served.append(window(api, iter(bodies), 1, options.duration, clients))
        rate = options.rate_share * harness.median([run.measured for run in runs.served]).per_s
        bodies = request_bodies(texts.take(round(rate * options.rate_duration) + clients), 1)
        harness.settle(options.settle)
        runs.fixed = harness.run_async(fixed_rate(api, clients, iter(bodies), rate, options.rate_duration))
        if options.multi:
            bodies = fresh_bodies(texts, estimate, options.duration, options.multi, clients)
            harness.settle(options.settle)
            runs.multi = window(api, iter(bodies), options.multi, options.duration, clients)
        hot = request_bodies(offline_texts[: options.hot], 1)  # embedded by B's first round
        random.Random(options.seed).shuffle(hot)
        if options.warmup > 0:  # every worker's L1 gets them too
            window(api, itertools.cycle(hot), 1, options.warmup, clients)
        harness.settle(options.settle)
        runs.hits = window(api, itertools.cycle(hot), 1, options.duration, clients)
    return runs, encoder.count_tokens(offline_texts) / len(offline_texts)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = parse(argv)
    settings = Settings()
    # The server's default, CPUs / workers, unless told otherwise; A has the whole machine.
    server = settings.model_copy(update={"api_workers": options.workers, "ml_threads": options.ml_threads})
    options.ml_threads = server.model_threads
    options.offline_threads = options.offline_threads or len(os.sched_getaffinity(0))
    with harness.environment() as env:
        runs, mean_tokens = measure(env, settings, options)
        served = [run.measured for run in runs.served]
        median_window = runs.served[served.index(harness.median(served))]
        result = {
            "benchmark": "embed",
            "texts": options.texts,
            "mean_tokens": round(mean_tokens, 1),
            "batch": options.batch,
            "clients": options.clients,
            "workers": options.workers,
            "duration_s": options.duration,
            "rounds": options.rounds,
            "offline_threads": options.offline_threads,
            "server_ml_threads": options.ml_threads,
            "ml_quantized": settings.ml_quantized,
            "onnxruntime": metadata.version("onnxruntime"),
            **harness.comparison(runs.offline, served, GOAL, env),
            "offline_cpu_s": runs.offline_cpu_s,
            "api_median": median_window.as_dict(),
            "api_windows": [run.as_dict() for run in runs.served],
            "fixed_rate": {**runs.fixed.as_dict(), "share_of_max": options.rate_share}
            if runs.fixed
            else None,
            "multi": {**runs.multi.as_dict(), "per_request": options.multi} if runs.multi else None,
            "cache_hits": {**runs.hits.as_dict(), "hot_texts": options.hot} if runs.hits else None,
        }
    result["goal_met"] = result["ratio"] >= GOAL
    harness.emit(result, report(result), options, HEADLINE)
    return result


def report(result: dict[str, Any]) -> str:
    r, median_b = result, result["api_median"]
    lines = [
        f"embeddings of distinct business texts (10-30 words, {r['mean_tokens']:g} tokens on average), "
        f"{r['clients']} concurrent clients, {r['duration_s']:g} s a B run, median of {r['rounds']} "
        f"alternating rounds; ONNX Runtime {r['onnxruntime']}, int8: {r['ml_quantized']}, threads: A "
        f"{r['offline_threads']}, each API worker {r['server_ml_threads']}",
        side_text(f"A offline encode, batch {r['batch']}", r["raw"], f"{r['texts']:,} texts"),
        side_text(
            f"B POST embed, x{r['workers']}, 1 a req", r["api"], f"{median_b['requests_per_s']:,.0f} req/s"
        ),
        f"  ratio B/A {r['ratio']:.2f} (goal >= {GOAL}: {'met' if r['goal_met'] else 'NOT met'}); "
        f"server batches {median_b['mean_server_batch']:g} texts on average, model busy "
        f"{median_b['model_busy_share']:.0%} of the time; cache hits during B: {median_b['cache_hits']}",
        f"  CPU-s in B's median run: {cpu_text(median_b['cpu_s'])}; the API while A ran: at most "
        f"{max(cpu.get('api', 0.0) for cpu in r['offline_cpu_s']):.2f}",
    ]
    if fixed := r["fixed_rate"]:
        lines.append(
            f"  B at a fixed {fixed['target_per_s']:,} req/s ({fixed['share_of_max']:.0%} of max, open loop) "
            f"{fixed['per_s']:,.0f} req/s  p50 {fixed['p50_ms']:.2f} ms  p99 {fixed['p99_ms']:.2f} ms  "
            f"max {fixed['max_ms']:.1f} ms  dropped {fixed['dropped']}  failed {fixed['failed']}"
        )
    if multi := r["multi"]:
        label = f"B {multi['per_request']} texts a request"
        lines.append(side_text(label, multi, f"{multi['requests_per_s']:,.0f} req/s"))
    if hits := r["cache_hits"]:
        label = f"B cache hits ({hits['hot_texts']} texts)"
        lines.append(
            side_text(
                label, hits, f"L1 {hits['l1_hit_share']:.1%}, client CPU {hits['cpu_s']['benchmark']} s"
            )
        )
    return "\n".join(lines)


def side_text(label: str, side: dict[str, Any], note: str) -> str:
    text = f"  {label:<34}{side['per_s']:>9,.0f} emb/s"
    if side.get("p50_ms") is not None:
        text += f"  p50 {side['p50_ms']:7.2f} ms  p99 {side['p99_ms']:7.2f} ms"
    text += f"  ({note})  errors {side['errors']}"
    return text + f"  [others took {side['other_cpu']:.0%} of the CPUs]"


def cpu_text(seconds: dict[str, float]) -> str:
    return ", ".join(f"{label} {value:.1f}" for label, value in seconds.items() if value >= 0.05) or "none"


if __name__ == "__main__":
    main()
