"""`helm dependency build` on a chart directory: its missing dependencies fetched into its `charts/`.

Input: a chart directory (a copy: the user's own directory is never changed), the directory it was copied
from (for `file://` dependencies; None for a fetched archive), a `FetchInto` that fetches and verifies one
archive, the spec's named repositories (`@name`/`alias:name` -> URL) and helm. Output: the
`FetchedChart`s put into `charts/`, in declared order.

As helm does it: the lock's versions when present, else the declared constraints (declared.plan); a
stale lock is refused as helm refuses it (its digest, lockdigest). Repositories `https://`, `oci://`,
`@name`/`alias:name`, `file://` (a local chart directory, packed by `helm package`) or none (vendored in
`charts/`). An outdated archive of a dependency fetched again is removed, and `helm dependency list`
(offline) must then report every dependency `ok`. Helm does not recurse into a dependency's own
dependencies; neither does this.

Spec: https://helm.sh/docs/helm/helm_dependency/ . Not here: where an archive comes from (fetch).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from ..errors import InputError, RenderError, UsageError
from ..render import Tools, condense
from .declared import Declared, Want, entries, plan
from .files import vendored
from .helm import check_dependencies
from .helm import run as helm
from .lockdigest import helm2_lock_digest, lock_digest
from .model import FetchedChart

log = logging.getLogger(__name__)


class FetchInto(Protocol):
    """Fetch and verify chart `name` of `repo` at `version` (or the lock's pin) into the folder `dest`."""

    def __call__(self, repo: str, name: str, version: str, dest: Path, *, label: str) -> FetchedChart: ...


def build(root: Path, local_dir: Path | None, *, fetch: FetchInto, repositories: Mapping[str, str], tools: Tools,
          label: str) -> tuple[FetchedChart, ...]:
    """Fill `root/charts/` as `helm dependency build` would; the archives fetched, in declared order.

    Raises:
        UsageError: an unknown `@repository`. InputError: a stale lock, a `file://` dependency that
        cannot be packed. RenderError: helm fails, or a dependency is still not satisfied.
    """
    declared, todo = plan(root, label)
    if not declared.dependencies:
        return ()
    charts_dir = root / "charts"
    charts_dir.mkdir(exist_ok=True)
    if declared.stray:
        log.warning("%s: an apiVersion v2 chart with %s: helm reads its dependencies from there, as this "
                    "does (helm 3 and 4 warn; move them into Chart.yaml and Chart.lock)", label, declared.stray)
    if todo and declared.lock is not None:
        _check_lock(declared, repositories, label, local=local_dir is not None)
    fetched: list[FetchedChart] = []
    for want in todo:
        have = [v for v in vendored(charts_dir) if v.name == want.name]
        for old in have:  # helm removes outdated archives of a dependency it downloads again
            shutil.rmtree(old.path) if old.path.is_dir() else old.path.unlink()
        if want.repository.startswith("file://"):
            _pack_local(want, local_dir, charts_dir, tools, label)
            continue
        repo = _repository(want.repository, want.name, repositories, label)
        dep = fetch(repo, want.name, want.version, charts_dir, label=f"{label}: dependency {want.name}")
        fetched.append(dep)
    check_dependencies(root, tools, label)
    return tuple(fetched)


def _check_lock(declared: Declared, repositories: Mapping[str, str], label: str, *, local: bool) -> None:
    """helm dependency build: the lock's digest must be helm's hash of the declared and locked
    dependencies; for a Helm 2 chart, also the hash Helm 2 wrote (helm's fallback, helm/helm#7233)."""
    assert declared.lock is not None
    resolved = [{**d, "repository": _repository(str(d.get("repository") or ""), str(d.get("name")), repositories,
                                                label)}
                if str(d.get("repository") or "").startswith(("@", "alias:")) else d
                for d in declared.dependencies]
    locked = entries(declared.lock.get("dependencies"))
    digest = str(declared.lock.get("digest"))
    if lock_digest(resolved, locked) == digest:
        return
    if declared.helm2 and helm2_lock_digest(declared.dependencies) == digest:
        return
    update = f"helm dependency update, which rewrites {declared.lock_file}"
    raise InputError(f"{label}: the lock file ({declared.lock_file}) is out of sync with the dependencies "
                     f"file ({declared.file})", hint=f"run {update}" if local else
                     f"the chart was published so: its publisher must run {update}, and publish it again")


def _repository(repository: str, name: str, repositories: Mapping[str, str], label: str) -> str:
    if repository.startswith(("@", "alias:")):
        alias = repository.removeprefix("@").removeprefix("alias:")
        if alias not in repositories:
            raise UsageError(f"{label}: dependency {name} names repository {repository!r}, which the spec "
                             "does not define", hint=f"add {{name: {alias}, url: ...}} under "
                                                     "sources.chartRepositories in the spec")
        return repositories[alias]
    return repository.rstrip("/")


def _pack_local(want: Want, local_dir: Path | None, charts_dir: Path, tools: Tools, label: str) -> None:
    if local_dir is None:
        raise InputError(f"{label}: dependency {want.name} is {want.repository}, a path on the publisher's "
                         "machine, and the archive does not carry it in charts/",
                         hint="ask the publisher to package the chart after helm dependency update")
    source = (local_dir / want.repository.removeprefix("file://")).resolve()
    if not (source / "Chart.yaml").is_file():
        raise InputError(f"{label}: dependency {want.name}: {source} is not a chart directory ({want.repository})")
    done = helm(tools, ["package", str(source), "--destination", str(charts_dir)], "helm package")
    if done.returncode != 0:
        raise RenderError(f"helm package {source} failed: {condense(done.stderr)}")
