"""Sophia's workers: the outbox relay, stream processors and background jobs (`python -m sophia.workers`)."""
