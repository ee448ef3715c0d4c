"""check-config: the shipped config passes; each broken case is refused with its key named."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.cli import main
from bot.config import ClusterConfig, load_cluster_config, with_ports
from bot.errors import ConfigError, UnknownAgent
from tests.conftest import SHIPPED_CONFIG

SHIPPED_TEXT = SHIPPED_CONFIG.read_text(encoding="utf-8")


def run_check(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, *extra: str) -> tuple[int, str, str]:
    path = tmp_path / "cluster.toml"
    path.write_text(text, encoding="utf-8")
    code = main(["--config", str(path), "--env-file", str(tmp_path / "empty.env"), "check-config", *extra])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def clean_env(settings: object, tmp_path: Path) -> None:
    # `settings` clears ATOMIZER_* from the environment and sets test tokens.
    (tmp_path / "empty.env").write_text("", encoding="utf-8")


def broken(old: str, new: str, count: int = 1) -> str:
    assert SHIPPED_TEXT.count(old) >= count, old
    return SHIPPED_TEXT.replace(old, new, count)


def test_shipped_config_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_check(tmp_path, capsys, SHIPPED_TEXT)
    assert code == 0, err
    assert "valid: 8 agents" in out
    assert "manager, tech-lead, secretary, auditor, optimizer, study-builder, nx-expert, webster" in out


def test_shipped_fleet_matches_the_as_built_cluster(shipped_config: ClusterConfig) -> None:
    ports = {a.name: a.port for a in shipped_config.agents}
    assert ports == {
        "manager": 18800, "tech-lead": 18804, "secretary": 18808, "auditor": 18812,
        "optimizer": 18816, "study-builder": 18820, "nx-expert": 18824, "webster": 18828,
    }  # fmt: skip
    assert [a.name for a in shipped_config.agents if not a.own_heartbeat] == ["manager", "webster"]
    everyone_else = [n for n in shipped_config.agent_names if n != "manager"]
    assert shipped_config.delegation_targets("manager") == everyone_else
    assert shipped_config.delegation_targets("tech-lead") == [n for n in everyone_else if n != "tech-lead"]
    # optimizer may sub-delegate to the agents below it (docs/delegation-chains.md)
    assert shipped_config.delegation_targets("optimizer") == [
        "secretary", "auditor", "study-builder", "nx-expert", "webster"
    ]  # fmt: skip
    assert (shipped_config.delegation.max_depth, shipped_config.delegation.max_per_root) == (3, 20)
    for name in ("secretary", "auditor", "study-builder", "nx-expert", "webster"):
        assert shipped_config.delegation_targets(name) == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(
            'name = "tech-lead"',
            'name = "manager"',
            "agents[1].name: duplicate agent name 'manager'",
            id="dup-name",
        ),
        pytest.param("port = 18804", "port = 18800", "agents.tech-lead.port: duplicate port 18800", id="dup-port"),
        pytest.param(
            "port = 18804",
            "port = 18803",
            "agents.tech-lead.port: port collision on 18803: 'manager' uses it as its side port 18800+3, "
            "'tech-lead' as its hooks port",
            id="side-port",
        ),
        pytest.param(
            'delegates_to = ["*", "!manager"]',
            'delegates_to = ["secretary", "nx-exprt"]',
            "agents.tech-lead.delegates_to: unknown agent 'nx-exprt'",
            id="unknown-delegate",
        ),
        pytest.param(
            'discord_user_id = "100000000000000303"',
            'discord_user_id = "10000000000000030x"',
            "agents.secretary.discord_user_id: '10000000000000030x' is not numeric; a Discord id is 17 to 20 digits",
            id="id-not-numeric",
        ),
        pytest.param(
            'it_ops = "100000000000000104"',
            'it_ops = "1234"',
            "channels.it_ops: '1234' has 4 digits; a Discord id has 17 to 20",
            id="id-too-short",
        ),
        pytest.param(
            'admin = "100000000000000203"',
            'admin = "1000000000000002030000"',
            "roles.admin[0]: '1000000000000002030000' has 22 digits",
            id="id-too-long",
        ),
        pytest.param(
            "port = 18808",
            'port = "18808x"',
            "agents.secretary.port: '18808x' is not a whole number; write e.g. 18800",
            id="port-type",
        ),
        pytest.param(
            "port = 18808",
            "port = 70000",
            "agents.secretary.port: 70000 is out of range; input should be less than or equal to 65535",
            id="port-range",
        ),
        pytest.param(
            "port = 18808",
            'port = "18808"',
            "agents.secretary.port: '18808' is not a whole number; write e.g. 18800",
            id="port-quoted",
        ),
        pytest.param(
            "own_heartbeat = false          # switched off: the ambiguous-recipient delivery bug\ndelegates_to",
            'own_heartbeat = "no"\ndelegates_to',
            "agents.manager.own_heartbeat: 'no' is not true or false; write true or false, without quotes",
            id="bool-as-text",
        ),
        pytest.param(
            'every = "30m"\nto = "daily_standup"',
            'every = "30m"\nto = "daily_standup"\nenabled = "yes"',
            "heartbeat.manager.enabled: 'yes' is not true or false; write true or false, without quotes",
            id="bool-as-text-heartbeat",
        ),
        pytest.param(
            'every = "30m"\nto = "daily_standup"',
            'every = "30m"\nto = "daily_standup"\nwait_for_completion = 1',
            "heartbeat.manager.wait_for_completion: 1 is not true or false; write true or false, without quotes",
            id="bool-as-number",
        ),
        pytest.param(
            'model = "Sonnet 4.5"',
            'modle = "Sonnet 4.5"',
            "agents.optimizer.modle: unknown key 'modle'",
            id="typo-key",
        ),
        pytest.param("[heartbeat.webster]", "[heartbeat.websterr]", "heartbeat.websterr: unknown agent", id="hb-agent"),
        pytest.param(
            "\n[channels]\n",
            '\n[channels]\ntechnicall = "100000000000000109"\n',
            "channels.technicall: unknown channel role; valid: technical, task_board",
            id="channel-role",
        ),
        pytest.param(
            "\n[roles]\n",
            '\n[roles]\nowner = "100000000000000209"\n',
            "roles.owner: unknown key 'owner'; valid: viewer, operator, admin",
            id="role-level",
        ),
        pytest.param(
            'delegates_to = "*"',
            'delegates_to = ["manager"]',
            "agents.manager.delegates_to: an agent never delegates to itself",
            id="self-delegate",
        ),
    ],
)
def test_each_broken_case_is_refused_with_the_key_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, expected: str
) -> None:
    code, out, err = run_check(tmp_path, capsys, broken(old, new))
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert any(expected in line for line in lines), err
    # One line per problem, each naming the file and giving a way out.
    for line in lines:
        assert line.startswith(f"{tmp_path / 'cluster.toml'}: "), line
        assert ";" in line, line


def test_all_problems_are_listed_not_just_the_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = SHIPPED_TEXT.replace('"100000000000000301"', '"abc"').replace('"100000000000000101"', '"12"')
    code, _, err = run_check(tmp_path, capsys, text)
    assert code == 2
    assert "agents.manager.discord_user_id" in err
    assert "channels.technical" in err


def test_missing_tokens_are_problems_for_the_command_that_needs_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ATOMIZER_HOOKS_TOKEN")
    code, _, err = run_check(tmp_path, capsys, SHIPPED_TEXT, "--for", "run")
    assert code == 2
    assert "environment: DISCORD_TOKEN: not set; `atomizer-hq run` needs the bot's token" in err
    assert "environment: ATOMIZER_HOOKS_TOKEN: not set for manager, tech-lead" in err
    # Without --for, the shipped config is still valid: missing secrets are notes.
    code, _out, err = run_check(tmp_path, capsys, SHIPPED_TEXT)
    assert code == 0
    assert "note: environment: DISCORD_TOKEN: not set" in err


def test_a_per_agent_hooks_token_covers_that_agent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ATOMIZER_HOOKS_TOKEN")
    monkeypatch.setenv("ATOMIZER_HOOKS_TOKEN_NX_EXPERT", "x" * 32)
    code, _, err = run_check(tmp_path, capsys, SHIPPED_TEXT, "--for", "status")
    assert code == 2
    assert "not set for manager, tech-lead, secretary, auditor, optimizer, study-builder, webster;" in err


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("ATOMIZER_GUILD_ID", "my-guild", "ATOMIZER_GUILD_ID: 'my-guild' is not a Discord id"),
        ("ATOMIZER_API_TOKENS", "manager=abc", "ATOMIZER_API_TOKENS: entry 1 is not 'identity:token'"),
        ("ATOMIZER_API_TOKENS", "managr:" + "k" * 20, "unknown identity 'managr'"),
        ("ATOMIZER_API_TOKENS", "manager:short", "API token of 'manager': too short"),
        ("ATOMIZER_API_TOKENS", f"manager:{'s' * 20},webster:{'s' * 20}", "the same token as 'manager'"),
        ("ATOMIZER_HOOKS_TOKEN_WEBSTR", "t" * 20, "ATOMIZER_HOOKS_TOKEN_WEBSTR: no agent called that"),
        (
            "ATOMIZER_API_TOKEN_NOBODY",
            "t" * 20,
            "ATOMIZER_API_TOKEN_NOBODY: no agent or identity called that",
        ),
    ],
)
def test_bad_environment_values_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    variable: str, value: str, expected: str,
) -> None:  # fmt: skip
    monkeypatch.setenv(variable, value)
    code, _, err = run_check(tmp_path, capsys, SHIPPED_TEXT)
    assert code == 2
    assert expected in err
    assert "s" * 20 not in err and "k" * 20 not in err  # tokens are never echoed


def test_unreadable_files_give_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_check(tmp_path, capsys, "agents = [ {name = ")
    assert code == 2 and "(syntax):" in err and "valid TOML" in err
    code = main(["--config", str(tmp_path / "nope.toml"), "check-config"])
    err = capsys.readouterr().err
    assert code == 2 and "nope.toml: (file): not found; set ATOMIZER_CONFIG or --config" in err
    code = main(["--env-file", str(tmp_path / "missing.env"), "check-config"])
    assert code == 2 and "missing.env: (file): not found" in capsys.readouterr().err


def test_env_file_is_read_without_overriding_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "site.env").write_text("ATOMIZER_GUILD_ID=not-a-number\n", encoding="utf-8")
    monkeypatch.delenv("ATOMIZER_GUILD_ID")
    code = main(["--env-file", str(tmp_path / "site.env"), "check-config"])
    assert code == 2 and "'not-a-number' is not a Discord id" in capsys.readouterr().err
    monkeypatch.setenv("ATOMIZER_GUILD_ID", "100000000000000001")
    code = main(["--env-file", str(tmp_path / "site.env"), "check-config"])
    assert code == 0, capsys.readouterr().err


def test_unknown_agent_names_the_closest_match(shipped_config: ClusterConfig) -> None:
    with pytest.raises(UnknownAgent) as caught:
        shipped_config.require_agent("nx-exprt")
    assert "Did you mean 'nx-expert'?" in str(caught.value)
    assert "Valid agents: manager, tech-lead" in str(caught.value)
    assert shipped_config.require_agent(" Webster ").name == "webster"


def test_adding_an_agent_is_a_config_change(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(
        SHIPPED_TEXT + '\n[[agents]]\nname = "post-processor"\nport = 18832\nmodel = "Sonnet 4.5"\n',
        encoding="utf-8",
    )
    config = load_cluster_config(path)
    assert config.agent_names[-1] == "post-processor"
    assert "post-processor" in config.delegation_targets("manager")
    assert "post-processor" in config.delegation_targets("tech-lead")


def test_config_error_carries_every_line() -> None:
    with pytest.raises(ConfigError) as caught:
        from bot.config import parse_cluster_config

        parse_cluster_config({"agents": []}, "x.toml")
    assert caught.value.problems == ["x.toml: agents: no agents configured; add at least one [[agents]] table"]


@pytest.mark.parametrize(
    ("heartbeat", "why"),
    [
        ("", "there is no [heartbeat.webster]"),
        ('[heartbeat.webster]\nexpect_every = "30m"\n', "[heartbeat.webster] only expects one (expect_every)"),
        ('[heartbeat.webster]\nevery = "30m"\nenabled = false\n', "[heartbeat.webster] is switched off"),
    ],
)
def test_an_agent_without_any_heartbeat_is_a_warning_not_a_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], heartbeat: str, why: str
) -> None:
    """webster's own heartbeat is off; without a job that sends one, nothing ever wakes it."""
    text = broken('[heartbeat.webster]\nevery = "30m"\nto = "daily_standup"\n', heartbeat)
    code, out, err = run_check(tmp_path, capsys, text)
    assert code == 0, err
    assert "valid: 8 agents" in out
    [warning] = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert warning.startswith(f"warning: {tmp_path / 'cluster.toml'}: agents.webster.own_heartbeat: false, and {why}")
    assert 'add [heartbeat.webster] with every = "30m"' in warning and "or set own_heartbeat = true" in warning


