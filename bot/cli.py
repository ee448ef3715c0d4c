"""The `atomizer-hq` command line: argument parsing, then one call into the core per command.

Exit codes: 0 success, 1 the operation failed (agent down, refused), 2 bad input or config, 3 `delegate --wait`
ran out of time while the delegation is still queued (not lost: the outbox of `atomizer-hq run` goes on).
Command output goes to stdout (`--json`: one JSON document); diagnostics go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, NoReturn

from bot import __version__
from bot.config import ClusterConfig, load_cluster_config
from bot.config_check import check, require_secrets, secret_problems
from bot.errors import AtomizerError, ConfigError, InvalidInput, SystemdUnavailable, UnitCommandFailed
from bot.logsetup import LOG_LEVELS, configure_logging
from bot.settings import Settings, load_settings
from bot.status_view import collect_overview, print_fleet_status
from bot.systemd import DEFAULT_LOG_LINES, SystemdUnits, UnitState, check_lines, resolve_agents
from bot.workflows.cli import add_workflow_parser

log = logging.getLogger("atomizer-hq")
Handler = Callable[[argparse.Namespace], Awaitable[int]]


# --- shared set-up ----------------------------------------------------------------------------


def load_context(args: argparse.Namespace) -> tuple[Settings, ClusterConfig]:
    """Settings from the environment and .env, the cluster file, and the global options on top."""
    settings = load_settings(args.env_file)
    if args.config is not None:
        settings = settings.model_copy(update={"config_path": args.config})
    if args.db is not None:
        settings = settings.model_copy(update={"db_path": args.db})
    level = args.log_level or settings.log_level.strip().upper()
    if level not in LOG_LEVELS:  # --log-level is checked by argparse; this is ATOMIZER_LOG_LEVEL
        raise InvalidInput(
            f"environment: ATOMIZER_LOG_LEVEL: {settings.log_level!r} is not a log level; "
            f"use {', '.join(LOG_LEVELS[:-1])} or {LOG_LEVELS[-1]}"
        )
    configure_logging(level, args.log_format, settings.secret_values())
    return settings, load_cluster_config(settings.config_path)


def _csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


# --- commands ---------------------------------------------------------------------------------


async def cmd_check_config(args: argparse.Namespace) -> int:
    settings, config = load_context(args)
    report = check(settings, config, args.for_command)
    for line in report.problems:
        print(line, file=sys.stderr)
    for line in report.warnings:
        print(f"warning: {line}", file=sys.stderr)
    if report.problems:
        return 2
    for line in report.notes:
        print(f"note: {line}", file=sys.stderr)
    from bot.workflows.loader import WorkflowCatalog

    workflows = len(WorkflowCatalog.from_config(config).entries())
    print(
        f"{settings.config_path}: valid: {len(config.agents)} agents "
        f"({', '.join(config.agent_names)}), {len(config.channels)} channels, "
        f"{sum(len(v) for v in config.roles.values())} roles, {workflows} workflow{'s' if workflows != 1 else ''}"
    )
    return 0


async def cmd_status(args: argparse.Namespace) -> int:
    from bot.services import open_services

    settings, config = load_context(args)
    if args.timeout is not None and not 0 < args.timeout <= 60:
        raise InvalidInput(f"--timeout is in seconds, more than 0 and at most 60; not {args.timeout:g}")
    require_secrets(settings, config, "status")
    async with open_services(settings, config) as services:
        fleet = await services.cluster.probe_all(timeout=args.timeout)
        # History comes from the running bot's monitor; this probe is a look, not a record.
        overview = await collect_overview(services, fleet)
    print_fleet_status(fleet, overview, as_json=args.json)
    return 0


async def cmd_delegate(args: argparse.Namespace) -> int:
    from bot.authz import host_operator
    from bot.outbox import OutboxWorker
    from bot.routing.table import table_lines
    from bot.services import open_services

    settings, config = load_context(args)
    if not 0 < args.wait_s <= 86_400:
        raise InvalidInput(f"--wait-s is in seconds, more than 0 and at most 86400; not {args.wait_s:g}")
    require_secrets(settings, config, "delegate")
    requester = host_operator()
    if args.as_agent:
        requester = requester.acting_as(args.as_agent, config)
    if args.wait_result:
        if args.parent is not None:
            raise InvalidInput("--parent does not go with --wait-result (a workflow run's step starts a chain)")
        return await _delegate_wait_result(args, settings, config, requester)
    async with open_services(settings, config) as services:
        services.delegation.validate_request(args.message, target=args.to, deliver=not args.no_deliver)
        agent, route = await services.routing.resolve(
            requester, args.agent, args.needs, dry_run=args.dry_run, parent=args.parent
        )
        if route is not None and not args.json:
            print(f"route: {route.explanation}")
            if route.queued:  # not the clean choice: who was considered, and why not
                print("\n".join(f"  {line}" for line in table_lines(route, width=10_000)[1:]))
        result = await services.delegation.delegate(
            requester, agent, args.message, target=args.to, deliver=not args.no_deliver, dry_run=args.dry_run,
            parent=_parent_of(args.parent), needs=route.needs if route is not None else (),
        )  # fmt: skip
        delegation = result.delegation
        if delegation is not None and args.wait and not delegation.is_final:
            worker = OutboxWorker(services.delegation)
            await worker.start()
            try:
                delegation = await services.delegation.wait_final(delegation.id, timeout=args.wait_s)
            finally:
                await worker.stop()
    if args.json:
        document: dict[str, Any] = {"decision": {"allowed": result.decision.allowed, "reason": result.decision.reason}}
        if route is not None:
            document["route"] = route.to_dict()
        document["delegation" if delegation else "payload"] = delegation.to_dict() if delegation else result.payload
        print(json.dumps(document, indent=2))
    elif delegation is None:
        verdict = "would be allowed" if result.decision.allowed else "would be refused"
        print(f"dry run: {verdict}: {result.decision.reason}")
        print(json.dumps(result.payload, indent=2, ensure_ascii=False))
    else:
        if route is not None and route.chosen != delegation.agent:
            print(f"route: {route.chosen} did not admit it; routed again to {delegation.agent}")
        print(describe_delegation(delegation))
    if delegation is None:
        return 0 if result.decision.allowed else 1
    if args.wait and not delegation.is_final:
        print(
            f"atomizer-hq: still {delegation.status} after waiting {args.wait_s:g} s: the outbox of `atomizer-hq run` "
            f"retries it until {_utc_seconds(delegation.expires_at)}; follow it with "
            f"`atomizer-hq delegations show {delegation.display_id}`",
            file=sys.stderr,
        )
        return WAIT_RAN_OUT
    return 0 if delegation.status in ("accepted", "queued", "sending") else 1


def _parent_of(value: str | None) -> str | None:
    """`--parent` given blank is a slip (an unset $PARENT), not "no parent"."""
    if value is not None and not value.strip():
        raise InvalidInput("--parent is empty; write the delegation you are working on, e.g. --parent D-12")
    return value


WAIT_RAN_OUT = 3  # `delegate --wait`: neither delivered nor failed yet; a script tells this from both


async def _delegate_wait_result(
    args: argparse.Namespace, settings: Settings, config: ClusterConfig, requester: Any
) -> int:
    """`delegate … --wait-result`: a one-step workflow run, followed here until the agent's result."""
    from bot.services import open_services
    from bot.workflows.cli_runs import delegate_and_wait

    if args.dry_run or args.wait:
        raise InvalidInput("--wait-result does not go with --dry-run or --wait")
    async with open_services(settings, config) as services:
        services.delegation.validate_request(args.message, target=args.to, deliver=not args.no_deliver)
        agent, route = await services.routing.resolve(requester, args.agent, args.needs)
        if route is not None:
            print(f"route: {route.explanation}", file=sys.stderr)
        run, step = await delegate_and_wait(
            services, requester, agent, args.message, wait_s=args.wait_s, to=args.to, deliver=not args.no_deliver
        )
    if args.json:
        document = {"run": run.display_id, "step": step.status, "output": step.output, "error": step.error}
        print(json.dumps(document, indent=2, ensure_ascii=False))
    elif step.status == "succeeded":
        print(step.output or "")
    if step.status == "succeeded":
        if not step.output:
            print(f"atomizer-hq: {agent} finished without an output reaching atomizer-hq "
                  f"(source: {step.output_source})", file=sys.stderr)  # fmt: skip
        return 0
    if step.status in ("running", "dispatching", "pending"):
        print(
            f"atomizer-hq: {run.display_id} still {step.status} after {args.wait_s:g} s; follow it with "
            f"`atomizer-hq workflow show {run.display_id}`",
            file=sys.stderr,
        )
        return WAIT_RAN_OUT
    print(f"atomizer-hq: {run.display_id}/work {step.status}: {step.error or 'no detail'}", file=sys.stderr)
    return 1


