"""The agents' systemd user units: their state, start/stop/restart, and their logs.

Everything goes through systemctl and journalctl as argument lists, never a shell, with the command
prefixes from the `[systemd]` table, so tests (and unusual hosts) substitute their own programs.
systemd being absent is a state ("unknown", with the reason), never a crash: on some hosts the
operator runs the agents by hand.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

from bot.config import AGENT_NAME_RE, ClusterConfig, SystemdConfig
from bot.errors import AtomizerError, InvalidInput, SystemdUnavailable, UnitCommandFailed

log = logging.getLogger("atomizer-hq.systemd")

ActiveState = Literal["active", "inactive", "failed", "activating", "deactivating", "unknown"]
ACTIVE_STATES: tuple[str, ...] = get_args(ActiveState)
Action = Literal["start", "stop", "restart"]
ACTIONS: tuple[str, ...] = get_args(Action)
MAX_LOG_LINES = 5000
DEFAULT_LOG_LINES = 100
QUERY_TIMEOUT = 10.0  # is-active answers at once when systemd is healthy; a status round must not hang

DEFAULT_SYSTEMCTL = ("systemctl", "--user")
DEFAULT_JOURNALCTL = ("journalctl", "--user")
DEFAULT_UNIT_TEMPLATE = "openclaw-atomizer@{agent}.service"

# What systemctl and journalctl print when there is no systemd (user) manager to talk to.
_UNAVAILABLE_MARKERS = (
    "Failed to connect to bus",
    "Failed to connect to user scope bus",
    "Failed to get D-Bus connection",
    "System has not been booted with systemd",
)
# A reloading unit is running and re-reading its configuration: active, as far as callers care.
_STATE_ALIASES = {"reloading": "active", "refreshing": "active"}
# The states that mean an action did what was asked. "activating" covers Type=notify start-up and
# Restart=always's auto-restart; a stopped unit whose process exited badly on SIGTERM is "failed".
_EXPECTED: dict[str, tuple[str, ...]] = {
    "start": ("active", "activating"),
    "restart": ("active", "activating"),
    "stop": ("inactive", "failed"),
}
_PAST = {"start": "started", "stop": "stopped", "restart": "restarted"}


@dataclass(frozen=True)
class UnitState:
    """What `systemctl is-active` says about one agent's unit; `reason` explains an "unknown"."""

    agent: str
    unit: str
    state: ActiveState
    reason: str = ""

    @property
    def is_active(self) -> bool:
        return self.state == "active"

    def to_dict(self) -> dict[str, Any]:
        return {"agent": self.agent, "unit": self.unit, "state": self.state, "reason": self.reason or None}


@dataclass(frozen=True)
class UnitActionResult:
    """One start/stop/restart: whether it did what was asked, the unit's state afterwards, and why not."""

    agent: str
    unit: str
    action: Action
    ok: bool
    state: UnitState
    error: AtomizerError | None = None  # SystemdUnavailable or UnitCommandFailed when not ok

    @property
    def summary(self) -> str:
        """One line for a person: `webster: restarted (active)` or what went wrong."""
        if self.ok:
            return f"{self.agent}: {_PAST[self.action]} ({self.state.state})"
        if isinstance(self.error, SystemdUnavailable):
            return f"{self.agent}: {self.action} failed: systemd unavailable ({self.error.reason})"
        detail = self.error.detail if isinstance(self.error, UnitCommandFailed) else str(self.error)
        return f"{self.agent}: {self.action} failed ({self.state.state}): {detail}"

    def raise_for_error(self) -> None:
        """For callers that want one action to be all or nothing (a single-agent slash command)."""
        if self.error is not None:
            raise self.error

    def to_dict(self) -> dict[str, Any]:
        error = None if self.error is None else {"code": self.error.code, "message": self.error.message}
        return {
            "agent": self.agent,
            "unit": self.unit,
            "action": self.action,
            "ok": self.ok,
            "state": self.state.state,
            "reason": self.state.reason or None,
            "error": error,
        }


@dataclass(frozen=True)
class _Completed:
    returncode: int
    stdout: str
    stderr: str


def check_lines(lines: int) -> int:
    """How many journal lines may be asked for: enough to debug, not enough to flood a terminal or Discord."""
    if isinstance(lines, bool) or not isinstance(lines, int) or not 1 <= lines <= MAX_LOG_LINES:
        raise InvalidInput(f"the number of log lines must be between 1 and {MAX_LOG_LINES}, not {lines!r}")
    return lines


