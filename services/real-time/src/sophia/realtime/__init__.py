"""Sophia's real-time service: changes to the catalog and the event streams, fanned out from
JetStream to WebSocket subscribers, in order, resumable from a position (`python -m sophia.realtime`)."""
