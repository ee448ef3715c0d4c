"""`atomizer-hq doctor` on a fixture cluster shaped like the as-built one, with one planted problem per agent."""

from __future__ import annotations

import argparse
import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.config import ClusterConfig, load_cluster_config
from bot.doctor import Doctor, Finding, Json5Error, cli_doctor, key_of, parse_json5
from bot.install_systemd import UnitPaths, render_units
from bot.settings import Settings
from bot.targets import StaticDirectory

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "cluster"
HOOKS_TOKEN = "fake-hooks-token-0000-0000-0000-000000000000"
# Every secret the fixture holds: none may appear in anything doctor prints.
SECRETS = (
    HOOKS_TOKEN,
    "fake-hooks-token-9999-9999-9999-999999999999",
    "fake-token-0000-0000-0000-000000000000",
    "fake-discord-token",
)
CLEAN = ("manager", "tech-lead")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """The fixture cluster laid out as on the host: ~/atomizer/{instances,workspaces}, ~/.config/systemd/user."""
    home = tmp_path / "home"
    shutil.copytree(FIXTURE / "instances", home / "atomizer" / "instances")
    shutil.copytree(FIXTURE / "workspaces", home / "atomizer" / "workspaces")
    shutil.copytree(FIXTURE / "systemd", home / ".config" / "systemd" / "user")
    return home


@pytest.fixture
def config() -> ClusterConfig:
    return load_cluster_config(FIXTURE / "cluster.toml")


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in list(os.environ):
        if name.startswith("ATOMIZER_") or name == "DISCORD_TOKEN":
            monkeypatch.delenv(name)
    monkeypatch.setenv("ATOMIZER_HOOKS_TOKEN", HOOKS_TOKEN)
    return Settings()


def make_doctor(config: ClusterConfig, settings: Settings, home: Path, **kwargs: object) -> Doctor:
    kwargs.setdefault("directory", StaticDirectory.from_config(config))
    return Doctor(
        config,
        settings,
        home / "atomizer" / "instances",
        home / ".config" / "systemd" / "user",
        home=home,
        user="atomizer",
        clock=lambda: datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
        **kwargs,  # type: ignore[arg-type]
    )


def only(findings: list[Finding], agent: str, key: str | None = None) -> Finding:
    matching = [f for f in findings if f.agent == agent and (key is None or f.key == key)]
    assert len(matching) == 1, [f"{f.agent} {f.key}: {f.what}" for f in findings]
    return matching[0]


def instance(home: Path, agent: str) -> Path:
    return home / "atomizer" / "instances" / agent / "openclaw.json"


def edit_json(path: Path, change: dict[str, object]) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    for dotted, value in change.items():
        *parents, last = dotted.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")


# --- the planted problems ------------------------------------------------------------------------------------


