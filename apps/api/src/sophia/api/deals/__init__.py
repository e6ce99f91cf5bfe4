"""Deals served from the analytics views."""
