"""The settings tree: defaults, the TOML file, CHATPUSH_* overrides, service options, the sample."""

from __future__ import annotations

import os
import re
import tomllib
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from chatpush.config import (
    FLEX_PUSH_CONTENT_KEYS,
    ConfigError,
    GroupSettings,
    ProviderSettings,
    ServiceOptions,
    Settings,
    load_settings,
)
from chatpush.push.rules import Policy

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "chatpush.toml"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No CHATPUSH_* variable of the developer's shell, and no stray file, reaches a test."""
    for name in list(os.environ):
        if name.upper().startswith("CHATPUSH_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def write_config(tmp_path: Path) -> Any:
    def write(text: str, name: str = "chatpush.toml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


def config_error(write_config: Any, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(write_config(text))
    return str(caught.value)


def options(write_config: Any, service_toml: str, service: str = "default") -> ServiceOptions:
    settings = load_settings(write_config(f"[services.{service}]\n{service_toml}\n"))
    return settings.service_options(service)


# -- where settings come from --------------------------------------------------------------------


def test_defaults_without_a_file() -> None:
    settings = load_settings()
    assert settings.database.url == "sqlite+aiosqlite:///chatpush.db"
    assert settings.database.is_sqlite
    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 8080)
    assert settings.server.alias == "1"
    assert settings.security.api_keys == []
    assert settings.chat.restrict_services is False
    assert settings.logging.level == "INFO"
    assert settings.services == {}
    assert settings.groups == {}
    assert settings.default_group is None


def test_service_defaults_are_the_contract_defaults() -> None:
    defaults = load_settings().service_options("any-service")
    assert defaults.flex_push_enabled is True
    assert defaults.flex_push_on_join is True
    assert defaults.flex_push_timeout_s == 86400
    assert defaults.flex_push_resend_delays_s == (15,)
    assert defaults.flex_push_resend_attempts == 3
    assert defaults.flex_push_content == ("session-id", "user-id")
    assert defaults.push_notification_include_payload is False


def test_a_toml_file_is_loaded(write_config: Any) -> None:
    path = write_config(
        """
        [server]
        host = "0.0.0.0"
        port = 9000
        alias = "117"

        [database]
        url = "postgresql+asyncpg://chatpush:secret@db.example/chatpush"
        pool_size = 20

        [security]
        api_keys = ["first", "second"]

        [chat]
        max_message_chars = 100

        [logging]
        level = "DEBUG"
        format = "json"
        """
    )
    settings = load_settings(path)
    assert (settings.server.host, settings.server.port, settings.server.alias) == (
        "0.0.0.0",
        9000,
        "117",
    )
    assert settings.database.url.startswith("postgresql+asyncpg://")
    assert not settings.database.is_sqlite
    assert settings.database.pool_size == 20
    assert [key.get_secret_value() for key in settings.security.api_keys] == ["first", "second"]
    assert settings.chat.max_message_chars == 100
    assert (settings.logging.level, settings.logging.format) == ("DEBUG", "json")
    # What the file does not set keeps its default.
    assert settings.server.max_body_bytes == 65536
    assert settings.chat.max_nickname_chars == 128


def test_chatpush_config_names_the_file(write_config: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATPUSH_CONFIG", str(write_config("[server]\nport = 9001\n")))
    assert load_settings().server.port == 9001


def test_an_explicit_path_beats_chatpush_config(
    write_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATPUSH_CONFIG", str(write_config("[server]\nport = 9001\n", "env.toml")))
    assert load_settings(write_config("[server]\nport = 9002\n", "cli.toml")).server.port == 9002


def test_an_empty_chatpush_config_means_no_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATPUSH_CONFIG", "")
    assert load_settings().server.port == 8080


def test_environment_overrides_beat_the_file(
    write_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config('[server]\nhost = "0.0.0.0"\nport = 9000\n[security]\napi_keys = ["f"]\n')
    monkeypatch.setenv("CHATPUSH_SERVER__PORT", "9100")
    monkeypatch.setenv("CHATPUSH_SECURITY__API_KEYS", '["from-env"]')
    settings = load_settings(path)
    assert settings.server.port == 9100
    assert settings.server.host == "0.0.0.0"  # the rest of [server] still comes from the file
    assert [key.get_secret_value() for key in settings.security.api_keys] == ["from-env"]


def test_command_line_overrides_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATPUSH_SERVER__PORT", "9100")
    assert load_settings(server={"port": 9200}).server.port == 9200


def test_environment_booleans_and_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATPUSH_CHAT__RESTRICT_SERVICES", "true")
    monkeypatch.setenv("CHATPUSH_DATABASE__URL", "sqlite+aiosqlite:////var/lib/chatpush/x.db")
    settings = load_settings()
    assert settings.chat.restrict_services is True
    assert settings.database.url == "sqlite+aiosqlite:////var/lib/chatpush/x.db"


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="configuration file not found"):
        load_settings(tmp_path / "nowhere.toml")


def test_a_file_that_is_not_toml_is_an_error(write_config: Any) -> None:
    path = write_config("[server\nport = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML") as caught:
        load_settings(path)
    assert str(path) in str(caught.value)


# -- unknown keys and invalid values name the key ------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("prot = 8080\n", "prot: unknown key"),
        ("[server]\nprot = 8080\n", "server.prot: unknown key"),
        ("[database]\nurll = 'x'\n", "database.urll: unknown key"),
        ("[chat]\nmax_messages_chars = 1\n", "chat.max_messages_chars: unknown key"),
        ("[services.support]\nflex-push-enabeld = true\n", "services.support.flex-push-enabeld"),
        ("[services.default]\nflex-push-resend = 1\n", "services.default.flex-push-resend"),
        # Only the Chat Server names: a Python name would be silently ignored by the merge.
        ("[services.default]\nflex_push_enabled = true\n", "services.default.flex_push_enabled"),
        ("[groups.main]\nnodez = ['a']\n", "groups.main.nodez: unknown key"),
        ("[groups.main.providers.app]\nurl = 'https://x'\n", "groups.main.providers.app.url"),
    ],
)
def test_unknown_keys_stop_with_the_key_named(write_config: Any, text: str, expected: str) -> None:
    message = config_error(write_config, text)
    assert expected in message
    assert "unknown key" in message


def test_an_unknown_key_from_the_environment_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATPUSH_SERVER__PROT", "8080")
    with pytest.raises(ConfigError, match=r"server\.prot: unknown key"):
        load_settings()


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[server]\nport = 70000\n", "server.port"),
        ("[server]\nport = 'eighty'\n", "server.port"),
        ("[server]\nalias = ''\n", "server.alias"),
        ("[server]\nmax_body_bytes = 10\n", "server.max_body_bytes"),
        ("[database]\nurl = 'mysql://db/chatpush'\n", "database.url"),
        ("[database]\nurl = 'sqlite:///chatpush.db'\n", "database.url"),
        ("[database]\npool_size = 0\n", "database.pool_size"),
        ("[logging]\nlevel = 'LOUD'\n", "logging.level"),
        ("[logging]\nformat = 'xml'\n", "logging.format"),
        ("[chat]\nmax_message_chars = 0\n", "chat.max_message_chars"),
        ("[chat]\nrestrict_services = 'maybe'\n", "chat.restrict_services"),
        ("[delivery]\ntotal_timeout_s = 0\n", "delivery.total_timeout_s"),
        ("[security]\napi_keys = 'one'\n", "security.api_keys"),
        ("services = 5\n", "services"),
        ("[services]\nsupport = 5\n", "services.support"),
        ("[services.support]\nflex-push-timeout = 0\n", "services.support.flex-push-timeout"),
        ("[groups.main]\npushEnabled = 'pager'\n", "groups.main.pushEnabled"),
        ("[groups.main]\npushEnabled = 5\n", "groups.main.pushEnabled"),
        ("[groups.main]\n'customhttp.url' = 'ftp://x'\n", "groups.main.customhttp.url"),
        (
            "[groups.main]\n'customhttp.signing_secret' = 'whsec_***'\n",
            "groups.main.customhttp.signing_secret",
        ),
    ],
)
def test_invalid_values_name_the_key(write_config: Any, text: str, key: str) -> None:
    message = config_error(write_config, text)
    assert message.startswith("invalid configuration:")
    assert f"{key}: " in message
    assert "unknown key" not in message