def test_every_planted_problem_is_found_with_its_fix(config: ClusterConfig, settings: Settings, home: Path) -> None:
    findings = make_doctor(config, settings, home).report()
    units = home / ".config" / "systemd" / "user"

    secret = only(findings, "all")
    assert secret.severity == "error" and secret.key == "Environment:OPENCLAW_GATEWAY_TOKEN"
    assert secret.path == units / "openclaw-atomizer@.service"
    assert "OPENCLAW_GATEWAY_TOKEN inline" in secret.what and ":12:" in secret.what
    assert "gateway.env" in secret.fix and "rotate" in secret.fix and "install-systemd" in secret.fix

    port = only(findings, "secretary", "gateway.port")
    assert port.severity == "error" and "18809" in port.what and "18808" in port.what
    assert "set gateway.port to 18808" in port.fix and str(instance(home, "secretary")) in port.fix
    assert f"{FIXTURE / 'cluster.toml'} says 18808" in port.what  # the cluster file in use, wherever it is
    assert f"for secretary in {FIXTURE / 'cluster.toml'}" in port.fix
    side = only(findings, "secretary", "canvasHost.port")
    assert side.severity == "error" and "auditor" in side.what and "remove canvasHost.port" in side.fix

    hooks = only(findings, "auditor")
    assert hooks.key == "hooks.enabled" and hooks.severity == "error" and "404" in hooks.what
    assert "set hooks.enabled to true" in hooks.fix and "cluster restart auditor" in hooks.fix

    token = only(findings, "optimizer")
    assert token.key == "hooks.token" and token.severity == "error" and "401" in token.what
    assert "ATOMIZER_HOOKS_TOKEN_OPTIMIZER" in token.fix

    plugin = only(findings, "study-builder")
    assert plugin.key == "plugins.entries.discord.enabled" and "channel must be last" in plugin.what
    assert "plugins.entries.discord.enabled to true" in plugin.fix and "openclaw plugins install" in plugin.fix

    heartbeat = only(findings, "nx-expert")
    assert heartbeat.key == "agents.defaults.heartbeat.every" and heartbeat.severity == "error"
    assert "atomizer-hq sends none" in heartbeat.what and "[heartbeat.nx-expert]" in heartbeat.fix
    assert f'every = "30m" to {FIXTURE / "cluster.toml"}' in heartbeat.fix

    mapping = only(findings, "webster", "hooks.mappings[0].to")
    assert mapping.severity == "error" and "bare id" in mapping.what
    assert mapping.replacement == "channel:100000000000000101"
    assert '"channel:100000000000000101" (#technical)' in mapping.fix and "doctor --fix" in mapping.fix
    dormant = only(findings, "webster", "agents.defaults.heartbeat.to")
    assert dormant.severity == "warning" and "switched back on" in dormant.what  # its heartbeat is off for now
    assert dormant.replacement == "channel:100000000000000103"


def test_clean_agents_report_nothing(config: ClusterConfig, settings: Settings, home: Path) -> None:
    findings = make_doctor(config, settings, home).report()
    assert {f.agent for f in findings} == {"all", *(a for a in config.agent_names if a not in CLEAN)}
    assert len(findings) == 9  # one per planted problem, and no more


def test_a_bare_id_without_the_guild_needs_resolving_and_fix_leaves_it(
    config: ClusterConfig, settings: Settings, home: Path
) -> None:
    doctor = make_doctor(config, settings, home, directory=None)
    finding = only(doctor.report(), "webster", "hooks.mappings[0].to")
    assert finding.replacement is None
    assert finding.fix.startswith("needs resolving") and "channel:100000000000000101" in finding.fix
    before = instance(home, "webster").read_text(encoding="utf-8")
    assert doctor.fix() == []
    assert instance(home, "webster").read_text(encoding="utf-8") == before
    assert list(instance(home, "webster").parent.glob("*.bak-*")) == []


def test_an_id_the_guild_does_not_know_needs_resolving(config: ClusterConfig, settings: Settings, home: Path) -> None:
    edit_json(instance(home, "tech-lead"), {"agents.defaults.heartbeat.to": "100000000000000999"})
    finding = only(make_doctor(config, settings, home).report(), "tech-lead")
    assert finding.severity == "error" and finding.replacement is None
    assert "neither a channel nor a member" in finding.fix


def test_a_member_id_becomes_a_user_target(config: ClusterConfig, settings: Settings, home: Path) -> None:
    edit_json(instance(home, "tech-lead"), {"agents.defaults.heartbeat.to": 100000000000000900})  # a JSON number
    guild = StaticDirectory(channels={"100000000000000103": "daily-standup"}, members={"100000000000000900": "antoine"})
    doctor = make_doctor(config, settings, home, directory=guild)
    finding = only(doctor.report(), "tech-lead")
    assert finding.replacement == "user:100000000000000900" and "(@antoine)" in finding.fix
    [change] = [c for c in doctor.fix() if c.agent == "tech-lead"]
    assert (change.old, change.new) == ("100000000000000900", "user:100000000000000900")
    data = json.loads(instance(home, "tech-lead").read_text(encoding="utf-8"))
    assert data["agents"]["defaults"]["heartbeat"]["to"] == "user:100000000000000900"


