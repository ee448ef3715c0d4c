"""SystemdUnits against a fake systemctl/journalctl that keeps unit states in files and logs every call."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bot.cli import main
from bot.config import ClusterConfig, SystemdConfig, load_cluster_config
from bot.errors import InvalidInput, SystemdUnavailable, UnitCommandFailed, UnknownAgent
from bot.systemd import MAX_LOG_LINES, SystemdUnits, resolve_agents
from tests.conftest import SHIPPED_CONFIG

FAKE = Path(__file__).resolve().parent / "fake_systemctl.py"
WEBSTER = "openclaw-atomizer@webster.service"


class FakeSystemd:
    """The fake's state directory, seen from a test: set states and flags, read the calls."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.systemctl = [sys.executable, str(FAKE), "--state-dir", str(state_dir)]
        self.journalctl = [*self.systemctl, "--journalctl"]

    def units(self, **options: object) -> SystemdUnits:
        return SystemdUnits(self.systemctl, self.journalctl, **options)  # type: ignore[arg-type]

    def set_state(self, unit: str, state: str) -> None:
        (self.dir / "units").mkdir(parents=True, exist_ok=True)
        (self.dir / "units" / unit).write_text(state + "\n", encoding="utf-8")

    def state(self, unit: str) -> str:
        path = self.dir / "units" / unit
        return path.read_text(encoding="utf-8").strip() if path.exists() else "inactive"

    def flag(self, name: str, text: str = "") -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / name).write_text(text, encoding="utf-8")

    def journal(self, unit: str, *lines: str) -> None:
        (self.dir / "journal").mkdir(parents=True, exist_ok=True)
        (self.dir / "journal" / unit).write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")

    def calls(self) -> list[list[str]]:
        path = self.dir / "calls.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def fake(tmp_path: Path) -> FakeSystemd:
    return FakeSystemd(tmp_path / "systemd")


# --- state ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        (None, "inactive"),
        ("active", "active"),
        ("failed", "failed"),
        ("activating", "activating"),
        ("deactivating", "deactivating"),
        ("reloading", "active"),
    ],
)
async def test_is_active_reads_each_state(fake: FakeSystemd, written: str | None, expected: str) -> None:
    if written:
        fake.set_state(WEBSTER, written)
    state = await fake.units().is_active("webster")
    assert (state.agent, state.unit, state.state, state.reason) == ("webster", WEBSTER, expected, "")
    assert fake.calls() == [["systemctl", "is-active", WEBSTER]]


async def test_an_unexpected_answer_is_unknown_with_what_systemctl_said(fake: FakeSystemd) -> None:
    fake.set_state(WEBSTER, "maintenance")
    state = await fake.units().is_active("webster")
    assert state.state == "unknown"
    assert "'maintenance'" in state.reason


async def test_states_of_several_agents_come_back_in_the_order_asked(fake: FakeSystemd) -> None:
    fake.set_state("openclaw-atomizer@manager.service", "active")
    states = await fake.units().states(["webster", "manager", "tech-lead"])
    assert [(s.agent, s.state) for s in states] == [
        ("webster", "inactive"),
        ("manager", "active"),
        ("tech-lead", "inactive"),
    ]


# --- actions ----------------------------------------------------------------------------------


async def test_start_stop_restart_report_the_state_afterwards(fake: FakeSystemd) -> None:
    units = fake.units()
    started = await units.start("webster")
    assert (started.ok, started.action, started.state.state, started.error) == (True, "start", "active", None)
    assert started.summary == "webster: started (active)"
    assert fake.state(WEBSTER) == "active"

    stopped = await units.stop("webster")
    assert (stopped.ok, stopped.state.state) == (True, "inactive")
    assert stopped.summary == "webster: stopped (inactive)"

    restarted = await units.restart("webster")
    assert (restarted.ok, restarted.state.state) == (True, "active")
    restarted.raise_for_error()  # nothing to raise
    assert restarted.to_dict() == {
        "agent": "webster", "unit": WEBSTER, "action": "restart", "ok": True,
        "state": "active", "reason": None, "error": None,
    }  # fmt: skip

    # Each action, then is-active to read the state it left: the unit always ONE argv element.
    assert fake.calls() == [
        ["systemctl", "start", WEBSTER], ["systemctl", "is-active", WEBSTER],
        ["systemctl", "stop", WEBSTER], ["systemctl", "is-active", WEBSTER],
        ["systemctl", "restart", WEBSTER], ["systemctl", "is-active", WEBSTER],
    ]  # fmt: skip


