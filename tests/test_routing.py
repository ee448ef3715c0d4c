"""Capability routing: every filter, every score key, the tie-break, queue-when-only-not-ready, and what a
person reads (docs/routing.md). The router is pure over a snapshot; the service is tested on a real database."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.authz import AccessLevel, Requester
from bot.config import ClusterConfig, GatewayConfig, parse_cluster_config
from bot.delegation import DelegationService
from bot.errors import ConfigError, InvalidInput
from bot.gateway import GatewayClient
from bot.routing.capabilities import normalize, parse_needs
from bot.routing.router import authority_of, decide
from bot.routing.service import NobodyEligible, RoutingService, UnknownCapability
from bot.routing.snapshot import AgentFacts, Snapshot
from bot.routing.table import table_lines
from bot.services import Services
from bot.simulator import RELEASE_LEGACY
from tests.clocks import FakeClock
from tests.conftest import ServicesOnFleet

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
ALICE = Requester(kind="person", name="alice", front_end="cli", level=AccessLevel.OPERATOR)


def everyone(agent: str) -> str | None:
    return None


def facts(name: str, *caps: str, **overrides: Any) -> AgentFacts:
    values: dict[str, Any] = {"ready": True, "readiness": "ready"}
    values.update(overrides)
    return AgentFacts(name, frozenset(caps), **values)


def snapshot(*agents: AgentFacts) -> Snapshot:
    return Snapshot(NOW, agents)


# --- capabilities -----------------------------------------------------------------------------


def test_what_a_person_types_is_normalized() -> None:
    assert normalize(" Materials data ") == "materials-data"
    assert normalize("materials_data") == "materials-data"
    assert parse_needs(["Meshing, FEA", "meshing"]) == ("meshing", "fea")
    with pytest.raises(ValueError, match="not a capability"):
        parse_needs("mesh!ng")


def test_the_config_normalizes_capabilities_and_names_a_malformed_one(shipped_config: ClusterConfig) -> None:
    raw = shipped_config.model_dump(mode="python")
    raw["agents"][0]["capabilities"] = ["Project Planning", "planning", "planning"]
    assert parse_cluster_config(raw).agents[0].capabilities == ["project-planning", "planning"]
    raw["agents"][0]["capabilities"] = ["plan/ning"]
    with pytest.raises(ConfigError, match=r"agents\.manager\.capabilities.*'plan/ning' is not a capability"):
        parse_cluster_config(raw)
    raw["agents"][0]["capabilities"] = []
    raw["agents"][0]["name"] = "auto"
    with pytest.raises(ConfigError, match="'auto' are reserved"):
        parse_cluster_config(raw)


def test_the_shipped_fleet_declares_the_roles_capabilities(shipped_config: ClusterConfig) -> None:
    declared = {agent.name: agent.capabilities for agent in shipped_config.agents}
    assert declared["nx-expert"] == ["cad", "nx", "meshing", "fea"]
    assert declared["webster"] == ["research", "literature", "materials-data"]
    assert all(declared.values()), "every shipped agent declares what it does"


# --- filters ----------------------------------------------------------------------------------


def test_an_agent_without_the_capability_is_never_chosen() -> None:
    decision = decide(snapshot(facts("a", "cad"), facts("b", "cad", "meshing")), "alice", ["meshing"], everyone)
    assert decision.chosen == "b"
    assert decision.row("a").refusals == {"capabilities": "lacks meshing"}


def test_every_needed_capability_is_required() -> None:
    decision = decide(snapshot(facts("a", "cad"), facts("b", "meshing")), "alice", ["cad", "meshing"], everyone)
    assert decision.chosen is None and not decision.queued
    assert decision.row("a").refusals["capabilities"] == "lacks meshing"


def test_authority_is_the_delegation_rule(shipped_config: ClusterConfig) -> None:
    tech_lead = Requester(kind="agent", name="tech-lead", front_end="api")
    rule = authority_of(shipped_config, tech_lead)
    assert rule("manager") == "tech-lead may not delegate to manager"
    assert rule("tech-lead") == "tech-lead may not delegate to itself"
    assert rule("nx-expert") is None
    viewer = Requester(kind="person", name="bob", front_end="discord", level=AccessLevel.VIEWER)
    assert authority_of(shipped_config, viewer)("nx-expert") == "bob is not an operator"
    secretary = authority_of(shipped_config, Requester(kind="agent", name="secretary", front_end="api"))
    decision = decide(snapshot(facts("nx-expert", "meshing")), "secretary", ["meshing"], secretary)
    assert decision.chosen is None and not decision.queued  # no authority: never queued either


def test_a_silenced_agent_is_not_chosen_and_the_table_says_by_whom() -> None:
    silenced = facts("a", "meshing", silenced_until=NOW + timedelta(hours=1), silenced_by="alice")
    decision = decide(snapshot(silenced, facts("b", "meshing", in_flight=3)), "alice", ["meshing"], everyone)
    assert decision.chosen == "b"
    assert decision.row("a").refusals == {"silence": "silenced by alice until 11:00 UTC"}
    over = facts("a", "meshing", silenced_until=NOW - timedelta(minutes=1), silenced_by="alice")
    assert decide(snapshot(over), "alice", ["meshing"], everyone).chosen == "a"  # a silence that ended


def test_an_agent_at_its_cap_is_not_chosen() -> None:
    full = facts("a", "meshing", in_flight=4, cap=4, cap_note="learned 10:05 from a 503")
    decision = decide(snapshot(full, facts("b", "meshing", in_flight=5)), "alice", ["meshing"], everyone)
    assert decision.chosen == "b"
    assert decision.row("a").refusals == {"cap": "4 in flight, cap 4 (learned 10:05 from a 503)"}


def test_nobody_eligible_names_each_capable_agents_failing_filter() -> None:
    full = facts("a", "meshing", in_flight=1, cap=1, silenced_until=NOW + timedelta(hours=2), silenced_by="dan")
    silenced = facts("b", "meshing", silenced_until=NOW + timedelta(hours=1), silenced_by="carol")
    decision = decide(snapshot(full, silenced, facts("c", "cad")), "alice", ["meshing"], everyone)
    assert decision.chosen is None and not decision.queued
    assert decision.explanation == (
        "nobody can take work needing meshing: a: silenced by dan until 12:00 UTC, 1 in flight, cap 1; "
        "b: silenced by carol until 11:00 UTC"
    )


def test_when_every_capable_agent_is_busy_the_work_queues_for_the_best_never_for_another() -> None:
    """The day's 13:40 (scenarios.md): nx-expert busy, nobody else meshes: queued for nx-expert, with why."""
    full = facts("nx-expert", "meshing", in_flight=2, cap=2, cap_note="learned 13:02 UTC from a 503")
    decision = decide(snapshot(full, facts("webster", "research")), "alice", ["meshing"], everyone)
    assert decision.chosen == "nx-expert" and decision.queued
    assert decision.explanation == (
        "queued for nx-expert: no agent with meshing is free; nx-expert is busy: 2 in flight, cap 2 (learned 13:02 "
        "UTC from a 503); sent when it has room"
    )
    down_too = facts("nx-expert", "meshing", in_flight=2, cap=2, ready=False, readiness="down")
    decision = decide(snapshot(down_too), "alice", ["meshing"], everyone)
    assert decision.explanation == (
        "queued for nx-expert: no agent with meshing is ready and free; nx-expert is down and busy: 2 in flight, "
        "cap 2; sent when it is back and it has room"
    )


