"""Sophia api."""
