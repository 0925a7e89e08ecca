"""``Sandbox``: a 4WS simulator with its own books, queue, callbacks and faults.

Use it in-process (``sb.client()`` / ``sb.async_client()`` talk to it through httpx
transports, callbacks go to ``sb.set_callback_handler(fn)``) or serve it over loopback HTTP
(``fourws_pay.sandbox.server.serve`` / ``fourws-pay sandbox serve``; callbacks are POSTed
with httpx). Time is the injected ``clock``: with a ``ManualClock`` nothing happens until the
test says so (``sb.process_queue()``, ``clock.advance()``), which keeps tests deterministic.

The sandbox's ledger (``sb.operations()``) is the source of truth for conservation tests:
every balance change, applied or refused, with its queue id and echoed payload.
"""

from __future__ import annotations

import copy
import threading
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import httpx

from fourws_pay.api import wirejson
from fourws_pay.api.client import AsyncClient, Client
from fourws_pay.api.fields import parse_datetime
from fourws_pay.clock import Clock, ManualClock, SystemClock
from fourws_pay.logs import get_logger, mask_barcode
from fourws_pay.money import to_decimal
from fourws_pay.sandbox.auth import RateLimiter, TokenStore
from fourws_pay.sandbox.callbacks import CallbackDelivery, CallbackHandler, CallbackSender
from fourws_pay.sandbox.faults import Fault, FaultPlan
from fourws_pay.sandbox.queue import (
    ItemKind,
    PendingCallback,
    QueueConfig,
    QueueItem,
    QueueOutcome,
    WorkQueue,
    process_item,
    schedule_callback,
)
from fourws_pay.sandbox.state import Books, Card, LedgerRecord, Voucher, wire_amount
from fourws_pay.settings import Settings

log = get_logger(component="sandbox")

IN_PROCESS_URL = "http://sandbox.4ws.local"
CURRENCY_SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£", "CHF": "CHF"}
USABLE_VOUCHER_STATUSES = frozenset({"ACTIVE", "OPEN"})

MINIMAL_PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 300 200]>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)


def sandbox_settings(base_url: str = IN_PROCESS_URL, **overrides: Any) -> Settings:
    """Settings in sandbox mode (the sandbox's credentials, ``SANDBOX_DEFAULTS``) pointing
    at ``base_url``; callbacks go to a placeholder shop until ``overrides`` say where."""
    values: dict[str, Any] = {
        "sandbox": True,
        "documents_base_url": base_url,
        "callback_base_url": "http://shop.sandbox.local/fourws/callback",
    }
    values.update(overrides)
    return Settings(**values)


@dataclass(frozen=True)
class RequestRecord:
    """One API request the sandbox answered: which endpoint, what status, which fault."""

    endpoint: str
    status: int
    fault: str | None
    at: datetime


@dataclass
class QueueRun:
    """What one ``process_queue()`` call did."""

    processed: list[QueueOutcome] = field(default_factory=list)
    delivered: list[CallbackDelivery] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "processed": [
                {"queueId": o.queue_id, "kind": o.kind, "success": o.success, "message": o.message}
                for o in self.processed
            ],
            "callbacks": [d.summary() for d in self.delivered],
        }


