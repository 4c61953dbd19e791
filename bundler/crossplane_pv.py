"""Crossplane gate rules PV-001..PV-011 and PKG-001..PKG-003: providers, functions and packages.

Input: a `Bundle` index (`crossplane_model.py`). Output: `Finding`s. Implements section 3 of
`shared/crossplane.md` ("the Provider version disagrees with the Composition's API group"): every
composed apiVersion/kind must be a built-in Kubernetes kind, a core Crossplane kind the target serves,
an XR of a bundled XRD at a served version, or served by exactly one bundled package at its pinned
version; otherwise it is (a) an unknown group/kind, (b) a version not served, or (c) two owners.
Dependencies close inside the bundle with Masterminds/semver v1.5.0 constraints (`semver.py`).

Pure code: no I/O. Does not read packages (`xpkg.py`) or decide the verdict (`crossplane.py`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import jsonschema

from .crossplane_model import (
    CORE_GROUPS,
    K8S_GROUPS,
    XP_APIEXT,
    XP_OPS,
    XP_PKG,
    Bundle,
    Composition,
    Finding,
    Template,
    Waiver,
    core_served,
    finding,
    group_of,
    mapping,
)
from .documents import Document, Path_
from .reference import ImageRef, looks_like_host
from .semver import Constraint, SemverError, Version
from .xpkg import Package

PACKAGE_KINDS = ("Provider", "Function", "Configuration")


# --- PV-003 first: waivers turn opaque steps into declared templates --------------------------------


def apply_waivers(b: Bundle, waivers: Sequence[Waiver]) -> Iterator[Finding]:
    """PV-003: opaque steps fail closed unless waived; a waived step contributes its declared GVKs."""
    used: set[Waiver] = set()
    for n, comp in enumerate(b.compositions):
        extra: list[Template] = []
        for op in comp.opaque:
            hits = [w for w in waivers if w.composition == comp.name and w.step in (None, op.step)]
            path: Path_ = ("spec", "pipeline", op.index, "input")
            if not hits:
                yield finding("PV-003", "error", f"Composition {comp.name} step {op.step}: {op.reason}; the checker "
                              "cannot see what it composes (render it, or waive it in the spec with the kinds it "
                              "produces)", comp.doc, path)
                continue
            used.update(hits)
            for w in hits:
                extra.extend(Template(comp.doc, op.step, gvk, None, path, via="waiver") for gvk in w.produces)
                yield finding("PV-003", "info", f"Composition {comp.name} step {op.step} is waived ({w.reason}); "
                              f"checking the kinds it declares: {', '.join(map(str, w.produces))}", comp.doc, path)
        if extra:
            b.compositions[n] = replace(comp, templates=comp.templates + tuple(extra))
    for w in waivers:
        if w not in used:
            yield finding("PV-003", "warn", f"waiver for Composition {w.composition} step {w.step or '*'} matches no "
                          "opaque step; remove it", None)


# --- PV-001 / PV-002 / PV-006 (template level) ------------------------------------------------------


def pv_001(b: Bundle) -> Iterator[Finding]:
    for comp in b.compositions:
        for t in comp.templates:
            yield from _agree(b, comp, t)


def _agree(b: Bundle, comp: Composition, t: Template) -> Iterator[Finding]:
    g, v, k = t.gvk.group, t.gvk.version, t.gvk.kind
    where = f"Composition {comp.name}" + (f" step {t.step}" if t.step else "")
    if not v or not k:
        yield t.finding("PV-001", "error", f"{where}: a composed template has no apiVersion or kind")
        return
    if g in K8S_GROUPS:  # (1) built-in Kubernetes
        return
    if g in CORE_GROUPS:
        served = core_served(b.target).get((g, k))
        if served is None or v not in served:
            yield t.finding("PV-001", "error", f"{where}: {t.gvk} is not served by Crossplane {b.target}")
        return
    xrds = b.xrds_for(g, k)
    if xrds:  # (2) an XR of a bundled XRD
        if not any(x.served(v) for x in xrds):
            yield t.finding("PV-001", "error", f"{where}: (b) version not served: XRD {xrds[0].doc.name} does not "
                            f"serve {v} (served: {', '.join(n for n, s, _, _ in xrds[0].versions if s)})")
        return
    owners = b.owners(g, k)
    if not owners:  # (a)
        in_group = sorted({str(p.ref) for (gg, _), lst in b.crd_owners.items() if gg == g for p, _ in lst})
        if in_group:
            why = f"{', '.join(in_group)} ships group {g} but no kind {k}"
        elif ".m." in f".{g}.":
            why = f"no bundled package ships the namespaced group {g} (.m. groups come with v2-line providers)"
        else:
            why = f"no bundled package ships group {g} (provider or family member missing)"
        yield t.finding("PV-001", "error", f"{where}: (a) unknown group/kind {t.gvk}: {why}")
        return
    serving = [(p, c) for p, c in owners if (cv := c.version(v)) is not None and cv.served]
    if len({id(p) for p, _ in serving}) > 1:  # (c)
        yield t.finding("PV-006", "error", f"{where}: (c) ambiguous owner: {t.gvk} is served by "
                        f"{' and '.join(str(p.ref) for p, _ in serving)}; keep exactly one")
        return
    if not serving:  # (b)
        detail = "; ".join(f"{p.ref} serves {', '.join(x.name for x in c.versions if x.served) or 'nothing'}"
                           for p, c in owners)
        yield t.finding("PV-001", "error", f"{where}: (b) version not served: {t.gvk}: {detail}")
        return
    pkg, crd = serving[0]
    cv = crd.version(v)
    if cv is not None and cv.deprecated:
        newer = [x.name for x in crd.versions if x.served and not x.deprecated]
        yield t.finding("PV-002", "warn", f"{where}: {t.gvk} is deprecated in {pkg.ref}"
                        + (f" (use {', '.join(newer)})" if newer else ""))


# --- PV-004 / PV-005 -----------------------------------------------------------------------------------


def pv_004(b: Bundle) -> Iterator[Finding]:
    for comp in b.compositions:
        ref = comp.type_ref
        path: Path_ = ("spec", "compositeTypeRef")
        if ref is None or not ref.group or not ref.kind:
            yield finding("PV-004", "error", f"Composition {comp.name} has no valid compositeTypeRef", comp.doc, path)
            continue
        xrds = b.xrds_for(ref.group, ref.kind)
        if not xrds:
            yield finding("PV-004", "error", f"Composition {comp.name}: no bundled XRD defines {ref}", comp.doc, path)
        elif len(xrds) > 1:
            yield finding("PV-004", "error", f"Composition {comp.name}: {len(xrds)} XRDs define {ref.group} {ref.kind} "
                          f"({', '.join(x.doc.name for x in xrds)})", comp.doc, path)
        else:
            v = xrds[0].served(ref.version)
            if v is None or not v[2]:
                yield finding("PV-004", "error", f"Composition {comp.name}: XRD {xrds[0].doc.name} has no served, "
                              f"referenceable version {ref.version}", comp.doc, (*path, "apiVersion"))


def _pipelines(b: Bundle) -> Iterator[tuple[Document, Path_, list[Any], str]]:
    """(document, path of the pipeline, steps, capability needed) for Compositions and Operations."""
    for doc in b.docs:
        group = group_of(doc.api_version)
        spec = mapping(doc.obj.get("spec"))
        if (group, doc.kind) == (XP_APIEXT, "Composition") and isinstance(spec.get("pipeline"), list):
            yield doc, ("spec", "pipeline"), spec["pipeline"], "composition"
        elif group == XP_OPS and doc.kind == "Operation" and isinstance(spec.get("pipeline"), list):
            yield doc, ("spec", "pipeline"), spec["pipeline"], "operation"
        elif group == XP_OPS and doc.kind in ("CronOperation", "WatchOperation"):
            tmpl = ((spec.get("operationTemplate") or {}).get("spec") or {})
            if isinstance(tmpl.get("pipeline"), list):
                yield doc, ("spec", "operationTemplate", "spec", "pipeline"), tmpl["pipeline"], "operation"


def _norm(text: str) -> str:
    return re.sub(r"[-_ ]", "", text.lower())


def pv_005(b: Bundle) -> Iterator[Finding]:
    for doc, base, steps, capability in _pipelines(b):
        for i, step in enumerate(steps):
            if not isinstance(step, dict):
                continue
            ref = mapping(step.get("functionRef"))
            name = str(ref.get("name", ""))
            path: Path_ = (*base, i, "functionRef", "name")
            pkg = b.functions.get(name)
            if pkg is None:
                yield finding("PV-005", "error", f"{doc.kind} {doc.name} step {step.get('step')}: function {name!r} is "
                              "not in the bundle (match a Function's metadata.name, or ToDNSLabel of a bundled "
                              f"function's repository: {', '.join(sorted(b.functions)) or 'none bundled'})", doc, path)
                continue
            caps = pkg.capabilities if pkg.capabilities is not None else ("composition",)
            if b.target.is_v2 and _norm(capability) not in {_norm(c) for c in caps}:
                yield finding("PV-005", "error", f"{doc.kind} {doc.name}: function {pkg.ref} does not declare the "
                              f"{capability!r} capability (has {', '.join(caps) or 'none'})", doc, path)
            inp = step.get("input")
            if isinstance(inp, dict):
                yield from _check_input(doc, (*base, i, "input"), inp, pkg)


def _check_input(doc: Document, path: Path_, inp: dict[str, Any], pkg: Package) -> Iterator[Finding]:
    api, kind = str(inp.get("apiVersion", "")), str(inp.get("kind", ""))
    crd = next((c for c in pkg.crds if c.group == group_of(api) and c.kind == kind), None)
    version = crd.version(api.rpartition("/")[2]) if crd is not None else None
    if crd is None or version is None or not version.served:
        offered = ", ".join(f"{c.group}/{v.name} {c.kind}" for c in pkg.crds for v in c.versions if v.served)
        yield finding("PV-005", "error", f"{doc.kind} {doc.name}: input {api} {kind} is not served by function "
                      f"{pkg.ref} (its input CRDs: {offered or 'none'})", doc, (*path, "apiVersion"))
        return
    schema = version.schema or {}
    props = schema.get("properties")
    if isinstance(props, dict) and not schema.get("x-kubernetes-preserve-unknown-fields"):
        for key in inp:
            if key not in props and key not in ("apiVersion", "kind", "metadata"):
                yield finding("PV-005", "error", f"{doc.kind} {doc.name}: input field {key!r} is not in the "
                              f"{api} {kind} schema of {pkg.ref}", doc, (*path, key))


# --- PV-006 / PV-007 / PV-008 --------------------------------------------------------------------------


def pv_006(b: Bundle) -> Iterator[Finding]:
    seen: dict[str, Package] = {}
    for pkg in b.packages:
        if pkg.identity in seen and seen[pkg.identity] is not pkg:
            yield finding("PV-006", "error", f"package {pkg.identity} is bundled twice ({seen[pkg.identity].ref} and "
                          f"{pkg.ref}); Crossplane installs one", pkg.meta, file=pkg.source)
        seen.setdefault(pkg.identity, pkg)
    for owners in b.crd_owners.values():
        distinct = list({id(p): (p, c) for p, c in owners}.values())
        for p, c in distinct[1:]:
            yield finding("PV-006", "error", f"CRD {c.name} is shipped by both {distinct[0][0].ref} and {p.ref}: "
                          "Crossplane cannot give it two owners (monolith plus family member, or one package from "
                          "two registries)", c.doc)


def pv_007(b: Bundle) -> Iterator[Finding]:
    families: dict[str, list[Package]] = {}
    for pkg in b.packages:
        if pkg.family:
            families.setdefault(pkg.family, []).append(pkg)
    for family, members in families.items():
        heads = [p for p in b.packages if p.name == family or p.ref.path.rsplit("/", 1)[-1] == family]
        if heads:
            want = heads[0].version
        else:
            want = Counter(p.version for p in members).most_common(1)[0][0]
        for pkg in members:
            if pkg.version != want:
                yield finding("PV-007", "error", f"{pkg.ref} is a member of {family} at {pkg.version}, but the family "
                              f"is at {want}; upjet family packages must move in lockstep (their dependsOn is "
                              "'>= 0.0.0', so Crossplane will not enforce it)", pkg.meta, file=pkg.source)


def default_registry(b: Bundle) -> str | None:
    """The registry an unqualified package name meant: none on v2, xpkg.crossplane.io on 1.20, upbound before."""
    if b.target.is_v2:
        return None
    return "xpkg.crossplane.io" if b.target.minor >= 20 else "xpkg.upbound.io"


def resolve_identity(b: Bundle, text: str) -> ImageRef | None:
    """The reference a package string stands for, with the target's default registry if it has none."""
    first, sep, _ = text.partition("/")
    if sep and looks_like_host(first):
        return ImageRef.try_parse(text)
    registry = default_registry(b)
    return ImageRef.try_parse(f"{registry}/{text}") if registry else None


