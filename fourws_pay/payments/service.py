"""``GiftCardPayments`` and ``AsyncGiftCardPayments``: the provider shops call.

Both execute the flows of ``PaymentsCore`` (all the logic lives there); what differs is only
how a 4WS call is made and how concurrent ``check`` lookups of one card share a single
request (threads wait on an event; tasks await a future).

``check`` may answer from a short TTL cache (``Settings.check_cache_ttl``); ``reserve``,
``capture`` and ``refund`` always read the card fresh.

The ledger is synchronous (a card transaction may wait seconds for a lock another worker
holds), so ``AsyncGiftCardPayments`` never touches it on the event loop: every step of a
flow between two 4WS calls, and every ledger-only method, runs on a small thread pool of
its own, while the 4WS calls themselves are awaited on the loop. A generator may be resumed
from any thread as long as two threads never resume it at once, which the awaiting
coroutine guarantees.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

import pluggy

from fourws_pay.api.client import AsyncClient, Client
from fourws_pay.clock import Clock, SystemClock
from fourws_pay.errors import FourWSError, LedgerClosedError
from fourws_pay.payments.cache import CardRead
from fourws_pay.payments.callbacks import CallbackApp
from fourws_pay.payments.core import PaymentsCore
from fourws_pay.payments.defaults import default_plugin_manager, default_store
from fourws_pay.payments.effects import (
    Pause,
    PaymentFlow,
    PostGenerate,
    PostUpdate,
    ReadCard,
    RequestPdf,
)
from fourws_pay.payments.models import (
    CallbackResult,
    Decision,
    IssuedCard,
    Operation,
    OperationState,
    OrderAllocation,
    OrderRefundOutcome,
    ReconcileReport,
    RefundStrategy,
    Reservation,
    ReservationState,
)
from fourws_pay.settings import Settings

if TYPE_CHECKING:
    from fourws_pay.payments.ports import LedgerStore

T = TypeVar("T")


def _step(flow: PaymentFlow[T], value: Any, error: BaseException | None) -> tuple[bool, Any]:
    """Resume ``flow`` once: (True, its result) or (False, the next effect).

    ``StopIteration`` cannot cross a ``Future`` (asyncio refuses to store it), hence the
    tuple when the step runs on a thread.
    """
    try:
        effect = flow.throw(error) if error is not None else flow.send(value)
    except StopIteration as stop:
        return True, stop.value
    return False, effect


class _Provider:
    """Construction and the effect-free methods common to both twins."""

    def __init__(
        self,
        settings: Settings | None,
        store: LedgerStore | None,
        clock: Clock | None,
        plugin_manager: pluggy.PluginManager | None,
        client_settings: Settings | None,
    ) -> None:
        settings = settings or client_settings or Settings.from_env()
        if plugin_manager is None:
            plugin_manager = default_plugin_manager(GiftCardPayments, AsyncGiftCardPayments)
        self.clock: Clock = clock or SystemClock()
        if store is None:
            store = default_store(settings)
        self.core = PaymentsCore(settings, store, self.clock, plugin_manager)

    @property
    def settings(self) -> Settings:
        return self.core.settings

    @property
    def store(self) -> LedgerStore:
        return self.core.store

    @property
    def plugin_manager(self) -> pluggy.PluginManager:
        return self.core.pm


class GiftCardPayments(_Provider):
    """Blocking gift-card provider. Safe to share between threads."""

    def __init__(
        self,
        settings: Settings | None = None,
        client: Client | None = None,
        store: LedgerStore | None = None,
        *,
        clock: Clock | None = None,
        plugin_manager: pluggy.PluginManager | None = None,
    ) -> None:
        super().__init__(
            settings, store, clock, plugin_manager, client.settings if client else None
        )
        self.client = client or Client(self.settings, clock=self.clock)
        self._inflight: dict[str, threading.Event] = {}
        self._inflight_lock = threading.Lock()

    def _run(self, flow: PaymentFlow[T]) -> T:
        value: Any = None
        error: BaseException | None = None
        while True:
            done, effect = _step(flow, value, error)
            if done:
                return effect  # type: ignore[no-any-return]
            value, error = None, None
            try:
                if isinstance(effect, ReadCard):
                    value = self._read(effect)
                elif isinstance(effect, PostUpdate):
                    value = self.client.update_giftcard(effect.update)
                elif isinstance(effect, PostGenerate):
                    value = self.client.generate_giftcards(
                        effect.item_code, effect.count, effect.callback
                    )
                elif isinstance(effect, Pause):
                    self.clock.sleep(effect.seconds)
                else:
                    assert isinstance(effect, RequestPdf)
                    value = self.client.giftcard_pdf(effect.barcodes)
            except FourWSError as exc:
                error = exc

    def _read(self, effect: ReadCard) -> CardRead:
        cards = self.core.cards
        started = self.clock.now()
        if not effect.cached or not cards.enabled:
            read = CardRead(self.client.get_giftcard(effect.barcode), started)
            cards.put(effect.barcode, read)
            return read
        with self._inflight_lock:
            event = self._inflight.get(effect.barcode)
            leader = event is None
            if leader:
                event = self._inflight[effect.barcode] = threading.Event()
        assert event is not None
        if not leader:  # single-flight: wait for the leader's read, then share it
            event.wait(self.settings.read_timeout + self.settings.connect_timeout)
            hit = cards.get(effect.barcode)
            return hit or CardRead(self.client.get_giftcard(effect.barcode), started)
        try:
            read = CardRead(self.client.get_giftcard(effect.barcode), started)
            cards.put(effect.barcode, read)
            return read
        finally:
            with self._inflight_lock:
                self._inflight.pop(effect.barcode, None)
            event.set()

    def check(
        self,
        barcode: str,
        amount: Decimal | int | str,
        currency: str,
        *,
        client_key: str | None = None,
        allow_partial: bool = True,
    ) -> Decision:
        """Can the card pay ``amount``? Never raises for a refusal: read ``Decision.ok``.

        With ``allow_partial`` (the default) a card whose balance is short is still usable
        for part of the amount (``usable_amount``, ``covers_full_amount``).
        """
        return self._run(self.core.check(barcode, amount, currency, client_key, allow_partial))

    def reserve(
        self,
        barcode: str,
        *,
        amount: Decimal | int | str | None = None,
        currency: str | None = None,
        order_ref: str,
        client_key: str | None = None,
        allow_partial: bool = False,
        ttl: float | None = None,
    ) -> Reservation:
        """Hold part of the card's balance for ``order_ref``; raises ``PaymentRefused``.

        Without ``amount``/``currency`` the cart is asked through the
        ``fourws_pay_cart_snapshot`` hook. ``allow_partial`` lets a short card hold what it
        has (the rest is paid another way). The hold lasts ``ttl`` seconds
        (``Settings.reservation_ttl``) and never beyond the card's expiration.
        """
        return self._run(
            self.core.reserve(barcode, amount, currency, order_ref, client_key, allow_partial, ttl)
        )

    def capture(
        self,
        reservation_id: str,
        *,
        amount: Decimal | int | str | None = None,
        keep_remainder: bool = False,
    ) -> Operation:
        """The order is confirmed: post the consumption. Idempotent per reservation.

        Returns the operation, normally ``enqueued`` until 4WS's callback settles it;
        ``unknown`` if the outcome is ambiguous (``reconcile`` resolves it); ``queued``
        while another capture or refund of the card is unresolved: it is accepted, its hold
        kept, and posted at its turn by whichever worker settles the one before it (a
        ``queued`` then ``captured`` or ``capture_failed`` payment event tells the host).
        Raises ``PaymentRefused`` if the fresh re-check fails, or the 4WS error if the POST
        was definitely refused. A partial ``amount`` frees the rest of the hold once
        settled, unless ``keep_remainder``: then the rest stays held as a new reservation
        of the same ``order_ref`` (see ``PaymentsCore.capture``).
        """
        return self._run(self.core.capture(reservation_id, amount, keep_remainder))

    def reserve_order(
        self,
        order_ref: str,
        *,
        cards: Sequence[str],
        amount: Decimal | int | str,
        currency: str,
        allocation_key: str = "checkout",
        split: Mapping[str, Decimal | int | str] | None = None,
        client_key: str | None = None,
        allow_partial: bool = False,
        ttl: float | None = None,
    ) -> OrderAllocation:
        """Hold ``amount`` of one order over several ``cards``, all or nothing.

        Which card pays how much: earliest validity end first, then smallest available
        balance, or ``split`` (``{barcode: amount}``). Each share is an ordinary hold of
        ``order_ref``; if one cannot be placed the others this call placed are released
        and ``OrderAllocationError`` names the card (masked) and the reason. With
        ``allow_partial`` the cards may cover less (``OrderAllocation.remaining`` is for
        another payment method). Calling again with the same ``allocation_key`` returns the
        same holds (finishing an attempt a crash interrupted); after a failed or expired
        attempt it starts over. See ``fourws_pay.payments.order_allocation``.
        """
        return self._run(
            self.core.reserve_order(
                order_ref,
                cards,
                amount,
                currency,
                allocation_key,
                split,
                client_key,
                allow_partial,
                ttl,
            )
        )

    def capture_order(self, order_ref: str) -> list[Operation]:
        """Capture every active hold of the order, each its own capture (``queued`` while
        its card is busy); safe to re-run (a captured hold gives its capture back).
        ``OrderCaptureError`` when some holds could not be captured (the others were)."""
        return self._run(self.core.capture_order(order_ref))

    def release_order(self, order_ref: str) -> list[Reservation]:
        """Let every active hold of the order go (not the captured ones); safe to re-run.
        Returns the holds this call released."""
        return self.core.release_order(order_ref)

    def release(self, reservation_id: str) -> Reservation:
        """Let a hold go (idempotent)."""
        return self.core.release(reservation_id)

    def resolve(
        self, operation_id: str, *, applied: bool, note: str, actor: str | None = None
    ) -> Operation:
        """Settle an operation in ``manual_review`` by an operator's verdict (see the core);
        the card's queued operations then get their turns."""
        return self._run(self.core.resolve(operation_id, applied=applied, note=note, actor=actor))

    def refund(self, operation_id: str, *, amount: Decimal | int | str | None = None) -> Operation:
        """Give captured money back to the card (all that is left, or ``amount``).

        4WS documents no re-credit; this posts a *positive* updateGiftcard amount, which
        the reference marks [inferred]. Confirm with 4WS before relying on it in production.
        """
        return self._run(self.core.refund(operation_id, amount))

    def refund_order(
        self,
        order_ref: str,
        *,
        refund_key: str,
        amount: Decimal | int | str | None = None,
        strategy: RefundStrategy | str = RefundStrategy.NEWEST_FIRST,
    ) -> OrderRefundOutcome:
        """Refund ``amount`` of an order (all that is left without it) over its settled
        captures, newest first or pro rata (``RefundStrategy``); each part posted once.

        ``refund_key`` names this refund (the host's refund or credit-memo id): calling
        again with it carries the same refund on (after a crash, say) and never refunds
        twice; the same key for another amount is refused. No capture is refunded beyond
        what it took. See ``fourws_pay.payments.order_refunds``.
        """
        return self._run(self.core.refund_order(order_ref, amount, refund_key, strategy))

    def order_refunds(self, order_ref: str) -> list[OrderRefundOutcome]:
        """The order's refunds, oldest first, each with its parts' refund operations."""
        return self.core.order_refunds(order_ref)

    def handle_callback(self, path: str, body: bytes) -> CallbackResult:
        """Apply a 4WS callback posted to ``path`` (raises ``CallbackRejected``); then
        the card's queued operations get their turns (posted before this returns)."""
        return self._run(self.core.settle_callback(path, body))

    def reconcile(self) -> ReconcileReport:
        """Resolve unknown and overdue operations from the card balances, then sweep."""
        return self._run(self.core.reconcile())

    def sweep(self) -> int:
        """Expire holds past their expiry; returns how many changed (idempotent)."""
        return self.core.sweep()

    def get_reservation(self, reservation_id: str) -> Reservation:
        """The reservation with this id (``NotFoundInLedgerError`` if there is none)."""
        return self.core._reservation(reservation_id)

    def get_operation(self, operation_id: str) -> Operation:
        """The operation with this id (``NotFoundInLedgerError`` if there is none)."""
        return self.core._operation(operation_id)

    def wait_for_operation(self, operation_id: str, *, timeout: float = 30.0) -> Operation:
        """The operation once it is settled (``succeeded`` or ``failed``), or as it stands
        after ``timeout`` seconds (see ``PaymentsCore.wait_for_operation``)."""
        return self._run(self.core.wait_for_operation(operation_id, timeout))

    def list_reservations(
        self, states: list[ReservationState] | None = None, order_ref: str | None = None
    ) -> list[Reservation]:
        """Reservations, oldest first, optionally only in ``states`` / for ``order_ref``."""
        return self.store.list_reservations(states, order_ref)

    def list_operations(self, states: list[OperationState] | None = None) -> list[Operation]:
        """Operations, oldest first, optionally only in ``states``."""
        return self.store.list_operations(states)

    # ------------------------------------------------------------- selling cards

    def issue_cards(
        self,
        order_ref: str,
        line_id: str,
        *,
        amount: Decimal | int | str,
        currency: str,
        count: int = 1,
        item_code: str | None = None,
        decimals: int = 2,
    ) -> list[IssuedCard]:
        """Sell ``count`` gift cards of ``amount`` on an order line, once the order is paid.

        Idempotent per (order, line, index): calling again returns the same cards. 4WS
        generates the barcodes (callback), then each card is activated with ``amount``
        (callback), then delivered through ``fourws_pay_deliver_giftcards``; the callbacks
        and ``reconcile`` carry each step, so this returns as soon as the generation is
        asked for. ``item_code`` defaults to ``Settings.issuing_item_code``.
        """
        return self._run(
            self.core.issue_cards(order_ref, line_id, amount, currency, count, item_code, decimals)
        )

    def issued_cards(self, order_ref: str) -> list[IssuedCard]:
        """The order's sold cards, oldest first (whole barcodes: staff and delivery only)."""
        return self.core.issued_cards(order_ref)

    def get_issued_card(self, card_id: str) -> IssuedCard:
        """The sold card with this id (``NotFoundInLedgerError`` if there is none)."""
        return self.core._issued_card(card_id)

    def cancel_issued_card(self, card_id: str) -> IssuedCard:
        """Cancel a sold card, taking back only what is unspent; ``SaleAlreadySpentError``
        when nothing is left (see ``PaymentsCore.cancel_issued_card``). Safe to re-run."""
        return self._run(self.core.cancel_issued_card(card_id))

    def resend_giftcards(
        self, order_ref: str, card_ids: list[str] | None = None
    ) -> list[IssuedCard]:
        """Deliver the order's delivered cards again (the same codes); returns them."""
        return self._run(self.core.resend_giftcards(order_ref, card_ids))

    def refund_to_new_card(
        self, operation_id: str, *, amount: Decimal | int | str | None = None
    ) -> IssuedCard:
        """Refund a settled capture (all that is left, or ``amount``) as a new sold card."""
        return self._run(self.core.refund_to_new_card(operation_id, amount))

    def reclaimed_amount(self, card_id: str) -> Decimal:
        """What a cancelled sold card gave back: its reclaim captures that settled."""
        return self.core.reclaimed_amount(card_id)

    def callback_app(self) -> CallbackApp:
        """An ASGI app to mount where 4WS posts callbacks (``POST /<op id>/<token>``).

        The ledger work of each callback runs in a worker thread, not on the server's loop.
        """

        async def handle(path: str, body: bytes) -> CallbackResult:
            return await asyncio.to_thread(self.core.handle_callback, path, body)

        async def after(result: CallbackResult) -> None:
            await asyncio.to_thread(self._run, self.core.after_callback(result))

        return CallbackApp(handle, after)

    def close(self) -> None:
        self.client.close()
        self.store.close()


