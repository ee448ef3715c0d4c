"""`atomizer-hq install-systemd`: the units rendered with this machine's paths, checked, installed, verified."""

from __future__ import annotations

import argparse
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import ClusterConfig, load_cluster_config
from bot.doctor import Doctor
from bot.errors import InvalidInput
from bot.install_systemd import (
    AGENT_UNIT,
    BOT_UNIT,
    ROOT,
    TEMPLATES_DIR,
    UnitPaths,
    cli_install_systemd,
    inline_secrets,
    read_env_file,
    read_unit,
    render_units,
)
from bot.settings import Settings

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "cluster"
AS_BUILT_TOKEN = "fake-token-0000-0000-0000-000000000000"
PLACEHOLDER = re.compile(r"@[A-Z_]+@")


@pytest.fixture
def config() -> ClusterConfig:
    return load_cluster_config(FIXTURE / "cluster.toml")


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Settings:
    for name in list(os.environ):
        if name.startswith("ATOMIZER_") or name == "DISCORD_TOKEN":
            monkeypatch.delenv(name)
    monkeypatch.setenv("ATOMIZER_HOOKS_TOKEN", "fake-hooks-token-0000-0000-0000-000000000000")
    monkeypatch.setenv("ATOMIZER_DB", str(tmp_path / "data" / "atomizer.db"))
    return Settings()


def touch(path: Path, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("", encoding="utf-8")
    path.chmod(mode)
    return path


def tmp_paths(tmp_path: Path, **overrides: object) -> UnitPaths:
    """A checkout in tmp_path with everything the units name present."""
    root = tmp_path / "atomizer-hq"
    values: dict[str, object] = {
        "root": root,
        "python": touch(root / ".venv" / "bin" / "python", 0o755),
        "env_file": touch(root / ".env"),
        "data_dir": root / "data",
        "node": touch(tmp_path / "node" / "bin" / "node", 0o755),
        "openclaw": touch(tmp_path / "node_modules" / "openclaw" / "openclaw.mjs"),
    }
    (root / "data").mkdir()
    values.update(overrides)
    return UnitPaths(**values)  # type: ignore[arg-type]


def directives(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith(("#", ";", "["))]


# --- rendering -----------------------------------------------------------------------------------------------


def test_the_repo_copies_are_templates() -> None:
    assert sorted(p.name for p in TEMPLATES_DIR.glob("*.service")) == [BOT_UNIT, AGENT_UNIT]
    bot = (TEMPLATES_DIR / BOT_UNIT).read_text(encoding="utf-8")
    for placeholder in ("@ROOT@", "@PYTHON@", "@ENV_FILE@", "@DATA_DIR@", "@USER@"):
        assert placeholder in bot
    agent = (TEMPLATES_DIR / AGENT_UNIT).read_text(encoding="utf-8")
    assert "EnvironmentFile=%h/atomizer/instances/%i/gateway.env" in agent
    assert inline_secrets(read_unit(TEMPLATES_DIR / AGENT_UNIT)) == []


def test_a_user_unit_for_a_tmp_root(tmp_path: Path) -> None:
    paths = tmp_paths(tmp_path)
    units = render_units(paths)
    assert set(units) == {BOT_UNIT, AGENT_UNIT}
    bot = units[BOT_UNIT]
    for line in directives(bot) + directives(units[AGENT_UNIT]):
        assert not PLACEHOLDER.search(line), line
    assert f"WorkingDirectory={paths.root}" in bot
    assert f"ExecStart={paths.python} -m bot run" in bot
    assert f"EnvironmentFile={paths.env_file}" in bot
    assert f"ReadWritePaths={paths.data_dir}" in bot
    for hardening in ("Restart=always", "NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes"):
        assert hardening in directives(bot)
    assert not [line for line in directives(bot) if line.startswith(("User=", "Environment=XDG_RUNTIME_DIR"))]
    agent = units[AGENT_UNIT]
    assert f"ExecStart={paths.node} {paths.openclaw} gateway run" in agent
    assert "Restart=always" in agent and "RestartSec=5" in agent


def test_a_system_unit_names_its_user_and_the_project_log_directory(tmp_path: Path) -> None:
    shared = tmp_path / "workspaces" / "shared"
    shared.mkdir(parents=True)
    paths = tmp_paths(tmp_path, user="atomizer", uid=1001, writable=(shared,))
    bot = render_units(paths)[BOT_UNIT]
    assert "User=atomizer" in directives(bot)
    assert "Environment=XDG_RUNTIME_DIR=/run/user/1001" in directives(bot)
    assert f"ReadWritePaths={paths.data_dir} {shared}" in directives(bot)


def test_paths_systemd_would_misread_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="not a plain absolute path"):
        render_units(tmp_paths(tmp_path, env_file=tmp_path / "my env" / ".env"))


