"""/workflow, the run's card and its approval buttons, through discord.py's real pipeline on real services.

dpytest has no threads: here a run's "thread" is the channel the command was typed in (TextChannel.create_thread
is swapped for one that answers with the channel itself); tests/e2e/test_workflows_over_the_wire.py covers real
threads over the wire. Card redraws are paced by a clock the tests own, so nothing sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, cast

import discord
import pytest

from bot.authz import AccessLevel, Requester
from bot.discord_bot import AtomizerBot
from bot.services import Services
from bot.simulator import SimulatedFleet
from bot.workflows.engine import WorkflowEngine
from cogs.workflows import Workflows, parse_inputs_text
from tests.conftest import ServicesOnFleet
from tests.discord_harness import (
    RecordedCall,
    Recorder,
    SlashDriver,
    _channel_dict,
    _member_dict,
    _message_dict,
    give_level,
    guild_of,
    make_member,
    next_snowflake,
    running_test_bot,
    send_message,
    single_message,
)

HELD = {name: {"hold_runs": True} for name in ("nx-expert", "webster", "optimizer", "secretary")}
CLI = Requester(kind="person", name="root@host", front_end="cli", level=AccessLevel.ADMIN)


class PacedTime:
    """The cards' clock: a redraw's wait moves it instead of sleeping."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def agent(name: str) -> Requester:
    return Requester(kind="agent", name=name, front_end="api")


@dataclass
class Rig:
    bot: AtomizerBot
    services: Services
    fleet: SimulatedFleet
    driver: SlashDriver
    recorder: Recorder
    time: PacedTime

    @property
    def cog(self) -> Workflows:
        cog = self.bot.get_cog("Workflows")
        assert cog is not None and type(cog).__qualname__ == "Workflows"
        return cast(Workflows, cog)

    @property
    def engine(self) -> WorkflowEngine:
        return self.services.workflows

    @property
    def channel(self) -> discord.TextChannel:
        return guild_of(self.bot).text_channels[0]

    def member(self, level: AccessLevel, name: str | None = None) -> discord.Member:
        return give_level(make_member(self.bot, name or level.label), level, self.services.config)

    async def run(self, user: discord.Member, **options: Any) -> list[RecordedCall]:
        return await self.driver.invoke("workflow run", user=user, options={"name": "m2-mirror-study", **options})

    async def card(self, run_id: int) -> discord.Message:
        await self.cog.settle()
        publisher = self.cog._publishers[run_id]
        assert publisher.posted_first is not None
        return publisher._posted[publisher.posted_first]

    async def card_text(self, run_id: int) -> str:
        [embed] = (await self.card(run_id)).embeds
        return "\n".join([embed.title or "", embed.description or ""] + [f"{f.name}\n{f.value}" for f in embed.fields])

    async def gates(self, run_id: int) -> list[str]:
        """The gates the card has buttons for."""
        await self.cog.settle()
        return self.cog._publishers[run_id].gates

    async def click(self, run_id: int, action: str, step: str, *, user: discord.Member) -> list[RecordedCall]:
        """A click on the card's button, decoded from its custom_id (as after a restart)."""
        custom_id = f"wf:{action}:{run_id}:{step}"
        button = {"type": 2, "style": 3, "label": f"{action} {step}", "custom_id": custom_id}
        message = _message_dict({}, str(self.channel.id), None) | {
            "id": str((await self.card(run_id)).id),
            "components": [{"type": 1, "components": [button]}],  # as the stale client shows it
        }
        data = {"custom_id": custom_id, "component_type": 2}
        return await self._interact(3, user, data, "discord-ui-dynamic-item-", "button", message=message)

    async def submit(self, reason: str, *, user: discord.Member) -> list[RecordedCall]:
        """Submit the open form (the reject form) with `reason`, as `user`."""
        [modal] = self.bot._connection._view_store._modals.values()
        [text_input] = [item for item in modal.children if isinstance(item, discord.ui.TextInput)]
        components = [{"type": 1, "components": [{"type": 4, "custom_id": text_input.custom_id, "value": reason}]}]
        data = {"custom_id": modal.custom_id, "components": components}
        return await self._interact(5, user, data, "discord-ui-modal-dispatch", "form")

    async def _interact(
        self, kind: int, user: discord.Member, data: dict[str, Any], tasks: str, what: str, **extra: Any
    ) -> list[RecordedCall]:
        """An interaction of `kind` (3 a component, 5 a form) as the gateway delivers it; what it answered, once the
        tasks discord.py starts for it (named `tasks`…) are done."""
        payload = {
            "id": str(next_snowflake()), "application_id": str(self.bot.application_id), "type": kind,
            "token": f"interaction-token-{next_snowflake()}", "version": 1, "attachment_size_limit": 26_214_400,
            "guild_id": str(self.channel.guild.id), "channel_id": str(self.channel.id),
            "channel": _channel_dict(self.channel, str(discord.Permissions.all().value)),
            "member": _member_dict(user), "app_permissions": str(discord.Permissions.all().value),
            "locale": "en-US", "guild_locale": "en-US", "entitlements": [],
            "authorizing_integration_owners": {"0": str(self.channel.guild.id)}, "context": 0,
            "data": data, **extra,
        }  # fmt: skip
        before = len(self.recorder.calls)
        running = {task for task in asyncio.all_tasks() if task.get_name().startswith(tasks)}
        self.bot._connection.parse_interaction_create(payload)  # type: ignore[arg-type]
        started = [t for t in asyncio.all_tasks() if t.get_name().startswith(tasks) and t not in running]
        assert started, f"the {what} reached nothing"
        await asyncio.gather(*started)
        return self.recorder.calls[before:]

    async def to_the_gate(self, run_id: int) -> None:
        """mesh, material and thermal answered (by their agents, through the API)."""
        for step, name in (("mesh", "nx-expert"), ("material", "webster"), ("thermal", "optimizer")):
            await self.engine.report_result(agent(name), run_id, step, ok=True, output=f"{step} ok", source="api")


