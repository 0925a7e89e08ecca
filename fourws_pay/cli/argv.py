"""Command-line rewriting done before click parses anything.

click only accepts a group's options before the subcommand, but people type
``fourws-pay giftcard show CARD --base-url URL`` as often as the other order. The global
options found after the subcommand are moved in front of it, so both orders mean the
same. ``--json`` is also noticed here, wherever it is, so that even an error raised
before the command runs (a usage error, missing configuration) is answered as JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Options of the root callback (fourws_pay.cli.main.root); keep in step with it.
GLOBAL_WITH_VALUE = frozenset(
    {"--base-url", "--data-url", "--ledger", "--callback-base-url", "--env-file"}
)
GLOBAL_FLAGS = frozenset({"--verbose", "-v", "-vv", "-vvv"})
JSON_FLAG = "--json"


@dataclass(frozen=True)
class Argv:
    args: list[str]
    json: bool


def _name(token: str) -> str:
    return token.split("=", 1)[0] if token.startswith("--") else token


def rewrite(args: Sequence[str]) -> Argv:
    """``args`` with global options hoisted before the subcommand, and whether ``--json``
    was asked for. Tokens after ``--`` are never touched."""
    tokens = list(args)
    end = tokens.index("--") if "--" in tokens else len(tokens)
    head, tail = tokens[:end], tokens[end:]
    # the root's own options, then the subcommand
    i = 0
    while i < len(head) and head[i].startswith("-"):
        i += 2 if head[i] in GLOBAL_WITH_VALUE else 1
    before, after = head[:i], head[i:]
    json_mode = JSON_FLAG in head
    if JSON_FLAG in before:  # the root has no --json: hand it to the command
        before = [t for t in before if t != JSON_FLAG]
        after = [*after, JSON_FLAG]
    hoisted: list[str] = []
    rest: list[str] = []
    j = 0
    while j < len(after):
        token = after[j]
        name = _name(token)
        if name in GLOBAL_WITH_VALUE:
            if "=" in token or j + 1 >= len(after):
                hoisted.append(token)
                j += 1
            else:
                hoisted += after[j : j + 2]
                j += 2
            continue
        if name in GLOBAL_FLAGS:
            hoisted.append(token)
        else:
            rest.append(token)
        j += 1
    return Argv([*before, *hoisted, *rest, *tail], json_mode)
