"""``fourws-pay demo``: the documented E-commerce & Gift Card use case, end to end.

The story (``docs/4ws-reference.md`` §12, plus the hold that the use case lacks): a
customer buys a digital card (the shop's issuing API: generate, activate, deliver, each
settled by 4WS's callback), gives it to a friend, who pays part of an order with it (check,
reserve, capture on confirmation, settled by 4WS's callback), returns an item (refund), and
meets the refusals a checkout must explain (expired, inactive, insufficient balance, partial
usage N, wrong currency). A second order is paid with two cards at once
(``reserve_order``, all or nothing) and partly refunded (``refund_order``). It ends by
reconciling every card: 4WS's balance, the sandbox's own books and the balance our ledger
expects (original - captured + refunded) must agree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer

from fourws_pay.cli import exitcodes, output
from fourws_pay.cli.config import get_state
from fourws_pay.cli.demo_world import EmbeddedWorld, RemoteWorld, World, temp_ledger_dir
from fourws_pay.errors import APIFailure, FourWSError, PaymentRefused
from fourws_pay.hookspecs import hookimpl
from fourws_pay.money import quantize
from fourws_pay.payments import (
    IssuedCard,
    IssuedCardState,
    OperationKind,
    OperationState,
    RefusalReason,
)
from fourws_pay.sandbox.seed import EXPIRED_CARD, NEVER_ACTIVATED_CARD, ONE_GO_CARD

CARD_VALUE = Decimal("100.00")
ORDER_TOTAL = Decimal("85.00")
PAID_BY_CARD = Decimal("60.00")
REFUND = Decimal("10.00")
SALE_ORDER = "ORD-1000"
# One order paid with two cards (sold for it on ORD-1003), then partly refunded.
TWO_CARDS = {"card-a": Decimal("30.00"), "card-b": Decimal("20.00")}
TWO_CARD_ORDER = "ORD-1004"
TWO_CARD_TOTAL = Decimal("40.00")
TWO_CARD_REFUND = Decimal("15.00")


class DemoMailbox:
    """The demo's delivery plugin: a shop would e-mail the code; the demo keeps it."""

    def __init__(self) -> None:
        self.cards: list[IssuedCard] = []
        self.pdf: str | None = None

    @hookimpl
    def fourws_pay_deliver_giftcards(
        self, order_ref: str, cards: list[IssuedCard], pdf_url: str | None
    ) -> None:
        self.cards.extend(cards)
        self.pdf = pdf_url


@dataclass
class Step:
    """One line of the timeline."""

    ms: float
    step: str
    detail: str
    outcome: str
    ok: bool


@dataclass
class CardCheck:
    """One card's reconciliation."""

    barcode: str
    original: Decimal
    captured: Decimal
    refunded: Decimal
    expected: Decimal
    fourws_balance: Decimal
    sandbox_balance: Decimal | None

    @property
    def ok(self) -> bool:
        return self.fourws_balance == self.expected and self.sandbox_balance in (
            None,
            self.expected,
        )