def test_every_problem_is_reported_at_once(write_config: Any) -> None:
    message = config_error(write_config, "[server]\nport = -1\nprot = 1\n[chat]\nfoo = 1\n")
    assert "server.port: " in message
    assert "server.prot: unknown key" in message
    assert "chat.foo: unknown key" in message


def test_checks_across_groups_name_the_groups(write_config: Any) -> None:
    message = config_error(write_config, "[groups.a]\ndefault = true\n[groups.b]\ndefault = true\n")
    assert "groups: only one group may be default, got a, b" in message
    assert "\n  :" not in message  # no empty key in front of a check that has no location
    message = config_error(write_config, "[groups.a]\nnodes = ['n1']\n[groups.b]\nnodes = ['n1']\n")
    assert "groups.b.nodes: 'n1' is also in 'a'" in message


# -- service options -----------------------------------------------------------------------------


def test_services_inherit_default_and_override_single_options(write_config: Any) -> None:
    settings = load_settings(
        write_config(
            """
            [services.default]
            flex-push-resend-delay = "5,15,60"
            flex-push-resend-attempts = 5
            flex-push-timeout = 3600

            [services.support]
            flex-push-resend-attempts = 0
            flex-push-content = "app-dbid"

            [services."customer-support"]
            flex-push-enabled = false
            """
        )
    )
    support = settings.service_options("support")
    assert support.flex_push_resend_attempts == 0  # its own
    assert support.flex_push_content == ("app-dbid",)  # its own
    assert support.flex_push_resend_delays_s == (5, 15, 60)  # from default
    assert support.flex_push_timeout_s == 3600  # from default
    assert support.flex_push_on_join is True  # the built-in default
    hyphenated = settings.service_options("customer-support")
    assert hyphenated.flex_push_enabled is False
    assert hyphenated.flex_push_resend_attempts == 5
    unnamed = settings.service_options("sales")
    assert unnamed == settings.service_options("default")
    assert unnamed.flex_push_resend_attempts == 5


