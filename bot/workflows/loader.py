"""YAML -> WorkflowDefinition, every problem as `file:line: key: what; fix`; the catalog of the workflows dir.

PyYAML's composed nodes keep each key's line, so a pydantic error's `loc` is pointed back at the line a
person edits. PyYAML silently keeps the last of two equal keys; the node tree shows both, so they are refused.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from bot.config import ClusterConfig
from bot.errors import InvalidInput, InvalidWorkflow
from bot.workflows.definition import AgentStep, ApprovalSpec, ApprovalStep, InputSpec, WorkflowDefinition

Loc = tuple[str | int, ...]
SUFFIXES = (".yaml", ".yml")
_STEP_MODELS: dict[str, type[BaseModel]] = {"agent": AgentStep, "approval": ApprovalStep}
_HIDDEN_FIELDS = {"kind"}  # the discriminator: set by the key a step has, never written

# What to write instead, for a key that is missing.
_REQUIRED_FIX = {
    "name": "name the workflow, e.g. name: m2-mirror-study",
    "description": "say in one line what the workflow does",
    "steps": "list the steps, e.g. steps: [{id: mesh, agent: nx-expert, message: …, timeout: 2h}]",
    "id": "give the step an id, e.g. id: mesh",
    "agent": "name the agent that does it, e.g. agent: nx-expert (or make it an approval step with approval:)",
    "message": "write what the agent should do, e.g. message: Mesh the M2 mirror",
    "timeout": "every agent step needs one, e.g. timeout: 2h",
    "prompt": "write what the approvers decide, e.g. prompt: Approve the thermal results?",
    "approvers": "name who may approve, e.g. approvers: [role:admin]",
    "approval": "describe the gate, e.g. approval: {prompt: …, approvers: [role:admin]}",
}
_TYPE_FIX = {
    "string_type": ("text", "write it as text (quote it if YAML reads it as something else)"),
    "int_type": ("a whole number", "write e.g. 3"),
    "int_parsing": ("a whole number", "write e.g. 3"),
    "int_from_float": ("a whole number", "write e.g. 3"),
    "bool_type": ("true or false", "write true or false"),
    "bool_parsing": ("true or false", "write true or false"),
    "list_type": ("a list", "write e.g. [mesh, material]"),
    "dict_type": ("a mapping", "write key: value lines under it"),
    "model_type": ("a mapping", "write key: value lines under it"),
    "model_attributes_type": ("a mapping", "write key: value lines under it"),
}


@dataclass(frozen=True)
class LoadedWorkflow:
    """A definition with where it came from, so later checks (bot.workflows.plan) can name the line too."""

    definition: WorkflowDefinition
    file: str
    lines: Mapping[Loc, int] = field(default_factory=dict)

    def where(self, loc: Loc) -> str:
        return locate(self.file, self.lines, loc)


def key_path(loc: Loc) -> str:
    """('steps', 1, 'timeout') -> steps[1].timeout"""
    text = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    return text or "(top level)"


def locate(file: str | None, lines: Mapping[Loc, int], loc: Loc) -> str:
    """`file:line: key` for a location; a key that is not written (missing) takes its parent's line."""
    prefix = loc
    while prefix and prefix not in lines:
        prefix = prefix[:-1]
    line = lines.get(prefix, 1)
    return f"{file}:{line}: {key_path(loc)}" if file else key_path(loc)


# --- one file -----------------------------------------------------------------------------------


