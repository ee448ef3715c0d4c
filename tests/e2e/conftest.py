"""The real `atomizer-hq run` as a subprocess, against the loopback Discord and a simulated fleet."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from bot.config import ClusterConfig, load_cluster_config, with_ports
from bot.simulator import SimAgentSpec, SimulatedFleet, free_ports
from tests.conftest import API_TOKENS, HOOKS_TOKEN, SHIPPED_CONFIG
from tests.loopback_discord import GuildState, LoopbackDiscord, User

DISCORD_TOKEN = "discord-SECRET-MTAwMDAwMDAwMDAwMDAwMDAx.e2e.loopback0123456789"
GUILD_ID = "100000000000000001"
BOT_USER_ID = "700000000000000001"
ATOMIZER = Path(sys.executable).parent / "atomizer-hq"
REPO = Path(__file__).resolve().parents[2]
START_DEADLINE_S = 60.0  # a loaded 2-core machine: generous, and only ever waited on, never slept


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keeps each phase's report on the test item, so a fixture can print the bot's log after a failed test."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def guild_for(config: ClusterConfig) -> GuildState:
    """The guild the shipped cluster.toml describes: its channels and its role ids."""
    roles = {level: ids[0] if isinstance(ids, list) else ids for level, ids in config.roles.items() if ids}
    return GuildState(guild_id=GUILD_ID, channels=dict(config.channels), roles=roles, bot_user_id=BOT_USER_ID)


def agent_user(config: ClusterConfig, name: str) -> User:
    """An agent's own Discord bot account, as configured in `discord_user_id`."""
    agent = next(a for a in config.agents if a.name == name)
    assert agent.discord_user_id is not None
    return User(agent.discord_user_id, name, bot=True)


def cluster_file(tmp_path: Path, config: ClusterConfig, api_port: int) -> Path:
    """The shipped cluster file (text-edited, so it stays the real file) with test ports for agents and API."""
    text = with_ports(SHIPPED_CONFIG.read_text(encoding="utf-8"), {a.name: a.port for a in config.agents}, api_port)
    # The process runs with cwd=tmp_path: the shipped workflows are found by their absolute path.
    text = text.replace('dir = "workflows"', f'dir = "{REPO / "workflows"}"', 1)
    path = tmp_path / "cluster.toml"
    path.write_text(text, encoding="utf-8")
    return path


class BotProcess:
    """One `atomizer-hq run` subprocess; its stderr (the log) is collected line by line to wait on."""

    def __init__(self, process: asyncio.subprocess.Process, api_url: str) -> None:
        self.process = process
        self.api_url = api_url
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())
        self.started = time.monotonic()

    async def _read(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))
            self._changed.set()
        self._changed.set()

    def log(self) -> str:
        return "\n".join(self.lines)

    async def wait_for_line(self, text: str, timeout: float = START_DEADLINE_S, after: int = 0) -> str:
        """The first log line (from index `after`) containing `text`."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines[after:]:
                if text in line:
                    return line
            if self.process.returncode is not None and self._reader.done():
                raise AssertionError(
                    f"atomizer-hq exited ({self.process.returncode}) before logging {text!r}:\n{self.log()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"atomizer-hq did not log {text!r} within {timeout} s:\n{self.log()}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 1.0))

    async def health(self) -> tuple[int, dict[str, Any]]:
        async with httpx.AsyncClient(timeout=5.0) as client:
            answer = await client.get(f"{self.api_url}/healthz")
        return answer.status_code, answer.json()

    async def wait_for_health(
        self, predicate: Callable[[int, dict[str, Any]], bool], timeout: float = 30.0
    ) -> dict[str, Any]:
        """Poll /healthz (an HTTP state, not a sleep) until `predicate(status, body)` holds."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                status, body = await self.health()
            except httpx.HTTPError as exc:
                last = exc
            else:
                last = (status, body)
                if predicate(status, body):
                    return body
            if self.process.returncode is not None:
                break
            await asyncio.sleep(0.1)  # a polling interval, not synchronization: the deadline decides
        raise AssertionError(f"/healthz never matched; last answer {last!r}\n{self.log()}")

    async def stop_when_exited(self, timeout: float) -> int:
        """The exit code of a process expected to end on its own."""
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"atomizer-hq still runs after {timeout} s:\n{self.log()}") from None
        return await self.stop()

    async def stop(self) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 30.0)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._reader, 5.0)
        assert self.process.returncode is not None
        return self.process.returncode


