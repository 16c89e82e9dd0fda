"""The repository's Markdown stands alone: every link points at a file of the repository that
exists, and every ``#anchor`` at a heading of that file. A clone has no ``../shared`` and no
contract beside it, so no link may leave the repository, and no page may cite one.

Anchors are GitHub's: the heading's text, lower case, without punctuation but ``-`` and ``_``,
spaces made hyphens, ``-1``, ``-2``... for repeated headings.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]

_FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
_INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)"
)
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
_AUTOLINK = re.compile(r"<((?:[a-z][a-z0-9+.-]*:)[^>\s]*)>", re.IGNORECASE)
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$", re.MULTILINE)
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)
_OWN_SERVICE = re.compile(r"^https?://(127\.0\.0\.1|localhost)(:\d+)?(/|$)", re.IGNORECASE)
"""A link to the reader's own chatpush (``http://127.0.0.1:8080/widget/``): not another site."""
_CITATIONS = re.compile(
    r"CONTRACT(\.md)?\s*§|CONTRACT section|COMETD\.md|CALLBACKS\.md|\.\./shared"
)


def markdown_files() -> list[Path]:
    """The tracked Markdown files (every one on disk when git or its metadata is absent)."""
    if shutil.which("git") and (ROOT / ".git").exists():
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--", "*.md"],
            cwd=ROOT,
            capture_output=True,
            check=True,
            text=True,
        ).stdout
        return [ROOT / name for name in listed.split("\0") if name]
    skip = {".git", ".venv", "node_modules", "build", "dist"}
    return [
        path
        for path in ROOT.rglob("*.md")
        if not skip & set(path.relative_to(ROOT).parts) and ".egg-info" not in str(path)
    ]


def _prose(text: str) -> str:
    """The text without code blocks and code spans: a URL shown as code is not a link."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def links(text: str) -> list[str]:
    prose = _prose(text)
    found = [m.group(1) for m in _INLINE_LINK.finditer(prose)]
    found += [m.group(1) for m in _REFERENCE.finditer(prose)]
    found += [m.group(1) for m in _AUTOLINK.finditer(prose)]
    return found


def slug(heading: str) -> str:
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    found: set[str] = set()
    counts: dict[str, int] = {}
    for match in _HEADING.finditer(_FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(match.group(2))
        seen = counts.get(base, 0)
        counts[base] = seen + 1
        found.add(base if seen == 0 else f"{base}-{seen}")
    return frozenset(found)


def problems(source: Path, text: str | None = None) -> list[str]:
    """What is wrong with the links of ``source`` (its ``text``, read when not given)."""
    if text is None:
        text = source.read_text(encoding="utf-8")
    wrong = []
    for target in links(text):
        where = f"{source.relative_to(ROOT)}: ({target})"
        if not target:
            wrong.append(f"{where} is empty")
            continue
        if _OWN_SERVICE.match(target):
            continue
        if _SCHEME.match(target) or target.startswith("//"):
            wrong.append(f"{where} leaves the repository")
            continue
        path_part, _, fragment = target.partition("#")
        path_part = unquote(path_part.split("?", 1)[0])
        if path_part.startswith("/"):
            wrong.append(f"{where} is absolute; write it relative to the file")
            continue
        resolved = (source.parent / path_part).resolve() if path_part else source
        if not resolved.is_relative_to(ROOT):
            wrong.append(f"{where} leaves the repository")
            continue
        if not resolved.exists():
            wrong.append(f"{where} names a file that does not exist")
            continue
        if fragment:
            if resolved.suffix != ".md":
                wrong.append(f"{where}: an anchor only in a Markdown file")
            elif unquote(fragment) not in anchors(resolved):
                wrong.append(f"{where}: no heading makes #{fragment}")
    for match in _CITATIONS.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        wrong.append(
            f"{source.relative_to(ROOT)}:{line}: cites {match.group(0)!r}, which a clone does not "
            "have; link a page of docs/ or say it plainly"
        )
    return wrong


def test_the_markdown_files_are_found() -> None:
    names = {path.relative_to(ROOT).as_posix() for path in markdown_files()}
    assert {"README.md", "docs/chat-api.md", "docs/push.md"} <= names


@pytest.mark.parametrize(
    "source", markdown_files(), ids=lambda path: path.relative_to(ROOT).as_posix()
)
def test_every_link_stays_in_the_repository_and_resolves(source: Path) -> None:
    wrong = problems(source)
    assert not wrong, "\n".join(wrong)


# -- the checker itself -----------------------------------------------------------------------


def test_the_checker_refuses_what_it_must() -> None:
    page = ROOT / "docs" / "chat-api.md"
    text = "\n".join(
        [
            "# Title",
            "[ok](push.md#reliable-delivery-rules) [ok](#errors) [ok](../README.md)",
            "[out](https://example.com) <https://example.com/x> [up](../../shared/spec.md)",
            "[gone](nowhere.md) [anchor](push.md#no-such-heading) [abs](/etc/passwd)",
            "[ref]: http://example.org/",
            "<http://127.0.0.1:8080/widget/> and [the console](http://localhost:8080/admin/)",
            "[not ours](http://127.0.0.1.example.com/)",
            "`[code](https://example.com)` is not a link",
            "as CONTRACT §8 says",
        ]
    )
    found = [line.split(": (", 1)[-1] for line in problems(page, text)]
    assert found == [
        "https://example.com) leaves the repository",
        "../../shared/spec.md) leaves the repository",
        "nowhere.md) names a file that does not exist",
        "push.md#no-such-heading): no heading makes #no-such-heading",
        "/etc/passwd) is absolute; write it relative to the file",
        "http://127.0.0.1.example.com/) leaves the repository",
        "http://example.org/) leaves the repository",
        "https://example.com/x) leaves the repository",
        "docs/chat-api.md:3: cites '../shared', which a clone does not have; link a page of "
        "docs/ or say it plainly",
        "docs/chat-api.md:9: cites 'CONTRACT §', which a clone does not have; link a page of "
        "docs/ or say it plainly",
    ]


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Push (see also [push.md](push.md))", "push-see-also-pushmd"),
        ("A chat from both sides, with curl", "a-chat-from-both-sides-with-curl"),
        ("Limits on what a client can grow (`[chat]`)", "limits-on-what-a-client-can-grow-chat"),
        ("Durability: `synchronous_commit`", "durability-synchronous_commit"),
        ("CometD: chatpush's Bayeux server", "cometd-chatpushs-bayeux-server"),
    ],
)
def test_anchors_are_githubs(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor
