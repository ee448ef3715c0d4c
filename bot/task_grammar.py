"""The forgiving grammar agents use to update the board in #task-board: it reads what they naturally write.

    T-42 done: meshed the M2 mirror          T-42 blocked: waiting for the NX licence
    Starting T-42 now                        ✅ **T-42** — Mesh the M2 mirror: complete
    T-42 unblocked: licence arrived          Finished T-41 and T-42
    T-42 assign <@id> / @auditor             new task: Review thermal analysis @auditor !high due:+3d

Each line of a post is read on its own (one update per line). Case, markdown, bullets, emoji, invisible
characters and ':' '-' '—' as separators are tolerated; the id may be written T-42, t42, #T-42, `T-42`,
Task T-42. A status is a word agents use ("done", "finished", "working on", "waiting on", "ready for
review", …) before or after the id. A line that starts with a task id but says nothing the grammar knows
gets a one-line hint instead of silence; a line that merely mentions an id mid-sentence is talk.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from bot.errors import AtomizerError
from bot.taskboard import NOTE_MAX

if TYPE_CHECKING:
    from bot.authz import Requester
    from bot.taskboard import TaskBoard

Action = Literal["move", "assign", "create"]

# --- what a line looks like once its dressing is off -------------------------------------------------

_SPACES = re.compile(r"[^\S\n]+")
_QUOTE = re.compile(r"^\s*>{1,3}\s?")  # a blockquote (`>` or `>>>`), never the `>` closing a mention
_HEADING = re.compile(r"^\s*#{1,6}\s+")
_MARKUP = re.compile(r"\*+|`+|~~|\|\|+|(?<![\w])__+|__+(?![\w])|(?<![\w])_(?=\S)|(?<=\S)_(?![\w])")
_BULLET = re.compile(r"^\s*(?:[-*+•·▪▫◦‣⁃]|\d{1,3}[.)]|\[[ xX✓✔]?\])\s+")
_SHORTCODE = re.compile(r":[a-z0-9_+\-]{2,40}:", re.I)
# Emoji, dingbats, arrows and other pictographs: decoration before (or after) an update.
_SYMBOL = r"\u2190-\u21ff\u2300-\u23ff\u2460-\u24ff\u25a0-\u27bf\u2900-\u297f\u2b00-\u2bff\U0001F000-\U0001FAFF"
_LEAD = re.compile(rf"^[\s\-–—•·:;,.>|{_SYMBOL}]+")
_TRAIL = re.compile(rf"[\s.!,;:\-–—{_SYMBOL}]+$")
_ONLY_DECORATION = re.compile(rf"^[\W_{_SYMBOL}]*$")
# Status emoji: a line like "✅ T-12" or "T-12: ✅" says the status without a word.
_EMOJI_STATUS = {
    "✅": "done", "☑": "done", "✔": "done", "✓": "done", "🎉": "done", "🏁": "done",
    "🚧": "in_progress", "🔄": "in_progress", "⏳": "in_progress", "🏗": "in_progress", "🔨": "in_progress",
    "🛠": "in_progress", "▶": "in_progress", "🏃": "in_progress",
    "❌": "blocked", "🛑": "blocked", "⛔": "blocked", "🚫": "blocked", "🔴": "blocked", "✋": "blocked",
    "👀": "review", "🔍": "review", "🔎": "review",
}  # fmt: skip
_SHORTCODES = {
    ":white_check_mark:": "✅", ":heavy_check_mark:": "✔", ":ballot_box_with_check:": "☑", ":tada:": "🎉",
    ":construction:": "🚧", ":arrows_counterclockwise:": "🔄", ":hourglass_flowing_sand:": "⏳", ":x:": "❌",
    ":no_entry:": "⛔", ":stop_sign:": "🛑", ":eyes:": "👀", ":mag:": "🔍",
}  # fmt: skip
_UPDATE_PREFIX = re.compile(
    r"^(?:(?:quick|status|progress|task|board)\s+)?(?:update|status|fyi|note)"
    r"(?:\s+(?:on|for)(?=\s+(?:task\s*)?#?t\s*[-‐‑‒–—_]?\s*\d))?\s*(?:[:\-–—]\s*|\s+(?=\S))",
    re.I,
)

# --- task ids ----------------------------------------------------------------------------------------

_DASH = r"[-‐‑‒–—_]"
# Each piece matches one way only (no `\s*x?\s*`): a list of ids never backtracks exponentially.
_ID_START = rf"(?:(?:task\s*(?:#\s*)?|#\s*)?t\s*(?:{_DASH}\s*)?|task\s*(?:#\s*)?)"
_ONE_ID = rf"{_ID_START}(\d{{1,9}})(?!\d)"
_ID = rf"[\[(]?{_ONE_ID}[\])]?"
_IDS = rf"{_ID}(?:\s*(?:,|&|\+|/|\band\b)\s*{_ID})*"
_TASK_REF = re.compile(rf"(?<![\w-]){_ONE_ID}\b", re.I)
_SPLIT = re.compile(rf"\s*(?:[;,|]|\s(?:and|&|then|\+)\s)\s*(?={_ID_START}\d)", re.I)
_LEADING_ID = re.compile(rf"^{_ID}(?![\w-])", re.I)
_ID_LIST = re.compile(rf"^{_IDS}(?![\w-])", re.I)

# --- statuses ----------------------------------------------------------------------------------------

# Phrases that name a status, longest first when joined. Prepositions after them ("blocked by", "stuck
# on") stay in the note: "by T-4" reads right as the reason in "T-5 blocked: by T-4".
_PHRASES: dict[str, tuple[str, ...]] = {
    "done": (
        r"all\s+done", r"done", r"finished", r"complete", r"completed", r"closed", r"resolved", r"fixed",
        r"shipped", r"delivered", r"merged", r"wrapped\s+up", r"accomplished", r"landed",
    ),
    "in_progress": (
        r"in[\s_\-]?progress", r"started", r"starting", r"start", r"working\s+on\s+it", r"working", r"wip",
        r"under\s*way", r"ongoing", r"on\s+it", r"picked\s+up", r"picking\s+up", r"resumed", r"resuming",
        r"resume", r"no\s+longer\s+blocked", r"unblocked", r"unblocking", r"unblock", r"continuing",
        r"doing", r"begun", r"kicked\s+off", r"in\s+flight", r"active", r"back\s+in\s+progress",
    ),
    "blocked": (
        r"blocked", r"blocking", r"block", r"stuck", r"on\s+hold", r"failed", r"failing",
    ),
    "review": (
        r"(?:ready|up|submitted|sent|done|good)\s+for\s+(?:a\s+)?review", r"ready\s+to\s+review",
        r"needs?\s+(?:a\s+)?review", r"awaiting\s+review", r"in\s+review", r"under\s+review", r"for\s+review",
        r"in\s+qa", r"review",
    ),
    "todo": (r"todo", r"to[\s\-]do", r"reopen", r"reopened", r"back\s+to\s+todo", r"not\s+started", r"backlog"),
    "cancelled": (
        r"cancell?ed", r"cancel", r"dropped", r"abandoned", r"won'?t\s+do", r"wont\s*fix", r"obsolete",
        r"no\s+longer\s+needed", r"not\s+needed", r"scrapped",
    ),
}  # fmt: skip
# "waiting on X" is a status whose words are the reason: they stay in the note.
_WAITING = r"(?:waiting|waits|awaiting)\s+(?:on|for)\b"


def _alternation(phrases: dict[str, tuple[str, ...]]) -> tuple[str, dict[str, str]]:
    groups, names = [], {}
    for index, (status, words) in enumerate(phrases.items()):
        name = f"s{index}"
        names[name] = status
        groups.append(f"(?P<{name}>{'|'.join(sorted(words, key=len, reverse=True))})")
    return "|".join(groups), names


_STATUS_ALT, _STATUS_NAMES = _alternation(_PHRASES)
_END = r"(?![\w'’-])"
# Words between the id and the status: "T-1 is now done", "T-1 → review", "T-1 marked as done".
_FILLER = (
    r"(?:(?:(?:is|are|was|were|has\s+been|have\s+been|been|now|just|also|finally|officially|got|gets|marked|"
    r"moved|moving|set|changed|status|state|as|to|into|back)\b|->|=>|→|⇒|➡|>)\s*(?::\s*)?)*"
)
_TITLE_SEPARATORS = 6  # "T-1 – a title: done": a title has few separators; past these it is prose
_SEP = r"(?:\s*[:\-–—|;,]\s*|\s*[.!]\s+|\s+|$)"
# "T-6 complete and ready for review": the later status is the one that holds.
_THEN = re.compile(r"^\s*,?\s*(?:and|but|&|so)\s+(?:(?:it\s+is|it's|is|now)\s+)*", re.I)
_MOVE_AFTER_ID = re.compile(rf"^\s*[:\-–—|]?\s*{_FILLER}(?:(?P<wait>{_WAITING})|(?:{_STATUS_ALT}){_END})", re.I)

# Verb first: "Starting T-1 now", "Done with T-4", "Picking up T-6", "Marking T-1 as done".
_SUBJECT = (
    r"(?:(?:i|we)(?:\s*['’](?:ve|m|re)|\s+have|\s+am|\s+are)?\s+|(?:just|now|also|finally|ok(?:ay)?|"
    r"alright|update)[,:]?\s+)*"
)
_VERBS: dict[str, tuple[str, ...]] = {
    "done": (
        r"done\s+with", r"finished(?:\s+(?:up|off|work\s+on))?", r"finishing\s+up", r"completed?", r"closed",
        r"closing", r"close", r"resolved", r"fixed", r"shipped", r"delivered", r"wrapped\s+up", r"wrapping\s+up",
        r"all\s+done\s+with", r"done",
    ),
    "in_progress": (
        r"start(?:ing|ed)?(?:\s+(?:work|working))?(?:\s+on)?", r"working\s+on", r"work\s+on",
        r"pick(?:ing|ed)?\s+up", r"resum(?:e|ing|ed)(?:\s+work\s+on)?", r"unblock(?:ing|ed)?",
        r"continu(?:e|ing|ed)(?:\s+(?:on|with))?", r"tackling", r"taking(?:\s+on)?",
        r"beginning(?:\s+work\s+on)?", r"began(?:\s+work\s+on)?", r"kick(?:ing|ed)\s+off",
        r"in\s+progress(?:\s+on)?", r"diving\s+into", r"looking\s+into",
    ),
    "blocked": (
        r"block(?:ing|ed)?(?:\s+on)?", r"stuck\s+on", r"stuck\s+with", r"paus(?:e|ing|ed)", r"failed(?:\s+on)?",
        r"on\s+hold", r"holding",
    ),
    "review": (
        r"(?:submitting|submitted|sending|sent|handing\s+in|handed\s+in)", r"ready\s+for\s+review(?:\s*[:\-–—])?",
        r"review(?:ing)?\s+needed(?:\s+(?:on|for))?", r"please\s+review", r"for\s+review(?:\s*[:\-–—])?",
        r"needs?\s+review(?:\s*[:\-–—])?", r"in\s+review(?:\s*[:\-–—])?",
    ),
    "todo": (r"reopen(?:ing|ed)?", r"re-open(?:ing|ed)?", r"back\s+to\s+todo(?:\s*[:\-–—])?"),
    "cancelled": (
        r"cancel(?:l?ing|l?ed)?", r"drop(?:ping|ped)?", r"abandon(?:ing|ed)?", r"scrap(?:ping|ped)?",
    ),
}  # fmt: skip
_VERB_ALT, _VERB_NAMES = _alternation(_VERBS)
_SPEAKER = re.compile(r"^\s*[:\-–—|]?\s*(?:i|we)(?:\s*['’](?:ve|m|re)|\s+have|\s+had|\s+am|\s+are)?\s+(?=\w)", re.I)
_VERB_FIRST = re.compile(
    rf"^{_SUBJECT}(?:(?:{_VERB_ALT})\s*[:\-–—]?\s*(?:the\s+)?(?:task\s+)?)(?P<ids>{_IDS})(?![\w-])", re.I
)
# "Marking T-1 as done", "Moving T-1 to review", "Setting T-1 to blocked: no licence".
_SET_FIRST = re.compile(
    rf"^{_SUBJECT}(?:mark(?:s|ing|ed)?|mov(?:e|es|ing|ed)|set(?:s|ting)?|put(?:s|ting)?|chang(?:e|es|ing|ed)|"
    rf"flip(?:s|ping|ped)?|switch(?:es|ing|ed)?|bump(?:s|ing|ed)?)\s+(?P<ids>{_IDS})"
    rf"\s*(?:as|to|into|in|back\s+to)?\s*[:\-–—]?\s*(?:(?P<wait>{_WAITING})|(?:{_STATUS_ALT}){_END})",
    re.I,
)
# "Done: T-1", "Blocked - T-5: no licence", "In progress: T-3": a status heading, then the ids.
_STATUS_FIRST = re.compile(rf"^(?:{_STATUS_ALT})\s*[:\-–—]\s*(?P<ids>{_IDS})(?![\w-])", re.I)
_REVIEW_TAIL = re.compile(r"^\s*(?:for|to)\s+(?:a\s+)?review\b", re.I)
_TIME_WORDS = re.compile(r"^(?:(?:right\s+)?now|today|again|as\s+well|too|this\s+morning)\b[\s,]*", re.I)

# --- assignment and creation -------------------------------------------------------------------------

_WHO = r"<@!?\d{1,25}>|<@&\d{1,25}>|<#\d{1,25}>|@?[\w][\w.\-]*"
_ASSIGN_AFTER_ID = re.compile(
    rf"^\s*[:\-–—]?\s*(?:(?:is|has\s+been|was|now|just)\s+)*(?:(?:re)?assign(?:ed|ing)?(?:\s+to)?|->|=>|→|➡|"
    rf"to|for|owner\s*[:=]?|assignee\s*[:=]?|hand(?:ed|ing)?\s+(?:off\s+|over\s+)?to|goes\s+to|over\s+to)\s*"
    rf"[:\-–—]?\s*(?P<who>{_WHO})\s*$",
    re.I,
)
_ASSIGN_FIRST = re.compile(
    rf"^{_SUBJECT}(?:(?:re)?assign(?:s|ed|ing)?|hand(?:s|ed|ing)?(?:\s+off|\s+over)?|giv(?:e|es|ing)|"
    rf"pass(?:es|ed|ing)?)\s+(?P<ids>{_IDS})\s+(?:over\s+)?to\s+(?P<who>{_WHO})\s*$",
    re.I,
)
_UNASSIGN = re.compile(
    rf"^(?:(?P<ids>{_IDS})\s*[:\-–—]?\s*unassign(?:ed)?|unassign(?:ing)?\s+(?P<ids2>{_IDS}))\s*$", re.I
)
_CREATE = re.compile(
    r"^(?:please\s+)?(?:"
    r"(?:new|create|add|open|make|log|file|raise)(?:\s+an?)?(?:\s+new)?\s+task(?:\s+for\s+(?P<for>"
    r"<@!?\d{1,25}>|@[\w.\-]+))?\s*(?:[:\-–—]\s*|\s+(?=\S)|$)"
    r"|(?:new|task|todo|to[\s\-]?do|add|create)\s*[:\-–—]\s*"
    r")(?P<rest>.*)$",
    re.I,
)
_PRIORITY_WORD = r"low|normal|medium|med|high|urgent|critical|p[0-3]"
_PRIORITY = re.compile(
    rf"(?:^|(?<=\s)|(?<=[(\[]))(?:!(?P<a>{_PRIORITY_WORD})\b|prio(?:rity)?\s*[:=]?\s*(?P<b>{_PRIORITY_WORD})\b|"
    rf"(?P<c>low|high|urgent|critical)[\s\-]priority\b)",
    re.I,
)
_PRIORITY_ALIASES = {"critical": "urgent", "p0": "urgent", "p1": "high", "p2": "normal", "p3": "low", "med": "normal"}
_DUE = re.compile(
    r"(?:^|(?<=\s)|(?<=[(\[]))(?:due|deadline|by)(?:\s+(?:by|on|date))?\s*[:=]?\s*"
    r"(?:in\s+(?P<n>\d{1,3})\s*(?P<unit>days?|weeks?|d|w)\b|(?P<date>\d{4}-\d{2}-\d{2}|today|tomorrow|\+\d{1,3}\s*[dw]\b|"
    r"(?:mon|tue|wed|thu|fri|sat|sun)[a-z]*\b))",
    re.I,
)
_DUE_LOOSE = re.compile(r"(?:^|(?<=\s)|(?<=[(\[]))due\s*[:=]?\s*(?P<date>[^\s)\]]+)", re.I)
_MENTION = re.compile(
    r"(?:(?:^|(?<=\s))(?:(?:(?:re)?assign(?:ed)?(?:\s+to)?\s*[:=]?|assignee\s*[:=]?|owner\s*[:=]?|for|to|->|→|cc)\s*)?)"
    r"(?P<who><@!?\d{1,25}>|(?<![\w@])@(?!everyone\b|here\b)[\w][\w.\-]*)",
    re.I,
)

HINT = (
    "I couldn't read that as a board update. Write e.g. `T-42 done: meshed the mirror`, "
    "`T-42 blocked: waiting for the licence`, `T-42 in progress` or `new task: title @agent !high`."
)


@dataclass(frozen=True)
class BoardCommand:
    """One update read from a #task-board message."""

    action: Action
    task_id: int | None = None
    status: str | None = None
    note: str | None = None
    assignee: str | None = None
    title: str | None = None
    priority: str | None = None
    due: str | None = None


