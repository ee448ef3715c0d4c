"""`atomizer-hq demo`: a simulated fleet, the real services on a temporary database, a short tour.

No Discord and no .env needed: the demo makes its own hooks token and moves the fleet to free
ports, so it runs beside a real cluster without touching it, and leaves nothing behind. What it
prints is rendered by the same code that builds the Discord embeds (bot.status_view, bot.boards).
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from pydantic import SecretStr

from bot.api import LoopbackApi
from bot.authz import AccessLevel, Requester
from bot.boards import render_text
from bot.chain_view import draw_tree
from bot.clock import utcnow
from bot.config import ClusterConfig, load_cluster_config
from bot.delegation import Delegation, DelegationService
from bot.errors import AtomizerError, NotAllowed
from bot.routing.table import table_lines
from bot.services import Services, open_services
from bot.settings import Settings
from bot.simulator import RELEASE_CURRENT, RELEASE_LEGACY, SimAgentSpec, SimulatedFleet, free_ports
from bot.status_view import collect_overview, print_fleet_status, status_embed
from bot.task_grammar import apply_board_message
from bot.task_view import task_board, task_line
from bot.workflows.cli_runs import print_detail
from bot.workflows.engine import RunDetail
from bot.workflows.loader import WorkflowCatalog
from bot.workflows.plan import plan

# The story's faults: auditor is restarting (port closed), optimizer is wedged (never answers),
# webster still runs the old release (no health routes).
DOWN, WEDGED, LEGACY = "auditor", "optimizer", "webster"
PROBE_TIMEOUT_S = 1.0
ANTOINE = Requester(kind="person", name="antoine", front_end="demo", level=AccessLevel.ADMIN, user_id=None)
TECH_LEAD = Requester(kind="agent", name="tech-lead", front_end="demo")
NX_EXPERT = Requester(kind="agent", name="nx-expert", front_end="task-board")


def say(text: str = "") -> None:
    print(text, flush=True)


def outcome(delegation: Delegation) -> str:
    if delegation.status == "accepted":
        return f"accepted by {delegation.agent}: {delegation.display_id}, runId {delegation.run_id}"
    if delegation.status == "queued":
        # The stored expiry, as every front end states it: the time the outbox really gives up.
        until = delegation.expires_at[11:19]
        return f"queued: {delegation.agent} is unavailable ({delegation.last_error}); will retry until {until} UTC"
    return f"{delegation.status}: {delegation.last_error}"


async def run_demo(args: argparse.Namespace) -> int:
    config_path = args.config or Path("config/cluster.toml")
    shipped = load_cluster_config(config_path)
    config = shipped.relocated(free_ports(len(shipped.agents)))
    token = secrets.token_hex(24)
    specs = [
        SimAgentSpec(
            name=agent.name,
            port=agent.port,
            release=RELEASE_LEGACY if agent.name == LEGACY else RELEASE_CURRENT,
            down=agent.name == DOWN,
            hang=agent.name == WEDGED,
        )
        for agent in config.agents
    ]
    config = config.model_copy(update={"gateway": config.gateway.model_copy(update={"probe_timeout": PROBE_TIMEOUT_S})})
    with tempfile.TemporaryDirectory(prefix="atomizer-demo-") as tmp:
        settings = Settings(
            hooks_token=token,
            hooks_token_overrides={},
            api_token_vars={},
            api_tokens_spec=None,
            discord_token=None,
            db_path=Path(tmp) / "atomizer.db",
        )
        async with SimulatedFleet(specs, token) as fleet:
            await tour_fleet(settings, config, fleet, len(specs))
            await tour_workflow(settings, config, fleet)
            await tour_routing_and_chains(settings, config, fleet)
    return 0


async def tour_fleet(settings: Settings, config: ClusterConfig, fleet: SimulatedFleet, agents: int) -> None:
    async with open_services(settings, config) as services:
        say(f"atomizer-hq demo: {agents} simulated OpenClaw gateways on 127.0.0.1")
        say(f"  {DOWN} is down, {WEDGED} is wedged, {LEGACY} runs release {RELEASE_LEGACY}")
        say(f"  database: {settings.db_path} (temporary)\n")

        say("$ atomizer-hq status")
        status, _ = await services.monitor.probe_round()
        overview = await collect_overview(services, status)
        print_fleet_status(status, overview)
        sys.stdout.flush()

        say("\n/status  (the same facts, as the embed in Discord)")
        say(render_text(status_embed(status, overview)[:1]))

        technical = f"channel:{config.channels['technical']}" if "technical" in config.channels else None
        say('\n/delegate agent:nx-expert instruction:"Mesh the M2 mirror"   (Antoine, in #technical)')
        result = await services.delegation.delegate(ANTOINE, "nx-expert", "Mesh the M2 mirror", origin=technical)
        assert result.delegation is not None
        say(f"  → {outcome(result.delegation)}")
        [run] = fleet.received("nx-expert")
        say(f"  nx-expert received: channel={run.body['channel']!r} to={run.body['to']!r} key={run.idempotency_key}")

        say('\n$ delegate.sh manager "Approve the budget"   (tech-lead\'s skill, through the loopback API)')
        try:
            await services.delegation.delegate(TECH_LEAD, "manager", "Approve the budget")
        except NotAllowed as refused:
            say(f"  → refused: {refused}")

        say('\n/delegate agent:webster instruction:"Find the CTE of Zerodur Class 0"   (webster is restarting)')
        await fleet.take_down(LEGACY)
        queued = (await services.delegation.delegate(ANTOINE, "webster", "Find the CTE of Zerodur Class 0",
                                                     origin=technical)).delegation  # fmt: skip
        assert queued is not None
        say(f"  → {outcome(queued)}")
        await fleet.bring_up(LEGACY)
        await services.delegation.recover()
        await services.store.execute(
            "UPDATE delegations SET next_attempt_at = created_at WHERE id = ?", (queued.id,)
        )  # the demo does not wait out the backoff
        await services.delegation.process_due()
        delivered = await services.delegation.get(queued.id)
        say(f"  → later, in the same conversation: delivered to webster (runId {delivered.run_id})")
        say(f"  webster ran it {len(fleet.received('webster'))} time(s)")

        await tour_tasks(services)
        await tour_heartbeat_and_standup(services, fleet)


async def tour_tasks(services: Services) -> None:
    today = datetime.now(UTC).date()
    say('\n/task add title:"Mesh the M2 mirror" assignee:nx-expert priority:high   (Antoine)')
    task = await services.tasks.add(ANTOINE, "Mesh the M2 mirror", assignee="nx-expert", priority="high")
    say(f"  → {task_line(task, today)}")
    # Every task on the board below is one the tour shows being made: nothing appears unexplained.
    say('/task add title:"Find the CTE of Zerodur Class 0" assignee:webster   (Antoine)')
    other = await services.tasks.add(ANTOINE, "Find the CTE of Zerodur Class 0", assignee="webster")
    say(f"  → {task_line(other, today)}")
    say(f"/task move id:{task.display_id} status:in_progress")
    moved = await services.tasks.move(ANTOINE, task.id, "in_progress")
    say(f"  → {task_line(moved, today)}")
    post = f"{task.display_id} done: meshed, 42k elements"
    say(f"\n#task-board, nx-expert's bot account posts: {post}")
    outcome = await apply_board_message(services.tasks, NX_EXPERT, post)
    say(f"  → the bot reacts ✅ ({outcome.reply})")
    board = task_board(await services.tasks.list(open_only=True), await services.tasks.count(open_only=True), today)
    say("\n#task-board, the live board (edited in place, at most once per 2 s):")
    say(render_text(board))
    say(f"\n{task.display_id} history:")
    for event in (await services.tasks.show(task.id)).history:
        say(f"  {event.describe()}")


async def tour_heartbeat_and_standup(services: Services, fleet: SimulatedFleet) -> None:
    say("\n/heartbeat run agent:manager   (manager's own heartbeat is off: atomizer-hq sends it)")
    run = await services.heartbeats.run_now(ANTOINE, "manager")
    [hook] = [h for h in fleet.received("manager") if h.body.get("name") == "atomizer-hq heartbeat"][-1:]
    say(f"  → {run.status}: level {run.level}, runId {run.run_id}")
    say(f"  sent with channel={hook.body['channel']!r} to={hook.body['to']!r}: never a bare id, never a DM")
    say("\n/standup   (posted daily at 09:00 in #daily-standup)")
    say(render_text(await services.standup.compose()))


# --- a workflow run: the shipped m2-mirror-study, with a restart in the middle ------------------------

MARIA = Requester(kind="person", name="maria", front_end="demo", level=AccessLevel.ADMIN, user_id=None)
WORKFLOW = "m2-mirror-study"
# What each agent answers (reported through the loopback API, as the agents' skill does).
ANSWERS = {
    "mesh": "m2_thermal.fem: 48,212 CQUAD8/CTETRA10 elements, 97,604 nodes, refined at the 3 pads",
    "material": "Zerodur Class 0: CTE 0 ± 0.007 ppm/K (-40..+60 °C), k 1.46 W/m·K, cp 0.80 J/g·K, 2.53 g/cm³",
    "thermal": "peak surface deformation 11.4 nm RMS, under the 15 nm budget",
    "report": "Report posted to the project log: M2 thermal study, 11.4 nm RMS, approved by maria",
}


@asynccontextmanager
async def hq_process(
    settings: Settings, config: ClusterConfig, tokens: dict[str, str]
) -> AsyncIterator[tuple[Services, LoopbackApi]]:
    """What one `atomizer-hq run` holds (its services and loopback API), without Discord or the scheduler."""
    async with open_services(settings, config) as services:
        api = LoopbackApi(services, {name: SecretStr(token) for name, token in tokens.items()})
        await api.start("127.0.0.1", 0)
        try:
            yield services, api
        finally:
            await api.stop()


async def report_through_api(api: LoopbackApi, token: str, run: str, step: str, agent: str) -> None:
    """An agent's skill reporting its step's result, as scripts/step-result.sh does (`POST …/steps/mesh/result`
    with the agent's own token); from here, so the demo needs neither bash nor curl."""
    path = f"/v1/workflow-runs/{run}/steps/{step}/result"
    output = ANSWERS[step]
    say(f'$ step-result.sh {run} {step} ok "{output[:24]}…"   # {agent}\'s skill: POST …/steps/{step}/result')
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {token}"}
        async with http.post(api.url + path, json={"ok": True, "output": output}, headers=headers) as response:
            body = await response.json()
    say(f"  → {response.status}: {run}/{step} {body.get('status', body)}")


async def hooks_per_step(services: Services, fleet: SimulatedFleet, run_id: int) -> dict[str, int]:
    """How many times each step's hook reached its agent, counted by the simulator (by idempotency key)."""
    detail = await services.workflows.get(run_id)
    order = detail.run.definition.step_ids
    counts: dict[str, int] = {}
    for step in sorted(detail.steps, key=lambda s: order.index(s.step_id)):
        if step.kind != "agent" or step.delegation_id is None:
            continue
        key = (await services.delegation.get(step.delegation_id)).idem_key
        counts[step.step_id] = sum(1 for hook in fleet.received(step.agent) if hook.idempotency_key == key)
    return counts


def abbreviated(text: str, width: int = 76) -> list[str]:
    return [line if len(line) <= width else line[: width - 1] + "…" for line in text.strip().splitlines()]


async def tour_workflow(settings: Settings, config: ClusterConfig, fleet: SimulatedFleet) -> None:
    """The M2 study: the parallel pair, their results, the join, the gate, a restart, the report."""
    agents = ("nx-expert", "webster", "optimizer", "secretary")
    tokens = {agent: secrets.token_hex(24) for agent in agents}
    fleet.set_hang(WEDGED, False)
    await fleet.restart(WEDGED)  # the wedged gateway was restarted; it answers again
    for agent in agents:
        if fleet.spec(agent).release == RELEASE_CURRENT:
            fleet.spec(agent).hold_runs = True  # their runs end when the tour says so (fleet.settle)
    say(f"\n--- workflows ({WEDGED}'s gateway was restarted and answers again) ---")
    say(f"\n$ atomizer-hq workflow plan {WORKFLOW}")
    catalog = WorkflowCatalog.from_config(config)
    say(plan(catalog.get(WORKFLOW), config, ANTOINE).render_text())

    async with hq_process(settings, config, tokens) as (services, api):
        engine = services.workflows
        say(f"\n$ atomizer-hq workflow run {WORKFLOW}   # Antoine")
        run = await engine.start(ANTOINE, WORKFLOW, {})
        ref = run.display_id
        show(await engine.get(run.id))
        pair = [fleet.received(agent)[-1] for agent in ("nx-expert", "webster")]
        apart = abs(pair[0].at - pair[1].at) * 1000
        say(f"  nx-expert and webster received their hooks {apart:.0f} ms apart (dispatched together)")

        say("\nnx-expert's gateway (2026.9.6) reports its run finished: the completion says ok")
        fleet.settle("nx-expert")
        await engine.idle()
        say("  → mesh stays running until its output arrives (the completion carries no text)")
        await report_through_api(api, tokens["nx-expert"], ref, "mesh", "nx-expert")
        say(f"webster (release {RELEASE_LEGACY}: no completion) reports its result the same way")
        await report_through_api(api, tokens["webster"], ref, "material", "webster")

        [hook] = fleet.received("optimizer")[-1:]
        say("\nthe join: thermal needs mesh and material; optimizer received (abbreviated):")
        for line in abbreviated(hook.body["message"]):
            say(f"  │ {line}")
        show(await engine.get(run.id))

    say("\n*** atomizer-hq stops while optimizer works on thermal (services closed) and starts again ***")
    async with hq_process(settings, config, tokens) as (services, api):
        engine = services.workflows
        await services.delegation.recover()
        await engine.recover()  # re-attaches the completion wait of thermal; sends nothing again
        say("$ atomizer-hq run   # on start: WorkflowEngine.recover() on the same database")
        say("  thermal: its completion wait re-attached (the same key: optimizer's gateway replays its run)")
        counts = await hooks_per_step(services, fleet, run.id)
        listed = ", ".join(f"{step} {n}" for step, n in counts.items())
        twice = [step for step, n in counts.items() if n != 1]
        say(f"  recovered {ref}: hooks per step, counted by the simulator: {listed}")
        say("  → no step was dispatched twice" if not twice else f"  → dispatched twice: {', '.join(twice)}")

        say("\noptimizer's gateway reports thermal's run ok; optimizer reports its output")
        fleet.settle("optimizer")
        await engine.idle()
        await report_through_api(api, tokens["optimizer"], ref, "thermal", "optimizer")
        say(f"$ atomizer-hq workflow show {ref}")
        show(await engine.get(run.id))
        say(f"\n$ atomizer-hq workflow approve {ref} review   # Antoine, who started the run")
        try:
            await engine.approve(ANTOINE, run.id, "review", approve=True)
        except NotAllowed as refused:
            say(f"  → refused: {refused}")
        say(f'$ atomizer-hq workflow approve {ref} review --reason "numbers look right"   # Maria, admin')
        outcome = await engine.approve(MARIA, run.id, "review", approve=True, reason="numbers look right")
        say(f"  {ref}/review: approved by you; the gate is {outcome.status}")

        [hook] = fleet.received("secretary")[-1:]
        say(f"  report dispatched: secretary received it with to={hook.body.get('to')!r} (deliver_to: technical)")
        fleet.settle("secretary")
        await engine.idle()
        await report_through_api(api, tokens["secretary"], ref, "report", "secretary")
        say(f"\n$ atomizer-hq workflow show {ref}")
        show(await engine.get(run.id))
        counts = await hooks_per_step(services, fleet, run.id)
        say("  hooks per step, counted by the simulator: " + ", ".join(f"{step} {n}" for step, n in counts.items()))


# --- routing by capability, and a chain of sub-delegations -------------------------------------------


def agent(name: str) -> Requester:
    return Requester(kind="agent", name=name, front_end="api")


async def tour_routing_and_chains(settings: Settings, config: ClusterConfig, fleet: SimulatedFleet) -> None:
    """`delegate auto --needs`: who has it, may be sent it, is up and least busy; then a chain, drawn and capped."""
    async with open_services(settings, config) as services:
        for _ in range(config.monitor.down_after):
            await services.monitor.probe_round()  # what routing reads: the monitor's confirmed states
        say("\n--- routing: say what the work needs, atomizer-hq chooses the agent ---")
        say("\n$ atomizer-hq route --needs review   # auditor has it, but its gateway is down")
        routing = services.routing
        for line in table_lines(await routing.preview(ANTOINE, routing.needs("review")), 110):
            say(f"  {line}")
        say('\n$ atomizer-hq delegate auto "Mesh the M1 mirror" --needs meshing')
        chosen, decision = await routing.resolve(ANTOINE, "auto", "meshing")
        assert decision is not None
        say(f"  route: {decision.explanation}")
        result = await services.delegation.delegate(ANTOINE, chosen, "Mesh the M1 mirror", needs=decision.needs)
        assert result.delegation is not None
        say(f"  → {outcome(result.delegation)}")

        say("\n--- a chain: each agent hands part of its work on, under the delegation it received ---")
        hops = (
            ("manager", "tech-lead", "Run the M1 rib study"),
            ("tech-lead", "optimizer", "Optimize the M1 rib layout"),
            ("optimizer", "nx-expert", "Re-mesh M1 with the new ribs"),
        )
        leaf = await hand_down(services.delegation, None, hops)
        say(f"\n$ atomizer-hq delegations show {leaf.display_id}")
        for line in draw_tree(await services.delegation.tree(leaf.id), utcnow()):
            say(f"  {line}")

        say("\n--- the depth cap: the same chain under a person's request is one level too deep ---")
        start = await services.delegation.delegate(ANTOINE, "manager", "Plan the M1 rib study")
        assert start.delegation is not None
        say(f'/delegate agent:manager instruction:"Plan the M1 rib study"   (Antoine) → {start.delegation.display_id}')
        try:
            await hand_down(services.delegation, start.delegation, hops)
        except AtomizerError as refused:
            say(f"  → refused: {refused}")


async def hand_down(
    delegation: DelegationService, parent: Delegation | None, hops: tuple[tuple[str, str, str], ...]
) -> Delegation:
    """Each hop as its agent makes it with delegate.sh, under the one before; the last delegation made."""
    for requester, to, text in hops:
        under = f" --parent {parent.display_id}" if parent is not None else ""
        say(f'$ delegate.sh {to} "{text}"{under}   # {requester}')
        made = await delegation.delegate(agent(requester), to, text, parent=parent.display_id if parent else None)
        assert made.delegation is not None
        parent = made.delegation
        say(f"  → {parent.display_id} to {to}" + ("" if parent.parent_id else " (the chain's root)"))
    assert parent is not None
    return parent


def show(detail: RunDetail) -> None:
    """As `atomizer-hq workflow show` prints it."""
    print_detail(detail, as_json=False)
    sys.stdout.flush()