def test_a_percent_sign_in_a_path_is_escaped(tmp_path: Path) -> None:
    data = tmp_path / "100%data"
    bot = render_units(tmp_paths(tmp_path, data_dir=data))[BOT_UNIT]
    assert f"ReadWritePaths={tmp_path}/100%%data" in bot


def test_system_mode_refuses_root_and_unknown_users(settings: Settings, config: ClusterConfig) -> None:
    with pytest.raises(InvalidInput, match="normal user"):
        UnitPaths.for_this_machine(settings, config, user_mode=False, run_as="root")
    with pytest.raises(InvalidInput, match="no such user"):
        UnitPaths.for_this_machine(settings, config, user_mode=False, run_as="no-such-user-atomizer")


# --- the command ---------------------------------------------------------------------------------------------


def cli_args(tmp_path: Path, **extra: object) -> argparse.Namespace:
    options: dict[str, object] = {
        "user": True,
        "dry_run": False,
        "force": False,
        "run_as": None,
        "env_file": touch(tmp_path / "checkout.env"),
        "node": touch(tmp_path / "bin" / "node", 0o755),
        "openclaw": touch(tmp_path / "openclaw" / "openclaw.mjs"),
        "units_dir": tmp_path / "units",
        "instances_dir": tmp_path / "atomizer" / "instances",  # tmp_path is the agents' home (%h)
    }
    options.update(extra)
    return argparse.Namespace(**options)


def make_instances(tmp_path: Path, config: ClusterConfig) -> None:
    for agent in config.agent_names:
        (tmp_path / "atomizer" / "instances" / agent).mkdir(parents=True)