def test_other_channels_keep_their_numeric_recipients(config: ClusterConfig, settings: Settings, home: Path) -> None:
    edit_json(
        instance(home, "tech-lead"),
        {"hooks.mappings": [{"match": {"path": "tg"}, "channel": "telegram", "to": "123456789"}]},
    )
    assert [f for f in make_doctor(config, settings, home).report() if f.agent == "tech-lead"] == []


# --- --fix ---------------------------------------------------------------------------------------------------


def test_fix_backs_up_rewrites_only_the_targets_and_the_result_passes(
    config: ClusterConfig, settings: Settings, home: Path
) -> None:
    path = instance(home, "webster")
    before = path.read_text(encoding="utf-8")
    changes = make_doctor(config, settings, home).fix()

    assert {(c.agent, c.key, c.old, c.new) for c in changes} == {
        ("webster", "hooks.mappings[0].to", "100000000000000101", "channel:100000000000000101"),
        ("webster", "agents.defaults.heartbeat.to", "100000000000000103", "channel:100000000000000103"),
    }
    backup = path.with_name("openclaw.json.bak-20260301T120000Z")
    assert {c.backup for c in changes} == {backup}
    assert backup.read_text(encoding="utf-8") == before
    after = path.read_text(encoding="utf-8")
    # Byte for byte the same file but for the two values: comments, unquoted keys and layout stay.
    assert after == before.replace('to: "100000000000000101"', 'to: "channel:100000000000000101"').replace(
        'to: "100000000000000103"', 'to: "channel:100000000000000103"'
    )
    assert "// #technical" in after

    second = make_doctor(config, settings, home).report()
    assert [f for f in second if f.agent == "webster"] == []
    assert len(second) == 7  # everything else is still there: --fix touches nothing but bare targets
    assert make_doctor(config, settings, home).fix() == []  # nothing left to do, no second backup
    assert len(list(path.parent.glob("openclaw.json.bak-*"))) == 1


