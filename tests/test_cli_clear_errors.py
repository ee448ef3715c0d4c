"""Bad places and bad values on the command line: one line saying what was wrong and what would be right,
exit 2, never a traceback."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from bot.simulator import free_ports
from tests.conftest import SHIPPED_CONFIG
from tests.test_cli import cli_env, run_cli

LEVELS = "DEBUG, INFO, WARNING or ERROR"


def one_line(err: str) -> str:
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def sys_is_read_only() -> bool:
    """sysfs refuses new files even to root, which is what makes it a read-only directory for any user."""
    if not Path("/sys").is_dir():
        return False
    try:
        os.close(os.open("/sys/atomizer-probe.db", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600))
    except OSError:
        return True
    os.unlink("/sys/atomizer-probe.db")
    return False


async def test_a_directory_as_the_database_is_named_as_one(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    code, out, err = await run_cli(
        "--config", str(SHIPPED_CONFIG), "--db", str(tmp_path / "data"), "delegations", env=cli_env(tmp_path)
    )  # fmt: skip
    assert code == 2 and out == ""
    assert one_line(err) == (
        f"atomizer-hq: {tmp_path / 'data'} is a directory, not a database file; point ATOMIZER_DB or --db at a "
        f"file, e.g. {tmp_path / 'data' / 'atomizer.db'}\n"
    )


@pytest.mark.parametrize("below", ["atomizer.db", "sub/atomizer.db"])
async def test_a_file_in_the_way_of_the_databases_directory_is_named(tmp_path: Path, below: str) -> None:
    (tmp_path / "notes.txt").write_text("mine\n", encoding="utf-8")
    db = tmp_path / "notes.txt" / below
    env = cli_env(tmp_path)
    code, out, err = await run_cli("--config", str(SHIPPED_CONFIG), "--db", str(db), "delegations", env=env)
    assert code == 2 and out == ""
    assert f"{tmp_path / 'notes.txt'} is a file, not a directory" in one_line(err)
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "mine\n"


@pytest.mark.parametrize(
    "place",
    [
        pytest.param("sysfs", marks=pytest.mark.skipif(not sys_is_read_only(), reason="no read-only /sys here")),
        pytest.param(
            "chmod",
            marks=pytest.mark.skipif(
                os.geteuid() == 0, reason="root writes whatever the mode bits say; the sysfs case covers root"
            ),
        ),
    ],
)
async def test_a_database_in_a_directory_that_is_not_writable_says_so(tmp_path: Path, place: str) -> None:
    if place == "sysfs":
        directory = Path("/sys")
    else:
        directory = tmp_path / "locked"
        directory.mkdir(mode=0o500)
    code, out, err = await run_cli(
        "--config", str(SHIPPED_CONFIG), "--db", str(directory / "atomizer.db"), "delegations", env=cli_env(tmp_path)
    )  # fmt: skip
    assert code == 2 and out == ""
    assert f"its directory {directory} is not writable" in one_line(err)
    assert "unable to open database file" not in err
    assert not (directory / "atomizer.db").exists()


async def test_an_unknown_log_level_lists_the_valid_ones(tmp_path: Path) -> None:
    base = ("--config", str(SHIPPED_CONFIG))
    code, out, err = await run_cli(*base, "--log-level", "verbose", "check-config", env=cli_env(tmp_path))
    assert code == 2 and out == "" and "Traceback" not in err
    # one line that says what would be right and where to read more, not argparse's usage block
    assert one_line(err) == (
        "atomizer-hq: error: argument --log-level: invalid choice: 'VERBOSE' "
        "(choose from 'DEBUG', 'INFO', 'WARNING', 'ERROR'); see `atomizer-hq --help`\n"
    )
    code, _, err = await run_cli(*base, "--log-level", "debug", "check-config", env=cli_env(tmp_path))
    assert code == 0, err
    env = cli_env(tmp_path, ATOMIZER_LOG_LEVEL="verbose")
    code, out, err = await run_cli(*base, "check-config", env=env)
    assert code == 2 and out == ""
    assert one_line(err) == (
        f"atomizer-hq: environment: ATOMIZER_LOG_LEVEL: 'verbose' is not a log level; use {LEVELS}\n"
    )
    code, _, err = await run_cli(*base, "check-config", env=cli_env(tmp_path, ATOMIZER_LOG_LEVEL="warning"))
    assert code == 0, err


async def test_simulate_on_a_taken_port_names_the_port_and_the_agent(tmp_path: Path) -> None:
    base = free_ports(3)
    with socket.socket() as holder:  # another program on tech-lead's port
        holder.bind(("127.0.0.1", base + 4))
        holder.listen()
        code, out, err = await run_cli(
            "--config", str(SHIPPED_CONFIG), "simulate", "--agents", "3", "--base-port", str(base),
            env=cli_env(tmp_path),
        )  # fmt: skip
    assert code == 2 and out == ""
    line = one_line(err)
    assert line.startswith(f"atomizer-hq: port {base + 4} on 127.0.0.1 (for tech-lead) is already in use;")
    assert "--base-port" in line
    with socket.socket() as probe:  # manager's port, bound before the clash, was released
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", base))
