"""Sophia cache: the Redis connection (the tiered cache builds on it)."""
