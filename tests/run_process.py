"""The real `atomizer-hq run` as a subprocess: its stderr read line by line, waited on, then stopped."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
from pathlib import Path

from bot.config import load_cluster_config
from bot.simulator import free_ports
from tests.conftest import API_TOKENS, SHIPPED_CONFIG

START_DEADLINE_S = 60.0  # a loaded 2-core machine imports discord.py slowly


def run_config(tmp_path: Path, agent_ports: dict[str, int] | None = None) -> tuple[Path, int]:
    """The shipped cluster file with the agents on `agent_ports` (default: free, unserved ones) and the API on a
    free port; returns the file and the API's port."""
    names = load_cluster_config(SHIPPED_CONFIG).agent_names
    base = free_ports(len(names) + 1)
    ports = agent_ports or {name: base + i * 4 for i, name in enumerate(names)}
    api_port = base + len(names) * 4
    text = SHIPPED_CONFIG.read_text(encoding="utf-8")
    for agent in load_cluster_config(SHIPPED_CONFIG).agents:
        text = text.replace(f"port = {agent.port}\n", f"port = {ports[agent.name]}\n", 1)
    text = text.replace("port = 18790\n", f"port = {api_port}\n", 1)
    path = tmp_path / "cluster.toml"
    path.write_text(text, encoding="utf-8")
    return path, api_port


def api_tokens_env() -> str:
    return ",".join(f"{identity}:{token}" for identity, token in API_TOKENS.items())


class RunProcess:
    """`python -m bot … run …`, with every stderr line kept and a way to wait for one."""

    def __init__(self, *args: str, env: dict[str, str]) -> None:
        self.args = args
        self.env = env
        self.lines: list[str] = []
        self._changed = asyncio.Condition()
        self.process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> RunProcess:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", *self.args, env=self.env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        async for raw in self.process.stderr:
            async with self._changed:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._changed.notify_all()
        async with self._changed:
            self._changed.notify_all()

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    async def wait_for_line(self, pattern: str, *, timeout: float = START_DEADLINE_S, after: int = 0) -> str:
        """The first stderr line (from index `after`) matching `pattern`; fails with the whole stderr if the process
        ends or `timeout` passes first."""
        regex = re.compile(pattern)

        def found() -> str | None:
            return next((line for line in self.lines[after:] if regex.search(line)), None)

        async def wait() -> str:
            async with self._changed:
                while (line := found()) is None:
                    if self._reader is not None and self._reader.done():
                        raise AssertionError(f"the process ended without a line matching {pattern!r}:\n{self.stderr}")
                    await self._changed.wait()
                return line

        try:
            return await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"no line matching {pattern!r} within {timeout} s:\n{self.stderr}") from None

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        """Signal it and wait for the exit code (killed after a grace period)."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(sig)
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader
        assert self.process.returncode is not None
        return self.process.returncode

    async def wait(self, timeout: float = START_DEADLINE_S) -> int:
        assert self.process is not None
        code = await asyncio.wait_for(self.process.wait(), timeout)
        if self._reader is not None:
            await self._reader
        return code
