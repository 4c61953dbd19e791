"""Project-wide rules: the module import order (docs/design.md), and exit codes documented in the README."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from bundler import errors

# docs/design.md: a module imports only modules in rows above it (earlier in this list).
ORDER = [
    "errors", "reference", "oci", "documents", "progress", "catalogue", "spec", "render", "sweep", "report",
    "transport", "registry", "layout", "archives", "pull", "semver", "charts", "lock", "xpkg", "crossplane_model", "crossplane_rules", "crossplane_pv", "crossplane", "relocate", "bom",
    "attest", "keys", "sign", "bundlefile", "archive", "verify", "parts", "update", "audit", "inspect", "push", "pipeline",
    "cli", "__main__", "__init__",
]


def _bundler_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 2 and node.module:
            found.add(node.module.split(".")[0])  # from ..errors import ... inside a stage subpackage
        elif isinstance(node, ast.ImportFrom) and node.level == 1 and path.parent.name != "bundler":
            continue  # a sibling inside the same subpackage
        elif isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bundler."):
            found.add(node.module.split(".")[1])
    return found


def _room(path: Path, package: Path) -> str:
    """A module's row: its stem, or for a stage subpackage (`bundler/relocate/helm.py`) the package."""
    return path.stem if path.parent == package else path.relative_to(package).parts[0]


def test_modules_import_only_earlier_stages(repo_root: Path) -> None:
    package = repo_root / "bundler"
    modules = sorted(package.rglob("*.py"))
    unknown = sorted({_room(m, package) for m in modules} - set(ORDER))
    assert not unknown, f"add these modules to ORDER in tests/test_project.py: {unknown}"
    for module in modules:
        room = _room(module, package)
        rank = ORDER.index(room)
        for imported in _bundler_imports(module):
            if imported in ORDER and imported != room:
                assert ORDER.index(imported) < rank, f"{module} imports {imported}, a later stage"


def test_every_exit_code_is_documented(repo_root: Path) -> None:
    readme = (repo_root / "README.md").read_text()
    section = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {int(m) for m in re.findall(r"^\|\s*(\d+)\s*\|", section, re.M)}
    codes = {cls.exit_code for cls in vars(errors).values()
             if isinstance(cls, type) and issubclass(cls, errors.BundlerError)}
    assert codes <= documented, f"exit codes missing from README: {sorted(codes - documented)}"


def test_packaging_lists_every_folder_and_data_file(repo_root: Path) -> None:
    """`pip install` warns about a folder setuptools' configuration does not list (bundler.schemas was one):
    every folder under bundler/ that holds files is a discovered package, and every file that is not
    Python is matched by package-data, so the wheel carries it and setuptools has nothing to say."""
    import fnmatch
    import tomllib

    from setuptools import find_namespace_packages

    config = tomllib.loads((repo_root / "pyproject.toml").read_text())
    assert isinstance(config["project"]["license"], str), "license as an SPDX string (a table is deprecated)"
    find = config["tool"]["setuptools"]["packages"]["find"]
    packages = set(find_namespace_packages(str(repo_root), include=find["include"], exclude=find["exclude"]))
    data: dict[str, list[str]] = config["tool"]["setuptools"]["package-data"]
    for path in sorted((repo_root / "bundler").rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        package = ".".join(path.parent.relative_to(repo_root).parts)
        assert package in packages, f"{package} is not a discovered package"
        if path.suffix != ".py":
            assert any(fnmatch.fnmatch(path.name, pattern) for pattern in data.get(package, ())), \
                f"{path.relative_to(repo_root)} is matched by no package-data pattern"


def test_container_image_recipe(repo_root: Path) -> None:
    """No docker engine runs here, so the Dockerfile's promises are checked as text: tools fetched for the
    image's own architecture, an unprivileged user from the first instruction after the tools on, and a
    build context without the venv, the tool binaries, git history or node_modules."""
    dockerfile = (repo_root / "Dockerfile").read_text()
    instructions = [ln.split(None, 1) for ln in dockerfile.splitlines() if ln and not ln.startswith(("#", " "))]
    keywords = [i[0] for i in instructions]
    assert ["ARG", "TARGETARCH"] in instructions
    assert 'fetch_tools.py --arch "${TARGETARCH}"' in dockerfile
    user = instructions[keywords.index("USER")][1]
    assert user.split(":")[0] not in ("root", "0") and keywords.index("USER") < keywords.index("ENTRYPOINT")
    assert keywords.index("USER") > max(n for n, k in enumerate(keywords) if k == "RUN")  # nothing runs as root after
    ignored = {ln.strip() for ln in (repo_root / ".dockerignore").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")}
    assert {".venv", ".tools", ".git", "tests/interop/node_modules", "**/__pycache__", ".pytest_cache"} <= ignored
    copied = [i[1].split()[0] for i in instructions if i[0] == "COPY"]
    assert not any(c.startswith((".venv", ".tools", ".git")) or c == "." for c in copied)


def test_tracked_symlinks_stay_inside_the_repository(repo_root: Path) -> None:
    """A worktree's `.tools -> /work/main/.tools` link was once committed (`.tools/` in .gitignore matched only a
    folder, not a link): in a clone it points at nothing, or at itself. Only relative links within the tree."""
    import os
    import subprocess

    listed = subprocess.run(["git", "ls-files", "-s"], cwd=repo_root, capture_output=True, text=True, check=True)
    links = [line.split("\t", 1)[1] for line in listed.stdout.splitlines() if line.startswith("120000 ")]
    assert links, "schemas and templates are links into bundler/"
    for link in links:
        target = os.readlink(repo_root / link)
        inside = (repo_root / link).parent.joinpath(target).resolve().is_relative_to(repo_root.resolve())
        assert not os.path.isabs(target) and inside, f"{link} -> {target} points outside the repository"


@pytest.mark.parametrize("hook", ["build_editable", "build_wheel"])
def test_packaging_builds_without_a_setuptools_warning(repo_root: Path, tmp_path: Path, hook: str) -> None:
    """What `pip install -e .` and `pip install .` run (the PEP 517/660 hooks), offline, with every Python
    warning an error: a deprecated `license` table, a folder missing from the packages, or the import-hook
    editable mode all warn, and pip prints those warnings even with -q."""
    import shutil
    import subprocess
    import sys

    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(repo_root / name, src / name)
    shutil.copytree(repo_root / "bundler", src / "bundler", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "dist"
    out.mkdir()
    done = subprocess.run([sys.executable, "-W", "error", "-c",
                           f"import setuptools.build_meta as b; print(b.{hook}({str(out)!r}))"],
                          cwd=src, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1].endswith(".whl")
