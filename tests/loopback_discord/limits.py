"""Discord's documented limits on what a bot sends, checked as Discord checks them.

Each check returns problems as (path, message) pairs; `form_error` turns them into Discord's real
answer: HTTP 400 `{"code": 50035, "errors": {...}, "message": "Invalid Form Body"}`.
"""

from __future__ import annotations

from typing import Any

Problem = tuple[str, str]  # ("embeds.0.title", "Must be 256 or fewer in length.")

CONTENT_MAX = 2000
EMBEDS_MAX = 10
EMBED_TOTAL_MAX = 6000
EMBED_TITLE_MAX = 256
EMBED_DESCRIPTION_MAX = 4096
EMBED_FIELDS_MAX = 25
FIELD_NAME_MAX = 256
FIELD_VALUE_MAX = 1024
FOOTER_MAX = 2048
AUTHOR_MAX = 256
ACTION_ROWS_MAX = 5
ROW_COMPONENTS_MAX = 5
CUSTOM_ID_MAX = 100
LABEL_MAX = 80
THREAD_NAME_MAX = 100
COMMANDS_MAX = 100
COMMAND_NAME_MAX = 32
COMMAND_DESCRIPTION_MAX = 100
OPTIONS_MAX = 25
CHOICES_MAX = 25
MODAL_TITLE_MAX = 45
TEXT_INPUT_LABEL_MAX = 45
TEXT_INPUT_VALUE_MAX = 4000


def _too_long(path: str, value: Any, limit: int) -> list[Problem]:
    if isinstance(value, str) and len(value) > limit:
        return [(path, f"Must be {limit} or fewer in length.")]
    return []


def check_message(body: dict[str, Any], *, creating: bool) -> list[Problem]:
    """A message the bot creates or edits (channel message, interaction response, follow-up, webhook edit).

    `allowed_mentions` is this project's rule, not Discord's: every message it creates says who may be
    pinged, so echoed text never pings anyone (on an edit, only when the content changes).
    """
    problems = _too_long("content", body.get("content"), CONTENT_MAX)
    embeds = body.get("embeds") or []
    if len(embeds) > EMBEDS_MAX:
        problems.append(("embeds", f"Must be {EMBEDS_MAX} or fewer in length."))
    total = 0
    for index, embed in enumerate(embeds):
        problems += check_embed(f"embeds.{index}", embed)
        total += embed_length(embed)
    if total > EMBED_TOTAL_MAX:
        problems.append(("embeds", f"Embed size exceeds maximum size of {EMBED_TOTAL_MAX}"))
    problems += check_components(body.get("components") or [])
    if creating and not (body.get("content") or embeds or body.get("components") or body.get("attachments")):
        problems.append(("content", "Cannot send an empty message"))
    if (creating or body.get("content")) and "allowed_mentions" not in body:
        problems.append(("allowed_mentions", "atomizer-hq rule: every message says allowed_mentions (none)"))
    return problems


def embed_length(embed: dict[str, Any]) -> int:
    """The characters Discord counts toward the 6,000 of a message."""
    count = len(embed.get("title") or "") + len(embed.get("description") or "")
    count += len((embed.get("footer") or {}).get("text") or "") + len((embed.get("author") or {}).get("name") or "")
    for item in embed.get("fields") or []:
        count += len(item.get("name") or "") + len(item.get("value") or "")
    return count


def check_embed(path: str, embed: dict[str, Any]) -> list[Problem]:
    problems = _too_long(f"{path}.title", embed.get("title"), EMBED_TITLE_MAX)
    problems += _too_long(f"{path}.description", embed.get("description"), EMBED_DESCRIPTION_MAX)
    problems += _too_long(f"{path}.footer.text", (embed.get("footer") or {}).get("text"), FOOTER_MAX)
    problems += _too_long(f"{path}.author.name", (embed.get("author") or {}).get("name"), AUTHOR_MAX)
    fields = embed.get("fields") or []
    if len(fields) > EMBED_FIELDS_MAX:
        problems.append((f"{path}.fields", f"Must be {EMBED_FIELDS_MAX} or fewer in length."))
    for index, item in enumerate(fields):
        for key, limit in (("name", FIELD_NAME_MAX), ("value", FIELD_VALUE_MAX)):
            value = item.get(key)
            if not isinstance(value, str) or not value.strip():
                problems.append((f"{path}.fields.{index}.{key}", "This field is required"))
            problems += _too_long(f"{path}.fields.{index}.{key}", value, limit)
    return problems