async def launch_bot(
    config: ClusterConfig,
    api_base: str | None,
    tmp_path: Path,
    *,
    run_args: tuple[str, ...] = (),
    discord_token: str | None = DISCORD_TOKEN,
) -> BotProcess:
    """Start the real process as an operator would, with production intents and cache flags (nothing test-only
    but ATOMIZER_DISCORD_API_BASE); it is not waited on. `run_args` go after `run` (e.g. --no-discord)."""
    api_port = free_ports(1)
    config_path = cluster_file(tmp_path, config, api_port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ATOMIZER_") and k != "DISCORD_TOKEN"}
    env.update(
        ATOMIZER_GUILD_ID=GUILD_ID, ATOMIZER_HOOKS_TOKEN=HOOKS_TOKEN,
        ATOMIZER_API_TOKENS=",".join(f"{k}:{v}" for k, v in API_TOKENS.items()),
    )  # fmt: skip
    if discord_token is not None:
        env["DISCORD_TOKEN"] = discord_token
    if api_base is not None:
        env["ATOMIZER_DISCORD_API_BASE"] = api_base
    process = await asyncio.create_subprocess_exec(
        str(ATOMIZER), "--config", str(config_path), "--db", str(tmp_path / "atomizer.db"), "run", *run_args,
        env=env, cwd=tmp_path, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    return BotProcess(process, f"http://127.0.0.1:{api_port}")


def assert_clean(server: LoopbackDiscord) -> None:
    """Nothing the bot sent broke Discord's limits, and every route it called is one the server knows."""
    violations, unhandled = list(server.violations), list(server.unhandled)
    server.violations.clear()
    server.unhandled.clear()
    assert not violations, "requests Discord would refuse:\n" + "\n".join(map(str, violations))
    assert not unhandled, f"routes the loopback Discord does not serve: {unhandled}"


async def stop_clean(bot: BotProcess) -> None:
    code = await bot.stop()
    assert code == 0, f"atomizer-hq exited {code}:\n{bot.log()}"
    assert DISCORD_TOKEN not in bot.log()


@dataclass
class Wire:
    """One running bot process shared by a module's tests (a process start costs seconds; tests use own data)."""

    config: ClusterConfig
    fleet: SimulatedFleet
    server: LoopbackDiscord
    bot: BotProcess


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def wire_running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Wire]:
    config = load_cluster_config(SHIPPED_CONFIG).relocated(free_ports(8), 4)
    fleet = SimulatedFleet([SimAgentSpec(name=a.name, port=a.port) for a in config.agents], HOOKS_TOKEN)
    await fleet.start()
    server = LoopbackDiscord(guild_for(config), token=DISCORD_TOKEN)
    await server.start()
    bot = await launch_bot(config, server.api_base, tmp_path_factory.mktemp("wire"))
    try:
        await bot.wait_for_health(lambda status, body: status == 200, timeout=START_DEADLINE_S)
        yield Wire(config, fleet, server, bot)
        await stop_clean(bot)
    finally:
        await bot.stop()
        await server.stop()
        await fleet.stop()


@pytest.fixture
def wire(wire_running: Wire) -> Iterator[Wire]:
    """The shared process; each test ends by asserting that nothing it caused broke Discord's limits."""
    assert_clean(wire_running.server)
    yield wire_running
    assert_clean(wire_running.server)