async def test_a_failed_start_carries_systemctls_own_message(fake: FakeSystemd) -> None:
    fake.flag(f"fail@{WEBSTER}")
    result = await fake.units().start("webster")
    assert not result.ok and result.state.state == "failed"
    assert isinstance(result.error, UnitCommandFailed) and result.error.exit_code == 1
    assert result.error.message.startswith(
        f"webster: start failed: Job for {WEBSTER} failed because the control process exited with error code."
    )
    assert "see `atomizer-hq cluster logs webster`" in result.error.message
    assert "\n" not in result.error.message  # one line, for a terminal or a Discord reply
    with pytest.raises(UnitCommandFailed):
        result.raise_for_error()
    assert result.to_dict()["error"]["code"] == "unit_command_failed"


async def test_a_failed_stop_leaves_the_unit_as_it_was(fake: FakeSystemd) -> None:
    fake.set_state(WEBSTER, "active")
    fake.flag("fail", f"Failed to stop {WEBSTER}: Access denied")
    result = await fake.units().stop("webster")
    assert not result.ok and result.state.state == "active"
    assert result.summary == f"webster: stop failed (active): Failed to stop {WEBSTER}: Access denied"


async def test_a_unit_that_dies_right_after_a_successful_start_is_a_failure(fake: FakeSystemd) -> None:
    fake.flag(f"crash@{WEBSTER}")
    result = await fake.units().restart("webster")
    assert not result.ok and result.state.state == "failed"
    assert isinstance(result.error, UnitCommandFailed)
    assert f"systemctl restart succeeded but {WEBSTER} is failed now" in result.error.message


async def test_apply_runs_in_the_order_given_and_reports_every_agent(fake: FakeSystemd) -> None:
    fake.flag("fail@openclaw-atomizer@tech-lead.service")
    results = await fake.units().apply("start", ["manager", "tech-lead", "webster"])
    assert [(r.agent, r.ok) for r in results] == [("manager", True), ("tech-lead", False), ("webster", True)]
    assert [c[2] for c in fake.calls() if c[1] == "start"] == [
        "openclaw-atomizer@manager.service", "openclaw-atomizer@tech-lead.service", WEBSTER,
    ]  # fmt: skip


# --- systemd unavailable ----------------------------------------------------------------------


async def test_no_user_bus_is_an_unknown_state_and_a_clear_error(fake: FakeSystemd) -> None:
    fake.flag("no-bus")
    units = fake.units()
    state = await units.is_active("webster")
    assert state.state == "unknown"
    assert "systemd is not running for this user (Failed to connect to bus: No medium found)" in state.reason
    assert "loginctl enable-linger $USER" in state.reason

    result = await units.restart("webster")
    assert not result.ok and result.state.state == "unknown"
    assert isinstance(result.error, SystemdUnavailable)
    assert result.error.reason == "Failed to connect to bus: No medium found"
    assert result.summary == "webster: restart failed: systemd unavailable (Failed to connect to bus: No medium found)"
    with pytest.raises(SystemdUnavailable, match="enable-linger"):
        await units.logs("webster", 10)
    # No point asking is-active after the bus refused the restart.
    assert fake.calls()[1:] == [["systemctl", "restart", WEBSTER], ["journalctl", "-u", WEBSTER, "-n", "10",
                                                                       "--no-pager", "-o", "short-iso"]]  # fmt: skip