# --- queued when only readiness fails ---------------------------------------------------------


def test_when_no_capable_agent_is_ready_the_best_is_chosen_and_queued() -> None:
    down = facts("a", "meshing", ready=False, readiness="down since 09:58 (connection refused)")
    decision = decide(snapshot(down, facts("b", "cad")), "alice", ["meshing"], everyone)
    assert decision.chosen == "a" and decision.queued
    assert decision.explanation == (
        "queued for a: no agent with meshing is ready; a is down since 09:58 (connection refused); sent when it is back"
    )


def test_a_ready_agent_beats_a_better_scored_one_that_is_down() -> None:
    down = facts("a", "meshing", ready=False, readiness="down")
    decision = decide(snapshot(down, facts("b", "meshing", in_flight=7)), "alice", ["meshing"], everyone)
    assert decision.chosen == "b" and not decision.queued


def test_not_ready_and_silenced_is_not_queued() -> None:
    both = facts("a", "meshing", ready=False, readiness="down", silenced_until=NOW + timedelta(hours=1))
    decision = decide(snapshot(both), "alice", ["meshing"], everyone)
    assert decision.chosen is None and not decision.queued


# --- score ------------------------------------------------------------------------------------


def test_fewest_in_flight_wins_first() -> None:
    busy = facts("a", "x", in_flight=2, accepted=20, ended=20)
    reliable = facts("b", "x", in_flight=1, accepted=1, ended=5)
    decision = decide(snapshot(busy, reliable), "alice", ["x"], everyone)
    assert decision.chosen == "b"
    assert decision.row("a").rank == 2