def pv_008(b: Bundle) -> Iterator[Finding]:
    by_identity: dict[str, Package] = {p.identity: p for p in b.packages}
    for pkg in b.packages:
        for dep in pkg.depends_on:
            path: Path_ = ("spec", "dependsOn", dep.index)
            ref = resolve_identity(b, dep.package)
            if ref is None:
                if b.target.is_v2:
                    continue  # unqualified on v2: XP2-005 reports it, and nothing can resolve it
                yield finding("PV-008", "error", f"{pkg.ref}: dependency {dep.package!r} cannot be resolved",
                              pkg.meta, path)
                continue
            target = by_identity.get(ref.name)
            if target is None:
                yield finding("PV-008", "error", f"{pkg.ref} depends on {ref.name} ({dep.version or 'any version'}), "
                              "which the bundle does not carry; an air-gapped cluster cannot fetch it"
                              + _unpublished_note(b, ref, besides=pkg), pkg.meta, path)
                continue
            problem = _unsatisfied(target, dep.version)
            if problem:
                yield finding("PV-008", "error", f"{pkg.ref} depends on {ref.name} {dep.version!r}: {problem}",
                              pkg.meta, (*path, "version"))
        constraint = pkg.crossplane_constraint
        if constraint is not None:
            try:
                ok = Constraint.parse(constraint).check(b.target.version)
            except SemverError as exc:
                yield finding("PV-008", "error", f"{pkg.ref}: crossplane.version: {exc.message}", pkg.meta,
                              ("spec", "crossplane", "version"))
                continue
            if not ok:
                yield finding("PV-008", "error", f"{pkg.ref} requires Crossplane {constraint!r}; target is {b.target}",
                              pkg.meta, ("spec", "crossplane", "version"))
    for doc in b.docs:
        if group_of(doc.api_version) == XP_PKG and doc.kind in PACKAGE_KINDS:
            spec = mapping(doc.obj.get("spec"))
            for key in ("skipDependencyResolution", "ignoreCrossplaneConstraints"):
                if spec.get(key):
                    yield finding("PV-008", "warn", f"{doc.kind} {doc.name} sets {key}: the check above is what keeps "
                                  "the bundle consistent", doc, ("spec", key))


