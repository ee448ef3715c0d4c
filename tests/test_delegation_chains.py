"""Delegation chains (sub-delegation) on real SQLite and a simulated fleet: every rule, the caps, cancelling."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from bot.authz import AccessLevel, Requester
from bot.config import HOOK_BODY_LIMIT, ClusterConfig, DelegationConfig
from bot.delegation import _WIDEST_ID, ChainLimit, ChainRefused, Delegation, DelegationService, chain_footer
from bot.errors import InvalidInput, NotAllowed, PayloadTooLarge
from bot.gateway import encode_body
from bot.services import Services
from bot.store import Store, load_migrations
from bot.workflows.cli_runs import print_detail
from bot.workflows.definition import WorkflowDefinition
from bot.workflows.view import run_card
from tests.clocks import FakeClock
from tests.conftest import FleetStarter, ServicesOnFleet
from tests.test_cli import cli_env, relocated_config, run_cli

ANTOINE = Requester(kind="person", name="antoine", front_end="cli", level=AccessLevel.OPERATOR)
VIEWER = Requester(kind="person", name="vera", front_end="cli", level=AccessLevel.VIEWER)


def agent(name: str) -> Requester:
    return Requester(kind="agent", name=name, front_end="api")


def service_for(
    services: Services, clock: FakeClock, *, config: ClusterConfig | None = None, **limits: int
) -> DelegationService:
    config = config or services.config
    if limits:
        config = config.model_copy(update={"delegation": DelegationConfig(**limits)})
    return DelegationService(config, services.store, services.gateway, clock=clock)


def with_delegates_to(config: ClusterConfig, **matrix: list[str]) -> ClusterConfig:
    agents = [a.model_copy(update={"delegates_to": matrix[a.name]}) if a.name in matrix else a for a in config.agents]
    return config.model_copy(update={"agents": agents})


async def made(service: DelegationService, requester: Requester, to: str, parent: str | None = None) -> Delegation:
    result = await service.delegate(requester, to, f"work for {to}", parent=parent)
    assert result.delegation is not None
    return result.delegation


async def refusals(services: Services) -> list[dict[str, object]]:
    rows = await services.store.fetchall("SELECT detail FROM audit_log WHERE decision = 'refused' ORDER BY id")
    return [json.loads(row["detail"]) for row in rows]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def test_manager_tech_lead_optimizer_nx_expert_is_recorded_as_one_chain(
    services_on_fleet: ServicesOnFleet, clock: FakeClock
) -> None:
    services, fleet = await services_on_fleet()
    service = service_for(services, clock)
    root = await made(service, agent("manager"), "tech-lead")
    child = await made(service, agent("tech-lead"), "optimizer", parent=root.display_id)
    grandchild = await made(service, agent("optimizer"), "nx-expert", parent=child.display_id)
    rows = [(d.display_id, d.agent, d.parent_id, d.root_id, d.depth, d.status) for d in await service.tree("D-3")]
    assert rows == [
        ("D-1", "tech-lead", None, 1, 1, "accepted"),
        ("D-2", "optimizer", 1, 1, 2, "accepted"),
        ("D-3", "nx-expert", 2, 1, 3, "accepted"),
    ]
    shown = grandchild.to_dict()
    assert (shown["parent"], shown["root"], shown["depth"]) == ("D-2", "D-1", 3)
    # each agent was told the id to hang its own sub-delegations under
    for delegation in (root, child, grandchild):
        [hook] = fleet.received(delegation.agent)
        assert hook.body["message"] == f"work for {delegation.agent}" + chain_footer(delegation.display_id)
        assert hook.body["message"].endswith(
            f"[atomizer-hq {delegation.display_id}: to hand part of this on, pass --parent {delegation.display_id}]"
        )
    rows = await services.store.fetchall("SELECT actor, subject, detail FROM audit_log ORDER BY id")
    assert [(r["actor"], r["subject"], json.loads(r["detail"])) for r in rows] == [
        ("manager", "tech-lead", {"delegation": "D-1"}),
        ("tech-lead", "optimizer", {"delegation": "D-2", "parent": "D-1", "chain": "D-1", "depth": 2}),
        ("optimizer", "nx-expert", {"delegation": "D-3", "parent": "D-2", "chain": "D-1", "depth": 3}),
    ]


async def test_a_sub_delegation_need_not_hang_under_anything(
    services_on_fleet: ServicesOnFleet, clock: FakeClock
) -> None:
    services, _ = await services_on_fleet()
    own = await made(service_for(services, clock), agent("optimizer"), "nx-expert")  # its own work: a root
    assert (own.parent_id, own.root_id, own.depth) == (None, own.id, 1)


async def test_the_parent_must_be_a_delegation_to_the_requester(
    services_on_fleet: ServicesOnFleet, clock: FakeClock
) -> None:
    services, fleet = await services_on_fleet()
    service = service_for(services, clock)
    await made(service, ANTOINE, "nx-expert")
    with pytest.raises(ChainRefused, match="D-1 was delegated to nx-expert, not to tech-lead: an agent hangs work"):
        await made(service, agent("tech-lead"), "optimizer", parent="D-1")
    with pytest.raises(ChainRefused, match=r"only an agent hangs work .*antoine \(operator\) starts a chain of its"):
        await made(service, ANTOINE, "optimizer", parent="D-1")
    with pytest.raises(InvalidInput, match="no delegation D-9"):
        await made(service, agent("tech-lead"), "optimizer", parent="D-9")
    with pytest.raises(InvalidInput, match="'next' is not a delegation id"):
        await made(service, agent("tech-lead"), "optimizer", parent="next")
    with pytest.raises(InvalidInput, match="'-1' is not a delegation id; write it as D-42"):
        await made(service, agent("tech-lead"), "optimizer", parent="-1")  # a slip, never read as D-1
    with pytest.raises(
        InvalidInput, match=r"the parent is empty; give the delegation you are working on \(e.g. D-12\)"
    ):
        await made(service, agent("tech-lead"), "optimizer", parent=" ")
    assert fleet.received("optimizer") == []
    assert [d["chain"] for d in await refusals(services)] == ["D-1", "D-1"]
    # a dry run says the same, and records nothing
    dry = await service.delegate(agent("tech-lead"), "optimizer", "x", parent="D-1", dry_run=True)
    assert not dry.decision.allowed and "not to tech-lead" in dry.decision.reason
    assert len(await services.store.fetchall("SELECT id FROM delegations")) == 1


async def test_a_failed_or_expired_parent_is_refused(services_on_fleet: ServicesOnFleet, clock: FakeClock) -> None:
    services, fleet = await services_on_fleet(specs={"optimizer": {"down": True}})
    service = service_for(services, clock)
    queued = await made(service, ANTOINE, "optimizer")
    assert queued.status == "queued"
    clock.advance(601)
    await service.process_due()
    assert (await service.get(queued.id)).status == "expired"
    with pytest.raises(ChainRefused, match="D-1 is expired: optimizer is not working on it, so nothing hangs"):
        await made(service, agent("optimizer"), "nx-expert", parent="D-1")
    assert fleet.received("nx-expert") == []
    [refusal] = await refusals(services)
    assert refusal["chain"] == "D-1" and refusal["parent"] == "D-1"


async def test_authority_is_checked_at_every_hop(services_on_fleet: ServicesOnFleet, clock: FakeClock) -> None:
    services, _ = await services_on_fleet()
    service = service_for(services, clock)
    await made(service, ANTOINE, "tech-lead")
    await made(service, agent("tech-lead"), "optimizer", parent="D-1")
    # optimizer's own delegates_to applies to its hop, whatever tech-lead or antoine may do
    with pytest.raises(NotAllowed, match="optimizer may not delegate to tech-lead"):
        await made(service, agent("optimizer"), "tech-lead", parent="D-2")
    with pytest.raises(NotAllowed, match="nx-expert may not delegate to webster"):
        await made(service, agent("nx-expert"), "webster", parent="D-2")


async def test_an_agent_above_in_the_chain_is_not_handed_its_work_again(
    services_on_fleet: ServicesOnFleet, clock: FakeClock
) -> None:
    services, fleet = await services_on_fleet()
    config = with_delegates_to(services.config, webster=["optimizer", "tech-lead"])
    service = service_for(services, clock, config=config)
    await made(service, agent("tech-lead"), "optimizer")  # D-1: tech-lead started this chain
    await made(service, agent("optimizer"), "webster", parent="D-1")  # D-2
    with pytest.raises(
        ChainRefused, match=r"optimizer is already in chain D-1 above D-2 \(D-1 optimizer → D-2 webster"
    ):
        await made(service, agent("webster"), "optimizer", parent="D-2")
    with pytest.raises(ChainRefused, match="tech-lead is already in chain D-1"):  # the root's requester too
        await made(service, agent("webster"), "tech-lead", parent="D-2")
    assert len(fleet.received("optimizer")) == 1 and fleet.received("tech-lead") == []


async def test_the_depth_cap(services_on_fleet: ServicesOnFleet, clock: FakeClock) -> None:
    services, fleet = await services_on_fleet()
    service = service_for(services, clock)
    await made(service, ANTOINE, "manager")  # depth 1
    await made(service, agent("manager"), "tech-lead", parent="D-1")  # 2
    await made(service, agent("tech-lead"), "optimizer", parent="D-2")  # 3
    with pytest.raises(ChainLimit) as caught:
        await made(service, agent("optimizer"), "nx-expert", parent="D-3")
    assert str(caught.value) == (
        "chain D-1 may not go deeper: D-3 is at depth 3 and the limit is 3 ([delegation] max_depth in test-config); "
        "optimizer should do this part itself, or ask a person to delegate it"
    )
    assert caught.value.http_status == 409 and fleet.received("nx-expert") == []
    [refusal] = await refusals(services)
    assert refusal["chain"] == "D-1" and "depth 3" in str(refusal["reason"])
    deeper = service_for(services, clock, max_depth=4)  # the cap is config
    assert (await made(deeper, agent("optimizer"), "nx-expert", parent="D-3")).depth == 4


async def test_the_per_root_cap_holds_even_for_children_made_at_once(
    services_on_fleet: ServicesOnFleet, clock: FakeClock
) -> None:
    services, fleet = await services_on_fleet()
    service = service_for(services, clock, max_per_root=3)
    await made(service, ANTOINE, "tech-lead")
    await made(service, agent("tech-lead"), "optimizer", parent="D-1")
    outcomes = await asyncio.gather(
        made(service, agent("tech-lead"), "webster", parent="D-1"),
        made(service, agent("tech-lead"), "auditor", parent="D-1"),
        return_exceptions=True,
    )
    refused = [o for o in outcomes if isinstance(o, ChainLimit)]
    assert len(refused) == 1 and len(await service.tree("D-1")) == 3
    assert "chain D-1 has 3 delegations already, the limit per chain is 3" in str(refused[0])
    assert len(fleet.received("webster")) + len(fleet.received("auditor")) == 1
    assert [r["chain"] for r in await refusals(services)] == ["D-1"]


async def test_cancelling_a_root_stops_its_children_not_yet_sent(
    services_on_fleet: ServicesOnFleet, clock: FakeClock
) -> None:
    services, fleet = await services_on_fleet(specs={"webster": {"down": True}, "auditor": {"down": True}})
    service = service_for(services, clock)
    await made(service, ANTOINE, "tech-lead")  # D-1, accepted
    await made(service, agent("tech-lead"), "optimizer", parent="D-1")  # D-2, accepted
    assert (await made(service, agent("tech-lead"), "webster", parent="D-1")).status == "queued"  # D-3
    assert (await made(service, agent("optimizer"), "auditor", parent="D-2")).status == "queued"  # D-4
    with pytest.raises(NotAllowed, match="cancelling D-1 needs the operator level, or being the agent that made it"):
        await service.cancel(VIEWER, "D-1")
    with pytest.raises(NotAllowed, match="person antoine"):
        await service.cancel(agent("tech-lead"), "D-1")  # antoine made D-1, not tech-lead
    done = await service.cancel(ANTOINE, "D-1")
    assert done.summary() == (
        "cancelled D-1; stopped before they were sent: D-3 (webster), D-4 (auditor); "
        "already with an agent (tell it to stop): D-1 tech-lead (accepted), D-2 optimizer (accepted)"
    )
    statuses = {d.display_id: d.status for d in await service.tree("D-1")}
    assert statuses == {"D-1": "accepted", "D-2": "accepted", "D-3": "expired", "D-4": "expired"}
    await fleet.bring_up("webster")
    await fleet.bring_up("auditor")
    clock.advance(30)
    await service.process_due()
    assert fleet.received("webster") == [] and fleet.received("auditor") == []
    with pytest.raises(ChainRefused, match="chain D-1 was cancelled at D-1"):
        await made(service, agent("optimizer"), "nx-expert", parent="D-2")
    audit = await services.store.fetchall("SELECT actor, action, detail FROM audit_log WHERE action = 'cancel'")
    assert [(a["actor"], json.loads(a["detail"])) for a in audit] == [
        ("antoine", {"cancel": "D-1", "stopped": ["D-3", "D-4"]})
    ]


async def test_a_child_caught_sending_by_the_cancel_is_not_retried_when_its_send_fails(
    services_on_fleet: ServicesOnFleet, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cancel lands while a child is being sent (so it is "with an agent" in the answer), and the send then
    fails (the agent is down): the child expires instead of going back to the outbox for a retry."""
    services, fleet = await services_on_fleet(specs={"webster": {"down": True}})
    service = service_for(services, clock)
    await made(service, ANTOINE, "tech-lead")  # D-1
    send = services.gateway.send_agent_hook
    answers: list[str] = []

    async def cancel_then_send(*args: Any, **kwargs: Any) -> Any:
        answers.append((await service.cancel(ANTOINE, "D-1")).summary())  # while D-2 is `sending`
        return await send(*args, **kwargs)  # webster is down: connection refused, not admitted

    monkeypatch.setattr(services.gateway, "send_agent_hook", cancel_then_send)
    child = await made(service, agent("tech-lead"), "webster", parent="D-1")  # D-2
    monkeypatch.undo()
    assert "already with an agent (tell it to stop): D-1 tech-lead (accepted), D-2 webster (sending)" in answers[0]
    assert child.status == "expired" and "its chain was cancelled while it was being sent" in (child.last_error or "")
    await fleet.bring_up("webster")
    clock.advance(600)
    await service.process_due()
    assert fleet.received("webster") == [] and (await service.get("D-2")).status == "expired"


