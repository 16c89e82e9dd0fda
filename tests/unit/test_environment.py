"""CHATPUSH_* variables (chatpush/environment.py): refused when unknown with the closest valid
name, list values as JSON or comma lists, bad values naming the variable, service and group keys
from the environment. `chatpush check` with a typo is in tests/e2e/test_operator_cli.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from chatpush.config import ConfigError, Settings, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("CHATPUSH_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def refusal(monkeypatch: pytest.MonkeyPatch, path: Path | None = None, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    return str(caught.value)


@pytest.mark.parametrize(
    ("variable", "closest"),
    [
        ("CHATPUSH_SEVER__PORT", "CHATPUSH_SERVER__PORT"),
        ("CHATPUSH_SERVER_PORT", "CHATPUSH_SERVER__PORT"),
        ("CHATPUSH_API_KEYS", "CHATPUSH_SECURITY__API_KEYS"),
        ("CHATPUSH_DATABASE__ULR", "CHATPUSH_DATABASE__URL"),
        (
            "CHATPUSH_SERVICES__DEFAULT__FLEX_PUSH_RESEN_DELAY",
            "CHATPUSH_SERVICES__DEFAULT__FLEX_PUSH_RESEND_DELAY",
        ),
        ("CHATPUSH_GROUPS__MAIN__CUSTOMHTTP_ULR", "CHATPUSH_GROUPS__<GROUP>__CUSTOMHTTP_URL"),
    ],
)
def test_an_unknown_variable_is_refused_with_the_closest_name(
    monkeypatch: pytest.MonkeyPatch, variable: str, closest: str
) -> None:
    message = refusal(monkeypatch, **{variable: "1"})
    assert message.startswith("invalid environment:")
    assert f"{variable}: " in message and "unknown key" in message
    assert f"did you mean {closest}?" in message


def test_the_harness_variables_and_the_config_path_are_not_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("CHATPUSH_TEST_POSTGRES", "CHATPUSH_FUZZ_EXAMPLES", "CHATPUSH_TEST_NODE"):
        monkeypatch.setenv(name, "off")
    monkeypatch.setenv("CHATPUSH_CONFIG", "")
    assert load_settings().server.port == 8080
    assert Settings().server.port == 8080  # the direct constructor reads them the same way


def test_list_values_take_a_comma_list_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATPUSH_SECURITY__API_KEYS", "key-one, key-two")
    monkeypatch.setenv("CHATPUSH_SERVER__TRUSTED_PROXIES", '["10.0.0.0/8", "192.168.1.1"]')
    monkeypatch.setenv("CHATPUSH_MOBILE__ALLOWED_HOSTS", "fcm.googleapis.com,http://127.0.0.1:9")
    settings = load_settings()
    assert [key.get_secret_value() for key in settings.security.api_keys] == [
        "key-one",
        "key-two",
    ]
    assert settings.server.trusted_proxies == ["10.0.0.0/8", "192.168.1.1"]
    assert settings.mobile.allowed_hosts == ("https://fcm.googleapis.com:443", "http://127.0.0.1:9")
    monkeypatch.setenv("CHATPUSH_SECURITY__API_KEYS", "single-key")
    assert [k.get_secret_value() for k in load_settings().security.api_keys] == ["single-key"]


def test_a_bad_value_names_the_variable_and_the_form(monkeypatch: pytest.MonkeyPatch) -> None:
    message = refusal(monkeypatch, CHATPUSH_SERVER__PORT="eighty")
    assert "CHATPUSH_SERVER__PORT: server.port: Input should be a valid integer" in message
    assert "Traceback" not in message and "pydantic" not in message
    message = refusal(monkeypatch, CHATPUSH_SERVER__PORT="80", CHATPUSH_SECURITY__API_KEYS="[x")
    assert "CHATPUSH_SECURITY__API_KEYS: expected a JSON list, or a comma-separated list" in message
    monkeypatch.delenv("CHATPUSH_SECURITY__API_KEYS")
    message = refusal(monkeypatch, CHATPUSH_SECURITY__KEYS="agents")
    assert "CHATPUSH_SECURITY__KEYS: expected a JSON list of tables" in message
    monkeypatch.delenv("CHATPUSH_SECURITY__KEYS")
    message = refusal(monkeypatch, CHATPUSH_SERVICES__DEFAULT__FLEX_PUSH_TIMEOUT="0")
    assert (
        "CHATPUSH_SERVICES__DEFAULT__FLEX_PUSH_TIMEOUT: services.default.flex-push-timeout"
        in message
    )


def test_service_options_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "chatpush.toml"
    path.write_text(
        '[services.default]\nflex-push-resend-attempts = 2\n[services."Customer-Support"]\n'
        "flex-push-resend-attempts = 4\n"
    )
    monkeypatch.setenv("CHATPUSH_SERVICES__DEFAULT__FLEX_PUSH_RESEND_DELAY", "5,15")
    monkeypatch.setenv("CHATPUSH_SERVICES__DEFAULT__FLEX_PUSH_ENABLED", "false")
    monkeypatch.setenv("CHATPUSH_SERVICES__CUSTOMER_SUPPORT__FLEX_PUSH_RESEND_ATTEMPTS", "7")
    monkeypatch.setenv("CHATPUSH_SERVICES__DEFAULT__PUSH_DEVICE_ID_SECRET", "s" * 32)
    settings = load_settings(path)
    default = settings.service_options("default")
    assert default.flex_push_resend_delays_s == (5, 15)
    assert default.flex_push_enabled is False
    assert default.flex_push_resend_attempts == 2  # the rest of the table still from the file
    assert default.push_device_id_secret is not None
    # The file's service, named in the variable as a shell allows (no "-", any case).
    assert settings.service_options("Customer-Support").flex_push_resend_attempts == 7


def test_group_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATPUSH_GROUPS__MAIN__NODES", "main-1,main-2")
    monkeypatch.setenv("CHATPUSH_GROUPS__MAIN__PUSHENABLED", "customhttp,comet")
    monkeypatch.setenv("CHATPUSH_GROUPS__MAIN__CUSTOMHTTP_URL", "https://receiver.example/chat")
    monkeypatch.setenv(
        "CHATPUSH_GROUPS__MAIN__PROVIDERS__APP__CUSTOMHTTP_URL", "https://app.example/chat"
    )
    group = load_settings().groups["main"]
    assert group.nodes == ["main-1", "main-2"]
    assert group.push_enabled == ("customhttp", "comet")
    assert group.customhttp_url == "https://receiver.example/chat"
    assert group.providers["app"].customhttp_url == "https://app.example/chat"


def test_a_whole_table_as_json_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATPUSH_SERVICES", '{"default": {"flex-push-resend-attempts": 9}}')
    monkeypatch.setenv(
        "CHATPUSH_SECURITY__KEYS",
        '[{"name": "agents", "key": "a-long-random-agent-key", "scopes": ["chat-server"]}]',
    )
    settings = load_settings()
    assert settings.service_options("default").flex_push_resend_attempts == 9
    assert settings.security.keys[0].name == "agents"
    message = refusal(monkeypatch, CHATPUSH_SERVICES="[1]")
    assert "CHATPUSH_SERVICES: expected a JSON object" in message


def test_the_walk_through_samples_load_and_comet_is_enabled() -> None:
    samples = Path(__file__).resolve().parents[2] / "samples"
    for name in ("push.toml", "comet.toml", "chatpush.toml"):
        load_settings(samples / name)  # a stale key would stop here
    comet = load_settings(samples / "comet.toml")
    assert comet.groups["gms-cluster-1"].push_enabled == ("comet",)
    assert [key.scopes for key in comet.security.keys if key.name == "bridge"] == [["bridge"]]
    push = load_settings(samples / "push.toml")
    assert push.groups["gms-cluster-1"].customhttp_signing_secret is not None