def _unsatisfied(pkg: Package, constraint: str) -> str | None:
    if not constraint:
        return "no version constraint"
    if constraint.startswith("sha256:"):  # an OCI digest compares exactly
        if pkg.ref.digest is None:
            return f"the bundle pins {pkg.ref} by tag, so its digest cannot be compared"
        return None if pkg.ref.digest == constraint else f"the bundle carries {pkg.ref.digest}"
    version = Version.try_parse(pkg.version or "")
    if version is None:
        return f"the bundled tag {pkg.version!r} is not a semantic version"
    try:
        ok = Constraint.parse(constraint).check(version)
    except SemverError as exc:
        return exc.message
    return None if ok else f"the bundle carries {pkg.version}"


# --- PV-009 / PV-010 / PV-011 --------------------------------------------------------------------------


def pv_009(b: Bundle) -> Iterator[Finding]:
    cpc_groups = {g for (g, k) in b.crd_owners if k == "ClusterProviderConfig"}
    ships_configs = any(d.kind in ("ProviderConfig", "ClusterProviderConfig") for d in b.docs)
    defaults = {group_of(d.api_version) for d in b.docs if d.kind == "ClusterProviderConfig" and d.name == "default"}
    for comp in b.compositions:
        for t in comp.templates:
            g = t.gvk.group
            if ".m." not in f".{g}." or not b.owners(g, t.gvk.kind) or t.gvk.kind.endswith("ProviderConfig"):
                continue
            if t.obj is not None and (t.obj.get("spec") or {}).get("providerConfigRef"):
                continue
            candidates = {g, g.partition(".")[2]}
            found = candidates & cpc_groups
            if not found:
                yield t.finding("PV-009", "error", f"Composition {comp.name}: {t.gvk} defaults to ClusterProviderConfig "
                                f"'default' but no bundled package ships a ClusterProviderConfig CRD in "
                                f"{' or '.join(sorted(candidates))} (bundle the family config package at the v2 line)")
            elif ships_configs and not (found & defaults):
                yield t.finding("PV-009", "warn", f"Composition {comp.name}: {t.gvk} defaults to ClusterProviderConfig "
                                f"'default', and the bundle ships provider configs but no 'default' in "
                                f"{' or '.join(sorted(found))}")


