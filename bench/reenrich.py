"""Re-labeling the catalog after a new classifier head: what reusing the stored embeddings saves.

    uv run python bench/reenrich.py [--records 2000] [--rounds 3] [--json]

`--records` messages (realistic business texts of 10-30 words) go through the workers' real
enrichment sink (`enrich_records`: read the records, the models, write embeddings, predictions and
their `ml.prediction` events) as `record.reenrich` events in batches of 64, as a `reembed_records`
job re-emits them. Side A: no embedding by this model is stored (a new embedding model, or the
behaviour before the sink read stored ones), so every text is embedded. Side B: each record's
embedding by this model is stored and its text unchanged, its labels are by an older head: the
vector is read back and only the heads run. Printed: records/s of both sides and B/A.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import harness
from harness.texts import BusinessTexts

from sophia.core.events import Envelope
from sophia.database import Database
from sophia.ml.embeddings import model_version
from sophia.ml.encoder import SentenceEncoder
from sophia.ml.enrichment import DEFAULT_TEXT_FIELDS, Enricher, read_text_fields
from sophia.ml.labels import DEFAULT_HEAD, LabelHead
from sophia.ml.sentiment import EmbeddingSentiment
from sophia.shared.settings import Settings
from sophia.workers.sinks import enrich_records

BATCH = 64
"""The enrichment consumer's batch (`ml-enrichment` in the workers)."""


HEADLINE = harness.Headline(
    anchor="every text embedded again",
    subject="the stored embedding reused, only the heads run",
    a=harness.Figure("embedded.per_s", "records/s"),
    b=harness.Figure("reused.per_s", "records/s"),
    section="Re-labeling without re-embedding",
)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--records", type=int, default=2000, help="messages to enrich again")
    harness.add_common_arguments(parser)
    options = parser.parse_args(argv)
    if min(options.records, options.rounds) < 1:
        parser.error("--records and --rounds must be >= 1")
    return options


async def insert_messages(database: Database, count: int) -> list[Envelope]:
    """`count` messages in the catalog; the `record.reenrich` events a reembed job would emit."""
    texts = BusinessTexts(seed=23).take(count)
    async with database.connection() as connection:
        rows = await connection.fetch(
            """INSERT INTO sophia_core.unified_data_catalog (source_system, kind, external_id, data)
               SELECT 'bench', 'message', 'm-' || n, jsonb_build_object('text', text)
               FROM unnest($1::text[]) WITH ORDINALITY AS given (text, n)
               RETURNING id, external_id, version""",
            texts,
        )
    return [
        Envelope.new(
            "record.reenrich",
            f"bench/message/{row['external_id']}",
            {
                "id": str(row["id"]),
                "source_system": "bench",
                "kind": "message",
                "external_id": row["external_id"],
                "version": row["version"],
            },
            source="catalog",
        )
        for row in rows
    ]


async def enrich_all(database: Database, enricher: Enricher, version: str, events: list[Envelope]) -> float:
    sink = enrich_records(database, enricher, version)
    started = time.perf_counter()
    for start in range(0, len(events), BATCH):
        await sink(events[start : start + BATCH])
    return time.perf_counter() - started


async def forget(database: Database, embeddings: bool) -> None:
    """Side A's start: nothing stored. Side B's: embeddings kept, labels by an older head."""
    async with database.connection() as connection:
        await connection.execute("TRUNCATE sophia_core.outbox")
        if embeddings:
            await connection.execute("TRUNCATE sophia_core.record_embeddings, sophia_core.record_predictions")
        else:
            await connection.execute("UPDATE sophia_core.record_predictions SET model_version = 'older-head'")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = parse(argv)
    version = model_version(quantized=True)
    with tempfile.TemporaryDirectory() as models, harness.environment() as env:
        settings = Settings(database_url=env.database_url, data_dir=Path(models))
        encoder = SentenceEncoder.create(Path(models), threads=settings.model_threads)
        labels = LabelHead.load(DEFAULT_HEAD, model_version=version)
        enricher = Enricher(
            encoder,
            labels,
            read_text_fields(DEFAULT_TEXT_FIELDS),
            EmbeddingSentiment.load(model_version=version),
        )

        async def run() -> tuple[list[harness.Measurement], list[harness.Measurement]]:
            embedded, reused = [], []
            async with Database(settings) as database:
                events = await insert_messages(database, options.records)
                for _ in range(options.rounds):
                    for rounds, embeddings in ((embedded, True), (reused, False)):  # A, then B
                        await forget(database, embeddings)
                        harness.settle(options.settle)
                        with harness.OtherCpu() as other_cpu:
                            seconds = await enrich_all(database, enricher, version, events)
                        rounds.append(harness.Measurement(len(events), seconds, other_cpu=other_cpu.share))
            return embedded, reused

        embedded, reused = harness.run_async(run())
        a, b = harness.median(embedded), harness.median(reused)
        result = {
            "benchmark": "reenrich",
            "records": options.records,
            "batch": BATCH,
            "model_threads": settings.model_threads,
            "embedded": a.as_dict(),
            "reused": b.as_dict(),
            "ratio": round(harness.paired_ratio(reused, embedded), 2),
            "embedded_rounds": [m.as_dict() for m in embedded],
            "reused_rounds": [m.as_dict() for m in reused],
            "machine": harness.machine(env),
        }
    text = "\n".join(
        (
            f"re-enrich {options.records:,} messages through the enrichment sink, batches of {BATCH} "
            f"({settings.model_threads} model threads), median of {options.rounds} rounds:",
            harness.side_line("A: embedded again", a, "records"),
            harness.side_line("B: stored vector reused", b, "records"),
            f"  B/A {result['ratio']:.1f}x",
        )
    )
    harness.emit(result, text, options, HEADLINE)
    return result


if __name__ == "__main__":
    main()
