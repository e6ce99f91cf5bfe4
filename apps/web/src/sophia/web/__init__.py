"""Sophia's web dashboard: server-rendered pages over the catalog and its analytics, signed in with
an API key exchanged for a session cookie, and the static files the platform serves."""
