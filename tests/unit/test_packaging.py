"""A non-editable install (the README's first command) must ship every package of the tree."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_of_the_source_tree_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "chatpush").rglob("__init__.py")
    }
    on_disk |= {
        "chatpush._migrations"
        + "".join("." + p for p in init.parent.relative_to(ROOT / "migrations").parts)
        for init in (ROOT / "migrations").rglob("__init__.py")
    }
    assert listed == on_disk
    assert config["package-dir"] == {"chatpush._migrations": "migrations"}