async def cmd_route(args: argparse.Namespace) -> int:
    """Which agent `delegate auto --needs …` would choose now, and the whole table it would choose from."""
    from bot.authz import host_operator
    from bot.routing.table import table_lines
    from bot.services import open_services

    settings, config = load_context(args)
    require_secrets(settings, config, "status")
    requester = host_operator()
    if args.as_agent:
        requester = requester.acting_as(args.as_agent, config)
    async with open_services(settings, config) as services:
        decision = await services.routing.preview(requester, services.routing.needs(args.needs))
    if args.json:
        print(json.dumps(decision.to_dict(), indent=2))
    else:
        print("\n".join(table_lines(decision, width=10_000)))  # a pipe or a terminal: whole lines, never cut
    return 0 if decision.chosen is not None else 1


def _utc_seconds(moment: str | None) -> str:
    return "-" if not moment else f"{moment[:19].replace('T', ' ')} UTC"


def describe_delegation(delegation: Any) -> str:
    """One line an operator reads: what happened to the delegation and what comes next."""
    head = f"{delegation.display_id} to {delegation.agent}"
    if delegation.parent_id is not None:
        head += f" (under D-{delegation.parent_id}, chain D-{delegation.root})"
    if delegation.status == "accepted":
        return f"{head}: accepted (runId {delegation.run_id}, {delegation.latency_ms or 0:.0f} ms)"
    if delegation.status in ("queued", "sending"):
        return (
            f"{head}: queued: {delegation.agent} is unavailable ({delegation.last_error}); "
            f"will retry until {_utc_seconds(delegation.expires_at)} while `atomizer-hq run` is up"
        )
    return f"{head}: {delegation.status}: {delegation.last_error}"


def describe_delegation_in_full(delegation: Any) -> str:
    """`delegations show`: the one-line outcome, then everything the record says, a field a line."""
    requester = f"{delegation.requester} ({delegation.requester_kind}, {delegation.front_end})"
    if delegation.via:
        requester += f", via {delegation.via}"
    if not delegation.deliver:
        target = "not delivered (the answer stays in the agent's session)"
    else:
        target = delegation.target or "-"
    status = delegation.status + (f": {delegation.last_error}" if delegation.last_error else "")
    latency = f" ({delegation.latency_ms:.0f} ms)" if delegation.latency_ms is not None else ""
    fields = [
        ("instruction", delegation.message.replace("\n", "\n" + " " * 16)),
        ("requested by", requester),
        ("agent", delegation.agent),
        ("delivered to", target),
        ("task", delegation.task or "-"),
        ("status", status),
        ("attempts", str(delegation.attempts)),
        ("runId", delegation.run_id or "-"),
        ("created", _utc_seconds(delegation.created_at)),
        ("updated", _utc_seconds(delegation.updated_at)),
        ("accepted", _utc_seconds(delegation.accepted_at) + latency),
        ("next attempt", _utc_seconds(delegation.next_attempt_at)),
        ("expires", _utc_seconds(delegation.expires_at)),
    ]
    return "\n".join([describe_delegation(delegation), *(f"  {name:<13} {value}" for name, value in fields)])