def check_components(rows: list[dict[str, Any]]) -> list[Problem]:
    problems: list[Problem] = []
    if len(rows) > ACTION_ROWS_MAX:
        problems.append(("components", f"Must be {ACTION_ROWS_MAX} or fewer in length."))
    seen: set[str] = set()
    for r, row in enumerate(rows):
        if row.get("type") != 1:
            problems.append((f"components.{r}.type", "Top-level components must be action rows"))
            continue
        children = row.get("components") or []
        if not children or len(children) > ROW_COMPONENTS_MAX:
            problems.append((f"components.{r}.components", f"Must be between 1 and {ROW_COMPONENTS_MAX} in length."))
        if any(child.get("type") != 2 for child in children) and len(children) > 1:
            problems.append((f"components.{r}.components", "A select menu must be alone in its row"))
        for c, child in enumerate(children):
            path = f"components.{r}.components.{c}"
            problems += _too_long(f"{path}.label", child.get("label"), LABEL_MAX)
            custom_id = child.get("custom_id")
            if child.get("type") == 2 and child.get("style") == 5:
                if not child.get("url"):
                    problems.append((f"{path}.url", "A link button needs a url"))
                continue
            if not isinstance(custom_id, str) or not custom_id:
                problems.append((f"{path}.custom_id", "This field is required"))
                continue
            problems += _too_long(f"{path}.custom_id", custom_id, CUSTOM_ID_MAX)
            if custom_id in seen:
                problems.append((f"{path}.custom_id", "Component custom id cannot be duplicated"))
            seen.add(custom_id)
    return problems


def check_modal(data: dict[str, Any]) -> list[Problem]:
    """A modal (interaction callback type 9): a title, a custom_id, 1-5 action rows of one text input each."""
    problems: list[Problem] = []
    for key, limit in (("title", MODAL_TITLE_MAX), ("custom_id", CUSTOM_ID_MAX)):
        value = data.get(key)
        if not isinstance(value, str) or not value:
            problems.append((key, "This field is required"))
        problems += _too_long(key, value, limit)
    rows = data.get("components") or []
    if not 1 <= len(rows) <= ACTION_ROWS_MAX:
        problems.append(("components", f"Must be between 1 and {ACTION_ROWS_MAX} in length."))
    for r, row in enumerate(rows):
        children = row.get("components") or []
        if row.get("type") != 1 or len(children) != 1 or children[0].get("type") != 4:
            problems.append((f"components.{r}", "A modal's action row holds exactly one text input"))
            continue
        text_input, path = children[0], f"components.{r}.components.0"
        if not isinstance(text_input.get("custom_id"), str) or not text_input.get("custom_id"):
            problems.append((f"{path}.custom_id", "This field is required"))
        problems += _too_long(f"{path}.label", text_input.get("label"), TEXT_INPUT_LABEL_MAX)
        if text_input.get("style") not in (1, 2):
            problems.append((f"{path}.style", "Value must be one of (1, 2)."))
        if int(text_input.get("max_length") or 0) > TEXT_INPUT_VALUE_MAX:
            problems.append(
                (f"{path}.max_length", f"int value should be less than or equal to {TEXT_INPUT_VALUE_MAX}.")
            )
    return problems


def check_commands(commands: list[dict[str, Any]]) -> list[Problem]:
    """A bulk overwrite of application commands (names, descriptions, options, choices)."""
    problems: list[Problem] = []
    if len(commands) > COMMANDS_MAX:
        problems.append(("", f"Must be {COMMANDS_MAX} or fewer in length."))
    names = [command.get("name") for command in commands]
    for index, command in enumerate(commands):
        if names.count(command.get("name")) > 1:
            problems.append((f"{index}.name", "Application command names must be unique"))
        problems += _check_option(str(index), command, top=True)
    return problems


def _check_option(path: str, option: dict[str, Any], *, top: bool = False) -> list[Problem]:
    problems = _too_long(f"{path}.name", option.get("name"), COMMAND_NAME_MAX)
    description = option.get("description")
    if ((top and option.get("type", 1) == 1) or not top) and not description:
        problems.append((f"{path}.description", "This field is required"))
    problems += _too_long(f"{path}.description", description, COMMAND_DESCRIPTION_MAX)
    options = option.get("options") or []
    if len(options) > OPTIONS_MAX:
        problems.append((f"{path}.options", f"Must be {OPTIONS_MAX} or fewer in length."))
    required_done = False
    for index, child in enumerate(options):
        if child.get("required"):
            if required_done:
                message = "Required options must be placed before non-required options"
                problems.append((f"{path}.options.{index}.required", message))
        elif child.get("type") not in (1, 2):
            required_done = True
        problems += _check_option(f"{path}.options.{index}", child)
    if len(option.get("choices") or []) > CHOICES_MAX:
        problems.append((f"{path}.choices", f"Must be {CHOICES_MAX} or fewer in length."))
    return problems


def form_error(problems: list[Problem]) -> dict[str, Any]:
    """Discord's 400 body for these problems, errors nested by path as Discord nests them."""
    errors: dict[str, Any] = {}
    for path, message in problems:
        node = errors
        for part in [p for p in path.split(".") if p]:
            node = node.setdefault(part, {})
        node.setdefault("_errors", []).append({"code": "BASE_TYPE_BAD_LENGTH", "message": message})
    return {"code": 50035, "errors": errors, "message": "Invalid Form Body"}
