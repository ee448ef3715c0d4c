"""Workflow definitions: the shipped example plans cleanly; every mistake is named at its file:line with a fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.authz import AccessLevel, Requester
from bot.config import HOOK_BODY_LIMIT, ClusterConfig
from bot.errors import InvalidInput, InvalidWorkflow
from bot.workflows.loader import WorkflowCatalog, load_workflow_file
from bot.workflows.plan import Plan, plan, validate
from tests.conftest import ROOT

EXAMPLE = ROOT / "workflows" / "m2-mirror-study.yaml"
ANTOINE = Requester(kind="person", name="antoine", front_end="cli", level=AccessLevel.OPERATOR)

# Line numbers below refer to this file as written (line 1 is `name: study`).
BASE = """\
name: study
description: A small study.
inputs:
  mirror: {type: string, default: M2}
steps:
  - id: mesh
    agent: nx-expert
    message: Mesh ${{ inputs.mirror }}.
    timeout: 2h
  - id: thermal
    agent: optimizer
    needs: [mesh]
    message: "Thermal analysis of ${{ steps.mesh.output }}"
    timeout: 4h
  - id: review
    needs: [thermal]
    approval:
      prompt: Approve the thermal results?
      approvers: [role:admin]
"""


def write(tmp_path: Path, text: str, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path, config: ClusterConfig, requester: Requester | None = None) -> list[str]:
    """What `workflow validate` (or `plan` with a starter) says about a file: its lines, or none."""
    try:
        loaded = load_workflow_file(path, path.name)
    except InvalidWorkflow as exc:
        return exc.problems
    checked = validate(loaded, config) if requester is None else plan(loaded, config, requester)
    return checked.problems


def edited(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


def test_the_shipped_example_validates_and_plans_in_waves(shipped_config: ClusterConfig) -> None:
    loaded = load_workflow_file(EXAMPLE, "workflows/m2-mirror-study.yaml")
    assert validate(loaded, shipped_config).problems == []
    planned = plan(loaded, shipped_config, ANTOINE)
    ok = "ok: antoine is operator: may delegate to any agent"
    assert planned.render_text() == "\n".join(
        [
            "m2-mirror-study  (5 steps, started by antoine (operator))",
            f"wave 1  mesh      nx-expert  timeout 2 h                                            {ok}",
            f"        material  webster    timeout 1 h, 1 retry                                   {ok}",
            f"wave 2  thermal   optimizer  timeout 4 h                      needs mesh, material  {ok}",
            "wave 3  review    approval   admin ×1, expires 24 h → reject  needs thermal",
            f"wave 4  report    secretary  timeout 1 h                      needs review          {ok}",
        ]
    )
    assert planned.waves == [["mesh", "material"], ["thermal"], ["review"], ["report"]]
    assert planned.problems == [] and planned.ok
    thermal = planned.step("thermal")
    # Two upstream outputs, each at its worst: 16,000 four-byte characters, plus the note saying it was cut.
    assert 2 * 16_000 * 4 < thermal.body_bytes < 2 * 16_000 * 4 + 2_000  # type: ignore[operator]
    assert planned.step("review").body_bytes is None and planned.step("review").expires_in_s == 86_400


def test_a_plan_as_manager_shows_each_hop_under_its_delegation_matrix(shipped_config: ClusterConfig) -> None:
    as_manager = Requester(kind="agent", name="manager", front_end="cli", via="antoine")
    planned = plan(load_workflow_file(EXAMPLE), shipped_config, as_manager)
    assert planned.ok
    assert planned.step("mesh").authority == "manager may delegate to nx-expert (delegates_to in config)"
    assert planned.step("review").allowed is None  # an approval is not a hop


# (case, the YAML, the line, what the line says). Each is one class of mistake a person makes.
BROKEN = [
    ("missing timeout", edited("    timeout: 4h\n", ""), 10,
     "steps[1].timeout: required; every agent step needs one, e.g. timeout: 2h"),
    ("unknown key", edited("    timeout: 4h\n", "    timout: 4h\n"), 14,
     "steps[1].timout: unknown key 'timout'; did you mean timeout? valid here: id, agent, message, needs, timeout"),
    ("bad duration", edited("timeout: 4h", "timeout: 4 fortnights"), 14,
     "steps[1].timeout: '4 fortnights' is not a duration; write it as e.g. '30m', '2h'"),
    ("zero duration", edited("timeout: 4h", "timeout: 0"), 14, "steps[1].timeout: 0 is no time at all; write a"),
    ("bad approver", edited("[role:admin]", "[role:boss]"), 19,
     "steps[2].approval.approvers: 'role:boss' is not an approver; write role:operator, role:admin, user:<discord id>"),
    ("unknown agent approver", edited("[role:admin]", "[agent:secretry]"), 19,
     "steps[2].approval.approvers[0]: agent:secretry: no agent called 'secretry'. Did you mean agent:secretary?"),
    ("quorum over the users named", edited("[role:admin]", "[user:100000000000000301]\n      quorum: 2"), 20,
     "steps[2].approval.quorum: quorum 2 but only 1 approver(s) named; lower the quorum or name more approvers"),
    ("escalate to nobody", edited("[role:admin]", "[role:admin]\n      on_expire: escalate"), 17,
     "steps[2].approval: on_expire: escalate needs escalate_to: the approvers who take over at expiry"),
    ("bad on_failure", edited("    timeout: 2h\n", "    timeout: 2h\n    on_failure: ignore\n"), 10,
     "steps[0].on_failure: 'ignore' is not valid here; write fail or continue"),
    ("duplicate step id", edited("  - id: review", "  - id: mesh"), 15,
     "steps[2].id: duplicate step id 'mesh' (also steps[0]); every step needs its own id"),
    ("duplicate YAML key", edited("    agent: nx-expert\n", "    agent: nx-expert\n    agent: webster\n"), 8,
     "steps[0].agent: written twice (also line 7); keep one (YAML would silently use the last)"),
    ("unknown need", edited("needs: [mesh]", "needs: [mesj]"), 12,
     "steps[1].needs[0]: unknown step 'mesj'. Did you mean 'mesh'? Steps: mesh, thermal, review"),
    ("cycle", edited("    agent: nx-expert\n", "    agent: nx-expert\n    needs: [thermal]\n"), 8,
     "steps[0].needs: cycle mesh → thermal → mesh; remove one of these needs so the steps can run in order"),
    ("unreachable after a cycle", edited("    agent: nx-expert\n", "    agent: nx-expert\n    needs: [thermal]\n"), 17,
     "steps[2].needs: review is unreachable: it waits for the cycle mesh → thermal → mesh; break the cycle"),
    ("unknown agent", edited("agent: optimizer", "agent: optimiser"), 11,
     "steps[1].agent: no agent called 'optimiser'. Did you mean 'optimizer'? Valid agents: manager, tech-lead"),
    ("reference to an unknown input", edited("inputs.mirror }}.", "inputs.mirorr }}."), 8,
     "steps[0].message: ${{ inputs.mirorr }}: no such input. Did you mean inputs.mirror? Inputs: mirror"),
    ("reference to a step that is not upstream", edited("inputs.mirror }}.", "steps.review.output }}."), 8,
     "steps[0].message: ${{ steps.review.output }}: review does not run before mesh; add it to needs"),
    ("reference to no step", edited("inputs.mirror }}.", "steps.meshing.output }}."), 8,
     "steps[0].message: ${{ steps.meshing.output }}: no step 'meshing'; steps: mesh, thermal, review"),
    ("malformed reference", edited("inputs.mirror }}.", "input.mirror }}."), 8,
     "steps[0].message: '${{ input.mirror }}' is not a reference; write ${{ inputs.NAME }} or ${{ steps.ID.output }}"),
    ("unclosed reference", edited("inputs.mirror }}.", "inputs.mirror }."), 8,
     "steps[0].message: '${{ inputs.mirror }.' is not a reference; write ${{ inputs.NAME }}"),
    ("bad deliver_to", edited("steps:\n", "deliver_to: '#general'\nsteps:\n"), 5,
     "deliver_to: '#general' is not a place to deliver to; write thread, none, channel:<id> or a channel role"),
    ("input default of the wrong type", edited("{type: string, default: M2}", "{type: integer, default: M2}"), 4,
     "inputs.mirror: expected a whole number, got 'M2'"),
    ("YAML syntax error", edited("needs: [mesh]", "needs: [mesh"), 13,
     "(syntax): while parsing a flow sequence expected ',' or ']'"),
    ("a list at the top level", "- id: mesh\n  agent: nx-expert\n", 1,
     "(top level): got a list; a workflow file is a mapping: name:, description:, inputs:, steps:"),
    ("an empty file", "", 1, "(top level): the file is empty; a workflow file is a mapping"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "text", "line", "said"), BROKEN, ids=[case[0] for case in BROKEN])
def test_each_mistake_is_named_at_its_line_with_a_fix(
    tmp_path: Path, shipped_config: ClusterConfig, case: str, text: str, line: int, said: str
) -> None:
    problems = problems_of(write(tmp_path, text), shipped_config)
    assert any(p.startswith(f"study.yaml:{line}: {said}") for p in problems), (case, problems)


def test_a_message_over_the_body_limit_after_templating_names_the_step_and_the_bytes_over(
    tmp_path: Path, shipped_config: ClusterConfig
) -> None:
    # Each reference to mesh's output may pass on 16,000 characters of up to 4 bytes: four fit, five do not.
    four = "Compare: " + " ".join(["${{ steps.mesh.output }}"] * 4)
    assert (
        problems_of(write(tmp_path, edited("Thermal analysis of ${{ steps.mesh.output }}", four)), shipped_config) == []
    )
    five = "Compare: " + " ".join(["${{ steps.mesh.output }}"] * 5)
    [problem] = problems_of(
        write(tmp_path, edited("Thermal analysis of ${{ steps.mesh.output }}", five)), shipped_config
    )
    size = int(problem.split("would be ")[1].split(" bytes")[0].replace(",", ""))
    assert size > 5 * 16_000 * 4
    assert problem == (
        f"study.yaml:13: steps[1].message: step thermal's request would be {size:,} bytes after templating, "
        f"{size - HOOK_BODY_LIMIT:,} over the gateways' 262,144-byte limit (each upstream output counted at 16,000 "
        "4-byte characters); shorten the message or pass on fewer outputs"
    )


def test_a_300_kb_input_makes_the_plan_refuse_the_step_it_fills(tmp_path: Path, shipped_config: ClusterConfig) -> None:
    loaded = load_workflow_file(write(tmp_path, BASE), "study.yaml")
    assert plan(loaded, shipped_config, ANTOINE, {"mirror": "M2"}).ok
    planned = plan(loaded, shipped_config, ANTOINE, {"mirror": "é" * 150_000})  # 300,000 bytes of UTF-8
    [problem] = planned.problems
    assert problem.startswith("study.yaml:8: steps[0].message: step mesh's request would be 300,")
    assert planned.step("mesh").body_bytes > 300_000  # type: ignore[operator]


def test_authority_is_checked_per_step_under_the_starter_with_the_rules_of_delegate(
    tmp_path: Path, shipped_config: ClusterConfig
) -> None:
    path = write(tmp_path, BASE)
    as_nx_expert = Requester(kind="agent", name="nx-expert", front_end="cli", via="antoine")
    problems = problems_of(path, shipped_config, as_nx_expert)
    assert problems == [
        "study.yaml:7: steps[0].agent: step mesh would be refused: nx-expert may not delegate to itself. Who could: "
        "manager, tech-lead, optimizer, or a person with the operator or admin role.",
        "study.yaml:11: steps[1].agent: step thermal would be refused: nx-expert may not delegate to optimizer: it may "
        "not delegate to any agent. Who could: manager, tech-lead, or a person with the operator or admin role.",
    ]
    viewer = Requester(kind="person", name="eve", front_end="cli", level=AccessLevel.VIEWER)
    assert "eve is a viewer: delegating needs the operator level" in problems_of(path, shipped_config, viewer)[0]
    assert problems_of(path, shipped_config) == []  # validate has no starter: no authority to check


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ({"mirorr": "M1"}, "unknown input(s) mirorr; study takes: mirror, count"),
        ({}, "input mirror is required (string); give it as --input mirror=…"),
        ({"mirror": "M1", "count": "many"}, "input count: expected a whole number, got 'many'"),
    ],
)
def test_inputs_are_checked_against_their_declarations(
    tmp_path: Path, shipped_config: ClusterConfig, given: dict[str, str], said: str
) -> None:
    text = edited("  mirror: {type: string, default: M2}\n", "  mirror: {type: string}\n  count: {type: integer}\n")
    loaded = load_workflow_file(write(tmp_path, text))
    if "count" not in given:
        given = {**given, "count": "3"}
    planned: Plan = plan(loaded, shipped_config, ANTOINE, given)
    assert said in planned.problems, planned.problems
    assert validate(loaded, shipped_config).ok  # a file may leave required inputs to the run


def test_the_catalog_lists_broken_files_and_refuses_two_workflows_of_one_name(tmp_path: Path) -> None:
    write(tmp_path, BASE, "a.yaml")
    write(tmp_path, BASE.replace("description: A small study.", "description: The same name."), "b.yml")
    write(tmp_path, edited("name: study", "name: other").replace("    timeout: 4h\n", ""), "other.yaml")
    write(tmp_path, "- not a workflow\n", "list.yaml")
    write(tmp_path, BASE.replace("name: study", "name: fine"), "fine.yaml")
    write(tmp_path, "ignored", "notes.txt")
    catalog = WorkflowCatalog(tmp_path)
    entries = {Path(entry.file).name: entry for entry in catalog.entries()}
    assert sorted(entries) == ["a.yaml", "b.yml", "fine.yaml", "list.yaml", "other.yaml"]
    assert not entries["fine.yaml"].broken
    assert entries["a.yaml"].problems == (
        f"{tmp_path}/a.yaml:1: name: 'study' is also the name of {tmp_path}/b.yml; every workflow needs its own name",
    )
    assert entries["other.yaml"].broken and entries["other.yaml"].name == "other"
    assert entries["list.yaml"].broken and entries["list.yaml"].name is None
    assert catalog.get("fine").definition.name == "fine"
    with pytest.raises(InvalidWorkflow) as broken:
        catalog.get("other")
    assert broken.value.problems[0].endswith("steps[1].timeout: required; every agent step needs one, e.g. timeout: 2h")
    with pytest.raises(InvalidInput, match=r"no workflow called 'fin'\. Did you mean 'fine'\? Workflows: fine, oth"):
        catalog.get("fin")
    with pytest.raises(InvalidInput, match="has no workflow files"):
        WorkflowCatalog(tmp_path / "missing").get("study")


def test_anchors_and_merge_keys_are_plain_yaml_and_still_point_at_the_right_lines(
    tmp_path: Path, shipped_config: ClusterConfig
) -> None:
    text = edited("  - id: mesh\n    agent: nx-expert\n", "  - &defaults\n    id: mesh\n    agent: nx-expert\n")
    text = text.replace("  - id: thermal\n", "  - <<: *defaults\n    id: thermal\n").replace("    timeout: 4h\n", "")
    loaded = load_workflow_file(write(tmp_path, text), "study.yaml")
    assert loaded.definition.step("thermal").timeout_s == 7_200  # merged from mesh
    assert validate(loaded, shipped_config).ok
    broken = text.replace("    id: thermal\n", "    id: thermal\n    timeout: soon\n")
    assert problems_of(write(tmp_path, broken), shipped_config) == [
        "study.yaml:13: steps[1].timeout: 'soon' is not a duration; write it as e.g. '30m', '2h', '1h30m' or '1d' "
        "(s, m, h, d)"
    ]
