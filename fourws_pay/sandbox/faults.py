"""Faults the sandbox injects on purpose, scripted per endpoint from tests or the CLI.

A ``Fault`` says what goes wrong; ``FaultPlan.add(endpoint, fault, times=1)`` says where and
how often (``times=None``: until cleared). Endpoint names are the client's, those of
``fourws_pay.api.endpoints.ENDPOINTS`` (``get_giftcard``, ``update_giftcard``, ``login``, ...),
or ``"*"`` for any.

Two groups, taken independently so one request can suffer one of each:

- request faults change the HTTP exchange: ``latency``, ``http_status`` (5xx, 401, ...),
  ``rate_limited`` (429 + ``Retry-After``), ``hang`` (no answer: in-process the transport
  raises ``httpx.ReadTimeout``, served the server waits ``seconds`` then drops the
  connection), ``reset`` (the connection drops mid-answer), ``truncated_body``,
  ``invalid_json``, ``success_false`` (HTTP 200 with ``"success": false``) and
  ``in_shop_spend`` (a till spends from a card just before the request is handled).
  ``after_enqueue=True`` means the operation was accepted and queued before the failure,
  which is exactly the ambiguous case a client must not retry;
- callback faults change the callback of the queued operation: ``drop``, ``duplicate``
  (``copies`` deliveries), ``delay`` (``seconds`` on the sandbox clock), ``reorder``
  (delivered after every other callback of the same queue run) and ``before_response``
  (processed and delivered before the POST's own response is sent).
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field, fields
from decimal import Decimal
from typing import Any

from fourws_pay.api.endpoints import ENDPOINTS

REQUEST_KINDS = frozenset(
    {
        "latency",
        "http_status",
        "rate_limited",
        "hang",
        "reset",
        "truncated_body",
        "invalid_json",
        "success_false",
        "in_shop_spend",
    }
)
CALLBACK_KINDS = frozenset({"drop", "duplicate", "delay", "reorder", "before_response"})
# the client's endpoint names (``fourws_pay.api.endpoints.ENDPOINTS``) or "*" for any
ENDPOINT_NAMES = frozenset({e.name for e in ENDPOINTS} | {"*"})


@dataclass(frozen=True)
class Fault:
    """One kind of misbehaviour and its parameters; build it with the class methods."""

    kind: str
    seconds: float = 0.0
    status: int = 0
    message: str = ""
    after_enqueue: bool = False
    copies: int = 2
    barcode: str = ""
    amount: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        if self.kind not in REQUEST_KINDS | CALLBACK_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}")
        if self.seconds < 0 or self.copies < 1:
            raise ValueError("fault seconds must be >= 0 and copies >= 1")

    @property
    def is_callback_fault(self) -> bool:
        return self.kind in CALLBACK_KINDS

    # request faults
    @classmethod
    def latency(cls, seconds: float) -> Fault:
        """Answer normally after ``seconds`` (the sandbox clock's sleep)."""
        return cls("latency", seconds=seconds)

    @classmethod
    def http_status(cls, status: int, message: str = "", *, after_enqueue: bool = False) -> Fault:
        """Answer ``status`` with the API's error body; optionally after queuing the work."""
        return cls("http_status", status=status, message=message, after_enqueue=after_enqueue)

    @classmethod
    def server_error(cls, status: int = 500, *, after_enqueue: bool = False) -> Fault:
        return cls.http_status(status, "Internal Server Error", after_enqueue=after_enqueue)

    @classmethod
    def rate_limited(cls, retry_after: float = 1.0) -> Fault:
        """429 with ``Retry-After`` and ``X-RateLimit-*`` headers; nothing is done."""
        return cls("rate_limited", seconds=retry_after)

    @classmethod
    def hang(cls, seconds: float = 30.0, *, after_enqueue: bool = True) -> Fault:
        """Never answer in time (see the module docstring for in-process vs served)."""
        return cls("hang", seconds=seconds, after_enqueue=after_enqueue)

    @classmethod
    def reset(cls, *, after_enqueue: bool = True) -> Fault:
        """Drop the connection in the middle of the answer."""
        return cls("reset", after_enqueue=after_enqueue)

    @classmethod
    def reset_after_enqueue(cls) -> Fault:
        return cls.reset(after_enqueue=True)

    @classmethod
    def truncated_body(cls) -> Fault:
        """The operation is done, but its 200 answer stops half-way (Content-Length fits)."""
        return cls("truncated_body", after_enqueue=True)

    @classmethod
    def invalid_json(cls) -> Fault:
        """The operation is done, but its 200 answer is a JS literal, not JSON."""
        return cls("invalid_json", after_enqueue=True)

    @classmethod
    def success_false(cls, message: str = "service temporarily unavailable") -> Fault:
        """HTTP 200 with ``{"success": false, "message": ...}``; nothing is done."""
        return cls("success_false", message=message)

    @classmethod
    def in_shop_spend(cls, barcode: str, amount: Decimal | str | int) -> Fault:
        """Before handling the request, a till spends ``amount`` from ``barcode``."""
        return cls("in_shop_spend", barcode=barcode, amount=Decimal(str(amount)))

    # callback faults
    @classmethod
    def drop_callback(cls) -> Fault:
        return cls("drop")

    @classmethod
    def duplicate_callback(cls, copies: int = 2) -> Fault:
        return cls("duplicate", copies=copies)

    @classmethod
    def delay_callback(cls, seconds: float) -> Fault:
        return cls("delay", seconds=seconds)

    @classmethod
    def reorder_callback(cls) -> Fault:
        return cls("reorder")

    @classmethod
    def callback_before_response(cls) -> Fault:
        return cls("before_response")

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> Fault:
        """Build from JSON (``POST /_sandbox/faults``, the CLI); unknown keys are errors."""
        known = {f.name for f in fields(cls)}
        unknown = set(spec) - known
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        values = dict(spec)
        if "seconds" in values:  # JSON gives int or Decimal; the clock sleeps on floats
            values["seconds"] = float(values["seconds"])
        if "amount" in values:
            values["amount"] = Decimal(str(values["amount"]))
        if "retry_after" in values:  # pragma: no cover - convenience alias
            values["seconds"] = values.pop("retry_after")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["amount"] = str(self.amount)
        return data


@dataclass
class _Rule:
    endpoint: str
    fault: Fault
    remaining: int | None
    fired: int = 0


@dataclass
class FaultPlan:
    """The scripted faults of one sandbox. Thread-safe; rules fire in the order added."""

    _rules: list[_Rule] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    fired: list[tuple[str, Fault]] = field(default_factory=list)

    def add(self, endpoint: str, fault: Fault, *, times: int | None = 1) -> None:
        """Inject ``fault`` on the next ``times`` calls of ``endpoint`` (None = always)."""
        if endpoint not in ENDPOINT_NAMES:
            raise ValueError(f"unknown endpoint {endpoint!r}")
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 or None")
        with self._lock:
            self._rules.append(_Rule(endpoint, fault, times))

    def add_spec(self, spec: dict[str, Any]) -> Fault:
        """``{"endpoint": ..., "times": 1, "kind": ..., <Fault fields>}`` (HTTP / CLI form)."""
        spec = dict(spec)
        endpoint = str(spec.pop("endpoint", "*"))
        times = spec.pop("times", 1)
        fault = Fault.from_dict(spec)
        self.add(endpoint, fault, times=None if times in (None, 0) else int(times))
        return fault

    def take(self, endpoint: str, *, callback: bool = False) -> Fault | None:
        """The fault for this call of ``endpoint`` in one group, consuming one use."""
        with self._lock:
            for rule in self._rules:
                if rule.endpoint not in (endpoint, "*"):
                    continue
                if rule.fault.is_callback_fault != callback:
                    continue
                rule.fired += 1
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining == 0:
                        self._rules.remove(rule)
                self.fired.append((endpoint, rule.fault))
                return rule.fault
        return None

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {"endpoint": r.endpoint, "times": r.remaining, **r.fault.to_dict()}
                for r in self._rules
            ]