def pv_010(b: Bundle) -> Iterator[Finding]:
    if not b.target.is_v2:
        return
    mraps = [d for d in b.docs if (group_of(d.api_version), d.kind) == (XP_APIEXT, "ManagedResourceActivationPolicy")]
    if not mraps:
        return  # the Crossplane chart's MRAP 'default' activates '*' (README: what this cannot see)
    patterns = [str(p) for d in mraps for p in ((d.obj.get("spec") or {}).get("activate") or [])]
    for comp in b.compositions:
        for t in comp.templates:
            owners = b.owners(t.gvk.group, t.gvk.kind)
            if len(owners) != 1:
                continue
            pkg, crd = owners[0]
            if "safestart" not in {_norm(c) for c in pkg.capabilities or ()}:
                continue
            if not any(_activates(p, crd.name) for p in patterns):
                yield t.finding("PV-010", "error", f"Composition {comp.name}: {crd.name} comes from safe-start provider "
                                f"{pkg.ref} and no bundled ManagedResourceActivationPolicy activates it "
                                f"(patterns: {', '.join(patterns) or 'none'})")


def _activates(pattern: str, name: str) -> bool:
    """MRAP patterns: an exact <plural>.<group>, or a leading-only '*' wildcard."""
    if pattern.startswith("*"):
        return name.endswith(pattern[1:])
    return pattern == name


