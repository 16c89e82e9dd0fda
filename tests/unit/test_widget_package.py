"""A non-editable install ships every file the widget page serves (pyproject's package data)."""

import re
import tomllib
from pathlib import Path

from chatpush.api.widget import ROOT, widget_files

PROJECT = Path(__file__).resolve().parents[2]


def test_every_widget_file_is_package_data() -> None:
    config = tomllib.loads((PROJECT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = config["package-data"]["chatpush"]
    files = widget_files()
    assert {"index.html", "widget.js", "widget.css", "vendor/cometd/Client.js"} <= set(files)
    for name in files:
        inside = (ROOT.relative_to(PROJECT / "chatpush") / name).as_posix()
        assert any(_glob(pattern).fullmatch(inside) for pattern in patterns), inside


def _glob(pattern: str) -> re.Pattern[str]:
    """setuptools' reading of a package-data pattern: ``*`` stays within one folder."""
    return re.compile("[^/]*".join(re.escape(part) for part in pattern.split("*")))


def test_samples_widget_is_the_served_page() -> None:
    assert (PROJECT / "samples" / "widget").resolve() == ROOT
