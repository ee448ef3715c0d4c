"""The fleet's configuration: `config/cluster.toml`, validated by pydantic models.

Loading never stops at the first problem: every problem becomes one line of the form
`file: key: what is wrong; what would be valid`, so `atomizer-hq check-config` can list them all.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from bot.errors import ConfigError, UnknownAgent

SNOWFLAKE_RE = re.compile(r"^[0-9]{17,20}$")
AGENT_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
CHANNEL_ROLES = ("technical", "task_board", "daily_standup", "it_ops", "agent_logs")
ACCESS_LEVELS = ("viewer", "operator", "admin")
HOOK_BODY_LIMIT = 262_144  # bytes; the gateway's own cap (openclaw-hooks.md)


def check_snowflake(value: Any) -> str:
    """Discord ids are 17-20 digit numbers; accept them as TOML strings or integers."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise PydanticCustomError("snowflake", "expected a Discord id (17 to 20 digits, as a string)")
    text = str(value).strip()
    if not (text.isascii() and text.isdigit()):
        raise PydanticCustomError(
            "snowflake", "{value} is not numeric; a Discord id is 17 to 20 digits", {"value": repr(text)}
        )
    if not SNOWFLAKE_RE.fullmatch(text):
        raise PydanticCustomError(
            "snowflake",
            "{value} has {n} digits; a Discord id has 17 to 20",
            {"value": repr(text), "n": len(text)},
        )
    return text


Snowflake = Annotated[str, BeforeValidator(check_snowflake)]


class _Strict(BaseModel):
    # strict: TOML has types, so `own_heartbeat = "no"` or `port = "18800"` is a mistake to name, not to guess at
    # (lax pydantic reads "no" as false and "yes" as true).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class AgentConfig(_Strict):
    """One OpenClaw gateway of the fleet."""

    name: str
    port: int = Field(ge=1, le=65535)
    host: str = "127.0.0.1"
    model: str = ""
    own_heartbeat: bool = True
    discord_user_id: Snowflake | None = None
    delegates_to: list[str] = Field(default_factory=list)
    hooks_path: str = "/hooks"
    capabilities: list[str] = Field(default_factory=list)  # what routing matches `--needs` against (routing.md)
    max_in_flight: int | None = Field(default=None, ge=1)  # routing's cap; unset: learned from 503 admission timeouts

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not AGENT_NAME_RE.fullmatch(value) or value in ("all", "auto"):
            raise PydanticCustomError(
                "agent_name",
                "{value} is not a valid agent name; use lowercase letters, digits and '-', "
                "starting with a letter (e.g. 'nx-expert'); 'all' and 'auto' are reserved",
                {"value": repr(value)},
            )
        return value

    @field_validator("capabilities", mode="before")
    @classmethod
    def _capabilities(cls, value: Any) -> Any:
        # What a person writes ("Materials data") is normalized the way `--needs` is; a malformed one is named.
        from bot.routing.capabilities import normalize, problem

        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            return value  # pydantic names the wrong type
        words: list[str] = []
        for item in value:
            word = normalize(item)
            why = problem(word)
            if why is not None:
                raise PydanticCustomError("capability", "{message}", {"message": why})
            if word not in words:
                words.append(word)
        return words

    @field_validator("delegates_to", mode="before")
    @classmethod
    def _delegates(cls, value: Any) -> Any:
        # `delegates_to = "*"` is shorthand for ["*"].
        return [value] if isinstance(value, str) else value

    @field_validator("hooks_path")
    @classmethod
    def _hooks_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise PydanticCustomError("hooks_path", "must start with '/', e.g. '/hooks'")
        return value.rstrip("/") or "/"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


class ApiConfig(_Strict):
    """The loopback HTTP API the agents call."""

    host: str = "127.0.0.1"
    port: int = Field(default=18790, ge=1, le=65535)
    max_body_bytes: int = Field(default=HOOK_BODY_LIMIT + 16_384, ge=1024)


