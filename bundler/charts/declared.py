"""What a chart declares and what must be fetched for it: Chart.yaml / requirements.yaml, Chart.lock /
requirements.lock, read as helm's loader reads them (pkg/chart/loader/load.go), against what `charts/` vendors.

Input: a chart directory. Output: `Declared` (the dependencies, the lock, the files they came from, Helm 2
or not; `declared_dependencies`) and the dependencies to fetch (`plan` -> `Want`s): the lock's exact
versions when the chart has a lock, else the declared constraints, less those with no repository or a
fitting chart already in `charts/` (a dependency is kept at a fitting version, as `helm dependency build`
keeps it). Reads the chart's files only: fetches nothing (dependencies does) and checks no lock digest
(lockdigest).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..semver import Constraint, SemverError, Version
from .files import load_yaml, vendored
from .versions import helm_constraint


@dataclass(frozen=True)
class Declared:
    """A chart's dependencies and lock as helm 3 and 4 load them (pkg/chart/loader/load.go).

    `dependencies` are Chart.yaml's, or requirements.yaml's when it has a `dependencies:` key; `file` and
    `lock_file` name the files they came from (what a message tells the user to edit). `helm2`: the chart
    says `apiVersion: v1` (or nothing, which helm reads as v1), so a lock digest written by Helm 2 counts.
    """

    dependencies: tuple[Mapping[str, Any], ...]
    file: str
    lock: Mapping[str, Any] | None
    lock_file: str
    helm2: bool

    @property
    def stray(self) -> str | None:
        """The Helm 2 files an `apiVersion: v2` chart carries and helm still reads (with a warning)."""
        files = [f for f in (self.file, self.lock_file) if f.startswith("requirements.")]
        return " and ".join(files) if files and not self.helm2 else None


def declared_dependencies(root: Path, label: str) -> Declared:
    """The dependencies of the chart directory `root`, read as helm's loader reads them.

    Helm 2 charts (`apiVersion: v1`) declare them in requirements.yaml and lock them in requirements.lock.
    Helm 3 and 4 read both files for every apiVersion (a v2 chart gets only a warning): requirements.yaml
    into the same metadata as Chart.yaml, after it, and requirements.lock after Chart.lock. So
    requirements.yaml's `dependencies:` replaces Chart.yaml's; Go's encoding/json decodes each entry into
    the one already at that position, so a key Chart.yaml's entry sets and requirements.yaml's does not
    (an `alias:`) stays. requirements.lock, when present, is the lock.

    Raises:
        InputError: Chart.yaml, requirements.yaml or the lock is not a YAML mapping.
    """
    meta = load_yaml((root / "Chart.yaml").read_bytes(), f"{label}: Chart.yaml")
    declared = entries(meta.get("dependencies"))
    file = "Chart.yaml"
    requirements = root / "requirements.yaml"
    if requirements.is_file():
        stated = load_yaml(requirements.read_bytes(), f"{label}: requirements.yaml", empty_ok=True)
        if "dependencies" in stated:
            declared = [{**(declared[n] if n < len(declared) else {}),
                         **{k: v for k, v in entry.items() if v is not None}}
                        for n, entry in enumerate(entries(stated["dependencies"]))]
            file = "requirements.yaml"
    lock_file = "requirements.lock" if (root / "requirements.lock").is_file() else "Chart.lock"
    lock = (load_yaml((root / lock_file).read_bytes(), f"{label}: {lock_file}")
            if (root / lock_file).is_file() else None)
    return Declared(tuple(declared), file, lock, lock_file, str(meta.get("apiVersion") or "v1") == "v1")


def entries(value: Any) -> list[dict[str, Any]]:
    """The mappings of a `dependencies:` list (anything else in it, or a value that is no list, is none)."""
    return [dict(d) for d in value or [] if isinstance(d, dict)] if isinstance(value, list) else []


@dataclass(frozen=True)
class Want:
    """One dependency to satisfy: the lock's exact version, or the declared constraint."""

    name: str
    version: str
    repository: str
    exact: bool


def plan(root: Path, label: str) -> tuple[Declared, list[Want]]:
    """The chart's dependencies and lock, and the dependencies to fetch: those with a repository and no
    fitting chart in charts/ (helm assumes one without a repository "exists in the charts directory")."""
    declared = declared_dependencies(root, label)
    if not declared.dependencies:
        return declared, []
    have = vendored(root / "charts")
    todo = [w for w in _wants(declared)
            if w.repository and not any(_fits(v.version, w) for v in have if v.name == w.name)]
    return declared, todo


def _fits(version: str, want: Want) -> bool:
    if want.exact or not want.version:
        return not want.version or version == want.version
    try:
        parsed = Version.parse(version)
        return Constraint.parse(helm_constraint(want.version)).check(parsed)
    except SemverError:
        return False


def _wants(declared: Declared) -> list[Want]:
    """The lock's entries when the chart has a lock, else the declared ones (helm dependency build/update)."""
    if declared.lock is None:
        return [Want(str(d.get("name")), str(d.get("version") or ""), str(d.get("repository") or ""), False)
                for d in declared.dependencies]
    return [Want(str(d.get("name")), str(d.get("version") or ""), str(d.get("repository") or ""), True)
            for d in entries(declared.lock.get("dependencies"))]