@dataclass
class Story:
    world: World
    item_code: str
    reveal: bool
    steps: list[Step] = field(default_factory=list)
    originals: dict[str, Decimal] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def code(self, barcode: str) -> str:
        return output.show_code(barcode, self.reveal)

    def log(self, step: str, detail: str, outcome: str, ok: bool = True) -> None:
        entry = Step(
            round((time.perf_counter() - self.started) * 1000, 1), step, detail, outcome, ok
        )
        self.steps.append(entry)

    # ----------------------------------------------------------------- the story

    def run(self) -> list[CardCheck]:
        card = self.sell()
        self.pay_part_of_an_order(card)
        pair = self.pay_one_order_with_two_cards()
        self.refusals(card)
        return self.reconcile([card, *pair, *self.seed_cards()])

    def sell(self) -> str:
        """The shop sells the card through the issuing API: generated, loaded, delivered."""
        w = self.world
        mailbox = DemoMailbox()
        w.payments.plugin_manager.register(mailbox)
        asked = w.payments.issue_cards(
            SALE_ORDER, "gift-card", amount=CARD_VALUE, currency="EUR", item_code=self.item_code
        )
        self.log(
            "generate",
            f"order {SALE_ORDER} is paid: sell one {CARD_VALUE} EUR card of {self.item_code}",
            f"generation asked ({asked[0].state.value})",
        )
        (sold,) = w.wait_issued(SALE_ORDER)
        if sold.barcode is None:
            raise APIFailure(sold.message or "4WS generated no card")
        card = sold.barcode
        self.log("callback", "4WS's callback brings the generated barcode", self.code(card))
        self.log(
            "activate",
            f"{self.code(card)} loaded with {CARD_VALUE} EUR (settled by its callback)",
            sold.state.value,
            sold.state is IssuedCardState.DELIVERED,
        )
        self.log(
            "deliver",
            "the delivery hook hands the code to the buyer",
            f"{len(mailbox.cards)} card, PDF {'yes' if mailbox.pdf else 'no'}",
            [c.id for c in mailbox.cards] == [sold.id],
        )
        self.originals[card] = CARD_VALUE
        shown = w.client.get_giftcard(card)
        self.log(
            "get giftcard",
            f"the friend's card {self.code(card)}",
            f"active={'Y' if shown.flg_active else 'N'}, balance "
            f"{_cents(shown.amount)} {shown.currency}",
            shown.flg_active and shown.amount == CARD_VALUE,
        )
        return card

    def pay_part_of_an_order(self, card: str) -> None:
        p = self.world.payments
        decision = p.check(card, PAID_BY_CARD, "EUR")
        self.log(
            "check",
            f"can it pay {PAID_BY_CARD} of a {ORDER_TOTAL} EUR order?",
            "yes" if decision.ok else f"no: {decision.reason}",
            decision.ok,
        )
        reservation = p.reserve(card, amount=PAID_BY_CARD, currency="EUR", order_ref="ORD-1001")
        self.log(
            "reserve",
            f"hold {PAID_BY_CARD} EUR for ORD-1001 "
            f"(the other {ORDER_TOTAL - PAID_BY_CARD} EUR by credit card)",
            f"reservation {reservation.id[:8]}..., expires {output.when(reservation.expires_at)}",
        )
        capture = p.capture(reservation.id)
        self.log(
            "capture",
            f"order confirmed: post the consumption (-{PAID_BY_CARD})",
            f"operation {capture.state.value}",
            capture.state is not OperationState.FAILED,
        )
        settled = self.world.wait_settled(capture.id)
        self.log(
            "settle",
            "4WS's callback settles the consumption",
            settled.state.value,
            settled.state is OperationState.SUCCEEDED,
        )
        balance = self.world.client.get_giftcard(card).amount
        self.log(
            "balance",
            f"card {self.code(card)} after the order",
            f"{_cents(balance)} EUR",
            balance == CARD_VALUE - PAID_BY_CARD,
        )
        refund = p.refund(settled.id, amount=REFUND)
        refunded = self.world.wait_settled(refund.id)
        self.log(
            "refund",
            f"an item is returned: {REFUND} EUR back to the card",
            refunded.state.value,
            refunded.state is OperationState.SUCCEEDED,
        )

    def pay_one_order_with_two_cards(self) -> list[str]:
        """Two cards for one order: ``reserve_order`` decides the shares (smallest balance
        first, as both expire together) and holds them all or nothing; ``capture_order``
        takes both; ``refund_order`` gives part back, newest capture first."""
        w = self.world
        p = w.payments
        for line, value in TWO_CARDS.items():
            p.issue_cards("ORD-1003", line, amount=value, currency="EUR", item_code=self.item_code)
        sold = {c.line_id: c for c in w.wait_issued("ORD-1003") if c.barcode is not None}
        cards = [c.barcode for c in sold.values() if c.barcode is not None]
        for issued in sold.values():
            self.originals[issued.barcode or ""] = issued.amount
        if set(sold) != set(TWO_CARDS):
            self.log("order, 2 cards", "two cards sold for the order", "not issued", False)
            return cards
        allocation = p.reserve_order(
            TWO_CARD_ORDER, cards=cards, amount=TWO_CARD_TOTAL, currency="EUR"
        )
        shares = ", ".join(
            f"{self.code(r.barcode)} {_cents(r.applied_amount)}" for r in allocation.reservations
        )
        self.log(
            "reserve order",
            f"{TWO_CARD_ORDER}: {TWO_CARD_TOTAL} EUR over two cards (30.00 and 20.00)",
            shares,
            allocation.applied_amount == TWO_CARD_TOTAL
            and allocation.share_of(sold["card-b"].barcode or "") == TWO_CARDS["card-b"],
        )
        settled = [w.wait_settled(op.id) for op in p.capture_order(TWO_CARD_ORDER)]
        self.log(
            "capture order",
            "order confirmed: one consumption per card",
            ", ".join(op.state.value for op in settled),
            all(op.state is OperationState.SUCCEEDED for op in settled),
        )
        try:
            outcome = p.refund_order(TWO_CARD_ORDER, refund_key="return-1", amount=TWO_CARD_REFUND)
            refunds = [w.wait_settled(op.id) for op in outcome.operations]
        except FourWSError as exc:
            self.log("refund order", "part of the order returned", type(exc).__name__, False)
            return cards
        balances = [w.client.get_giftcard(card).amount for card in cards]
        expected = sum(TWO_CARDS.values(), Decimal(0)) - TWO_CARD_TOTAL + TWO_CARD_REFUND
        self.log(
            "refund order",
            f"{TWO_CARD_REFUND} EUR of {TWO_CARD_ORDER} returned (newest capture first)",
            f"balances {' + '.join(_cents(b) for b in balances)} EUR",
            all(op.state is OperationState.SUCCEEDED for op in refunds)
            and sum(balances, Decimal(0)) == expected,
        )
        return cards

    def refuse(
        self,
        detail: str,
        expected: RefusalReason,
        barcode: str,
        amount: Decimal,
        currency: str = "EUR",
    ) -> None:
        """A checkout the rules must refuse, with the reason staff see and the customer's."""
        try:
            reservation = self.world.payments.reserve(
                barcode, amount=amount, currency=currency, order_ref="ORD-1002"
            )
        except PaymentRefused as exc:
            self.log(
                "refuse",
                detail,
                f"refused: {exc.reason.value} - customer sees {exc.public_message!r}",
                exc.reason is expected,
            )
            return
        self.world.payments.release(reservation.id)
        self.log("refuse", detail, "accepted (unexpected)", False)

    def refusals(self, card: str) -> None:
        small = Decimal("10.00")
        left = CARD_VALUE - PAID_BY_CARD + REFUND
        if self.world.is_sandbox:  # the seed's special cards exist only in a sandbox
            self.refuse(
                f"expired card {self.code(EXPIRED_CARD)}",
                RefusalReason.EXPIRED,
                EXPIRED_CARD,
                small,
            )
        if self.world.is_sandbox:
            self.refuse(
                f"never-activated card {self.code(NEVER_ACTIVATED_CARD)}",
                RefusalReason.INACTIVE,
                NEVER_ACTIVATED_CARD,
                small,
            )
        self.refuse(
            f"{left + 30} EUR on {self.code(card)} (balance {left})",
            RefusalReason.INSUFFICIENT_BALANCE,
            card,
            left + 30,
        )
        if self.world.is_sandbox:
            self.refuse(
                f"{small} EUR on one-go card {self.code(ONE_GO_CARD)} "
                f"(flgPartiallyUsage N, balance {_cents(self.world.sandbox_balance(ONE_GO_CARD))})",
                RefusalReason.PARTIAL_USAGE_NOT_ALLOWED,
                ONE_GO_CARD,
                small,
            )
        self.refuse(
            f"a USD order on the EUR card {self.code(card)}",
            RefusalReason.CURRENCY_MISMATCH,
            card,
            small,
            currency="USD",
        )

    def seed_cards(self) -> list[str]:
        if not self.world.is_sandbox:
            return []
        cards = [NEVER_ACTIVATED_CARD, EXPIRED_CARD, ONE_GO_CARD]
        for barcode in cards:
            balance = self.world.sandbox_balance(barcode)
            self.originals[barcode] = balance if balance is not None else Decimal(0)
        return cards

    # ------------------------------------------------------------ reconciliation

    def reconcile(self, cards: list[str]) -> list[CardCheck]:
        w = self.world
        operations = w.payments.list_operations([OperationState.SUCCEEDED])
        checks = []
        for barcode in cards:
            mine = [op for op in operations if op.barcode == barcode]
            captured = sum(
                (op.amount for op in mine if op.kind is OperationKind.CAPTURE), Decimal(0)
            )
            refunded = sum(
                (op.amount for op in mine if op.kind is OperationKind.REFUND), Decimal(0)
            )
            original = self.originals[barcode]
            card = w.client.get_giftcard(barcode)
            sandbox = w.sandbox_balance(barcode)

            def cents(value: Decimal, digits: int = card.decimal_number) -> Decimal:
                return quantize(value, digits)

            checks.append(
                CardCheck(
                    barcode=barcode,
                    original=cents(original),
                    captured=cents(captured),
                    refunded=cents(refunded),
                    expected=cents(original - captured + refunded),
                    fourws_balance=cents(card.amount),
                    sandbox_balance=None if sandbox is None else cents(sandbox),
                )
            )
        ok = all(c.ok for c in checks)
        self.log(
            "reconcile",
            f"{len(checks)} cards: 4WS balance vs sandbox books vs ledger",
            "OK" if ok else "MISMATCH",
            ok,
        )
        return checks


