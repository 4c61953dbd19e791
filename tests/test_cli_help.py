"""Every command teaches itself: `--help` shows an example, the examples use options the command has, the
top-level command list is not cut off mid-phrase, and `verify --help` shows a policy that loads."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from bundler.cli import cli


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, group
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


COMMANDS = list(_commands(cli))


def _help(path: tuple[str, ...]) -> str:
    done = CliRunner().invoke(cli, [*path, "--help"], terminal_width=80)
    assert done.exit_code == 0, done.output
    return done.output


def _example_lines(text: str) -> list[str]:
    """The `airgap-bundle ...` command lines of the help's Example(s) paragraphs, continuations joined."""
    lines = text.split("\n")
    start = next(i for i, line in enumerate(lines) if re.match(r"\s+Examples?\b", line))
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines[start:]))
    return [m.strip() for m in re.findall(r"^\s+(airgap-bundle [^\n]*)$", joined, re.M)]


def test_the_group_is_walked_whole() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"", "build", "sweep", "verify", "push", "keys", "keys generate", "crossplane check"} <= names


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) or "airgap-bundle" for p, _ in COMMANDS])
def test_help_shows_a_working_example(path: tuple[str, ...], command: click.Command) -> None:
    text = _help(path)
    assert re.search(r"^\s+Examples?\b", text, re.M), f"{' '.join(path)} --help has no Example section"
    examples = _example_lines(text)
    assert examples, f"{' '.join(path)} --help: no airgap-bundle command under Example"
    for example in examples:
        words = shlex.split(example.split(" #")[0].split(" >")[0])[1:]
        target: click.Command = cli
        while isinstance(target, click.Group) and words and words[0] in target.commands:
            target = target.commands[words.pop(0)]
        assert not isinstance(target, click.Group), f"example names no command: {example}"
        try:
            target.make_context(target.name or "", words)
        except click.BadParameter as exc:
            assert "does not exist" in str(exc), f"{example}: {exc}"  # the user's files, not this machine's


@pytest.mark.parametrize("path", [p for p, c in COMMANDS if isinstance(c, click.Group)],
                         ids=lambda p: " ".join(p) or "airgap-bundle")
def test_command_summaries_are_not_cut_off(path: tuple[str, ...]) -> None:
    text = _help(path)
    listing = text.split("Commands:\n", 1)[1]
    rows = [line for line in listing.splitlines() if line.strip()]
    assert rows
    for row in rows:
        assert not row.rstrip().endswith("..."), f"summary cut off mid-phrase: {row.strip()}"


def test_verify_help_shows_a_policy_that_loads(tmp_path: Path) -> None:
    from bundler import keys

    text = _help(("verify",))
    block = text.split("The policy", 1)[1].split("\n\n", 1)[0].split("\n", 1)[1]
    policy = "\n".join(line[4:] for line in block.splitlines())
    runner = CliRunner()
    for args in (["--out", str(tmp_path / "vendor-root"), "--ca"],
                 ["--out", str(tmp_path / "customer"), "--type", "ed25519"]):
        done = runner.invoke(cli, ["keys", "generate", *args])
        assert done.exit_code == 0, done.output
    (tmp_path / "policy.yaml").write_text(policy)
    trust = keys.load_trust(tmp_path / "policy.yaml")
    assert sorted(trust.authorities) == ["customer", "vendor"]
    assert trust.authorities["customer"].required