def test_affinity_comes_next_when_asked() -> None:
    agents = snapshot(facts("a", "x"), facts("b", "x", accepted=1, ended=2))
    assert decide(agents, "alice", ["x"], everyone).chosen == "a"
    decision = decide(agents, "alice", ["x"], everyone, affinity_agent="b")
    assert decision.chosen == "b"
    assert "ran the earlier step of this run" in decision.explanation


def test_then_the_recent_acceptance_rate() -> None:
    decision = decide(
        snapshot(facts("a", "x", accepted=15, ended=20), facts("b", "x", accepted=20, ended=20)), "alice", ["x"],
        everyone,
    )  # fmt: skip
    assert decision.chosen == "b"
    assert decision.explanation == "b: has x; ready; 0 in flight; 20 of the last 20 accepted"


def test_config_order_breaks_a_tie() -> None:
    decision = decide(snapshot(facts("b", "x"), facts("a", "x")), "alice", ["x"], everyone)
    assert decision.chosen == "b"
    assert decision.explanation == "b: has x; ready; 0 in flight; no delegations yet"


# --- the table --------------------------------------------------------------------------------


def test_the_table_has_a_row_per_agent_with_every_filter() -> None:
    down = facts("a", "x", ready=False, readiness="down since 09:58 (connection refused)")
    decision = decide(snapshot(down, facts("b", "x", accepted=3, ended=4), facts("c", "y")), "alice", ["x"], everyone)
    lines = table_lines(decision, width=200)
    assert lines[0] == decision.explanation
    assert lines[1].split() == ["agent", "capable", "authority", "ready", "silence", "in", "flight", "accepted",
                                "verdict"]  # fmt: skip
    by_agent = {line.split()[0]: line for line in lines[2:]}
    assert by_agent["b"].endswith("chosen") and "3/4" in by_agent["b"]
    assert by_agent["a"].endswith("down since 09:58 (connection refused)")
    assert by_agent["c"].endswith("lacks x")
    assert all(len(line) <= 60 for line in table_lines(decision, width=60))


# --- the service, on a real database ----------------------------------------------------------


async def test_a_capability_nobody_declares_is_bad_input_with_a_did_you_mean(services: Services) -> None:
    with pytest.raises(UnknownCapability, match=r"'meshng'\. Did you mean 'meshing'") as caught:
        services.routing.needs(["meshng"])
    assert caught.value.exit_code == 2 and caught.value.http_status == 400
    with pytest.raises(InvalidInput, match="say what the work needs"):
        services.routing.needs([])


async def test_a_named_agent_with_needs_must_have_them(services: Services) -> None:
    assert await services.routing.resolve(ALICE, "nx-expert", ["meshing"]) == ("nx-expert", None)
    with pytest.raises(InvalidInput, match=r"webster lacks meshing .*write auto"):
        await services.routing.resolve(ALICE, "webster", ["meshing"])


async def test_a_decision_is_audited_with_its_table(services: Services, set_health: Callable[..., Any]) -> None:
    await set_health("nx-expert", confirmed="down")
    queued = await services.routing.route(ALICE, ["meshing"], audit_detail={"message": "mesh the bracket"})
    assert queued.chosen == "nx-expert" and queued.queued
    admin = Requester(kind="person", name="root", front_end="cli", level=AccessLevel.ADMIN)
    await services.monitor.silence(admin, "nx-expert", 3600)
    with pytest.raises(NobodyEligible, match=r"nx-expert: down since .*silenced by root") as caught:
        await services.routing.route(ALICE, ["meshing"])
    assert caught.value.http_status == 409 and caught.value.exit_code == 2
    rows = await services.store.fetchall("SELECT subject, decision, detail FROM audit_log WHERE action = 'route'")
    assert [(r["subject"], r["decision"]) for r in rows] == [("nx-expert", "allowed"), ("meshing", "refused")]
    first = json.loads(rows[0]["detail"])
    assert first["queued"] is True and first["message"] == "mesh the bracket"
    assert len(first["table"]) == 8 and first["table"][6]["refusals"]["ready"].startswith("down since")


