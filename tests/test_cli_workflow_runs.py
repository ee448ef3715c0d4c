"""`atomizer-hq workflow …` and `delegate --wait-result` through the real entry point, in subprocesses."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from bot.delegation import chain_footer
from bot.simulator import RELEASE_LEGACY
from bot.workflows.engine import step_footer
from tests.conftest import ROOT, FleetStarter
from tests.test_cli import cli_env, relocated_config, run_cli

DEFINITION = {
    "name": "find-and-report",
    "description": "Find a number, approve it, report it.",
    "inputs": {"what": {"type": "string"}},
    "deliver_to": "none",
    "steps": [
        {"id": "find", "agent": "webster", "message": "Find ${{ inputs.what }}.", "timeout": "1h"},
        {"id": "ok", "needs": ["find"],
         "approval": {"prompt": "Fine?", "approvers": ["role:admin"], "starter_may_approve": True}},
        {"id": "report", "agent": "secretary", "needs": ["ok"], "message": "Report ${{ steps.find.output }}.",
         "timeout": "1h"},
    ],
}  # fmt: skip


async def test_a_run_from_the_command_line(start_fleet: FleetStarter, tmp_path: Path) -> None:
    config, fleet = await start_fleet(release=RELEASE_LEGACY)
    path = relocated_config(tmp_path, {a.name: a.port for a in config.agents})
    env, base = cli_env(tmp_path), ("--config", str(path))
    definition = tmp_path / "find.json"
    definition.write_text(json.dumps(DEFINITION), encoding="utf-8")

    code, out, err = await run_cli(*base, "workflow", "run", "--definition", str(definition), "--input", "what=CTE",
                                   env=env)  # fmt: skip
    assert code == 0, err
    assert out.startswith("W-1 find-and-report: running") and "find         webster" in out
    assert "atomizer-hq run" in err  # progress after dispatch needs the running bot
    assert [hook.body["message"] for hook in fleet.received("webster")] == [
        "Find CTE." + step_footer("W-1/find#1") + chain_footer("D-1")
    ]

    code, out, err = await run_cli(*base, "workflow", "result", "W-1", "find", "--ok", "0.007 ppm/K", env=env)
    assert (code, out) == (0, "W-1/find: succeeded\n"), err
    code, out, err = await run_cli(*base, "workflow", "reject", "W-1", "ok", env=env)
    assert code == 2 and "rejecting W-1/ok needs a reason" in err and "--reason" in err, err
    code, out, err = await run_cli(*base, "workflow", "approve", "W-1", "ok", "--reason", "fine", env=env)
    assert code == 0 and "approved by you; the gate is approved" in out, err
    code, _, err = await run_cli(*base, "workflow", "approve", "W-1", "ok", env=env)
    assert code == 1 and "already approved by you" in err and "Traceback" not in err
    assert [hook.body["message"] for hook in fleet.received("secretary")] == [
        "Report 0.007 ppm/K." + step_footer("W-1/report#1") + chain_footer("D-2")
    ]

    code, out, _ = await run_cli(*base, "workflow", "show", "W-1", env=env)
    assert code == 0 and "    approved by " in out and "(cli, " in out and "UTC): fine\n" in out, out
    code, out, _ = await run_cli(*base, "workflow", "show", "W-1", "--json", env=env)
    shown = json.loads(out)
    assert code == 0 and [s["status"] for s in shown["steps"]] == ["succeeded", "approved", "running"]
    assert shown["steps"][0]["output_source"] == "person"
    code, out, _ = await run_cli(*base, "workflow", "cancel", "W-1", "--reason", "enough", env=env)
    assert (code, out) == (0, "W-1 cancelled\n")
    code, out, _ = await run_cli(*base, "workflow", "runs", "--json", env=env)
    assert [(r["id"], r["status"]) for r in json.loads(out)] == [("W-1", "cancelled")]

    # By name, from the catalog (the shipped workflows/ dir, relative to the working directory).
    code, out, err = await run_cli(*base, "workflow", "run", "m2-mirror-study", "--input", "mirror=M1", env=env,
                                   cwd=ROOT)  # fmt: skip
    assert code == 0 and out.startswith("W-2 m2-mirror-study: running"), err
    assert fleet.received("nx-expert")[-1].body["message"].startswith("Mesh the M1 mirror")

    for args, message in (
        (("workflow", "run", "--definition", str(definition), "--input", "what"), "write NAME=VALUE"),
        (("workflow", "run", "--definition", str(definition)), "input what is required"),
        (("workflow", "show", "W-x"), "is not a workflow run id"),
        (("workflow", "retry", "W-1", "--from", "nope"), "has no step 'nope'"),
    ):
        code, out, err = await run_cli(*base, *args, env=env)
        assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


async def test_delegate_wait_result_prints_the_agents_output(start_fleet: FleetStarter, tmp_path: Path) -> None:
    config, fleet = await start_fleet(release=RELEASE_LEGACY)
    path = relocated_config(tmp_path, {a.name: a.port for a in config.agents})
    env, base = cli_env(tmp_path), ("--config", str(path))
    waiting = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *base, "delegate", "webster", "Find the CTE of ${{ Zerodur }}", "--wait-result",
        "--wait-s", "120", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(60):
            # Another process sends it: no event of ours to await, so look until the hook has arrived.
            while not fleet.received("webster"):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        [hook] = fleet.received("webster")
        assert hook.body["message"] == "Find the CTE of ${{ Zerodur }}" + step_footer("W-1/work#1") + chain_footer(
            "D-1"
        )  # text
        code, _, err = await run_cli(*base, "workflow", "result", "W-1", "work", "--ok", "0.007 ppm/K", env=env)
        assert code == 0, err
        out_bytes, err_bytes = await asyncio.wait_for(waiting.communicate(), 60)
    finally:
        if waiting.returncode is None:
            waiting.kill()
            await waiting.wait()
    assert waiting.returncode == 0, err_bytes.decode()
    assert out_bytes.decode() == "0.007 ppm/K\n"


async def test_run_refuses_an_input_that_makes_a_step_too_big_naming_the_step(
    start_fleet: FleetStarter, tmp_path: Path
) -> None:
    config, fleet = await start_fleet()
    path = relocated_config(tmp_path, {a.name: a.port for a in config.agents})
    env, base = cli_env(tmp_path), ("--config", str(path))
    definition = tmp_path / "find.json"
    thrice = {**DEFINITION["steps"][0], "message": "Find ${{ inputs.what }}, ${{ inputs.what }}, ${{ inputs.what }}."}
    definition.write_text(json.dumps({**DEFINITION, "steps": [thrice, *DEFINITION["steps"][1:]]}), encoding="utf-8")
    # 100 KB on the command line (an argument holds at most 128 KiB), three times in find's message.
    code, out, err = await run_cli(*base, "workflow", "run", "--definition", str(definition), "--input",
                                   "what=" + "x" * 100_000, env=env)  # fmt: skip
    assert code == 2 and out == "" and "Traceback" not in err, err
    assert "find-and-report: step find's request would be 300," in err and "shorten input what" in err
    assert fleet.received() == []
    code, out, _ = await run_cli(*base, "workflow", "runs", env=env)
    assert code == 0 and "W-1" not in out
