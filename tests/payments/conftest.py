from __future__ import annotations

from pathlib import Path

import pytest

from tests.payments.harness import Shop


@pytest.fixture
def shop(tmp_path: Path) -> Shop:
    s = Shop(tmp_path)
    yield s
    s.payments.client.close()
    s.store.close()
