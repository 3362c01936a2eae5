"""Fixtures of these tests (defined in ``tests/helpers.py``)."""

from helpers import demo_bands, demo_batch, demo_store, one_thread  # noqa: F401