async def test_a_child_being_recorded_when_its_chain_is_cancelled_is_refused_not_recorded(
    services_on_fleet: ServicesOnFleet, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cancel lands after the child's checks saw a live parent and before its row is written: the recording
    transaction looks again, so nothing hangs under a cancelled chain and nothing is sent."""
    services, fleet = await services_on_fleet()
    service = service_for(services, clock)
    await made(service, ANTOINE, "tech-lead")  # D-1
    checked = service._task_ref  # the last step between the chain's checks and the recording

    async def cancel_then_go_on(task: str | None) -> str | None:
        await service.cancel(ANTOINE, "D-1")
        return await checked(task)

    monkeypatch.setattr(service, "_task_ref", cancel_then_go_on)
    with pytest.raises(ChainRefused, match=r"chain D-1 was cancelled .* nothing new hangs under it"):
        await made(service, agent("tech-lead"), "webster", parent="D-1")
    monkeypatch.undo()
    assert [d.display_id for d in await service.tree("D-1")] == ["D-1"]
    assert fleet.received("webster") == []
    assert (await refusals(services))[-1]["chain"] == "D-1"


async def test_an_agent_cancels_what_it_made(services_on_fleet: ServicesOnFleet, clock: FakeClock) -> None:
    services, _ = await services_on_fleet(specs={"auditor": {"down": True}})
    service = service_for(services, clock)
    await made(service, ANTOINE, "tech-lead")
    await made(service, agent("tech-lead"), "optimizer", parent="D-1")
    await made(service, agent("optimizer"), "auditor", parent="D-2")
    with pytest.raises(NotAllowed, match="agent optimizer is neither"):
        await service.cancel(agent("optimizer"), "D-2")  # tech-lead's
    done = await service.cancel(agent("tech-lead"), "D-2")
    assert [d.display_id for d in done.nodes] == ["D-2", "D-3"] and done.stopped == {3}
    assert (await service.get("D-1")).cancelled_at is None  # above it, nothing changed


async def test_the_footer_counts_in_the_size_check(services_on_fleet: ServicesOnFleet, clock: FakeClock) -> None:
    services, fleet = await services_on_fleet()
    service = service_for(services, clock)
    widest = len(encode_body(DelegationService._hook("", False, None, _WIDEST_ID).body()))
    text = "x" * (HOOK_BODY_LIMIT - widest + 1)  # would fit with "D-1" in the footer, not with the widest id
    with pytest.raises(PayloadTooLarge, match="the limit is 262,144; shorten it by at least 1 bytes"):
        await service.delegate(ANTOINE, "nx-expert", text, deliver=False)
    result = await service.delegate(ANTOINE, "nx-expert", text[:-1], deliver=False)
    assert result.delegation is not None and result.delegation.status == "accepted"
    assert fleet.received("nx-expert")[0].body["message"] == text[:-1] + chain_footer("D-1")


async def test_an_older_database_upgrades_every_delegation_to_a_root_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    row = (
        "INSERT INTO delegations (idem_key, created_at, updated_at, requester_kind, requester, front_end, agent, "
        "message, deliver, status, expires_at) VALUES (?, 't', 't', 'person', 'a', 'cli', 'nx-expert', 'm', 1, "
        "'accepted', 't')"
    )
    async with Store(path, migrations=load_migrations()[:7]) as old:
        await old.execute(row, ("k1",))
        await old.execute(row, ("k2",))
    async with Store(path) as store:
        rows = await store.fetchall("SELECT id, parent_id, root_id, depth, cancelled_at FROM delegations ORDER BY id")
        assert [tuple(r) for r in rows] == [(1, None, 1, 1, None), (2, None, 2, 1, None)]


# --- the command line ------------------------------------------------------------------------------


async def test_the_chain_from_the_command_line_recorded_drawn_capped_and_cancelled(
    start_fleet: FleetStarter, tmp_path: Path
) -> None:
    config, fleet = await start_fleet(specs={"webster": {"down": True}})
    path = relocated_config(tmp_path, {a.name: a.port for a in config.agents})
    env, base = cli_env(tmp_path), ("--config", str(path))
    code, out, err = await run_cli(*base, "delegate", "--as", "manager", "tech-lead", "Run the M2 study", env=env)
    assert code == 0 and out.startswith("D-1 to tech-lead: accepted"), err
    hops = [("tech-lead", "optimizer", "D-1"), ("optimizer", "nx-expert", "D-2")]
    for requester, to, parent in hops:
        code, out, err = await run_cli(*base, "delegate", "--as", requester, to, f"Part for {to}", "--parent", parent,
                                       env=env)  # fmt: skip
        assert code == 0, err
        assert out.startswith(f"D-{int(parent[2:]) + 1} to {to} (under {parent}, chain D-1): accepted"), out
    code, out, err = await run_cli(*base, "delegations", "show", "D-2", env=env)
    assert code == 0, err
    tree = out.split("\n\n", 1)[1].splitlines()
    assert tree[0] == "chain D-1: chain of 3, 3 deep"
    assert re.fullmatch(r'D-1 tech-lead: accepted, \d+ s ago, by manager: "Run the M2 study"', tree[1]), tree
    assert re.fullmatch(r'└─ D-2 optimizer: accepted, \d+ s ago, by tech-lead: "Part for optimizer"', tree[2]), tree
    assert re.fullmatch(r'   └─ D-3 nx-expert: accepted, \d+ s ago, by optimizer: "Part for nx-expert"', tree[3])

    # the cap, from config: max_depth = 2 refuses optimizer's hop under D-2 (depth 3)
    path.write_text(path.read_text().replace("max_depth = 3", "max_depth = 2"))
    code, out, err = await run_cli(*base, "delegate", "--as", "optimizer", "webster", "x", "--parent", "D-2", env=env)
    assert code == 1 and "chain D-1 may not go deeper: D-2 is at depth 2 and the limit is 2" in err, (out, err)
    path.write_text(path.read_text().replace("max_depth = 2", "max_depth = 3"))
    code, out, err = await run_cli(*base, "delegate", "--as", "optimizer", "webster", "Find the CTE", "--parent", "D-2",
                                   env=env)  # fmt: skip
    assert code == 0 and out.startswith("D-4 to webster (under D-2, chain D-1): queued"), err

    code, out, err = await run_cli(*base, "delegations", "cancel", "D-1", env=env)
    assert code == 0, err
    assert out == (
        "cancelled D-1; stopped before they were sent: D-4 (webster); already with an agent (tell it to stop): "
        "D-1 tech-lead (accepted), D-2 optimizer (accepted), D-3 nx-expert (accepted)\n"
    )
    code, out, _ = await run_cli(*base, "delegations", "show", "D-4", env=env)
    assert "D-4 webster: expired (cancelled)" in out
    await fleet.bring_up("webster")
    assert fleet.received("webster") == []

    for args, says in [
        (("delegate", "--as", "optimizer", "nx-expert", "x", "--parent", " "), "--parent is empty; write the"),
        (("delegate", "--as", "optimizer", "nx-expert", "x", "--parent", "D-x"), "'D-x' is not a delegation id"),
        (("delegate", "--as", "optimizer", "nx-expert", "x", "--parent=-4"), "'-4' is not a delegation id"),
        (("delegations", "cancel"), "delegations cancel needs an id"),
        (("delegations", "cancel", "D-99"), "no delegation D-99"),
    ]:
        code, out, err = await run_cli(*base, *args, env=env)
        assert (code, out) == (2, "") and says in err and "Traceback" not in err, (args, err)


# --- workflow runs: sub-delegations under the step that caused them -----------------------------------


async def test_a_workflow_step_shows_what_its_agent_handed_on(
    services_on_fleet: ServicesOnFleet, capsys: pytest.CaptureFixture[str]
) -> None:
    services, fleet = await services_on_fleet(specs={"optimizer": {"hold_runs": True}})
    definition = WorkflowDefinition.model_validate(
        {"name": "tune", "description": "One step.", "steps": [
            {"id": "tune", "agent": "optimizer", "message": "Tune the M2 supports.", "timeout": "1h"},
        ]}
    )  # fmt: skip
    run = await services.workflows.start(ANTOINE, definition, {}, origin=None)
    step = (await services.workflows.get(run.id)).step("tune")
    assert step.delegation_id == 1
    [hook] = [h for h in fleet.received("optimizer") if h.path.endswith("/agent")]
    assert hook.body["message"].endswith(chain_footer("D-1"))  # the step's agent is told its id too
    service = services.delegation
    await service.delegate(agent("optimizer"), "nx-expert", "Mesh the supports", parent="D-1")
    await service.delegate(agent("optimizer"), "webster", "Find the CTE", parent="D-1")

    detail = await services.workflows.get(run.id)
    [shown] = detail.to_dict()["steps"]
    assert shown["sub_delegations"] == [
        {"id": "D-2", "agent": "nx-expert", "status": "accepted", "parent": "D-1", "depth": 2},
        {"id": "D-3", "agent": "webster", "status": "accepted", "parent": "D-1", "depth": 2},
    ]
    [card] = run_card(detail)
    [field] = card.fields
    assert field.value.splitlines()[-2:] == ["↳ D-2 nx-expert: accepted", "↳ D-3 webster: accepted"]
    print_detail(detail, as_json=False)
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("  tune         optimizer      running          D-1")
    assert out[2:4] == ["    ↳ D-2 nx-expert: accepted", "    ↳ D-3 webster: accepted"]

    # cancelling the run stops what hangs under its steps and was not sent yet
    await fleet.take_down("auditor")
    queued = await service.delegate(agent("optimizer"), "auditor", "Check the numbers", parent="D-1")
    assert queued.delegation is not None and queued.delegation.status == "queued"
    with pytest.raises(InvalidInput, match=r"D-1 is workflow step W-1/tune#1's delegation: cancel the run instead"):
        await service.cancel(ANTOINE, "D-1")
    await services.workflows.cancel(ANTOINE, run.display_id)
    stopped = await service.get("D-4")
    assert stopped.status == "expired" and stopped.last_error == "cancelled by antoine (chain D-1) before it was sent"
    with pytest.raises(ChainRefused, match="chain D-1 was cancelled"):
        await service.delegate(agent("optimizer"), "nx-expert", "More", parent="D-1")