class Sandbox:
    """A simulated 4WS tenant. See the package docstring for the tour."""

    def __init__(
        self,
        *,
        settings: Settings | None = None,
        clock: Clock | None = None,
        seed: str | None = None,
        queue_delay: float = 0.0,
        callback_delay: float = 0.0,
        payload_key: str | None = "payload",
        callback_id_is_queue_id: bool = False,
        token_ttl_ms: int = 285_000,
        rate_limit: tuple[int, float] | None = None,
        unknown_barcode_status: int = 200,
        duplicate_barcode_status: int = 422,
        validate_inserted_ean13: bool = False,
        partial_usage_policy: Literal["forfeit", "refuse"] = "forfeit",
        hide_expired_vouchers: bool = False,
        callback_timeout: float = 5.0,
        callback_hosts: Iterable[str] = (),
        history_limit: int = 100_000,
    ) -> None:
        """``rate_limit=(capacity, per_second)`` turns on the token bucket (off by default).

        ``unknown_barcode_status`` is the HTTP status of Get Giftcard for an unknown card
        (the body is always ``{"success": false, "message": "barcode not found"}``);
        ``duplicate_barcode_status`` is 422 or 400 (the reference says both).
        ``validate_inserted_ean13`` is off because the reference's own insert example
        (8050200058081) has a wrong check digit.

        Callbacks go over HTTP only to loopback hosts (127.0.0.0/8, ::1, localhost) plus
        the names in ``callback_hosts``: the reference's examples carry public URLs
        (``https://webhook.site/...``) and a sandbox must never send traffic off the
        machine. Other URLs are recorded as undelivered, without any network access.

        ``requests`` and ``callbacks`` keep the last ``history_limit`` entries so that a
        sandbox served for days does not grow without bound; the ledger keeps everything.
        """
        self.settings = settings or sandbox_settings()
        self.clock: Clock = clock or SystemClock()
        self.books = Books(partial_usage_policy=partial_usage_policy)
        self.queue = WorkQueue()
        self.config = QueueConfig(
            queue_delay=queue_delay,
            callback_delay=callback_delay,
            payload_key=payload_key,
            callback_id_is_queue_id=callback_id_is_queue_id,
        )
        self.faults = FaultPlan()
        self.tokens = TokenStore(ttl_ms=token_ttl_ms)
        self.rate_limiter = RateLimiter(*rate_limit) if rate_limit else None
        self.unknown_barcode_status = unknown_barcode_status
        self.duplicate_barcode_status = duplicate_barcode_status
        self.validate_inserted_ean13 = validate_inserted_ean13
        self.hide_expired_vouchers = hide_expired_vouchers
        self.callback_sender = CallbackSender(
            self.clock, timeout=callback_timeout, hosts=callback_hosts, history_limit=history_limit
        )
        self.public_base_url: str | None = None
        self.requests: deque[RequestRecord] = deque(maxlen=history_limit)
        self.dropped_callbacks: list[str] = []
        # What a dropped callback would have carried, so a test can deliver it late.
        self.lost_callbacks: list[PendingCallback] = []
        self._voucher_stats: dict[str, dict[str, Any]] = {}
        self._pdfs: dict[str, list[str]] = {}
        self._lock = threading.RLock()
        self._apps: dict[bool, Any] = {}
        if seed:
            self.seed(seed)

    # ------------------------------------------------------------------ wiring

    @property
    def app(self) -> Any:
        """The ASGI app to serve (uvicorn) or mount; connection faults really break sockets."""
        return self._app(inprocess=False)

    def _app(self, *, inprocess: bool) -> Any:
        if inprocess not in self._apps:
            from fourws_pay.sandbox.app import build_app

            self._apps[inprocess] = build_app(self, inprocess=inprocess)
        return self._apps[inprocess]

    def transport(self) -> httpx.BaseTransport:
        from fourws_pay.sandbox.transport import SyncSandboxTransport

        return SyncSandboxTransport(self._app(inprocess=True), self.clock)

    def async_transport(self) -> httpx.AsyncBaseTransport:
        from fourws_pay.sandbox.transport import AsyncSandboxTransport

        return AsyncSandboxTransport(self._app(inprocess=True), self.clock)

    def client(self, settings: Settings | None = None, **kwargs: Any) -> Client:
        """A blocking ``Client`` wired to this sandbox in-process, sharing its clock."""
        kwargs.setdefault("clock", self.clock)
        return Client(settings or self.settings, transport=self.transport(), **kwargs)

    def async_client(self, settings: Settings | None = None, **kwargs: Any) -> AsyncClient:
        """An ``AsyncClient`` wired to this sandbox in-process, sharing its clock."""
        kwargs.setdefault("clock", self.clock)
        return AsyncClient(settings or self.settings, transport=self.async_transport(), **kwargs)

    def set_callback_handler(self, handler: CallbackHandler | None) -> None:
        """Deliver callbacks in-process: ``handler(url, body) -> HTTP status`` (may be async).

        Without a handler callbacks are POSTed over HTTP with httpx (served mode).
        """
        self.callback_sender.handler = handler

    @property
    def callbacks(self) -> deque[CallbackDelivery]:
        """The last ``history_limit`` callback attempts, oldest first."""
        return self.callback_sender.history

    def settings_env(self, base_url: str | None = None) -> dict[str, str]:
        """``FOURWS_*`` variables a shop sets to talk to this sandbox at ``base_url``."""
        s = self.settings
        return {
            "FOURWS_DOCUMENTS_BASE_URL": base_url or s.documents_base_url,
            # the sandbox serves both APIs on one address; a real tenant may have two
            "FOURWS_DATA_BASE_URL": base_url or s.data_url,
            "FOURWS_APPLICATION_ID": s.application_id,
            "FOURWS_NAMESPACE": s.namespace,
            "FOURWS_LANGUAGE_ID": s.language_id,
            "FOURWS_USERNAME": s.username,
            "FOURWS_PASSWORD": s.password.get_secret_value(),
            "FOURWS_COMPANY_ID": s.company_id,
            "FOURWS_SITE_ID": s.site_id,
            "FOURWS_ENTITY_CODE": s.entity_code,
        }

    # ----------------------------------------------------------------- seeding

    def seed(self, name: str) -> None:
        """Load a named data set; ``"demo"`` is the reference's examples (see ``seed.py``)."""
        from fourws_pay.sandbox.seed import SEEDS

        if name not in SEEDS:
            raise ValueError(f"unknown seed {name!r}; known: {', '.join(sorted(SEEDS))}")
        SEEDS[name](self)

    def add_giftcard(
        self,
        barcode: str | None = None,
        amount: Decimal | int | str = Decimal("50.00"),
        *,
        currency: str = "EUR",
        currency_symbol: str | None = None,
        decimals: int = 2,
        entity_code: str | int | None = None,
        active: bool = True,
        activated: bool = True,
        partial_usage: bool = True,
        network_usage: bool = True,
        issue_date: datetime | str | None = None,
        activation_date: datetime | str | None = None,
        expiration_date: datetime | str | None = None,
        original_amount: Decimal | int | str | None = None,
        **fields: Any,
    ) -> Card:
        """Put a card on the books (replacing one with the same barcode); return it.

        Defaults: an active EUR card of 50.00, activated yesterday, expiring in a year, of
        this sandbox's entity. ``activated=False`` makes a generated, never-activated card
        (balance 0, ``flgActive`` N) that a positive update activates. Extra keyword
        arguments set other ``Card`` fields (``branch_code``, ``item_code``...).
        """
        now = self.clock.now()
        value = to_decimal(amount) if activated else Decimal(0)
        if value < 0:
            raise ValueError("a card balance cannot be negative")
        code = barcode or self.books.new_card_barcode("200")
        fields.setdefault("company_id", self.settings.company_id or "XXXX")
        fields.setdefault("site_id", self.settings.site_id or "500")
        card = Card(
            barcode=code,
            amount=value,
            original_amount=to_decimal(original_amount) if original_amount is not None else value,
            currency=currency,
            currency_symbol=currency_symbol or CURRENCY_SYMBOLS.get(currency, currency),
            decimals=decimals,
            entity_code=str(
                entity_code if entity_code is not None else self.settings.entity_code or "440"
            ),
            active=active and activated,
            ever_activated=activated,
            partial_usage=partial_usage,
            network_usage=network_usage,
            issue_date=_when(issue_date) or now - timedelta(days=1),
            activation_date=(_when(activation_date) or now - timedelta(days=1))
            if activated
            else None,
            expiration_date=_when(expiration_date) or now + timedelta(days=365),
            **fields,
        )
        with self._lock:
            self.books.cards[code] = card
        return card

    def add_product(
        self,
        item_code: str,
        *,
        skus: Iterable[Iterable[str | None]] = (),
        item_type: str = "GOODS",
        barcodes: dict[str, Iterable[str | None]] | None = None,
        used_in_documents: Iterable[str] = (),
    ) -> None:
        """A product with its SKUs (dimension tuples) and optional existing barcodes.

        ``item_type="FINANCIAL"`` makes it a gift-card item usable by generateGiftcards.
        Barcodes in ``used_in_documents`` refuse deletion without ``ignore_movements``.
        """
        with self._lock:
            self.books.add_product(item_code, skus=[tuple(s) for s in skus], item_type=item_type)
            used = set(used_in_documents)
            for code, dims in (barcodes or {}).items():
                rec = self.books.insert_barcode(item_code, code, list(dims), "EAN13")
                rec.used_in_documents = code in used

    def add_vouchers(
        self,
        card_barcode: str,
        vouchers: Iterable[dict[str, Any]] | int,
        *,
        stats: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Give a loyalty card vouchers: wire objects (copied) or a number to make up.

        Made-up vouchers are ACTIVE, worth 10.00, valid for 30 days from now. ``stats``
        are the top-level counters (``validTicket``...) of Get customer loyalty vouchers.
        """
        now = self.clock.now()
        made: list[dict[str, Any]] = []
        if isinstance(vouchers, int):
            for i in range(vouchers):
                made.append(
                    {
                        "id": str(uuid.uuid4()),
                        "barcode": f"79{len(self.books.vouchers) + i:011d}",
                        "totalAmount": Decimal("10.00"),
                        "documentType": "LOYALTY",
                        "cause": "VOUCHER",
                        "documentStatus": "ACTIVE",
                        "cardBarcode": card_barcode,
                        "confirmationDateOrder": _wire(now - timedelta(minutes=len(made) + 1)),
                        "endValidity": _wire(now + timedelta(days=30)),
                        "currency": "EUR",
                        "currencySymbol": "€",
                    }
                )
        else:
            made = [copy.deepcopy(v) for v in vouchers]
        with self._lock:
            for data in made:
                data.setdefault("cardBarcode", card_barcode)
                activated = parse_datetime(data.get("confirmationDateOrder") or None)
                self.books.vouchers.append(
                    Voucher(
                        card_barcode=card_barcode,
                        data=data,
                        created_at=activated or now,
                        activated_at=activated,
                        status=str(data.get("documentStatus", "ACTIVE")).upper(),
                        end_validity=parse_datetime(data.get("endValidity") or None),
                    )
                )
            if stats is not None:
                self._voucher_stats[card_barcode] = dict(stats)
        return made

    # -------------------------------------------------------------- inspection

    def card(self, barcode: str) -> Card:
        """A snapshot of the card (editing it changes nothing); ``KeyError`` if unknown."""
        with self._lock:
            return replace(self.books.cards[barcode])

    def balance(self, barcode: str) -> Decimal:
        return self.card(barcode).amount

    def card_wire(self, barcode: str) -> dict[str, Any] | None:
        with self._lock:
            card = self.books.cards.get(barcode)
            return card.to_wire() if card is not None else None

    def operations(self, barcode: str | None = None) -> list[LedgerRecord]:
        """Every ledger record (applied and refused), oldest first."""
        with self._lock:
            return [r for r in self.books.ledger if barcode is None or r.barcode == barcode]

    def applied_operations(self, barcode: str | None = None) -> list[LedgerRecord]:
        """The balance changes that happened, including in-shop spends (``kind`` says)."""
        return [r for r in self.operations(barcode) if r.outcome == "applied"]

    def total_consumed(self, barcode: str, *, include_in_shop: bool = False) -> Decimal:
        """Money taken from the card by consumptions (positive number)."""
        kinds = {"consumption", "in_shop_spend"} if include_in_shop else {"consumption"}
        return sum(
            (-r.amount for r in self.applied_operations(barcode) if r.kind in kinds), Decimal(0)
        )

    def ledger_wire(self, barcode: str | None = None) -> list[dict[str, Any]]:
        return [
            {
                "seq": r.seq,
                "barcode": r.barcode,
                "amount": wire_amount(r.amount),
                "kind": r.kind,
                "outcome": r.outcome,
                "appliedAt": _wire(r.applied_at),
                "queueId": r.queue_id,
                "callbackId": r.callback_id,
                "payload": r.payload,
                "message": r.message,
                "balanceAfter": None if r.balance_after is None else wire_amount(r.balance_after),
                "forfeited": wire_amount(r.forfeited),
            }
            for r in self.operations(barcode)
        ]

    def pending(self) -> list[QueueItem]:
        """Accepted items not processed yet."""
        return self.queue.pending()

    def spend_in_shop(self, barcode: str, amount: Decimal | int | str) -> LedgerRecord:
        """A till spends from the card right now, behind the shop's back (no queue)."""
        with self._lock:
            rec = self.books.spend_in_shop(barcode, to_decimal(amount), self.clock.now())
        log.info("sandbox.in_shop_spend", barcode=mask_barcode(barcode), amount=str(amount))
        return rec

    def expire_tokens(self) -> None:
        """Make every Data management token invalid now (the next call gets 401)."""
        self.tokens.revoke_all()

    def log_request(self, endpoint: str, status: int, fault: Fault | None) -> None:
        """Append to ``requests`` (tests count how often a POST really reached 4WS)."""
        with self._lock:
            self.requests.append(
                RequestRecord(endpoint, status, fault.kind if fault else None, self.clock.now())
            )

    def requests_to(self, endpoint: str) -> list[RequestRecord]:
        with self._lock:
            return [r for r in self.requests if r.endpoint == endpoint]

    # ------------------------------------------------------------------- queue

    def enqueue(
        self, kind: ItemKind, endpoint: str, body: dict[str, Any], callback_fault: Fault | None
    ) -> QueueItem:
        """Accept asynchronous work; an unknown ``kind`` raises ``ValueError``."""
        return self.queue.enqueue(
            kind, endpoint, body, self.clock.now(), self.config.queue_delay, callback_fault
        )

    def _process(self, items: list[QueueItem]) -> list[QueueOutcome]:
        outcomes = []
        for item in items:
            now = self.clock.now()
            with self._lock:
                outcome = process_item(item, self.books, now, self.config, self.pdf_url)
            if (
                item.callback is not None
                and item.callback_fault is not None
                and item.callback_fault.kind == "drop"
            ):
                self.dropped_callbacks.append(item.queue_id)
                self.lost_callbacks.append(
                    PendingCallback(
                        url=item.callback,
                        body=wirejson.dumps(outcome.callback_body).encode(),
                        queue_id=item.queue_id,
                        due_at=now,
                    )
                )
            schedule_callback(self.queue, item, outcome, now, self.config)
            log.info(
                "sandbox.queue.processed",
                queue_id=item.queue_id,
                kind=item.kind,
                success=outcome.success,
            )
            outcomes.append(outcome)
        return outcomes

    def process_queue(self) -> QueueRun:
        """Process every due item in order, then deliver every due callback (blocking)."""
        run = QueueRun(processed=self._process(self.queue.take_due(self.clock.now())))
        for callback in self.queue.due_callbacks(self.clock.now()):
            run.delivered += self.callback_sender.deliver(callback)
        return run

    async def aprocess_queue(self) -> QueueRun:
        """``process_queue`` for event loops: callbacks are awaited, never blocking."""
        run = QueueRun(processed=self._process(self.queue.take_due(self.clock.now())))
        for callback in self.queue.due_callbacks(self.clock.now()):
            run.delivered += await self.callback_sender.adeliver(callback)
        return run

    def run_until_idle(self, *, max_rounds: int = 1000) -> QueueRun:
        """Process and deliver until nothing is pending, advancing a ``ManualClock`` to
        each next due time (delayed items and callbacks). Other clocks are not moved."""
        total = QueueRun()
        for _ in range(max_rounds):
            run = self.process_queue()
            total.processed += run.processed
            total.delivered += run.delivered
            due = self.queue.next_due()
            if due is None:
                break
            if isinstance(self.clock, ManualClock):
                wait = (due - self.clock.now()).total_seconds()
                if wait > 0:
                    self.clock.advance(wait)
            elif not run.processed and not run.delivered:
                break
        return total

    async def aprocess_now(self, queue_id: str) -> QueueRun:
        """Process one item at once and deliver its callbacks immediately (the
        ``before_response`` fault: the callback arrives before the POST's answer)."""
        item = self.queue.take(queue_id)
        run = QueueRun()
        if item is None:
            return run
        run.processed = self._process([item])
        for callback in self.queue.take_callbacks(queue_id):
            run.delivered += await self.callback_sender.adeliver(callback)
        return run

    # -------------------------------------------------------------- callbacks

    def may_post_to(self, url: str) -> bool:
        """Whether an HTTP callback to ``url`` stays on this machine (or was allowed)."""
        return self.callback_sender.may_post_to(url)

    def callback_bodies(self) -> list[Any]:
        """Bodies of the delivered callbacks, parsed, in delivery order."""
        return [c.json() for c in self.callbacks]

    # ------------------------------------------------------ data and vouchers

    def insert_barcode(self, item_code: str, barcode: str, dims: list[Any], kind: str) -> Any:
        with self._lock:
            return self.books.insert_barcode(item_code, barcode, dims, kind)

    def barcode_record(self, barcode: str) -> dict[str, Any] | None:
        with self._lock:
            rec = self.books.barcodes.get(barcode)
            return rec.to_sku() if rec is not None else None

    def delete_barcode(self, item_code: str, barcode: str, ignore_movements: bool) -> None:
        with self._lock:
            self.books.delete_barcode(item_code, barcode, ignore_movements)

    def generate_missing_barcodes(
        self, item_code: str, dims: dict[str, Any]
    ) -> list[dict[str, Any]]:
        with self._lock:
            created = self.books.generate_missing(item_code, dims)
        return [{"prog_id": r.prog_id, "barcode": r.barcode} for r in created]

    def _usable(self, voucher: Voucher) -> bool:
        if voucher.status not in USABLE_VOUCHER_STATUSES:
            return False
        if self.hide_expired_vouchers and voucher.end_validity is not None:
            return self.clock.now() < voucher.end_validity
        return True

    def customer_vouchers(self, card: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Usable vouchers of a loyalty card and its counters. Expired ones are listed
        unless ``hide_expired_vouchers``: the reference's own example lists them."""
        with self._lock:
            found = [
                v.data for v in self.books.vouchers if v.card_barcode == card and self._usable(v)
            ]
            stats = self._voucher_stats.get(
                card,
                {
                    "validTicket": 0,
                    "remainingPurchases": 0,
                    "validSalesTotalAmount": 0,
                    "validSalesTotalCashback": 0,
                },
            )
        return found, dict(stats)

    def vouchers_between(
        self, start: datetime, end: datetime, card: str | None
    ) -> list[dict[str, Any]]:
        with self._lock:
            return [
                v.data
                for v in self.books.vouchers
                if self._usable(v)
                and v.activated_at is not None
                and start <= v.activated_at <= end
                and (card is None or v.card_barcode == card)
            ]

    def vouchers_since(self, since: datetime) -> list[dict[str, Any]]:
        with self._lock:
            found = [v for v in self.books.vouchers if v.created_at > since]
        return [v.data for v in sorted(found, key=lambda v: v.created_at)]

    def pdf_url(self, barcodes: list[str], base: str | None = None) -> str:
        doc_id = uuid.uuid4().hex
        with self._lock:
            self._pdfs[doc_id] = list(barcodes)
        root = (base or self.public_base_url or self.settings.documents_base_url).rstrip("/")
        return f"{root}/_sandbox/pdf/{doc_id}"

    def pdf_bytes(self, doc_id: str) -> bytes | None:
        with self._lock:
            return MINIMAL_PDF if doc_id in self._pdfs else None


def _when(value: datetime | str | None) -> datetime | None:
    return parse_datetime(value)


def _wire(value: datetime) -> str:
    from fourws_pay.sandbox.state import wire_datetime

    return wire_datetime(value)
