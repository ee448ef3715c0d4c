"""An empty secret is a missing one: the example env file copied as is, or a value of blanks, is refused
by `check-config`, `run` and `delegate` before anything is written, exactly as if it were unset."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import HOOKS_TOKEN, ROOT, SHIPPED_CONFIG
from tests.test_cli import cli_env, run_cli

EXAMPLE_ENV = ROOT / "config" / "atomizer.env.example"
GUILD_ID = "100000000000000001"


def site(tmp_path: Path, **values: str) -> tuple[Path, dict[str, str]]:
    """A site directory holding the shipped example as its `.env`, with some values filled in (others left
    as shipped), and an environment that sets none of them: `cp config/atomizer.env.example .env`."""
    lines = []
    for line in EXAMPLE_ENV.read_text(encoding="utf-8").splitlines():
        name = line.partition("=")[0]
        lines.append(f"{name}={values[name]}" if name in values and not line.startswith("#") else line)
    (tmp_path / ".env").write_text("\n".join(lines) + "\n", encoding="utf-8")
    env = cli_env(tmp_path)
    del env["ATOMIZER_HOOKS_TOKEN"], env["ATOMIZER_DB"]  # the .env decides; its database is data/atomizer.db
    return tmp_path, env


async def test_the_example_env_file_as_shipped_is_not_valid_for_run(tmp_path: Path) -> None:
    cwd, env = site(tmp_path)
    code, out, err = await run_cli("--config", str(SHIPPED_CONFIG), "check-config", "--for", "run", env=env, cwd=cwd)
    assert code == 2 and "valid" not in out, out
    lines = err.splitlines()
    assert len(lines) == 3 and "Traceback" not in err, err
    discord, guild, hooks = lines
    assert discord.startswith("environment: DISCORD_TOKEN: not set;") and "Reset Token" in discord
    assert guild.startswith("environment: ATOMIZER_GUILD_ID: not set;") and "Copy Server ID" in guild
    assert hooks.startswith("environment: ATOMIZER_HOOKS_TOKEN: not set for manager,") and "openclaw.json" in hooks


@pytest.mark.parametrize("blank", ["", "   ", '"  "', "'\t'"])
@pytest.mark.parametrize(
    ("command", "variable", "filled"),
    [
        ("run", "DISCORD_TOKEN", {"ATOMIZER_GUILD_ID": GUILD_ID, "ATOMIZER_HOOKS_TOKEN": HOOKS_TOKEN}),
        ("delegate", "ATOMIZER_HOOKS_TOKEN", {}),
        ("status", "ATOMIZER_HOOKS_TOKEN", {}),
    ],
)
async def test_a_blank_secret_is_reported_missing_for_the_command_that_needs_it(
    tmp_path: Path, command: str, variable: str, filled: dict[str, str], blank: str
) -> None:
    cwd, env = site(tmp_path, **filled, **{variable: blank})
    code, out, err = await run_cli(
        "--config", str(SHIPPED_CONFIG), "check-config", "--for", command, env=env, cwd=cwd
    )  # fmt: skip
    assert code == 2 and out == ""
    assert err.startswith(f"environment: {variable}: not set") and len(err.splitlines()) == 1, err


async def test_run_with_an_empty_discord_token_refuses_before_touching_the_database(tmp_path: Path) -> None:
    cwd, env = site(tmp_path, ATOMIZER_GUILD_ID=GUILD_ID, ATOMIZER_HOOKS_TOKEN=HOOKS_TOKEN)
    code, out, err = await run_cli("--config", str(SHIPPED_CONFIG), "run", env=env, cwd=cwd)
    assert code == 2 and out == ""
    assert err.startswith("atomizer-hq: environment: DISCORD_TOKEN: not set;") and "Traceback" not in err
    assert not (cwd / "data").exists()  # nothing migrated, nothing started


async def test_delegate_with_an_empty_hooks_token_refuses_and_records_nothing(tmp_path: Path) -> None:
    cwd, env = site(tmp_path, ATOMIZER_HOOKS_TOKEN=" ")
    base = ("--config", str(SHIPPED_CONFIG))
    code, out, err = await run_cli(*base, "delegate", "nx-expert", "Mesh the M2 mirror", env=env, cwd=cwd)
    assert code == 2 and out == ""
    assert err.startswith("atomizer-hq: environment: ATOMIZER_HOOKS_TOKEN: not set for manager,"), err
    assert not (cwd / "data").exists()
    code, out, err = await run_cli(*base, "delegations", "list", env=env, cwd=cwd)
    assert code == 0 and out == "no delegations\n", err
