"""Test helpers for shops integrating fourws-pay (the ``pytest11`` plugin lives here)."""