def pv_011(b: Bundle) -> Iterator[Finding]:
    """Schema validity of each extracted base against its CRD version schema, unknown fields rejected.

    Differences from `crossplane beta validate`: `required` is not enforced (bases are completed by
    patches), CEL `x-kubernetes-validations` rules are not run, and `metadata` is not checked.
    """
    validators: dict[int, jsonschema.Draft7Validator] = {}
    for comp in b.compositions:
        for t in comp.templates:
            owners = b.owners(t.gvk.group, t.gvk.kind)
            serving = [c for _, c in owners if (v := c.version(t.gvk.version)) is not None and v.served]
            if t.obj is None or len(serving) != 1:
                continue
            schema = serving[0].version(t.gvk.version).schema  # type: ignore[union-attr]
            if schema is None:
                yield t.finding("PV-011", "error", f"{serving[0].name} {t.gvk.version} carries no openAPIV3Schema; "
                                "the template cannot be validated")
                continue
            validator = validators.get(id(schema))
            if validator is None:
                validator = validators[id(schema)] = jsonschema.Draft7Validator(_strict(schema))
            for n, err in enumerate(sorted(validator.iter_errors(t.obj), key=lambda e: list(e.absolute_path))):
                if n == 5:
                    break
                where = ".".join(str(p) for p in err.absolute_path) or "(root)"
                yield t.finding("PV-011", "error", f"Composition {comp.name}: {t.gvk} at {where}: {err.message}",
                                (*t.path[:-1], *err.absolute_path))


def _strict(schema: Any, top: bool = True) -> Any:
    """A structural schema as JSON Schema: no `required`, unknown fields rejected, nullable honoured."""
    if isinstance(schema, list):
        return [_strict(s, False) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v, False) for k, v in schema.items() if k != "required" and not k.startswith("x-kubernetes")}
    if "properties" in schema:
        out["properties"] = {k: _strict(v, False) for k, v in schema["properties"].items()}
        if top:
            out["properties"]["metadata"] = {}
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["type"] = ["integer", "string"]
    if schema.get("nullable") and "type" in out:
        out["type"] = [*([out["type"]] if isinstance(out["type"], str) else out["type"]), "null"]
    return out


# --- PKG-001 / PKG-002 / PKG-003 ----------------------------------------------------------------------