def _report(
    story: Story, checks: list[CardCheck], ledger: list[dict[str, Any]], label: str
) -> None:
    console = output.stdout()
    console.print(
        output.table(
            f"E-commerce & Gift Card, on the {label}",
            ("#", "ms", "step", "what happened", "result", ""),
            (
                (i + 1, f"{s.ms:.1f}", s.step, s.detail, s.outcome, "ok" if s.ok else "FAILED")
                for i, s in enumerate(story.steps)
            ),
        )
    )
    if ledger:
        console.print(
            output.table(
                f"Sandbox ledger of card {story.code(checks[0].barcode)}",
                ("seq", "kind", "amount", "outcome", "balance after"),
                (
                    (
                        r.get("seq"),
                        r.get("kind"),
                        _cents(r.get("amount")),
                        r.get("outcome"),
                        _cents(r.get("balanceAfter")),
                    )
                    for r in ledger
                ),
            )
        )
    console.print(
        output.table(
            "Balances: expected = original - captured + refunded",
            (
                "card",
                "original",
                "captured",
                "refunded",
                "expected",
                "4WS says",
                "sandbox books",
                "",
            ),
            (
                (
                    story.code(c.barcode),
                    _cents(c.original),
                    _cents(c.captured),
                    _cents(c.refunded),
                    _cents(c.expected),
                    _cents(c.fourws_balance),
                    "n/a" if c.sandbox_balance is None else _cents(c.sandbox_balance),
                    "ok" if c.ok else "MISMATCH",
                )
                for c in checks
            ),
        )
    )