Launcher = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def launch(services_on_fleet: ServicesOnFleet, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Launcher]:
    recorder = Recorder()
    recorder.install(monkeypatch)

    async def same_channel(self: discord.TextChannel, **_: Any) -> discord.TextChannel:
        return self

    monkeypatch.setattr(discord.TextChannel, "create_thread", same_channel)
    async with AsyncExitStack() as stack:

        async def start(**fleet_options: Any) -> Rig:
            services, fleet = await services_on_fleet(**fleet_options)
            bot = await stack.enter_async_context(running_test_bot(services))
            rig = Rig(bot, services, fleet, SlashDriver(bot), recorder, PacedTime())
            rig.cog._sleep, rig.cog._monotonic = rig.time.sleep, rig.time.monotonic
            stack.push_async_callback(rig.cog.settle)
            return rig

        yield start


def text_of(calls: list[RecordedCall]) -> str:
    return "\n".join(call.text for call in calls if call.content or call.message.get("embeds"))


def test_inputs_are_read_as_name_value_pairs() -> None:
    assert parse_inputs_text("mirror=M1, fine=true") == {"mirror": "M1", "fine": "true"}
    assert parse_inputs_text("material=Zerodur, Class 0,mirror=M2") == {"material": "Zerodur, Class 0", "mirror": "M2"}
    assert parse_inputs_text(None) == {}
    with pytest.raises(Exception, match="NAME=VALUE"):
        parse_inputs_text("M1")


async def test_run_opens_a_card_and_steps_deliver_to_the_thread(launch: Launcher) -> None:
    rig = await launch(specs=HELD)
    operator = rig.member(AccessLevel.OPERATOR, "antoine")
    calls = await rig.run(operator, inputs="mirror=M1")
    assert calls[0].type == 5  # deferred at once: the thread and the dispatch come after
    reply = single_message(calls)
    assert "W-1 (m2-mirror-study) started by antoine" in reply.text and f"<#{rig.channel.id}>" in reply.text
    assert reply.allowed_mentions == {"parse": []}
    text = await rig.card_text(1)
    assert "W-1 · m2-mirror-study · running" in text and "mesh · nx-expert" in text and "inputs: mirror=M1" in text
    for name in ("nx-expert", "webster"):
        [hook] = [h for h in rig.fleet.received(name) if h.path.endswith("/agent")]
        assert hook.body["to"] == f"channel:{rig.channel.id}"
    # The answer of nx-expert, posted by its own bot account in the thread, is the step's output.
    account = next(a for a in rig.services.config.agents if a.name == "nx-expert").discord_user_id
    nx = make_member(rig.bot, "nx-expert", user_id=account, is_bot=True)
    await send_message(rig.bot, "120k elements", channel=rig.channel, member=nx)
    await send_message(rig.bot, "mesh in /shared/m1.prt", channel=rig.channel, member=nx)
    step = (await rig.engine.get(1)).step("mesh")
    assert step.output == "120k elements\nmesh in /shared/m1.prt" and step.evidence["messages"] == 2
    assert "answering: 2 message(s)" in await rig.card_text(1)
    # A person's post there is not an answer.
    await send_message(rig.bot, "looks good", channel=rig.channel, member=operator)
    assert (await rig.engine.get(1)).step("mesh").evidence["messages"] == 2
    for name in HELD:
        rig.fleet.settle(name)
    await rig.engine.idle()


