"""Target normalization: every written form to `user:<id>` / `channel:<id>`, or InvalidTarget saying why."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.config import ClusterConfig, parse_cluster_config
from bot.errors import InvalidTarget
from bot.targets import MAX_TARGET_LENGTH, StaticDirectory, Target, TargetNormalizer

OUTPUT_RE = re.compile(r"(user|channel):[0-9]{17,20}")  # stricter than \d: ASCII digits only

TECHNICAL = "200000000000000101"
TASK_BOARD = "200000000000000102"
STANDUP = "200000000000000103"
GENERAL_A = "200000000000000110"
GENERAL_B = "200000000000000111"
OPS_CHANNEL = "200000000000000112"
MANAGER = "200000000000000301"
WEBSTER = "200000000000000308"
ANTOINE = "200000000000000401"
ALICE_1 = "200000000000000402"
ALICE_2 = "200000000000000403"
OPS_BOT = "200000000000000404"
TECHIE = "200000000000000405"
BOTH = "200000000000000999"  # only a fake guild can hold a channel and a member with one id
STRANGER = "200000000000000777"  # neither

CONFIG: ClusterConfig = parse_cluster_config(
    {
        "agents": [
            {"name": "manager", "port": 18800, "discord_user_id": MANAGER},
            {"name": "webster", "port": 18804, "discord_user_id": WEBSTER},
            {"name": "auditor", "port": 18808},
        ],
        "channels": {"technical": TECHNICAL, "task_board": TASK_BOARD, "daily_standup": STANDUP},
    },
    "test-targets",
)
DIRECTORY = StaticDirectory(
    channels={
        TECHNICAL: "technical",
        TASK_BOARD: "task-board",
        STANDUP: "daily-standup",
        GENERAL_A: "general",
        GENERAL_B: "general",
        OPS_CHANNEL: "ops",
        BOTH: "both-channel",
    },
    members={
        ANTOINE: ["antoine", "Antoine Dupont", "Toine"],
        ALICE_1: ["alice"],
        ALICE_2: ["alice_b", "Alice"],
        OPS_BOT: ["ops-bot", "ops"],
        TECHIE: ["techie", "technical"],
        MANAGER: "manager",
        BOTH: ["both-member"],
    },
)
NO_DIR = TargetNormalizer(CONFIG)
WITH_DIR = TargetNormalizer(CONFIG, DIRECTORY)
ID17, ID20 = "12345678901234567", "12345678901234567890"
ID = "300000000000000001"  # unknown to DIRECTORY


def refused(normalizer: TargetNormalizer, text: str) -> str:
    with pytest.raises(InvalidTarget) as info:
        normalizer.normalize(text)
    return str(info.value)


# --- explicit forms ---------------------------------------------------------------------------


@pytest.mark.parametrize("normalizer", [NO_DIR, WITH_DIR], ids=["no-directory", "directory"])
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"user:{ID}", f"user:{ID}"),
        (f"channel:{ID}", f"channel:{ID}"),
        (f"<@{ID}>", f"user:{ID}"),
        (f"<@!{ID}>", f"user:{ID}"),
        (f"<#{ID}>", f"channel:{ID}"),
        (f"discord:{ID}", f"user:{ID}"),  # OpenClaw's rule
        (f"discord:user:{ID}", f"user:{ID}"),
        (f"discord:channel:{ID}", f"channel:{ID}"),
        (f"  USER:{ID}\n", f"user:{ID}"),
        (f"Channel:{ID}", f"channel:{ID}"),
        (f"Discord:User:{ID}", f"user:{ID}"),
        (f"DISCORD:CHANNEL:{ID}", f"channel:{ID}"),
        (f"\tuser : {ID} ", f"user:{ID}"),
        (f"discord : channel : {ID}", f"channel:{ID}"),
        (f"< @! {ID} >", f"user:{ID}"),
        (f"user:{ID17}", f"user:{ID17}"),
        (f"channel:{ID20}", f"channel:{ID20}"),
        (f"#{ID}", f"channel:{ID}"),  # a sigil before an id says the kind as clearly as a prefix
        (f"@{ID}", f"user:{ID}"),
    ],
)
def test_explicit_forms_are_accepted(normalizer: TargetNormalizer, text: str, expected: str) -> None:
    assert str(normalizer.normalize(text)) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("user:12345", "'12345' is not a Discord id (17-20 digits); write user:<id>"),
        (f"user:{ID17[:-1]}", "is not a Discord id (17-20 digits)"),
        (f"channel:{ID20}1", "is not a Discord id (17-20 digits)"),
        ("user:", "has no id after 'user:'"),
        ("discord:channel:", "has no id after 'discord:channel:'"),
        ("channel:#task-board", "or #channel-name to look it up by name"),
        ("user:@antoine", "or @member to look it up by name"),
        (f"user:{ID}x", "is not a Discord id"),
        ("user:" + "١" * 18, "is not a Discord id"),  # Arabic-Indic digits are \d, not a snowflake
        (f"<@&{ID}>", "a role cannot receive a delivery"),
        ("<@12345>", "'12345', which is not a Discord id (17-20 digits)"),
        ("<@>", "holds no id"),
        ("<#task-board>", "not a Discord id"),
        (f"<:party:{ID}>", "is not a user or channel mention"),
        (f"users:{ID}", "'users:' is not a target prefix"),
        (f"dm:{ID}", "'dm:' is not a target prefix"),
        (f"discord:role:{ID}", "'discord:role:' is not a target prefix"),
        ("discord:User", "has no id; write discord:user:<id> or user:<id>"),
        ("discord:antoine", "'antoine' is not a Discord id"),
        ("@everyone", "cannot receive a delivery"),
        (" @Here ", "cannot receive a delivery"),
        ("", "no target given; write user:<id>, channel:<id>"),
        (" \t\n ", "no target given"),
        ("#", "names no channel"),
        ("@ ", "names no member"),
        ("x" * (MAX_TARGET_LENGTH + 1), f"more than the {MAX_TARGET_LENGTH} a target may have"),
    ],
)
def test_malformed_forms_are_refused_with_a_reason(text: str, fragment: str) -> None:
    assert fragment in refused(NO_DIR, text)
    assert fragment in refused(WITH_DIR, text)


def test_long_input_is_not_echoed_whole() -> None:
    message = refused(NO_DIR, "user:" + "9" * 5000)
    assert len(message) < 400


def test_non_text_is_refused_with_the_typed_error() -> None:
    assert "a target is text" in refused(NO_DIR, 123)  # type: ignore[arg-type]


def test_an_explicit_form_contradicted_by_the_guild_is_refused() -> None:
    # 2026.9.6 would silently drop such a DM; the guild knows better than the writer here.
    assert f"is the channel #task-board; write channel:{TASK_BOARD}" in refused(WITH_DIR, f"user:{TASK_BOARD}")
    assert f"is the member @antoine; write user:{ANTOINE}" in refused(WITH_DIR, f"<#{ANTOINE}>")
    assert f"write user:{ANTOINE}" in refused(WITH_DIR, f"discord:channel:{ANTOINE}")
    # Without a directory nothing contradicts it; with one, an id of both kinds is taken as written.
    assert str(NO_DIR.normalize(f"user:{TASK_BOARD}")) == f"user:{TASK_BOARD}"
    assert str(WITH_DIR.normalize(f"user:{BOTH}")) == f"user:{BOTH}"
    assert str(WITH_DIR.normalize(f"channel:{BOTH}")) == f"channel:{BOTH}"


# --- bare ids ---------------------------------------------------------------------------------


def test_a_short_number_is_not_an_id() -> None:
    assert refused(NO_DIR, "12345") == (
        "'12345' is not a Discord id (17-20 digits); write user:<id>, channel:<id>, #channel-name, @member "
        "or a channel role such as daily_standup"
    )
    assert "is not a Discord id (17-20 digits)" in refused(WITH_DIR, "1" * 21)


def test_a_bare_id_without_a_directory_is_refused_as_ambiguous() -> None:
    # The ambiguous-recipient bug that switched heartbeats off on manager and webster.
    message = refused(NO_DIR, f" {ANTOINE} ")
    assert "a bare id is ambiguous" in message
    assert f"user:{ANTOINE}" in message and f"channel:{ANTOINE}" in message


def test_a_bare_id_resolves_by_what_it_is_in_the_guild() -> None:
    channel = WITH_DIR.normalize(TASK_BOARD)
    assert channel == Target("channel", TASK_BOARD)
    assert channel.label == "#task-board"
    member = WITH_DIR.normalize(ANTOINE)
    assert member == Target("user", ANTOINE)
    assert member.label == "@antoine"


def test_a_bare_id_that_is_both_or_neither_is_refused_naming_the_candidates() -> None:
    both = refused(WITH_DIR, BOTH)
    assert "both a channel and a member (#both-channel / @both-member)" in both
    assert f"write channel:{BOTH} or user:{BOTH}" in both
    neither = refused(WITH_DIR, STRANGER)
    assert "neither a channel nor a member of the guild" in neither
    assert f"channel:{STRANGER} or user:{STRANGER}" in neither


# --- channel roles ----------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["daily_standup", "Daily-Standup", " DAILY STANDUP ", "#daily_standup"])
def test_a_channel_role_resolves_without_a_directory(text: str) -> None:
    target = NO_DIR.normalize(text)
    assert target == Target("channel", STANDUP)
    assert target.label == "#daily_standup"


def test_a_channel_role_takes_the_guild_name_as_label_and_wins_over_a_member_name() -> None:
    assert WITH_DIR.normalize("daily_standup").label == "#daily-standup"
    # A member is nicknamed "technical", but the configured role is the deliberate meaning of the word.
    assert WITH_DIR.normalize("technical") == Target("channel", TECHNICAL)
    assert WITH_DIR.normalize("@technical") == Target("user", TECHIE)


def test_an_unknown_word_without_a_directory_lists_the_roles() -> None:
    message = refused(NO_DIR, "standup")
    assert "is not a channel role (technical, task_board, daily_standup)" in message
    assert "names cannot be looked up without the guild directory" in message


def test_the_example_role_in_messages_comes_from_the_config() -> None:
    config = parse_cluster_config({"agents": [{"name": "manager", "port": 18800}], "channels": {"it_ops": TECHNICAL}})
    assert "a channel role such as it_ops" in refused(TargetNormalizer(config), "12345")


# --- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("#task-board", Target("channel", TASK_BOARD)),
        ("#Task-Board", Target("channel", TASK_BOARD)),
        ("# task-board ", Target("channel", TASK_BOARD)),
        ("#task_board", Target("channel", TASK_BOARD)),  # not a guild name, but a channel role
        ("@antoine", Target("user", ANTOINE)),
        ("@Antoine Dupont", Target("user", ANTOINE)),  # global name
        ("@TOINE", Target("user", ANTOINE)),  # nickname
        ("antoine", Target("user", ANTOINE)),
        ("task-board", Target("channel", TASK_BOARD)),
        ("@manager", Target("user", MANAGER)),
    ],
)
def test_names_resolve_through_the_directory(text: str, expected: Target) -> None:
    assert WITH_DIR.normalize(text) == expected


def test_name_labels_come_from_the_directory() -> None:
    assert WITH_DIR.normalize("@Antoine Dupont").label == "@antoine"
    assert WITH_DIR.normalize("#task-board").label == "#task-board"


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("#general", ["matches 2 channels", f"channel:{GENERAL_A} (#general)", f"channel:{GENERAL_B} (#general)"]),
        ("@alice", ["matches 2 members", f"user:{ALICE_1} (@alice)", f"user:{ALICE_2} (@alice_b)"]),
        ("general", ["matches 2 channels", f"channel:{GENERAL_A}"]),
        ("alice", ["matches 2 members", f"user:{ALICE_2}"]),
        ("ops", ["names both channels and members", f"channel:{OPS_CHANNEL} (#ops)", f"user:{OPS_BOT} (@ops-bot)"]),
        ("#tsk-board", ["no channel called '#tsk-board' (did you mean #task-board or"]),
        ("@antonie", ["no member called '@antonie' (did you mean @antoine or @Toine?); write @member"]),
        ("antonie", ["no channel role, channel or member called 'antonie' (did you mean @antoine"]),
        ("daily_stanup", ["did you mean daily_standup"]),
        ("nobody-at-all", ["no channel role, channel or member called 'nobody-at-all'; write user:<id>"]),
        ("#nobody", ["no channel called '#nobody'; write #channel-name or channel:<id>"]),
    ],
)
def test_unknown_or_ambiguous_names_are_refused(text: str, fragments: list[str]) -> None:
    message = refused(WITH_DIR, text)
    for fragment in fragments:
        assert fragment in message


def test_names_without_a_directory_are_refused() -> None:
    assert "channel names cannot be looked up without the guild directory" in refused(NO_DIR, "#lobby")
    assert "member names cannot be looked up without the guild directory" in refused(NO_DIR, "@antoine")


def test_a_long_candidate_list_is_cut_short() -> None:
    ids = [f"20000000000000050{i}" for i in range(8)]
    normalizer = TargetNormalizer(CONFIG, StaticDirectory(channels=dict.fromkeys(ids, "lobby")))
    message = refused(normalizer, "#lobby")
    assert "matches 8 channels" in message and "and 3 more" in message
    assert ids[4] in message and ids[5] not in message


def test_a_directory_from_the_config_knows_roles_and_agents() -> None:
    normalizer = TargetNormalizer(CONFIG, StaticDirectory.from_config(CONFIG))
    assert normalizer.normalize("@manager") == Target("user", MANAGER)
    assert normalizer.normalize("webster").label == "@webster"
    assert normalizer.normalize(WEBSTER) == Target("user", WEBSTER)
    assert normalizer.normalize(STANDUP) == Target("channel", STANDUP)
    assert normalizer.normalize("#task_board").label == "#task_board"
    assert "no member called '@auditor'" in refused(normalizer, "@auditor")  # no discord_user_id configured
    assert "neither a channel nor a member" in refused(normalizer, ANTOINE)


# --- Target -----------------------------------------------------------------------------------


def test_target_renders_and_validates_itself() -> None:
    target = Target("user", ID)
    assert str(target) == f"user:{ID}"
    assert target.label == f"user:{ID}"
    assert Target("channel", ID, "#x") == Target("channel", ID)  # the label is not part of the identity
    with pytest.raises(AttributeError):
        target.id = ID17  # type: ignore[misc]
    with pytest.raises(InvalidTarget):
        Target("user", "12345")
    with pytest.raises(InvalidTarget):
        Target("role", ID)  # type: ignore[arg-type]


def test_the_core_module_does_not_import_discord() -> None:
    # The CLI and API normalize targets with the bot offline; a fresh interpreter shows what the import drags in.
    code = "import sys, bot.targets; sys.exit('discord' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --- properties -------------------------------------------------------------------------------

FAST = settings(max_examples=300, deadline=None)
KNOWN_IDS = [TECHNICAL, TASK_BOARD, STANDUP, GENERAL_A, OPS_CHANNEL, MANAGER, ANTOINE, ALICE_1, OPS_BOT, BOTH]
PREFIXES = (
    *("", "user:", "channel:", "discord:", "discord:user:", "discord:channel:", "user :", "discord: user:"),
    *("users:", "dm:", "role:", "@", "#", "@!", "<@", "<@!", "<#", "<@&", "<", ":", "discord:role:"),
)
NAMES = ["task-board", "general", "antoine", "Antoine Dupont", "alice", "ops", "daily-standup", "everyone", ""]


def assert_target_or_invalid(normalizer: TargetNormalizer, text: str) -> None:
    try:
        target = normalizer.normalize(text)
    except InvalidTarget as exc:
        assert str(exc)
        return
    assert isinstance(target, Target)
    assert OUTPUT_RE.fullmatch(str(target)), str(target)


def random_case(draw: st.DrawFn, text: str) -> str:
    return "".join(ch.upper() if draw(st.booleans()) else ch.lower() for ch in text)


@st.composite
def near_valid(draw: st.DrawFn) -> str:
    """Almost-targets: real and bogus prefixes, odd case and spaces, ids of the wrong length, half mentions."""
    space = st.sampled_from(["", " ", "  ", "\t", "\n", "\u00a0", "\u200b"])
    prefix = draw(st.sampled_from(PREFIXES))
    body = draw(
        st.one_of(
            st.text(alphabet="0123456789", min_size=10, max_size=25),
            st.text(alphabet="0123456789١²", min_size=15, max_size=21),
            st.sampled_from(KNOWN_IDS),
            st.sampled_from(NAMES),
            st.text(max_size=6),
        )
    )
    suffix = draw(st.sampled_from(["", ">", " >", ">>", ":", "\n"]))
    return draw(space) + random_case(draw, prefix) + draw(space) + body + suffix + draw(space)


@FAST
@given(st.text())
def test_any_text_gives_a_target_or_invalid_target(text: str) -> None:
    assert_target_or_invalid(NO_DIR, text)
    assert_target_or_invalid(WITH_DIR, text)


@FAST
@given(near_valid())
def test_near_valid_text_gives_a_target_or_invalid_target(text: str) -> None:
    assert_target_or_invalid(NO_DIR, text)
    assert_target_or_invalid(WITH_DIR, text)


TARGETS = st.builds(
    Target, kind=st.sampled_from(["user", "channel"]), id=st.from_regex(r"[0-9]{17,20}", fullmatch=True)
)


@FAST
@given(TARGETS)
def test_the_output_form_round_trips(target: Target) -> None:
    assert NO_DIR.normalize(str(target)) == target
    assert WITH_DIR.normalize(str(target)) == target


@FAST
@given(TARGETS, st.data())
def test_every_explicit_spelling_means_the_same_target(target: Target, data: st.DataObject) -> None:
    if target.kind == "user":
        forms = ["user:", "discord:", "discord:user:", "<@", "<@!"]
    else:
        forms = ["channel:", "discord:channel:", "<#"]
    prefix = random_case(data.draw, data.draw(st.sampled_from(forms)))
    close = ">" if prefix.startswith("<") else ""
    space = data.draw(st.sampled_from(["", " ", "\t", "\n "]))
    text = f"{space}{prefix}{target.id}{close}{space}"
    assert NO_DIR.normalize(text) == target
    assert WITH_DIR.normalize(text) == target
