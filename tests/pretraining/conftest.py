"""Fixtures of these tests (defined in ``tests/helpers.py``)."""

from helpers import one_thread  # noqa: F401
