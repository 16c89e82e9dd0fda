"""The texts a callback's pushes and dialogs show, in the callback's language (docs/callbacks.md
§7.6): ``[texts."<language>"]`` exactly, then its primary subtag, then ``[texts.default]``, then
the built-in English (``chatpush.config.CALLBACK_TEXTS``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from chatpush.config import CALLBACK_TEXTS, language_tag


def languages(language: str | None) -> tuple[str, ...]:
    """The tables a lookup tries, in order: ``fr-ca``, ``fr``, ``default``."""
    tried: list[str] = []
    if language:
        tag = language_tag(language)
        tried.append(tag)
        primary = tag.split("-", 1)[0]
        if primary != tag:
            tried.append(primary)
    tried.append("default")
    return tuple(tried)


@dataclass(frozen=True, slots=True)
class Texts:
    """The texts of one language: ``tables`` are the settings' ``texts`` (tags normalised)."""

    tables: Mapping[str, Mapping[str, str]]
    language: str | None = None

    def configured(self, key: str) -> str | None:
        """The configured text of ``key`` (None: no table in the chain has it)."""
        for tag in languages(self.language):
            text = self.tables.get(tag, {}).get(key)
            if text is not None:
                return text
        return None

    def get(self, key: str, **fields: object) -> str:
        """The text of ``key`` with its ``{name}`` substitutions (the settings checked them)."""
        text = self.configured(key)
        if text is None:
            text = CALLBACK_TEXTS[key]
        return text.format(**fields)

    def title(self, group_title: str | None) -> str:
        """A push's title: ``push.title`` of the chain, else the group's, else built-in."""
        return self.configured("push.title") or group_title or CALLBACK_TEXTS["push.title"]

    def push_body(self, event: str) -> str:
        key = f"push.{event}.body"
        return self.get(key) if key in CALLBACK_TEXTS else event
