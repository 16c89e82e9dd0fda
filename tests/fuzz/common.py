"""Shared by the fuzz tests: how many examples to run, the case counters, the traceback check."""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# Text that only a Python traceback (or a repr of a frame) would put in a body.
_TRACEBACK = re.compile(
    r'Traceback \(most recent call last\)|File "[^"\n]*", line \d+|\.py", line \d+|'
    r"\bRuntimeError: |\bAttributeError: |\bKeyError: |\bTypeError: "
)


@dataclass(frozen=True)
class Examples:
    """Examples per test. ``CHATPUSH_FUZZ_EXAMPLES=n`` runs n per form test (ten tests) and n / 5
    per schemathesis operation (fifteen; its examples and coverage phases add their own cases)."""

    forms: int
    schemathesis: int


def _examples() -> Examples:
    raw = os.environ.get("CHATPUSH_FUZZ_EXAMPLES", "").strip()
    if not raw:
        return Examples(forms=300, schemathesis=60)  # CI: about 4,000 requests, 1.5 minutes
    forms = int(raw)
    return Examples(forms=forms, schemathesis=max(10, forms // 5))


EXAMPLES = _examples()

COUNTS: dict[str, Counter[str]] = {}
"""Requests sent, by test and HTTP status: shown in pytest's terminal summary (conftest.py)."""

NOTES: dict[str, Counter[str]] = {}
"""Other tallies about those requests (not requests themselves): shown after the counts."""


def record_count(name: str, status: int) -> None:
    COUNTS.setdefault(name, Counter())[str(status)] += 1


def record_note(name: str, outcome: str) -> None:
    NOTES.setdefault(name, Counter())[outcome] += 1


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def traceback_in(body: bytes) -> str | None:
    """Traceback-like text in a response body (in its JSON strings too, unescaped), if any."""
    texts = [body.decode("utf-8", "replace")]
    with contextlib.suppress(ValueError):
        texts.extend(_strings(json.loads(body)))
    for text in texts:
        found = _TRACEBACK.search(text)
        if found is not None:
            return found.group(0)
    return None