__all__ = ["CALLBACK_KINDS", "REQUEST_KINDS", "Fault", "FaultPlan", "parse_fault_spec"]


def parse_fault_spec(text: str) -> dict[str, Any]:
    """``"endpoint:kind[:key=value,...]"`` -> a spec for ``FaultPlan.add_spec`` (the CLI's
    ``--fault`` syntax). Examples: ``update_giftcard:reset``,
    ``get_giftcard:rate_limited:seconds=2,times=3``, ``update_giftcard:duplicate:copies=3``,
    ``*:latency:seconds=0.2,times=0`` (``times=0``: every call)."""
    parts = text.split(":", 2)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise ValueError(f"fault spec {text!r} is not endpoint:kind[:key=value,...]")
    spec: dict[str, Any] = {"endpoint": parts[0], "kind": parts[1]}
    if len(parts) == 3 and parts[2]:
        for pair in parts[2].split(","):
            key, sep, raw = pair.partition("=")
            if not sep:
                raise ValueError(f"fault option {pair!r} is not key=value")
            key = key.strip()
            value: Any = raw.strip()
            if key in ("status", "copies", "times"):
                value = int(value)
            elif key == "seconds":
                value = float(value)
            elif key == "after_enqueue":
                value = value.lower() in ("1", "true", "yes", "y")
            spec[key] = value
    return spec