@dataclass(frozen=True)
class NotUnderstood:
    """The message was meant for the board but could not be read; `hint` says how to write it."""

    hint: str


Parsed = BoardCommand | NotUnderstood


def _visible(text: str) -> str:
    """Invisible and format characters out (zero-width spaces, BOM, bidi marks), odd spaces made spaces."""
    out = []
    for char in text:
        category = unicodedata.category(char)
        if category == "Cf" or char in "\ufe0e\ufe0f":
            continue
        out.append(" " if category == "Zs" or char == "\t" else char)
    return "".join(out)


def tidy(text: str) -> str:
    """One line without its dressing: quote marks, headings, markdown, bullets, leading emoji."""
    line = _visible(text)
    line = _SHORTCODE.sub(lambda m: _SHORTCODES.get(m.group(0).lower(), " "), line)
    line = _QUOTE.sub("", line)
    line = _HEADING.sub("", line)
    line = _MARKUP.sub("", line)
    for _ in range(3):  # "- [x] ✅ T-1", "> 1. T-1"
        stripped = _BULLET.sub("", _LEAD.sub("", line))
        if stripped == line:
            break
        line = stripped
    line = _UPDATE_PREFIX.sub("", line)
    line = _LEAD.sub("", line)
    return _TRAIL.sub("", _SPACES.sub(" ", line).strip())