async def cmd_delegations(args: argparse.Namespace) -> int:
    from bot.authz import host_operator
    from bot.chain_view import draw_tree
    from bot.clock import utcnow
    from bot.services import open_services

    settings, config = load_context(args)
    async with open_services(settings, config) as services:
        if args.action == "retry":
            if not args.id:
                raise InvalidInput("delegations retry needs an id, e.g. `atomizer-hq delegations retry D-42`")
            require_secrets(settings, config, "delegate")
            delegation = await services.delegation.retry(host_operator(), args.id)
            print(describe_delegation(delegation))
            return 0 if delegation.status in ("accepted", "queued") else 1
        if args.action == "cancel":
            if not args.id:
                raise InvalidInput("delegations cancel needs an id, e.g. `atomizer-hq delegations cancel D-42`")
            done = await services.delegation.cancel(host_operator(), args.id)
            if args.json:
                document = {"summary": done.summary(), "stopped": [f"D-{n}" for n in sorted(done.stopped)],
                            "with_agent": [d.display_id for d in done.with_agent]}  # fmt: skip
                print(json.dumps(document, indent=2))
            else:
                print(done.summary())
            return 0
        if args.action == "show":
            if not args.id:
                raise InvalidInput("delegations show needs an id, e.g. `atomizer-hq delegations show D-42`")
            shown = await services.delegation.get(args.id)
            if not args.json:
                print(describe_delegation_in_full(shown))
                tree = await services.delegation.tree(shown.id)
                if len(tree) > 1:  # a chain: drawn from its root, with each one's state
                    print()
                    print("\n".join(draw_tree(tree, utcnow())))
                return 0
            items = [shown]
        else:
            items = await services.delegation.recent(agent=args.agent, status=args.status, limit=args.limit)
    if args.json:
        print(json.dumps([d.to_dict() for d in items], indent=2))
    elif not items:
        print("no delegations")
    else:
        for delegation in items:
            print(f"{delegation.created_at[:19].replace('T', ' ')}  {describe_delegation(delegation)}")
    return 0


async def cmd_task(args: argparse.Namespace) -> int:
    """The task board from the host: the same rules, validation and history as /task and the API."""
    from bot.api import TaskDetailOut, TaskList, TaskRecord, count_tasks
    from bot.authz import host_operator
    from bot.boards import render_text
    from bot.clock import utcnow
    from bot.services import open_services
    from bot.task_view import task_detail, task_line
    from bot.taskboard import assignee_or_nobody

    settings, config = load_context(args)
    requester = host_operator()
    if getattr(args, "as_agent", None):
        requester = requester.acting_as(args.as_agent, config)
    today = utcnow().date()
    async with open_services(settings, config) as services:
        board = services.tasks
        action: str = args.action
        if action == "list":
            if args.limit < 1:
                raise InvalidInput("--limit must be at least 1")
            filters = {"assignee": args.assignee, "status": args.status, "open_only": not args.all}
            tasks = await board.list(**filters, limit=args.limit)
            total = await count_tasks(board, **filters)
            if args.json:  # the document GET /v1/tasks answers
                print(TaskList(tasks=[TaskRecord.of(task) for task in tasks], total=total).model_dump_json(indent=2))
                return 0
            for task in tasks:
                print(task_line(task, today))
            what = "tasks" if args.all or args.status else "open tasks"
            print(f"{len(tasks)} of {total} {what}" if total > len(tasks) else f"{total} {what}")
            return 0
        if action == "show":
            detail = await board.show(args.id)
            if args.json:
                print(TaskDetailOut.of_detail(detail).model_dump_json(indent=2))
            else:
                print(render_text(task_detail(detail, today)))
            return 0
        if action == "add":
            task = await board.add(
                requester, args.title, assignee=args.assignee, priority=args.priority, due=args.due,
                description=args.description,
            )  # fmt: skip
        elif action == "move":
            task = await board.move(requester, args.id, args.status, note=args.note, expected_version=args.version)
        elif action == "assign":
            assignee = assignee_or_nobody(args.assignee)
            task = await board.assign(requester, args.id, assignee, note=args.note, expected_version=args.version)
        elif action == "done":
            task = await board.done(requester, args.id, args.note, expected_version=args.version)
        else:
            task = await board.block(requester, args.id, args.reason, expected_version=args.version)
    if args.json:
        print(TaskRecord.of(task).model_dump_json(indent=2))
    else:
        print(f"{task.already}; nothing changed" if task.already else task_line(task, today))
    return 0


