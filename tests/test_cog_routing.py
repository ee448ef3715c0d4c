"""/delegate agent:auto needs:… and /route through discord.py's real pipeline, on a simulated fleet."""

from __future__ import annotations

import json

from bot.authz import AccessLevel, Requester
from bot.delegation import chain_footer
from tests.test_cog_delegation import Launcher, delegation_count, fields_of, launch, shape  # noqa: F401
from tests.test_routing import routing_where


async def test_delegate_auto_reaches_the_agent_with_the_capability_and_says_why(launch: Launcher) -> None:  # noqa: F811
    rig = await launch(specs={"webster": {"down": True}})
    operator = rig.member(AccessLevel.OPERATOR, "Antoine")

    calls = await rig.delegate(operator, agent="auto", instruction="Mesh the M2 mirror", needs="Meshing")
    assert shape(calls) == [("callback", 5), ("followup", None)]
    assert calls[1].content == "route: nx-expert: has meshing; ready; 0 in flight; no delegations yet"
    assert fields_of(calls[1])["Agent"] == "nx-expert" and fields_of(calls[1])["Outcome"] == "accepted"
    [run] = rig.fleet.received()
    assert run.agent == "nx-expert" and run.body["message"] == "Mesh the M2 mirror" + chain_footer("D-1")
    rows = await rig.services.store.fetchall("SELECT actor, front_end, detail FROM audit_log WHERE action = 'route'")
    [(actor, front_end, detail)] = [tuple(row) for row in rows]
    assert (actor, front_end) == ("Antoine", "discord") and len(json.loads(detail)["table"]) == 8

    # Only readiness fails: queued for webster, and the answer says so.
    calls = await rig.delegate(operator, agent="auto", instruction="Find the CTE", needs="materials data")
    assert (calls[1].content or "").startswith("route: queued for webster: no agent with materials-data is ready")
    table = (calls[1].content or "").split("```")[1].strip().splitlines()  # not the clean choice: the table too
    assert len(table) == 1 + 8 and "chosen (queued until it is ready)" in next(r for r in table if "webster" in r)
    assert fields_of(calls[1])["Outcome"] == "queued"


async def test_bad_needs_and_nobody_eligible_are_answered_privately(launch: Launcher) -> None:  # noqa: F811
    rig = await launch()
    operator = rig.member(AccessLevel.OPERATOR)

    calls = await rig.delegate(operator, agent="auto", instruction="Mesh", needs="meshng")
    assert shape(calls) == [("callback", 4)] and calls[0].ephemeral
    assert "no agent declares the capability 'meshng'. Did you mean 'meshing'?" in calls[0].content
    calls = await rig.delegate(operator, agent="auto", instruction="Mesh")
    assert calls[0].ephemeral and "say what the work needs" in calls[0].content
    calls = await rig.delegate(operator, agent="webster", instruction="Mesh", needs="meshing")
    assert calls[0].ephemeral and "webster lacks meshing" in calls[0].content

    await rig.services.monitor.silence(Requester(kind="person", name="root", front_end="cli", level=AccessLevel.ADMIN),
                                       "nx-expert", 3600)  # fmt: skip
    calls = await rig.delegate(operator, agent="auto", instruction="Mesh", needs="meshing")
    assert shape(calls) == [("callback", 4)] and calls[0].ephemeral
    assert "nobody can take work needing meshing: nx-expert: silenced by root until" in calls[0].content
    table = calls[0].content.split("```")[1]  # the table in a code block: its columns line up in Discord
    assert "verdict" in table.splitlines()[1] and len(table.strip().splitlines()) == 1 + 8
    assert rig.fleet.received() == [] and await delegation_count(rig.services) == 0


async def test_route_shows_the_whole_table(launch: Launcher) -> None:  # noqa: F811
    rig = await launch(specs={"webster": {"down": True}})
    operator = rig.member(AccessLevel.OPERATOR, "Olga")

    calls = await rig.driver.invoke("route", user=operator, options={"needs": "meshing"})
    assert shape(calls) == [("callback", 5), ("followup", None)]
    assert not calls[0].ephemeral  # like /status: for the channel
    head, table = (calls[1].content or "").split("\n```\n", 1)
    assert head == "nx-expert: has meshing; ready; 0 in flight; no delegations yet"
    rows = {line.split()[0]: line for line in table.splitlines()[1:] if line and not line.startswith("```")}
    assert set(rows) == set(rig.services.config.agent_names)
    assert (
        rows["nx-expert"].endswith("chosen") and "lacks meshing; down (connection refus…" in rows["webster"]
    )  # cut to fit
    assert await rig.services.store.fetchall("SELECT 1 FROM audit_log WHERE action = 'route'") == []  # a look

    # A viewer may look, and reads why it could not delegate.
    viewer = rig.member(AccessLevel.VIEWER, "Vera")
    calls = await rig.driver.invoke("route", user=viewer, options={"needs": "meshing"})
    assert (calls[1].content or "").startswith(
        "nobody can take work needing meshing: nx-expert: Vera is not an operator"
    )

    [suggested] = await rig.driver.autocomplete("route", "needs", "meshing, f", user=viewer)
    assert [c["value"] for c in suggested.choices] == ["meshing, fea"]
    calls = await rig.driver.invoke("route", user=viewer, options={"needs": "mesh ng"})
    assert calls[0].ephemeral and "Did you mean 'meshing'?" in calls[0].content


async def test_delegate_auto_says_when_the_chosen_agent_did_not_admit_it(launch: Launcher) -> None:  # noqa: F811
    rig = await launch(specs={"study-builder": {"busy": True}})
    rig.services.routing = routing_where(rig.services, **{"study-builder": ("study-setup", "meshing")})
    operator = rig.member(AccessLevel.OPERATOR, "Antoine")
    calls = await rig.delegate(operator, agent="auto", instruction="Mesh the M2 mirror", needs="meshing")
    assert shape(calls) == [("callback", 5), ("followup", None)]
    said = (calls[1].content or "").splitlines()
    assert said[0].startswith("route: study-builder: has meshing; ready")
    assert said[1] == "study-builder did not admit it; routed again to nx-expert"
    assert fields_of(calls[1])["Agent"] == "nx-expert" and fields_of(calls[1])["Outcome"] == "accepted"
    assert [hook.agent for hook in rig.fleet.received()] == ["nx-expert"]
