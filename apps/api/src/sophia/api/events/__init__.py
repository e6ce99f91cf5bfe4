"""Event ingestion over HTTP."""