@pytest.mark.parametrize(
    "stderr",
    [
        "System has not been booted with systemd as init system (PID 1). Can't operate.",
        "Failed to connect to user scope bus via local transport: $DBUS_SESSION_BUS_ADDRESS and $XDG_RUNTIME_DIR "
        "not defined",
    ],
)
async def test_other_ways_systemd_says_it_is_not_there(tmp_path: Path, stderr: str) -> None:
    script = tmp_path / "systemctl.py"
    script.write_text(f"import sys\nprint({stderr!r}, file=sys.stderr)\nsys.exit(1)\n", encoding="utf-8")
    units = SystemdUnits([sys.executable, str(script)], [sys.executable, str(script)])
    state = await units.is_active("manager")
    assert state.state == "unknown" and stderr in state.reason
    result = await units.start("manager")
    assert isinstance(result.error, SystemdUnavailable) and result.error.reason == stderr


async def test_a_missing_systemctl_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    units = SystemdUnits([str(tmp_path / "no-such-systemctl"), "--user"], [str(tmp_path / "no-such-journalctl")])
    state = await units.is_active("manager")
    assert state.state == "unknown" and "no-such-systemctl not found" in state.reason
    result = await units.stop("manager")
    assert isinstance(result.error, SystemdUnavailable) and "loginctl enable-linger" in result.error.message
    with pytest.raises(SystemdUnavailable, match="no-such-journalctl not found"):
        await units.logs("manager")


async def test_a_hung_systemctl_is_killed_at_the_timeout(fake: FakeSystemd) -> None:
    fake.flag("hang")
    units = fake.units(timeout=0.3)
    result = await units.restart("webster")
    assert not result.ok and isinstance(result.error, UnitCommandFailed)
    assert "did not finish within 0.3 s; the job may still be running" in result.error.message
    assert result.state.state == "unknown" and "did not answer within 0.3 s" in result.state.reason


# --- names never reach a shell, nor an argv, unchecked ----------------------------------------


@pytest.mark.parametrize(
    "name", ["a;rm -rf x", "$(touch x)", "../manager", "manager\n", "Manager", "-manager", "", "web ster", "x" * 40]
)
async def test_an_unsafe_agent_name_is_refused_before_anything_runs(fake: FakeSystemd, name: str) -> None:
    units = fake.units()
    for call in (units.is_active, units.start, units.stop, units.restart, units.logs):
        with pytest.raises(InvalidInput, match="is not a valid agent name"):
            await call(name)
    with pytest.raises(InvalidInput):
        await units.states(["manager", name])
    with pytest.raises(InvalidInput):
        await units.apply("stop", ["manager", name])  # the whole batch, not the agents before it
    assert fake.calls() == []
    assert not (fake.dir / "calls.log").exists()


async def test_a_unit_template_places_the_name_in_one_argument(fake: FakeSystemd) -> None:
    units = fake.units(unit_template="atomizer-{agent}.service")
    await units.start("nx-expert")
    assert fake.calls()[0] == ["systemctl", "start", "atomizer-nx-expert.service"]
    assert units.unit("nx-expert") == "atomizer-nx-expert.service"


# --- logs -------------------------------------------------------------------------------------


async def test_logs_ask_journalctl_for_the_last_lines_of_the_unit(fake: FakeSystemd) -> None:
    fake.journal(WEBSTER, "one", "two", "three")
    text = await fake.units().logs("webster", 2)
    assert text.splitlines() == [
        "2026-03-01T09:00:00+0000 host openclaw[100]: two",
        "2026-03-01T09:00:00+0000 host openclaw[100]: three",
    ]
    assert fake.calls() == [["journalctl", "-u", WEBSTER, "-n", "2", "--no-pager", "-o", "short-iso"]]
    assert (await fake.units().logs("manager")).strip() == "-- No entries --"
    journal, check = fake.calls()[-2:]
    assert journal[3:5] == ["-n", "100"]
    assert check == ["systemctl", "is-active", "openclaw-atomizer@manager.service"]  # an empty log: is systemd there?


@pytest.mark.parametrize("lines", [0, -1, MAX_LOG_LINES + 1, True])
async def test_log_lines_are_capped(fake: FakeSystemd, lines: int) -> None:
    with pytest.raises(InvalidInput, match="between 1 and 5000"):
        await fake.units().logs("webster", lines)
    assert fake.calls() == []