def load_workflow_file(path: Path, shown: str | None = None) -> LoadedWorkflow:
    """Read and validate one workflow file; InvalidWorkflow lists every problem."""
    file = shown or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidWorkflow([f"{file}: (file): not found; give the path of a workflow .yaml file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidWorkflow([f"{file}: (file): cannot be read ({exc}); it must be a UTF-8 YAML file"]) from None
    return load_workflow_text(text, file)


def load_workflow_text(text: str, file: str) -> LoadedWorkflow:
    raw, lines = _parse(text, file)
    try:
        definition = WorkflowDefinition.model_validate(raw)
    except ValidationError as exc:
        raise InvalidWorkflow([f"{locate(file, lines, loc)}: {what}" for loc, what in _describe(exc)]) from None
    return LoadedWorkflow(definition, file, lines)


def _parse(text: str, file: str) -> tuple[Any, dict[Loc, int]]:
    """The YAML's data and the line of every key and list item; syntax errors and duplicate keys refused."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise InvalidWorkflow([f"{file}:1: (top level): the file is empty; {_TOP_FIX}"])
        if not isinstance(node, yaml.MappingNode):
            got = "a list" if isinstance(node, yaml.SequenceNode) else "a single value"
            raise InvalidWorkflow([f"{file}:{node.start_mark.line + 1}: (top level): got {got}; {_TOP_FIX}"])
        lines: dict[Loc, int] = {(): node.start_mark.line + 1}
        duplicates: list[str] = []
        _walk(node, (), lines, duplicates, file, set())
        if duplicates:
            raise InvalidWorkflow(duplicates)
        return loader.construct_document(node), lines
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        what = " ".join(part for part in (exc.context, exc.problem) if part)
        raise InvalidWorkflow(
            [f"{file}:{line}: (syntax): {what}; the file must be valid YAML (check the indentation and quoting there)"]
        ) from None
    except yaml.YAMLError as exc:
        raise InvalidWorkflow([f"{file}:1: (syntax): {exc}; the file must be valid YAML"]) from None
    finally:
        loader.dispose()


_TOP_FIX = "a workflow file is a mapping: name:, description:, inputs:, steps: (see docs/workflows.md)"


def _walk(
    node: yaml.Node, loc: Loc, lines: dict[Loc, int], duplicates: list[str], file: str, seen_nodes: set[int]
) -> None:
    if id(node) in seen_nodes:  # an alias (*name) of a node already walked: its lines are known, and walking
        return  # every alias again could take exponential time ("billion laughs")
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen and key != "<<":
                duplicates.append(
                    f"{file}:{line}: {key_path((*loc, key))}: written twice (also line {seen[key]}); "
                    "keep one (YAML would silently use the last)"
                )
            seen.setdefault(key, line)
            lines.setdefault((*loc, key), line)
            _walk(value_node, (*loc, key), lines, duplicates, file, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines.setdefault((*loc, index), item.start_mark.line + 1)
            _walk(item, (*loc, index), lines, duplicates, file, seen_nodes)


# --- pydantic errors, said for a workflow's author ------------------------------------------------


def _describe(exc: ValidationError) -> list[tuple[Loc, str]]:
    described: list[tuple[Loc, str]] = []
    for error in exc.errors():
        raw_loc = tuple(part for part in error["loc"] if part != "[key]")
        loc, model = _strip_tag(raw_loc)
        described.append((loc, _explain(error, loc, model)))
    return described


def _strip_tag(loc: Loc) -> tuple[Loc, type[BaseModel]]:
    """('steps', 0, 'agent', 'timeout') -> ('steps', 0, 'timeout'), and the model the last key belongs to."""
    model: type[BaseModel] = WorkflowDefinition
    if len(loc) >= 3 and loc[0] == "steps" and isinstance(loc[1], int) and loc[2] in _STEP_MODELS:
        model = _STEP_MODELS[str(loc[2])]
        loc = (*loc[:2], *loc[3:])
        if len(loc) > 3 and loc[2] == "approval":
            model = ApprovalSpec
    elif len(loc) >= 3 and loc[0] == "inputs":
        model = InputSpec
    return loc, model


def _explain(error: Any, loc: Loc, model: type[BaseModel]) -> str:
    kind = error["type"]
    key = loc[-1] if loc else ""
    value = error.get("input")
    if kind == "missing":
        return f"required; {_REQUIRED_FIX.get(str(key), 'add it')}"
    if kind == "extra_forbidden":
        valid = [name for name in model.model_fields if name not in _HIDDEN_FIELDS]
        close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}? " if close else ""
        return f"unknown key {key!r}; {hint}valid here: {', '.join(valid)}"
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        return f"{value!r} is not valid here; write {expected.replace(chr(39), '')}"
    if kind == "greater_than" and key in ("timeout", "expires_in"):
        return f"{value!r} is no time at all; write a duration such as 30m, 2h or 1h30m"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"{value!r} is out of range; {error['msg'].lower()}"
    if kind in ("too_short", "too_long"):
        return f"{error['msg'].lower()}"
    if kind in _TYPE_FIX:
        what, fix = _TYPE_FIX[kind]
        return f"{value!r} is not {what}; {fix}"
    message = str(error["msg"]).removeprefix("Value error, ")
    return message if ";" in message else f"{message}; see docs/workflows.md"


# --- the catalog ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CatalogEntry:
    """One file of the workflows dir: its workflow, or why it is broken (a broken file hides nothing else)."""

    file: str
    name: str | None  # None when not even the name could be read
    workflow: LoadedWorkflow | None
    problems: tuple[str, ...] = ()

    @property
    def broken(self) -> bool:
        return bool(self.problems)

    def to_dict(self) -> dict[str, Any]:
        definition = self.workflow.definition if self.workflow else None
        return {
            "name": self.name,
            "description": definition.description if definition else None,
            "steps": len(definition.steps) if definition else None,
            "file": self.file,
            "broken": self.broken,
            "problems": list(self.problems),
        }


class WorkflowCatalog:
    """The definitions in one directory, read afresh on every call (editing a file needs no restart)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def from_config(cls, config: ClusterConfig) -> WorkflowCatalog:
        return cls(config.workflows.path)

    def files(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir() if p.suffix in SUFFIXES and p.is_file())

    def entries(self) -> list[CatalogEntry]:
        entries = [self._entry(path) for path in self.files()]
        by_name: dict[str, list[int]] = {}
        for index, entry in enumerate(entries):
            if entry.name is not None:
                by_name.setdefault(entry.name, []).append(index)
        for name, indexes in by_name.items():
            if len(indexes) < 2:
                continue
            files = [entries[i].file for i in indexes]
            for i in indexes:
                others = ", ".join(f for f in files if f != entries[i].file)
                entry = entries[i]
                where = entry.workflow.where(("name",)) if entry.workflow else f"{entry.file}:1: name"
                problem = f"{where}: {name!r} is also the name of {others}; every workflow needs its own name"
                entries[i] = CatalogEntry(entry.file, name, entry.workflow, (*entry.problems, problem))
        return entries

    def _entry(self, path: Path) -> CatalogEntry:
        file = str(path)
        try:
            workflow = load_workflow_file(path, file)
        except InvalidWorkflow as exc:
            return CatalogEntry(file, _name_of_broken(path), None, tuple(exc.problems))
        return CatalogEntry(file, workflow.definition.name, workflow)

    def names(self) -> list[str]:
        return sorted({entry.name for entry in self.entries() if entry.name is not None})

    def get(self, name: str) -> LoadedWorkflow:
        """The workflow called `name`; InvalidInput listing the names, or InvalidWorkflow saying why it is broken."""
        entries = self.entries()
        found = [entry for entry in entries if entry.name == name]
        if not found:
            names = sorted({entry.name for entry in entries if entry.name is not None})
            if not names:
                raise InvalidInput(
                    f"no workflow called {name!r}: {self.directory} has no workflow files "
                    "([workflows] dir in the cluster file says where they are)"
                )
            close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise InvalidInput(f"no workflow called {name!r}.{hint} Workflows: {', '.join(names)}")
        problems = [problem for entry in found for problem in entry.problems]
        if problems:
            raise InvalidWorkflow(problems)
        workflow = found[0].workflow
        assert workflow is not None  # an entry without problems has its workflow
        return workflow


def _name_of_broken(path: Path) -> str | None:
    """A broken file's `name:` if it can be read at all, so asking for it by name shows why it is broken."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) and name else None