async def test_a_viewer_may_read_but_not_run(launch: Launcher) -> None:
    rig = await launch(specs=HELD)
    viewer = rig.member(AccessLevel.VIEWER, "vic")
    refused = single_message(await rig.run(viewer))
    assert refused.ephemeral and "operator" in (refused.content or "")
    assert await rig.engine.runs() == []
    await rig.run(rig.member(AccessLevel.OPERATOR, "antoine"))
    listed = single_message(await rig.driver.invoke("workflow list", user=viewer))
    assert listed.ephemeral and "m2-mirror-study" in listed.text and "W-1 · m2-mirror-study · running" in listed.text
    shown = single_message(await rig.driver.invoke("workflow show", user=viewer, options={"run": "W-1"}))
    assert shown.ephemeral and "material · webster" in shown.text
    operator = rig.member(AccessLevel.OPERATOR, "olga")
    choices = (await rig.driver.autocomplete("workflow run", "name", "m2", user=operator))[0].choices
    assert choices == [{"name": "m2-mirror-study", "value": "m2-mirror-study"}]
    for name in HELD:
        rig.fleet.settle(name)
    await rig.engine.idle()


async def test_the_approve_button_is_for_the_gate_s_approvers_only(launch: Launcher) -> None:
    rig = await launch(specs=HELD)
    starter = rig.member(AccessLevel.ADMIN, "antoine")
    await rig.run(starter)
    await rig.to_the_gate(1)
    assert await rig.gates(1) == ["review"]
    assert "Approve the thermal results of the M2 mirror?\nthermal ok" in await rig.card_text(1)

    operator = rig.member(AccessLevel.OPERATOR, "olga")
    refused = single_message(await rig.click(1, "approve", "review", user=operator))
    assert refused.ephemeral and "may not approve" in refused.text and "admin role" in refused.text
    own = single_message(await rig.click(1, "approve", "review", user=starter))
    assert "started this run and may not approve its own gate" in own.text

    alice = rig.member(AccessLevel.ADMIN, "alice")
    approved = await rig.click(1, "approve", "review", user=alice)
    assert approved[0].type == 5 and approved[0].ephemeral  # deferred privately
    assert "You approved W-1/review (1/1): the gate is approved" in single_message(approved).text
    again = single_message(await rig.click(1, "approve", "review", user=alice))
    assert again.ephemeral and "already approved by you" in again.text
    late = single_message(await rig.click(1, "reject", "review", user=rig.member(AccessLevel.ADMIN, "bob")))
    assert "was already approved by alice" in late.text
    text = await rig.card_text(1)
    assert "approved by alice" in text and await rig.gates(1) == []  # the buttons went with the gate
    for name in HELD:
        rig.fleet.settle(name)
    await rig.engine.idle()


async def test_the_card_follows_the_cli_another_process_and_expiry(launch: Launcher) -> None:
    rig = await launch(specs=HELD)
    await rig.run(rig.member(AccessLevel.OPERATOR, "antoine"))
    await rig.run(rig.member(AccessLevel.OPERATOR, "antoine"))
    await rig.to_the_gate(1)
    await rig.to_the_gate(2)
    await rig.engine.approve(CLI, 1, "review", approve=False, reason="wrong mesh")  # this process: the listener
    text = await rig.card_text(1)
    assert "rejected by root@host: wrong mesh" in text and await rig.gates(1) == []
    assert "W-1 · m2-mirror-study · failed" in text

    # Another process (the CLI's own engine on the same database) approves W-2: the events show it.
    other = WorkflowEngine(rig.services.config, rig.services.store, rig.services.delegation, rig.services.gateway)
    await other.approve(CLI, 2, "review", approve=True)
    assert await rig.gates(2) == ["review"]  # not seen yet
    await rig.cog.check_other_processes()
    assert "approved by root@host" in await rig.card_text(2) and await rig.gates(2) == []
    assert all(wait <= 2.0 for wait in rig.time.waits)  # redraws are paced by the 2 s interval, never more

    # Expiry: a third run's gate runs out of time.
    await rig.run(rig.member(AccessLevel.OPERATOR, "antoine"))
    await rig.to_the_gate(3)
    await rig.services.store.execute(
        "UPDATE workflow_steps SET deadline_at = '2000-01-01T00:00:00+00:00' WHERE run_id = 3 AND step_id = 'review'"
    )
    await rig.engine.tick()
    text = await rig.card_text(3)
    assert "review · approval" in text and "expired" in text and await rig.gates(3) == []
    for name in HELD:
        rig.fleet.settle(name)
    await rig.engine.idle()


