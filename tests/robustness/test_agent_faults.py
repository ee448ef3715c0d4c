"""Agent faults, through the delegation service: killed mid-delegation, slow, garbage, 500s, hung.

Covered elsewhere, not repeated here: the gateway client's typing of each fault (tests/test_gateway.py:
hung, 500, garbage 200s, down, starting), a timeout after sending on each release and a bot killed
mid-send (tests/test_delegation.py), readiness of a mixed faulty fleet (test_gateway.py). What this
adds: the whole delegation (record, send, retry, final status) against every fault, counting what the
agent actually started, so "nothing lost, nothing duplicated" is checked, not assumed.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from bot.authz import AccessLevel, Requester
from bot.config import ClusterConfig, GatewayConfig
from bot.delegation import Delegation, DelegationService
from bot.gateway import GatewayClient
from bot.services import Services
from bot.simulator import RELEASE_CURRENT, RELEASE_LEGACY, free_ports
from tests.clocks import FakeClock
from tests.conftest import ServicesOnFleet
from tests.robustness.conftest import wait_for

OPERATOR = Requester(kind="person", name="antoine", front_end="cli", level=AccessLevel.OPERATOR)
RELEASES = pytest.mark.parametrize("release", [RELEASE_CURRENT, RELEASE_LEGACY])


# --- a gateway whose hook answers are faulty on demand ------------------------------------------


@dataclass
class HookRequest:
    idempotency_key: str | None
    message: str


@dataclass
class FaultyGateway:
    """A raw HTTP server on an agent's port: health like the release, hook answers the test picks.

    Every fault is the worst case for duplicates: the run *starts* before the answer goes wrong. The
    current release replays a run for a repeated Idempotency-Key; the legacy one starts a new run each
    time. So `runs` counts what the agent really started.
    """

    release: str
    faults: list[str] = field(default_factory=list)  # the answers to the next hook requests; then "ok"
    hooks: list[HookRequest] = field(default_factory=list)  # hook requests with a message (not probes)
    runs: list[str] = field(default_factory=list)  # runIds started, in order
    _by_key: dict[str, str] = field(default_factory=dict)
    _server: asyncio.Server | None = None
    _open: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self, port: int) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._open):
                writer.transport.abort()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open.add(writer)
        try:
            while True:  # keep-alive: httpx reuses connections
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                fields = (line.partition(":") for line in lines[1:] if line)
                headers = {name.strip().lower(): value.strip() for name, _, value in fields}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if not await self._answer(writer, method, path, headers, body):
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            return
        finally:
            self._open.discard(writer)
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, method: str, path: str, headers: dict, body: bytes) -> bool:
        """Write one answer; False when the connection must end."""
        current = self.release == RELEASE_CURRENT
        if method == "GET" and path in ("/readyz", "/startupz") and current:
            payload = {"ready": True, "failing": [], "uptimeMs": 1} if path == "/readyz" else {"version": current}
            if path == "/startupz":
                payload = {"ok": True, "status": "started", "version": RELEASE_CURRENT}
            return self._write(writer, 200, json.dumps(payload), "application/json")
        if method == "GET":
            return self._write(writer, 200, "<!doctype html><html><body>Control UI</body></html>", "text/html")
        if path != "/hooks/agent":
            return self._write(writer, 404, "Not Found", "text/plain")
        payload = json.loads(body or b"{}")
        if "message" not in payload:  # the legacy readiness check: POST {} starts nothing
            return self._write(writer, 400, '{"ok":false,"error":"message required"}', "application/json")
        key = headers.get("idempotency-key")
        self.hooks.append(HookRequest(key, payload["message"]))
        run_id = self._by_key.get(key or "") if current else None
        if run_id is None:
            run_id = str(uuid.uuid4())
            self.runs.append(run_id)
            if current and key:
                self._by_key[key] = run_id
        fault = self.faults.pop(0) if self.faults else "ok"
        if fault == "ok":
            answer = json.dumps({"ok": True, "runId": run_id})
            return self._write(writer, 200 if current else 202, answer, "application/json")
        if fault == "html":
            return self._write(writer, 200, "<!doctype html><html><body>502 Bad Gateway</body></html>", "text/html")
        if fault == "non-json":
            return self._write(writer, 200, "OK", "text/plain")
        if fault == "truncated-json":
            return self._write(writer, 200, '{"ok":true,"runId":"' + run_id[:8], "application/json")
        if fault == "500":
            return self._write(writer, 500, "Internal Server Error", "text/plain")
        if fault == "truncated-body":  # the headers promise more than ever comes, then the socket closes
            writer.write(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n{"ok":tr')
            await writer.drain()
            return False
        if fault == "hang":  # a connection accepted, the request read, never answered
            await asyncio.Event().wait()
        raise AssertionError(f"unknown fault {fault!r}")

    @staticmethod
    def _write(writer: asyncio.StreamWriter, status: int, text: str, content_type: str) -> bool:
        data = text.encode()
        head = f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {len(data)}\r\n\r\n"
        writer.write(head.encode() + data)
        return True


@dataclass
class Rig:
    service: DelegationService
    gateway: FaultyGateway
    clock: FakeClock
    agent: str = "webster"

    async def delegate(self, message: str = "Find the CTE of Zerodur") -> Delegation:
        result = await self.service.delegate(OPERATOR, self.agent, message)
        assert result.delegation is not None
        return result.delegation


@pytest.fixture
async def faulty(
    services: Services, make_config: Callable[..., ClusterConfig]
) -> AsyncIterator[Callable[[str], asyncio.Future[Rig]]]:
    """A DelegationService whose webster is a FaultyGateway of the given release (fake clock, 0.3 s reads)."""
    started: list[FaultyGateway] = []

    async def make(release: str) -> Rig:
        config = make_config(free_ports(8))
        gateway = FaultyGateway(release)
        await gateway.start(config.require_agent("webster").port)
        started.append(gateway)
        client = GatewayClient(
            services.http,
            services.settings.hooks_token_for,
            GatewayConfig(connect_timeout=1.0, read_timeout=0.3, probe_timeout=1.0),
        )
        clock = FakeClock()
        return Rig(DelegationService(config, services.store, client, clock=clock), gateway, clock)

    yield make  # type: ignore[misc]
    for gateway in started:
        await gateway.stop()


FAULTS = ["html", "non-json", "truncated-json", "truncated-body", "500", "hang"]


@pytest.mark.parametrize("fault", FAULTS)
async def test_on_the_current_release_a_faulty_answer_is_retried_with_the_same_key_and_runs_once(
    faulty: Callable[[str], asyncio.Future[Rig]], fault: str
) -> None:
    rig = await faulty(RELEASE_CURRENT)
    rig.gateway.faults = [fault, fault]
    queued = await rig.delegate()
    assert queued.status == "queued" and queued.last_error, queued  # not failed: it may still be delivered
    assert queued.attempts == 1
    for _ in range(4):  # the backoff is 2 s, then 4 s: the third attempt gets a good answer
        rig.clock.advance(5)
        await rig.service.process_due()
    delivered = await rig.service.get(queued.id)
    assert (delivered.status, delivered.attempts) == ("accepted", 3)
    assert [hook.idempotency_key for hook in rig.gateway.hooks] == [queued.idem_key] * 3
    assert rig.gateway.runs == [delivered.run_id]  # three requests, one run


@pytest.mark.parametrize("fault", FAULTS)
async def test_on_the_legacy_release_a_faulty_answer_is_never_resent(
    faulty: Callable[[str], asyncio.Future[Rig]], fault: str
) -> None:
    rig = await faulty(RELEASE_LEGACY)
    rig.gateway.faults = [fault]
    delegation = await rig.delegate()
    assert delegation.status == "unconfirmed", delegation
    assert "does not honour idempotency keys, so it was not resent" in (delegation.last_error or "")
    for _ in range(3):
        rig.clock.advance(60)
        await rig.service.process_due()
    assert (await rig.service.get(delegation.id)).status == "unconfirmed"
    assert len(rig.gateway.hooks) == 1 and len(rig.gateway.runs) == 1  # a person decides; we never send twice


async def test_a_gateway_that_keeps_answering_garbage_expires_after_the_window_with_one_run(
    faulty: Callable[[str], asyncio.Future[Rig]],
) -> None:
    rig = await faulty(RELEASE_CURRENT)
    rig.gateway.faults = ["html"] * 100
    queued = await rig.delegate()
    for _ in range(30):
        rig.clock.advance(30)
        await rig.service.process_due()
    expired = await rig.service.get(queued.id)
    assert expired.status == "expired" and "not JSON" in (expired.last_error or "")
    assert len(rig.gateway.runs) == 1 and {h.idempotency_key for h in rig.gateway.hooks} == {queued.idem_key}


# --- a slow agent -----------------------------------------------------------------------------------


async def test_a_10_second_agent_gets_its_delegation_once_while_the_rest_go_on(
    services_on_fleet: ServicesOnFleet,
) -> None:
    """Within the read timeout (20 s) a slow admission is just slow: accepted once, never retried."""
    services, fleet = await services_on_fleet(specs={"nx-expert": {"latency_ms": 10_000}})
    started = time.monotonic()
    slow = asyncio.create_task(services.delegation.delegate(OPERATOR, "nx-expert", "Mesh the M2 mirror"))
    await fleet.wait_in_flight("nx-expert")

    # Meanwhile the outbox, other delegations and the status probe are not held up by it.
    assert await services.delegation.process_due() == 0  # it is `sending`: nobody else picks it up
    [sending] = await services.delegation.recent(agent="nx-expert")
    assert sending.status == "sending" and sending.attempts == 1
    quick = await services.delegation.delegate(OPERATOR, "webster", "Find the CTE of Zerodur")
    assert quick.delegation is not None and quick.delegation.status == "accepted"
    fleet_status = await services.cluster.probe_all()
    assert {s.name: s.readiness.state for s in fleet_status.agents}["nx-expert"] == "ready"
    assert time.monotonic() - started < 5

    result = await slow
    assert result.delegation is not None
    assert (result.delegation.status, result.delegation.attempts) == ("accepted", 1)
    assert (result.delegation.latency_ms or 0) >= 10_000
    [run] = fleet.received("nx-expert")
    assert run.run_id == result.delegation.run_id


# --- an agent killed mid-delegation and restarted -------------------------------------------------


async def send_and_kill(services: Services, fleet, agent: str) -> Delegation:  # type: ignore[no-untyped-def]
    """Delegate to `agent`, and kill its gateway once the request is in (hung or admitted, per its spec)."""
    sending = asyncio.create_task(services.delegation.delegate(OPERATOR, agent, "Find the CTE of Zerodur"))
    await asyncio.wait_for(fleet.wait_in_flight(agent), 10)
    assert fleet.in_flight(agent) == 1
    await fleet.take_down(agent)
    result = await asyncio.wait_for(sending, 10)
    assert result.delegation is not None
    return result.delegation


async def drain(services: Services, delegation: Delegation) -> Delegation:
    """Run the outbox until the delegation is final (its backoff is real time here: at most a few seconds)."""

    async def final() -> Delegation | None:
        await services.delegation.process_due()
        current = await services.delegation.get(delegation.id)
        return current if current.is_final else None

    return await wait_for(final, timeout=20, what=f"{delegation.display_id} to be final")


@RELEASES
async def test_an_agent_killed_with_the_request_unread_gets_it_exactly_once_after_its_restart(
    services_on_fleet: ServicesOnFleet, release: str
) -> None:
    services, fleet = await services_on_fleet(release=release)
    await services.cluster.probe_all()  # the monitor has seen the fleet, as in production
    fleet.set_hang("webster", True)
    cut = await send_and_kill(services, fleet, "webster")
    fleet.set_hang("webster", False)
    if release == RELEASE_LEGACY:
        # Nothing tells whether it arrived, and a repeat would start a second run: a person decides.
        assert cut.status == "unconfirmed" and fleet.received("webster") == []
        return
    assert cut.status == "queued" and "may have arrived" in (cut.last_error or "")
    await fleet.bring_up("webster")
    done = await drain(services, cut)
    assert done.status == "accepted"
    [run] = fleet.received("webster")
    assert run.run_id == done.run_id and run.idempotency_key == done.idem_key


async def test_an_agent_never_probed_and_killed_mid_request_is_left_unconfirmed(
    services_on_fleet: ServicesOnFleet,
) -> None:
    """Before any probe the release is unknown, and a dead gateway cannot tell it: the safe side."""
    services, fleet = await services_on_fleet(specs={"webster": {"hang": True}})
    cut = await send_and_kill(services, fleet, "webster")
    assert cut.status == "unconfirmed"
    await fleet.bring_up("webster")
    assert await services.delegation.process_due() == 0
    assert fleet.received("webster") == []


async def test_an_agent_killed_after_starting_the_run_gets_it_again_after_its_restart(
    services_on_fleet: ServicesOnFleet,
) -> None:
    """The run started, then the gateway died before answering: the run died with it.

    2026.9.6 keeps its idempotency keys in memory, so the resend after the restart starts a new run:
    one run per gateway life, the first cut by the crash. (If that first run had finished just
    before the crash, this would be a duplicate: atomizer-hq cannot see it; see the suite's notes.)
    """
    services, fleet = await services_on_fleet(specs={"webster": {"reply_delay_ms": 30_000}})
    await services.cluster.probe_all()
    cut = await send_and_kill(services, fleet, "webster")
    [before_crash] = fleet.received("webster")
    assert cut.status == "queued"
    fleet.set_reply_delay("webster", 0)
    await fleet.bring_up("webster")
    done = await drain(services, cut)
    assert done.status == "accepted" and done.attempts == 2
    first, second = fleet.received("webster")
    assert first == before_crash and second.run_id == done.run_id
    assert first.idempotency_key == second.idempotency_key == done.idem_key
