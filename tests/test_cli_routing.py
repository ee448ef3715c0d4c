"""`atomizer-hq route` and `atomizer-hq delegate auto --needs …` on the simulated fleet (docs/routing.md)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from bot.delegation import chain_footer
from tests.conftest import FleetStarter
from tests.test_cli import cli_env, relocated_config, run_cli


async def test_delegate_auto_reaches_the_agent_that_has_the_capability(
    start_fleet: FleetStarter, tmp_path: Path
) -> None:
    config, fleet = await start_fleet(specs={"webster": {"down": True}})
    path = relocated_config(tmp_path, {a.name: a.port for a in config.agents})
    env, base = cli_env(tmp_path), ("--config", str(path))

    code, out, err = await run_cli(*base, "route", "--needs", "meshing", env=env)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "nx-expert: has meshing; ready; 0 in flight; no delegations yet"
    rows = {line.split()[0]: line for line in lines[2:]}
    assert set(rows) == set(config.agent_names)
    assert rows["nx-expert"].endswith("chosen") and rows["manager"].endswith("lacks meshing")
    assert "lacks meshing; down (connection refused" in rows["webster"]

    code, out, err = await run_cli(*base, "delegate", "auto", "Mesh the M2 mirror", "--needs", "Meshing", env=env)
    assert code == 0, err
    assert out.splitlines()[0] == "route: nx-expert: has meshing; ready; 0 in flight; no delegations yet"
    assert out.splitlines()[1].startswith("D-1 to nx-expert: accepted (runId ")
    assert [hook.body["message"] for hook in fleet.received("nx-expert")] == [
        "Mesh the M2 mirror" + chain_footer("D-1")
    ]

    code, out, _ = await run_cli(*base, "route", "--needs", "meshing", "--json", env=env)
    document = json.loads(out)
    assert document["chosen"] == "nx-expert"
    assert document["explanation"] == "nx-expert: has meshing; ready; 1 in flight; 1 of the last 1 accepted"

    # Only readiness fails: queued for the best of them, and said so.
    code, out, err = await run_cli(*base, "delegate", "auto", "Find the CTE", "--needs", "materials-data", env=env)
    assert code == 0, err
    assert out.startswith("route: queued for webster: no agent with materials-data is ready; webster is down (")
    assert "sent when it is back" in out and "D-2 to webster: queued" in out
    assert fleet.received("webster") == []


async def test_routing_refusals_on_the_command_line(start_fleet: FleetStarter, tmp_path: Path) -> None:
    config, fleet = await start_fleet()
    path = relocated_config(tmp_path, {a.name: a.port for a in config.agents})
    env, base = cli_env(tmp_path), ("--config", str(path))

    code, _, err = await run_cli(*base, "delegate", "auto", "Mesh", "--needs", "meshng", env=env)
    assert code == 2 and "no agent declares the capability 'meshng'. Did you mean 'meshing'?" in err
    code, _, err = await run_cli(*base, "delegate", "auto", "Mesh", env=env)
    assert code == 2 and "say what the work needs, e.g. --needs meshing" in err
    code, _, err = await run_cli(*base, "delegate", "webster", "Mesh", "--needs", "meshing", env=env)
    assert code == 2 and "webster lacks meshing (it declares research, literature, materials-data)" in err

    # Nobody may: the table, never a silent fallback to another agent.
    code, out, err = await run_cli(*base, "route", "--needs", "meshing", "--as", "secretary", env=env)
    assert code == 1
    assert out.startswith("nobody can take work needing meshing: nx-expert: secretary may not delegate to nx-expert")
    as_secretary = ("delegate", "--as", "secretary", "auto", "Mesh", "--needs", "meshing")
    code, out, err = await run_cli(*base, *as_secretary, env=env)
    assert code == 2 and "Traceback" not in err
    assert "nobody can take work needing meshing" in err and "nx-expert" in err and "lacks meshing" in err
    assert fleet.received() == []

    code, out, err = await run_cli(*base, "delegate", "auto", "Mesh", "--needs", "meshing", "--dry-run", env=env)
    assert code == 0, err
    assert out.startswith("route: nx-expert: has meshing") and "dry run: would be allowed" in out
    assert fleet.received() == []


async def test_a_request_that_cannot_be_sent_is_refused_before_anyone_is_chosen(
    start_fleet: FleetStarter, tmp_path: Path
) -> None:
    """Bad input is the request's fault, whoever would take it: no routing decision in the trail for it."""
    config, fleet = await start_fleet()
    path = relocated_config(tmp_path, {a.name: a.port for a in config.agents})
    env, base = cli_env(tmp_path), ("--config", str(path))
    for args, says in [
        (("auto", "Mesh", "--needs", "meshing", "--to", "#no-such-channel"), "#no-such-channel"),
        (("auto", "   ", "--needs", "meshing"), "the instruction is empty"),
        (("auto", "Mesh", "--needs", "meshing", "--wait-result", "--to", " "), "the delivery target is empty"),
    ]:
        code, out, err = await run_cli(*base, "delegate", *args, env=env)
        assert (code, out) == (2, "") and says in err and "Traceback" not in err, (args, err)
    with sqlite3.connect(tmp_path / "atomizer.db") as db:
        assert db.execute("SELECT count(*) FROM audit_log WHERE action = 'route'").fetchone() == (0,)
    assert fleet.received() == []


