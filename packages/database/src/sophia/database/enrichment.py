"""What the models said of catalog records: predictions and embeddings, written back newest-wins,
with their `ml.prediction` events in the same transaction (the outbox relays them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import orjson

from sophia.database.pool import Connection

PREDICTIONS_TOPIC = "ml-predictions"


@dataclass(frozen=True, slots=True)
class RecordText:
    """A live record to enrich: its id, kind, version and data, and the text and embedding stored
    for it by the model asked about (None when there is none by that model)."""

    id: UUID
    kind: str
    version: int
    data: dict[str, Any]
    stored_content: str | None = None
    stored_embedding: list[float] | None = None


@dataclass(frozen=True, slots=True)
class Enrichment:
    """One record's results: the text read, its embedding, and a prediction per task."""

    record_id: UUID
    record_version: int
    content: str
    embedding: Sequence[float]
    predictions: dict[str, dict[str, Any]]
    """By task (`sentiment`, `classification`: the `ml.prediction` event's `task`)."""


async def live_records(connection: Connection, ids: Sequence[UUID], model_version: str) -> list[RecordText]:
    """The live records of `ids`, each with its text and embedding stored by `model_version`: a
    text that has not changed need not be embedded again (a new label head, a deal's amount)."""
    rows = await connection.fetch(
        "SELECT c.id, c.kind, c.version, c.data, e.content, e.embedding::text AS embedding "
        "FROM sophia_core.unified_data_catalog AS c "
        "LEFT JOIN sophia_core.record_embeddings AS e ON e.record_id = c.id AND e.model_version = $2 "
        "WHERE c.id = ANY($1::uuid[]) AND c.deleted_at IS NULL",
        list(ids),
        model_version,
    )
    return [
        RecordText(
            row["id"],
            row["kind"],
            row["version"],
            row["data"],
            row["content"],
            orjson.loads(row["embedding"]) if row["embedding"] is not None else None,
        )
        for row in rows
    ]


async def write(
    connection: Connection,
    results: Sequence[Enrichment],
    model: str,
    model_version: str,
    task_versions: Mapping[str, str],
) -> None:
    """Upsert each result unless a newer record version is already stored (or the same one, by the
    same model, of the same text: a re-labeled record's vector is not written again), and queue one
    `ml.prediction` event per record and task whose prediction was written. Embeddings carry
    `model_version`, each task's predictions `task_versions[task]` (a head or label set of its
    own over those embeddings). Call inside a transaction."""
    if not results:
        return
    await connection.executemany(
        """INSERT INTO sophia_core.record_embeddings
               (record_id, model_version, record_version, content, embedding)
           VALUES ($1, $2, $3, $4, $5::text::vector)
           ON CONFLICT (record_id) DO UPDATE SET
               model_version = excluded.model_version, record_version = excluded.record_version,
               content = excluded.content, embedding = excluded.embedding, updated_at = now()
           WHERE record_embeddings.record_version < excluded.record_version
              OR (record_embeddings.record_version = excluded.record_version
                  AND (record_embeddings.model_version <> excluded.model_version
                       OR record_embeddings.content <> excluded.content))""",
        [
            (r.record_id, model_version, r.record_version, r.content, vector_text(r.embedding))
            for r in results
        ],
    )
    rows = [
        (r.record_id, task, task_versions[task], r.record_version, orjson.dumps(prediction).decode())
        for r in results
        for task, prediction in r.predictions.items()
    ]
    if not rows:
        return
    record_ids, tasks, models, versions, predictions = (list(column) for column in zip(*rows, strict=True))
    # Only what changed is written and announced: a redelivered batch (same record and model
    # versions) queues no second event.
    await connection.execute(
        f"""WITH written AS (
                INSERT INTO sophia_core.record_predictions
                    (record_id, task, model_version, record_version, prediction)
                SELECT record_id, task, model_version, record_version, prediction::jsonb
                FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::text[])
                    AS given (record_id, task, model_version, record_version, prediction)
                ON CONFLICT (record_id, task) DO UPDATE SET
                    model_version = excluded.model_version, record_version = excluded.record_version,
                    prediction = excluded.prediction, updated_at = now()
                WHERE record_predictions.record_version < excluded.record_version
                   OR (record_predictions.record_version = excluded.record_version
                       AND record_predictions.model_version <> excluded.model_version)
                RETURNING record_id, task, model_version, prediction)
            INSERT INTO sophia_core.outbox (topic, event_type, key, payload)
            SELECT '{PREDICTIONS_TOPIC}', 'ml.prediction', record_id::text,
                   jsonb_build_object('record_id', record_id::text, 'model', $6::text,
                                      'model_version', model_version, 'task', task, 'result', prediction)
            FROM written""",
        record_ids,
        tasks,
        models,
        versions,
        predictions,
        model,
    )


def vector_text(embedding: Sequence[float]) -> str:
    """pgvector's text form, `[x,y,...]` (asyncpg has no codec for the type); 9 significant
    digits round-trip a float32 exactly."""
    return "[" + ",".join(f"{value:.9g}" for value in embedding) + "]"


async def predictions_of(connection: Connection, record_id: UUID) -> dict[str, dict[str, Any]]:
    """What the models said of a record, by task (`sentiment`, `classification`, ...)."""
    rows = await connection.fetch(
        """SELECT task, model_version, record_version, prediction, updated_at
           FROM sophia_core.record_predictions WHERE record_id = $1 ORDER BY task""",
        record_id,
    )
    return {row["task"]: dict(row) for row in rows}