def _lead_status(text: str) -> str | None:
    """The status a line's leading emoji says ("✅ T-12"), if any."""
    line = _SHORTCODE.sub(lambda m: _SHORTCODES.get(m.group(0).lower(), " "), _visible(text))
    line = _MARKUP.sub("", _QUOTE.sub("", line))
    line = _BULLET.sub("", line.lstrip(" -•·*"))
    for char in line.strip()[:4]:
        if char in _EMOJI_STATUS:
            return _EMOJI_STATUS[char]
        if char.isalnum() or char == "#":
            return None
    return None


def looks_meant_for_board(text: str) -> bool:
    return bool(parse_board_post(text))


def parse_board_message(text: str) -> BoardCommand | NotUnderstood | None:
    """The post's first update (or, failing that, its first hint), or None when it is just talk."""
    parsed = parse_board_post(text)
    return next((p for p in parsed if isinstance(p, BoardCommand)), parsed[0] if parsed else None)


def parse_board_post(text: str) -> list[Parsed]:
    """Every update in a post, one line at a time; hints for lines meant for the board but unreadable."""
    found: list[Parsed] = []
    for raw in (text or "").splitlines():
        found.extend(_parse_line(raw))
    return found


def _parse_line(raw: str) -> list[Parsed]:
    cleaned = tidy(raw)
    if not cleaned:
        return []
    parts = _SPLIT.split(cleaned)
    if len(parts) > 1:  # "T-3 done; T-4 started": two updates, if each part is one
        each = [_parse_clause(part, part) for part in parts]
        if all(found and all(isinstance(p, BoardCommand) for p in found) for found in each):
            return [command for found in each for command in found]
    return _parse_clause(cleaned, raw)