def test_an_invalid_option_names_its_service(write_config: Any) -> None:
    message = config_error(
        write_config,
        "[services.default]\nflex-push-resend-attempts = 4\n"
        "[services.sales]\nflex-push-resend-attempts = 101\n",
    )
    assert "services.sales.flex-push-resend-attempts: " in message


def test_an_invalid_default_option_stops_start_up_even_if_no_service_is_named(
    write_config: Any,
) -> None:
    message = config_error(write_config, "[services.default]\nflex-push-timeout = 'soon'\n")
    assert "services.default.flex-push-timeout: " in message


def test_restrict_services_serves_only_named_services(write_config: Any) -> None:
    open_settings = load_settings(write_config("[services.support]\n"))
    assert open_settings.serves("anything")
    restricted = load_settings(
        write_config("[chat]\nrestrict_services = true\n[services.support]\n", "r.toml")
    )
    assert restricted.serves("support")
    assert not restricted.serves("sales")
    assert not restricted.serves("default")


@pytest.mark.parametrize(
    ("value", "delays"),
    [
        ("30", (30,)),
        ('"30"', (30,)),
        ('"5,15,60"', (5, 15, 60)),
        ('" 5 , 15 "', (5, 15)),
        ("[5, 15, 60]", (5, 15, 60)),
        ("1", (1,)),
        ("86400", (86400,)),
    ],
)
def test_resend_delay_as_integer_or_comma_list(
    write_config: Any, value: str, delays: tuple[int, ...]
) -> None:
    assert options(write_config, f"flex-push-resend-delay = {value}").flex_push_resend_delays_s == (
        delays
    )


