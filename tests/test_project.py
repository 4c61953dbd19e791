"""Project-wide rules: the module import order of STYLE.md, and exit codes documented in the README."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from bundler import errors

# STYLE.md: a module imports only modules in rows above it (earlier in this list).
ORDER = [
    "errors", "reference", "oci", "documents", "progress", "catalogue", "spec", "render", "sweep", "report",
    "registry", "layout", "archives", "pull", "semver", "charts", "lock", "xpkg", "crossplane_model", "crossplane_rules", "crossplane_pv", "crossplane", "relocate", "bom",
    "attest", "keys", "sign", "archive", "verify", "pipeline", "cli", "__main__", "__init__",
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
