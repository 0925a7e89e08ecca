"""pytest fixtures for shops testing a gift-card checkout against the 4WS sandbox.

Loaded by every pytest run of anyone who installs fourws-pay (entry point ``pytest11``), so
this module imports nothing but pytest at import time; the sandbox (Starlette, httpx
transports) is imported inside the fixtures, only by tests that use them.
"""

from __future__ import annotations