async def test_a_503_admission_timeout_caps_the_agent_at_what_it_had_in_flight(
    services: Services, set_health: Callable[..., Any]
) -> None:
    # Nothing listens on the shipped ports here: the delegation waits in the outbox, in flight.
    result = await services.delegation.delegate(ALICE, "nx-expert", "mesh the bracket", deliver=False)
    assert result.delegation is not None and result.delegation.status == "queued"
    for agent in services.config.agent_names:
        await set_health(agent, confirmed="up")
    assert (await services.routing.preview(ALICE, ["meshing"])).chosen == "nx-expert"  # no cap known yet
    await services.routing.admission_timed_out("nx-expert")
    decision = await services.routing.preview(ALICE, ["meshing"])
    assert decision.chosen == "nx-expert" and decision.queued  # nobody else meshes: it waits for room
    assert decision.row("nx-expert").refusals["cap"].startswith("1 in flight, cap 1 (learned ")


@pytest.fixture
def set_health(services: Services) -> Callable[..., Any]:
    """The monitor's record of an agent, as a probe round would leave it (fresh)."""

    async def write(agent: str, *, confirmed: str, observed: str | None = None) -> None:
        now = datetime.now(UTC).isoformat()
        seen = observed or ("ready" if confirmed == "up" else "down")
        await services.store.execute(
            "INSERT INTO agent_health (agent, observed, observed_since, confirmed, confirmed_since, last_probe_at, "
            "detail) VALUES (?, ?, ?, ?, ?, ?, 'connection refused') ON CONFLICT (agent) DO UPDATE SET "
            "observed = excluded.observed, confirmed = excluded.confirmed",
            (agent, seen, now, confirmed, now, now),
        )

    return write


async def test_a_busy_gateway_teaches_routing_its_cap(services_on_fleet: ServicesOnFleet) -> None:
    """The 503 of a gateway that did not admit a hook in 15 s (not one still starting) caps the agent at what it
    had in flight; the delegation itself waits in the outbox as before."""
    services, fleet = await services_on_fleet(specs={"nx-expert": {"busy": True}})
    result = await services.delegation.delegate(ALICE, "nx-expert", "Mesh the bracket", deliver=False)
    assert result.delegation is not None and result.delegation.status == "queued"
    assert "503" in (result.delegation.last_error or "")
    decision = await services.routing.preview(ALICE, ["meshing"])
    assert decision.chosen == "nx-expert" and decision.queued
    refusal = decision.row("nx-expert").refusals["cap"]
    assert refusal.startswith("1 in flight, cap 1 (learned ") and refusal.endswith(" UTC from a 503)")
    assert "1/1" in next(line for line in table_lines(decision) if line.startswith("nx-expert"))
    # A gateway still starting teaches nothing: it surely did not take the work.
    fleet.spec("webster").startup = None
    await fleet.restart("webster")  # starting until told otherwise: hooks answer 503 "Plugin runtime is starting"
    starting = await services.delegation.delegate(ALICE, "webster", "Find the CTE", deliver=False)
    assert starting.delegation is not None and "starting" in (starting.delegation.last_error or "")
    assert await services.store.fetchall("SELECT key FROM meta WHERE key = 'route.cap.webster'") == []


def test_an_excluded_agent_fails_the_authority_filter_with_its_reason() -> None:
    fleet = snapshot(facts("optimizer", "optimization"), facts("study-builder", "optimization", in_flight=2))
    assert decide(fleet, "webster", ["optimization"], everyone).chosen == "optimizer"
    why = {"optimizer": "optimizer is in chain D-1 already (no loops)"}
    decision = decide(fleet, "webster", ["optimization"], everyone, excluded=why)
    assert decision.chosen == "study-builder"
    assert decision.row("optimizer").refusals == {"authority": "optimizer is in chain D-1 already (no loops)"}


