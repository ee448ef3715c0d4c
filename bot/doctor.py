"""`atomizer-hq doctor`: what the agents themselves run, checked against what atomizer-hq expects of them.

It reads each agent's `openclaw.json`, its workspace and its systemd unit, and reports, agent by agent, what
will break delivery or monitoring, each finding with its fix. It never prints a secret: tokens are compared
with `hmac.compare_digest`, named by where they live, and every text is passed through a redactor as well.
`--fix` rewrites only bare numeric delivery targets it could resolve, after a backup beside the file, and
changes nothing else in the file, byte for byte (openclaw.json is JSON5: comments and layout stay).
"""

from __future__ import annotations

import argparse
import copy
import getpass
import hmac
import json
import re
import shutil
import stat
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal, TextIO

from bot.config import HOOK_BODY_LIMIT, AgentConfig, ClusterConfig
from bot.errors import AtomizerError, InvalidTarget, env_suffix
from bot.install_systemd import (
    GATEWAY_ENV,
    SECRET_NAME,
    InlineSecret,
    UnitSetting,
    atomic_write,
    environment_assignments,
    exec_words,
    expand_specifiers,
    free_name,
    inline_secrets,
    read_env_file,
    read_unit,
)
from bot.settings import Settings
from bot.targets import GuildDirectory, StaticDirectory, TargetNormalizer

Severity = Literal["error", "warning"]
JsonPath = tuple[str | int, ...]
FLEET = "all"  # findings about what every agent shares (the unit template, atomizer-hq's own settings)
DEFAULT_GATEWAY_PORT = 18789  # OpenClaw's, when neither --port, OPENCLAW_GATEWAY_PORT nor gateway.port says
DEFAULT_HEARTBEAT_EVERY = "30m"
# `target`/`channel` values under which a bare `to` goes to Discord: the fleet has no other channel.
_DISCORD_ROUTES = ("", "discord", "last", "owner")
_MIN_REDACTED = 6  # shorter "secrets" would mangle ordinary words


@dataclass(frozen=True)
class Finding:
    """One thing that will break (error) or may break (warning), and what to do about it."""

    agent: str  # an agent's name, or "all"
    severity: Severity
    what: str
    fix: str
    path: Path | None = None
    key: str | None = None  # where in the file: "agents.defaults.heartbeat.to", "Environment", ...
    replacement: str | None = field(default=None, compare=False)  # what `--fix` writes at `key`, when it can
    location: JsonPath | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "severity": self.severity,
            "what": self.what,
            "fix": self.fix,
            "path": None if self.path is None else str(self.path),
            "key": self.key,
            "fixable": self.replacement is not None,
        }


@dataclass(frozen=True)
class Change:
    """One value `--fix` rewrote."""

    agent: str
    path: Path
    key: str
    old: str
    new: str
    backup: Path

    def describe(self) -> str:
        return f"{self.agent}: {self.path}: {self.key}: {self.old!r} -> {self.new!r} (backup: {self.backup.name})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "path": str(self.path),
            "key": self.key,
            "old": self.old,
            "new": self.new,
            "backup": str(self.backup),
        }


# --- JSON5 with positions ----------------------------------------------------------------------------------


class Json5Error(ValueError):
    pass


def parse_json5(text: str) -> tuple[Any, dict[JsonPath, tuple[int, int]]]:
    """The value of a JSON5 document, and where in `text` each value at each path is written."""
    return _Json5Reader(text).document()


class _Json5Reader:
    """JSON5 as OpenClaw reads its config: comments, trailing commas, unquoted keys, single quotes, hex, ±Infinity."""

    _NUMBER = re.compile(r"[+-]?(?:Infinity|NaN|0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)")
    _ESCAPES: ClassVar[dict[str, str]] = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "0": "\0"}

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 1 if text.startswith("\ufeff") else 0
        self.spans: dict[JsonPath, tuple[int, int]] = {}

    def document(self) -> tuple[Any, dict[JsonPath, tuple[int, int]]]:
        self._skip()
        value = self._value(())
        self._skip()
        if self.pos != len(self.text):
            self._fail("unexpected text after the end of the document")
        return value, self.spans

    def _fail(self, message: str) -> None:
        line = self.text.count("\n", 0, self.pos) + 1
        column = self.pos - (self.text.rfind("\n", 0, self.pos) + 1) + 1
        raise Json5Error(f"line {line}, column {column}: {message}")

    def _skip(self) -> None:
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char.isspace() or char == "\ufeff":
                self.pos += 1
            elif text.startswith("//", self.pos):
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end + 1
            elif text.startswith("/*", self.pos):
                end = text.find("*/", self.pos + 2)
                if end < 0:
                    self._fail("unterminated /* comment")
                self.pos = end + 2
            else:
                return

    def _value(self, path: JsonPath) -> Any:
        if self.pos >= len(self.text):
            self._fail("unexpected end of the document")
        start = self.pos
        char = self.text[start]
        value: Any
        if char == "{":
            value = self._object(path)
        elif char == "[":
            value = self._array(path)
        elif char in "\"'":
            value = self._string()
        elif (match := self._NUMBER.match(self.text, start)) is not None:
            value = self._number(match.group(0))
            self.pos = match.end()
        else:
            word = re.match(r"true|false|null", self.text[start:])
            if word is None:
                self._fail(f"unexpected character {char!r}")
            assert word is not None
            value = {"true": True, "false": False, "null": None}[word.group(0)]
            self.pos += len(word.group(0))
        self.spans[path] = (start, self.pos)
        return value

    def _object(self, path: JsonPath) -> dict[str, Any]:
        self.pos += 1
        result: dict[str, Any] = {}
        while True:
            self._skip()
            if self.text.startswith("}", self.pos):
                self.pos += 1
                return result
            if self.pos < len(self.text) and self.text[self.pos] in "\"'":
                key = self._string()
            else:
                match = re.compile(r"[A-Za-z_$][\w$]*").match(self.text, self.pos)
                if match is None:
                    self._fail("expected a key")
                assert match is not None
                key = match.group(0)
                self.pos = match.end()
            self._skip()
            if not self.text.startswith(":", self.pos):
                self._fail(f"expected ':' after the key {key!r}")
            self.pos += 1
            self._skip()
            result[key] = self._value((*path, key))
            self._skip()
            if self.text.startswith(",", self.pos):
                self.pos += 1
            elif not self.text.startswith("}", self.pos):
                self._fail("expected ',' or '}'")

    def _array(self, path: JsonPath) -> list[Any]:
        self.pos += 1
        result: list[Any] = []
        while True:
            self._skip()
            if self.text.startswith("]", self.pos):
                self.pos += 1
                return result
            result.append(self._value((*path, len(result))))
            self._skip()
            if self.text.startswith(",", self.pos):
                self.pos += 1
            elif not self.text.startswith("]", self.pos):
                self._fail("expected ',' or ']'")

    def _string(self) -> str:
        quote = self.text[self.pos]
        self.pos += 1
        out: list[str] = []
        text = self.text
        while True:
            if self.pos >= len(text):
                self._fail("unterminated string")
            char = text[self.pos]
            if char == quote:
                self.pos += 1
                return "".join(out)
            if char == "\n":
                self._fail("line break inside a string")
            if char != "\\":
                out.append(char)
                self.pos += 1
                continue
            escape = text[self.pos + 1 : self.pos + 2]
            self.pos += 2
            if escape == "u":
                out.append(chr(self._hex(4)))
            elif escape == "x":
                out.append(chr(self._hex(2)))
            elif escape in self._ESCAPES:
                out.append(self._ESCAPES[escape])
            elif escape == "\r" and text.startswith("\n", self.pos):
                self.pos += 1  # a line continuation
            elif escape not in ("\r", "\n", "\u2028", "\u2029"):
                out.append(escape)

    def _hex(self, digits: int) -> int:
        chunk = self.text[self.pos : self.pos + digits]
        if len(chunk) != digits or not all(c in "0123456789abcdefABCDEF" for c in chunk):
            self._fail("bad escape in a string")
        self.pos += digits
        code = int(chunk, 16)
        # A surrogate pair written as two \u escapes is one character.
        if 0xD800 <= code < 0xDC00 and self.text.startswith("\\u", self.pos):
            low = self.text[self.pos + 2 : self.pos + 6]
            if len(low) == 4 and 0xDC00 <= int(low, 16) < 0xE000:
                self.pos += 6
                code = 0x10000 + ((code - 0xD800) << 10) + (int(low, 16) - 0xDC00)
        return code

    @staticmethod
    def _number(word: str) -> int | float:
        sign = -1 if word.startswith("-") else 1
        body = word.lstrip("+-")
        if body == "Infinity":
            return sign * float("inf")
        if body == "NaN":
            return float("nan")
        if body[:2] in ("0x", "0X"):
            return sign * int(body, 16)
        if re.fullmatch(r"\d+", body):
            return sign * int(body)
        return sign * float(body)


