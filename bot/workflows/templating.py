"""`${{ inputs.NAME }}` and `${{ steps.ID.output }}` in a step's message or an approval's prompt.

Deliberately not a template language: no code, no filters, no defaults. What a template refers to
is known before a run starts, so `workflow validate` can refuse a reference to an unknown input or
to a step that does not come before.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from bot.workflows.definition import OUTPUT_CAP

_REFERENCE = re.compile(r"\$\{\{\s*(?P<expr>[^{}]*?)\s*\}\}")
_INPUT = re.compile(r"^inputs\.(?P<name>[a-z][a-z0-9_]*)$")
_OUTPUT = re.compile(r"^steps\.(?P<step>[a-z][a-z0-9_-]*)\.output$")


@dataclass(frozen=True)
class References:
    inputs: frozenset[str]
    steps: frozenset[str]
    malformed: tuple[str, ...]  # `${{ … }}` that is neither form, as written


def references(template: str) -> References:
    inputs: set[str] = set()
    steps: set[str] = set()
    malformed: list[str] = []
    for match in _REFERENCE.finditer(template):
        expr = match.group("expr")
        if found := _INPUT.match(expr):
            inputs.add(found.group("name"))
        elif found := _OUTPUT.match(expr):
            steps.add(found.group("step"))
        else:
            malformed.append(match.group(0))
    # An opening `${{` with no `}}` is no reference at all to the pattern above, and would be sent as written.
    for rest in _REFERENCE.sub("", template).split("${{")[1:]:
        malformed.append("${{" + rest.split("\n", 1)[0][:40])
    return References(frozenset(inputs), frozenset(steps), tuple(malformed))


def cap_output(output: str, cap: int = OUTPUT_CAP) -> str:
    """An output as passed on to later steps: at most `cap` characters, saying what was cut."""
    if len(output) <= cap:
        return output
    note = f"\n… (cut: {len(output) - cap:,} more characters; the whole output is in the run's record)"
    return output[:cap] + note


def render(template: str, inputs: Mapping[str, str | int | float | bool], outputs: Mapping[str, str | None]) -> str:
    """The text with every reference replaced; a reference that cannot be filled raises KeyError naming it.

    Validation refuses such templates before a run starts, so a KeyError here is a bug, not bad input.
    """

    def fill(match: re.Match[str]) -> str:
        expr = match.group("expr")
        if found := _INPUT.match(expr):
            value = inputs[found.group("name")]
            return ("true" if value else "false") if isinstance(value, bool) else str(value)
        if found := _OUTPUT.match(expr):
            output = outputs[found.group("step")]
            return cap_output(output) if output else "(no output)"
        raise KeyError(match.group(0))

    return _REFERENCE.sub(fill, template)