async def cmd_heartbeat(args: argparse.Namespace) -> int:
    """Heartbeats from the host: the same decisions and records as /heartbeat and the API (as admin)."""
    from bot.api import HeartbeatJobOut, HeartbeatList, HeartbeatRunOut, pause_seconds
    from bot.authz import host_operator
    from bot.services import open_services

    settings, config = load_context(args)
    action: str = args.action
    if action == "run":
        require_secrets(settings, config, "heartbeat")
    requester = host_operator()
    async with open_services(settings, config) as services:
        heartbeats = services.heartbeats
        if action == "list":
            jobs = await heartbeats.status()
            if args.json:
                print(HeartbeatList(heartbeats=[HeartbeatJobOut.of(job) for job in jobs]).model_dump_json(indent=2))
            else:
                watched = [name for name in heartbeats.watched() if name not in heartbeats.jobs()]
                print_heartbeat_jobs(jobs, watched, config.source)
            return 0
        agent = config.require_agent(args.agent).name
        if action == "run":
            run = await heartbeats.run_now(requester, agent)
            if args.json:
                print(HeartbeatRunOut.of(run).model_dump_json(indent=2))
            else:
                print(describe_run(run))
            return 0 if run.status == "ok" else 1
        if action == "pause":
            pause = await heartbeats.pause(requester, agent, pause_seconds(args.duration))
            if pause.already:
                print(f"{pause.already}; nothing changed")
                return 0
            until = pause.until
            when = "until resumed" if until.startswith("9999") else f"until {until[:16].replace('T', ' ')} UTC"
            print(f"{agent}: heartbeats paused {when}; `atomizer-hq heartbeat resume {agent}` resumes them")
            return 0
        already = await heartbeats.resume(requester, agent)
        if already:
            print(f"{already}; nothing changed")
            return 0
        [job] = [job for job in await heartbeats.status() if job.agent == agent]
        upcoming = f"; next slot {_utc(job.next_slot)}" if job.next_slot else ""
        print(f"{agent}: heartbeats resumed{upcoming}")
    return 0


def _utc(moment: str | None) -> str:
    return "-" if not moment else f"{moment[:16].replace('T', ' ')} UTC"


def describe_run(run: Any) -> str:
    """One run as an operator reads it: how far it got, how it ended, and why."""
    level = f", verified up to {run.level}" if run.level else ""
    run_id = f", runId {run.run_id}" if run.run_id else ""
    detail = f": {run.detail}" if run.detail and run.detail not in ("completed", "accepted") else ""
    return f"{run.agent} heartbeat ({run.trigger}, {_utc(run.slot)}): {run.status}{level}{run_id}{detail}"


def print_heartbeat_jobs(jobs: Sequence[Any], watched: Sequence[str], config_file: str) -> None:
    if not jobs:
        print(f"atomizer-hq sends no heartbeats; add [heartbeat.<agent>] with `every` or `cron` to {config_file}")
    else:
        rows = [("agent", "schedule", "method", "missed", "next", "last", "paused")]
        for job in jobs:
            last = "-" if job.last is None else f"{job.last.status} {_utc(job.last.slot)}"
            paused = "-"
            if job.paused_until:
                paused = "until resumed" if job.paused_until.startswith("9999") else f"until {_utc(job.paused_until)}"
            rows.append((job.agent, job.schedule, job.method, job.missed, _utc(job.next_slot), last, paused))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        for job in jobs:
            if job.last is not None and job.last.failed:
                print(f"  {job.agent}: last run {job.last.status}: {job.last.detail} ({job.failures} failed in a row)")
    if watched:
        print(f"watched (their own heartbeat): {', '.join(watched)}")


async def cmd_standup(args: argparse.Namespace) -> int:
    """The standup as text; posting it needs the running bot (this process has no Discord connection)."""
    from bot.services import open_services
    from bot.standup import StandupNotPosted, standup_for

    settings, config = load_context(args)
    if args.post:
        raise StandupNotPosted(
            "--post needs the running bot's Discord connection, which this command does not open: use "
            "/standup post:true in Discord, or let `atomizer-hq run` post it at "
            f"{config.heartbeats.standup_time} {config.heartbeats.standup_timezone}. Without --post it is printed here"
        )
    async with open_services(settings, config) as services:
        # The states the running bot's monitor records are not kept outside `run` (or are stale): look now, as
        # `status` does, without recording it. Without the hooks token there is no look: say so.
        states: dict[str, str] | None = None
        if not secret_problems(settings, config, "standup"):
            states = {agent.name: agent.state for agent in (await services.cluster.probe_all()).agents}
        text = await standup_for(services).text(states=states)
    print(text)
    if states is None:
        print(
            "atomizer-hq: agent states not probed (ATOMIZER_HOOKS_TOKEN is not set): shown as the running bot last "
            "recorded them, or unknown",
            file=sys.stderr,
        )
    return 0


async def cmd_cluster(args: argparse.Namespace) -> int:
    """The agents' systemd units, as `cluster.sh` drove them: start, stop, restart, status, logs."""
    _, config = load_context(args)
    action: str = args.action
    if args.agent is None and action != "status":
        raise InvalidInput(f"cluster {action} needs an agent or 'all', e.g. `atomizer-hq cluster {action} webster`")
    if args.lines is not None and action != "logs":
        raise InvalidInput("--lines goes with `cluster logs` only")
    lines = check_lines(args.lines if args.lines is not None else DEFAULT_LOG_LINES)
    everyone = args.agent is None or args.agent.strip().lower() == "all"
    agents = resolve_agents(config, args.agent or "all", action)
    units = SystemdUnits.from_config(config.systemd)
    if action == "status":
        return _print_unit_states(await units.states(agents), as_json=args.json)
    if action == "logs":
        return await _print_unit_logs(units, agents, lines, as_json=args.json)
    if everyone and action in ("stop", "restart") and not args.yes:
        if sys.stdin is None or not sys.stdin.isatty():
            raise InvalidInput(
                f"`cluster {action} all` would {action} every agent; add --yes to confirm "
                "(stdin is not a terminal, so there is no one to ask)"
            )
        # Blocking read on purpose: nothing else runs yet, and the answer comes before any unit is touched.
        print(f"{action} all {len(agents)} agents ({', '.join(agents)})? [y/N] ", end="", file=sys.stderr, flush=True)
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            print("aborted: no unit was touched", file=sys.stderr)
            return 1
        await asyncio.sleep(0)  # a Ctrl-C during the question cancels us here, before anything runs
    results = await _audited_unit_action(args, action, args.agent or "all")
    failed = [r for r in results if not r.ok]
    if args.json:
        print(json.dumps({"action": action, "ok": not failed, "results": [r.to_dict() for r in results]}, indent=2))
    else:
        for result in results:
            print(result.summary)
    # The summaries name systemd's absence briefly; say once what to do about it.
    for message in dict.fromkeys(r.error.message for r in failed if isinstance(r.error, SystemdUnavailable)):
        print(f"atomizer-hq: {message}", file=sys.stderr)
    if failed:
        names = ", ".join(r.agent for r in failed)
        print(f"atomizer-hq: {action} failed for {len(failed)} of {len(results)} agents: {names}", file=sys.stderr)
    return 1 if failed else 0