def _parse_clause(cleaned: str, raw: str) -> list[Parsed]:
    for reader in (_read_assign, _read_move_after_id, _read_verb_first, _read_create, _read_emoji_status):
        result = reader(cleaned, raw)
        if result is not None:
            return result
    ref = _LEADING_ID.match(cleaned)
    if ref is not None:
        number = ref.group(1)
        return [
            NotUnderstood(
                f"I couldn't tell what to do with T-{number}. Write `T-{number} done: note`, "
                f"`T-{number} blocked: reason`, `T-{number} in progress`, `T-{number} review` or "
                f"`T-{number} assign @agent`."
            )
        ]
    return []


def _ids(text: str) -> list[int]:
    return list(dict.fromkeys(int(m.group(1)) for m in _TASK_REF.finditer(text)))


def _status_of(match: re.Match[str], names: dict[str, str]) -> str:
    if match.groupdict().get("wait"):
        return "blocked"
    return next(status for name, status in names.items() if match.group(name))


def _note(text: str, *, verb_first: bool = False) -> str | None:
    note = text.strip()
    note = re.sub(r"^[\s:\-–—|;,.!]+", "", note)
    if verb_first:
        note = _TIME_WORDS.sub("", note)
        note = re.sub(r"^[\s:\-–—|;,.]+", "", note)
    note = _TRAIL.sub("", note)
    if note.startswith("(") and note.endswith(")") and note.count("(") == 1:
        note = note[1:-1].strip()  # "T-4 in progress (60%)"
    if not note or _ONLY_DECORATION.match(note):
        return None
    return fit_note(note)