async def test_dry_run_shows_both_units_and_that_their_paths_exist(
    settings: Settings, config: ClusterConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_instances(tmp_path, config)
    assert await cli_install_systemd(cli_args(tmp_path, dry_run=True), settings, config) == 0
    out, err = capsys.readouterr()
    assert f"# ---- {tmp_path / 'units' / BOT_UNIT}" in out
    assert f"# ---- {tmp_path / 'units' / AGENT_UNIT}" in out
    assert f"ExecStart={sys.prefix}/bin/python -m bot run" in out or f"ExecStart={ROOT}/.venv/bin/python" in out
    assert re.search(rf"^ok +checkout \(WorkingDirectory\) +{re.escape(str(ROOT))}$", out, re.MULTILINE)
    assert "MISSING" not in out and err == ""
    assert "will be created" in out  # the data directory, and each agent's gateway.env
    assert not (tmp_path / "units").exists()  # a dry run writes nothing


async def test_dry_run_says_which_paths_do_not_exist(
    settings: Settings, config: ClusterConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere" / "openclaw.mjs"
    args = cli_args(tmp_path, dry_run=True, openclaw=missing)
    assert await cli_install_systemd(args, settings, config) == 1
    out, err = capsys.readouterr()
    assert f"missing: openclaw.mjs (agents' ExecStart): {missing}" in err
    webster = tmp_path / "atomizer" / "instances" / "webster"
    assert f"missing: instance directory of webster (agents' WorkingDirectory): {webster}" in err
    assert "MISSING" in out

    # Not dry: nothing is written while a path is missing.
    assert await cli_install_systemd(cli_args(tmp_path, openclaw=missing), settings, config) == 1
    assert "nothing written" in capsys.readouterr().err
    assert not (tmp_path / "units").exists()


async def test_install_moves_the_inline_token_into_each_gateway_env(
    settings: Settings, config: ClusterConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_instances(tmp_path, config)
    units = tmp_path / "units"
    units.mkdir()
    shutil.copy(FIXTURE / "systemd" / AGENT_UNIT, units / AGENT_UNIT)
    kept = tmp_path / "atomizer" / "instances" / "manager" / "gateway.env"
    kept.write_text("OPENCLAW_GATEWAY_TOKEN=fake-token-already-rotated-0000\n")
    kept.chmod(0o600)

    assert await cli_install_systemd(cli_args(tmp_path), settings, config) == 0
    out, err = capsys.readouterr()
    assert AS_BUILT_TOKEN not in out + err
    assert "rotate" in err and "already sets OPENCLAW_GATEWAY_TOKEN" in err

    for agent in config.agent_names:
        env = tmp_path / "atomizer" / "instances" / agent / "gateway.env"
        assert stat.S_IMODE(env.stat().st_mode) == 0o600
        expected = "fake-token-already-rotated-0000" if agent == "manager" else AS_BUILT_TOKEN
        assert read_env_file(env)["OPENCLAW_GATEWAY_TOKEN"] == expected
    new_unit = (units / AGENT_UNIT).read_text(encoding="utf-8")
    assert AS_BUILT_TOKEN not in new_unit and "EnvironmentFile=%h/atomizer/instances/%i/gateway.env" in new_unit
    [backup] = units.glob(f"{AGENT_UNIT}.bak-*")
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert AS_BUILT_TOKEN not in backup.read_text(encoding="utf-8")
    assert "OPENCLAW_GATEWAY_TOKEN=<moved to gateway.env>" in backup.read_text(encoding="utf-8")
    assert (tmp_path / "data").is_dir() and (units / BOT_UNIT).is_file()

    # Doctor now finds no inline secret, and every gateway.env in place.
    doctor = Doctor(config, settings, tmp_path / "atomizer" / "instances", units, home=tmp_path, user="atomizer")
    findings = doctor.report()
    assert not [f for f in findings if f.key and (f.key.startswith("Environment") or f.agent == "all")]

    # Once more: nothing changes.
    assert await cli_install_systemd(cli_args(tmp_path), settings, config) == 0
    assert "units already up to date" in capsys.readouterr().out
    assert len(list(units.glob("*.bak-*"))) == 1


# --- systemd-analyze verify ------------------------------------------------------------------------------------


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        if os.environ.get("ATOMIZER_REQUIRE_SYSTEMD_ANALYZE"):
            pytest.fail("systemd-analyze is required here (ATOMIZER_REQUIRE_SYSTEMD_ANALYZE) but not installed")
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    return found


def verify_paths(tmp_path: Path, *, user: bool) -> UnitPaths:
    """Real executables, since `verify` checks that ExecStart's program exists."""
    node = shutil.which("node") or "/bin/sh"  # the units' syntax is what is checked here, not Node's version
    entry = pwd.getpwuid(os.getuid())
    return UnitPaths(
        root=ROOT,
        python=Path(sys.executable),
        env_file=touch(tmp_path / ".env"),
        data_dir=tmp_path,
        node=Path(node),
        openclaw=touch(tmp_path / "openclaw.mjs"),
        user=None if user else entry.pw_name,
        uid=None if user else entry.pw_uid,
    )


@pytest.mark.parametrize("mode", ["system", "user"])
def test_rendered_units_pass_systemd_analyze_verify(tmp_path: Path, mode: str) -> None:
    analyze = systemd_analyze()
    units = tmp_path / "units"
    units.mkdir()
    for name, text in render_units(verify_paths(tmp_path, user=mode == "user")).items():
        (units / name).write_text(text, encoding="utf-8")
    env = dict(os.environ)
    command = [analyze]
    if mode == "user":
        runtime = tmp_path / "runtime"
        runtime.mkdir(mode=0o700)
        env["XDG_RUNTIME_DIR"] = str(runtime)  # a user manager needs one, even only to verify
        command.append("--user")
    command += ["verify", "--man=no", str(units / BOT_UNIT), str(units / "openclaw-atomizer@webster.service")]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)
    if mode == "user" and "Failed to initialize manager" in result.stderr:
        pytest.skip(f"systemd-analyze --user cannot start a user manager here: {result.stderr.strip()}")
    # Unknown keys and bad values are only warnings for systemd (exit 0): any line about our units fails the test.
    ours = [line for line in result.stderr.splitlines() if str(units) in line or "atomizer" in line]
    assert result.returncode == 0 and ours == [], result.stderr