async def _audited_unit_action(args: argparse.Namespace, action: str, agent: str) -> list[Any]:
    """The same core call /cluster makes, so the host operator's actions land in the audit trail too."""
    from bot.authz import host_operator
    from bot.cluster_control import ClusterControl
    from bot.services import open_services

    settings, config = load_context(args)
    async with open_services(settings, config) as services:
        control = ClusterControl(config, services.store, services.systemd, services.monitor)
        return await control.act(host_operator(), action, agent)  # type: ignore[arg-type]


def _print_unit_states(states: Sequence[UnitState], *, as_json: bool) -> int:
    """Exit 0 when every unit's state could be read, whatever it is; 1 when systemd could not say."""
    unknown = [s for s in states if s.state == "unknown"]
    if as_json:
        print(json.dumps({"ok": not unknown, "agents": [s.to_dict() for s in states]}, indent=2))
    else:
        width = max(len("agent"), *(len(s.agent) for s in states))
        print(f"{'agent':<{width}}  {'state':<12}  unit")
        for state in states:
            print(f"{state.agent:<{width}}  {state.state:<12}  {state.unit}")
    reasons: dict[str, list[str]] = {}
    for state in unknown:
        reasons.setdefault(state.reason, []).append(state.agent)
    for reason, names in reasons.items():
        print(f"atomizer-hq: {', '.join(names)}: {reason}", file=sys.stderr)
    if not as_json:
        print("hint: whether each gateway answers (readiness): atomizer-hq status", file=sys.stderr)
    return 1 if unknown else 0


async def _print_unit_logs(units: SystemdUnits, agents: Sequence[str], lines: int, *, as_json: bool) -> int:
    """Each agent's journal, one after the other; an agent whose log cannot be read does not hide the others."""
    logs: list[dict[str, Any]] = []
    for agent in agents:
        try:
            text, error = await units.logs(agent, lines), None
        except UnitCommandFailed as exc:  # SystemdUnavailable is the same for every agent: it ends the command
            text, error = None, exc
        logs.append({"agent": agent, "unit": units.unit(agent), "text": text, "error": error})
    failed = [entry for entry in logs if entry["error"] is not None]
    if as_json:
        for entry in logs:
            error = entry["error"]
            entry["error"] = None if error is None else {"code": error.code, "message": error.message}
        print(json.dumps({"ok": not failed, "lines": lines, "logs": logs}, indent=2))
    else:
        try:
            for index, entry in enumerate(logs):
                if len(logs) > 1:  # headers as `tail` prints them for several files
                    print(("\n" if index else "") + f"==> {entry['agent']} ({entry['unit']}) <==")
                text = entry["text"] or ""
                print(text, end="" if not text or text.endswith("\n") else "\n", flush=True)
        except BrokenPipeError:  # `… | head`: the reader has seen enough
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    for entry in failed:
        print(f"atomizer-hq: {entry['error']}", file=sys.stderr)
    return 1 if failed else 0


async def cmd_simulate(args: argparse.Namespace) -> int:
    from bot import simulator

    settings, config = load_context(args)
    token = args.token or (settings.hooks_token.get_secret_value() if settings.hooks_token else None)
    if not token:
        raise InvalidInput(
            "simulate needs the hooks token its gateways accept: set ATOMIZER_HOOKS_TOKEN or pass --token"
        )
    specs = simulated_specs(config, args)
    fleet = simulator.SimulatedFleet(specs, token, record_path=args.record, seed=args.seed)

    def ready() -> None:
        for spec in specs:
            flags = [spec.release] + [f for f in ("down", "hang") if getattr(spec, f)]
            flags += [label for attribute, label in _SIM_MISSING if not getattr(spec, attribute)]
            print(f"{spec.name:<16} http://{spec.host}:{spec.port}  {' '.join(flags)}", flush=True)
        print("simulated fleet running; Ctrl-C to stop", file=sys.stderr, flush=True)

    try:
        await _until_signalled(simulator.serve_forever(fleet, on_ready=ready))
    except simulator.PortUnavailable as exc:
        try:
            elsewhere = f"e.g. --base-port {simulator.free_ports(len(specs), args.spacing)} (free now)"
        except ValueError:
            elsewhere = "with --base-port P"
        raise InvalidInput(f"{exc.strerror}; stop what holds it, or simulate on other ports, {elsewhere}") from None
    return 0


_SIM_MISSING = (("discord_plugin", "no-discord-plugin"), ("model_ok", "no-model"), ("hooks_enabled", "hooks-disabled"))