def fit_note(note: str) -> str:
    """A note as long as the board keeps: a longer one (Discord allows 2,000) is cut, saying so."""
    note = " ".join(note.split())
    keep = NOTE_MAX
    while len(note) > NOTE_MAX:
        kept = note[:keep].rstrip()
        cut = f"{kept}… (cut: {len(note) - len(kept):,} more characters)"
        if len(cut) <= NOTE_MAX:
            return cut
        keep -= len(cut) - NOTE_MAX
    return note


def _moves(ids: list[int], status: str, note: str | None) -> list[Parsed]:
    if status == "blocked" and not note:
        return [NotUnderstood(f"Say why T-{ids[0]} is blocked: `T-{ids[0]} blocked: <reason>`.")]
    return [BoardCommand("move", task_id=number, status=status, note=note) for number in ids]


def _read_move_after_id(cleaned: str, raw: str) -> list[Parsed] | None:
    head = _ID_LIST.match(cleaned)
    if head is None:
        return None
    ids, rest = _ids(head.group(0)), cleaned[head.end() :]
    candidates = [rest]
    # "T-1 (Mesh the mirror): done", "T-1 – Mesh the M2 mirror — ✅ Done": a title, then the status.
    separators = re.finditer(r"\)\s*|\s*[:–—|]\s*|\s+-\s+", rest)
    candidates += [rest[m.end() :] for m in separators if m.start() > 0][:_TITLE_SEPARATORS]
    for candidate in candidates:
        lead = _lead_status(candidate)
        body = _LEAD.sub("", candidate) if lead else candidate
        # "T-7 — I've finished the CTE lookup", "Update on T-7: we have completed it": the speaker first.
        body = _SPEAKER.sub("", body, count=1) if _SPEAKER.match(body) else body
        match = _MOVE_AFTER_ID.match(body)
        if match is not None:
            status = _status_of(match, _STATUS_NAMES)
            after = body[match.end() :]
            if match.group("wait"):  # "waiting on the licence" is itself the reason
                note = _note(match.group("wait") + after)
            elif status == "in_progress" and _REVIEW_TAIL.match(after):
                continue  # "T-1 ... ready for review" is read by the review phrases
            else:
                if not re.match(_SEP, after):
                    continue
                then = _THEN.match(after)
                later = _MOVE_AFTER_ID.match(after[then.end() :]) if then else None
                if then and later and not later.group("wait") and re.match(_SEP, after[then.end() + later.end() :]):
                    status, after = _status_of(later, _STATUS_NAMES), after[then.end() + later.end() :]
                note = _note(after)
            return _moves(ids, status, note)
        if lead is not None and (not body.strip() or re.match(r"^\s*[:\-–—|]", candidate)):
            # "✅ T-12", "T-12: ✅ meshed the mirror"
            return _moves(ids, lead, _note(body))
    return None


