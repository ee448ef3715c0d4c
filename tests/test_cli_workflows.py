"""`atomizer-hq workflow list|validate|plan` through the real entry point, on the shipped example and broken files."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import ROOT, SHIPPED_CONFIG
from tests.test_cli import cli_env, run_cli
from tests.test_workflow_definitions import BASE

EXAMPLE = "workflows/m2-mirror-study.yaml"


def env_as_antoine(tmp_path: Path) -> dict[str, str]:
    """The host operator is whoever runs the CLI: `antoine@host` here, whatever account runs the tests."""
    return cli_env(tmp_path, LOGNAME="antoine", USER="antoine")


async def test_list_shows_the_shipped_example(tmp_path: Path) -> None:
    code, out, err = await run_cli("workflow", "list", env=cli_env(tmp_path), cwd=ROOT)
    assert code == 0, err
    assert out.splitlines() == [
        "name             steps  file                            description",
        "m2-mirror-study  5      workflows/m2-mirror-study.yaml  Mesh the M2 mirror and find its material data, "
        "run the thermal analysis, approve, report.",
    ]
    code, out, err = await run_cli("workflow", "list", "--json", env=cli_env(tmp_path), cwd=ROOT)
    assert code == 0, err
    assert json.loads(out)["workflows"] == [
        {
            "name": "m2-mirror-study",
            "description": "Mesh the M2 mirror and find its material data, run the thermal analysis, approve, report.",
            "steps": 5,
            "file": EXAMPLE,
            "broken": False,
            "problems": [],
        }
    ]


async def test_validate_says_valid_or_lists_every_problem_and_exits_2(tmp_path: Path) -> None:
    code, out, err = await run_cli("workflow", "validate", EXAMPLE, env=cli_env(tmp_path), cwd=ROOT)
    assert (code, out, err) == (0, f"{EXAMPLE}: valid: m2-mirror-study, 5 steps\n", "")

    broken = tmp_path / "broken.yaml"
    broken.write_text(BASE.replace("    timeout: 4h\n", "").replace("agent: nx-expert", "agent: nx-expret"), "utf-8")
    code, out, err = await run_cli("workflow", "validate", str(broken), env=cli_env(tmp_path), cwd=ROOT)
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"{broken}:10: steps[1].timeout: required; every agent step needs one, e.g. timeout: 2h"
    ]
    broken.write_text(BASE.replace("agent: nx-expert", "agent: nx-expret"), "utf-8")  # the schema passes: the DAG next
    code, out, err = await run_cli("workflow", "validate", str(broken), env=cli_env(tmp_path), cwd=ROOT)
    assert (code, out) == (2, "")
    assert err.splitlines() == [
        f"{broken}:7: steps[0].agent: no agent called 'nx-expret'. Did you mean 'nx-expert'? Valid agents: manager, "
        "tech-lead, secretary, auditor, optimizer, study-builder, nx-expert, webster"
    ]
    code, _, err = await run_cli("workflow", "validate", str(tmp_path / "nope.yaml"), env=cli_env(tmp_path), cwd=ROOT)
    assert code == 2 and err == f"{tmp_path}/nope.yaml: (file): not found; give the path of a workflow .yaml file\n"


PLAN_HEAD = "m2-mirror-study  (5 steps, started by {starter})"
PLAN_ROWS = [
    "wave 1  mesh      nx-expert  timeout 2 h                                            {mesh}",
    "        material  webster    timeout 1 h, 1 retry                                   {material}",
    "wave 2  thermal   optimizer  timeout 4 h                      needs mesh, material  {thermal}",
    "wave 3  review    approval   admin ×1, expires 24 h → reject  needs thermal",
    "wave 4  report    secretary  timeout 1 h                      needs review          {report}",
]


async def test_plan_by_the_host_operator_shows_the_waves(tmp_path: Path) -> None:
    code, out, err = await run_cli("workflow", "plan", "m2-mirror-study", env=env_as_antoine(tmp_path), cwd=ROOT)
    assert (code, err) == (0, "")
    ok = "ok: antoine@host is admin: may delegate to any agent"
    rows = [row.format(mesh=ok, material=ok, thermal=ok, report=ok) for row in PLAN_ROWS]
    assert out.splitlines() == [PLAN_HEAD.format(starter="antoine@host (admin)"), *rows]


async def test_plan_as_manager_shows_each_hop_it_may_make(tmp_path: Path) -> None:
    code, out, err = await run_cli(
        "workflow", "plan", "m2-mirror-study", "--as", "manager", "--input", "mirror=M1", "--input", "fine=yes",
        env=env_as_antoine(tmp_path), cwd=ROOT,
    )  # fmt: skip
    assert (code, err) == (0, "")
    hops = {step: f"ok: manager may delegate to {agent} (delegates_to in config)" for step, agent in (
        ("mesh", "nx-expert"), ("material", "webster"), ("thermal", "optimizer"), ("report", "secretary"))}  # fmt: skip
    assert out.splitlines() == [
        PLAN_HEAD.format(starter="agent manager (via antoine@host)"),
        *[row.format(**hops) for row in PLAN_ROWS],
    ]
    code, out, err = await run_cli(
        "workflow", "plan", "m2-mirror-study", "--as", "manager", "--json", env=env_as_antoine(tmp_path), cwd=ROOT
    )
    document = json.loads(out)
    assert code == 0 and document["ok"] and document["waves"] == [["mesh", "material"], ["thermal"], ["review"],
                                                                   ["report"]]  # fmt: skip
    assert document["inputs"] == {"mirror": "M2", "material": "Zerodur Class 0", "max_elements": 50000, "fine": False}


async def test_plan_as_an_agent_without_authority_names_each_refused_step_and_exits_2(tmp_path: Path) -> None:
    code, out, err = await run_cli(
        "workflow", "plan", "m2-mirror-study", "--as", "webster", env=env_as_antoine(tmp_path), cwd=ROOT
    )
    assert code == 2
    assert "refused: webster may not delegate to nx-expert" in out.splitlines()[1]
    lines = err.splitlines()
    assert lines[0] == (
        f"{EXAMPLE}:16: steps[0].agent: step mesh would be refused: webster may not delegate to nx-expert: it may not "
        "delegate to any agent. Who could: manager, tech-lead, optimizer, or a person with the operator or admin role."
    )
    assert [line.split(": step ")[1].split(" would")[0] for line in lines[:4]] == [
        "mesh", "material", "thermal", "report"
    ]  # fmt: skip
    assert lines[-1] == "atomizer-hq: m2-mirror-study would be refused: 4 problem(s)"
    assert "Traceback" not in err


async def test_plan_refuses_bad_inputs_and_unknown_names_in_one_line_each(tmp_path: Path) -> None:
    env = env_as_antoine(tmp_path)
    code, _, err = await run_cli(
        "workflow", "plan", "m2-mirror-study", "--input", "max_elements=lots", "--input", "mirorr=M1", env=env, cwd=ROOT
    )
    assert code == 2
    assert err.splitlines()[:2] == [
        "unknown input(s) mirorr; m2-mirror-study takes: mirror, material, max_elements, fine",
        "input max_elements: expected a whole number, got 'lots'",
    ]
    code, out, err = await run_cli("workflow", "plan", "m2-mirror", env=env, cwd=ROOT)
    assert (code, out) == (2, "")
    assert (
        err
        == "atomizer-hq: no workflow called 'm2-mirror'. Did you mean 'm2-mirror-study'? Workflows: m2-mirror-study\n"
    )
    code, _, err = await run_cli("workflow", "plan", "m2-mirror-study", "--input", "mirror", env=env, cwd=ROOT)
    assert (code, err) == (2, "atomizer-hq: --input 'mirror': write NAME=VALUE, e.g. --input mirror=M1\n")


async def test_list_flags_broken_files_without_hiding_the_others(tmp_path: Path) -> None:
    """The workflows dir is relative to the working directory, as the shipped cluster file says."""
    workflows = tmp_path / "workflows"
    workflows.mkdir()
    (workflows / "a.yaml").write_text(BASE, "utf-8")
    (workflows / "copy.yaml").write_text(BASE, "utf-8")
    (workflows / "list.yml").write_text("- mesh\n- thermal\n", "utf-8")
    (workflows / "fine.yaml").write_text(BASE.replace("name: study", "name: fine"), "utf-8")
    config = ["--config", str(SHIPPED_CONFIG)]
    code, out, err = await run_cli(*config, "workflow", "list", env=cli_env(tmp_path), cwd=tmp_path)
    assert code == 0
    assert out.splitlines() == [
        "name   steps  file                 description",
        "study  -      workflows/a.yaml     BROKEN: 1 problem(s)",
        "study  -      workflows/copy.yaml  BROKEN: 1 problem(s)",
        "fine   3      workflows/fine.yaml  A small study.",
        "?      -      workflows/list.yml   BROKEN: 1 problem(s)",
    ]
    assert err.splitlines() == [
        "workflows/a.yaml:1: name: 'study' is also the name of workflows/copy.yaml; every workflow needs its own name",
        "workflows/copy.yaml:1: name: 'study' is also the name of workflows/a.yaml; every workflow needs its own name",
        "workflows/list.yml:1: (top level): got a list; a workflow file is a mapping: name:, description:, inputs:, "
        "steps: (see docs/workflows.md)",
        "atomizer-hq: 3 broken workflow file(s); fix the lines above",
    ]
    code, _, err = await run_cli(*config, "workflow", "plan", "study", env=cli_env(tmp_path), cwd=tmp_path)
    assert code == 2 and "'study' is also the name of workflows/copy.yaml" in err
    code, out, _ = await run_cli(*config, "workflow", "list", env=cli_env(tmp_path), cwd=tmp_path / "workflows")
    assert (code, out) == (0, f"no workflows: workflows does not exist ([workflows] dir in {SHIPPED_CONFIG} says "
                              "where they are)\n")  # fmt: skip