class AsyncGiftCardPayments(_Provider):
    """asyncio gift-card provider: the same methods as ``GiftCardPayments``, awaited."""

    def __init__(
        self,
        settings: Settings | None = None,
        client: AsyncClient | None = None,
        store: LedgerStore | None = None,
        *,
        clock: Clock | None = None,
        plugin_manager: pluggy.PluginManager | None = None,
        ledger_threads: int = 16,
    ) -> None:
        """``ledger_threads`` bounds how many ledger steps run at once (each may wait for
        a card lock); more concurrent checkouts than that queue for a thread."""
        super().__init__(
            settings, store, clock, plugin_manager, client.settings if client else None
        )
        self.client = client or AsyncClient(self.settings, clock=self.clock)
        self._inflight: dict[str, asyncio.Future[CardRead]] = {}
        self._ledger_threads = ThreadPoolExecutor(
            max_workers=ledger_threads, thread_name_prefix="fourws-pay-ledger"
        )

    async def _off_loop(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking ledger work on the provider's threads; the loop keeps running."""
        loop = asyncio.get_running_loop()
        call = functools.partial(function, *args, **kwargs)
        context = contextvars.copy_context()  # as asyncio.to_thread does: logging context
        try:
            future = loop.run_in_executor(self._ledger_threads, context.run, call)
        except RuntimeError:  # the executor was shut down by aclose()
            raise LedgerClosedError("the payments provider is closed") from None
        return await future

    async def _run(self, flow: PaymentFlow[T]) -> T:
        value: Any = None
        error: BaseException | None = None
        while True:
            done, effect = await self._off_loop(_step, flow, value, error)
            if done:
                return effect  # type: ignore[no-any-return]
            value, error = None, None
            try:
                if isinstance(effect, ReadCard):
                    value = await self._read(effect)
                elif isinstance(effect, PostUpdate):
                    value = await self.client.update_giftcard(effect.update)
                elif isinstance(effect, PostGenerate):
                    value = await self.client.generate_giftcards(
                        effect.item_code, effect.count, effect.callback
                    )
                elif isinstance(effect, Pause):
                    await self.clock.asleep(effect.seconds)
                else:
                    assert isinstance(effect, RequestPdf)
                    value = await self.client.giftcard_pdf(effect.barcodes)
            except FourWSError as exc:
                error = exc

    async def _read(self, effect: ReadCard) -> CardRead:
        cards = self.core.cards
        started = self.clock.now()
        if not effect.cached or not cards.enabled:
            read = CardRead(await self.client.get_giftcard(effect.barcode), started)
            cards.put(effect.barcode, read)
            return read
        pending = self._inflight.get(effect.barcode)
        if pending is not None:  # single-flight: share the leader's read (or its error)
            return await asyncio.shield(pending)
        future: asyncio.Future[CardRead] = asyncio.get_running_loop().create_future()
        self._inflight[effect.barcode] = future
        try:
            read = CardRead(await self.client.get_giftcard(effect.barcode), started)
            cards.put(effect.barcode, read)
            future.set_result(read)
            return read
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: followers re-raise it themselves
            raise
        finally:
            self._inflight.pop(effect.barcode, None)

    async def check(
        self,
        barcode: str,
        amount: Decimal | int | str,
        currency: str,
        *,
        client_key: str | None = None,
        allow_partial: bool = True,
    ) -> Decision:
        """See ``GiftCardPayments.check``."""
        return await self._run(
            self.core.check(barcode, amount, currency, client_key, allow_partial)
        )

    async def reserve(
        self,
        barcode: str,
        *,
        amount: Decimal | int | str | None = None,
        currency: str | None = None,
        order_ref: str,
        client_key: str | None = None,
        allow_partial: bool = False,
        ttl: float | None = None,
    ) -> Reservation:
        """See ``GiftCardPayments.reserve``."""
        return await self._run(
            self.core.reserve(barcode, amount, currency, order_ref, client_key, allow_partial, ttl)
        )

    async def capture(
        self,
        reservation_id: str,
        *,
        amount: Decimal | int | str | None = None,
        keep_remainder: bool = False,
    ) -> Operation:
        """See ``GiftCardPayments.capture``."""
        return await self._run(self.core.capture(reservation_id, amount, keep_remainder))

    async def reserve_order(
        self,
        order_ref: str,
        *,
        cards: Sequence[str],
        amount: Decimal | int | str,
        currency: str,
        allocation_key: str = "checkout",
        split: Mapping[str, Decimal | int | str] | None = None,
        client_key: str | None = None,
        allow_partial: bool = False,
        ttl: float | None = None,
    ) -> OrderAllocation:
        """See ``GiftCardPayments.reserve_order``."""
        return await self._run(
            self.core.reserve_order(
                order_ref,
                cards,
                amount,
                currency,
                allocation_key,
                split,
                client_key,
                allow_partial,
                ttl,
            )
        )

    async def capture_order(self, order_ref: str) -> list[Operation]:
        """See ``GiftCardPayments.capture_order``."""
        return await self._run(self.core.capture_order(order_ref))

    async def release_order(self, order_ref: str) -> list[Reservation]:
        """See ``GiftCardPayments.release_order``."""
        return await self._off_loop(self.core.release_order, order_ref)

    async def release(self, reservation_id: str) -> Reservation:
        """See ``GiftCardPayments.release``."""
        return await self._off_loop(self.core.release, reservation_id)

    async def resolve(
        self, operation_id: str, *, applied: bool, note: str, actor: str | None = None
    ) -> Operation:
        """See ``GiftCardPayments.resolve``."""
        return await self._run(
            self.core.resolve(operation_id, applied=applied, note=note, actor=actor)
        )

    async def refund(
        self, operation_id: str, *, amount: Decimal | int | str | None = None
    ) -> Operation:
        """See ``GiftCardPayments.refund``."""
        return await self._run(self.core.refund(operation_id, amount))

    async def refund_order(
        self,
        order_ref: str,
        *,
        refund_key: str,
        amount: Decimal | int | str | None = None,
        strategy: RefundStrategy | str = RefundStrategy.NEWEST_FIRST,
    ) -> OrderRefundOutcome:
        """See ``GiftCardPayments.refund_order``."""
        return await self._run(self.core.refund_order(order_ref, amount, refund_key, strategy))

    async def order_refunds(self, order_ref: str) -> list[OrderRefundOutcome]:
        """See ``GiftCardPayments.order_refunds``."""
        return await self._off_loop(self.core.order_refunds, order_ref)

    async def handle_callback(self, path: str, body: bytes) -> CallbackResult:
        """See ``GiftCardPayments.handle_callback``."""
        return await self._run(self.core.settle_callback(path, body))

    async def reconcile(self) -> ReconcileReport:
        """See ``GiftCardPayments.reconcile``."""
        return await self._run(self.core.reconcile())

    async def sweep(self) -> int:
        """See ``GiftCardPayments.sweep``."""
        return await self._off_loop(self.core.sweep)

    async def get_reservation(self, reservation_id: str) -> Reservation:
        """See ``GiftCardPayments.get_reservation``."""
        return await self._off_loop(self.core._reservation, reservation_id)

    async def get_operation(self, operation_id: str) -> Operation:
        """See ``GiftCardPayments.get_operation``."""
        return await self._off_loop(self.core._operation, operation_id)

    async def wait_for_operation(
        self,
        operation_id: str,
        *,
        timeout: float = 30.0,  # noqa: ASYNC109 - the sync twin's, see the docstring
    ) -> Operation:
        """The operation once it is settled, or as it stands after ``timeout`` seconds;
        the event loop keeps running while it waits. ``timeout`` is the sync twin's: it
        runs on the provider's clock (injectable) and ends the wait with an answer, where
        ``asyncio.timeout`` would cancel it with none."""
        return await self._run(self.core.wait_for_operation(operation_id, timeout))

    async def list_reservations(
        self, states: list[ReservationState] | None = None, order_ref: str | None = None
    ) -> list[Reservation]:
        """See ``GiftCardPayments.list_reservations``."""
        return await self._off_loop(self.store.list_reservations, states, order_ref)

    async def list_operations(self, states: list[OperationState] | None = None) -> list[Operation]:
        """See ``GiftCardPayments.list_operations``."""
        return await self._off_loop(self.store.list_operations, states)

    # ------------------------------------------------------------- selling cards

    async def issue_cards(
        self,
        order_ref: str,
        line_id: str,
        *,
        amount: Decimal | int | str,
        currency: str,
        count: int = 1,
        item_code: str | None = None,
        decimals: int = 2,
    ) -> list[IssuedCard]:
        """See ``GiftCardPayments.issue_cards`` (the delivery hook runs on a worker thread)."""
        return await self._run(
            self.core.issue_cards(order_ref, line_id, amount, currency, count, item_code, decimals)
        )

    async def issued_cards(self, order_ref: str) -> list[IssuedCard]:
        """See ``GiftCardPayments.issued_cards``."""
        return await self._off_loop(self.core.issued_cards, order_ref)

    async def get_issued_card(self, card_id: str) -> IssuedCard:
        """See ``GiftCardPayments.get_issued_card``."""
        return await self._off_loop(self.core._issued_card, card_id)

    async def cancel_issued_card(self, card_id: str) -> IssuedCard:
        """See ``GiftCardPayments.cancel_issued_card``."""
        return await self._run(self.core.cancel_issued_card(card_id))

    async def resend_giftcards(
        self, order_ref: str, card_ids: list[str] | None = None
    ) -> list[IssuedCard]:
        """See ``GiftCardPayments.resend_giftcards``."""
        return await self._run(self.core.resend_giftcards(order_ref, card_ids))

    async def refund_to_new_card(
        self, operation_id: str, *, amount: Decimal | int | str | None = None
    ) -> IssuedCard:
        """See ``GiftCardPayments.refund_to_new_card``."""
        return await self._run(self.core.refund_to_new_card(operation_id, amount))

    async def reclaimed_amount(self, card_id: str) -> Decimal:
        """See ``GiftCardPayments.reclaimed_amount``."""
        return await self._off_loop(self.core.reclaimed_amount, card_id)

    def callback_app(self) -> CallbackApp:
        """See ``GiftCardPayments.callback_app``."""

        async def handle(path: str, body: bytes) -> CallbackResult:
            return await self._off_loop(self.core.handle_callback, path, body)

        async def after(result: CallbackResult) -> None:
            await self._run(self.core.after_callback(result))

        return CallbackApp(handle, after)

    async def aclose(self) -> None:
        """Refuse new ledger steps, wait for the running ones, then close client and store.

        Closing the store under a statement still running on a ledger thread could crash
        the process (SQLite); the store's own close() waits too, for any other caller."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            None, functools.partial(self._ledger_threads.shutdown, wait=True)
        )
        await self.client.aclose()
        await loop.run_in_executor(None, self.store.close)


__all__ = ["AsyncGiftCardPayments", "GiftCardPayments"]
