"""The Data management API flows (bearer-token paths): product barcodes."""

from __future__ import annotations

import httpx

from fourws_pay.api.endpoints import (
    DELETE_BARCODE,
    GENERATE_MISSING_BARCODES,
    INSERT_BARCODE,
    SKU_FROM_BARCODE,
)
from fourws_pay.api.exchange import ExchangeCore, Flow
from fourws_pay.api.models import BarcodeInsert, InsertedBarcode, LoginToken, Sku
from fourws_pay.api.wire import data_success, json_body, parse_model, path_part
from fourws_pay.errors import MalformedResponseError
from fourws_pay.logs import mask_barcode


class DataFlows(ExchangeCore):
    """Barcode insertion, lookup, deletion and generation (login lives in ``ExchangeCore``,
    which needs it for every token)."""

    def insert_barcode(self, item_code: str, barcode: BarcodeInsert) -> Flow[InsertedBarcode]:
        path = INSERT_BARCODE.address(self.settings).format(item_code=path_part(item_code))
        body = barcode.wire()

        def build(token: LoginToken | None) -> httpx.Request:
            return self.data_request(INSERT_BARCODE.method, path, token, body)

        def parse(response: httpx.Response) -> InsertedBarcode:
            data = data_success(json_body(response, INSERT_BARCODE), INSERT_BARCODE)
            inner = data.get("barcode", data)
            if isinstance(inner, str | int):
                inner = {"barcode": inner}
            return parse_model(InsertedBarcode, inner, endpoint=INSERT_BARCODE.name)

        return (
            yield from self.exchange(
                INSERT_BARCODE,
                build,
                parse,
                log_fields={"item_code": item_code, "barcode": mask_barcode(barcode.barcode)},
            )
        )

    def sku_from_barcode(self, barcode: str) -> Flow[Sku]:
        path = SKU_FROM_BARCODE.address(self.settings).format(barcode=path_part(barcode))

        def build(token: LoginToken | None) -> httpx.Request:
            return self.data_request(SKU_FROM_BARCODE.method, path, token)

        def parse(response: httpx.Response) -> Sku:
            data = data_success(json_body(response, SKU_FROM_BARCODE), SKU_FROM_BARCODE)
            inner = data.get("sku") or data.get("product") or data
            return parse_model(Sku, inner, endpoint=SKU_FROM_BARCODE.name)

        return (
            yield from self.exchange(
                SKU_FROM_BARCODE, build, parse, log_fields={"barcode": mask_barcode(barcode)}
            )
        )

    def delete_barcode(
        self, item_code: str, barcode: str, *, ignore_movements: bool = False
    ) -> Flow[None]:
        path = DELETE_BARCODE.address(self.settings).format(
            item_code=path_part(item_code), barcode=path_part(barcode)
        )
        params = {"ignore_movements": "true"} if ignore_movements else None

        def build(token: LoginToken | None) -> httpx.Request:
            return self.data_request(DELETE_BARCODE.method, path, token, params=params)

        def parse(response: httpx.Response) -> None:
            if response.content.strip():
                data_success(json_body(response, DELETE_BARCODE), DELETE_BARCODE)

        return (
            yield from self.exchange(
                DELETE_BARCODE,
                build,
                parse,
                log_fields={"item_code": item_code, "barcode": mask_barcode(barcode)},
            )
        )

    def generate_missing_barcodes(
        self, item_code: str, dimensions: dict[str, str] | None
    ) -> Flow[list[InsertedBarcode]]:
        path = GENERATE_MISSING_BARCODES.address(self.settings).format(
            item_code=path_part(item_code)
        )
        body = dict(dimensions or {})

        def build(token: LoginToken | None) -> httpx.Request:
            return self.data_request(GENERATE_MISSING_BARCODES.method, path, token, body)

        def parse(response: httpx.Response) -> list[InsertedBarcode]:
            data = data_success(
                json_body(response, GENERATE_MISSING_BARCODES), GENERATE_MISSING_BARCODES
            )
            items = data.get("barcodes", data.get("insertedObjects", []))
            if not isinstance(items, list):
                raise MalformedResponseError(
                    "barcodes is not a list", endpoint=GENERATE_MISSING_BARCODES.name
                )
            return [
                parse_model(InsertedBarcode, item, endpoint=GENERATE_MISSING_BARCODES.name)
                for item in items
            ]

        return (
            yield from self.exchange(
                GENERATE_MISSING_BARCODES, build, parse, log_fields={"item_code": item_code}
            )
        )
