"""``[texts.*]`` (docs/callbacks.md §7.6): checked at start, named clearly, shown by ``chatpush
check``; the lookup chain of a callback's language."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chatpush.callbacks.texts import Texts, languages
from chatpush.cli import main
from chatpush.config import CALLBACK_TEXTS, MAX_TEXT_CHARS, ConfigError, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("CHATPUSH_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "chatpush.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_tables_load_with_tags_normalised(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[texts.default]\n"push.title" = "Call back"\n'
        '[texts."fr_CA"]\n"dialog.menu.snooze" = "Non, dans {minutes} minutes"\n'
        '[texts.fr]\n"push.CALLBACK_UPCOMING.body" = "Un agent vous appellera {{bientôt}}."\n',
    )
    settings = load_settings(path)
    assert set(settings.texts) == {"default", "fr-ca", "fr"}
    texts = Texts(settings.texts, "FR-ca")
    assert texts.get("dialog.menu.snooze", minutes=5) == "Non, dans 5 minutes"
    assert texts.get("push.CALLBACK_UPCOMING.body") == "Un agent vous appellera {bientôt}."
    assert texts.title("Acme") == "Call back"  # [texts.default] before the group's title
    assert Texts({}, "fr").title("Acme") == "Acme"
    assert Texts({}, "fr").title(None) == "Callback"
    assert (
        Texts(settings.texts, "de").get("dialog.cancel.text")
        == CALLBACK_TEXTS["dialog.cancel.text"]
    )


def test_lookup_chain() -> None:
    assert languages("fr-CA") == ("fr-ca", "fr", "default")
    assert languages("pt_BR") == ("pt-br", "pt", "default")
    assert languages("de") == ("de", "default")
    assert languages(None) == ("default",)
    assert languages("") == ("default",)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[texts.fr]\n"push.CALLBACK_UPCOMNG.body" = "x"\n', "unknown text key"),
        ('[texts.fr]\n"dialog.menu.nope" = "x"\n', "unknown text key"),
        ('[texts."français"]\n"push.title" = "x"\n', "is not a language tag"),
        ('[texts."f"]\n"push.title" = "x"\n', "is not a language tag"),
        ('[texts."fr-CA-toolongsubtag"]\n"push.title" = "x"\n', "is not a language tag"),
        ('[texts."fr-CA"]\n"push.title" = "x"\n[texts."fr_ca"]\n"push.title" = "y"\n', "twice"),
        ('[texts.fr]\n"dialog.menu.snooze" = "dans {minute} minutes"\n', "may substitute"),
        ('[texts.fr]\n"push.title" = "Rappel {minutes}"\n', "may substitute nothing"),
        ('[texts.fr]\n"dialog.snooze.text" = "{minutes!r}"\n', "may substitute"),
        ('[texts.fr]\n"push.title" = "Rappel {"\n', "write a brace as"),
        ('[texts.fr]\n"push.title" = " "\n', "1 to"),
        (f'[texts.fr]\n"push.title" = "{"x" * (MAX_TEXT_CHARS + 1)}"\n', "1 to"),
        ('[texts.fr]\n"push.title" = 3\n', "texts.fr.push.title"),
        ('[texts]\nfr = "Rappel"\n', "texts.fr"),
    ],
)
def test_config_errors(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, toml))
    assert message in str(raised.value), str(raised.value)
    assert "texts" in str(raised.value)


def test_too_many_languages(tmp_path: Path) -> None:
    tables = "".join(f'[texts."xa-{n:03d}"]\n"push.title" = "t"\n' for n in range(501))
    with pytest.raises(ConfigError, match="at most 500 languages"):
        load_settings(write(tmp_path, tables))


def test_chatpush_check_shows_a_bad_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, '[texts."fr-CA"]\n"push.CALLBACK_PURGE.body" = "Expiré"\n')
    assert main(["--config", str(path), "check"]) == 2
    err = capsys.readouterr().err
    assert 'texts."fr-CA": "push.CALLBACK_PURGE.body": unknown text key' in err, err
    assert "push.CALLBACK_PURGED.body" in err  # the known keys are listed