def resolve_agents(config: ClusterConfig, name: str, action: str) -> list[str]:
    """`all` is every agent in config order (reverse order to stop); anything else must be a known agent."""
    if name.strip().lower() == "all":
        names = config.agent_names
        return names[::-1] if action == "stop" else names
    return [config.require_agent(name).name]


class SystemdUnits:
    """Drives `openclaw-atomizer@<agent>.service` units through configurable systemctl/journalctl prefixes."""

    def __init__(
        self,
        systemctl: Sequence[str] = DEFAULT_SYSTEMCTL,
        journalctl: Sequence[str] = DEFAULT_JOURNALCTL,
        unit_template: str = DEFAULT_UNIT_TEMPLATE,
        timeout: float = 90.0,
    ) -> None:
        # Same validation as the [systemd] table, so a hand-built instance cannot be laxer than the config.
        self._config = SystemdConfig(
            systemctl=list(systemctl), journalctl=list(journalctl), unit_template=unit_template, timeout=timeout
        )

    @classmethod
    def from_config(cls, config: SystemdConfig) -> SystemdUnits:
        return cls(config.systemctl, config.journalctl, config.unit_template, config.timeout)

    @property
    def timeout(self) -> float:
        return self._config.timeout

    def unit(self, agent: str) -> str:
        """The unit of an agent; the name is re-checked here so nothing odd ever reaches an argv."""
        if not isinstance(agent, str) or not AGENT_NAME_RE.fullmatch(agent):
            raise InvalidInput(
                f"{agent!r} is not a valid agent name; use lowercase letters, digits and '-', "
                "starting with a letter (e.g. 'nx-expert')"
            )
        return self._config.unit_for(agent)

    # --- state --------------------------------------------------------------------------------

    async def is_active(self, agent: str) -> UnitState:
        """The unit's state; "unknown" with a reason when systemd cannot say, never an exception."""
        unit = self.unit(agent)
        timeout = min(self.timeout, QUERY_TIMEOUT)
        try:
            done = await self._run([*self._config.systemctl, "is-active", unit], timeout)
        except SystemdUnavailable as exc:
            return UnitState(agent, unit, "unknown", exc.message)
        except TimeoutError:
            return UnitState(agent, unit, "unknown", f"systemctl is-active did not answer within {timeout:g} s")
        missing = _unavailable_reason(done.stderr)
        if missing:
            return UnitState(agent, unit, "unknown", SystemdUnavailable(missing).message)
        words = done.stdout.split()
        word = _STATE_ALIASES.get(words[0], words[0]) if words else ""
        if word in ACTIVE_STATES and word != "unknown":
            return UnitState(agent, unit, cast(ActiveState, word))
        reason = _one_line(done.stderr) or f"systemctl is-active printed {word!r} (exit status {done.returncode})"
        return UnitState(agent, unit, "unknown", reason)

    async def states(self, agents: Sequence[str]) -> list[UnitState]:
        """Every agent's state at once, in the order given."""
        for agent in agents:
            self.unit(agent)  # refuse before starting any: a refusal mid-gather would orphan the others' children
        return list(await asyncio.gather(*(self.is_active(agent) for agent in agents)))

    # --- actions ------------------------------------------------------------------------------

    async def start(self, agent: str) -> UnitActionResult:
        return await self._act("start", agent)

    async def stop(self, agent: str) -> UnitActionResult:
        return await self._act("stop", agent)

    async def restart(self, agent: str) -> UnitActionResult:
        return await self._act("restart", agent)

    async def apply(self, action: Action, agents: Sequence[str]) -> list[UnitActionResult]:
        """One action on several agents, one after the other in the order given, never stopping halfway."""
        if action not in ACTIONS:
            raise InvalidInput(f"unknown action {action!r}; valid: {', '.join(ACTIONS)}")
        for agent in agents:
            self.unit(agent)  # refuse the whole batch before anything runs
        return [await self._act(action, agent) for agent in agents]

    async def _act(self, action: Action, agent: str) -> UnitActionResult:
        unit = self.unit(agent)
        try:
            done = await self._run([*self._config.systemctl, action, unit], self.timeout)
        except SystemdUnavailable as exc:
            return self._outcome(action, UnitState(agent, unit, "unknown", exc.message), exc)
        except TimeoutError:
            error = UnitCommandFailed(
                agent,
                action,
                f"systemctl {action} {unit} did not finish within {self.timeout:g} s; the job may still be running: "
                f"check `atomizer-hq cluster status {agent}`",
            )
            return self._outcome(action, await self.is_active(agent), error)
        missing = _unavailable_reason(done.stderr)
        if done.returncode != 0 and missing:
            exc = SystemdUnavailable(missing)
            return self._outcome(action, UnitState(agent, unit, "unknown", exc.message), exc)
        state = await self.is_active(agent)
        if done.returncode != 0:
            detail = _one_line(done.stderr) or f"systemctl {action} exited with status {done.returncode}"
            if state.state == "failed":
                detail = detail.rstrip(".") + f"; see `atomizer-hq cluster logs {agent}`"
            return self._outcome(action, state, UnitCommandFailed(agent, action, detail))
        if state.state != "unknown" and state.state not in _EXPECTED[action]:
            detail = (
                f"systemctl {action} succeeded but {unit} is {state.state} now; see `atomizer-hq cluster logs {agent}`"
            )
            return self._outcome(action, state, UnitCommandFailed(agent, action, detail))
        return self._outcome(action, state, None)

    def _outcome(self, action: Action, state: UnitState, error: AtomizerError | None) -> UnitActionResult:
        result = UnitActionResult(state.agent, state.unit, action, error is None, state, error)
        # Debug only: the caller knows who asked, so the caller writes the audit line.
        log.debug("%s", result.summary)
        return result

    # --- logs ---------------------------------------------------------------------------------

    async def logs(self, agent: str, lines: int = DEFAULT_LOG_LINES) -> str:
        """The unit's last `lines` journal lines (ISO timestamps); journalctl's own notes follow as `-- ` lines."""
        check_lines(lines)
        unit = self.unit(agent)
        argv = [*self._config.journalctl, "-u", unit, "-n", str(lines), "--no-pager", "-o", "short-iso"]
        try:
            done = await self._run(argv, self.timeout)
        except TimeoutError:
            raise UnitCommandFailed(agent, "logs", f"journalctl did not finish within {self.timeout:g} s") from None
        if done.returncode != 0:
            missing = _unavailable_reason(done.stderr)
            if missing:
                raise SystemdUnavailable(missing)
            raise UnitCommandFailed(
                agent, "logs", _one_line(done.stderr) or f"journalctl exited with status {done.returncode}"
            )
        text = done.stdout
        if not any(line.strip() and not line.startswith("-- ") for line in text.splitlines()):
            await self._require_manager(unit)
        notes = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        if notes:  # e.g. "No journal files were found.": why the log is empty
            text = (text if not text or text.endswith("\n") else text + "\n") + "".join(f"-- {n}\n" for n in notes)
        return text

    async def _require_manager(self, unit: str) -> None:
        """Raise SystemdUnavailable when no systemd user manager answers.

        journalctl reads journal files, not the bus: without a user session it answers "-- No entries --"
        and exit 0, which reads as "the agent logged nothing" when the truth is that systemd is not there.
        """
        try:
            done = await self._run([*self._config.systemctl, "is-active", unit], min(self.timeout, QUERY_TIMEOUT))
        except TimeoutError:
            return  # systemd is there but slow: the empty log stands as journalctl gave it
        missing = _unavailable_reason(done.stderr)
        if missing:
            raise SystemdUnavailable(missing)

    # --- running ------------------------------------------------------------------------------

    async def _run(self, argv: list[str], timeout: float) -> _Completed:
        """Run one command (no shell, no stdin); raise SystemdUnavailable if it cannot even start."""
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,  # nothing may stop to ask for a password
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=_child_env(),
            )
        except FileNotFoundError:
            raise SystemdUnavailable(f"{argv[0]} not found") from None
        except OSError as exc:
            raise SystemdUnavailable(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
        try:
            out, err = await asyncio.wait_for(process.communicate(), timeout)
        finally:
            if process.returncode is None:  # timed out or cancelled: leave no systemctl behind
                with suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        assert process.returncode is not None
        log.debug("%s: exit %s", " ".join(argv), process.returncode)
        return _Completed(process.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


def _child_env() -> dict[str, str]:
    # systemctl needs XDG_RUNTIME_DIR and DBUS_SESSION_BUS_ADDRESS, and never our secrets.
    return {k: v for k, v in os.environ.items() if not k.startswith("ATOMIZER_") and k != "DISCORD_TOKEN"}


def _unavailable_reason(stderr: str) -> str:
    for line in stderr.splitlines():
        if any(marker in line for marker in _UNAVAILABLE_MARKERS):
            return line.strip()
    return ""


def _one_line(text: str, limit: int = 500) -> str:
    line = " ".join(part.strip() for part in text.splitlines() if part.strip())
    return line if len(line) <= limit else line[: limit - 1] + "…"
