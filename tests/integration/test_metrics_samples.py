"""The monitoring samples: samples/prometheus/alerts.yml passes ``promtool check rules`` and its
own unit tests (``promtool test rules``: each alert fires on the series that should fire it), and
every metric named by the alerts and by the Grafana dashboard (samples/grafana/chatpush.json)
is in a real scrape of the app after traffic.

promtool comes from Debian's ``prometheus`` package (scripts/promtool-up installs it; .ci/run
calls it). There is no silent skip: without promtool these tests fail, unless
``CHATPUSH_TEST_PROMTOOL=off`` says to leave it out on purpose.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from chatpush.api.keys import DISPATCHER
from chatpush.config import Settings
from tests.conftest import API_KEY, ChatDriver
from tests.integration._push_support import Receivers, push_form

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "samples" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "tests" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "samples" / "grafana" / "chatpush.json"
METRIC_NAME = re.compile(r"\b(?:chatpush|process|python)_[a-z0-9_]+")
"""Metric names in PromQL: every series these samples read is chatpush's or the process's."""


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """One store is enough: which metrics exist does not depend on it."""
    return f"sqlite+aiosqlite:///{tmp_path / 'chatpush.db'}"


def promtool() -> str:
    if os.environ.get("CHATPUSH_TEST_PROMTOOL", "").strip().lower() == "off":
        pytest.skip("promtool left out: CHATPUSH_TEST_PROMTOOL=off")
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool is not installed: run scripts/promtool-up (Debian's prometheus package), "
            "or set CHATPUSH_TEST_PROMTOOL=off to leave it out",
            pytrace=False,
        )
    return found


def run(*args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_alert_rules_pass_promtool_check() -> None:
    output = run(promtool(), "check", "rules", str(ALERTS))
    assert "SUCCESS: 7 rules found" in output


def test_each_alert_fires_on_the_series_meant_to_fire_it() -> None:
    run(promtool(), "test", "rules", ALERT_TESTS.name, cwd=ALERT_TESTS.parent)
    tested = set(re.findall(r"alertname: (\w+)", ALERT_TESTS.read_text()))
    assert tested == set(alert_names())


def alert_names() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"]]


def alert_expressions() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule
        assert {"summary", "description"} <= set(rule["annotations"]), rule
    return [str(rule["expr"]) for rule in rules]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])
    expressions = []
    for panel in panels:
        assert panel["targets"], panel["title"]
        expressions += [target["expr"] for target in panel["targets"]]
    variables = dashboard["templating"]["list"]
    expressions += [v["definition"] for v in variables if v["type"] == "query"]
    return expressions


async def real_scrape_names(make_settings: Callable[..., Settings], make_client: Any) -> set[str]:
    """Every metric name of a scrape after a chat whose trigger reached a real receiver."""
    async with Receivers() as receivers:
        receiver = await receivers.start()
        settings = make_settings(
            groups={"g1": {"default": True, "nodes": ["n1"], "customhttp.url": receiver.url}}
        )
        client = await make_client(settings)
        chat = ChatDriver(client)
        await chat.request_chat(**push_form(PushResend="true"))
        await chat.agent_joins()
        await client.app[DISPATCHER].settle()
        assert receiver.triggers() == [("2", "0")]
        response = await client.get("/metrics", headers={"X-API-Key": API_KEY})
        text = await response.text()
    names = set()
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(family.name + suffix for suffix in suffixes.get(family.type, []))
        names.update(sample.name for sample in family.samples)
    return names


@pytest.mark.parametrize("sample", ["alerts", "dashboard"])
async def test_every_metric_the_samples_read_is_in_a_real_scrape(
    sample: str, make_settings: Callable[..., Settings], make_client: Any
) -> None:
    expressions = alert_expressions() if sample == "alerts" else dashboard_expressions()
    wanted = {name for expr in expressions for name in METRIC_NAME.findall(expr)}
    assert len(wanted) > 5, wanted  # the pattern finds the names at all
    scraped = await real_scrape_names(make_settings, make_client)
    assert sorted(wanted - scraped) == []


def test_the_operations_guide_lists_every_metric() -> None:
    from chatpush import metrics

    table = (ROOT / "docs" / "operations.md").read_text()
    documented = set(re.findall(r"^\| `(chatpush_\w+)` \|", table, re.MULTILINE))
    declared = {*metrics._HELP, *metrics._GAUGES, *metrics._HISTOGRAMS, "chatpush_build_info"}
    assert documented == declared