def key_of(path: JsonPath) -> str:
    """("agents", "list", 0, "heartbeat", "to") -> "agents.list[0].heartbeat.to"."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z0-9_$-]+", part):
            text += f".{part}" if text else part
        else:
            text += f"[{json.dumps(part)}]"
    return text


def _get(data: Any, path: JsonPath) -> Any:
    for part in path:
        data = data[part]
    return data


def _walk(data: Any, path: JsonPath = ()) -> Iterator[tuple[JsonPath, Any]]:
    yield path, data
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _walk(value, (*path, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from _walk(value, (*path, index))


# --- what one agent runs ---------------------------------------------------------------------------------


@dataclass
class _Unit:
    """An agent's unit as systemd would assemble it: main file, drop-ins, and what they set."""

    files: list[Path] = field(default_factory=list)
    settings: list[UnitSetting] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)  # Environment= and EnvironmentFile= together
    env_files: list[tuple[str, Path | None, bool]] = field(default_factory=list)  # (as written, resolved, optional)
    exec_start: list[str] = field(default_factory=list)


@dataclass
class _Instance:
    agent: AgentConfig
    config_path: Path
    data: dict[str, Any]
    unit: _Unit

    def get(self, *path: str) -> Any:
        node: Any = self.data
        for part in path:
            if not isinstance(node, dict):
                return None
            node = node.get(part)
        return node


@dataclass(frozen=True)
class _Heartbeat:
    on: bool
    every: str
    every_key: str
    block: dict[str, Any]
    block_path: JsonPath