def _read_verb_first(cleaned: str, raw: str) -> list[Parsed] | None:
    match = _SET_FIRST.match(cleaned)
    if match is not None:
        status = _status_of(match, _STATUS_NAMES)
        after = cleaned[match.end() :]
        note = _note(match.group("wait") + after) if match.group("wait") else _note(after, verb_first=True)
        return _moves(_ids(match.group("ids")), status, note)
    match = _VERB_FIRST.match(cleaned) or _STATUS_FIRST.match(cleaned)
    if match is None:
        return None
    names = _VERB_NAMES if match.re is _VERB_FIRST else _STATUS_NAMES
    status = _status_of(match, names)
    after = cleaned[match.end() :]
    handed_in = match.re is _VERB_FIRST and re.match(rf"{_SUBJECT}(?:submit|send|sent|hand)", match.group(0), re.I)
    if status == "review" and handed_in:
        tail = _REVIEW_TAIL.match(after)
        if tail is None:
            return None  # "Sent T-1 to Antoine" is no review
        after = after[tail.end() :]  # "Submitting T-1 for review: …"
    return _moves(_ids(match.group("ids")), status, _note(after, verb_first=True))


def _read_emoji_status(cleaned: str, raw: str) -> list[Parsed] | None:
    lead = _lead_status(raw)
    head = _ID_LIST.match(cleaned)
    if lead is None or head is None:
        return None
    rest = cleaned[head.end() :]
    if rest.strip() and not re.match(r"^\s*[:\-–—|]", rest):
        return None  # "✅ T-1 looks good to me" is talk about T-1, not its status
    return _moves(_ids(head.group(0)), lead, _note(rest))


