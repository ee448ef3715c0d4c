"""`atomizer-hq workflow …`: the definitions' commands (list, validate, plan); the runs' commands sit beside them.

To add a command: write `async def _name(args) -> int` below and one `action("name", _name, "help")` line
(plus its arguments) in `add_workflow_parser`. Exit codes as everywhere: 0 ok, 1 failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bot.errors import InvalidInput, InvalidWorkflow

Action = Callable[[argparse.Namespace], Awaitable[int]]


def add_workflow_parser(commands: Any) -> None:
    """The `workflow` command and its actions, on the CLI's sub-command parsers."""
    help_text = "workflows: list them, validate a file, plan a run; run one and follow, approve, retry its runs"
    parser = commands.add_parser("workflow", help=help_text, description=help_text)
    parser.set_defaults(handler=cmd_workflow)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, handler: Action, text: str) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=text, description=text)
        sub.set_defaults(action_handler=handler)
        return sub

    listing = action("list", _list, "the workflows in the workflows dir ([workflows] dir); broken files flagged")
    listing.add_argument("--json", action="store_true", help="one JSON document on stdout")

    check = action("validate", _validate, "check one workflow file: exit 0 if valid, else every problem and exit 2")
    check.add_argument("file", type=Path, help="a workflow .yaml file")

    dry = action(
        "plan", _plan, "what a run would do, wave by wave, with each hop's authority; exit 2 if it would be refused"
    )
    dry.add_argument("name", help="the workflow's name (see `atomizer-hq workflow list`)")
    dry.add_argument("--input", action="append", default=[], metavar="K=V", help="an input's value; repeatable")
    dry.add_argument("--as", dest="as_agent", metavar="AGENT", help="as started by an agent, under its authority")
    dry.add_argument("--json", action="store_true", help="one JSON document on stdout")

    from bot.workflows.cli_runs import add_run_commands  # run, show, runs, cancel, approve, reject, retry, result

    add_run_commands(actions)


async def cmd_workflow(args: argparse.Namespace) -> int:
    handler: Action = args.action_handler
    return await handler(args)


def _context(args: argparse.Namespace) -> Any:
    from bot.cli import load_context  # here: bot.cli imports this module

    return load_context(args)


async def _list(args: argparse.Namespace) -> int:
    from bot.workflows.loader import WorkflowCatalog

    _, config = _context(args)
    catalog = WorkflowCatalog.from_config(config)
    entries = catalog.entries()
    if args.json:
        document = {"dir": str(catalog.directory), "workflows": [entry.to_dict() for entry in entries]}
        print(json.dumps(document, indent=2, ensure_ascii=False))
        return 0
    if not entries:
        where = "does not exist" if not catalog.directory.is_dir() else "has no *.yaml or *.yml files"
        print(f"no workflows: {catalog.directory} {where} ([workflows] dir in {config.source} says where they are)")
        return 0
    rows = [("name", "steps", "file", "description")]
    for entry in entries:
        definition = entry.workflow.definition if entry.workflow else None
        if entry.broken:
            rows.append((entry.name or "?", "-", entry.file, f"BROKEN: {len(entry.problems)} problem(s)"))
        elif definition is not None:
            rows.append((definition.name, str(len(definition.steps)), entry.file, definition.description))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join([*(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)), row[3]]))
    broken = [entry for entry in entries if entry.broken]
    for entry in broken:
        for problem in entry.problems:
            print(problem, file=sys.stderr)
    if broken:
        print(f"atomizer-hq: {len(broken)} broken workflow file(s); fix the lines above", file=sys.stderr)
    return 0


async def _validate(args: argparse.Namespace) -> int:
    from bot.workflows.loader import load_workflow_file
    from bot.workflows.plan import validate

    _, config = _context(args)
    workflow = load_workflow_file(args.file, str(args.file))
    checked = validate(workflow, config)
    if checked.problems:
        raise InvalidWorkflow(checked.problems)
    print(f"{args.file}: valid: {checked.workflow}, {len(checked.steps)} steps")
    return 0


async def _plan(args: argparse.Namespace) -> int:
    from bot.authz import host_operator
    from bot.workflows.loader import WorkflowCatalog
    from bot.workflows.plan import plan

    settings, config = _context(args)
    inputs = parse_inputs(args.input)
    requester = host_operator()
    if args.as_agent:
        requester = requester.acting_as(args.as_agent, config)
    workflow = WorkflowCatalog.from_config(config).get(args.name)
    planned = plan(workflow, config, requester, inputs)
    routes = await _routes_now(settings, config, requester, planned)
    if args.json:
        print(json.dumps({**planned.to_dict(), "routes": {k: d.to_dict() for k, d in routes.items()}}, indent=2,
                         ensure_ascii=False))  # fmt: skip
    else:
        print(planned.render_text())
        for step_id, decision in routes.items():
            from bot.routing.table import table_lines

            print(f"\nstep {step_id}, routed at dispatch; as it is now:")
            print("\n".join(table_lines(decision, width=10_000)))
    for problem in planned.problems:
        print(problem, file=sys.stderr)
    if planned.problems:
        print(f"atomizer-hq: {args.name} would be refused: {len(planned.problems)} problem(s)", file=sys.stderr)
        return InvalidInput.exit_code
    return 0


async def _routes_now(settings: Any, config: Any, requester: Any, planned: Any) -> dict[str, Any]:
    """Each routed step's routing table as it would be decided now (the choice itself is made at dispatch)."""
    routed = [step for step in planned.steps if step.route and step.candidates]
    if not routed:
        return {}
    from bot.services import open_services

    async with open_services(settings, config) as services:
        return {step.id: await services.routing.preview(requester, step.route) for step in routed}


def parse_inputs(pairs: list[str]) -> dict[str, str]:
    """`--input mirror=M1 --input fine=true` -> {"mirror": "M1", "fine": "true"} (typed later, by the definition)."""
    inputs: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise InvalidInput(f"--input {pair!r}: write NAME=VALUE, e.g. --input mirror=M1")
        if name in inputs:
            raise InvalidInput(f"--input {name} is given twice; give each input once")
        inputs[name] = value
    return inputs
