"""``Client`` and ``AsyncClient``: the same 4WS surface, blocking and asyncio.

Both hold only the send path; every decision lives in ``ClientCore`` (see ``core.py``).
Each public method returns parsed models; voucher reads are iterators that fetch the next
page of 20 only when the previous one is used up.

Pass ``transport=`` (``httpx.MockTransport``, ``httpx.ASGITransport`` via the sandbox) or a
ready ``http_client=`` to control the connection; the client closes only what it created.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from fourws_pay.api.core import ClientCore, Endpoint, Flow, Send, Sleep
from fourws_pay.api.models import (
    BarcodeInsert,
    GenerateGiftCardsRequest,
    GiftCard,
    GiftCardPdf,
    GiftCardUpdate,
    InsertedBarcode,
    LoginToken,
    LoyaltyVoucher,
    QueuedOperation,
    Sku,
    VoucherPage,
)
from fourws_pay.clock import Clock
from fourws_pay.settings import Settings

T = TypeVar("T")


def _timeout(settings: Settings) -> httpx.Timeout:
    return httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout)


class _Surface:
    """Argument handling common to both twins (no I/O)."""

    def __init__(
        self, settings: Settings | None, clock: Clock | None, rng: random.Random | None
    ) -> None:
        self._core = ClientCore(settings or Settings.from_env(), clock=clock, rng=rng)

    @property
    def settings(self) -> Settings:
        return self._core.settings

    @property
    def core(self) -> ClientCore:
        """The sans-I/O core (for the payments layer, which shares its flows)."""
        return self._core

    @staticmethod
    def _barcode_insert(
        barcode: str, barcode_type: str, dimensions: Iterable[str | None]
    ) -> BarcodeInsert:
        levels = list(dimensions)
        if len(levels) > 5:
            from fourws_pay.errors import InvalidInputError

            raise InvalidInputError("a SKU has at most 5 dimension levels")
        fields: dict[str, Any] = {f"dimension_level{i + 1}": v for i, v in enumerate(levels)}
        from pydantic import ValidationError

        try:
            return BarcodeInsert(barcode=barcode, barcode_type=barcode_type, **fields)
        except ValidationError as exc:
            from fourws_pay.errors import InvalidInputError

            raise InvalidInputError(f"invalid barcode insert: {exc.errors()[0]['msg']}") from None

    @staticmethod
    def _generate_request(item_code: str, count: int, callback: str) -> GenerateGiftCardsRequest:
        from pydantic import ValidationError

        try:
            return GenerateGiftCardsRequest(item_code=item_code, giftcards=count, callback=callback)
        except ValidationError as exc:
            from fourws_pay.errors import InvalidInputError

            raise InvalidInputError(f"invalid generate request: {exc.errors()[0]['msg']}") from None


class Client(_Surface):
    """Blocking 4WS client. Thread-safe as far as ``httpx.Client`` is."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        http_client: httpx.Client | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(settings, clock, rng)
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(
            transport=transport, timeout=_timeout(self.settings)
        )

    def run(self, flow: Flow[T]) -> T:
        """Drive a core flow to completion with blocking I/O."""
        try:
            step = next(flow)
            while True:
                if isinstance(step, Sleep):
                    self._core.clock.sleep(step.seconds)
                    step = flow.send(None)
                    continue
                assert isinstance(step, Send)
                outcome: httpx.Response | httpx.HTTPError
                try:
                    outcome = self._http.send(step.request)
                    outcome.read()
                    outcome.close()
                except httpx.HTTPError as exc:
                    outcome = exc
                step = flow.send(outcome)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def _pages(self, query: tuple[Endpoint, str, dict[str, str]]) -> Iterator[LoyaltyVoucher]:
        endpoint, cmd, params = query
        start: int | None = 0
        pages = 0
        previous: VoucherPage | None = None
        while start is not None:
            page = self.run(self._core.voucher_page(endpoint, cmd, params, start))
            self._core.check_new_page(page, previous, endpoint)
            pages += 1
            yield from page.value_object_list
            start = self._core.next_start(page, start, pages)
            previous = page

    # -- gift cards
    def get_giftcard(self, barcode: str) -> GiftCard:
        """Read a card (balance, flags, validity). Unknown cards raise ``APIFailure``."""
        return self.run(self._core.get_giftcard(barcode))

    def update_giftcard(self, update: GiftCardUpdate) -> QueuedOperation:
        """Enqueue an activation (positive amount) or consumption (negative amount).

        Never retried once it may have reached 4WS: raises ``AmbiguousOutcomeError`` then.
        """
        return self.run(self._core.update_giftcard(update))

    def generate_giftcards(self, item_code: str, count: int, callback: str) -> QueuedOperation:
        """Ask 4WS for ``count`` new barcodes, delivered later to ``callback``."""
        return self.run(
            self._core.generate_giftcards(self._generate_request(item_code, count, callback))
        )

    def giftcard_pdf(self, barcodes: Iterable[str], callback: str | None = None) -> GiftCardPdf:
        """Request a printable PDF of the cards: a URL now, or a queue id and a callback."""
        return self.run(self._core.giftcard_pdf(barcodes, callback))

    # -- loyalty vouchers
    def loyalty_vouchers(
        self, card_barcode: str, *, pk_field_name: str | None = None
    ) -> Iterator[LoyaltyVoucher]:
        """The customer's active vouchers, all pages."""
        return self._pages(self._core.loyalty_vouchers_query(card_barcode, pk_field_name))

    def loyalty_vouchers_between(
        self, start: datetime, end: datetime, *, card_barcode: str | None = None
    ) -> Iterator[LoyaltyVoucher]:
        """Vouchers still active that were activated between ``start`` and ``end`` (UTC)."""
        return self._pages(self._core.loyalty_vouchers_between_query(start, end, card_barcode))

    def last_loyalty_vouchers(self, since: datetime) -> Iterator[LoyaltyVoucher]:
        """Vouchers created after ``since`` whatever their status (incremental sync)."""
        return self._pages(self._core.last_loyalty_vouchers_query(since))

    # -- data management
    def login(self) -> LoginToken:
        """Log in to the Data management API (done automatically when needed)."""
        return self.run(self._core.login())

    def insert_barcode(
        self,
        item_code: str,
        barcode: str,
        *,
        dimensions: Iterable[str | None] = (),
        barcode_type: str = "EAN13",
    ) -> InsertedBarcode:
        """Attach ``barcode`` to the SKU ``item_code`` + ``dimensions`` (levels 1..5)."""
        body = self._barcode_insert(barcode, barcode_type, dimensions)
        return self.run(self._core.insert_barcode(item_code, body))

    def sku_from_barcode(self, barcode: str) -> Sku:
        """The SKU a barcode belongs to; unknown barcodes raise ``NotFoundError``."""
        return self.run(self._core.sku_from_barcode(barcode))

    def delete_barcode(
        self, item_code: str, barcode: str, *, ignore_movements: bool = False
    ) -> None:
        """Detach a barcode; ``ignore_movements`` forces it for barcodes used in documents."""
        self.run(self._core.delete_barcode(item_code, barcode, ignore_movements=ignore_movements))

    def generate_missing_barcodes(
        self, item_code: str, *, dimensions: dict[str, str] | None = None
    ) -> list[InsertedBarcode]:
        """Create barcodes for the product's SKUs that have none (or for one SKU)."""
        return self.run(self._core.generate_missing_barcodes(item_code, dimensions))

    # -- lifecycle
    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClient(_Surface):
    """asyncio 4WS client with the same methods as ``Client``, awaited."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        http_client: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(settings, clock, rng)
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(
            transport=transport, timeout=_timeout(self.settings)
        )

    async def run(self, flow: Flow[T]) -> T:
        """Drive a core flow to completion with asyncio I/O."""
        try:
            step = next(flow)
            while True:
                if isinstance(step, Sleep):
                    await self._core.clock.asleep(step.seconds)
                    step = flow.send(None)
                    continue
                assert isinstance(step, Send)
                outcome: httpx.Response | httpx.HTTPError
                try:
                    outcome = await self._http.send(step.request)
                    await outcome.aread()
                    await outcome.aclose()
                except httpx.HTTPError as exc:
                    outcome = exc
                step = flow.send(outcome)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    async def _pages(
        self, query: tuple[Endpoint, str, dict[str, str]]
    ) -> AsyncIterator[LoyaltyVoucher]:
        endpoint, cmd, params = query
        start: int | None = 0
        pages = 0
        previous: VoucherPage | None = None
        while start is not None:
            page = await self.run(self._core.voucher_page(endpoint, cmd, params, start))
            self._core.check_new_page(page, previous, endpoint)
            pages += 1
            for voucher in page.value_object_list:
                yield voucher
            start = self._core.next_start(page, start, pages)
            previous = page

    async def get_giftcard(self, barcode: str) -> GiftCard:
        """See ``Client.get_giftcard``."""
        return await self.run(self._core.get_giftcard(barcode))

    async def update_giftcard(self, update: GiftCardUpdate) -> QueuedOperation:
        """See ``Client.update_giftcard``."""
        return await self.run(self._core.update_giftcard(update))

    async def generate_giftcards(
        self, item_code: str, count: int, callback: str
    ) -> QueuedOperation:
        """See ``Client.generate_giftcards``."""
        return await self.run(
            self._core.generate_giftcards(self._generate_request(item_code, count, callback))
        )

    async def giftcard_pdf(
        self, barcodes: Iterable[str], callback: str | None = None
    ) -> GiftCardPdf:
        """See ``Client.giftcard_pdf``."""
        return await self.run(self._core.giftcard_pdf(barcodes, callback))

    def loyalty_vouchers(
        self, card_barcode: str, *, pk_field_name: str | None = None
    ) -> AsyncIterator[LoyaltyVoucher]:
        """See ``Client.loyalty_vouchers``; use ``async for``."""
        return self._pages(self._core.loyalty_vouchers_query(card_barcode, pk_field_name))

    def loyalty_vouchers_between(
        self, start: datetime, end: datetime, *, card_barcode: str | None = None
    ) -> AsyncIterator[LoyaltyVoucher]:
        """See ``Client.loyalty_vouchers_between``; use ``async for``."""
        return self._pages(self._core.loyalty_vouchers_between_query(start, end, card_barcode))

    def last_loyalty_vouchers(self, since: datetime) -> AsyncIterator[LoyaltyVoucher]:
        """See ``Client.last_loyalty_vouchers``; use ``async for``."""
        return self._pages(self._core.last_loyalty_vouchers_query(since))

    async def login(self) -> LoginToken:
        """See ``Client.login``."""
        return await self.run(self._core.login())

    async def insert_barcode(
        self,
        item_code: str,
        barcode: str,
        *,
        dimensions: Iterable[str | None] = (),
        barcode_type: str = "EAN13",
    ) -> InsertedBarcode:
        """See ``Client.insert_barcode``."""
        body = self._barcode_insert(barcode, barcode_type, dimensions)
        return await self.run(self._core.insert_barcode(item_code, body))

    async def sku_from_barcode(self, barcode: str) -> Sku:
        """See ``Client.sku_from_barcode``."""
        return await self.run(self._core.sku_from_barcode(barcode))

    async def delete_barcode(
        self, item_code: str, barcode: str, *, ignore_movements: bool = False
    ) -> None:
        """See ``Client.delete_barcode``."""
        await self.run(
            self._core.delete_barcode(item_code, barcode, ignore_movements=ignore_movements)
        )

    async def generate_missing_barcodes(
        self, item_code: str, *, dimensions: dict[str, str] | None = None
    ) -> list[InsertedBarcode]:
        """See ``Client.generate_missing_barcodes``."""
        return await self.run(self._core.generate_missing_barcodes(item_code, dimensions))

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
