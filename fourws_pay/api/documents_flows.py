"""The Documents API flows (``/api?cmd=...``): gift cards and loyalty vouchers."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import httpx

from fourws_pay.api.endpoints import (
    GENERATE_GIFTCARDS,
    GET_GIFTCARD,
    GIFTCARD_PDF,
    LAST_LOYALTY_VOUCHERS,
    LOYALTY_VOUCHERS,
    LOYALTY_VOUCHERS_BETWEEN,
    UPDATE_GIFTCARD,
    Endpoint,
)
from fourws_pay.api.exchange import ExchangeCore, Flow
from fourws_pay.api.fields import format_datetime
from fourws_pay.api.models import (
    GenerateGiftCardsRequest,
    GiftCard,
    GiftCardPdf,
    GiftCardUpdate,
    LoginToken,
    QueuedOperation,
    VoucherPage,
)
from fourws_pay.api.wire import json_body, parse_model, require_success, require_text
from fourws_pay.errors import InvalidInputError, MalformedResponseError
from fourws_pay.logs import mask_barcode

MAX_PAGES = 10_000  # a server that always says moreRows=true must not loop us forever


class DocumentsFlows(ExchangeCore):
    """Gift card reads, balance changes, card generation, PDFs and voucher listings."""

    def get_giftcard(self, barcode: str) -> Flow[GiftCard]:
        barcode = require_text(barcode, "barcode")
        s = self.settings

        def build(_: LoginToken | None) -> httpx.Request:
            return self.documents_request(
                GET_GIFTCARD.method, GET_GIFTCARD.address(s), {s.param_giftcard_barcode: barcode}
            )

        def parse(response: httpx.Response) -> GiftCard:
            body = require_success(json_body(response, GET_GIFTCARD), GET_GIFTCARD)
            return parse_model(GiftCard, body.get("giftcard"), endpoint=GET_GIFTCARD.name)

        return (
            yield from self.exchange(
                GET_GIFTCARD, build, parse, log_fields={"barcode": mask_barcode(barcode)}
            )
        )

    def update_giftcard(self, update: GiftCardUpdate) -> Flow[QueuedOperation]:
        if not isinstance(update, GiftCardUpdate):
            raise InvalidInputError("update_giftcard takes a GiftCardUpdate")
        s = self.settings
        body = update.wire()

        def build(_: LoginToken | None) -> httpx.Request:
            return self.documents_request(
                UPDATE_GIFTCARD.method,
                UPDATE_GIFTCARD.address(s),
                body=body,
                content_type=s.update_giftcard_content_type,
            )

        return (
            yield from self.exchange(
                UPDATE_GIFTCARD,
                build,
                self._queued(UPDATE_GIFTCARD),
                log_fields={
                    "barcode": mask_barcode(update.barcode),
                    "kind": update.kind,
                    "amount": str(update.amount),
                },
            )
        )

    def generate_giftcards(self, request: GenerateGiftCardsRequest) -> Flow[QueuedOperation]:
        s = self.settings
        body = request.wire()

        def build(_: LoginToken | None) -> httpx.Request:
            return self.documents_request(
                GENERATE_GIFTCARDS.method, GENERATE_GIFTCARDS.address(s), body=body
            )

        return (
            yield from self.exchange(
                GENERATE_GIFTCARDS,
                build,
                self._queued(GENERATE_GIFTCARDS),
                log_fields={"item_code": request.item_code, "count": request.giftcards},
            )
        )

    def giftcard_pdf(self, barcodes: Iterable[str], callback: str | None) -> Flow[GiftCardPdf]:
        if isinstance(barcodes, str | bytes):
            # a lone barcode string would be iterated character by character
            raise InvalidInputError("giftcard_pdf takes a list of barcodes, not one string")
        codes = [require_text(b, "barcode") for b in barcodes]
        if not codes:
            raise InvalidInputError("giftcard_pdf needs at least one barcode")
        s = self.settings
        body: dict[str, Any] = {"barcodes": codes}
        if callback is not None:
            body["callback"] = callback

        def build(_: LoginToken | None) -> httpx.Request:
            return self.documents_request(GIFTCARD_PDF.method, GIFTCARD_PDF.address(s), body=body)

        def parse(response: httpx.Response) -> GiftCardPdf:
            body = require_success(json_body(response, GIFTCARD_PDF), GIFTCARD_PDF)
            return parse_model(GiftCardPdf, body, endpoint=GIFTCARD_PDF.name)

        return (
            yield from self.exchange(GIFTCARD_PDF, build, parse, log_fields={"count": len(codes)})
        )

    def voucher_page(
        self, endpoint: Endpoint, cmd: str, params: dict[str, str], start: int
    ) -> Flow[VoucherPage]:
        query = dict(params)
        if start:
            query["start"] = str(start)

        def build(_: LoginToken | None) -> httpx.Request:
            return self.documents_request(endpoint.method, cmd, query)

        def parse(response: httpx.Response) -> VoucherPage:
            body = require_success(json_body(response, endpoint), endpoint)
            return parse_model(VoucherPage, body, endpoint=endpoint.name)

        return (yield from self.exchange(endpoint, build, parse, log_fields={"start": start}))

    def loyalty_vouchers_query(
        self, card_barcode: str, pk_field_name: str | None
    ) -> tuple[Endpoint, str, dict[str, str]]:
        params = {self.settings.param_card_barcode: require_text(card_barcode, "card_barcode")}
        if pk_field_name:
            params["pkFieldName"] = pk_field_name
        return LOYALTY_VOUCHERS, LOYALTY_VOUCHERS.address(self.settings), params

    def loyalty_vouchers_between_query(
        self, start: datetime, end: datetime, card_barcode: str | None
    ) -> tuple[Endpoint, str, dict[str, str]]:
        if start.tzinfo is None or end.tzinfo is None:
            raise InvalidInputError("start and end must be timezone-aware datetimes")
        if end < start:
            raise InvalidInputError("end is before start")
        s = self.settings
        params = {
            s.param_interval_start: format_datetime(start),
            s.param_interval_end: format_datetime(end),
        }
        if card_barcode:
            params[s.param_card_barcode] = card_barcode
        return LOYALTY_VOUCHERS_BETWEEN, LOYALTY_VOUCHERS_BETWEEN.address(s), params

    def last_loyalty_vouchers_query(self, since: datetime) -> tuple[Endpoint, str, dict[str, str]]:
        if since.tzinfo is None:
            raise InvalidInputError("since must be a timezone-aware datetime")
        s = self.settings
        return (
            LAST_LOYALTY_VOUCHERS,
            LAST_LOYALTY_VOUCHERS.address(s),
            {s.param_last_from: format_datetime(since)},
        )

    @staticmethod
    def check_new_page(page: VoucherPage, previous: VoucherPage | None, endpoint: Endpoint) -> None:
        """Refuse a page identical to the previous one: a server (or a tenant whose paging
        parameter is not ``start``) that ignores ``start`` would otherwise repeat page one
        until ``MAX_PAGES`` and hand the caller the same vouchers thousands of times."""
        if previous is None or not page.value_object_list:
            return
        if [v.id for v in page.value_object_list] == [v.id for v in previous.value_object_list]:
            raise MalformedResponseError(
                "4WS returned the same page again; it does not seem to honour 'start'",
                endpoint=endpoint.name,
            )

    @staticmethod
    def next_start(page: VoucherPage, start: int, pages_read: int) -> int | None:
        """Where the next page starts, or None when the listing is complete."""
        if not page.more_rows or not page.value_object_list or pages_read >= MAX_PAGES:
            return None
        return start + len(page.value_object_list)

    @staticmethod
    def _queued(endpoint: Endpoint) -> Callable[[httpx.Response], QueuedOperation]:
        def parse(response: httpx.Response) -> QueuedOperation:
            body = require_success(json_body(response, endpoint), endpoint)
            return parse_model(QueuedOperation, body, endpoint=endpoint.name)

        return parse
