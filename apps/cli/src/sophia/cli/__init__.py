"""Sophia cli."""