async def test_log_lines_at_the_limits_are_fine(fake: FakeSystemd) -> None:
    units = fake.units()
    await units.logs("webster", 1)
    await units.logs("webster", MAX_LOG_LINES)
    assert [c[4] for c in fake.calls() if c[0] == "journalctl"] == ["1", "5000"]


async def test_a_journalctl_error_is_a_unit_command_failure(tmp_path: Path) -> None:
    script = tmp_path / "journalctl.py"
    script.write_text("import sys\nprint('Failed to add match: Invalid argument', file=sys.stderr)\nsys.exit(1)\n")
    units = SystemdUnits(journalctl=[sys.executable, str(script)])
    with pytest.raises(UnitCommandFailed, match="webster: logs failed: Failed to add match: Invalid argument"):
        await units.logs("webster", 5)


# --- configuration and `all` ------------------------------------------------------------------


def test_the_systemd_table_defaults_to_the_as_built_units(shipped_config: ClusterConfig) -> None:
    assert shipped_config.systemd == SystemdConfig()
    assert shipped_config.systemd.systemctl == ["systemctl", "--user"]
    assert shipped_config.systemd.journalctl == ["journalctl", "--user"]
    assert shipped_config.systemd.unit_for("webster") == WEBSTER
    assert SystemdUnits.from_config(shipped_config.systemd).unit("webster") == WEBSTER


def test_the_shipped_file_documents_the_systemd_table(tmp_path: Path) -> None:
    text = SHIPPED_CONFIG.read_text(encoding="utf-8")
    uncommented = text.replace("# [systemd]\n", "[systemd]\n").replace("# systemctl = ", "systemctl = ")
    for key in ("journalctl", "unit_template", "timeout"):
        uncommented = uncommented.replace(f"# {key} = ", f"{key} = ")
    path = tmp_path / "cluster.toml"
    path.write_text(uncommented, encoding="utf-8")
    assert load_cluster_config(path).systemd == SystemdConfig()


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        (
            'unit_template = "openclaw-atomizer.service"',
            "systemd.unit_template: 'openclaw-atomizer.service' does not contain {agent}; "
            "write where the agent's name goes",
        ),
        ('unit_template = "atomizer {agent}"', "systemd.unit_template: 'atomizer {agent}' is not a systemd unit name"),
        ("systemctl = []", "systemd.systemctl: [] is not a command; write the program and its options as a list"),
        ('journalctl = "journalctl --user"', "systemd.journalctl: 'journalctl --user' is not a list"),
        ("timeout = 0", "systemd.timeout: 0 is out of range"),
        ('sytemctl = ["systemctl"]', "systemd.sytemctl: unknown key 'sytemctl'"),
    ],
)
def test_check_config_names_a_bad_systemd_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, table: str, expected: str
) -> None:
    for name in ("ATOMIZER_CONFIG", "ATOMIZER_DB"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "cluster.toml"
    path.write_text(SHIPPED_CONFIG.read_text(encoding="utf-8") + f"\n[systemd]\n{table}\n", encoding="utf-8")
    (tmp_path / "empty.env").write_text("", encoding="utf-8")
    code = main(["--config", str(path), "--env-file", str(tmp_path / "empty.env"), "check-config"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{path}: {expected}" in err, err


def test_all_is_config_order_and_stop_all_is_the_reverse(shipped_config: ClusterConfig) -> None:
    names = shipped_config.agent_names
    assert resolve_agents(shipped_config, "all", "start") == names
    assert resolve_agents(shipped_config, "all", "restart") == names
    assert resolve_agents(shipped_config, "all", "status") == names
    assert resolve_agents(shipped_config, "ALL", "stop") == names[::-1]
    assert resolve_agents(shipped_config, " Webster ", "stop") == ["webster"]
    with pytest.raises(UnknownAgent, match="Did you mean 'nx-expert'"):
        resolve_agents(shipped_config, "nx-exprt", "start")