class GatewayConfig(_Strict):
    """How we talk to gateways: timeouts in seconds."""

    connect_timeout: float = Field(default=2.0, gt=0)
    read_timeout: float = Field(default=20.0, gt=0)
    probe_timeout: float = Field(default=2.0, gt=0)


UNIT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:_.@-]*$")


class MonitorConfig(_Strict):
    """The status monitor: how often it probes, when it alerts, and where."""

    interval_s: float = Field(default=30.0, ge=5)
    down_after: int = Field(default=2, ge=1)  # consecutive failed probes before "down" is announced
    flap_window_s: float = Field(default=600.0, ge=60)
    flap_threshold: int = Field(default=3, ge=2)  # confirmed changes within a window that mean "flapping"
    reminder_every_s: float | None = Field(default=None, ge=300)  # "still down" reminders; unset = none
    alerts_channel: str = "it_ops"  # a channel role from [channels]
    board_channel: str = "it_ops"


class TaskBoardConfig(_Strict):
    """The task board: where its live board lives, how often it may be edited, the agents' shared log."""

    board_channel: str = "task_board"  # a channel role from [channels]; agents post their updates there too
    min_edit_interval_s: float = Field(default=2.0, ge=1.0)  # coalescing: at most one edit per message per interval
    project_log: str | None = None  # append each task event to this file (the agents' shared project_log.md)

    @field_validator("project_log")
    @classmethod
    def _project_log(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise PydanticCustomError("project_log", "empty path; leave project_log out to disable it")
        return value


class DelegationConfig(_Strict):
    """`[delegation]`: the caps on chains of sub-delegations (docs/delegation-chains.md), against runaway agents."""

    max_depth: int = Field(default=3, ge=1, le=20)  # a person's delegation, its child, its grandchild
    max_per_root: int = Field(default=20, ge=1, le=1000)  # every delegation of one tree, the root included


class WorkflowsConfig(_Strict):
    """Where workflow definitions live (docs/workflows.md)."""

    dir: str = "workflows"  # every *.yaml / *.yml in it; relative to the working directory, like project_log
    # 2026.2.12 gateways report no completion: a step answered in Discord is done this long after the agent's
    # last message there (docs/workflows.md, "In Discord").
    output_quiet_s: float = Field(default=20.0, gt=0, le=3600)

    @field_validator("dir")
    @classmethod
    def _dir(cls, value: str) -> str:
        if not value.strip():
            raise PydanticCustomError("workflows_dir", 'empty path; write e.g. dir = "workflows"')
        return value

    @property
    def path(self) -> Path:
        return Path(self.dir).expanduser()


DEFAULT_HEARTBEAT_PROMPT = (
    "Heartbeat from atomizer-hq: check HEARTBEAT.md, your inbox and your open tasks. Report anything that "
    "needs attention; if nothing does, reply HEARTBEAT_OK."
)


def _duration(value: Any) -> float:
    """Durations in config are text like "30m"; reuse the one parser every front end uses."""
    from bot.clock import parse_duration
    from bot.errors import InvalidInput

    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    try:
        return parse_duration(str(value))
    except InvalidInput as exc:
        raise PydanticCustomError("duration", "{message}", {"message": str(exc)}) from None


Duration = Annotated[float, BeforeValidator(_duration)]
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def _timezone(value: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise PydanticCustomError(
            "timezone",
            "{value} is not a time zone; use an IANA name such as 'Europe/Paris' or 'UTC'",
            {"value": repr(value)},
        ) from None
    return value


def _hhmm(value: str) -> str:
    if not _HHMM.match(value):
        raise PydanticCustomError(
            "hhmm", "{value} is not a time of day; write HH:MM, e.g. '08:30'", {"value": repr(value)}
        )
    return value


class ActiveHours(_Strict):
    start: Annotated[str, BeforeValidator(_hhmm)] = "00:00"
    end: Annotated[str, BeforeValidator(_hhmm)] = "23:59"
    timezone: Annotated[str, BeforeValidator(_timezone)] = "UTC"


class HeartbeatJob(_Strict):
    """`[heartbeat.<agent>]`: a heartbeat atomizer-hq sends (every/cron), or one it expects (expect_every)."""

    every: Duration | None = None
    cron: str | None = None
    expect_every: Duration | None = None  # the agent sends its own: alert when none is seen for this + grace
    active_hours: ActiveHours | None = None
    jitter: Duration = 0.0
    prompt: str = DEFAULT_HEARTBEAT_PROMPT
    to: str = "daily_standup"  # a channel role, or any delivery target
    method: Literal["agent", "wake"] = "agent"
    wait_for_completion: bool = True
    completion_timeout: Duration = 120.0
    missed: Literal["skip", "catch_up_once"] = "skip"
    enabled: bool = True

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from bot.heartbeat import crontab_trigger

        try:
            if len(value.split()) != 5:
                raise ValueError("wrong number of fields")
            crontab_trigger(value, "UTC")
        except ValueError as exc:
            raise PydanticCustomError(
                "cron",
                "{value} is not a crontab expression ({error}); write 5 fields, e.g. '0 9 * * 1-5'",
                {"value": repr(value), "error": str(exc)},
            ) from None
        return value

    @property
    def sends(self) -> bool:
        return self.every is not None or self.cron is not None

    def schedule_problems(self) -> list[str]:
        chosen = [k for k in ("every", "cron", "expect_every") if getattr(self, k) is not None]
        if len(chosen) != 1:
            return ["give exactly one of every (e.g. '30m'), cron (e.g. '0 9 * * *') or expect_every"]
        if self.every is not None and self.every < 60:
            return ["every must be at least 1 minute"]
        return []


class HeartbeatsConfig(_Strict):
    """`[heartbeats]`: what applies to every heartbeat, and the daily standup."""

    failures_alert: int = Field(default=3, ge=1)  # the dead-man's switch: consecutive failed runs
    misfire_grace: Duration = 60.0  # a slot this late still runs on time; older ones are missed
    seen_grace: Duration = 600.0
    tick: Duration = 15.0
    lease_ttl: Duration = 60.0
    standup_time: Annotated[str, BeforeValidator(_hhmm)] = "09:00"
    standup_timezone: Annotated[str, BeforeValidator(_timezone)] = "UTC"
    standup_channel: str = "daily_standup"


class SystemdConfig(_Strict):
    """How `atomizer-hq cluster` and /cluster drive the agents' systemd units: command prefixes, never a shell."""

    systemctl: list[str] = Field(default_factory=lambda: ["systemctl", "--user"])
    journalctl: list[str] = Field(default_factory=lambda: ["journalctl", "--user"])
    unit_template: str = "openclaw-atomizer@{agent}.service"
    timeout: float = Field(default=90.0, gt=0)  # a stop waits for the gateway's TimeoutStopSec

    @field_validator("systemctl", "journalctl")
    @classmethod
    def _command(cls, value: list[str]) -> list[str]:
        if not value or not all(part.strip() for part in value):
            raise PydanticCustomError(
                "command",
                "{value} is not a command; write the program and its options as a list of non-empty strings, "
                'e.g. ["systemctl", "--user"]',
                {"value": repr(value)},
            )
        return value

    @field_validator("unit_template")
    @classmethod
    def _unit_template(cls, value: str) -> str:
        # Filled with str.replace, not str.format, and checked so the unit is one plain systemd name.
        if "{agent}" not in value:
            raise PydanticCustomError(
                "unit_template",
                "{value} does not contain {agent}; write where the agent's name goes, "
                "e.g. 'openclaw-atomizer@{agent}.service'",
                {"value": repr(value)},
            )
        if not UNIT_NAME_RE.match(value.replace("{agent}", "x")):
            raise PydanticCustomError(
                "unit_template",
                "{value} is not a systemd unit name; use letters, digits and ':_.@-' around {agent}, "
                "e.g. 'openclaw-atomizer@{agent}.service'",
                {"value": repr(value)},
            )
        return value

    def unit_for(self, agent: str) -> str:
        return self.unit_template.replace("{agent}", agent)


class ClusterConfig(_Strict):
    """Everything in `config/cluster.toml`."""

    # The file this was read from, so a hint says which file to edit (not always the default's name).
    _source: str = PrivateAttr(default="config/cluster.toml")

    agents: list[AgentConfig]
    side_ports: list[Annotated[int, Field(ge=1, le=1000)]] = Field(default_factory=lambda: [2, 3])
    channels: dict[str, Snowflake] = Field(default_factory=dict)
    roles: dict[Literal["viewer", "operator", "admin"], list[Snowflake]] = Field(default_factory=dict)
    api: ApiConfig = Field(default_factory=ApiConfig)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    systemd: SystemdConfig = Field(default_factory=SystemdConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    taskboard: TaskBoardConfig = Field(default_factory=TaskBoardConfig)
    heartbeat: dict[str, HeartbeatJob] = Field(default_factory=dict)
    heartbeats: HeartbeatsConfig = Field(default_factory=HeartbeatsConfig)
    workflows: WorkflowsConfig = Field(default_factory=WorkflowsConfig)
    delegation: DelegationConfig = Field(default_factory=DelegationConfig)

    @field_validator("roles", mode="before")
    @classmethod
    def _roles(cls, value: Any) -> Any:
        # One role id or a list of them per level.
        if isinstance(value, dict):
            return {key: ids if isinstance(ids, list) else [ids] for key, ids in value.items()}
        return value

    # --- lookups ------------------------------------------------------------------------------

    @property
    def source(self) -> str:
        return self._source

    @property
    def agent_names(self) -> list[str]:
        return [agent.name for agent in self.agents]

    def agent(self, name: str) -> AgentConfig | None:
        return next((agent for agent in self.agents if agent.name == name), None)

    def require_agent(self, name: str) -> AgentConfig:
        """The named agent, or UnknownAgent listing the valid names and the closest match."""
        agent = self.agent(name.strip().lower())
        if agent is not None:
            return agent
        close = difflib.get_close_matches(name.strip().lower(), self.agent_names, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UnknownAgent(f"no agent called {name!r}.{hint} Valid agents: {', '.join(self.agent_names)}")

    def delegation_targets(self, name: str) -> list[str]:
        """The agents `name` may delegate to, from its `delegates_to` ("*", names, "!name"); never itself."""
        agent = self.agent(name)
        if agent is None:
            return []
        allowed: set[str] = set()
        for entry in agent.delegates_to:
            if entry == "*":
                allowed.update(self.agent_names)
            elif not entry.startswith("!"):
                allowed.add(entry)
        for entry in agent.delegates_to:
            if entry.startswith("!"):
                allowed.discard(entry[1:])
        allowed.discard(name)
        return [n for n in self.agent_names if n in allowed]

    def relocated(self, base_port: int, spacing: int = 4) -> ClusterConfig:
        """The same fleet on other ports (the demo and tests run beside a real fleet)."""
        agents = [a.model_copy(update={"port": base_port + i * spacing}) for i, a in enumerate(self.agents)]
        # The API moves along, just past the fleet, so it can never land on a gateway's port.
        api = self.api.model_copy(update={"port": base_port + len(agents) * spacing})
        return self.model_copy(update={"agents": agents, "api": api})

    def ports_of(self, agent: AgentConfig) -> dict[int, str]:
        """Every port a gateway takes, with what it is for."""
        ports = {agent.port: "hooks port"}
        for offset in self.side_ports:
            ports.setdefault(agent.port + offset, f"side port {agent.port}+{offset}")
        return ports


# --- loading and checking ---------------------------------------------------------------------


def load_cluster_config(path: Path) -> ClusterConfig:
    """Read and validate the cluster file; raise ConfigError listing every problem."""
    shown = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            [f"{shown}: (file): not found; set ATOMIZER_CONFIG or --config to the cluster file"]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{shown}: (file): cannot be read ({exc}); it must be a UTF-8 TOML file"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{shown}: (syntax): {exc}; the file must be valid TOML"]) from None
    return parse_cluster_config(raw, shown)


def parse_cluster_config(raw: dict[str, Any], shown: str = "cluster.toml") -> ClusterConfig:
    try:
        config = ClusterConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError([f"{shown}: {line}" for line in _describe_errors(exc, raw)]) from None
    problems = [f"{shown}: {line}" for line in semantic_problems(config)]
    if problems:
        raise ConfigError(problems)
    config._source = shown
    return config


def semantic_problems(config: ClusterConfig) -> list[str]:
    """Cross-field checks pydantic cannot express: duplicates, collisions, dangling names."""
    problems: list[str] = []
    if not config.agents:
        problems.append("agents: no agents configured; add at least one [[agents]] table")
    seen_names: dict[str, int] = {}
    for index, agent in enumerate(config.agents):
        if agent.name in seen_names:
            problems.append(
                f"agents[{index}].name: duplicate agent name {agent.name!r} (also agents[{seen_names[agent.name]}]); "
                "every agent needs its own name"
            )
        seen_names.setdefault(agent.name, index)

    # Ports: each gateway takes its own port plus side ports above it (openclaw-hooks.md).
    owners: dict[tuple[str, int], tuple[str, str]] = {}
    reported: set[tuple[str, str, int]] = set()
    for agent in config.agents:
        for port, role in config.ports_of(agent).items():
            key = (agent.host, port)
            if key in owners and owners[key][0] != agent.name:
                other, other_role = owners[key]
                pair = (other, agent.name, port)
                if pair in reported:
                    continue
                reported.add(pair)
                if role == "hooks port" and other_role == "hooks port":
                    what = f"duplicate port {port}: agents {other!r} and {agent.name!r} both listen on it"
                else:
                    what = (
                        f"port collision on {port}: {other!r} uses it as its {other_role}, {agent.name!r} as its {role}"
                    )
                problems.append(
                    f"agents.{agent.name}.port: {what}; space gateways at least "
                    f"{max(config.side_ports, default=0) + 1} ports apart"
                )
            else:
                owners.setdefault(key, (agent.name, role))
    api_key = (config.api.host, config.api.port)
    if api_key in owners:
        problems.append(
            f"api.port: {config.api.port} is taken by agent {owners[api_key][0]!r} ({owners[api_key][1]}); "
            "pick a port no gateway uses (default 18790)"
        )

    names = set(config.agent_names)
    for agent in config.agents:
        for entry in agent.delegates_to:
            target = entry[1:] if entry.startswith("!") else entry
            if entry == "*":
                continue
            if target not in names:
                problems.append(
                    f"agents.{agent.name}.delegates_to: unknown agent {target!r}; "
                    f"valid: '*', {_names(names)}, or '!name' to exclude one"
                )
            elif target == agent.name and not entry.startswith("!"):
                problems.append(
                    f"agents.{agent.name}.delegates_to: an agent never delegates to itself; remove {target!r}"
                )

    channel_keys = (
        ("monitor", "alerts_channel"), ("monitor", "board_channel"), ("taskboard", "board_channel"),
        ("heartbeats", "standup_channel"),
    )  # fmt: skip
    for section, key in channel_keys:
        role = getattr(getattr(config, section), key)
        if role not in CHANNEL_ROLES:
            problems.append(f"{section}.{key}: unknown channel role {role!r}; valid: {', '.join(CHANNEL_ROLES)}")
    for role in config.channels:
        if role not in CHANNEL_ROLES:
            problems.append(f"channels.{role}: unknown channel role; valid: {', '.join(CHANNEL_ROLES)}")
    for agent_name, job in config.heartbeat.items():
        for problem in job.schedule_problems():
            problems.append(f"heartbeat.{agent_name}: {problem}")
        if agent_name not in names:
            problems.append(f"heartbeat.{agent_name}: unknown agent; valid: {_names(names)}")
    return problems


def _names(names: Iterable[str]) -> str:
    return ", ".join(sorted(names))


def _describe_errors(exc: ValidationError, raw: dict[str, Any]) -> list[str]:
    lines = []
    for error in exc.errors():
        loc = [part for part in error["loc"] if part != "[key]"]  # pydantic marks dict-key errors so
        key = _key_path(loc, raw)
        lines.append(f"{key}: {_explain(error, loc)}")
    return lines


def _key_path(loc: list[Any], raw: dict[str, Any]) -> str:
    """agents[3].port reads better as agents.webster.port when the agent has a name."""
    parts: list[str] = []
    for index, part in enumerate(loc):
        if isinstance(part, int) and index > 0 and loc[index - 1] == "agents":
            agents = raw.get("agents")
            name = agents[part].get("name") if isinstance(agents, list) and isinstance(agents[part], dict) else None
            parts.append(str(name) if isinstance(name, str) and name else f"[{part}]")
        elif isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            parts.append(str(part))
    text = ".".join(parts).replace(".[", "[")
    return text or "(top level)"


_EXPLANATIONS = {
    "int_parsing": ("a whole number", "write e.g. 18800"),
    "int_type": ("a whole number", "write e.g. 18800"),
    "int_from_float": ("a whole number", "write e.g. 18800"),
    "float_parsing": ("a number", "write e.g. 2.5"),
    "float_type": ("a number", "write e.g. 2.5"),
    "bool_parsing": ("true or false", "write true or false, without quotes"),
    "bool_type": ("true or false", "write true or false, without quotes"),
    "string_type": ("a string", 'write text in quotes, e.g. "Opus 4.6"'),
    "list_type": ("a list", 'write e.g. ["a", "b"]'),
    "dict_type": ("a table", "write a [section] or {key = value}"),
    "model_type": ("a table", "write a [section] or {key = value}"),
}


def _explain(error: Any, loc: list[Any]) -> str:
    kind = error["type"]
    value = error.get("input")
    if kind == "missing":
        return "missing; this key is required"
    if kind == "extra_forbidden":
        return (
            f"unknown key {loc[-1]!r}; check its spelling against the shipped config/cluster.toml, which lists every "
            "key with a comment"
        )
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return f"{value!r} is out of range; {error['msg'].lower()}"
    if kind == "literal_error":
        return f"unknown key {loc[-1]!r}; valid: {', '.join(ACCESS_LEVELS)}"
    if kind in _EXPLANATIONS:
        what, fix = _EXPLANATIONS[kind]
        return f"{value!r} is not {what}; {fix}"
    return error["msg"]


# --- the cluster file as text ----------------------------------------------------------------------

_TABLE_RE = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.-]+)\s*\]")
_PORT_RE = re.compile(r"^(\s*port\s*=\s*)\d+")