def _read_assign(cleaned: str, raw: str) -> list[Parsed] | None:
    match = _UNASSIGN.match(cleaned)
    if match is not None:
        return [BoardCommand("assign", task_id=n) for n in _ids(match.group("ids") or match.group("ids2"))]
    match = _ASSIGN_FIRST.match(cleaned)
    ids = _ids(match.group("ids")) if match is not None else []
    if match is None:
        head = _ID_LIST.match(cleaned)
        if head is None:
            return None
        match = _ASSIGN_AFTER_ID.match(cleaned[head.end() :])
        if match is None or _MOVE_AFTER_ID.match(cleaned[head.end() :]):
            return None
        ids = _ids(head.group(0))
    who = _assignee(match.group("who"))
    if who is None:
        return [NotUnderstood(f"Name an agent or a person for T-{ids[0]}: `T-{ids[0]} assign @agent`.")]
    return [BoardCommand("assign", task_id=number, assignee=who) for number in ids]


def _assignee(written: str) -> str | None:
    """An agent's name, or a mention as the core reads it (<@id>); None for the words that mean nobody."""
    if written.startswith("<"):
        return re.sub(r"^<@!", "<@", written)
    name = written.lstrip("@").rstrip(".")
    return None if name.lower() in ("nobody", "none", "unassigned", "noone") else name


def _read_create(cleaned: str, raw: str) -> list[Parsed] | None:
    match = _CREATE.match(cleaned)
    if match is None:
        return None
    return [_creation(match.group("rest"), match.group("for"))]


