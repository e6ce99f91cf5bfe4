"""Sophia's ML pipeline: models served in dynamic batches, predictions cached, the catalog enriched."""

from pathlib import Path

DATA_DIR = Path(__file__).parent / "data"
"""What ships with the models: label sets, labeled data, trained heads (see its README)."""
