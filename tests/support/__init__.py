"""Helpers shared by the test suite: servers started as real processes."""
