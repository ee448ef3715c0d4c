"""The delegation service on real SQLite and a simulated fleet: authority, durability, exactly-once."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta

import pytest
from pydantic import SecretStr

from bot.authz import AccessLevel, Requester
from bot.config import HOOK_BODY_LIMIT, GatewayConfig
from bot.delegation import DelegationService, chain_footer
from bot.errors import InvalidInput, InvalidTarget, NotAllowed, PayloadTooLarge, UnknownAgent
from bot.gateway import GatewayClient
from bot.services import Services
from bot.simulator import RELEASE_CURRENT, RELEASE_LEGACY, SimulatedFleet
from tests.clocks import FakeClock
from tests.conftest import HOOKS_TOKEN, ServicesOnFleet

TECHNICAL = "channel:100000000000000101"


def person(level: AccessLevel, name: str = "antoine") -> Requester:
    return Requester(kind="person", name=name, front_end="cli", level=level, user_id="100000000000000900")


def agent(name: str) -> Requester:
    return Requester(kind="agent", name=name, front_end="api")


def service_for(services: Services, clock: FakeClock, gateway: GatewayClient | None = None) -> DelegationService:
    return DelegationService(services.config, services.store, gateway or services.gateway, clock=clock)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# --- authority --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requester", "target", "allowed", "reason"),
    [
        (agent("manager"), "nx-expert", True, "manager may delegate to nx-expert"),
        (agent("manager"), "tech-lead", True, "manager may delegate to tech-lead"),
        (agent("manager"), "manager", False, "manager may not delegate to itself"),
        (agent("tech-lead"), "webster", True, "tech-lead may delegate to webster"),
        (agent("tech-lead"), "manager", False, "tech-lead may not delegate to manager: it may delegate only to"),
        (agent("nx-expert"), "auditor", False, "nx-expert may not delegate to auditor: it may not delegate to any"),
        (agent("webster"), "secretary", False, "webster may not delegate to secretary"),
        (person(AccessLevel.ADMIN), "manager", True, "antoine is admin: may delegate to any agent"),
        (person(AccessLevel.OPERATOR), "manager", True, "antoine is operator: may delegate to any agent"),
        (person(AccessLevel.VIEWER), "nx-expert", False, "antoine is a viewer: delegating needs the operator level"),
        (person(AccessLevel.NONE), "nx-expert", False, "antoine has no atomizer-hq role"),
    ],
)
async def test_authority_for_people_and_agents(
    services_on_fleet: ServicesOnFleet, clock: FakeClock, requester: Requester, target: str, allowed: bool, reason: str
) -> None:
    services, fleet = await services_on_fleet()
    service = service_for(services, clock)
    decision = service.authorize(requester, target)
    assert decision.allowed is allowed
    assert reason in decision.reason
    if allowed:
        result = await service.delegate(requester, target, "Mesh the M2 mirror")
        assert result.delegation is not None and result.delegation.status == "accepted"
        assert len(fleet.received(target)) == 1
    else:
        with pytest.raises(NotAllowed) as caught:
            await service.delegate(requester, target, "Mesh the M2 mirror")
        assert "Who could:" in str(caught.value)
        assert fleet.received(target) == []
        assert await services.store.fetchone("SELECT * FROM delegations") is None
    audit = await services.store.fetchall("SELECT actor, subject, decision, detail FROM audit_log")
    assert [(a["actor"], a["subject"], a["decision"]) for a in audit] == [
        (requester.name, target, "allowed" if allowed else "refused")
    ]


async def test_a_refusal_names_who_could_delegate(services_on_fleet: ServicesOnFleet, clock: FakeClock) -> None:
    services, _ = await services_on_fleet()
    decision = service_for(services, clock).authorize(agent("tech-lead"), "manager")
    assert decision.reason.endswith(
        "Who could: manager itself (taking it on directly), or a person with the operator or admin role."
    )
    decision = service_for(services, clock).authorize(agent("nx-expert"), "webster")
    assert "Who could: manager, tech-lead, optimizer, or a person with the operator or admin role." in decision.reason


async def test_acting_for_an_agent_is_admin_only_and_stays_on_record(
    services_on_fleet: ServicesOnFleet, clock: FakeClock
) -> None:
    services, _ = await services_on_fleet()
    service = service_for(services, clock)
    with pytest.raises(NotAllowed, match="only an admin may act for an agent"):
        person(AccessLevel.OPERATOR).acting_as("tech-lead", services.config)
    as_tech_lead = person(AccessLevel.ADMIN).acting_as("tech-lead", services.config)
    with pytest.raises(NotAllowed, match="tech-lead may not delegate to manager"):
        await service.delegate(as_tech_lead, "manager", "Approve the budget")
    result = await service.delegate(as_tech_lead, "nx-expert", "Mesh the M2 mirror")
    assert result.delegation is not None
    assert result.delegation.to_dict()["requester"] == {"kind": "agent", "name": "tech-lead", "via": "antoine"}
    details = [json.loads(r["detail"]) for r in await services.store.fetchall("SELECT detail FROM audit_log")]
    assert all(d["via"] == "antoine" for d in details)


# --- validation -------------------------------------------------------------------------------


async def test_bad_input_is_refused_before_anything_is_recorded(
    services_on_fleet: ServicesOnFleet, clock: FakeClock
) -> None:
    services, fleet = await services_on_fleet()
    service, admin = service_for(services, clock), person(AccessLevel.ADMIN)
    with pytest.raises(UnknownAgent, match="Did you mean 'nx-expert'"):
        await service.delegate(admin, "nx-exprt", "Mesh it")
    with pytest.raises(InvalidInput, match="the instruction is empty"):
        await service.delegate(admin, "nx-expert", "   \n ")
    with pytest.raises(PayloadTooLarge, match="the limit is 262,144"):
        await service.delegate(admin, "nx-expert", "x" * HOOK_BODY_LIMIT)
    with pytest.raises(InvalidTarget, match="100000000000000999"):  # neither a channel nor a member
        await service.delegate(admin, "nx-expert", "Mesh it", target="100000000000000999")
    with pytest.raises(InvalidTarget):
        await service.delegate(admin, "nx-expert", "Mesh it", target="12345")
    assert fleet.received() == []
    assert await services.store.fetchone("SELECT * FROM delegations") is None


@pytest.mark.parametrize(
    ("target", "origin", "expected"),
    [
        (None, None, TECHNICAL),
        (None, "channel:100000000000000777", "channel:100000000000000777"),
        ("daily_standup", "channel:100000000000000777", "channel:100000000000000103"),
        ("<@100000000000000301>", None, "user:100000000000000301"),
        ("#task-board", None, "channel:100000000000000102"),
    ],
)
async def test_targets_are_normalized_and_default_to_where_the_request_came_from(
    services_on_fleet: ServicesOnFleet, clock: FakeClock, target: str | None, origin: str | None, expected: str
) -> None:
    services, fleet = await services_on_fleet()
    await service_for(services, clock).delegate(person(AccessLevel.OPERATOR), "nx-expert", "Mesh", target=target,
                                                origin=origin)  # fmt: skip
    [run] = fleet.received("nx-expert")
    assert (run.body["channel"], run.body["to"], run.body["deliver"]) == ("discord", expected, True)


async def test_no_deliver_sends_neither_channel_nor_to(services_on_fleet: ServicesOnFleet, clock: FakeClock) -> None:
    services, fleet = await services_on_fleet()
    await service_for(services, clock).delegate(person(AccessLevel.OPERATOR), "nx-expert", "Mesh", deliver=False)
    [run] = fleet.received("nx-expert")
    assert run.body["deliver"] is False and "channel" not in run.body and "to" not in run.body


async def test_a_dry_run_shows_the_exact_payload_and_sends_nothing(
    services_on_fleet: ServicesOnFleet, clock: FakeClock
) -> None:
    services, fleet = await services_on_fleet()
    result = await service_for(services, clock).delegate(agent("tech-lead"), "manager", "Approve", dry_run=True)
    assert result.dry_run and not result.decision.allowed
    assert result.payload == {
        "message": "Approve" + chain_footer("D-new"), "name": "atomizer-hq D-new", "deliver": True,
        "channel": "discord", "to": TECHNICAL,
    }  # fmt: skip
    assert fleet.received() == [] and await services.store.fetchone("SELECT * FROM audit_log") is None


# --- durability and exactly-once ------------------------------------------------------------


@pytest.mark.parametrize("release", [RELEASE_CURRENT, RELEASE_LEGACY])
async def test_an_agent_down_when_delegated_to_gets_it_exactly_once_after_it_comes_back(
    services_on_fleet: ServicesOnFleet, clock: FakeClock, release: str
) -> None:
    services, fleet = await services_on_fleet(release=release, specs={"webster": {"down": True}})
    service = service_for(services, clock)
    result = await service.delegate(person(AccessLevel.OPERATOR), "webster", "Find the CTE of Zerodur")
    queued = result.delegation
    assert queued is not None and queued.status == "queued"
    assert "connection refused" in (queued.last_error or "")
    assert await service.process_due() == 0  # not due yet: the backoff holds it

    await fleet.bring_up("webster")
    clock.advance(8)
    assert await service.process_due() == 1
    delivered = await service.get(queued.id)
    assert delivered.status == "accepted" and delivered.attempts == 2
    [run] = fleet.received("webster")
    assert run.run_id == delivered.run_id and run.idempotency_key == delivered.idem_key
    clock.advance(60)
    assert await service.process_due() == 0
    assert len(fleet.received("webster")) == 1


async def test_a_queued_delegation_survives_a_bot_restart(services_on_fleet: ServicesOnFleet, clock: FakeClock) -> None:
    first, fleet = await services_on_fleet(specs={"webster": {"down": True}})
    queued = (
        await service_for(first, clock).delegate(person(AccessLevel.OPERATOR), "webster", "Find the CTE")
    ).delegation
    assert queued is not None and queued.status == "queued"
    await first.store.close()  # the bot goes away

    second, _ = await services_on_fleet()  # a new process on the same database
    await fleet.bring_up("webster")
    clock.advance(8)
    service = service_for(second, clock)
    assert await service.recover() == 0
    assert await service.process_due() == 1
    assert (await service.get(queued.id)).status == "accepted"
    assert len(fleet.received("webster")) == 1


async def test_a_delegation_expires_after_the_retry_window(
    services_on_fleet: ServicesOnFleet, clock: FakeClock
) -> None:
    services, fleet = await services_on_fleet(specs={"webster": {"down": True}})
    service = service_for(services, clock)
    queued = (await service.delegate(person(AccessLevel.OPERATOR), "webster", "Find the CTE")).delegation
    assert queued is not None
    for _ in range(40):
        clock.advance(30)
        await service.process_due()
    expired = await service.get(queued.id)
    assert expired.status == "expired" and "retry window over" in (expired.last_error or "")
    await fleet.bring_up("webster")
    clock.advance(60)
    await service.process_due()
    assert fleet.received("webster") == []


async def outbox_rounds(service: DelegationService, clock: FakeClock, until: datetime | None = None) -> None:
    """What the outbox of `atomizer-hq run` does: wake when the next delegation falls due, send what is due."""
    while (due := await service.next_due()) is not None and (until is None or due < until):
        clock.now = max(clock.now, due)
        await service.process_due()


async def test_a_queued_delegation_is_retried_until_the_time_it_states_and_expires_then(
    services_on_fleet: ServicesOnFleet, clock: FakeClock
) -> None:
    """The stated "will retry until 09:10:00" is when it expires: not a backoff step (up to a minute) earlier."""
    services, fleet = await services_on_fleet(specs={"webster": {"down": True}})
    service = service_for(services, clock)
    queued = (await service.delegate(person(AccessLevel.OPERATOR), "webster", "Find the CTE")).delegation
    assert queued is not None and queued.status == "queued"
    expires = datetime.fromisoformat(queued.expires_at)
    await outbox_rounds(service, clock, until=expires)
    still = await service.get(queued.id)
    assert still.status == "queued" and clock.now == expires - timedelta(seconds=1)  # the last attempt, just before
    await outbox_rounds(service, clock)
    expired = await service.get(queued.id)
    assert expired.status == "expired" and expired.updated_at == queued.expires_at
    assert (expired.last_error or "").endswith("(the gateway is not listening); retry window over")
    assert fleet.received("webster") == []


async def test_an_agent_back_in_the_last_minute_of_the_window_still_gets_it(
    services_on_fleet: ServicesOnFleet, clock: FakeClock
) -> None:
    services, fleet = await services_on_fleet(specs={"webster": {"down": True}})
    service = service_for(services, clock)
    queued = (await service.delegate(person(AccessLevel.OPERATOR), "webster", "Find the CTE")).delegation
    assert queued is not None
    expires = datetime.fromisoformat(queued.expires_at)
    await outbox_rounds(service, clock, until=expires - timedelta(seconds=30))
    await fleet.bring_up("webster")
    await outbox_rounds(service, clock)
    delivered = await service.get(queued.id)
    assert delivered.status == "accepted" and delivered.accepted_at is not None
    assert datetime.fromisoformat(delivered.accepted_at) < expires
    assert len(fleet.received("webster")) == 1


async def test_a_starting_gateway_is_retried(services_on_fleet: ServicesOnFleet, clock: FakeClock) -> None:
    services, fleet = await services_on_fleet(specs={"auditor": {"startup": None}})
    service = service_for(services, clock)
    queued = (await service.delegate(person(AccessLevel.OPERATOR), "auditor", "Review")).delegation
    assert queued is not None and queued.status == "queued" and "starting" in (queued.last_error or "")
    fleet.finish_startup("auditor")
    clock.advance(2)
    await service.process_due()
    assert (await service.get(queued.id)).status == "accepted"
    assert len(fleet.received("auditor")) == 1


@pytest.mark.parametrize(
    ("specs", "token", "status", "error"),
    [
        ({"auditor": {"hooks_enabled": False}}, HOOKS_TOKEN, "failed", "hooks are disabled"),
        ({}, "some-other-token-entirely", "failed", "refused our hooks token (HTTP 401)"),
    ],
)
async def test_rejections_fail_at_once_with_the_gateways_reason(
    services_on_fleet: ServicesOnFleet, clock: FakeClock, specs: dict, token: str, status: str, error: str
) -> None:
    services, fleet = await services_on_fleet(specs=specs)
    async with GatewayClient.make_http_client(services.config.gateway) as http:
        gateway = GatewayClient(http, lambda _: SecretStr(token), services.config.gateway)
        result = await service_for(services, clock, gateway).delegate(person(AccessLevel.OPERATOR), "auditor", "Hi")
    assert result.delegation is not None
    assert result.delegation.status == status and error in (result.delegation.last_error or "")
    assert result.delegation.attempts == 1
    assert fleet.received() == []


async def timeout_after_sending(
    services_on_fleet: ServicesOnFleet, clock: FakeClock, release: str
) -> tuple[Services, SimulatedFleet, DelegationService, int]:
    """The gateway starts the run but answers too late: the client times out after sending."""
    services, fleet = await services_on_fleet(release=release, specs={"webster": {"reply_delay_ms": 3000}})
    gateway = GatewayClient(services.http, services.settings.hooks_token_for, GatewayConfig(read_timeout=0.3))
    service = service_for(services, clock, gateway)
    result = await service.delegate(person(AccessLevel.OPERATOR), "webster", "Find the CTE")
    assert result.delegation is not None
    return services, fleet, service, result.delegation.id


async def test_a_timeout_after_sending_ends_unconfirmed_on_the_old_release(
    services_on_fleet: ServicesOnFleet, clock: FakeClock
) -> None:
    _, fleet, service, delegation_id = await timeout_after_sending(services_on_fleet, clock, RELEASE_LEGACY)
    delegation = await service.get(delegation_id)
    assert delegation.status == "unconfirmed"
    assert "does not honour idempotency keys" in (delegation.last_error or "")
    fleet.set_reply_delay("webster", 0)
    clock.advance(600)
    assert await service.process_due() == 0
    assert len(fleet.received("webster")) == 1  # one run, never two

    # A person decides: retry sends it again, on purpose.
    with pytest.raises(NotAllowed):
        await service.retry(person(AccessLevel.VIEWER), delegation_id)
    retried = await service.retry(person(AccessLevel.OPERATOR), delegation_id)
    assert retried.status == "accepted" and len(fleet.received("webster")) == 2


async def test_a_timeout_after_sending_is_retried_safely_on_the_current_release(
    services_on_fleet: ServicesOnFleet, clock: FakeClock
) -> None:
    _, fleet, service, delegation_id = await timeout_after_sending(services_on_fleet, clock, RELEASE_CURRENT)
    assert (await service.get(delegation_id)).status == "queued"
    fleet.set_reply_delay("webster", 0)
    clock.advance(5)
    await service.process_due()
    delegation = await service.get(delegation_id)
    assert delegation.status == "accepted"
    [run] = fleet.received("webster")  # the retry replayed the first run
    assert run.run_id == delegation.run_id


@pytest.mark.parametrize(("release", "outcome"), [(RELEASE_CURRENT, "accepted"), (RELEASE_LEGACY, "unconfirmed")])
async def test_a_bot_killed_mid_send_never_sends_twice(
    services_on_fleet: ServicesOnFleet, clock: FakeClock, release: str, outcome: str
) -> None:
    services, fleet = await services_on_fleet(release=release, specs={"nx-expert": {"down": True}})
    service = service_for(services, clock)
    queued = (await service.delegate(person(AccessLevel.OPERATOR), "nx-expert", "Mesh")).delegation
    assert queued is not None
    # The request reached the gateway, then the bot died before recording the answer.
    await fleet.bring_up("nx-expert")
    hook = service._hook(queued.message, True, queued.target, queued.display_id)
    await services.gateway.send_agent_hook(services.config.require_agent("nx-expert"), hook,
                                           idempotency_key=queued.idem_key)  # fmt: skip
    await services.store.execute("UPDATE delegations SET status = 'sending' WHERE id = ?", (queued.id,))

    restarted = service_for(services, clock)
    assert await restarted.recover() == 1
    clock.advance(10)
    await restarted.process_due()
    assert (await restarted.get(queued.id)).status == outcome
    assert len(fleet.received("nx-expert")) == 1


# --- reading ----------------------------------------------------------------------------------


async def test_recent_delegations_filter_and_page(services_on_fleet: ServicesOnFleet, clock: FakeClock) -> None:
    services, _ = await services_on_fleet(specs={"webster": {"down": True}})
    service, operator = service_for(services, clock), person(AccessLevel.OPERATOR)
    for index in range(5):
        await service.delegate(operator, "nx-expert" if index % 2 else "webster", f"job {index}")
    assert [d.message for d in await service.recent(limit=2)] == ["job 4", "job 3"]
    page_two = await service.recent(limit=2, before_id=(await service.recent(limit=2))[-1].id)
    assert [d.message for d in page_two] == ["job 2", "job 1"]
    assert {d.agent for d in await service.recent(status="queued")} == {"webster"}
    assert len(await service.recent(agent="nx-expert")) == 2
    with pytest.raises(InvalidInput, match="unknown status 'done'"):
        await service.recent(status="done")
    with pytest.raises(InvalidInput, match="not a delegation id"):
        await service.get("T-12")
    assert (await service.get("d-1")).message == "job 0"


async def test_two_workers_on_one_database_never_send_a_delegation_twice(
    services_on_fleet: ServicesOnFleet, clock: FakeClock
) -> None:
    first, fleet = await services_on_fleet(release=RELEASE_LEGACY, specs={"webster": {"down": True}})
    second, _ = await services_on_fleet()  # another bot started by mistake, same database
    one, two = service_for(first, clock), service_for(second, clock)
    for index in range(5):
        await one.delegate(person(AccessLevel.OPERATOR), "webster", f"job {index}")
    await fleet.bring_up("webster")
    clock.advance(10)
    await asyncio.gather(one.process_due(), two.process_due(), one.process_due())
    sent = sorted(h.body["message"] for h in fleet.received("webster"))
    assert sent == [f"job {i}" + chain_footer(f"D-{i + 1}") for i in range(5)]
    assert {d.status for d in await one.recent()} == {"accepted"}


@pytest.mark.parametrize(
    ("release", "outcome", "sent"), [(RELEASE_CURRENT, "accepted", 1), (RELEASE_LEGACY, "unconfirmed", 0)]
)
async def test_a_delegation_recorded_but_never_tried_is_resent_after_a_restart_only_where_that_is_safe(
    services_on_fleet: ServicesOnFleet, clock: FakeClock, release: str, outcome: str, sent: int
) -> None:
    services, fleet = await services_on_fleet(release=release)
    service = service_for(services, clock)
    requester = person(AccessLevel.OPERATOR)
    decision = service.authorize(requester, "nx-expert")
    # The process died right after writing the record (claimed for its first attempt), before sending.
    recorded = await service._record(requester, "nx-expert", "Mesh", True, TECHNICAL, None, decision)
    assert recorded.status == "sending"
    assert await service.process_due() == 0
    await service.recover()
    clock.advance(60)
    await service.process_due()
    # The request may have left: a gateway that replays a repeated key gets it again (one run at most);
    # the old release would start a second run, so a person decides.
    assert (await service.get(recorded.id)).status == outcome
    assert len(fleet.received("nx-expert")) == sent


async def test_a_queued_record_left_by_an_older_version_is_sent_after_a_restart(
    services_on_fleet: ServicesOnFleet, clock: FakeClock
) -> None:
    services, fleet = await services_on_fleet()
    service = service_for(services, clock)
    requester = person(AccessLevel.OPERATOR)
    recorded = await service._record(
        requester, "nx-expert", "Mesh", True, TECHNICAL, None, service.authorize(requester, "nx-expert")
    )
    # Earlier versions recorded `queued` first and claimed it in a second step.
    await services.store.execute("UPDATE delegations SET status = 'queued', attempts = 0 WHERE id = ?", (recorded.id,))
    assert await service.process_due() == 0
    await service.recover()
    assert await service.process_due() == 1
    assert (await service.get(recorded.id)).status == "accepted"
    assert len(fleet.received("nx-expert")) == 1
