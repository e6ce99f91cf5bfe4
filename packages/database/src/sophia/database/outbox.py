"""The transactional outbox: every catalog write adds its events in the same statement."""

from __future__ import annotations

RECORDS_TOPIC = "records"


def outbox_insert(written: str, event_type: str) -> str:
    """A CTE body inserting one `records` event per row of the CTE named `written`.

    `written` must expose id, source_system, kind, external_id and version. The payload is small
    on purpose: consumers that need the data read the record; the event says what changed.
    """
    return f"""
        INSERT INTO sophia_core.outbox (topic, event_type, key, payload)
        SELECT '{RECORDS_TOPIC}', '{event_type}',
               w.source_system || '/' || w.kind || '/' || w.external_id,
               jsonb_build_object(
                   'id', w.id, 'source_system', w.source_system, 'kind', w.kind,
                   'external_id', w.external_id, 'version', w.version)
        FROM {written} AS w
    """
