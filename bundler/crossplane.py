"""The Crossplane gate: check a bundle's Crossplane objects and packages against a target version.

Input: the rendered documents (`list[Document]`), the bundled packages (`list[xpkg.Package]`), the
target Crossplane version, reviewed waivers for opaque composition steps, and the bundle's image set.
Output: a `Report` (verdict "pass"/"fail", findings with rule id, severity, message, file, line,
resource and field path). `require(report)` is the strict wrapper a build calls: it raises
`CrossplaneError` (exit 10) on "fail". The verdict is "fail" iff any finding has severity "error".

Rules (catalogue in docs/crossplane.md "Rules"):
XP2-001..XP2-009 in `crossplane_rules.py`; PV-001..PV-011 and PKG-001..PKG-003 in `crossplane_pv.py`.
Fail closed: an unknown or opaque template, a missing schema, an unparsable constraint or a
dependency the bundle lacks is an error, never a skip.

Does not pull packages (pass `Package`s read by `xpkg.py`), render charts, or run functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

from .crossplane_model import (
    CORE_GROUPS,
    GVK,
    Bundle,
    Finding,
    Report,
    Target,
    Waiver,
    group_of,
)
from .crossplane_pv import PV_RULES, apply_waivers, pkg_003
from .crossplane_rules import XP2_RULES
from .documents import Document, Origin, iter_documents, load_stream
from .errors import CrossplaneError, InputError, UsageError
from .spec import API_VERSION as SPEC_API_VERSION
from .spec import CrossplaneConfig, Spec
from .xpkg import Package, read_package

__all__ = [
    "GVK",
    "Finding",
    "Report",
    "Target",
    "Waiver",
    "check",
    "has_crossplane_objects",
    "is_spec_file",
    "load_manifests",
    "manifests_from_spec",
    "packages_from_spec",
    "require",
    "waivers_from_spec",
]

_SEVERITY_ORDER = {"error": 0, "warn": 1, "info": 2}


def check(docs: Sequence[Document], packages: Sequence[Package], *, target: Target,
          waivers: Sequence[Waiver] = (), images: Iterable[str] = ()) -> Report:
    """Run every rule and return the report (never raises on findings; see `require`).

    Args:
        docs: rendered manifests (Lists are flattened here).
        packages: every Crossplane package the bundle carries, each pinned by its reference.
        target: the Crossplane version the bundle is built for.
        waivers: reviewed exceptions for opaque pipeline steps (PV-003).
        images: every image reference the bundle carries (for PKG-003's runtime-image check).
    """
    bundle = Bundle.index(list(iter_documents(list(docs))), list(packages), target)
    findings: list[Finding] = list(apply_waivers(bundle, waivers))
    for rule in (*XP2_RULES, *PV_RULES):
        findings.extend(rule(bundle))
    findings.extend(pkg_003(bundle, frozenset(images)))
    findings = sorted(set(findings), key=lambda f: (_SEVERITY_ORDER[f.severity], f.rule, f.file or "", f.line or 0,
                                                    f.message))
    verdict: Literal["pass", "fail"] = "fail" if any(f.severity == "error" for f in findings) else "pass"
    return Report(verdict, str(target), tuple(findings))


def require(report: Report) -> Report:
    """Return the report if it passed.

    Raises:
        CrossplaneError: the verdict is "fail"; the message names the first error and the count.
    """
    if report.verdict == "pass":
        return report
    errors = report.errors
    first = errors[0]
    where = f"{first.file}:{first.line}: " if first.file and first.line else (f"{first.file}: " if first.file else "")
    raise CrossplaneError(
        f"Crossplane gate failed for target {report.target}: {len(errors)} error(s); first: "
        f"{where}{first.rule} {first.message}",
        hint="run `airgap-bundle crossplane check` for every finding",
    )


def has_crossplane_objects(docs: Sequence[Document]) -> bool:
    """True when the documents hold Crossplane objects (the build runs the gate then)."""
    return any(group_of(d.api_version) in CORE_GROUPS for d in iter_documents(list(docs)))


def load_manifests(paths: Iterable[Path]) -> list[Document]:
    """Read plain manifest files (a directory: its *.yaml/*.yml files, sorted).

    Raises:
        InputError: a path is missing, unreadable or malformed YAML.
    """
    docs: list[Document] = []
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml")) if path.is_dir() else [path]
        for file in files:
            try:
                text = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise InputError(f"{file}: cannot read: {exc}") from None
            docs.extend(load_stream(text, Origin(str(file), 1)))
    return docs


# --- spec wiring (the pipeline and `crossplane check SPEC` share these) --------------------------------


def waivers_from_spec(config: CrossplaneConfig) -> tuple[Waiver, ...]:
    """`crossplane.waivers` of the spec as `Waiver`s.

    Raises:
        UsageError: a waiver without `produces` or `reason`.
    """
    return tuple(Waiver(w.composition, w.step, tuple(GVK(a, k) for a, k in w.produces), w.reason)
                 for w in config.waivers)


def packages_from_spec(config: CrossplaneConfig) -> list[Package]:
    """Read the spec's local packages (`{ref, path}`); a package without `path` must be pulled first.

    Raises:
        UsageError: a package has no local path (the pipeline pulls those and calls `xpkg.read_layout`).
        InputError: a package file cannot be read.
    """
    out = []
    for source in config.packages:
        if source.path is None:
            raise UsageError(f"crossplane package {source.ref} has no local path",
                             hint="`crossplane check` reads local packages; `build` pulls the others")
        out.append(read_package(f"{source.ref}={source.path}"))
    return out


def is_spec_file(path: Path) -> bool:
    """True when `path` is a bundle spec (`apiVersion: airgap-bundle.dev/v1alpha1`), not a manifest."""
    if not path.is_file() or path.suffix not in (".yaml", ".yml"):
        return False
    try:
        head = path.read_text(encoding="utf-8", errors="replace")[:65536]
    except OSError:
        return False
    return any(line.strip() in (f"apiVersion: {SPEC_API_VERSION}", f'apiVersion: "{SPEC_API_VERSION}"')
               for line in head.splitlines())


def manifests_from_spec(spec: Spec) -> list[Document]:
    """The spec's plain manifests. Charts and Kustomize bases need rendering first.

    Raises:
        UsageError: the spec has charts or Kustomize bases (fail closed rather than check half the inputs).
        InputError: a manifest cannot be read.
    """
    import glob

    if spec.charts or spec.kustomize:
        raise UsageError(f"{spec.path}: the spec renders charts or Kustomize bases, which `crossplane check` does "
                         "not do", hint="render them (helm template / kubectl kustomize) and pass the output as "
                                        "MANIFEST arguments, or run `build`, which renders first")
    paths: list[Path] = []
    for entry in spec.manifests:
        hits = sorted(glob.glob(entry, recursive=True))
        if not hits:
            raise InputError(f"{spec.path}: manifests entry {entry} matches nothing")
        paths.extend(Path(h) for h in hits)
    return load_manifests(paths)