def test_an_agent_without_capabilities_is_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Routing never chooses it: said, but the config stays valid (an agent may be meant to be named only)."""
    text = broken('capabilities = ["research", "literature", "materials-data"]\n', "")
    code, out, err = run_check(tmp_path, capsys, text)
    assert code == 0 and "valid: 8 agents" in out
    [warning] = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert warning == (
        f"warning: {tmp_path / 'cluster.toml'}: agents.webster.capabilities: none declared, so `delegate auto "
        '--needs …` never chooses webster; add what it does, e.g. capabilities = ["research"]'
    )


def test_the_shipped_config_warns_about_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_check(tmp_path, capsys, SHIPPED_TEXT)
    assert code == 0 and "warning:" not in err


def test_check_config_reads_the_workflow_files_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    example = (SHIPPED_CONFIG.parent.parent / "workflows" / "m2-mirror-study.yaml").read_text(encoding="utf-8")
    (flows / "m2.yaml").write_text(example, encoding="utf-8")
    text = broken('dir = "workflows"', f'dir = "{flows}"')

    code, out, err = run_check(tmp_path, capsys, text)
    assert code == 0, err
    assert out.rstrip().endswith("3 roles, 1 workflow")

    (flows / "m2.yaml").write_text(example.replace("agent: webster", "agent: webstr"), encoding="utf-8")
    code, out, err = run_check(tmp_path, capsys, text)
    assert code == 2 and out == ""
    line = next(line for line in err.splitlines() if "webstr" in line)
    assert line.startswith(f"{flows / 'm2.yaml'}:") and "no agent called 'webstr'. Did you mean 'webster'?" in line


@pytest.mark.parametrize("base", [18824, 18800, 18772, 24000])
def test_the_shipped_file_moved_to_any_ports_puts_every_agent_where_asked(tmp_path: Path, base: int) -> None:
    """The tests' and the demo's copy of the real file. Moved to 18824, old value by old value, the bot's nx-expert
    landed on the fleet's manager (18824 was nx-expert's shipped port): its answers came from the wrong agent."""
    moved = load_cluster_config(SHIPPED_CONFIG).relocated(base, 4)
    path = tmp_path / "cluster.toml"
    path.write_text(with_ports(SHIPPED_TEXT, {a.name: a.port for a in moved.agents}, moved.api.port), "utf-8")
    loaded = load_cluster_config(path)
    assert [(a.name, a.port) for a in loaded.agents] == [(a.name, a.port) for a in moved.agents]
    assert loaded.api.port == moved.api.port
    changed = [
        old for old, new in zip(SHIPPED_TEXT.splitlines(), path.read_text().splitlines(), strict=True) if old != new
    ]
    assert all(line.startswith("port = ") for line in changed)  # comments and everything else stay the real file


def test_moving_an_agent_the_file_does_not_have_is_an_error() -> None:
    with pytest.raises(ValueError, match="no agent nx-exprt in the cluster file"):
        with_ports(SHIPPED_TEXT, {"nx-exprt": 20000})
