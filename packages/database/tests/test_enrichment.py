"""Writing enrichment results: embeddings always, predictions and their events only when there are any."""

import uuid

from sophia.core.records import RecordKey
from sophia.database import catalog, enrichment
from sophia.database.enrichment import PREDICTIONS_TOPIC, Enrichment


async def test_a_result_without_predictions_stores_its_embedding_and_announces_nothing(database):
    async with database.connection() as connection:
        transaction = connection.transaction()  # rolled back: the shared database keeps no trace
        await transaction.start()
        try:
            key = RecordKey("crm", "note", f"n-{uuid.uuid4().hex}")
            record = await catalog.upsert(connection, key, {"body": "call the customer back"})
            result = Enrichment(record.id, record.version, "call the customer back", [0.5] * 384, {})
            await enrichment.write(connection, [result], "minilm", "v1", {})
            embedded = await connection.fetchrow(
                "SELECT model_version, content FROM sophia_core.record_embeddings WHERE record_id = $1",
                record.id,
            )
            predictions = await connection.fetchval(
                "SELECT count(*) FROM sophia_core.record_predictions WHERE record_id = $1", record.id
            )
            announced = await connection.fetchval(
                "SELECT count(*) FROM sophia_core.outbox WHERE topic = $1 AND key = $2",
                PREDICTIONS_TOPIC,
                str(record.id),
            )
        finally:
            await transaction.rollback()
    assert tuple(embedded) == ("v1", "call the customer back")
    assert predictions == 0
    assert announced == 0
