"""Crossplane gate rules XP2-001..XP2-009: the v2 breaking changes and target API validity.

Input: a `Bundle` index (`crossplane_model.py`). Output: `Finding`s. Each rule is a generator named
after its id; `XP2_RULES` lists them in order. Detection follows the Crossplane v2 upgrade notes and
the upstream upgrade check (crossplane/crossplane@v1.20.11 `cmd/crank/beta/upgrade/check/*.go`):
`native_pnt.go` (XP2-001), `controller_config.go` (XP2-002), `secret_stores.go` (XP2-003),
`connection_details.go` (XP2-004), `package_source.go` (XP2-005).

Pure code: no I/O. Does not check providers against compositions (that is `crossplane_pv.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from .crossplane_model import (
    CORE_GROUPS,
    K8S_CLUSTER_KINDS,
    K8S_GROUPS,
    PT_GROUP,
    V2_ONLY_KINDS,
    XP_APIEXT,
    XP_OPS,
    XP_PKG,
    XP_PROTECTION,
    XP_SECRETS,
    Bundle,
    Finding,
    Severity,
    Target,
    core_deprecated,
    core_served,
    finding,
    group_of,
    version_of,
    walk,
)
from .documents import Document
from .reference import ImageRef, looks_like_host
from .semver import Version

PACKAGE_KINDS = ("Provider", "Function", "Configuration")
ESS_FLAG = "--enable-external-secret-stores"


def _sev(target: Target, *, v2: Severity = "error", v1: Severity = "warn") -> Severity:
    return v2 if target.is_v2 else v1


def xp2_001(b: Bundle) -> Iterator[Finding]:
    """Native patch-and-transform (mode Resources, deprecated in 1.17, removed in 2.0)."""
    if not b.target.is_v2 and b.target < Target(1, 17):
        return
    sev = _sev(b.target)
    for comp in b.compositions:
        spec = comp.spec
        mode = spec.get("mode")
        if mode in (None, "Resources"):
            why = "has no spec.mode (v1.20 defaults it to Resources)" if mode is None else "uses mode: Resources"
            yield finding("XP2-001", sev, f"Composition {comp.name} {why}; Crossplane 2.0 accepts only mode: Pipeline",
                          comp.doc, ("spec", "mode") if mode else ("spec",))
        for key in ("resources", "patchSets"):
            if spec.get(key):
                yield finding("XP2-001", sev, f"Composition {comp.name} has spec.{key} (native patch-and-transform); "
                              "move it into a function-patch-and-transform step", comp.doc, ("spec", key))


def xp2_002(b: Bundle) -> Iterator[Finding]:
    """ControllerConfig (removed in 2.0; use DeploymentRuntimeConfig via spec.runtimeConfigRef)."""
    sev = _sev(b.target)
    for doc in b.docs:
        group = group_of(doc.api_version)
        if (group, doc.kind) == (XP_PKG, "ControllerConfig"):
            yield finding("XP2-002", sev, f"ControllerConfig {doc.name} is removed in Crossplane 2.0; "
                          "use a DeploymentRuntimeConfig", doc)
        elif group == XP_PKG and doc.kind in ("Provider", "Function") and _spec(doc).get("controllerConfigRef"):
            yield finding("XP2-002", sev, f"{doc.kind} {doc.name} sets spec.controllerConfigRef, removed in 2.0; "
                          "use spec.runtimeConfigRef", doc, ("spec", "controllerConfigRef"))


def xp2_003(b: Bundle) -> Iterator[Finding]:
    """External secret stores (removed in 2.0)."""
    sev = _sev(b.target)
    for doc in b.docs:
        group = group_of(doc.api_version)
        if doc.kind in ("CustomResourceDefinition", "CompositeResourceDefinition"):
            continue  # their schemas name these fields; only objects use them
        if group == XP_SECRETS or doc.kind in ("StoreConfig", "VaultConfig"):
            yield finding("XP2-003", sev, f"{doc.api_version} {doc.kind} {doc.name} is an external secret store "
                          "config, removed in Crossplane 2.0", doc)
        if (group, doc.kind) == (XP_APIEXT, "Composition"):
            ref = _spec(doc).get("publishConnectionDetailsWithStoreConfigRef")
            name = ref.get("name") if isinstance(ref, dict) else None
            if ref is not None:
                # The v1.20 CRD defaults it to {name: default}; upstream's check skips that value.
                yield finding("XP2-003", sev if name != "default" else "warn",
                              f"Composition {doc.name} publishes connection details to store config {name!r}; "
                              "removed in 2.0", doc, ("spec", "publishConnectionDetailsWithStoreConfigRef"))
        for path, key, value in walk(doc.obj):
            if key == "publishConnectionDetailsTo":
                yield finding("XP2-003", sev, f"{doc.kind} {doc.name} sets publishConnectionDetailsTo (external secret "
                              "stores, removed in 2.0; v2-era providers dropped the field)", doc, path)
            elif isinstance(value, str) and value.startswith(ESS_FLAG):
                yield finding("XP2-003", sev, f"{doc.kind} {doc.name} passes {ESS_FLAG}; removed in 2.0", doc, path)


def xp2_004(b: Bundle) -> Iterator[Finding]:
    """Native XR connection details outside LegacyCluster (v2 only)."""
    if not b.target.is_v2:
        return
    for x in b.xrds:
        keys = _spec(x.doc).get("connectionSecretKeys")
        if keys is None or version_of(x.doc.api_version) == "v2":
            continue  # v2 XRDs: XP2-006
        if x.scope == "LegacyCluster":
            yield finding("XP2-004", "info", f"XRD {x.doc.name} declares connectionSecretKeys; they work only for "
                          "LegacyCluster XRs", x.doc, ("spec", "connectionSecretKeys"))
        else:
            yield finding("XP2-004", "error", f"XRD {x.doc.name} is {x.scope} and declares connectionSecretKeys; "
                          "the v2 CRD rejects that (compose your own Secret)", x.doc, ("spec", "connectionSecretKeys"))
    for comp in b.compositions:
        ref = comp.type_ref
        xrds = b.xrds_for(ref.group, ref.kind) if ref else []
        legacy = not xrds or xrds[0].scope == "LegacyCluster"
        if comp.spec.get("writeConnectionSecretsToNamespace"):
            yield finding("XP2-004", "info" if legacy else "warn",
                          f"Composition {comp.name}: writeConnectionSecretsToNamespace "
                          + ("applies only to LegacyCluster XRs" if legacy else "is ignored for a non-legacy XR"),
                          comp.doc, ("spec", "writeConnectionSecretsToNamespace"))
        for i, step in comp.steps():
            inp = step.get("input")
            if not isinstance(inp, dict) or group_of(str(inp.get("apiVersion", ""))) != PT_GROUP:
                continue
            writes = bool(inp.get("writeConnectionSecretToRef")) and _pt_supports_secret_ref(b, step)
            for j, res in enumerate(inp.get("resources") or []):
                if isinstance(res, dict) and res.get("connectionDetails"):
                    sev: Severity = "info" if legacy or writes else "warn"
                    yield finding("XP2-004", sev, f"Composition {comp.name} step {step.get('step')}: connectionDetails "
                                  + ("are written to input.writeConnectionSecretToRef" if writes and not legacy
                                     else "work only for LegacyCluster XRs" if legacy
                                     else "are silently dropped for a non-legacy XR (function-patch-and-transform "
                                          ">= v0.10.0 with input.writeConnectionSecretToRef keeps them)"),
                                  comp.doc, ("spec", "pipeline", i, "input", "resources", j, "connectionDetails"))
    for doc in b.docs:  # XR instances of modern XRDs
        group = group_of(doc.api_version)
        if group in CORE_GROUPS or group in K8S_GROUPS:
            continue
        xrds = b.xrds_for(group, doc.kind)
        if xrds and xrds[0].scope != "LegacyCluster" and _spec(doc).get("writeConnectionSecretToRef"):
            yield finding("XP2-004", "warn", f"{doc.kind} {doc.name} is a {xrds[0].scope} XR; "
                          "spec.writeConnectionSecretToRef is not supported", doc, ("spec", "writeConnectionSecretToRef"))


def _pt_supports_secret_ref(b: Bundle, step: dict[str, object]) -> bool:
    ref = step.get("functionRef")
    pkg = b.functions.get(str(ref.get("name"))) if isinstance(ref, dict) else None
    version = Version.try_parse(pkg.version or "") if pkg is not None else None
    return version is not None and version.compare(Version(0, 10, 0)) >= 0


def xp2_005(b: Bundle) -> Iterator[Finding]:
    """Fully qualified package references (no default registry in 2.0)."""
    sev = _sev(b.target)
    for doc in b.docs:
        if group_of(doc.api_version) == XP_PKG and doc.kind in PACKAGE_KINDS:
            problem = unqualified(_spec(doc).get("package"))
            if problem:
                yield finding("XP2-005", sev, f"{doc.kind} {doc.name}: spec.package {problem}", doc, ("spec", "package"))
    for pkg in b.packages:
        for dep in pkg.depends_on:
            problem = unqualified(dep.package, need_version=False)
            if problem:
                yield finding("XP2-005", sev, f"package {pkg.ref}: dependsOn {problem}", pkg.meta,
                              ("spec", "dependsOn", dep.index, dep.key))


def unqualified(text: object, *, need_version: bool = True) -> str | None:
    """Why a package reference is not fully qualified (StrictValidation semantics), or None if it is.

    `need_version=False` for meta `dependsOn` entries: they name a repository and put the constraint
    in `version`.
    """
    if not isinstance(text, str) or not text:
        return "is missing"
    ref = ImageRef.try_parse(text)
    if ref is None:
        return f"{text!r} is not a valid image reference"
    first, sep, _ = text.partition("/")
    if not sep or not looks_like_host(first):
        return f"{text!r} has no registry host (Crossplane 2.0 has no default registry; 1.20 assumed " \
               "xpkg.crossplane.io and 1.19 xpkg.upbound.io)"
    if need_version and ref.tag is None and ref.digest is None:
        return f"{text!r} has neither a tag nor a digest"
    return None


def xp2_006(b: Bundle) -> Iterator[Finding]:
    """XRD API validity for the target."""
    for x in b.xrds:
        version = version_of(x.doc.api_version)
        spec = _spec(x.doc)
        if not b.target.is_v2:
            if version == "v2":
                yield finding("XP2-006", "error", f"XRD {x.doc.name} is apiextensions.crossplane.io/v2, which "
                              f"Crossplane {b.target} does not serve", x.doc, ("apiVersion",))
            elif "scope" in spec:
                yield finding("XP2-006", "error", f"XRD {x.doc.name} sets spec.scope, which Crossplane {b.target} "
                              "does not have", x.doc, ("spec", "scope"))
            continue
        if version == "v1":
            yield finding("XP2-006", "warn", f"XRD {x.doc.name} uses the deprecated apiextensions.crossplane.io/v1 "
                          f"(effective scope {x.scope}); move to v2", x.doc, ("apiVersion",))
            continue
        for key in ("claimNames", "connectionSecretKeys"):
            if key in spec:
                yield finding("XP2-006", "error", f"XRD {x.doc.name}: v2 XRDs reject spec.{key}", x.doc, ("spec", key))
        if spec.get("scope") == "LegacyCluster":
            yield finding("XP2-006", "error", f"XRD {x.doc.name}: scope LegacyCluster is not allowed in v2 XRDs",
                          x.doc, ("spec", "scope"))


def xp2_007(b: Bundle) -> Iterator[Finding]:
    """Only core API versions the target serves (ControllerConfig, StoreConfig, XRD and v2-only kinds
    are reported by XP2-002, XP2-003, XP2-006 and XP2-009)."""
    served = core_served(b.target)
    for doc in b.docs:
        group, version = group_of(doc.api_version), version_of(doc.api_version)
        if group not in CORE_GROUPS or doc.kind in ("ControllerConfig", "StoreConfig", "CompositeResourceDefinition"):
            continue
        if group == XP_SECRETS or (not b.target.is_v2 and (group, doc.kind) in V2_ONLY_KINDS):
            continue
        versions = served.get((group, doc.kind))
        if versions is None:
            yield finding("XP2-007", "error", f"{doc.api_version} {doc.kind} is not a Crossplane {b.target} core API",
                          doc, ("kind",))
        elif version not in versions:
            yield finding("XP2-007", "error", f"{doc.kind} {version} is not served by Crossplane {b.target} "
                          f"(served: {', '.join(sorted(versions))})", doc, ("apiVersion",))
        elif core_deprecated(b.target, group, doc.kind, version):
            hint = "; use protection.crossplane.io/v1beta1" if doc.kind == "Usage" else ""
            yield finding("XP2-007", "warn", f"{doc.api_version} {doc.kind} is deprecated in Crossplane "
                          f"{b.target}{hint}", doc, ("apiVersion",))


def xp2_008(b: Bundle) -> Iterator[Finding]:
    """Composition scope compatibility (v2: namespaced XRs compose only namespaced kinds in their namespace,
    LegacyCluster XRs compose no namespaced kinds)."""
    if not b.target.is_v2:
        return
    for comp in b.compositions:
        ref = comp.type_ref
        xrds = b.xrds_for(ref.group, ref.kind) if ref else []
        if ref is None or len(xrds) != 1:
            continue  # PV-004 reports it
        xr_scope = xrds[0].scope
        for t in comp.templates:
            scope = scope_of(b, t.gvk.group, t.gvk.kind)
            if scope is None:
                continue  # unknown kind: PV-001
            if xr_scope == "Namespaced" and scope == "Cluster":
                yield t.finding("XP2-008", "error", f"Composition {comp.name}: Namespaced XR {ref.kind} cannot compose "
                                f"cluster-scoped {t.gvk}")
            elif xr_scope == "LegacyCluster" and scope == "Namespaced":
                yield t.finding("XP2-008", "error", f"Composition {comp.name}: LegacyCluster XR {ref.kind} cannot "
                                f"compose namespaced {t.gvk}")
            if xr_scope == "Namespaced" and t.obj is not None and (t.obj.get("metadata") or {}).get("namespace"):
                yield t.finding("XP2-008", "warn", f"Composition {comp.name}: metadata.namespace of {t.gvk} is "
                                "ignored (a namespaced XR composes into its own namespace)",
                                (*t.path[:-1], "metadata", "namespace"))


def scope_of(b: Bundle, group: str, kind: str) -> str | None:
    """Namespaced | Cluster (XRs: their effective scope, LegacyCluster counting as Cluster), or None."""
    owners = b.owners(group, kind)
    if owners:
        return owners[0][1].scope
    xrds = b.xrds_for(group, kind)
    if xrds:
        return "Namespaced" if xrds[0].scope == "Namespaced" else "Cluster"
    if group in K8S_GROUPS:
        return "Cluster" if kind in K8S_CLUSTER_KINDS else "Namespaced"
    return None


def xp2_009(b: Bundle) -> Iterator[Finding]:
    """v2-only features on a v1 target."""
    if b.target.is_v2:
        return
    for doc in b.docs:
        group = group_of(doc.api_version)
        if (group, doc.kind) in V2_ONLY_KINDS or group in (XP_OPS, XP_PROTECTION):
            yield finding("XP2-009", "error", f"{doc.api_version} {doc.kind} {doc.name} needs Crossplane 2.0 "
                          f"(target {b.target})", doc, ("apiVersion",))
    for comp in b.compositions:
        for t in comp.templates:
            if ".m." in f".{t.gvk.group}.":
                yield t.finding("XP2-009", "error", f"Composition {comp.name} composes namespaced MR {t.gvk}; "
                                f"namespaced .m. groups need Crossplane 2.0 (target {b.target})")


def _spec(doc: Document) -> dict[str, object]:
    spec = doc.obj.get("spec")
    return spec if isinstance(spec, dict) else {}


XP2_RULES: tuple[Callable[[Bundle], Iterator[Finding]], ...] = (
    xp2_001, xp2_002, xp2_003, xp2_004, xp2_005, xp2_006, xp2_007, xp2_008, xp2_009,
)