def _creation(rest: str, for_whom: str | None = None) -> Parsed:
    title = rest
    priority = _PRIORITY.search(title)
    level = None
    if priority is not None:
        word = next(g for g in priority.groups() if g).lower()
        level = _PRIORITY_ALIASES.get(word, "normal" if word == "medium" else word)
        title = title[: priority.start()] + " " + title[priority.end() :]
    due = _DUE.search(title) or _DUE_LOOSE.search(title)
    when = None
    if due is not None:
        if due.groupdict().get("n"):
            when = f"+{due.group('n')}{due.group('unit')[0].lower()}"
        else:
            when = re.sub(r"\s+", "", due.group("date")).rstrip(".,;:!")
        title = title[: due.start()] + " " + title[due.end() :]
    assignee = _assignee(for_whom) if for_whom else None
    if assignee is None:
        mention = _MENTION.search(title)
        if mention is not None:
            assignee = _assignee(mention.group("who"))
            title = title[: mention.start()] + " " + title[mention.end() :]
    title = re.sub(r"[(\[]\s*[)\]]", " ", title)  # "(due …)" emptied
    title = " ".join(title.split()).strip(" -–—:;,|")
    title = re.sub(r"\s+(?:for|to|cc|->|→)$", "", title, flags=re.I).strip(" -–—:;,|")
    if len(title) >= 2 and title[0] == title[-1] and title[0] in "\"'“”":
        title = title[1:-1].strip()
    title = title.strip('"“”').strip(" -–—:;,|")
    if not title:
        return NotUnderstood("A new task needs a title: `new task: Review thermal analysis @auditor !high`.")
    return BoardCommand("create", title=title, assignee=assignee, priority=level, due=when)


@dataclass(frozen=True)
class MessageOutcome:
    """What a #task-board message did: `applied` when any update was; `reply` is the one line to answer
    with (what was done, already so, refused or unreadable); `quiet` when a ✅ alone says it all."""

    applied: bool
    reply: str | None
    task_id: int | None = None
    quiet: bool = False


async def apply_board_message(board: TaskBoard, requester: Requester, text: str) -> MessageOutcome:
    """Read a post and apply each update in it exactly as the API would for this requester."""
    parsed = parse_board_post(text)
    if not parsed:
        # An agent that names a task is trying to update it: never silently ignored. Other posts (an
        # agent's answer delivered to this channel, say) are just talk: a hint to each would be noise.
        if requester.is_agent and _TASK_REF.search(_visible(text)):
            return MessageOutcome(False, HINT)
        return MessageOutcome(False, None)
    said: list[str] = []
    first: int | None = None
    quiet = True
    for item in parsed:
        if isinstance(item, NotUnderstood):
            said.append(item.hint)
            quiet = False
            continue
        line, task_id, done_quietly = await _apply(board, requester, item)
        said.append(line)
        quiet = quiet and done_quietly
        if task_id is not None and first is None:
            first = task_id
    return MessageOutcome(first is not None, " ".join(said), first, quiet and first is not None)


async def _apply(board: TaskBoard, requester: Requester, command: BoardCommand) -> tuple[str, int | None, bool]:
    """(what to say, the task changed or None, whether a reaction alone says it)."""
    try:
        if command.action == "create":
            task = await board.add(
                requester,
                command.title or "",
                assignee=command.assignee,
                priority=command.priority or "normal",
                due=command.due,
            )
            return f"{task.display_id} created: {task.title} ({task.assignee_text})", task.id, False
        if command.action == "assign":
            task = await board.assign(requester, command.task_id or 0, command.assignee)
            if task.already:
                return f"{task.already}; nothing changed.", None, False
            return f"{task.display_id} assigned to {task.assignee_text}", task.id, True
        task = await board.move(requester, command.task_id or 0, command.status or "", note=command.note)
        if task.already:
            return f"{task.already}; nothing changed.", None, False
        return f"{task.display_id} → {task.status}", task.id, True
    except AtomizerError as refused:
        return str(refused), None, False
