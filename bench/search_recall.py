"""Search quality: recall@k of the HNSW index (the path `POST /api/v1/search` takes) against exact
nearest neighbours, on a `record_embeddings` table of `--vectors` embeddings.

    uv run python bench/search_recall.py [--vectors 100000] [--texts 5000] [--queries 200] [--json]

The vectors are real: `--texts` distinct business sentences embedded by the shipped encoder, each
repeated with small Gaussian noise (`--noise`, then unit length again) up to `--vectors`, so the
table has the clusters real records have (near-duplicates, templates). The queries are the
embeddings of other sentences, none of them in the table. For each query, side A is the exact
top `k` by cosine distance (a sequential scan: index scans off) and side B the index's answer at
each `--ef-search`. Printed: recall@k (the share of B's answers at least as close as A's k-th
neighbour, ann-benchmarks' rule: near-duplicates make which of several equally close records
comes back immaterial) and B's and A's latency per query.
"""

from __future__ import annotations

import argparse
import statistics
import struct
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import harness
import numpy as np
from harness.texts import BusinessTexts

from sophia.ml.encoder import SentenceEncoder

GOAL = 0.95
TABLE = "sophia_core.record_embeddings"


HEADLINE = harness.Headline(
    anchor="exact nearest neighbours (sequential scan)",
    subject="HNSW at the last `--ef-search` (200, what search uses)",
    a=harness.Figure("exact.p50_ms", "ms p50"),
    b=harness.Figure("hnsw.-1.p50_ms", "ms p50"),
    ratio="hnsw.-1.recall",
    ratio_label="recall@10",
    goals=(harness.Goal(f"recall@10 ≥ {GOAL}", path="hnsw.-1.recall", at_least=GOAL),),
    section="Search recall",
)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--vectors", type=int, default=100_000, help="embeddings in the table")
    parser.add_argument("--texts", type=int, default=5_000, help="distinct sentences they come from")
    parser.add_argument("--queries", type=int, default=200, help="query sentences (none in the table)")
    parser.add_argument("--k", type=int, default=10, help="neighbours asked for")
    parser.add_argument("--noise", type=float, default=0.15, help="norm of the noise added to a copy")
    parser.add_argument("--ef-search", default="40,100,200", help="hnsw.ef_search values to measure")
    harness.add_common_arguments(parser, timed=False)
    options = parser.parse_args(argv)
    options.ef_search = [int(value) for value in options.ef_search.split(",")]
    if min(options.vectors, options.texts, options.queries, options.k, *options.ef_search) < 1:
        parser.error("counts and --ef-search values must be >= 1")
    if options.texts > options.vectors:
        parser.error("--texts must be at most --vectors")
    return options


def table_vectors(base: np.ndarray, count: int, noise: float, seed: int = 7) -> np.ndarray:
    """`count` unit vectors: the base ones, then noisy copies of them in turn."""
    rng = np.random.default_rng(seed)
    copies = base[np.arange(count) % len(base)].copy()
    jitter = rng.standard_normal(copies.shape).astype(np.float32) * (noise / np.sqrt(base.shape[1]))
    copies[len(base) :] += jitter[len(base) :]
    return copies / np.linalg.norm(copies, axis=1, keepdims=True)


def vector_binary(vector: np.ndarray) -> bytes:
    """pgvector's binary format: dimensions and an unused word (int16 each), then float4s, big-endian."""
    return struct.pack(">HH", len(vector), 0) + np.asarray(vector, dtype=">f4").tobytes()


async def load(database_url: str, vectors: np.ndarray) -> float:
    """The table holds `vectors` and a fresh HNSW index; the seconds the index took to build."""
    connection = await asyncpg.connect(database_url)
    try:
        await connection.set_type_codec(
            "vector", schema="public", encoder=vector_binary, decoder=bytes, format="binary"
        )
        await connection.execute("DROP INDEX IF EXISTS sophia_core.record_embeddings_hnsw")
        await connection.execute(f"TRUNCATE {TABLE}")
        rows = [(uuid.uuid4(), "bench", 1, "", vector) for vector in vectors]
        await connection.copy_records_to_table(
            "record_embeddings",
            schema_name="sophia_core",
            records=rows,
            columns=["record_id", "model_version", "record_version", "content", "embedding"],
        )
        started = time.perf_counter()
        await connection.execute(
            f"CREATE INDEX record_embeddings_hnsw ON {TABLE} USING hnsw (embedding vector_cosine_ops)",
            timeout=3600,
        )
        built_s = time.perf_counter() - started
        await connection.execute(f"ANALYZE {TABLE}")
        return built_s
    finally:
        await connection.close()


