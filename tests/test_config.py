"""Unit tests of local_bridge.config against API.md's configuration table."""

from __future__ import annotations

import pytest

from local_bridge.config import ConfigError, Settings, check_bind_allowed, load_settings


def load(overrides=None, **env):
    """Settings from ``overrides`` and ``LOCAL_BRIDGE_<name>`` variables, ignoring os.environ."""
    return load_settings(overrides, environ={f"LOCAL_BRIDGE_{k}": v for k, v in env.items()})


def test_defaults_match_api_md():
    settings = load()
    assert settings == Settings()
    assert {
        name: getattr(settings, name)
        for name in (
            "HOST",
            "PORT",
            "DATABASE_URL",
            "REDIS_URL",
            "AUTH",
            "SECRET_KEY",
            "ALLOWED_ORIGINS",
            "HEARTBEAT_INTERVAL",
            "HISTORY_SIZE",
            "HISTORY_TTL",
            "MAX_QUEUE",
            "MAX_BODY_SIZE",
            "MAX_MESSAGE_SIZE",
            "MESSAGE_RATE",
            "MESSAGE_BURST",
            "CONNECT_RATE",
            "HTTP_RATE",
            "MAX_CONNECTIONS",
            "PROGRESS_RATE",
        )
    } == {
        "HOST": "127.0.0.1",
        "PORT": 5100,
        "DATABASE_URL": None,
        "REDIS_URL": None,
        "AUTH": "none",
        "SECRET_KEY": None,
        "ALLOWED_ORIGINS": (),
        "HEARTBEAT_INTERVAL": 30,
        "HISTORY_SIZE": 10000,
        "HISTORY_TTL": 600,
        "MAX_QUEUE": 1000,
        "MAX_BODY_SIZE": 1048576,
        "MAX_MESSAGE_SIZE": 65536,
        "MESSAGE_RATE": 20,
        "MESSAGE_BURST": 50,
        "CONNECT_RATE": 300,
        "HTTP_RATE": 0,
        "MAX_CONNECTIONS": 10000,
        "PROGRESS_RATE": 10,
    }
    assert not settings.auth_enabled
    assert settings.extra == {}


def test_environment_overrides_are_typed():
    settings = load(
        PORT="6001",
        HEARTBEAT_INTERVAL="2.5",
        MAX_QUEUE=" 10 ",
        ALLOWED_ORIGINS="http://a.test, http://b.test,,",
        DATABASE_URL="sqlite://",
        REDIS_URL="redis://r:6379/0",
        WORKER_CLASS="gthread",
    )
    assert settings.PORT == 6001 and isinstance(settings.PORT, int)
    assert settings.HEARTBEAT_INTERVAL == 2.5
    assert settings.MAX_QUEUE == 10
    assert settings.ALLOWED_ORIGINS == ("http://a.test", "http://b.test")
    assert (settings.DATABASE_URL, settings.REDIS_URL) == ("sqlite://", "redis://r:6379/0")
    assert settings.WORKER_CLASS == "gthread"


def test_only_prefixed_variables_are_read():
    settings = load_settings(environ={"PORT": "1", "MAX_QUEUE": "5", "LOCAL_BRIDGE_HOST": "::1"})
    assert (settings.PORT, settings.MAX_QUEUE, settings.HOST) == (5100, 1000, "::1")


def test_empty_numeric_variable_keeps_default():
    settings = load(PORT="", MESSAGE_RATE="  ")
    assert (settings.PORT, settings.MESSAGE_RATE) == (5100, 20)


def test_overrides_beat_environment_and_accept_any_spelling():
    settings = load(
        {
            "port": 7000,
            "LOCAL_BRIDGE_MAX_QUEUE": 3,
            "heartbeat_interval": "0.5",
            "ALLOWED_ORIGINS": ["http://x.test "],
        },
        PORT="6000",
        MAX_QUEUE="9",
    )
    assert (settings.PORT, settings.MAX_QUEUE, settings.HEARTBEAT_INTERVAL) == (7000, 3, 0.5)
    assert settings.ALLOWED_ORIGINS == ("http://x.test",)


def test_unknown_override_keys_go_to_extra():
    settings = load({"TESTING": True, "MAX_QUEUE": 5, "secret_thing": "x"})
    assert settings.extra == {"TESTING": True, "SECRET_THING": "x"}
    assert settings.MAX_QUEUE == 5


def test_override_none_clears_optional_url():
    assert load({"DATABASE_URL": None}, DATABASE_URL="sqlite://").DATABASE_URL is None


@pytest.mark.parametrize(
    "name, value",
    [
        ("PORT", "abc"),
        ("PORT", "70000"),
        ("PORT", "-1"),
        ("PORT", "5100.5"),
        ("MAX_QUEUE", "0"),
        ("MAX_QUEUE", "many"),
        ("HEARTBEAT_INTERVAL", "nan"),
        ("HEARTBEAT_INTERVAL", "0"),
        ("HISTORY_TTL", "inf"),
        ("MAX_MESSAGE_SIZE", "64"),
        ("MESSAGE_BURST", "0"),
        ("CONNECT_RATE", "-5"),
        ("PROGRESS_RATE", "0"),
        ("MAX_CONNECTIONS", "1e3"),
        ("AUTH", "basic"),
        ("AUTH", "TOKEN"),
        ("WORKER_CLASS", "sync"),
    ],
)
def test_bad_environment_value_names_the_variable(name, value):
    with pytest.raises(ConfigError, match=f"LOCAL_BRIDGE_{name}"):
        load(**{name: value})


@pytest.mark.parametrize(
    "overrides, name",
    [
        ({"MAX_QUEUE": "x"}, "MAX_QUEUE"),
        ({"PORT": [1]}, "PORT"),
        ({"ALLOWED_ORIGINS": 5}, "ALLOWED_ORIGINS"),
        ({"MESSAGE_RATE": -1}, "MESSAGE_RATE"),
    ],
)
def test_bad_override_value_names_the_variable(overrides, name):
    with pytest.raises(ConfigError, match=f"LOCAL_BRIDGE_{name}"):
        load(overrides)


def test_non_string_origin_in_list_raises_config_error():
    with pytest.raises(ConfigError, match="LOCAL_BRIDGE_ALLOWED_ORIGINS"):
        load({"ALLOWED_ORIGINS": ["http://a.test", 5]})


def test_token_auth_needs_secret_key():
    with pytest.raises(ConfigError, match="LOCAL_BRIDGE_SECRET_KEY"):
        load(AUTH="token")
    settings = load(AUTH="token", SECRET_KEY="s3cret")
    assert settings.auth_enabled and settings.SECRET_KEY == "s3cret"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "localhost", "::1", "[::1]"])
def test_bind_loopback_allowed_without_auth(host):
    check_bind_allowed(load(HOST=host))


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "example.com", "", "LOCALHOST."])
def test_bind_non_loopback_refused_without_auth(host):
    with pytest.raises(ConfigError, match="AUTH=none"):
        check_bind_allowed(load(HOST=host))


def test_bind_anywhere_allowed_with_token_auth():
    check_bind_allowed(load(HOST="0.0.0.0", AUTH="token", SECRET_KEY="k"))