async def test_a_routed_sub_delegation_never_goes_back_up_its_chain(
    services: Services, set_health: Callable[..., Any]
) -> None:
    """webster, working on D-2 (tech-lead → optimizer D-1 → webster D-2), routes work needing optimization: the
    optimizer is in the chain, so the other agent with it is chosen, even though it is busier."""
    agents = [
        a.model_copy(update={"capabilities": ("study-setup", "optimization")}) if a.name == "study-builder"
        else a.model_copy(update={"delegates_to": ["optimizer", "study-builder"]}) if a.name == "webster"
        else a
        for a in services.config.agents
    ]  # fmt: skip
    routing = RoutingService(services.config.model_copy(update={"agents": agents}), services.store, services.cluster)
    routing.chain_members = services.delegation.chain_members
    for agent in services.config.agent_names:
        await set_health(agent, confirmed="up")
    tech_lead, optimizer = (Requester(kind="agent", name=n, front_end="api") for n in ("tech-lead", "optimizer"))
    await services.delegation.delegate(tech_lead, "optimizer", "Optimize the ribs", deliver=False)  # D-1
    await services.delegation.delegate(optimizer, "webster", "Find rib materials", deliver=False, parent="D-1")
    for _ in range(2):
        await services.delegation.delegate(ALICE, "study-builder", "Set up a study", deliver=False)
    webster = Requester(kind="agent", name="webster", front_end="api")

    assert (await routing.preview(webster, ["optimization"])).chosen == "optimizer"  # fewer in flight
    decision = await routing.preview(webster, ["optimization"], parent="D-2")
    assert decision.chosen == "study-builder"
    assert decision.row("optimizer").refusals["authority"] == "optimizer is in chain D-1 already (no loops)"
    assert (await routing.resolve(webster, "auto", ["optimization"], parent="D-2"))[0] == "study-builder"


# --- routed again when the chosen agent does not take it ----------------------------------------------


def routing_where(services: Services, **capabilities: tuple[str, ...]) -> RoutingService:
    """The services' routing, on a fleet where the named agents declare these capabilities; wired as bot.services
    wires the real one (the delegation service asks it again when an agent does not admit a routed delegation)."""
    agents = [a.model_copy(update={"capabilities": capabilities.get(a.name, a.capabilities)})
              for a in services.config.agents]  # fmt: skip
    routing = RoutingService(services.config.model_copy(update={"agents": agents}), services.store, services.cluster)
    routing.chain_members = services.delegation.chain_members
    services.delegation.on_admission_timeout = routing.admission_timed_out
    services.delegation.rerouter = routing.reroute
    return routing


async def test_a_routed_delegation_its_agent_does_not_admit_goes_to_another_that_can(
    services_on_fleet: ServicesOnFleet,
) -> None:
    """study-builder (first in the config, so chosen) answers 503: not admitted, so nothing was started there; the
    delegation goes to nx-expert, the other agent with meshing, instead of waiting. Both decisions are audited."""
    services, fleet = await services_on_fleet(specs={"study-builder": {"busy": True}})
    routing = routing_where(services, **{"study-builder": ("study-setup", "meshing")})
    agent, decision = await routing.resolve(ALICE, "auto", ["meshing"])
    assert agent == "study-builder" and decision is not None
    result = await services.delegation.delegate(ALICE, agent, "Mesh the bracket", deliver=False, needs=decision.needs)
    delegation = result.delegation
    assert delegation is not None and (delegation.agent, delegation.status) == ("nx-expert", "accepted")
    assert delegation.to_dict()["needs"] == ["meshing"] and delegation.attempts == 1
    assert [hook.agent for hook in fleet.received()] == ["nx-expert"]
    rows = await services.store.fetchall("SELECT subject, detail FROM audit_log WHERE action = 'route' ORDER BY id")
    assert [row["subject"] for row in rows] == ["study-builder", "nx-expert"]
    again = json.loads(rows[1]["detail"])
    assert again["delegation"] == "D-1" and again["rerouted_from"] == "study-builder" and "503" in again["why"]
    refusals = next(row for row in again["table"] if row["agent"] == "study-builder")["refusals"]
    assert refusals["authority"].startswith("did not admit D-1: ")


