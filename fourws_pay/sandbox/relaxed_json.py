"""Parse request bodies the way the 4WS reference writes them.

Update Giftcard is documented as ``text/plain`` with a JavaScript object literal (unquoted
keys, a trailing comma), while the use case shows the same body as strict JSON. The
sandbox accepts both: strict JSON first, then a small relaxed grammar that adds unquoted
identifier keys, single-quoted strings, trailing commas and ``//`` / ``/* */`` comments.
Non-integer numbers become ``Decimal`` (never float), integers stay ``int``.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

from fourws_pay.api import wirejson

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_IDENT = re.compile(r"[A-Za-z_$][\w$]*")
MAX_DEPTH = 64


def loads(data: bytes | str) -> Any:
    """Strict JSON or a relaxed JS literal -> Python values. Raises ``ValueError``."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    try:
        return wirejson.loads(text)
    except (ValueError, RecursionError):
        pass
    parser = _Parser(text)
    value = parser.value(0)
    parser.skip()
    if parser.pos != len(text):
        raise parser.error("unexpected trailing characters")
    return value


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, what: str) -> ValueError:
        return ValueError(f"invalid body at character {self.pos}: {what}")

    def skip(self) -> None:
        text = self.text
        while self.pos < len(text):
            ch = text[self.pos]
            if ch.isspace():
                self.pos += 1
            elif text.startswith("//", self.pos):
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end + 1
            elif text.startswith("/*", self.pos):
                end = text.find("*/", self.pos + 2)
                if end < 0:
                    raise self.error("unterminated comment")
                self.pos = end + 2
            else:
                return

    def peek(self) -> str:
        self.skip()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def value(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise self.error("nesting too deep")
        ch = self.peek()
        if ch == "{":
            return self.obj(depth)
        if ch == "[":
            return self.arr(depth)
        if ch and ch in "\"'":
            return self.string()
        match = _NUMBER.match(self.text, self.pos)
        if match:
            self.pos = match.end()
            raw = match.group(0).lstrip("+")
            if re.fullmatch(r"-?\d+", raw):
                return int(raw)
            return Decimal(raw)
        ident = _IDENT.match(self.text, self.pos)
        if ident:
            self.pos = ident.end()
            word = ident.group(0)
            constants: dict[str, Any] = {"true": True, "false": False, "null": None}
            if word in constants:
                return constants[word]
            raise self.error(f"unexpected word {word[:20]!r}")
        raise self.error("expected a value")

    def obj(self, depth: int) -> dict[str, Any]:
        self.pos += 1
        result: dict[str, Any] = {}
        while True:
            ch = self.peek()
            if ch == "}":
                self.pos += 1
                return result
            if ch and ch in "\"'":
                key = self.string()
            else:
                ident = _IDENT.match(self.text, self.pos)
                if not ident:
                    raise self.error("expected a key")
                self.pos = ident.end()
                key = ident.group(0)
            if self.peek() != ":":
                raise self.error("expected ':'")
            self.pos += 1
            result[key] = self.value(depth + 1)
            ch = self.peek()
            if ch == ",":
                self.pos += 1
            elif ch != "}":
                raise self.error("expected ',' or '}'")

    def arr(self, depth: int) -> list[Any]:
        self.pos += 1
        result: list[Any] = []
        while True:
            ch = self.peek()
            if ch == "]":
                self.pos += 1
                return result
            result.append(self.value(depth + 1))
            ch = self.peek()
            if ch == ",":
                self.pos += 1
            elif ch != "]":
                raise self.error("expected ',' or ']'")

    def string(self) -> str:
        """A quoted string; escapes (surrogate pairs included) are decoded by ``json``."""
        quote = self.text[self.pos]
        text = self.text
        end = self.pos + 1
        while end < len(text) and text[end] != quote:
            if text[end] == "\n":
                raise self.error("newline in string")
            end += 2 if text[end] == "\\" else 1
        if end >= len(text):
            raise self.error("unterminated string")
        raw = text[self.pos + 1 : end]
        if quote == "'":
            raw = _single_to_double(raw)
        try:
            value = json.loads(f'"{raw}"', strict=False)
        except ValueError:
            raise self.error("bad escape in string") from None
        self.pos = end + 1
        return str(value)


def _single_to_double(raw: str) -> str:
    """The body of a single-quoted JS string as the body of a double-quoted JSON one."""
    out: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\" and raw[i + 1 : i + 2] == "'":
            out.append("'")
            i += 2
        elif ch == "\\":
            out.append(raw[i : i + 2])
            i += 2
        elif ch == '"':
            out.append('\\"')
            i += 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


__all__ = ["loads"]
