"""Status event lists (docs/callbacks.md §5.2, §5.5): TOML tables, the .cfg import, and the
errors that stop start-up (and `chatpush check`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatpush.config import ConfigError, load_settings
from chatpush.event_lists import DEFAULT_EVENTS, EventSpec, parse_list, read_cfg

SAMPLE_CFG = Path(__file__).parents[2] / "samples" / "GMS_Events.cfg"


def test_the_gms_sample_cfg_is_read_exactly() -> None:
    listed = read_cfg("GMS_Events", SAMPLE_CFG)
    assert listed.properties == {
        "_enable_status_notification": "notify",
        "_status_notification_provider": "",
        "_status_notification_type": "httpcb",
    }
    assert list(listed.events) == [
        "_cbe_on_service_create",
        "_cbe_on_dial_done",
        "_cbe_on_service_exit",
        "_cbe_on_callback_scheduled",
        "_cbe_on_callback_rescheduled",
    ]
    assert listed.events["_cbe_on_callback_scheduled"] == EventSpec(
        ("_customer_number", "_phone_number", "_desired_time"), {"state": "scheduled"}
    )


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("notify_params=_service_id\n", "line 1"),
        ("[_cbe_on_dial_done]\nnotify params\n", "line 2"),
        ("# c\n[ cbe on dial done]\nnotify_params=_service_id\n", "neither properties"),
        ("[_cbe_on_dial_done]\nnotify_custom={not json\n", "notify_custom: not JSON"),
        ("[_cbe_on_dial_done]\nnotify_custom=[1]\n", "a JSON object"),
        ("[_cbe_on_dial_done]\nnotify_param=_service_id\n", "unknown keys notify_param"),
        ("[properties]\n_enable_status_notification=yes\n", "subscribe_notify"),
        ("[properties]\nstatus notification type=httpcb\n", "unknown property"),
        ("[a]\n[a]\n", "repeated section"),
    ],
)
def test_a_bad_cfg_is_an_error_naming_what_and_where(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "bad.cfg"
    path.write_text(text)
    with pytest.raises(ValueError, match=words):
        read_cfg("L", path)


def test_toml_forms_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "ok.cfg"
    path.write_text("; a comment\n\n[_cbe_on_dial_init]\n  notify_params = a, b ,a\n")
    assert read_cfg("L", path).events["_cbe_on_dial_init"].params == ("a", "b")
    listed = parse_list("L", {"cfg_file": "ok.cfg"}, tmp_path)
    assert listed.events["_cbe_on_dial_init"] == EventSpec(("a", "b"))
    with pytest.raises(ValueError, match=r"cfg_file \(a path\) and nothing else"):
        parse_list("L", {"cfg_file": "ok.cfg", "_cbe_on_dial_init": {}}, tmp_path)
    with pytest.raises(ValueError, match="neither properties"):
        parse_list("L", {"_cbe_on_nothing": {}}, None)
    assert len(DEFAULT_EVENTS) == 9


def test_an_unknown_list_or_a_bad_one_stops_start_up(tmp_path: Path) -> None:
    path = tmp_path / "chatpush.toml"
    path.write_text('[services.s]\n_callback_events_list = "Nope"\n')
    with pytest.raises(ConfigError, match="no event list 'Nope'"):
        load_settings(path)
    path.write_text('[event_lists.L]\ncfg_file = "missing.cfg"\n')
    with pytest.raises(ConfigError, match=r"missing\.cfg.*cannot be read"):
        load_settings(path)
    (tmp_path / "GMS_Events.cfg").write_bytes(SAMPLE_CFG.read_bytes())
    path.write_text(
        '[event_lists.L]\ncfg_file = "GMS_Events.cfg"\n[services.s]\n_callback_events_list = "L"\n'
    )
    assert "_cbe_on_dial_done" in load_settings(path).event_lists["L"].events
