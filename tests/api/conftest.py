from __future__ import annotations

import pytest

from fourws_pay.clock import ManualClock
from fourws_pay.settings import Settings

from .fakes import FakeFourWS, make_settings


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def fake(settings: Settings) -> FakeFourWS:
    return FakeFourWS(settings)
