"""Carry a gift-card code from the payment-details page to the preview without showing it.

Oscar's pattern for sensitive payment data is to re-post it from hidden inputs on the
preview page rather than store it. A gift-card code is a bearer credential, so the hidden
input holds it encrypted and authenticated (Fernet, key derived from ``SECRET_KEY``), bound
to the basket it was entered for and valid for ``CODE_MAX_AGE`` seconds. The page source
then shows no code, and a token lifted from one basket does not pay for another.
"""

from __future__ import annotations

import base64
import json

from cryptography.fernet import Fernet, InvalidToken
from django.utils.crypto import salted_hmac

from fourws_pay_oscar import conf

_SALT = "fourws_pay_oscar.codes"


class CodeTokenError(Exception):
    """The token is forged, expired or was made for another basket."""


def _fernet() -> Fernet:
    key = salted_hmac(_SALT, "gift-card-code-key", algorithm="sha256").digest()
    return Fernet(base64.urlsafe_b64encode(key))


def seal(code: str, *, basket_id: int | None) -> str:
    """Encrypt ``code`` for the basket ``basket_id``."""
    payload = json.dumps({"c": code, "b": basket_id}).encode()
    return _fernet().encrypt(payload).decode("ascii")


def unseal(token: str, *, basket_id: int | None, now: int | None = None) -> str:
    """The code inside ``token``; raises ``CodeTokenError`` if it cannot be trusted.

    ``now`` (Unix seconds) is for tests; by default the system time decides expiry.
    """
    ttl = int(conf.get("CODE_MAX_AGE"))
    try:
        data = token.encode("ascii")
        raw = (
            _fernet().decrypt(data, ttl=ttl)
            if now is None
            else _fernet().decrypt_at_time(data, ttl=ttl, current_time=now)
        )
        payload = json.loads(raw)
    except (InvalidToken, UnicodeError, ValueError) as exc:
        raise CodeTokenError("gift-card code token is invalid or expired") from exc
    if not isinstance(payload, dict) or payload.get("b") != basket_id:
        raise CodeTokenError("gift-card code token belongs to another basket")
    code = payload.get("c")
    if not isinstance(code, str) or not code:
        raise CodeTokenError("gift-card code token is empty")
    return code
