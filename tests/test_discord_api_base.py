"""ATOMIZER_DISCORD_API_BASE: the one knob that points the real bot at a Discord-compatible test server."""

from __future__ import annotations

from pathlib import Path

import pytest
from discord import http

from bot.discord_bot import DISCORD_API_BASE, AtomizerBot, use_discord_api
from bot.errors import ConfigError
from bot.services import Services
from bot.settings import load_settings


@pytest.fixture(autouse=True)
def _restore_route_base() -> object:
    yield
    use_discord_api(None)


async def test_unset_means_discord_itself(services: Services) -> None:
    assert services.settings.discord_api_base is None
    http.Route.BASE = "http://127.0.0.1:1/api/v10"  # left over from a test server
    bot = AtomizerBot(services, sync_commands=False, background_tasks=False)
    assert http.Route.BASE == DISCORD_API_BASE == "https://discord.com/api/v10"
    await bot.close()


async def test_a_loopback_base_is_where_every_rest_call_goes(services: Services) -> None:
    services.settings.discord_api_base = "http://127.0.0.1:8555/api/v10"
    bot = AtomizerBot(services, sync_commands=False, background_tasks=False)
    assert http.Route("GET", "/gateway/bot").url == "http://127.0.0.1:8555/api/v10/gateway/bot"
    await bot.close()


@pytest.mark.parametrize("value", ["ws://127.0.0.1:8555", "discord.com/api/v10", "file:///etc/passwd", "http://"])
def test_a_value_that_is_not_an_http_url_is_refused_clearly(
    value: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ATOMIZER_DISCORD_API_BASE", value)
    with pytest.raises(ConfigError) as caught:
        load_settings(None)
    [problem] = caught.value.problems
    assert "ATOMIZER_DISCORD_API_BASE must be an http:// or https:// URL" in problem and repr(value) in problem


def test_a_trailing_slash_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATOMIZER_DISCORD_API_BASE", "https://proxy.example/api/v10/")
    assert load_settings(None).discord_api_base == "https://proxy.example/api/v10"