async def neighbours(
    database_url: str, queries: np.ndarray, k: int, *, exact: bool, ef_search: int = 40
) -> tuple[list[list[float]], list[float]]:
    """Each query's top `k` distances, and each query's latency (ms)."""
    connection = await asyncpg.connect(database_url)
    try:
        await connection.set_type_codec(
            "vector", schema="public", encoder=vector_binary, decoder=bytes, format="binary"
        )
        if exact:
            await connection.execute("SET enable_indexscan = off; SET enable_bitmapscan = off")
        await connection.execute(f"SET hnsw.ef_search = {ef_search}")
        statement = await connection.prepare(
            f"SELECT embedding <=> $1 AS distance FROM {TABLE} ORDER BY embedding <=> $1 LIMIT {k}"
        )
        found, latencies = [], []
        for query in queries:
            started = time.perf_counter()
            rows = await statement.fetch(query)
            latencies.append((time.perf_counter() - started) * 1000)
            found.append([row["distance"] for row in rows])
        return found, latencies
    finally:
        await connection.close()


def recall_at_k(exact: list[float], found: list[float], k: int) -> float:
    """The share of the `k` answers at least as close as the exact k-th neighbour (ann-benchmarks'
    rule, with its 1e-3 slack): with near-duplicates in the table, which of several equally close
    records an index returns is not an error."""
    threshold = exact[-1] + 1e-3
    return sum(distance <= threshold for distance in found[:k]) / k


def latency(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(statistics.median(ordered), 3),
        "p99_ms": round(harness.percentile(ordered, 0.99), 3),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = parse(argv)
    texts = BusinessTexts(seed=11)
    with tempfile.TemporaryDirectory() as models:
        encoder = SentenceEncoder.create(Path(models))
        started = time.perf_counter()
        base = encoder.encode(texts.take(options.texts), batch_size=16)
        queries = encoder.encode(texts.take(options.queries), batch_size=16)
        embed_s = time.perf_counter() - started
    vectors = table_vectors(base, options.vectors, options.noise)
    with harness.environment() as env:
        build_s = harness.run_async(load(env.database_url, vectors))
        exact, exact_ms = harness.run_async(neighbours(env.database_url, queries, options.k, exact=True))
        sides = []
        for ef_search in options.ef_search:
            found, found_ms = harness.run_async(
                neighbours(env.database_url, queries, options.k, exact=False, ef_search=ef_search)
            )
            recall = statistics.mean(recall_at_k(a, b, options.k) for a, b in zip(exact, found, strict=True))
            sides.append({"ef_search": ef_search, "recall": round(recall, 4), **latency(found_ms)})
        result = {
            "benchmark": "search_recall",
            "vectors": options.vectors,
            "texts": options.texts,
            "queries": options.queries,
            "k": options.k,
            "noise": options.noise,
            "embed_s": round(embed_s, 1),
            "index_build_s": round(build_s, 1),
            "exact": latency(exact_ms),
            "hnsw": sides,
            "goal": GOAL,
            "machine": harness.machine(env),
        }
    harness.emit(result, report(result), options, HEADLINE)
    return result


def report(r: dict[str, Any]) -> str:
    lines = [
        f"search recall@{r['k']}: {r['vectors']:,} embeddings from {r['texts']:,} sentences "
        f"(+ noise {r['noise']}), {r['queries']} query sentences not in the table",
        f"  embedding the sentences {r['embed_s']} s; building the HNSW index {r['index_build_s']} s",
        f"  A exact (sequential scan)   p50 {r['exact']['p50_ms']} ms, p99 {r['exact']['p99_ms']} ms",
    ]
    for side in r["hnsw"]:
        verdict = "met" if side["recall"] >= r["goal"] else "NOT met"
        lines.append(
            f"  B HNSW ef_search={side['ef_search']:<5} recall {side['recall']:.4f} (goal >= {r['goal']}: "
            f"{verdict}); p50 {side['p50_ms']} ms, p99 {side['p99_ms']} ms"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