class Doctor:
    """Checks every agent of the cluster file against the files its gateway runs from."""

    def __init__(
        self,
        config: ClusterConfig,
        settings: Settings,
        instances_dir: Path,
        units_dir: Path | Sequence[Path],
        directory: GuildDirectory | None = None,
        *,
        workspaces_dir: Path | None = None,
        home: Path | None = None,
        user: str | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """`units_dir`: where the agents' unit files live (several: searched in order, like systemd's path)."""
        self.config = config
        self.settings = settings
        self.instances_dir = instances_dir
        self.units_dirs = [units_dir] if isinstance(units_dir, Path) else list(units_dir)
        self.workspaces_dir = workspaces_dir
        self.home = home or Path.home()
        self.user = user or getpass.getuser()
        self.normalizer = TargetNormalizer(config, directory)
        self.clock = clock or (lambda: datetime.now(UTC))
        self._secrets: set[str] = {s for s in settings.secret_values() if len(s) >= _MIN_REDACTED}

    # --- the report ------------------------------------------------------------------------------------

    def report(self) -> list[Finding]:
        findings: list[Finding] = [*self._check_our_tokens(), *self._check_template()]
        for agent in self.config.agents:
            findings += self._check_agent(agent)
        return [self._redacted(finding) for finding in findings]

    def _check_our_tokens(self) -> list[Finding]:
        missing = [a for a in self.config.agent_names if self.settings.hooks_token_for(a) is None]
        if not missing:
            return []
        return [
            Finding(
                FLEET,
                "error",
                f"atomizer-hq has no hooks token for {', '.join(missing)}: it cannot send them anything, and doctor "
                "cannot compare their hooks.token",
                f"set ATOMIZER_HOOKS_TOKEN (or ATOMIZER_HOOKS_TOKEN_{env_suffix(missing[0])} for one agent) in "
                "atomizer-hq's .env to the gateways' hooks token",
                key="ATOMIZER_HOOKS_TOKEN",
            )
        ]

    def _check_template(self) -> list[Finding]:
        """The unit file every agent shares: inline secrets there are every agent's problem, reported once."""
        template = self._template_name()
        if template is None:
            return []
        files = [f for f in [self._first_unit_file(template)] if f is not None] + self._dropins(template)
        findings: list[Finding] = []
        if not files and not any(self._first_unit_file(self._unit_name(a)) for a in self.config.agent_names):
            dirs = ", ".join(str(d) for d in self.units_dirs)
            findings.append(
                Finding(
                    FLEET,
                    "warning",
                    f"no {template} in {dirs}: doctor could not check the agents' units (inline secrets, "
                    "EnvironmentFile, --port)",
                    "pass --units-dir with the directory holding the agents' unit, or write it with "
                    "`atomizer-hq install-systemd --user`",
                )
            )
        for path in files:
            findings += self._secret_findings(FLEET, self._read_settings(path, FLEET, findings))
        return findings

    def _check_agent(self, agent: AgentConfig) -> list[Finding]:
        findings: list[Finding] = []
        unit = self._unit(agent.name, findings)
        path = self.instances_dir / agent.name / "openclaw.json"
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            findings.append(
                Finding(
                    agent.name,
                    "error",
                    f"no openclaw.json at {path}: no gateway config for this agent where doctor looked",
                    f"create the instance (OPENCLAW_STATE_DIR {path.parent}), or pass --instances-dir with the "
                    "directory holding <agent>/openclaw.json",
                    path,
                )
            )
            return findings
        except (OSError, UnicodeDecodeError) as exc:
            findings.append(
                Finding(agent.name, "error", f"cannot read {path}: {exc}", "make it a readable UTF-8 file", path)
            )
            return findings
        try:
            data, _ = parse_json5(text)
        except Json5Error as exc:
            findings.append(
                Finding(
                    agent.name,
                    "error",
                    f"{path} is not valid JSON5 ({exc}): the gateway cannot start with it",
                    "correct the file (`openclaw config validate` with the agent's OPENCLAW_CONFIG_PATH says more)",
                    path,
                )
            )
            return findings
        if not isinstance(data, dict):
            findings.append(
                Finding(agent.name, "error", f"{path} is not a JSON object", "restore the gateway's config", path)
            )
            return findings
        self._collect_secrets(data, unit)
        instance = _Instance(agent, path, data, unit)
        if any(location and location[-1] == "$include" for location, _ in _walk(data)):
            findings.append(
                Finding(
                    agent.name,
                    "warning",
                    "the config uses $include, which doctor does not follow: its checks may miss what is there",
                    "check the included files by hand for what doctor reports here, or inline them",
                    path,
                    "$include",
                )
            )
        heartbeat = self._heartbeat(instance)
        findings += self._check_hooks(instance)
        findings += self._check_discord_plugin(instance)
        findings += self._check_ports(instance)
        findings += self._check_heartbeat(instance, heartbeat)
        findings += self._check_targets(instance, heartbeat)
        findings += self._check_workspace(instance, heartbeat)
        return findings

    # --- hooks -----------------------------------------------------------------------------------------

    def _check_hooks(self, instance: _Instance) -> list[Finding]:
        agent, path = instance.agent.name, instance.config_path
        hooks = instance.get("hooks")
        env_file = self._env_file(instance)
        advice = self._token_advice(instance)
        if not isinstance(hooks, dict) or hooks.get("enabled") is not True:
            state = "hooks.enabled is false" if isinstance(hooks, dict) and "enabled" in hooks else "hooks are not on"
            return [
                Finding(
                    agent,
                    "error",
                    f"hooks are disabled ({state}): every delegation and heartbeat atomizer-hq sends gets 404",
                    f'in {path}, set hooks.enabled to true, hooks.path to "{instance.agent.hooks_path}" and '
                    f"hooks.token {advice}; then `atomizer-hq cluster restart {agent}`",
                    path,
                    "hooks.enabled",
                )
            ]
        findings: list[Finding] = []
        cap = hooks.get("maxBodyBytes")
        if isinstance(cap, int) and not isinstance(cap, bool) and cap < HOOK_BODY_LIMIT:
            findings.append(
                Finding(
                    agent,
                    "warning",
                    f"hooks.maxBodyBytes is {cap:,}, below the {HOOK_BODY_LIMIT:,} bytes atomizer-hq may send: a long "
                    "instruction is refused (413), and a 2026.2.x gateway drops the connection instead, leaving the "
                    "delegation unconfirmed",
                    f"remove hooks.maxBodyBytes from {path} (the default is {HOOK_BODY_LIMIT:,}), or raise it",
                    path,
                    "hooks.maxBodyBytes",
                )
            )
        their_path = hooks.get("path", "/hooks")
        if isinstance(their_path, str) and (their_path.rstrip("/") or "/") != instance.agent.hooks_path:
            findings.append(
                Finding(
                    agent,
                    "error",
                    f"hooks.path is {their_path!r}, {self.config.source} says {instance.agent.hooks_path!r}: "
                    "atomizer-hq posts to a path the gateway does not serve",
                    f'set hooks.path to "{instance.agent.hooks_path}" in {path}, or hooks_path = "{their_path}" for '
                    f"{agent} in {self.config.source}",
                    path,
                    "hooks.path",
                )
            )
        raw = hooks.get("token")
        ours = self.settings.hooks_token_for(agent)
        if not isinstance(raw, str) or not raw.strip():
            findings.append(
                Finding(
                    agent,
                    "error",
                    "hooks.token is not set: the gateway cannot accept atomizer-hq's hooks",
                    f"in {path}, set hooks.token {advice}; then `atomizer-hq cluster restart {agent}`",
                    path,
                    "hooks.token",
                )
            )
            return findings
        theirs, unknown = self._substitute(raw, instance.unit.environment)
        if theirs is None:
            sources = ", ".join(str(p) for _, p, _ in instance.unit.env_files if p) or "no EnvironmentFile found"
            severity: Severity = "error" if instance.unit.files else "warning"
            findings.append(
                Finding(
                    agent,
                    severity,
                    f"hooks.token comes from ${{{unknown}}}, which is set nowhere doctor can see ({sources}, the "
                    "unit's Environment=, the config's env): the gateway fails to load its config without it",
                    f"put {unknown}=<the hooks token> in {env_file or 'an EnvironmentFile the unit loads'} "
                    f"(chmod 600), then `atomizer-hq cluster restart {agent}`",
                    path,
                    "hooks.token",
                )
            )
            return findings
        if ours is not None and not hmac.compare_digest(theirs.encode(), ours.get_secret_value().encode()):
            reference = self._reference(raw)
            where = f"{reference} in {env_file}" if reference and env_file else f"hooks.token in {path}"
            findings.append(
                Finding(
                    agent,
                    "error",
                    f"the gateway's hooks token differs from atomizer-hq's {self._our_token_name(agent)}: every hook "
                    "is refused with 401, and 20 refusals a minute lock atomizer-hq out (429)",
                    f"make them equal: put atomizer-hq's token in {where} and `atomizer-hq cluster restart {agent}`, "
                    f"or set ATOMIZER_HOOKS_TOKEN_{env_suffix(agent)} in atomizer-hq's .env to the gateway's token",
                    path,
                    "hooks.token",
                )
            )
        return findings

    def _our_token_name(self, agent: str) -> str:
        specific = f"ATOMIZER_HOOKS_TOKEN_{env_suffix(agent)}"
        return specific if env_suffix(agent) in self.settings.hooks_token_overrides else "ATOMIZER_HOOKS_TOKEN"

    @staticmethod
    def _reference(raw: str) -> str | None:
        match = re.fullmatch(r"\$\{([A-Z_][A-Z0-9_]*)\}", raw.strip())
        return match.group(1) if match else None

    @staticmethod
    def _substitute(raw: str, environment: dict[str, str]) -> tuple[str | None, str | None]:
        """OpenClaw's `${VAR}` substitution; (None, VAR) when VAR is unset or empty, as the gateway would fail."""
        missing: list[str] = []

        def replace(match: re.Match[str]) -> str:
            if match.group(0).startswith("$$"):
                return match.group(0)[1:]
            value = environment.get(match.group(1), "")
            if not value:
                missing.append(match.group(1))
            return value

        value = re.sub(r"\$?\$\{([A-Z_][A-Z0-9_]*)\}", replace, raw)
        return (None, missing[0]) if missing else (value, None)

    # --- the Discord channel plugin ----------------------------------------------------------------------

    def _check_discord_plugin(self, instance: _Instance) -> list[Finding]:
        agent, path = instance.agent.name, instance.config_path
        plugins = instance.get("plugins")
        plugins = plugins if isinstance(plugins, dict) else {}
        entry = plugins.get("entries", {}).get("discord") if isinstance(plugins.get("entries"), dict) else None
        problem, key = None, "plugins.entries.discord.enabled"
        if plugins.get("enabled") is False:
            problem, key = "plugins.enabled is false: no channel plugin loads", "plugins.enabled"
        elif isinstance(plugins.get("deny"), list) and "discord" in plugins["deny"]:
            problem, key = "plugins.deny lists discord", "plugins.deny"
        elif isinstance(plugins.get("allow"), list) and plugins["allow"] and "discord" not in plugins["allow"]:
            problem, key = "plugins.allow leaves discord out", "plugins.allow"
        elif not isinstance(entry, dict):
            problem = "the Discord channel plugin is not enabled (no plugins.entries.discord)"
        elif entry.get("enabled") is not True:
            problem = "the Discord channel plugin is not enabled (plugins.entries.discord.enabled is not true)"
        findings: list[Finding] = []
        if problem is not None:
            findings.append(
                Finding(
                    agent,
                    "error",
                    f'{problem}: every hook atomizer-hq delivers (channel "discord") is refused with 400 "channel must '
                    'be last", so delegations with delivery and heartbeats fail',
                    f"2026.2.x: set plugins.entries.discord.enabled to true in {path}; 2026.9.x: run `openclaw plugins "
                    "install npm:@openclaw/discord@<the gateway's version>` with the agent's OPENCLAW_STATE_DIR and "
                    f"OPENCLAW_CONFIG_PATH (it enables it too); then `atomizer-hq cluster restart {agent}`",
                    path,
                    key,
                )
            )
        discord = instance.get("channels", "discord")
        if isinstance(discord, dict) and discord.get("enabled") is False:
            findings.append(
                Finding(
                    agent,
                    "error",
                    "channels.discord.enabled is false: the agent accepts hooks but cannot post their answers",
                    f"set channels.discord.enabled to true in {path}, then restart the agent",
                    path,
                    "channels.discord.enabled",
                )
            )
        elif discord is None:
            findings.append(
                Finding(
                    agent,
                    "warning",
                    "no channels.discord: the agent has no Discord account to post answers and heartbeats with",
                    f"configure channels.discord in {path}, with the agent's own Discord bot token",
                    path,
                    "channels.discord",
                )
            )
        return findings

    # --- ports -----------------------------------------------------------------------------------------

    def _check_ports(self, instance: _Instance) -> list[Finding]:
        agent, path = instance.agent, instance.config_path
        findings: list[Finding] = []
        port, source, key = self._gateway_port(instance)
        owners = self._port_owners()
        if port is None:
            findings.append(
                Finding(
                    agent.name,
                    "error",
                    f"{source} is not a port number",
                    f"set gateway.port to {agent.port} in {path}",
                    path,
                    key,
                )
            )
        elif port != agent.port:
            other = owners.get(port)
            clash = f"; {port} is {other[0]}'s {other[1]}" if other and other[0] != agent.name else ""
            where = str(path) if key == "gateway.port" else "the unit or its EnvironmentFile"
            findings.append(
                Finding(
                    agent.name,
                    "error",
                    f"the gateway listens on {port} ({source}), {self.config.source} says {agent.port}: atomizer-hq "
                    f"probes and sends hooks to a port this gateway does not listen on{clash}",
                    f"set {key} to {agent.port} in {where} and `atomizer-hq cluster restart {agent.name}`, or set "
                    f"port = {port} for {agent.name} in {self.config.source} (then `atomizer-hq check-config`)",
                    path if key == "gateway.port" else None,
                    key,
                )
            )
        reserved = set(self.config.ports_of(agent))
        for side_key, side_port in self._side_ports(instance):
            owner = owners.get(side_port)
            if owner is not None and owner[0] != agent.name:
                findings.append(
                    Finding(
                        agent.name,
                        "error",
                        f"{side_key} is {side_port}, which {self.config.source} gives to {owner[0]} ({owner[1]}): "
                        "whichever starts second cannot open it",
                        f"remove {side_key} from {path} so the gateway derives it from its own port, or move it out "
                        "of the other agents' ports",
                        path,
                        side_key,
                    )
                )
            elif side_port not in reserved:
                offsets = ", ".join(f"+{o}" for o in self.config.side_ports)
                findings.append(
                    Finding(
                        agent.name,
                        "warning",
                        f"{side_key} is {side_port}, outside the ports {self.config.source} reserves for {agent.name} "
                        f"({agent.port} and {offsets}): check-config cannot see what else might use it",
                        f"remove {side_key} from {path}, or add {side_port - agent.port} to side_ports in "
                        f"{self.config.source}",
                        path,
                        side_key,
                    )
                )
        return findings

    def _gateway_port(self, instance: _Instance) -> tuple[int | None, str, str]:
        """(port, where it comes from, the key to change): --port > OPENCLAW_GATEWAY_PORT > gateway.port > 18789."""
        words = instance.unit.exec_start
        for index, word in enumerate(words):
            option, sep, value = word.partition("=")
            if option == "--port":
                value = value if sep else (words[index + 1] if index + 1 < len(words) else "")
                return _port(value), "--port in the unit's ExecStart", "--port"
        if "OPENCLAW_GATEWAY_PORT" in instance.unit.environment:
            value = instance.unit.environment["OPENCLAW_GATEWAY_PORT"]
            return _port(value), "OPENCLAW_GATEWAY_PORT in the unit's environment", "OPENCLAW_GATEWAY_PORT"
        configured = instance.get("gateway", "port")
        if configured is None:
            return DEFAULT_GATEWAY_PORT, "OpenClaw's default: gateway.port is not set", "gateway.port"
        return _port(configured), "gateway.port", "gateway.port"

    def _side_ports(self, instance: _Instance) -> list[tuple[str, int]]:
        """Ports the config pins besides the gateway's own (canvas host, browser control, browser profiles' CDP)."""
        found: list[tuple[str, int]] = []
        candidates: list[tuple[JsonPath, Any]] = [
            (("canvasHost", "port"), instance.get("canvasHost", "port")),
            (("browser", "controlPort"), instance.get("browser", "controlPort")),
        ]
        profiles = instance.get("browser", "profiles")
        if isinstance(profiles, dict):
            for name, profile in profiles.items():
                if isinstance(profile, dict):
                    candidates.append((("browser", "profiles", name, "cdpPort"), profile.get("cdpPort")))
        for location, value in candidates:
            port = _port(value) if value is not None else None
            if port is not None:
                found.append((key_of(location), port))
        return found

    def _port_owners(self) -> dict[int, tuple[str, str]]:
        owners: dict[int, tuple[str, str]] = {self.config.api.port: ("atomizer-hq", "loopback API port")}
        for agent in self.config.agents:
            for port, role in self.config.ports_of(agent).items():
                owners.setdefault(port, (agent.name, role))
        return owners

    # --- heartbeats ------------------------------------------------------------------------------------

    def _heartbeat(self, instance: _Instance) -> _Heartbeat:
        """The agent's own heartbeat: agents.defaults.heartbeat, with the agent's block (list or entries) on top."""
        agents = instance.get("agents")
        agents = agents if isinstance(agents, dict) else {}
        defaults = agents.get("defaults") if isinstance(agents.get("defaults"), dict) else {}
        base = defaults.get("heartbeat") if isinstance(defaults.get("heartbeat"), dict) else {}
        blocks: list[tuple[JsonPath, dict[str, Any], bool]] = []  # (path, agent entry, is default)
        if isinstance(agents.get("list"), list):
            for index, entry in enumerate(agents["list"]):
                if isinstance(entry, dict):
                    blocks.append((("agents", "list", index), entry, entry.get("default") is True))
        if isinstance(agents.get("entries"), dict):
            for name, entry in agents["entries"].items():
                if isinstance(entry, dict):
                    blocks.append((("agents", "entries", name), entry, entry.get("default") is True))
        main = next((b for b in blocks if b[2]), blocks[0] if blocks else None)
        any_block = any(isinstance(entry.get("heartbeat"), dict) for _, entry, _ in blocks)
        if main is not None and isinstance(main[1].get("heartbeat"), dict):
            own = main[1]["heartbeat"]
            merged = {**base, **own}
            block_path: JsonPath = (*main[0], "heartbeat")
            every_key = key_of((*block_path, "every")) if "every" in own else "agents.defaults.heartbeat.every"
        elif any_block:
            # OpenClaw: once any agent has its own heartbeat block, only those agents run heartbeats.
            entry_key = key_of((*main[0], "heartbeat")) if main else "agents.list[].heartbeat"
            return _Heartbeat(False, "0m", entry_key, {}, ("agents", "defaults", "heartbeat"))
        else:
            merged, block_path, every_key = base, ("agents", "defaults", "heartbeat"), "agents.defaults.heartbeat.every"
        every = merged.get("every", DEFAULT_HEARTBEAT_EVERY)
        return _Heartbeat(not _is_zero(every), str(every), every_key, merged, block_path)

    def _check_heartbeat(self, instance: _Instance, heartbeat: _Heartbeat) -> list[Finding]:
        agent, path = instance.agent, instance.config_path
        job = self.config.heartbeat.get(agent.name)
        covered = job is not None and job.enabled and job.sends
        findings: list[Finding] = []
        if not heartbeat.on and not covered:
            expects = (
                f"; {self.config.source} expects one every {job.expect_every / 60:g} min and will raise an alarm"
                if job is not None and job.expect_every is not None
                else ""
            )
            own = " and set own_heartbeat = false for it" if agent.own_heartbeat else ""
            findings.append(
                Finding(
                    agent.name,
                    "error",
                    f"heartbeats are off ({heartbeat.every_key} = {heartbeat.every!r}) and atomizer-hq sends none for "
                    f"{agent.name}: nobody checks on it{expects}",
                    f'add [heartbeat.{agent.name}] every = "30m" to {self.config.source}{own} (atomizer-hq then '
                    "sends it with an explicit channel and target), or switch its own back on "
                    f'({heartbeat.every_key} = "30m") '
                    "once its heartbeat `to` is a user:<id> or channel:<id> target",
                    path,
                    heartbeat.every_key,
                )
            )
        elif heartbeat.on and covered:
            findings.append(
                Finding(
                    agent.name,
                    "warning",
                    f"the gateway runs its own heartbeat ({heartbeat.every_key} = {heartbeat.every!r}) and atomizer-hq "
                    f"sends one too ([heartbeat.{agent.name}]): two heartbeats, twice the model calls",
                    f'set {heartbeat.every_key} to "0m" in {path}, or remove [heartbeat.{agent.name}] from '
                    f"{self.config.source} and set own_heartbeat = true",
                    path,
                    heartbeat.every_key,
                )
            )
        elif heartbeat.on != agent.own_heartbeat:
            findings.append(
                Finding(
                    agent.name,
                    "warning",
                    f"{self.config.source} says own_heartbeat = {str(agent.own_heartbeat).lower()}, but the gateway's "
                    f"heartbeat is {'on' if heartbeat.on else 'off'} ({heartbeat.every_key} = {heartbeat.every!r})",
                    f"set own_heartbeat = {str(heartbeat.on).lower()} for {agent.name} in {self.config.source}",
                    path,
                    heartbeat.every_key,
                )
            )
        target = heartbeat.block.get("target")
        if heartbeat.on and isinstance(target, str) and target.strip().lower() == "discord":
            if heartbeat.block.get("to") in (None, ""):
                findings.append(
                    Finding(
                        agent.name,
                        "error",
                        'the heartbeat goes to target "discord" without a `to`: Discord answers "Discord recipient is '
                        'required", so no heartbeat is ever posted',
                        f'set {key_of((*heartbeat.block_path, "to"))} to "channel:<id>" (or "user:<id>") in {path}',
                        path,
                        key_of((*heartbeat.block_path, "to")),
                    )
                )
        return findings

    # --- delivery targets ------------------------------------------------------------------------------

    def _check_targets(self, instance: _Instance, heartbeat: _Heartbeat) -> list[Finding]:
        agent, path = instance.agent.name, instance.config_path
        findings: list[Finding] = []
        for location, node in _walk(instance.data):
            if not isinstance(node, dict) or "to" not in node:
                continue
            route = node.get("target", node.get("channel"))
            if isinstance(route, str) and route.strip().lower() not in _DISCORD_ROUTES:
                continue  # another channel's recipient (a Telegram chat id is a number), or "none"
            value = node["to"]
            bare = (isinstance(value, int) and not isinstance(value, bool)) or (
                isinstance(value, str) and value.strip().isascii() and value.strip().isdigit()
            )
            if not bare:
                continue
            text = str(value).strip()
            to_path: JsonPath = (*location, "to")
            key = key_of(to_path)
            in_heartbeat = "heartbeat" in location
            dormant = in_heartbeat and not heartbeat.on
            kind = "heartbeat target" if in_heartbeat else "delivery target"
            what = (
                f"{kind} {text} at {key} is a bare id: 2026.2.x refuses it as an ambiguous recipient, 2026.9.x "
                "takes it for a channel and loses DMs"
            )
            if dormant:
                what += " (the heartbeat is off now; this breaks it the day it is switched back on)"
            try:
                resolved = self.normalizer.normalize(text)
            except InvalidTarget as exc:
                fix = (
                    f'needs resolving: {exc}. Write "channel:{text}" or "user:{text}" at {key} in {path} by hand; '
                    "doctor resolves ids through the guild when the bot is connected, and through the channels "
                    f"and agent accounts in {self.config.source} otherwise"
                )
                findings.append(Finding(agent, "warning" if dormant else "error", what, fix, path, key, None, to_path))
                continue
            label = f" ({resolved.display})" if resolved.display else ""
            fix = (
                f'write "{resolved}"{label} at {key} in {path}: `atomizer-hq doctor --fix` does it (with a backup); '
                f"then `atomizer-hq cluster restart {agent}`"
            )
            findings.append(
                Finding(agent, "warning" if dormant else "error", what, fix, path, key, str(resolved), to_path)
            )
        return findings

    # --- workspace -------------------------------------------------------------------------------------

    def _check_workspace(self, instance: _Instance, heartbeat: _Heartbeat) -> list[Finding]:
        agent = instance.agent.name
        written = instance.get("agents", "defaults", "workspace")
        if self.workspaces_dir is not None:
            workspace = self.workspaces_dir / agent
        elif isinstance(written, str) and written.strip():
            workspace = _expand_home(written.strip(), self.home)
        else:
            workspace = self.home / "atomizer" / "workspaces" / agent
        if not workspace.is_dir():
            return [
                Finding(
                    agent,
                    "warning",
                    f"the workspace {workspace} is missing: the agent starts without its SOUL.md, AGENTS.md, "
                    "MEMORY.md and HEARTBEAT.md",
                    "restore it, or point agents.defaults.workspace at it (pass --workspaces-dir if doctor looked in "
                    "the wrong place)",
                    instance.config_path,
                    "agents.defaults.workspace",
                )
            ]
        checklist = workspace / "HEARTBEAT.md"
        if heartbeat.on and checklist.is_file():
            lines = checklist.read_text(encoding="utf-8", errors="replace").splitlines()
            if all(not line.strip() or line.lstrip().startswith("#") for line in lines):
                return [
                    Finding(
                        agent,
                        "warning",
                        f"{checklist} holds only headings: OpenClaw 2026.2.x then skips every heartbeat run, so the "
                        "agent's own heartbeat never reports",
                        f"write the agent's heartbeat checklist into {checklist}, or remove the file",
                        checklist,
                    )
                ]
        return []

    # --- units -----------------------------------------------------------------------------------------

    def _unit_name(self, agent: str) -> str:
        return self.config.systemd.unit_for(agent)

    def _template_name(self) -> str | None:
        unit = self._unit_name("x")
        prefix, at, rest = unit.partition("@")
        return f"{prefix}@{rest.partition('.')[1]}{rest.partition('.')[2]}" if at else None

    def _first_unit_file(self, name: str) -> Path | None:
        return next((d / name for d in self.units_dirs if (d / name).is_file()), None)

    def _dropins(self, name: str) -> list[Path]:
        files = [f for d in self.units_dirs if (d / f"{name}.d").is_dir() for f in (d / f"{name}.d").glob("*.conf")]
        return sorted(files, key=lambda f: f.name)

    def _read_settings(self, path: Path, agent: str, findings: list[Finding]) -> list[UnitSetting]:
        try:
            return read_unit(path)
        except OSError as exc:
            findings.append(Finding(agent, "warning", f"cannot read {path}: {exc}", "make it readable", path))
            return []

    def _unit(self, agent: str, findings: list[Finding]) -> _Unit:
        """The agent's unit as systemd assembles it; inline secrets of its own files (not the template's) reported."""
        unit = _Unit()
        name = self._unit_name(agent)
        template = self._template_name()
        main = self._first_unit_file(name) or (self._first_unit_file(template) if template else None)
        dropins = sorted([*(self._dropins(template) if template else []), *self._dropins(name)], key=lambda f: f.name)
        for path in [p for p in [main] if p is not None] + dropins:
            settings = self._read_settings(path, agent, findings)
            unit.files.append(path)
            unit.settings += settings
            if template is None or not (path.name == template or path.parent.name == f"{template}.d"):
                findings += self._secret_findings(agent, settings)
        environment: dict[str, str] = {}
        for setting in unit.settings:
            if setting.section != "Service":
                continue
            if setting.key == "Environment":
                if not setting.value:
                    environment.clear()
                for var, value in environment_assignments(setting.value):
                    expanded = expand_specifiers(value, instance=agent, home=self.home, user=self.user)
                    if expanded is not None:
                        environment[var] = expanded
            elif setting.key == "EnvironmentFile":
                if not setting.value:
                    unit.env_files.clear()
                    continue
                optional = setting.value.startswith("-")
                written = setting.value.lstrip("-")
                expanded = expand_specifiers(written, instance=agent, home=self.home, user=self.user)
                unit.env_files.append((written, Path(expanded) if expanded else None, optional))
            elif setting.key == "ExecStart":
                unit.exec_start = exec_words(setting.value) if setting.value else []
        # Variables from EnvironmentFile= win over Environment= (systemd.exec).
        for written, path, optional in unit.env_files:
            findings += self._check_env_file(agent, written, path, optional)
            if path is not None and path.is_file():
                try:
                    values = read_env_file(path)
                except OSError:
                    continue
                environment.update(values)
                self._secrets.update(v for k, v in values.items() if SECRET_NAME.search(k) and len(v) >= _MIN_REDACTED)
        unit.environment = environment
        return unit

    def _check_env_file(self, agent: str, written: str, path: Path | None, optional: bool) -> list[Finding]:
        if path is None:
            return []
        if not path.exists():
            if optional:
                return []
            return [
                Finding(
                    agent,
                    "error",
                    f"the unit's EnvironmentFile {path} does not exist: systemd refuses to start the agent",
                    "create it (chmod 600) with the gateway's secrets, e.g. OPENCLAW_GATEWAY_TOKEN=...; "
                    "`atomizer-hq install-systemd` creates it and moves inline secrets into it",
                    path,
                    "EnvironmentFile",
                )
            ]
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            return [
                Finding(
                    agent,
                    "warning",
                    f"{path} holds the gateway's secrets and is readable by other users (mode {mode:o})",
                    f"chmod 600 {path}",
                    path,
                    "EnvironmentFile",
                )
            ]
        return []

    def _secret_findings(self, agent: str, settings: list[UnitSetting]) -> list[Finding]:
        findings = []
        for secret in inline_secrets(settings):
            self._secrets.add(secret.value)
            findings.append(
                Finding(
                    agent,
                    "error",
                    f"{secret.describe()}: anyone who can read the unit or run `systemctl show` sees it",
                    self._secret_fix(secret),
                    secret.path,
                    f"{secret.directive}:{secret.name}",
                )
            )
        return findings

    @staticmethod
    def _secret_fix(secret: InlineSecret) -> str:
        target = f"%h/atomizer/instances/%i/{GATEWAY_ENV}"
        move = (
            f"move {secret.name} into {target} ({secret.name}=<value>, chmod 600) and delete it from line {secret.line}"
            if secret.directive == "Environment"
            else f"remove {secret.name} from {secret.directive}= (line {secret.line}) and put "
            f"{secret.env_name or 'the matching variable'}=<value> into {target} (chmod 600)"
        )
        return (
            f"{move}; add EnvironmentFile={target} to the unit; `systemctl --user daemon-reload` and "
            "`atomizer-hq cluster restart all`; then rotate the secret, since it was readable. "
            "`atomizer-hq install-systemd --user` writes such a unit and moves the secret for you"
        )

    @staticmethod
    def _env_file(instance: _Instance) -> Path | None:
        """The EnvironmentFile the agent's unit loads (the last one), if any."""
        resolved = [path for _, path, _ in instance.unit.env_files if path is not None]
        return resolved[-1] if resolved else None

    def _token_advice(self, instance: _Instance) -> str:
        """How to give the gateway atomizer-hq's hooks token: through its EnvironmentFile when the unit loads one."""
        ours = f"atomizer-hq's {self._our_token_name(instance.agent.name)}"
        env_file = self._env_file(instance)
        if env_file is not None:
            return f'to "${{OPENCLAW_HOOKS_TOKEN}}", with OPENCLAW_HOOKS_TOKEN in {env_file} set to the value of {ours}'
        return (
            f"to the value of {ours} (once the unit loads a {GATEWAY_ENV}, keep the token there as "
            'OPENCLAW_HOOKS_TOKEN and write "${OPENCLAW_HOOKS_TOKEN}" here)'
        )

    # --- secrets never shown ---------------------------------------------------------------------------

    def _collect_secrets(self, data: Any, unit: _Unit) -> None:
        for location, value in _walk(data):
            if (
                isinstance(value, str)
                and location
                and isinstance(location[-1], str)
                and SECRET_NAME.search(location[-1])
                and len(value) >= _MIN_REDACTED
                and not self._reference(value)
            ):
                self._secrets.add(value)
        for setting in unit.settings:
            if setting.key == "Environment":
                for name, value in environment_assignments(setting.value):
                    if SECRET_NAME.search(name) and len(value) >= _MIN_REDACTED:
                        self._secrets.add(value)

    def redact(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, "<redacted>")
        return text

    def _redacted(self, finding: Finding) -> Finding:
        what, fix = self.redact(finding.what), self.redact(finding.fix)
        if what == finding.what and fix == finding.fix:
            return finding
        return Finding(
            finding.agent,
            finding.severity,
            what,
            fix,
            finding.path,
            finding.key,
            finding.replacement,
            finding.location,
        )

    # --- --fix -----------------------------------------------------------------------------------------

    def fix(self) -> list[Change]:
        """Rewrite the bare targets that resolved, file by file, each after a backup beside it."""
        by_file: dict[Path, list[Finding]] = {}
        for finding in self.report():
            if finding.replacement is not None and finding.location is not None and finding.path is not None:
                by_file.setdefault(finding.path, []).append(finding)
        changes: list[Change] = []
        stamp = self.clock().strftime("%Y%m%dT%H%M%SZ")
        for path, findings in by_file.items():
            changes += self._fix_file(path, findings, stamp)
        return changes

    def _fix_file(self, path: Path, findings: list[Finding], stamp: str) -> list[Change]:
        real = path.resolve()
        text = real.read_text(encoding="utf-8")
        data, spans = parse_json5(text)
        expected = copy.deepcopy(data)
        edits: list[tuple[int, int, str]] = []
        changes: list[tuple[Finding, str]] = []
        for finding in findings:
            assert finding.location is not None and finding.replacement is not None
            span = spans.get(finding.location)
            try:
                current = _get(data, finding.location)
            except (KeyError, IndexError, TypeError):
                continue  # the file changed since the report
            resolved_id = finding.replacement.partition(":")[2]
            if span is None or str(current).strip() != resolved_id:
                continue
            edits.append((*span, json.dumps(finding.replacement)))
            parent = _get(expected, finding.location[:-1])
            parent[finding.location[-1]] = finding.replacement
            changes.append((finding, str(current)))
        if not edits:
            return []
        new_text = text
        for start, end, replacement in sorted(edits, reverse=True):
            new_text = new_text[:start] + replacement + new_text[end:]
        rewritten, _ = parse_json5(new_text)
        # Never write a file that reads back as anything but the intended change (compared as JSON: NaN == NaN).
        if json.dumps(rewritten) != json.dumps(expected):
            raise AtomizerError(f"{path}: the rewritten config would not read back as intended; nothing written")
        backup = free_name(real.with_name(f"{real.name}.bak-{stamp}"))
        shutil.copy2(real, backup)
        atomic_write(real, new_text, stat.S_IMODE(real.stat().st_mode))
        return [
            Change(finding.agent, path, finding.key or "", old, finding.replacement or "", backup)
            for finding, old in changes
        ]


def _port(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    else:
        return None
    return number if 1 <= number <= 65535 else None


def _is_zero(every: Any) -> bool:
    """`0m`, `0`, `0h`, 0: OpenClaw's way of switching the heartbeat off."""
    if isinstance(every, bool):
        return False
    if isinstance(every, (int, float)):
        return every == 0
    return isinstance(every, str) and re.fullmatch(r"\s*0+(\.0*)?\s*[a-zA-Z]*\s*", every) is not None


def _expand_home(text: str, home: Path) -> Path:
    if text == "~" or text.startswith("~/"):
        return home / text[2:]
    return Path(text)


# --- the command -----------------------------------------------------------------------------------------


def print_report(
    findings: Sequence[Finding], changes: Sequence[Change], agents: Sequence[str], out: TextIO, *, as_json: bool
) -> None:
    errors = sum(f.severity == "error" for f in findings)
    if as_json:
        document = {
            "ok": errors == 0,
            "errors": errors,
            "warnings": len(findings) - errors,
            "findings": [f.to_dict() for f in findings],
            "changes": [c.to_dict() for c in changes],
        }
        print(json.dumps(document, indent=2), file=out)
        return
    for change in changes:
        print(f"fixed {change.describe()}", file=out)
    order = {name: index for index, name in enumerate([FLEET, *agents])}
    by_agent: dict[str, list[Finding]] = {}
    for finding in sorted(findings, key=lambda f: (order.get(f.agent, len(order)), f.severity != "error")):
        by_agent.setdefault(finding.agent, []).append(finding)
    for agent, items in by_agent.items():
        print(f"{'every agent' if agent == FLEET else agent}:", file=out)
        for finding in items:
            print(f"  {finding.severity.upper()}: {finding.what}", file=out)
            print(f"    fix: {finding.fix}", file=out)
    clean = [a for a in agents if a not in by_agent]
    if clean:
        print(f"ok: {', '.join(clean)}", file=out)
    print(
        f"{errors} error(s), {len(findings) - errors} warning(s); {len(clean)} of {len(agents)} agents clean", file=out
    )


async def cli_doctor(args: argparse.Namespace, settings: Settings, config: ClusterConfig) -> int:
    """`atomizer-hq doctor [--fix] [--json]`: 0 when nothing will break, 1 when something will (or --fix failed)."""
    home = Path.home()
    doctor = Doctor(
        config,
        settings,
        instances_dir=args.instances_dir or home / "atomizer" / "instances",
        units_dir=args.units_dir or [home / ".config" / "systemd" / "user", Path("/etc/systemd/user")],
        directory=StaticDirectory.from_config(config),
        workspaces_dir=args.workspaces_dir,
    )
    changes = doctor.fix() if args.fix else []
    findings = doctor.report()
    print_report(findings, changes, config.agent_names, sys.stdout, as_json=args.json)
    if args.fix and not changes and not args.json:
        print("--fix: nothing to rewrite (it rewrites only bare targets it can resolve)", file=sys.stderr)
    return 1 if any(f.severity == "error" for f in findings) else 0
