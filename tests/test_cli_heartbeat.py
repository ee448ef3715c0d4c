"""`atomizer-hq heartbeat …` and `atomizer-hq standup` through the real entry point, in a subprocess."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import FleetStarter
from tests.test_cli import cli_env, relocated_config, run_cli


async def fleet_config(start_fleet: FleetStarter, tmp_path: Path, **options: object) -> Path:
    config, _ = await start_fleet(**options)
    return relocated_config(tmp_path, {agent.name: agent.port for agent in config.agents})


async def test_list_shows_each_heartbeat_as_a_table_and_as_json(start_fleet: FleetStarter, tmp_path: Path) -> None:
    path = await fleet_config(start_fleet, tmp_path)
    env = cli_env(tmp_path)
    code, out, err = await run_cli("--config", str(path), "heartbeat", "list", env=env)
    assert code == 0, err
    header, manager, webster = out.splitlines()[:3]
    assert header.split() == ["agent", "schedule", "method", "missed", "next", "last", "paused"]
    assert manager.startswith("manager") and "every 30 min 00 s" in manager and " skip " in manager
    assert webster.startswith("webster") and manager.endswith("-")

    code, out, err = await run_cli("--config", str(path), "heartbeat", "list", "--json", env=env)
    assert code == 0, err
    jobs = json.loads(out)["heartbeats"]
    assert [job["agent"] for job in jobs] == ["manager", "webster"]
    assert jobs[0]["last"] is None and jobs[0]["next_slot"]


async def test_run_exits_0_when_the_heartbeat_completed_and_1_when_it_failed(
    start_fleet: FleetStarter, tmp_path: Path
) -> None:
    path = await fleet_config(start_fleet, tmp_path, specs={"webster": {"model_ok": False}})
    env = cli_env(tmp_path)
    code, out, err = await run_cli("--config", str(path), "heartbeat", "run", "manager", env=env)
    assert code == 0, err
    assert out.startswith("manager heartbeat (manual, ") and ": ok, verified up to completed, runId " in out

    code, out, err = await run_cli("--config", str(path), "heartbeat", "run", "webster", "--json", env=env)
    assert code == 1, err
    run = json.loads(out)
    assert (run["status"], run["level"], run["failed"]) == ("run_failed", "accepted", True)

    code, out, _ = await run_cli("--config", str(path), "heartbeat", "list", env=env)
    assert "webster: last run run_failed: hook accepted, run failed" in out and "(1 failed in a row)" in out


async def test_run_refuses_agents_without_a_job_and_unknown_agents(start_fleet: FleetStarter, tmp_path: Path) -> None:
    path = await fleet_config(start_fleet, tmp_path)
    env = cli_env(tmp_path)
    code, out, err = await run_cli("--config", str(path), "heartbeat", "run", "tech-lead", env=env)
    assert code == 2 and out == ""
    assert "atomizer-hq sends no heartbeat for tech-lead; add [heartbeat.tech-lead]" in err
    code, _, err = await run_cli("--config", str(path), "heartbeat", "run", "ghost", env=env)
    assert code == 2 and "manager" in err  # the valid names


async def test_run_without_a_hooks_token_says_what_to_set(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    del env["ATOMIZER_HOOKS_TOKEN"]
    code, _, err = await run_cli("heartbeat", "run", "manager", env=env)
    assert code == 2 and "ATOMIZER_HOOKS_TOKEN" in err


async def test_pause_for_a_while_until_resumed_and_resume(start_fleet: FleetStarter, tmp_path: Path) -> None:
    path = await fleet_config(start_fleet, tmp_path)
    env = cli_env(tmp_path)
    code, out, err = await run_cli("--config", str(path), "heartbeat", "pause", "webster", "--for", "2h", env=env)
    assert code == 0, err
    assert out.startswith("webster: heartbeats paused until 20") and "heartbeat resume webster" in out
    code, out, _ = await run_cli("--config", str(path), "heartbeat", "list", env=env)
    assert next(line for line in out.splitlines() if line.startswith("webster")).endswith(" UTC")

    code, out, _ = await run_cli("--config", str(path), "heartbeat", "pause", "webster", env=env)
    assert code == 0 and "paused until resumed" in out
    code, out, _ = await run_cli("--config", str(path), "heartbeat", "list", env=env)
    assert next(line for line in out.splitlines() if line.startswith("webster")).endswith("until resumed")

    code, out, _ = await run_cli("--config", str(path), "heartbeat", "pause", "webster", env=env)
    assert (code, out) == (0, "webster's heartbeats are already paused until resumed; nothing changed\n")

    code, out, err = await run_cli("--config", str(path), "heartbeat", "resume", "webster", env=env)
    assert code == 0, err
    assert out.startswith("webster: heartbeats resumed; next slot 20")
    code, out, err = await run_cli("--config", str(path), "heartbeat", "resume", "webster", env=env)
    assert (code, out) == (0, "webster's heartbeats are not paused; they already run; nothing changed\n"), err

    code, _, err = await run_cli("--config", str(path), "heartbeat", "pause", "webster", "--for", "30", env=env)
    assert code == 2 and "has no unit" in err


async def test_standup_prints_every_agent_and_post_says_it_needs_the_bot(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    code, out, err = await run_cli("standup", env=env)
    assert code == 0, err
    assert out.startswith("Daily standup · 24 h to ")
    for agent in ("manager", "tech-lead", "secretary", "auditor", "optimizer", "study-builder", "nx-expert", "webster"):
        assert f" {agent}\n" in out
    assert "heartbeats 0 ok / 0 failed / 0 skipped" in out

    code, out, err = await run_cli("standup", "--post", env=env)
    assert code == 1 and out == ""
    assert "needs the running bot's Discord connection" in err and "/standup post:true" in err

    code, out, _ = await run_cli("standup", "--help", env=env)
    assert code == 0 and "posting needs the running bot" in " ".join(out.split())


async def test_hints_name_the_cluster_file_in_use(start_fleet: FleetStarter, tmp_path: Path) -> None:
    """Told to edit a file, the operator must be told the one --config named, not the default's name."""
    (tmp_path / "lab").mkdir()
    path = (await fleet_config(start_fleet, tmp_path)).rename(tmp_path / "lab" / "fleet-b.toml")
    env = cli_env(tmp_path)
    code, _, err = await run_cli("--config", str(path), "heartbeat", "run", "tech-lead", env=env)
    assert code == 2
    assert f"add [heartbeat.tech-lead] with `every` or `cron` to {path}" in err
    assert "config/cluster.toml" not in err

    without = tmp_path / "lab" / "no-heartbeats.toml"
    without.write_text(path.read_text(encoding="utf-8").split("\n[heartbeat.manager]")[0], encoding="utf-8")
    code, out, err = await run_cli("--config", str(without), "heartbeat", "list", env=env)
    assert code == 0, err
    assert f"atomizer-hq sends no heartbeats; add [heartbeat.<agent>] with `every` or `cron` to {without}" in out


async def test_standup_from_the_host_probes_the_fleet_first(start_fleet: FleetStarter, tmp_path: Path) -> None:
    """Outside `run` no monitor records states: the standup looks now (as `status` does), not 'unknown' for all."""
    path = await fleet_config(start_fleet, tmp_path, specs={"auditor": {"down": True}})
    code, out, err = await run_cli("--config", str(path), "standup", env=cli_env(tmp_path))
    assert code == 0, err
    assert "8 agents, 7 ready · " in out
    assert "🟢 manager\n  ready · up " in out and "🔴 auditor\n  down · up " in out
    assert "unknown" not in out

    env = cli_env(tmp_path)
    del env["ATOMIZER_HOOKS_TOKEN"]
    code, out, err = await run_cli("--config", str(path), "standup", env=env)
    assert code == 0 and "⚪ manager\n  unknown · up " in out
    assert "agent states not probed (ATOMIZER_HOOKS_TOKEN is not set)" in err
