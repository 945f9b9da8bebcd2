"""Shared fixtures. Every test has a timeout (pyproject: timeout = 60)."""