def simulated_specs(config: ClusterConfig, args: argparse.Namespace) -> list[Any]:
    """One simulated gateway per agent of the config (or N generated ones), with the CLI's faults."""
    from bot import simulator

    count = args.agents if args.agents is not None else len(config.agents)
    if count < 1:
        raise InvalidInput("--agents must be at least 1")
    names = config.agent_names[:count] + [f"agent-{i:03d}" for i in range(len(config.agents) + 1, count + 1)]
    if args.base_port is not None:
        ports = [args.base_port + i * args.spacing for i in range(count)]
    else:
        ports = [a.port for a in config.agents[:count]]
        ports += [(ports[-1] if ports else 18800) + i * args.spacing for i in range(1, count - len(ports) + 1)]
    if ports[-1] > 65535:
        raise InvalidInput(f"{count} agents from port {ports[0]} spaced by {args.spacing} run past port 65535")
    try:
        releases = simulator.parse_release_option(args.release or [], names)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    by_option = {
        "--down": args.down, "--hang": args.hang, "--no-discord-plugin": args.no_discord_plugin,
        "--no-model": args.no_model, "--hooks-disabled": args.hooks_disabled,
    }  # fmt: skip
    for option, values in by_option.items():
        unknown = [n for n in values if n not in names]
        if unknown:
            raise InvalidInput(f"{option}: unknown agent {unknown[0]!r}; valid: {', '.join(names)}")
    if not 0.0 <= args.fail_rate <= 1.0:
        raise InvalidInput(f"--fail-rate must be between 0 and 1, not {args.fail_rate}")
    return [
        simulator.SimAgentSpec(
            name=name,
            port=port,
            release=releases.get(name, simulator.RELEASE_CURRENT),
            down=name in args.down,
            hang=name in args.hang,
            latency_ms=args.latency_ms,
            fail_rate=args.fail_rate,
            startup=args.startup_s,
            discord_plugin=name not in args.no_discord_plugin,
            model_ok=name not in args.no_model,
            hooks_enabled=name not in args.hooks_disabled,
        )
        for name, port in zip(names, ports, strict=True)
    ]


async def cmd_demo(args: argparse.Namespace) -> int:
    from bot.demo import run_demo

    return await run_demo(args)


async def cmd_run(args: argparse.Namespace) -> int:
    from bot.runner import run_service

    settings, config = load_context(args)
    require_secrets(settings, config, "run" if args.discord else "run --no-discord")
    await _until_signalled(run_service(settings, config, discord=args.discord))
    return 0


async def _until_signalled(main: Awaitable[None]) -> None:
    """Run until done or until SIGINT/SIGTERM, then let `main` clean up after itself."""
    task = asyncio.ensure_future(main)
    loop = asyncio.get_running_loop()
    async with AsyncExitStack() as stack:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, task.cancel)
                stack.callback(loop.remove_signal_handler, sig)
            except (NotImplementedError, RuntimeError):
                pass
        try:
            await task
        except asyncio.CancelledError:
            if not task.cancelled():
                raise
            print("stopped", file=sys.stderr)


async def cmd_doctor(args: argparse.Namespace) -> int:
    from bot.doctor import cli_doctor

    settings, config = load_context(args)
    return await cli_doctor(args, settings, config)


async def cmd_install_systemd(args: argparse.Namespace) -> int:
    from bot.install_systemd import cli_install_systemd

    settings, config = load_context(args)
    return await cli_install_systemd(args, settings, config)


# --- parser -----------------------------------------------------------------------------------


