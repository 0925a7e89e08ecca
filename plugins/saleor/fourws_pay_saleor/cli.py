"""``fourws-pay-saleor``: run the App with uvicorn.

``fourws-pay-saleor serve`` reads the 4WS tenant from ``FOURWS_*`` variables
(``fourws_pay.Settings.from_env``) and the App from ``FOURWS_SALEOR_*`` variables
(``AppConfig.from_env``). ``--sandbox`` swaps 4WS for an in-process simulator seeded with the
reference's demo cards, so a local Saleor can be pointed at the App with nothing else
running. ``uvicorn --factory fourws_pay_saleor.cli:app_from_env`` serves the same app.

Without the tenant's ``FOURWS_*`` settings (and not in sandbox mode, ``FOURWS_SANDBOX=1``)
neither starts: ``serve`` and ``manifest`` exit 3 naming the missing variables, as the
``fourws-pay`` command does, and ``app_from_env`` raises ``MissingConfigurationError``. An
App that started anyway would be installed in Saleor and fail every payment with 4WS's
"Access Denied".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import httpx
from starlette.applications import Starlette

from fourws_pay.clock import SystemClock
from fourws_pay.errors import ConfigurationError
from fourws_pay.settings import Settings
from fourws_pay_saleor.app import create_app
from fourws_pay_saleor.config import AppConfig
from fourws_pay_saleor.gateway import PaymentsGateway
from fourws_pay_saleor.manifest import MANIFEST_PATH, build_manifest

EXIT_CONFIGURATION = 3  # the fourws-pay command's code for missing or invalid settings


def app_from_env() -> Starlette:
    """The App against the real 4WS tenant described by the environment."""
    return app_for_tenant(AppConfig.from_env())


def tenant_settings(config: AppConfig) -> tuple[Settings, dict[str, Settings]]:
    """The 4WS settings of the App and of each channel in ``config.channel_settings``;
    ``MissingConfigurationError`` (naming the ``FOURWS_*`` variables) when the tenant is
    not configured and sandbox mode is off, ``ConfigurationError`` for bad values."""
    default = Settings.from_env()
    channels = {
        slug: Settings.from_env(**overrides) for slug, overrides in config.channel_settings.items()
    }
    return default, channels


def app_for_tenant(config: AppConfig) -> Starlette:
    """The App against the 4WS tenant of ``FOURWS_*`` (ledger at ``FOURWS_LEDGER_URL``);
    channels in ``config.channel_settings`` get that tenant with their overrides. Every
    setting is checked before a ledger is opened."""
    from fourws_pay.payments import AsyncGiftCardPayments

    default, channel_settings = tenant_settings(config)
    payments = AsyncGiftCardPayments(settings=default)
    channels = {
        slug: PaymentsGateway(AsyncGiftCardPayments(settings=settings))
        for slug, settings in channel_settings.items()
    }
    return create_app(config, PaymentsGateway(payments), channel_gateways=channels)


class _SandboxGateway(PaymentsGateway):
    """A gateway whose maintenance pass also lets the simulated 4WS work its queue."""

    def __init__(self, payments: Any, sandbox: Any) -> None:
        super().__init__(payments)
        self.sandbox = sandbox

    async def maintain(self) -> None:
        await self.sandbox.aprocess_queue()
        await super().maintain()


def app_with_sandbox(config: AppConfig) -> Starlette:
    """The App against an in-process 4WS sandbox (demo data); callbacks stay in-process."""
    from fourws_pay.ledger import open_store
    from fourws_pay.payments import AsyncGiftCardPayments
    from fourws_pay.sandbox import Sandbox, sandbox_settings

    settings = sandbox_settings(callback_base_url=config.url(config.callback_path))
    clock = SystemClock()
    sandbox = Sandbox(settings=settings, clock=clock, seed="demo")
    payments = AsyncGiftCardPayments(
        settings=settings,
        client=sandbox.async_client(),
        store=open_store(f"sqlite:///{config.store_path}.ledger"),
        clock=clock,
    )
    if config.maintenance_interval == 0 or config.maintenance_interval > 2:
        config = config.model_copy(update={"maintenance_interval": 1.0})
    app = create_app(config, _SandboxGateway(payments, sandbox), clock=clock)
    to_app = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=config.app_url)

    async def deliver(url: str, body: bytes) -> int:
        response = await to_app.post(url, content=body)
        return response.status_code

    sandbox.set_callback_handler(deliver)
    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="fourws-pay-saleor", description="A Saleor payment App for 4WS gift cards."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the App with uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8300)
    serve.add_argument("--sandbox", action="store_true", help="use an in-process 4WS sandbox")
    sub.add_parser("manifest", help="print the manifest the App serves")
    args = parser.parse_args(argv)
    try:
        _run(args)
    except ConfigurationError as exc:  # missing or bad settings: say which, no traceback
        print(f"fourws-pay-saleor: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIGURATION) from None


def _run(args: argparse.Namespace) -> None:
    overrides: dict[str, Any] = {}
    if args.command == "serve" and "FOURWS_SALEOR_APP_URL" not in os.environ:
        overrides["app_url"] = f"http://{args.host}:{args.port}"
    config = AppConfig.from_env(**overrides)
    if args.command == "manifest":
        tenant_settings(config)  # the manifest of an App that could not start is no use
        print(json.dumps(build_manifest(config), indent=2))
        return
    import uvicorn

    from fourws_pay import protect_access_logs

    # 4WS calls back on <app url>/<callback path>/<operation id>/<secret>: uvicorn's access
    # log (on here) must not keep the secret. uvicorn's logging set-up keeps the filter.
    protect_access_logs()
    app = app_with_sandbox(config) if args.sandbox else app_for_tenant(config)
    print(f"Manifest: {config.url(MANIFEST_PATH)}")
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


if __name__ == "__main__":
    main()