async def test_delegate_auto_says_when_the_chosen_agent_did_not_admit_it_and_who_took_it(
    start_fleet: FleetStarter, tmp_path: Path
) -> None:
    config, fleet = await start_fleet(specs={"study-builder": {"busy": True}})
    path = relocated_config(tmp_path, {a.name: a.port for a in config.agents})
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace('capabilities = ["study-setup"]', 'capabilities = ["study-setup", "meshing"]', 1))
    env, base = cli_env(tmp_path), ("--config", str(path))
    code, out, err = await run_cli(*base, "delegate", "auto", "Mesh the M2 mirror", "--needs", "meshing", env=env)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("route: study-builder: has meshing; ready")
    assert lines[1] == "route: study-builder did not admit it; routed again to nx-expert"
    assert lines[2].startswith("D-1 to nx-expert: accepted")
    assert [hook.agent for hook in fleet.received()] == ["nx-expert"]


async def test_when_the_only_agent_that_can_is_busy_the_work_queues_for_it_with_the_table(
    start_fleet: FleetStarter, tmp_path: Path
) -> None:
    """The day's 13:40 (scenarios.md): nx-expert is busy (its gateway answered 503: routing learned its cap) and no
    other agent can mesh: queued for nx-expert, saying so with the table, never handed to someone who cannot."""
    config, fleet = await start_fleet(specs={"nx-expert": {"busy": True}})
    path = relocated_config(tmp_path, {a.name: a.port for a in config.agents})
    env, base = cli_env(tmp_path), ("--config", str(path))
    code, out, err = await run_cli(*base, "delegate", "auto", "Mesh the mounts", "--needs", "meshing", env=env)
    assert code == 0 and "D-1 to nx-expert: queued" in out, (out, err)  # the 503 taught routing its cap
    code, out, err = await run_cli(*base, "delegate", "auto", "Re-mesh the mounts", "--needs", "meshing", env=env)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("route: queued for nx-expert: no agent with meshing is free; nx-expert is busy: 1 in ")
    assert lines[0].endswith("from a 503); sent when it has room")
    assert lines[1].split() == ["agent", "capable", "authority", "ready", "silence", "in", "flight", "accepted",
                                "verdict"]  # fmt: skip
    rows = {line.split()[0]: line for line in lines[2:10]}
    assert set(rows) == set(config.agent_names) and rows["webster"].endswith("lacks meshing")
    assert rows["nx-expert"].endswith("chosen (queued until it has room)")
    assert lines[10].startswith("D-2 to nx-expert: queued")
    assert fleet.received() == []
