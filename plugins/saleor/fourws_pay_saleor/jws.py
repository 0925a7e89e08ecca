"""Verifying ``Saleor-Signature``: a detached JWS (RFC 7515 + RFC 7797), RS256.

Saleor signs every webhook body with its RSA key. The header is ``{"alg": "RS256",
"b64": false, "crit": ["b64"], "kid": ...}``, the payload segment is left empty
(detached), and because of ``b64: false`` the signing input is the base64url header, a dot,
and the raw body bytes as they arrived: the body must be verified before it is parsed or
re-serialised. Older Saleor versions omit ``b64``/``crit`` but sign the same input, so both
forms are accepted; any other critical header is refused.

Keys come from ``<Saleor origin>/.well-known/jwks.json``. They are cached for ``ttl``
seconds; when a signature does not verify against the cached keys (Saleor rotated its key)
they are fetched once more, at most every ``refetch_interval`` seconds so that a stream of
forged requests cannot turn the App into a JWKS-fetching amplifier.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from fourws_pay.clock import Clock
from fourws_pay.logs import get_logger

log = get_logger(component="saleor.jws")


class SignatureError(Exception):
    """The webhook's signature is missing, malformed or does not verify."""


class KeysUnavailable(Exception):
    """Saleor's JWKS could not be fetched, so nothing can be verified right now."""


def b64url_decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise SignatureError("not base64url") from None


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class PublicKey:
    kid: str | None
    key: rsa.RSAPublicKey


def keys_from_jwks(document: Any) -> list[PublicKey]:
    """The RSA signing keys of a JWKS document; anything else in it is ignored."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise KeysUnavailable("JWKS document has no 'keys' list")
    keys: list[PublicKey] = []
    for jwk in document["keys"]:
        if not isinstance(jwk, dict) or jwk.get("kty") != "RSA":
            continue
        if jwk.get("use", "sig") != "sig":
            continue
        try:
            n = int.from_bytes(b64url_decode(str(jwk["n"])), "big")
            e = int.from_bytes(b64url_decode(str(jwk["e"])), "big")
            public = rsa.RSAPublicNumbers(e, n).public_key()
        except (KeyError, SignatureError, ValueError):
            continue
        kid = jwk.get("kid")
        keys.append(PublicKey(kid=str(kid) if kid is not None else None, key=public))
    return keys


@dataclass(frozen=True)
class ParsedSignature:
    header: dict[str, Any]
    signing_prefix: bytes  # base64url(header) + b"."
    signature: bytes

    @property
    def kid(self) -> str | None:
        kid = self.header.get("kid")
        return str(kid) if kid is not None else None


def parse_signature(value: str | None) -> ParsedSignature:
    """Split and check a detached compact JWS; raises ``SignatureError``."""
    if not value:
        raise SignatureError("missing Saleor-Signature")
    parts = value.strip().split(".")
    if len(parts) != 3 or parts[1] != "":
        raise SignatureError("Saleor-Signature is not a detached JWS")
    header_segment, _, signature_segment = parts
    try:
        header = json.loads(b64url_decode(header_segment))
    except (ValueError, UnicodeDecodeError):
        raise SignatureError("JWS header is not JSON") from None
    if not isinstance(header, dict):
        raise SignatureError("JWS header is not an object")
    if header.get("alg") != "RS256":
        raise SignatureError("JWS algorithm must be RS256")
    crit = header.get("crit")
    if crit is not None and crit != ["b64"]:
        raise SignatureError("JWS has critical headers this App does not understand")
    if "b64" in header and header["b64"] is not False:
        raise SignatureError("JWS payload must be unencoded (b64: false)")
    if crit == ["b64"] and "b64" not in header:
        raise SignatureError("JWS lists b64 as critical without setting it")
    return ParsedSignature(
        header=header,
        signing_prefix=header_segment.encode("ascii") + b".",
        signature=b64url_decode(signature_segment),
    )


def verify_with_keys(parsed: ParsedSignature, body: bytes, keys: list[PublicKey]) -> None:
    """Raise ``SignatureError`` unless one of ``keys`` (matching ``kid``) signed ``body``."""
    candidates = [k for k in keys if parsed.kid is None or k.kid == parsed.kid]
    if not candidates:
        raise SignatureError("no key with that kid")
    signing_input = parsed.signing_prefix + body
    for candidate in candidates:
        try:
            candidate.key.verify(
                parsed.signature, signing_input, padding.PKCS1v15(), hashes.SHA256()
            )
        except InvalidSignature:
            continue
        return
    raise SignatureError("signature does not verify")


def jwks_url(saleor_api_url: str) -> str:
    """``https://shop.example/graphql/`` -> ``https://shop.example/.well-known/jwks.json``."""
    parts = urlsplit(saleor_api_url)
    return f"{parts.scheme}://{parts.netloc}/.well-known/jwks.json"


@dataclass
class _Cached:
    keys: list[PublicKey]
    fetched_at: float


class JWKSVerifier:
    """Verifies webhook signatures against each Saleor instance's JWKS, with a cache."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        clock: Clock,
        *,
        ttl: float = 300.0,
        refetch_interval: float = 5.0,
    ) -> None:
        self._http = http
        self._clock = clock
        self._ttl = ttl
        self._refetch_interval = refetch_interval
        self._cache: dict[str, _Cached] = {}
        self.fetches = 0

    async def _fetch(self, saleor_api_url: str) -> list[PublicKey]:
        url = jwks_url(saleor_api_url)
        self.fetches += 1
        try:
            response = await self._http.get(url)
        except httpx.HTTPError as exc:
            raise KeysUnavailable(f"cannot fetch JWKS: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise KeysUnavailable(f"JWKS answered {response.status_code}")
        try:
            document = response.json()
        except ValueError:
            raise KeysUnavailable("JWKS is not JSON") from None
        keys = keys_from_jwks(document)
        self._cache[saleor_api_url] = _Cached(keys=keys, fetched_at=self._clock.monotonic())
        log.debug("saleor.jwks_fetched", api_url=saleor_api_url, keys=len(keys))
        return keys

    async def verify(self, saleor_api_url: str, signature: str | None, body: bytes) -> None:
        """Raise ``SignatureError`` (reject) or ``KeysUnavailable`` (try later)."""
        parsed = parse_signature(signature)
        now = self._clock.monotonic()
        cached = self._cache.get(saleor_api_url)
        fresh = False
        if cached is None or now - cached.fetched_at >= self._ttl:
            keys = await self._fetch(saleor_api_url)
            fresh = True
        else:
            keys = cached.keys
        try:
            verify_with_keys(parsed, body, keys)
            return
        except SignatureError:
            if fresh or cached is None or now - cached.fetched_at < self._refetch_interval:
                raise
        # The key may have been rotated since we cached it: look once more.
        keys = await self._fetch(saleor_api_url)
        verify_with_keys(parsed, body, keys)

    def forget(self, saleor_api_url: str) -> None:
        self._cache.pop(saleor_api_url, None)
