"""Sophia's cross-cutting pieces: settings, logging, metrics and resilience."""