async def test_cancel_and_retry(launch: Launcher) -> None:
    rig = await launch(specs=HELD)
    operator = rig.member(AccessLevel.OPERATOR, "antoine")
    await rig.run(operator)
    cancelled = single_message(
        await rig.driver.invoke("workflow cancel", user=operator, options={"run": "W-1", "reason": "wrong mirror"})
    )
    assert "W-1 cancelled by antoine: wrong mirror" in cancelled.text
    assert "W-1 · m2-mirror-study · cancelled" in await rig.card_text(1)
    again = single_message(await rig.driver.invoke("workflow cancel", user=operator, options={"run": "W-1"}))
    assert again.ephemeral and "already cancelled" in again.text
    retried = single_message(
        await rig.driver.invoke("workflow retry", user=operator, options={"run": "W-1", "from_step": "mesh"})
    )
    assert "W-1 runs again from mesh" in retried.text
    assert "W-1 · m2-mirror-study · running" in await rig.card_text(1)
    viewer = rig.member(AccessLevel.VIEWER, "vic")
    refused = single_message(await rig.driver.invoke("workflow retry", user=viewer, options={"run": "W-1"}))
    assert refused.ephemeral and "operator" in refused.text
    for name in HELD:
        rig.fleet.settle(name)
    await rig.engine.idle()


async def test_reject_asks_why_in_a_form_and_the_reason_is_kept_and_shown(launch: Launcher) -> None:
    rig = await launch(specs=HELD)
    await rig.run(rig.member(AccessLevel.OPERATOR, "antoine"))
    await rig.to_the_gate(1)
    # Refused before the form opens: nobody types a reason only to be told they may not decide.
    refused = single_message(await rig.click(1, "reject", "review", user=rig.member(AccessLevel.OPERATOR, "olga")))
    assert refused.ephemeral and "may not reject" in refused.text and "admin role" in refused.text
    assert not rig.bot._connection._view_store._modals

    alice = rig.member(AccessLevel.ADMIN, "alice")
    [opened] = await rig.click(1, "reject", "review", user=alice)
    assert opened.type == 9 and opened.payload is not None  # a form
    assert opened.payload["data"]["title"] == "Reject W-1/review"
    [[text_input]] = [row["components"] for row in opened.payload["data"]["components"]]
    assert text_input["required"] is True and text_input["label"] == "Why reject it?"
    assert (await rig.engine.get(1)).step("review").status == "waiting_approval"  # nothing decided yet

    rejected = await rig.submit("the mesh is too coarse near the mounts", user=alice)
    assert rejected[0].type == 5 and rejected[0].ephemeral
    assert "You rejected W-1/review: the gate is rejected" in single_message(rejected).text
    detail = await rig.engine.get(1)
    [approval] = detail.approvals
    assert (approval.approver_name, approval.decision, approval.reason, approval.front_end) == (
        "alice", "reject", "the mesh is too coarse near the mounts", "discord",
    )  # fmt: skip
    assert "rejected by alice: the mesh is too coarse near the mounts" in await rig.card_text(1)
    [audit] = await rig.services.store.fetchall(
        "SELECT detail FROM audit_log WHERE action = 'workflow-approve' AND decision = 'allowed'"
    )
    assert '"reason": "the mesh is too coarse near the mounts"' in audit[0]

    # A form submitted after the gate was decided (another approver, while this one typed) changes nothing.
    await rig.run(rig.member(AccessLevel.OPERATOR, "antoine"))
    await rig.to_the_gate(2)
    await rig.click(2, "reject", "review", user=alice)
    await rig.engine.approve(CLI, 2, "review", approve=True)
    late = single_message(await rig.submit("too late", user=alice))
    assert late.ephemeral and "was already approved by root@host" in late.text
    assert [a.decision for a in (await rig.engine.get(2)).approvals] == ["approve"]
    for name in HELD:
        rig.fleet.settle(name)
    await rig.engine.idle()