def _cents(value: Any) -> str:
    if value is None:
        return ""
    return format(quantize(Decimal(str(value)), 2), "f")


def demo(
    ctx: typer.Context,
    against: Annotated[
        str | None,
        typer.Option("--against", help="Run against a served sandbox or a real 4WS at URL."),
    ] = None,
    item_code: Annotated[
        str, typer.Option("--item-code", help="Gift-card product to generate.")
    ] = "GIFTCARD_IVA_TAGLIO_100",
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds to wait for each callback.")
    ] = 30.0,
    public_url: Annotated[
        str | None,
        typer.Option("--public-url", help="With --against: URL 4WS uses to reach us."),
    ] = None,
    reveal: Annotated[bool, typer.Option("--reveal", help="Show full barcodes.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the timeline as JSON.")] = False,
) -> None:
    """Run the E-commerce & Gift Card story on the embedded sandbox and ledger.

    Exits 1 if any step did not go as the use case says or balances do not reconcile.
    """
    state = get_state(ctx)
    with temp_ledger_dir() as tmp:
        world: World
        if against is None:
            world = EmbeddedWorld(Path(tmp))
        else:
            settings = state.settings(documents_base_url=against)
            if not settings.username and not settings.application_id:
                from fourws_pay.sandbox import sandbox_settings

                settings = sandbox_settings(against)  # a served sandbox's own credentials
            world = RemoteWorld(settings, Path(tmp), timeout=timeout, public_url=public_url)
        try:
            story = Story(world, item_code, reveal)
            checks = story.run()
            ledger = world.sandbox_ledger(checks[0].barcode)
        finally:
            world.close()
    reconciled = all(c.ok for c in checks)
    clean = reconciled and all(s.ok for s in story.steps)
    if as_json:
        output.print_json(
            {
                "world": world.label,
                "timeline": story.steps,
                "cards": [
                    {**output.jsonable(c), "barcode": story.code(c.barcode), "ok": c.ok}
                    for c in checks
                ],
                "sandbox_ledger": [
                    {k: v for k, v in r.items() if k not in ("barcode", "payload")} for r in ledger
                ],
                "reconciled": reconciled,
                "ok": clean,
            }
        )
    else:
        _report(story, checks, ledger, world.label)
        typer.echo(f"reconciled: {'OK' if reconciled else 'MISMATCH'}")
    if not clean:
        raise typer.Exit(exitcodes.FAILURE)