def pkg_001(b: Bundle) -> Iterator[Finding]:
    for pkg in b.packages:
        for problem in pkg.problems:
            yield Finding("PKG-001", "error", f"package {pkg.ref}: {problem.message}", f"{pkg.source}", None,
                          f"Package/{pkg.ref}", problem.path or None)


def pkg_002(b: Bundle) -> Iterator[Finding]:
    for pkg in b.packages:
        if pkg.meta is None:
            continue
        version = pkg.meta.api_version.rpartition("/")[2]
        if version in ("v1alpha1", "v1beta1"):
            yield finding("PKG-002", "warn", f"package {pkg.ref}: meta {pkg.meta.api_version} is deprecated; use "
                          "meta.pkg.crossplane.io/v1", pkg.meta, ("apiVersion",))
        for dep in pkg.depends_on:
            if dep.key != "package":
                yield finding("PKG-002", "warn", f"package {pkg.ref}: dependsOn[{dep.index}].{dep.key} is deprecated; "
                              "use apiVersion/kind/package", pkg.meta, ("spec", "dependsOn", dep.index, dep.key))
        controller = mapping(pkg.spec.get("controller"))
        if b.target.is_v2:
            for key in ("image", "permissionRequests"):
                if controller.get(key):
                    yield finding("PKG-002", "warn", f"package {pkg.ref}: spec.controller.{key} is ignored by Crossplane "
                                  "2.0 (the package image is the runtime)", pkg.meta, ("spec", "controller", key))


def _unpublished_note(b: Bundle, wanted: ImageRef, *, besides: Package | None = None) -> str:
    """Identity matters only here: say so when a local package read without REF= might be the one meant."""
    local = [p for p in b.packages if not p.published and p is not besides]
    if not local:
        return ""
    names = ", ".join(f"{p.source} ({p.kind or 'package'} {p.name or p.ref.path})" for p in local)
    return (f"; a package read without REF= has no published identity ({names}): if it is the one meant, "
            f"pass --package {wanted.name}:VERSION=PATH")


def pkg_003(b: Bundle, images: frozenset[str]) -> Iterator[Finding]:
    refs = [p.ref for p in b.packages]
    for doc in b.docs:
        if group_of(doc.api_version) != XP_PKG or doc.kind not in PACKAGE_KINDS:
            continue
        text = (doc.obj.get("spec") or {}).get("package")
        ref = resolve_identity(b, text) if isinstance(text, str) else None
        if ref is None:
            continue  # XP2-005 reports it
        same = [r for r in refs if r.name == ref.name]
        if not any((ref.tag and r.tag == ref.tag) or (ref.digest and r.digest == ref.digest) for r in same):
            have = ", ".join(str(r) for r in same) or "no version of it"
            meant = "" if str(ref) == text else f" (Crossplane {b.target} reads it as {ref})"
            yield finding("PKG-003", "error", f"{doc.kind} {doc.name} installs {text}{meant}, but the bundle carries "
                          f"{have}" + _unpublished_note(b, ref), doc, ("spec", "package"))
    for pkg in b.packages:
        image = (pkg.spec.get("controller") or {}).get("image") if isinstance(pkg.spec.get("controller"), dict) else None
        if image and not b.target.is_v2 and str(image) not in images and (
                (r := ImageRef.try_parse(str(image))) is None or str(r) not in images):
            yield finding("PKG-003", "error", f"package {pkg.ref} runs controller image {image}, which the bundle's "
                          "image set does not carry", pkg.meta, ("spec", "controller", "image"))
    carried = [str(r) for r in refs] + sorted(images)
    for doc in b.docs:
        if (group_of(doc.api_version), doc.kind) != (XP_PKG, "ImageConfig"):
            continue
        for i, match in enumerate((doc.obj.get("spec") or {}).get("matchImages") or []):
            prefix = str(match.get("prefix", "")) if isinstance(match, dict) else ""
            if not any(c.startswith(prefix) for c in carried):
                yield finding("PKG-003", "error", f"ImageConfig {doc.name}: matchImages prefix {prefix!r} matches no "
                              "bundled package or image", doc, ("spec", "matchImages", i, "prefix"))


PV_RULES: tuple[Callable[[Bundle], Iterator[Finding]], ...] = (
    pv_001, pv_004, pv_005, pv_006, pv_007, pv_008, pv_009, pv_010, pv_011, pkg_001, pkg_002,
)