def test_resend_k_waits_the_kth_delay_and_the_last_repeats(write_config: Any) -> None:
    listed = options(write_config, 'flex-push-resend-delay = "5,15,60"')
    timetable = Policy(listed.flex_push_resend_delays_s, listed.flex_push_resend_attempts)
    assert [timetable.delay_ms(k) // 1000 for k in range(1, 7)] == [5, 15, 60, 60, 60, 60]
    single = options(write_config, "flex-push-resend-delay = 30", service="support")
    timetable = Policy(single.flex_push_resend_delays_s, single.flex_push_resend_attempts)
    assert [timetable.delay_ms(k) // 1000 for k in range(1, 4)] == [30, 30, 30]


@pytest.mark.parametrize(
    "value",
    [
        '"0"',
        "0",
        "-5",
        '"abc"',
        "90000",
        '"86401"',
        '""',
        '"5,,15"',
        '"5,abc"',
        '"5,0"',
        "5.5",
        "[5.5]",
        "true",
        "[true]",
        "[]",
        "{ a = 1 }",
    ],
)
def test_invalid_resend_delays_are_refused(write_config: Any, value: str) -> None:
    message = config_error(write_config, f"[services.default]\nflex-push-resend-delay = {value}\n")
    assert "services.default.flex-push-resend-delay: " in message


@pytest.mark.parametrize(
    ("value", "keys"),
    [
        ('"session-id, user-id"', ("session-id", "user-id")),
        ('"app-dbid,secure-key,session-id,user-id"', FLEX_PUSH_CONTENT_KEYS),
        ('["user-id", "app-dbid"]', ("user-id", "app-dbid")),
        ('"user-id, user-id"', ("user-id",)),
        ('"secure-key"', ("secure-key",)),
    ],
)
def test_flex_push_content(write_config: Any, value: str, keys: tuple[str, ...]) -> None:
    assert options(write_config, f"flex-push-content = {value}").flex_push_content == keys


@pytest.mark.parametrize("value", ['"session-id, chat-id"', '["bogus"]', "5", "true"])
def test_unknown_flex_push_content_is_refused(write_config: Any, value: str) -> None:
    message = config_error(write_config, f"[services.default]\nflex-push-content = {value}\n")
    assert "services.default.flex-push-content: " in message


def test_unknown_flex_push_content_names_the_bad_key(write_config: Any) -> None:
    message = config_error(write_config, '[services.x]\nflex-push-content = "user-id, chat-id"\n')
    assert "chat-id" in message


@pytest.mark.parametrize(("value", "seconds"), [("1", 1), ("1728000", 1728000), ('"3600"', 3600)])
def test_flex_push_timeout_within_bounds(write_config: Any, value: str, seconds: int) -> None:
    assert options(write_config, f"flex-push-timeout = {value}").flex_push_timeout_s == seconds


@pytest.mark.parametrize("value", ["0", "-1", "1728001", '"a day"', "1.5"])
def test_flex_push_timeout_out_of_bounds(write_config: Any, value: str) -> None:
    message = config_error(write_config, f"[services.default]\nflex-push-timeout = {value}\n")
    assert "services.default.flex-push-timeout: " in message


@pytest.mark.parametrize("attempts", [0, 1, 100])
def test_flex_push_resend_attempts_within_bounds(write_config: Any, attempts: int) -> None:
    got = options(write_config, f"flex-push-resend-attempts = {attempts}")
    assert got.flex_push_resend_attempts == attempts


@pytest.mark.parametrize("value", ["-1", "101", '"many"'])
def test_flex_push_resend_attempts_out_of_bounds(write_config: Any, value: str) -> None:
    message = config_error(
        write_config, f"[services.default]\nflex-push-resend-attempts = {value}\n"
    )
    assert "services.default.flex-push-resend-attempts: " in message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("false", False),
        ('"true"', True),
        ('"false"', False),
        ('"TRUE"', True),
        ('" False "', False),
    ],
)
@pytest.mark.parametrize(
    ("option", "attribute"),
    [
        ("flex-push-enabled", "flex_push_enabled"),
        ("flex-push-on-join", "flex_push_on_join"),
        ("push_notification_include_payload", "push_notification_include_payload"),
    ],
)
def test_booleans_also_as_strings(
    write_config: Any, option: str, attribute: str, value: str, expected: bool
) -> None:
    assert getattr(options(write_config, f"{option} = {value}"), attribute) is expected


@pytest.mark.parametrize("value", ['"maybe"', '""', "[true]"])
def test_non_booleans_are_refused(write_config: Any, value: str) -> None:
    message = config_error(write_config, f"[services.default]\nflex-push-enabled = {value}\n")
    assert "services.default.flex-push-enabled: " in message


# -- the annotated sample ------------------------------------------------------------------------

# "#key = value" and "#[table]" (no space after the #) are switched-off example settings.
_SWITCHED_OFF = re.compile(r"^#(?=[\[\"A-Za-z])", re.MULTILINE)


def sample_with_examples_switched_on() -> str:
    return _SWITCHED_OFF.sub("", SAMPLE.read_text(encoding="utf-8"))


def test_the_sample_loads_and_shows_the_real_defaults() -> None:
    sample = load_settings(SAMPLE)
    defaults = load_settings()
    sections = ("server", "database", "security", "chat", "logging", "delivery", "cometd", "mobile")
    sections += ("admin", "callback", "notification", "agents")
    for section in sections:
        assert getattr(sample, section) == getattr(defaults, section), section
    assert set(Settings.model_fields) - {"services", "groups", "provider_options", "texts"} == {
        "cometd",
        "server",
        "database",
        "security",
        "chat",
        "logging",
        "delivery",
        "mobile",
        "admin",
        "callback",
        "notification",
        "event_lists",
        "agents",
    }, "a new section: compare it here too"
    assert sample.groups == {}
    assert sample.texts == {}
    assert sample.service_options("default") == defaults.service_options("default")
    assert sample.service_options("customer-support") != sample.service_options("default")


