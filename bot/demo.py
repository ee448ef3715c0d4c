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
from datetime import UTC, datetime
from pathlib import Path

from bot.authz import AccessLevel, Requester
from bot.boards import render_text
from bot.config import load_cluster_config
from bot.delegation import Delegation
from bot.errors import NotAllowed
from bot.services import Services, open_services
from bot.settings import Settings
from bot.simulator import RELEASE_CURRENT, RELEASE_LEGACY, SimAgentSpec, SimulatedFleet, free_ports
from bot.status_view import collect_overview, print_fleet_status, status_embed
from bot.task_grammar import apply_board_message
from bot.task_view import task_board, task_line

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
        async with SimulatedFleet(specs, token) as fleet, open_services(settings, config) as services:
            say(f"atomizer-hq demo: {len(specs)} simulated OpenClaw gateways on 127.0.0.1")
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
            say(
                f"  nx-expert received: channel={run.body['channel']!r} to={run.body['to']!r} key={run.idempotency_key}"
            )

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
    return 0


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