class OneLineErrors(argparse.ArgumentParser):
    """A usage mistake is one line that says what was wrong and where to look, not the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrors(
        prog="atomizer-hq",
        description="Control plane of the Atomizer-HQ fleet of OpenClaw agents.",
        epilog="Exit codes: 0 success, 1 the operation failed, 2 bad input or configuration, "
        "3 `delegate --wait` ran out of time with the delegation still queued.",
    )
    parser.add_argument("--version", action="version", version=f"atomizer-hq {__version__}")
    parser.add_argument("--config", type=Path, help="cluster file (default: $ATOMIZER_CONFIG or config/cluster.toml)")
    parser.add_argument("--env-file", type=Path, help="file of environment variables (default: ./.env if present)")
    parser.add_argument("--db", type=Path, help="SQLite database (default: $ATOMIZER_DB or data/atomizer.db)")
    parser.add_argument(
        "--log-level", type=str.upper, choices=LOG_LEVELS, metavar="L",
        help="DEBUG, INFO, WARNING or ERROR, in any case (default: $ATOMIZER_LOG_LEVEL or INFO)",
    )  # fmt: skip
    parser.add_argument("--log-format", choices=("text", "json"), default="text", help="log lines on stderr")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    run = add("run", cmd_run, "the Discord bot + loopback API + outbox + status monitor + scheduler")
    run.add_argument(
        "--no-discord", dest="discord", action="store_false",
        help="everything but the Discord bot (no DISCORD_TOKEN needed): the loopback API, outbox, status "
        "monitor, heartbeats and scheduler, for a host waiting for its token or a team on the CLI and API only",
    )  # fmt: skip
    add("demo", cmd_demo, "a simulated fleet and a tour of atomizer-hq, no Discord needed")

    sim = add("simulate", cmd_simulate, "run simulated OpenClaw gateways on 127.0.0.1")
    sim.add_argument("--agents", type=int, help="how many (default: one per agent of the config)")
    sim.add_argument("--base-port", type=int, help="first port (default: the config's ports)")
    sim.add_argument("--spacing", type=int, default=4, help="ports between gateways (default 4)")
    sim.add_argument("--down", type=_csv, default=[], metavar="A,B", help="agents whose port is closed")
    sim.add_argument("--hang", type=_csv, default=[], metavar="A,B", help="agents that never answer")
    sim.add_argument(
        "--no-discord-plugin", type=_csv, default=[], metavar="A,B",
        help="agents whose gateway lacks the Discord channel plugin (delivered hooks: 400)",
    )  # fmt: skip
    sim.add_argument(
        "--no-model", type=_csv, default=[], metavar="A,B",
        help="agents without model credentials (hooks accepted, runs fail)",
    )  # fmt: skip
    sim.add_argument("--hooks-disabled", type=_csv, default=[], metavar="A,B", help="agents with hooks off (404)")
    sim.add_argument("--latency-ms", type=float, default=0.0, help="time to admit a hook")
    sim.add_argument("--fail-rate", type=float, default=0.0, help="fraction of hooks answered 500")
    sim.add_argument(
        "--release", action="append", metavar="[AGENT=]RELEASE",
        help="2026.9.6 (default) or 2026.2.12, for all agents or one; repeatable",
    )  # fmt: skip
    sim.add_argument("--startup-s", type=float, default=0.0, help="seconds each gateway takes to start")
    sim.add_argument("--token", help="hooks token to accept (default: $ATOMIZER_HOOKS_TOKEN)")
    sim.add_argument("--record", type=Path, help="append every accepted hook to this JSON-lines file")
    sim.add_argument("--seed", type=int, default=0, help="seed for --fail-rate")

    chk = add("check-config", cmd_check_config, "validate the cluster file and the environment")
    chk.add_argument(
        "--for", dest="for_command", choices=("run", "status", "delegate", "heartbeat", "standup", "simulate"),
        help="also require every secret this command needs",
    )  # fmt: skip

    dlg = add("delegate", cmd_delegate, "send an instruction to an agent (recorded, retried, never lost)")
    dlg.add_argument("agent", help="the agent, e.g. nx-expert, or auto to choose one by --needs")
    dlg.add_argument("message", help="the instruction")
    dlg.add_argument("--as", dest="as_agent", metavar="AGENT", help="act for an agent, under its authority")
    dlg.add_argument(
        "--needs", action="append", metavar="CAP[,CAP]",
        help="capabilities the work needs (repeatable): with auto, the agent is chosen by them (docs/routing.md)",
    )  # fmt: skip
    dlg.add_argument(
        "--parent", metavar="ID",
        help="hang it under a delegation the agent (--as) is working on, e.g. D-12 (docs/delegation-chains.md)",
    )  # fmt: skip
    dlg.add_argument(
        "--to", help="delivery target: user:<id>, channel:<id>, #channel, a channel role (default: technical)"
    )
    dlg.add_argument("--no-deliver", action="store_true", help="the agent's answer is not posted anywhere")
    dlg.add_argument("--dry-run", action="store_true", help="show the decision and the exact payload; send nothing")
    dlg.add_argument(
        "--wait", action="store_true",
        help="if queued, keep retrying here until it ends; exit 3 if it is still queued when the wait runs out",
    )  # fmt: skip
    dlg.add_argument("--wait-s", type=float, default=600.0, help="how long --wait waits, in seconds (default 600)")
    dlg.add_argument("--json", action="store_true", help="one JSON document on stdout")

    dlg.add_argument(
        "--wait-result", action="store_true",
        help="run it as a one-step workflow and wait for the agent's result (up to --wait-s); print its output",
    )  # fmt: skip

    rte = add("route", cmd_route, "which agent `delegate auto --needs …` would choose now, and why (the table)")
    rte.add_argument("--needs", action="append", required=True, metavar="CAP[,CAP]", help="e.g. meshing; repeatable")
    rte.add_argument("--as", dest="as_agent", metavar="AGENT", help="route as this agent would (its authority)")
    rte.add_argument("--json", action="store_true", help="one JSON document on stdout")

    dls = add(
        "delegations", cmd_delegations,
        "recent delegations; show one (and its chain); retry an unconfirmed one; cancel one and what hangs under it",
    )  # fmt: skip
    dls.add_argument("action", nargs="?", choices=("list", "show", "retry", "cancel"), default="list")
    dls.add_argument("id", nargs="?", help="D-42 (for show, retry and cancel)")
    dls.add_argument("--agent", help="only this agent's")
    dls.add_argument("--status", help="queued, accepted, failed, unconfirmed or expired")
    dls.add_argument("--limit", type=int, default=20)
    dls.add_argument("--json", action="store_true", help="one JSON document on stdout")

    tsk = add("task", cmd_task, "the task board: add, list, show, move, assign, done, block")
    task_actions = tsk.add_subparsers(dest="action", metavar="ACTION", required=True)

    def task_action(name: str, help_text: str, *, writes: bool = True) -> argparse.ArgumentParser:
        sub = task_actions.add_parser(name, help=help_text, description=help_text)
        if writes:
            sub.add_argument("--as", dest="as_agent", metavar="AGENT", help="act for an agent, under its authority")
        sub.add_argument("--json", action="store_true", help="one JSON document on stdout")
        return sub

    def versioned(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--version", type=int, metavar="V", help="the version you read: refused (exit 1) if the task changed since"
        )

    t_add = task_action("add", "add a task (open, status todo)")
    t_add.add_argument("title", help="one line, at most 200 characters")
    t_add.add_argument("--assignee", metavar="A", help="an agent (nx-expert) or a person (@name, user:<id>)")
    t_add.add_argument("--priority", default="normal", metavar="P", help="low, normal (default), high or urgent")
    t_add.add_argument("--due", metavar="D", help="YYYY-MM-DD, today, tomorrow, +3d or +2w")
    t_add.add_argument("--description", metavar="TEXT", help="longer text, at most 2000 characters")
    t_list = task_action("list", "tasks, most urgent first (open ones unless --all or --status)", writes=False)
    t_list.add_argument("--assignee", metavar="A", help="only this agent's or person's")
    t_list.add_argument("--status", metavar="S", help="only this status: todo, in_progress, blocked, review, ...")
    t_list.add_argument("--all", action="store_true", help="done and cancelled tasks too")
    t_list.add_argument("--limit", type=int, default=50, metavar="N", help="at most N (default 50)")
    t_show = task_action("show", "one task with its history and delegations", writes=False)
    t_show.add_argument("id", help="T-42")
    t_move = task_action("move", "move a task to another status")
    t_move.add_argument("id", help="T-42")
    t_move.add_argument("status", help="todo, in_progress, blocked, review, done or cancelled")
    t_move.add_argument("--note", metavar="N", help="why (kept in the history); needed for blocked")
    versioned(t_move)
    t_assign = task_action("assign", "give a task to an agent or a person ('none' to unassign)")
    t_assign.add_argument("id", help="T-42")
    t_assign.add_argument("assignee", help="an agent (nx-expert), a person (@name, user:<id>), or none")
    t_assign.add_argument("--note", metavar="N", help="why (kept in the history)")
    versioned(t_assign)
    t_done = task_action("done", "mark a task done")
    t_done.add_argument("id", help="T-42")
    t_done.add_argument("--note", metavar="N", help="what came out of it (kept in the history)")
    versioned(t_done)
    t_block = task_action("block", "mark a task blocked, saying why")
    t_block.add_argument("id", help="T-42")
    t_block.add_argument("reason", help="what it waits for")
    versioned(t_block)

    hb = add("heartbeat", cmd_heartbeat, "the heartbeats atomizer-hq sends: list, run one now, pause, resume")
    hb_actions = hb.add_subparsers(dest="action", metavar="ACTION", required=True)
    hb_list = hb_actions.add_parser(
        "list", help="schedule, policy, next slot, last result", description="schedule, policy, next slot, last result"
    )
    hb_list.add_argument("--json", action="store_true", help="one JSON document on stdout (as GET /v1/heartbeats)")
    hb_run = hb_actions.add_parser(
        "run",
        help="send an agent's heartbeat now and verify it (exit 1 if the run failed)",
        description="Send an agent's heartbeat now and verify it level by level: live, ready, hook accepted, run "
        "completed. Exit 0 when it completed, 1 when it failed.",
    )
    hb_run.add_argument("agent", help="an agent atomizer-hq sends heartbeats for, e.g. manager")
    hb_run.add_argument("--json", action="store_true", help="one JSON document on stdout")
    hb_pause = hb_actions.add_parser(
        "pause",
        help="no heartbeats for an agent for a while, or until resumed",
        description="No heartbeats for an agent for a while, or until resumed; the running bot sees it at its next "
        "tick.",
    )
    hb_pause.add_argument("agent", help="e.g. webster")
    hb_pause.add_argument(
        "--for", dest="duration", metavar="DURATION", help="e.g. 30m, 2h, 1d (default: until resumed)"
    )
    hb_resume = hb_actions.add_parser(
        "resume", help="resume an agent's heartbeats", description="resume an agent's heartbeats"
    )
    hb_resume.add_argument("agent", help="e.g. webster")

    su = add(
        "standup",
        cmd_standup,
        "print the daily standup (the last 24 hours, agent by agent; states probed now) as the bot would post it",
    )
    su.add_argument(
        "--post",
        action="store_true",
        help="not available here: posting needs the running bot's Discord connection (exit 1 says so); "
        "use /standup post:true in Discord, or let `atomizer-hq run` post it daily",
    )

    status = add("status", cmd_status, "probe every agent at once and show the fleet")
    status.add_argument("--json", action="store_true", help="one JSON document on stdout")
    status.add_argument("--timeout", type=float, help="probe timeout in seconds (default: the config's)")

    cl = add(
        "cluster", cmd_cluster, "start, stop, restart the agents' systemd units; show their state; read their logs"
    )
    cl.add_argument("action", choices=("start", "stop", "restart", "status", "logs"))
    cl.add_argument(
        "agent",
        nargs="?",
        help="an agent, or 'all': every agent in config order (stop: reverse); status: all by default",
    )
    cl.add_argument(
        "--lines", "-n", type=int, metavar="N", help="logs: journal lines per agent (1 to 5000, default 100)"
    )
    cl.add_argument("--yes", "-y", action="store_true", help="stop all / restart all without asking")
    cl.add_argument("--json", action="store_true", help="one JSON document on stdout")
    doc = add("doctor", cmd_doctor, "check what the agents run (openclaw.json, workspace, unit) against atomizer-hq")
    doc.add_argument("--instances-dir", type=Path, help="the agents' instances (default: ~/atomizer/instances)")
    doc.add_argument("--workspaces-dir", type=Path, help="the agents' workspaces (default: as openclaw.json says)")
    doc.add_argument(
        "--units-dir", type=Path, action="append",
        help="where the agents' unit files are; repeatable (default: ~/.config/systemd/user, /etc/systemd/user)",
    )  # fmt: skip
    doc.add_argument("--fix", action="store_true", help="rewrite bare targets that resolve (backup beside each file)")
    doc.add_argument("--json", action="store_true", help="one JSON document on stdout")

    ins = add("install-systemd", cmd_install_systemd, "write the bot's and the agents' systemd units for this host")
    ins.add_argument("--user", action="store_true", help="user units (default: the bot as a system service)")
    ins.add_argument("--dry-run", action="store_true", help="print the units, check the paths they name; write nothing")
    ins.add_argument("--run-as", metavar="USER", help="the service's User= (default: $SUDO_USER or you)")
    ins.add_argument("--node", type=Path, help="Node for the agents (default: node on PATH)")
    ins.add_argument("--openclaw", type=Path, help="the package's openclaw.mjs (default: behind openclaw on PATH)")
    ins.add_argument("--units-dir", type=Path, help="write both units here instead of where systemd looks")
    ins.add_argument("--instances-dir", type=Path, help="the agents' instances (default: ~/atomizer/instances)")
    ins.add_argument("--force", action="store_true", help="write even when a path the units name is missing")

    add_workflow_parser(commands)  # bot/workflows/cli.py: the `workflow` command and its actions
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(args.handler(args))
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return exc.exit_code
    except AtomizerError as exc:
        print(f"atomizer-hq: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
