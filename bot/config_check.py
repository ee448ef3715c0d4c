"""`atomizer-hq check-config`: every problem in the files and the environment, one line each."""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.config import SNOWFLAKE_RE, ClusterConfig
from bot.errors import ConfigError, MissingSecret, env_suffix
from bot.settings import HUMAN_IDENTITIES, Settings

# What each command cannot work without.
NEEDS: dict[str, tuple[str, ...]] = {
    "run": ("discord_token", "guild_id", "hooks_token"),
    "run --no-discord": ("hooks_token",),
    "status": ("hooks_token",),
    "delegate": ("hooks_token",),
    "heartbeat": ("hooks_token",),
    "standup": ("hooks_token",),
    "simulate": ("hooks_token",),
}


@dataclass
class ConfigReport:
    problems: list[str] = field(default_factory=list)  # exit 2
    warnings: list[str] = field(default_factory=list)  # valid, but probably not what was meant
    notes: list[str] = field(default_factory=list)


def heartbeat_warnings(config: ClusterConfig) -> list[str]:
    """Agents whose own heartbeat is off and that atomizer-hq sends none for either: nobody wakes them."""
    warnings = []
    for agent in config.agents:
        if agent.own_heartbeat:
            continue
        job = config.heartbeat.get(agent.name)
        if job is None:
            why = f"there is no [heartbeat.{agent.name}]"
        elif not job.sends:
            why = f"[heartbeat.{agent.name}] only expects one (expect_every) and sends none"
        elif not job.enabled:
            why = f"[heartbeat.{agent.name}] is switched off (enabled = false)"
        else:
            continue
        warnings.append(
            f"{config.source}: agents.{agent.name}.own_heartbeat: false, and {why}: {agent.name} gets no heartbeat "
            f'at all; add [heartbeat.{agent.name}] with every = "30m" (atomizer-hq then sends it), or set '
            "own_heartbeat = true"
        )
    return warnings


def routing_warnings(config: ClusterConfig) -> list[str]:
    """Agents that declare no capabilities: `delegate auto --needs …` never chooses them (docs/routing.md)."""
    return [
        f"{config.source}: agents.{agent.name}.capabilities: none declared, so `delegate auto --needs …` never "
        f'chooses {agent.name}; add what it does, e.g. capabilities = ["research"]'
        for agent in config.agents
        if not agent.capabilities
    ]


def secret_problems(settings: Settings, config: ClusterConfig, command: str) -> list[str]:
    """Missing secrets for `command`, one line each, naming the variable to set and where to find its value.

    An empty or blank value is missing too: Settings never holds one.
    """
    problems = []
    for need in NEEDS.get(command, ()):
        if need == "discord_token" and settings.discord_token is None:
            problems.append(
                f"environment: DISCORD_TOKEN: not set; `atomizer-hq {command}` needs the bot's token "
                "(Discord developer portal > your application > Bot > Reset Token), in .env"
            )
        elif need == "guild_id" and not settings.guild_id:
            problems.append(
                f"environment: ATOMIZER_GUILD_ID: not set; `atomizer-hq {command}` needs the guild's id "
                "(17 to 20 digits) to sync its slash commands (Discord: Settings > Advanced > Developer Mode on, "
                "then right-click the server > Copy Server ID), in .env"
            )
        elif need == "hooks_token":
            missing = [a for a in config.agent_names if settings.hooks_token_for(a) is None]
            if missing:
                problems.append(
                    f"environment: ATOMIZER_HOOKS_TOKEN: not set for {', '.join(missing)}; "
                    f"`atomizer-hq {command}` needs the gateways' token (hooks.token in each agent's "
                    f"openclaw.json; or ATOMIZER_HOOKS_TOKEN_{env_suffix(missing[0])} for one agent), in .env"
                )
    return problems


def require_secrets(settings: Settings, config: ClusterConfig, command: str) -> None:
    problems = secret_problems(settings, config, command)
    if problems:
        raise MissingSecret("\n".join(problems))


def check(settings: Settings, config: ClusterConfig, for_command: str | None) -> ConfigReport:
    """Validate the environment against a loaded cluster config.

    Without `for_command`, missing secrets are notes (the shipped config is valid without a .env);
    with it, they are problems for that command.
    """
    report = ConfigReport(warnings=heartbeat_warnings(config) + routing_warnings(config))
    if settings.guild_id and not SNOWFLAKE_RE.match(settings.guild_id.strip()):
        report.problems.append(
            f"environment: ATOMIZER_GUILD_ID: {settings.guild_id!r} is not a Discord id; "
            "a Discord id is 17 to 20 digits"
        )
    for suffix in settings.hooks_token_overrides:
        if suffix not in {env_suffix(a) for a in config.agent_names}:
            report.problems.append(
                f"environment: ATOMIZER_HOOKS_TOKEN_{suffix}: no agent called that; valid suffixes: "
                + ", ".join(env_suffix(a) for a in config.agent_names)
            )
    try:
        identities = settings.api_identities([*config.agent_names, *HUMAN_IDENTITIES])
    except ConfigError as exc:
        report.problems.extend(exc.problems)
        identities = {}
    if not identities:
        report.notes.append(
            "environment: ATOMIZER_API_TOKENS: not set; the loopback API will refuse every caller "
            "until agents have tokens ('manager:<token>,tech-lead:<token>,operator:<token>')"
        )
    report.problems.extend(workflow_problems(config))
    if for_command:
        report.problems.extend(secret_problems(settings, config, for_command))
    else:
        # `run` needs every secret any command needs.
        report.notes.extend(secret_problems(settings, config, "run"))
    return report


def workflow_problems(config: ClusterConfig) -> list[str]:
    """Every problem of the workflow files (`workflow validate` on each), so a broken one is found before a run."""
    from bot.workflows.loader import WorkflowCatalog
    from bot.workflows.plan import validate

    problems: list[str] = []
    for entry in WorkflowCatalog.from_config(config).entries():
        problems.extend(entry.problems)
        if entry.workflow is not None and not entry.problems:
            problems.extend(validate(entry.workflow, config).problems)
    return problems