async def test_the_command_fixes_reports_and_never_prints_a_secret(
    config: ClusterConfig, settings: Settings, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def args(**extra: object) -> argparse.Namespace:
        options = {
            "instances_dir": home / "atomizer" / "instances",
            "units_dir": [home / ".config" / "systemd" / "user"],
            "workspaces_dir": home / "atomizer" / "workspaces",
            "fix": False,
            "json": False,
        }
        return argparse.Namespace(**{**options, **extra})

    assert await cli_doctor(args(), settings, config) == 1
    human = capsys.readouterr()
    assert "secretary:" in human.out and "ok: manager, tech-lead" in human.out
    assert "8 error(s), 1 warning(s)" in human.out

    assert await cli_doctor(args(fix=True), settings, config) == 1  # the other problems remain
    fixed = capsys.readouterr()
    assert "fixed webster:" in fixed.out and "channel:100000000000000101" in fixed.out

    assert await cli_doctor(args(json=True), settings, config) == 1
    raw = capsys.readouterr()
    document = json.loads(raw.out)
    assert document["ok"] is False and document["errors"] == 7 and document["changes"] == []
    assert {f["agent"] for f in document["findings"]} == {"all", "secretary", "auditor", "optimizer"} | {
        "study-builder",
        "nx-expert",
    }
    for output in (human.out, human.err, fixed.out, fixed.err, raw.out, raw.err):
        for secret in SECRETS:
            assert secret not in output


def test_secrets_are_redacted_even_where_a_text_would_carry_one(
    config: ClusterConfig, settings: Settings, home: Path
) -> None:
    # A token pasted where a path belongs ends up in a finding's text: it is redacted there too.
    edit_json(instance(home, "manager"), {"hooks.path": HOOKS_TOKEN})
    finding = only(make_doctor(config, settings, home).report(), "manager")
    assert finding.key == "hooks.path" and HOOKS_TOKEN not in finding.what + finding.fix
    assert "<redacted>" in finding.what


# --- the new unit: tokens from gateway.env, ports from the environment --------------------------------------


def install_new_unit(home: Path, tmp_path: Path) -> Path:
    units = home / ".config" / "systemd" / "user"
    existing = tmp_path / "exists"
    existing.write_text("", encoding="utf-8")
    paths = UnitPaths(
        root=tmp_path, python=existing, env_file=existing, data_dir=tmp_path, node=existing, openclaw=existing
    )
    (units / "openclaw-atomizer@.service").write_text(
        render_units(paths)["openclaw-atomizer@.service"], encoding="utf-8"
    )
    return units


def test_tokens_come_from_the_gateway_env_the_new_unit_loads(
    config: ClusterConfig, settings: Settings, home: Path, tmp_path: Path
) -> None:
    install_new_unit(home, tmp_path)
    for agent in config.agent_names:
        env = home / "atomizer" / "instances" / agent / "gateway.env"
        env.write_text(f"OPENCLAW_GATEWAY_TOKEN=fake-gw-{agent}-000000\nOPENCLAW_HOOKS_TOKEN={HOOKS_TOKEN}\n")
        env.chmod(0o600)
    edit_json(instance(home, "tech-lead"), {"hooks.token": "${OPENCLAW_HOOKS_TOKEN}"})
    findings = make_doctor(config, settings, home).report()
    assert not [f for f in findings if f.agent in ("all", *CLEAN)], findings  # the inline secret is gone too

    env = home / "atomizer" / "instances" / "tech-lead" / "gateway.env"
    env.write_text("OPENCLAW_HOOKS_TOKEN=fake-hooks-token-1111-1111-1111\n")
    env.chmod(0o644)
    findings = [f for f in make_doctor(config, settings, home).report() if f.agent == "tech-lead"]
    mismatch = only(findings, "tech-lead", "hooks.token")
    assert f"OPENCLAW_HOOKS_TOKEN in {env}" in mismatch.fix
    assert "fake-hooks-token-1111" not in mismatch.what + mismatch.fix
    readable = only(findings, "tech-lead", "EnvironmentFile")
    assert readable.severity == "warning" and f"chmod 600 {env}" == readable.fix

    env.write_text("OTHER=1\n")
    env.chmod(0o600)
    unset = only(make_doctor(config, settings, home).report(), "tech-lead")
    assert "${OPENCLAW_HOOKS_TOKEN}" in unset.what and "set nowhere" in unset.what

    env.unlink()
    findings = [f for f in make_doctor(config, settings, home).report() if f.agent == "tech-lead"]
    missing = only(findings, "tech-lead", "EnvironmentFile")
    assert missing.severity == "error" and "refuses to start" in missing.what


def test_a_drop_in_port_overrides_the_config(config: ClusterConfig, settings: Settings, home: Path) -> None:
    units = home / ".config" / "systemd" / "user"
    dropin = units / "openclaw-atomizer@manager.service.d" / "port.conf"
    dropin.parent.mkdir()
    dropin.write_text("[Service]\nEnvironment=OPENCLAW_GATEWAY_PORT=18801 DISCORD_TOKEN=fake-discord-token-x\n")
    findings = [f for f in make_doctor(config, settings, home).report() if f.agent == "manager"]
    port = only(findings, "manager", "OPENCLAW_GATEWAY_PORT")
    assert "18801" in port.what and "OPENCLAW_GATEWAY_PORT" in port.what
    secret = only(findings, "manager", "Environment:DISCORD_TOKEN")  # the agent's own drop-in: its own finding
    assert secret.path == dropin and "fake-discord-token-x" not in secret.what + secret.fix


def test_a_token_on_the_command_line_is_an_inline_secret(config: ClusterConfig, settings: Settings, home: Path) -> None:
    unit = home / ".config" / "systemd" / "user" / "openclaw-atomizer@.service"
    text = unit.read_text(encoding="utf-8").replace("Environment=OPENCLAW_GATEWAY_TOKEN=", "#")
    unit.write_text(text.replace("gateway run", "gateway run --token fake-token-1234567890 --port 18800"))
    findings = make_doctor(config, settings, home).report()
    secret = only(findings, "all")
    assert secret.key == "ExecStart:--token" and "OPENCLAW_GATEWAY_TOKEN=<value>" in secret.fix
    # --port in the shared ExecStart puts every agent on 18800: all but the manager disagree with cluster.toml.
    assert {f.agent for f in findings if f.key == "--port"} == set(config.agent_names) - {"manager"}


def test_missing_instances_and_units_are_named(config: ClusterConfig, settings: Settings, tmp_path: Path) -> None:
    doctor = Doctor(config, settings, tmp_path / "instances", tmp_path / "units", home=tmp_path, user="atomizer")
    findings = doctor.report()
    assert "no openclaw-atomizer@.service" in only(findings, "all").what
    assert "no openclaw.json" in only(findings, "webster").what


def test_hooks_path_and_channel_and_heartbeat_consistency(
    config: ClusterConfig, settings: Settings, home: Path
) -> None:
    edit_json(
        instance(home, "tech-lead"),
        {"hooks.path": "/agent-hooks/", "hooks.maxBodyBytes": 65536, "channels.discord.enabled": False},
    )
    edit_json(instance(home, "manager"), {"agents.defaults.heartbeat.every": "15m"})
    findings = make_doctor(config, settings, home).report()
    assert "'/agent-hooks/'" in only(findings, "tech-lead", "hooks.path").what
    assert only(findings, "tech-lead", "channels.discord.enabled").severity == "error"
    assert "65,536" in only(findings, "tech-lead", "hooks.maxBodyBytes").what
    double = only(findings, "manager")
    assert double.severity == "warning" and "two heartbeats" in double.what


# --- JSON5 -------------------------------------------------------------------------------------------------


def test_json5_values_and_where_they_are_written() -> None:
    text = """\ufeff// comment
{
  unquoted: 'single \\'quoted\\'',  /* block */
  "list": [1, 0x1F, -Infinity, .5, +2e3, null, true,],
  nested: {to: "100000000000000101", "a.b": "\\u00e9\\x41"},
}"""
    data, spans = parse_json5(text)
    assert data["unquoted"] == "single 'quoted'"
    assert (
        data["list"][:2] == [1, 31]
        and data["list"][2] == float("-inf")
        and data["list"][3:]
        == [
            0.5,
            2000.0,
            None,
            True,
        ]
    )
    assert data["nested"] == {"to": "100000000000000101", "a.b": "éA"}
    start, end = spans[("nested", "to")]
    assert text[start:end] == '"100000000000000101"'
    assert key_of(("nested", "a.b")) == 'nested["a.b"]' and key_of(("list", 2)) == "list[2]"
    assert parse_json5(json.dumps({"x": [1, {"y": "z"}]}))[0] == {"x": [1, {"y": "z"}]}


@pytest.mark.parametrize("text", ['{"a": 1', "{a: 1} x", "{'a' 1}", '{"a": tru}', "/* open"])
def test_json5_errors_say_where(text: str) -> None:
    with pytest.raises(Json5Error, match=r"line \d+, column \d+"):
        parse_json5(text)


def test_an_unreadable_config_is_an_error_with_its_position(
    config: ClusterConfig, settings: Settings, home: Path
) -> None:
    instance(home, "auditor").write_text('{"hooks": {enabled: true,, }}', encoding="utf-8")
    finding = only(make_doctor(config, settings, home).report(), "auditor")
    assert "not valid JSON5" in finding.what and "line 1, column" in finding.what