async def test_with_nobody_else_ready_it_waits_then_moves_when_one_is_and_a_named_one_never_does(
    services_on_fleet: ServicesOnFleet,
) -> None:
    services, fleet = await services_on_fleet(specs={"nx-expert": {"busy": True}, "study-builder": {"down": True}})
    routing = routing_where(services, **{"study-builder": ("study-setup", "meshing")})
    clock = FakeClock()
    service = DelegationService(services.config, services.store, services.gateway, clock=clock)
    service.rerouter = routing.reroute
    agent, decision = await routing.resolve(ALICE, "auto", ["meshing"])
    assert agent == "nx-expert" and decision is not None  # study-builder is down: not ready
    routed = await service.delegate(ALICE, agent, "Mesh it", deliver=False, needs=decision.needs)
    named = await service.delegate(ALICE, "nx-expert", "Mesh that", deliver=False)  # named: no needs
    for result in (routed, named):
        assert result.delegation is not None
        assert (result.delegation.agent, result.delegation.status) == ("nx-expert", "queued")
    assert fleet.received() == []

    # study-builder is back; nx-expert still cannot admit: the routed one moves on its next try, the named one waits.
    await fleet.bring_up("study-builder")
    clock.advance(30)
    await service.process_due()
    assert routed.delegation is not None and named.delegation is not None
    moved, stayed = await service.get(routed.delegation.id), await service.get(named.delegation.id)
    assert (moved.agent, moved.status) == ("study-builder", "accepted")
    assert (stayed.agent, stayed.status) == ("nx-expert", "queued")
    assert [hook.agent for hook in fleet.received()] == ["study-builder"]


async def test_a_delegation_that_may_have_reached_its_agent_never_moves(services_on_fleet: ServicesOnFleet) -> None:
    """study-builder's first answer comes too late (the request went out: it may be working on it); its gateway is
    then down. The retry is refused, but the work stays with study-builder: never a second agent on it."""
    services, fleet = await services_on_fleet(specs={"study-builder": {"reply_delay_ms": 3000}})
    routing = routing_where(services, **{"study-builder": ("study-setup", "meshing")})
    clock = FakeClock()
    gateway = GatewayClient(services.http, services.settings.hooks_token_for, GatewayConfig(read_timeout=0.3))
    service = DelegationService(services.config, services.store, gateway, clock=clock)
    service.rerouter = routing.reroute
    agent, decision = await routing.resolve(ALICE, "auto", ["meshing"])
    assert agent == "study-builder" and decision is not None
    result = await service.delegate(ALICE, agent, "Mesh it", deliver=False, needs=decision.needs)
    assert result.delegation is not None and result.delegation.status == "queued"
    await fleet.take_down("study-builder")
    clock.advance(30)
    await service.process_due()  # connection refused now; the first request may still have arrived
    delegation = await service.get(result.delegation.id)
    assert (delegation.agent, delegation.status, delegation.pinned) == ("study-builder", "queued", True)
    assert [hook.agent for hook in fleet.received()] == ["study-builder"]
    assert [row["subject"] for row in await services.store.fetchall(
        "SELECT subject FROM audit_log WHERE action = 'route'")] == ["study-builder"]  # fmt: skip


async def test_a_503_from_a_gateway_without_idempotency_keys_moves_nothing(services_on_fleet: ServicesOnFleet) -> None:
    """Only 2026.9.6's 503 after its admission wait is known to cancel the queued run; any other 503 may have started
    it, so the delegation stays (unconfirmed on a gateway that cannot replay it)."""
    services, fleet = await services_on_fleet(
        release={"study-builder": RELEASE_LEGACY}, specs={"study-builder": {"busy": True}}
    )
    routing = routing_where(services, **{"study-builder": ("study-setup", "meshing")})
    agent, decision = await routing.resolve(ALICE, "auto", ["meshing"])
    assert agent == "study-builder" and decision is not None
    result = await services.delegation.delegate(ALICE, agent, "Mesh it", deliver=False, needs=decision.needs)
    assert result.delegation is not None
    assert (result.delegation.agent, result.delegation.status) == ("study-builder", "unconfirmed")
    assert fleet.received() == []
