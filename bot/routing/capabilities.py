"""Capabilities: the words an agent declares in `cluster.toml` and a delegation asks for (`--needs meshing`).

One spelling for everyone: lowercase words joined by '-' (`"Materials data"` -> `materials-data`), so what a
person types and what the config says compare equal. Imports nothing of the config, which validates with it.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

CAPABILITY_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_SEPARATORS = re.compile(r"[\s_]+")


def normalize(text: str) -> str:
    """`" Materials_Data "` -> `materials-data` (not validated)."""
    return re.sub(r"-{2,}", "-", _SEPARATORS.sub("-", text.strip().lower())).strip("-")


def problem(text: str) -> str | None:
    """Why `text` (already normalized) is not a capability, or None when it is one."""
    if not text:
        return "an empty capability; write a word such as 'meshing'"
    if len(text) > 40:
        return f"{text[:40]!r}… is too long for a capability (at most 40 characters)"
    if not CAPABILITY_RE.fullmatch(text):
        return f"{text!r} is not a capability; use lowercase letters, digits and '-', e.g. 'materials-data'"
    return None


def parse_needs(values: str | Iterable[str] | None) -> tuple[str, ...]:
    """What a front end was given (`"meshing, fea"`, `["Meshing"]`) as normalized capabilities, in order, once each.

    Raises ValueError with the reason for a malformed one; knowing whether any agent declares it is the service's.
    """
    if values is None:
        return ()
    items = [values] if isinstance(values, str) else list(values)
    needs: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"{item!r} is not a capability; write words such as 'meshing'")
        for part in item.split(","):
            if not part.strip():
                continue
            word = normalize(part)
            why = problem(word)
            if why is not None:
                raise ValueError(why)
            if word not in needs:
                needs.append(word)
    return tuple(needs)


def closest(word: str, known: Iterable[str]) -> str | None:
    """The declared capability a mistyped one most likely meant."""
    close = difflib.get_close_matches(word, sorted(set(known)), n=1, cutoff=0.6)
    return close[0] if close else None
