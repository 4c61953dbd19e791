"""The documentation a user gets with a clone: links that resolve inside the repository, a README that stays a
front door, and examples in docs/ that are the real files and commands."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import yaml

from bundler.cli import cli

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)
CODE = re.compile(r"`[^`\n]+`")


def _pages(repo_root: Path) -> list[Path]:
    return [repo_root / "README.md", *sorted((repo_root / "docs").glob("*.md"))]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())  # a `# comment` inside a code block is no heading
    return {_slug(m) for m in re.findall(r"^#{1,6} (.+)$", text, re.M)}


def test_every_relative_link_resolves_inside_the_repository(repo_root: Path) -> None:
    broken = []
    for page in _pages(repo_root):
        for target in LINK.findall(CODE.sub("", FENCE.sub("", page.read_text()))):
            if re.match(r"[a-z]+:", target):
                continue  # a public URL
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            where = f"{page.relative_to(repo_root)} -> {target}"
            if not resolved.is_relative_to(repo_root.resolve()):
                broken.append(f"{where}: outside the repository")
            elif not resolved.exists():
                broken.append(f"{where}: no such file")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{where}: no heading with that anchor")
    assert not broken, "\n".join(broken)


def test_nothing_cites_files_a_clone_does_not_have(repo_root: Path) -> None:
    """The design rules live in docs/design.md; DESIGN.md, STYLE.md and shared/crossplane.md are not in the repository."""
    cited = []
    files = [*_pages(repo_root), *sorted((repo_root / "bundler").rglob("*.py")), *sorted((repo_root / "scripts").iterdir()),
             *sorted((repo_root / "tests").rglob("*.py"))]
    for path in files:
        if path.is_file() and path != Path(__file__).resolve():
            text = path.read_text(errors="replace")
            cited += [f"{path.relative_to(repo_root)}: {m}"
                      for m in re.findall(r"DESIGN(?:\.md)?\b|STYLE(?:\.md)?\b|\.\./shared|shared/\w+\.md", text)]
    assert not cited, "\n".join(cited)


def test_readme_is_a_front_door(repo_root: Path) -> None:
    readme = (repo_root / "README.md").read_text()
    assert len(readme.encode()) < 12 * 1024, "the README grew past 12 KB: move the detail into docs/"
    assert "scripts/setup.sh && scripts/demo.sh" in readme and "scripts/test" in readme


def test_the_spec_example_in_the_docs_is_the_real_file(repo_root: Path) -> None:
    page = (repo_root / "docs" / "release-engineer.md").read_text()
    example = (repo_root / "examples" / "bundle.yaml").read_text()
    assert example in [body for kind, body in FENCE.findall(page) if kind == "yaml"], \
        "docs/release-engineer.md must show examples/bundle.yaml as it is"


def _workflow(repo_root: Path) -> dict[str, object]:
    page = (repo_root / "docs" / "ci.md").read_text()
    workflows = [yaml.safe_load(body) for kind, body in FENCE.findall(page) if kind == "yaml"]
    assert len(workflows) == 1
    assert isinstance(workflows[0], dict)
    return workflows[0]


def test_the_github_actions_example_is_a_workflow(repo_root: Path) -> None:
    workflow = _workflow(repo_root)
    assert {"name", "jobs"} <= set(workflow) and True in workflow  # YAML 1.1 reads the key `on` as True
    jobs = workflow["jobs"]
    assert isinstance(jobs, dict)
    for job in jobs.values():
        assert "runs-on" in job and job["steps"]
        for step in job["steps"]:
            assert ("uses" in step) != ("run" in step), step
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@v\d+", step.get("uses", "a/b@v1")), step


def test_the_workflow_runs_airgap_bundle_with_options_it_has(repo_root: Path) -> None:
    """Every `airgap-bundle ...` in the workflow parses against the real click commands (nothing is run)."""
    jobs = _workflow(repo_root)["jobs"]
    assert isinstance(jobs, dict)
    commands = [step["run"] for job in jobs.values() for step in job["steps"]
                if step.get("run", "").startswith("airgap-bundle ")]
    assert commands
    for command in commands:
        name, *args = shlex.split(command.split(">")[0])[1:]
        sub = cli.commands[name]
        try:
            sub.make_context(name, args)
        except click.BadParameter as exc:  # pragma: no cover - only when the workflow names a file of its own
            assert "does not exist" in str(exc), command