def with_ports(text: str, agent_ports: Mapping[str, int], api_port: int | None = None) -> str:
    """The cluster file `text` with each agent's port (by name) and the API's set, edited as text so the rest
    (comments, order) stays the real file: the demo's and tests' copies of the shipped file.

    Table by table, in one pass. Replacing the old values one after another moved a port twice whenever a new
    port equalled a later agent's old one (a random test base of 18824 put the bot's nx-expert on the fleet's
    manager); the result is read back and checked."""
    names = [str(agent.get("name")) for agent in tomllib.loads(text).get("agents", [])]
    lines, table, index = [], "", -1
    for line in text.splitlines(keepends=True):
        header = _TABLE_RE.match(line)
        if header is not None:
            table = header.group(2)
            index += header.group(1) == "[[" and table == "agents"
        port = None
        if table == "agents" and names[index] in agent_ports:
            port = agent_ports[names[index]]
        elif table == "api":
            port = api_port
        found = _PORT_RE.match(line) if port is not None else None
        if found is not None:
            line = f"{found.group(1)}{port}{line[found.end() :]}"
        lines.append(line)
    edited = "".join(lines)
    parsed = tomllib.loads(edited)
    got = {str(agent.get("name")): agent.get("port") for agent in parsed.get("agents", [])}
    unknown = sorted(set(agent_ports) - set(got))
    if unknown:
        raise ValueError(f"no agent {', '.join(unknown)} in the cluster file; its agents: {', '.join(got)}")
    if any(got[name] != port for name, port in agent_ports.items()) or (
        api_port is not None and parsed.get("api", {}).get("port") != api_port
    ):
        raise ValueError("the cluster file's ports could not be set (no `port = N` line where expected)")
    return edited
