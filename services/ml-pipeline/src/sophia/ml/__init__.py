"""Sophia's ML pipeline: models served in dynamic batches, predictions cached, the catalog enriched."""