def test_the_sample_with_its_examples_switched_on_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "examples.toml"
    path.write_text(sample_with_examples_switched_on(), encoding="utf-8")
    # The event list imported from a .cfg beside the file (samples/GMS_Events.cfg).
    (tmp_path / "GMS_Events.cfg").write_bytes((SAMPLE.parent / "GMS_Events.cfg").read_bytes())
    settings = load_settings(path)
    assert settings.default_group == "main"
    assert "_cbe_on_callback_rescheduled" in settings.event_lists["Imported"].events
    assert settings.groups["main"].providers
    assert settings.texts["fr-ca"] == {"dialog.menu.cancel": "Annuler, mon problème est réglé"}


def _toml_keys(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The settings model that a field holds, directly or as the values of a table."""
    if typing.get_origin(annotation) is dict:
        annotation = typing.get_args(annotation)[1]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _undocumented(model: type[BaseModel], table: dict[str, Any], where: str) -> list[str]:
    missing = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        if key not in table:
            missing.append(where + key)
            continue
        inner = _model_in(field.annotation)
        if inner is None:
            continue
        if typing.get_origin(field.annotation) is dict:
            # A table of named entries: the first example entry shows every key.
            if not table[key]:
                missing.append(f"{where}{key}.<name>")
                continue
            entry, value = next(iter(table[key].items()))
            missing += _undocumented(inner, value, f"{where}{key}.{entry}.")
        else:
            missing += _undocumented(inner, table[key], f"{where}{key}.")
    return missing


def test_the_sample_documents_every_key() -> None:
    document = tomllib.loads(sample_with_examples_switched_on())
    missing = _undocumented(Settings, document, "")
    # services is a table of free-form tables, resolved into ServiceOptions per service.
    missing += _undocumented(ServiceOptions, document["services"]["default"], "services.default.")
    assert not missing, f"samples/chatpush.toml does not show: {', '.join(missing)}"
    # The walk really reached the nested models.
    assert set(_toml_keys(GroupSettings)) <= set(document["groups"]["main"])
    assert set(_toml_keys(ProviderSettings)) <= set(
        next(iter(document["groups"]["main"]["providers"].values()))
    )
    assert "customer-support" in document["services"]


def test_every_sample_setting_has_a_comment_above_it() -> None:
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    uncommented = []
    in_override = False
    for number, line in enumerate(lines, start=1):
        if line.startswith("[services."):
            in_override = line != "[services.default]"
        if in_override or not re.match(r'^#?["A-Za-z]', line) or line.startswith("#["):
            continue
        previous = lines[number - 2]
        # A setting follows its explanation, or another setting of a group explained together.
        if not previous.startswith("#"):
            uncommented.append(f"{number}: {line}")
    assert not uncommented


def test_a_node_timeout_within_two_heartbeats_is_refused() -> None:
    with pytest.raises(ConfigError, match="node_timeout_s must be longer than twice"):
        load_settings(None, delivery={"heartbeat_interval_s": 5, "node_timeout_s": 10})
    assert load_settings(None, delivery={"heartbeat_interval_s": 5, "node_timeout_s": 11})


def test_server_nodes_must_be_nodes_of_a_group() -> None:
    groups = {"g": {"nodes": ["n1", "n2"]}}
    with pytest.raises(ConfigError, match=r"server\.nodes: 'n3' is not a node of any group"):
        load_settings(None, groups=groups, server={"nodes": ["n3"]})
    assert load_settings(None, groups=groups, server={"nodes": ["n2"]}).hosted_nodes == ["n2"]
    assert load_settings(None, groups=groups).hosted_nodes == ["n1", "n2"]


def test_the_event_loop_setting_picks_the_loop_serve_runs_on() -> None:
    import asyncio

    import uvloop

    from chatpush.cli import _event_loop

    for choice, kind, name in (
        ("auto", uvloop.Loop, "uvloop"),
        ("uvloop", uvloop.Loop, "uvloop"),
        ("asyncio", asyncio.BaseEventLoop, "asyncio"),
    ):
        loop, loop_name = _event_loop(choice)
        try:
            assert isinstance(loop, kind) and loop_name == name
        finally:
            loop.close()
    with pytest.raises((ValidationError, ConfigError)):
        Settings(server={"event_loop": "trio"})


def test_notification_limits_are_checked(write_config: Any) -> None:
    """``[notification]`` (docs/callbacks.md §6), as ``chatpush check`` reads it."""
    assert "notification.default_expire_s" in config_error(
        write_config, "[notification]\ndefault_expire_s = 29\n"
    )
    assert "notification.max_subscriptions" in config_error(
        write_config, "[notification]\nmax_subscriptions = 0\n"
    )
    assert "notification.expire" in config_error(write_config, "[notification]\nexpire = 30\n")
    settings = load_settings(write_config("[notification]\nmax_pattern_subscriptions = 0\n"))
    assert settings.notification.max_pattern_subscriptions == 0
