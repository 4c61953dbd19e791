"""The Crossplane gate's model: findings, targets, waivers, and an index of what a bundle holds.

Input: documents (`bundler.documents.Document`) and packages (`bundler.xpkg.Package`). Output:
`Bundle`, an index the rules read: the bundle's XRDs, Compositions (with their composed templates,
see docs/crossplane.md), Functions, CRD owners, and which core Crossplane API versions
the target serves. Also the value types the gate returns: `Finding`, `Report`, `Target`, `Waiver`.

Sources: crossplane/crossplane v1.20.0 and v2.0.0 `cluster/crds/*` (core APIs per target), v2.0.0
`apis/apiextensions/v2` (XRD scope defaults), function-patch-and-transform and function-go-templating
input formats.

Pure code: no I/O. Does not decide anything (the rules in `crossplane_rules.py` and
`crossplane_pv.py` do).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from .documents import Document, Path_, format_path
from .errors import UsageError
from .reference import ImageRef
from .semver import Version
from .xpkg import CRD, Package

Severity = Literal["error", "warn", "info"]

XP_APIEXT = "apiextensions.crossplane.io"
XP_PKG = "pkg.crossplane.io"
XP_SECRETS = "secrets.crossplane.io"
XP_PROTECTION = "protection.crossplane.io"
XP_OPS = "ops.crossplane.io"
CORE_GROUPS = frozenset({XP_APIEXT, XP_PKG, XP_SECRETS, XP_PROTECTION, XP_OPS})
PT_GROUP = "pt.fn.crossplane.io"
GOTEMPLATE_GROUP = "gotemplating.fn.crossplane.io"
GOTEMPLATE_META_GROUP = "meta.gotemplating.fn.crossplane.io"
# Functions that read or decorate but never add composed resources (so a step without input is not opaque).
NON_COMPOSING_FUNCTIONS = frozenset({
    "function-auto-ready", "function-extra-resources", "function-environment-configs",
    "function-status-transformer", "function-sequencer",
})


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: Severity
    message: str
    file: str | None
    line: int | None
    resource: str | None  # Kind/name (or Kind/namespace/name)
    path: str | None  # field path, e.g. spec.pipeline[0].input.resources[1].base.apiVersion

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "severity": self.severity, "message": self.message, "file": self.file,
                "line": self.line, "resource": self.resource, "path": self.path}


@dataclass(frozen=True, order=True)
class Target:
    """The Crossplane version a bundle is built for. `parse` takes `2.0`, `v2.0.0`, `1.20`, `2`."""

    major: int
    minor: int
    patch: int = 0

    @classmethod
    def parse(cls, text: str) -> Target:
        """Raises: UsageError: not a Crossplane release version."""
        m = re.fullmatch(r"v?(\d+)(?:\.(\d+))?(?:\.(\d+))?", str(text).strip())
        if m is None or int(m.group(1)) not in (1, 2):
            raise UsageError(f"invalid Crossplane target version {text!r}", hint="write e.g. 2.0, v2.0.0 or 1.20")
        return cls(int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0))

    @property
    def is_v2(self) -> bool:
        return self.major >= 2

    @property
    def version(self) -> Version:
        return Version(self.major, self.minor, self.patch)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


@dataclass(frozen=True)
class GVK:
    api_version: str
    kind: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    def __str__(self) -> str:
        return f"{self.api_version} {self.kind}"


@dataclass(frozen=True)
class Waiver:
    """A reviewed exception for an opaque step: the GVKs it produces are checked instead of the step.

    `step=None` covers every opaque step of the composition.

    Raises (on construction): UsageError: empty composition/step, no `produces`, or no reason.
    """

    composition: str
    step: str | None  # None: every opaque step of the composition
    produces: tuple[GVK, ...]
    reason: str

    def __post_init__(self) -> None:
        if not self.composition:
            raise UsageError("a Crossplane waiver needs `composition`")
        if not self.produces:
            raise UsageError(f"waiver for {self.composition}/{self.step} lists no `produces` kinds",
                             hint="list every apiVersion/kind the step can produce")
        if not self.reason.strip():
            raise UsageError(f"waiver for {self.composition}/{self.step} has no `reason`")


@dataclass(frozen=True)
class Report:
    verdict: Literal["pass", "fail"]
    target: str
    findings: tuple[Finding, ...]

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "target": self.target, "findings": [f.to_json() for f in self.findings]}

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "error")


def resource_of(doc: Document) -> str:
    ns = doc.namespace
    return f"{doc.kind}/{ns}/{doc.name}" if ns else f"{doc.kind}/{doc.name}"


def finding(rule: str, severity: Severity, message: str, doc: Document | None, path: Path_ = (), *,
            line: int | None = None, file: str | None = None) -> Finding:
    if doc is None:
        return Finding(rule, severity, message, file, line, None, format_path(path) or None)
    return Finding(rule, severity, message, file or doc.origin.file, line if line is not None else doc.line_of(path),
                   resource_of(doc), format_path(path) or None)


def mapping(value: Any) -> dict[str, Any]:
    """`value` if it is a mapping, else an empty one (YAML fields may hold anything)."""
    return value if isinstance(value, dict) else {}


def group_of(api_version: str) -> str:
    return api_version.rpartition("/")[0]


def version_of(api_version: str) -> str:
    return api_version.rpartition("/")[2]


def walk(value: Any, path: Path_ = ()) -> Iterator[tuple[Path_, Any, Any]]:
    """(path, key, value) for every mapping entry and sequence item below `value`."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield (*path, str(k)), k, v
            yield from walk(v, (*path, str(k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield (*path, i), i, v
            yield from walk(v, (*path, i))


# --- core Crossplane APIs per target (cluster/crds at v1.20.0 and v2.0.0) ----------------------------

_V1_20: dict[tuple[str, str], frozenset[str]] = {
    (XP_APIEXT, "CompositeResourceDefinition"): frozenset({"v1"}),
    (XP_APIEXT, "Composition"): frozenset({"v1"}),
    (XP_APIEXT, "CompositionRevision"): frozenset({"v1", "v1beta1"}),
    (XP_APIEXT, "EnvironmentConfig"): frozenset({"v1alpha1", "v1beta1"}),
    (XP_APIEXT, "Usage"): frozenset({"v1alpha1", "v1beta1"}),
    (XP_PKG, "Provider"): frozenset({"v1"}), (XP_PKG, "ProviderRevision"): frozenset({"v1"}),
    (XP_PKG, "Configuration"): frozenset({"v1"}), (XP_PKG, "ConfigurationRevision"): frozenset({"v1"}),
    (XP_PKG, "Function"): frozenset({"v1", "v1beta1"}), (XP_PKG, "FunctionRevision"): frozenset({"v1", "v1beta1"}),
    (XP_PKG, "ControllerConfig"): frozenset({"v1alpha1"}),
    (XP_PKG, "DeploymentRuntimeConfig"): frozenset({"v1beta1"}),
    (XP_PKG, "ImageConfig"): frozenset({"v1beta1"}),
    (XP_PKG, "Lock"): frozenset({"v1beta1"}),
    (XP_SECRETS, "StoreConfig"): frozenset({"v1alpha1"}),
}
_V2_0 = {k: v for k, v in _V1_20.items() if k not in {(XP_PKG, "ControllerConfig"), (XP_SECRETS, "StoreConfig")}}
_V2_0.update({
    (XP_APIEXT, "CompositeResourceDefinition"): frozenset({"v1", "v2"}),
    (XP_APIEXT, "CompositionRevision"): frozenset({"v1"}),
    (XP_APIEXT, "EnvironmentConfig"): frozenset({"v1beta1"}),
    (XP_APIEXT, "ManagedResourceDefinition"): frozenset({"v1alpha1"}),
    (XP_APIEXT, "ManagedResourceActivationPolicy"): frozenset({"v1alpha1"}),
    (XP_PROTECTION, "Usage"): frozenset({"v1beta1"}), (XP_PROTECTION, "ClusterUsage"): frozenset({"v1beta1"}),
    (XP_OPS, "Operation"): frozenset({"v1alpha1"}), (XP_OPS, "CronOperation"): frozenset({"v1alpha1"}),
    (XP_OPS, "WatchOperation"): frozenset({"v1alpha1"}),
})
_V2_DEPRECATED = {(XP_APIEXT, "CompositeResourceDefinition", "v1"), (XP_APIEXT, "Usage", "v1alpha1"),
                  (XP_APIEXT, "Usage", "v1beta1")}
V2_ONLY_KINDS = frozenset(set(_V2_0) - set(_V1_20))


def core_served(target: Target) -> dict[tuple[str, str], frozenset[str]]:
    """Core (group, kind) -> served versions. 2.1+ serve what 2.0 serves (crossplane.md lists no removals)."""
    return _V2_0 if target.is_v2 else _V1_20


def core_deprecated(target: Target, group: str, kind: str, version: str) -> bool:
    return target.is_v2 and (group, kind, version) in _V2_DEPRECATED


# Kubernetes built-in API groups (condition 1 of "agrees"); versions are the cluster's business.
K8S_GROUPS = frozenset({
    "", "apps", "batch", "autoscaling", "policy", "rbac.authorization.k8s.io", "networking.k8s.io",
    "storage.k8s.io", "apiextensions.k8s.io", "admissionregistration.k8s.io", "scheduling.k8s.io",
    "coordination.k8s.io", "node.k8s.io", "discovery.k8s.io", "certificates.k8s.io", "events.k8s.io",
    "flowcontrol.apiserver.k8s.io", "apiregistration.k8s.io", "resource.k8s.io", "storagemigration.k8s.io",
})
K8S_CLUSTER_KINDS = frozenset({
    "Namespace", "Node", "PersistentVolume", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
    "StorageClass", "PriorityClass", "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration",
    "IngressClass", "CSIDriver", "CSINode", "APIService", "RuntimeClass", "VolumeAttachment",
    "CertificateSigningRequest", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
})


# --- XRDs, Compositions, templates -----------------------------------------------------------------


@dataclass(frozen=True)
class XRD:
    doc: Document
    group: str
    kind: str
    versions: tuple[tuple[str, bool, bool, bool], ...]  # (name, served, referenceable, deprecated)
    scope: str  # effective: LegacyCluster | Namespaced | Cluster

    @classmethod
    def from_doc(cls, doc: Document, target: Target) -> XRD:
        spec = mapping(doc.obj.get("spec"))
        names = mapping(spec.get("names"))
        versions = tuple(
            (str(v.get("name")), bool(v.get("served", False)), bool(v.get("referenceable", False)),
             bool(v.get("deprecated", False)))
            for v in spec.get("versions") or [] if isinstance(v, dict)
        )
        # v1 XRD defaults to LegacyCluster (and v1.20 has no scope at all); v2 defaults to Namespaced.
        default = "Namespaced" if version_of(doc.api_version) == "v2" else "LegacyCluster"
        scope = str(spec.get("scope") or default) if target.is_v2 else "LegacyCluster"
        return cls(doc, str(spec.get("group", "")), str(names.get("kind", "")), versions, scope)

    def served(self, version: str) -> tuple[str, bool, bool, bool] | None:
        return next((v for v in self.versions if v[0] == version and v[1]), None)


@dataclass(frozen=True)
class Template:
    """One composed resource of a Composition, as far as static reading can tell."""

    composition: Document
    step: str | None  # pipeline step name (None in Resources mode)
    gvk: GVK
    obj: dict[str, Any] | None  # the base object, when the input holds one
    path: Path_  # where its apiVersion sits in the Composition document
    line: int | None = None  # explicit line (inline go templates)
    via: str = "resources"  # resources | patch-and-transform | go-template | waiver

    def finding(self, rule: str, severity: Severity, message: str, path: Path_ | None = None) -> Finding:
        return finding(rule, severity, message, self.composition, self.path if path is None else path, line=self.line)


@dataclass(frozen=True)
class Opaque:
    composition: Document
    step: str
    index: int
    reason: str


@dataclass(frozen=True)
class Composition:
    doc: Document
    templates: tuple[Template, ...]
    opaque: tuple[Opaque, ...]

    @property
    def name(self) -> str:
        return self.doc.name

    @property
    def spec(self) -> dict[str, Any]:
        spec = self.doc.obj.get("spec")
        return spec if isinstance(spec, dict) else {}

    @property
    def type_ref(self) -> GVK | None:
        ref = self.spec.get("compositeTypeRef")
        if not isinstance(ref, dict):
            return None
        return GVK(str(ref.get("apiVersion", "")), str(ref.get("kind", "")))

    def steps(self) -> Iterator[tuple[int, dict[str, Any]]]:
        for i, step in enumerate(self.spec.get("pipeline") or []):
            if isinstance(step, dict):
                yield i, step


# Template actions that print nothing: control flow, assignments, comments. Anything else may emit YAML.
_SILENT_ACTION = re.compile(r"\s*\{\{-?\s*(?:/\*.*\*/|(?:end|else|range|if|with)\b.*|\$\w+\s*:?=.*)-?\}\}\s*")
_GT_LINE = re.compile(r"^(\s*)(apiVersion|kind):\s*(.*?)\s*(?:#.*)?$")


def extract_templates(doc: Document, function_names: dict[str, Package]) -> Composition:
    """T(c) of crossplane.md section 3: composed (apiVersion, kind) pairs and the opaque steps."""
    spec = mapping(doc.obj.get("spec"))
    templates: list[Template] = []
    opaque: list[Opaque] = []
    for i, res in enumerate(spec.get("resources") or []):
        base = res.get("base") if isinstance(res, dict) else None
        if isinstance(base, dict):
            templates.append(Template(doc, None, _gvk(base), base, ("spec", "resources", i, "base", "apiVersion")))
    type_ref = mapping(spec.get("compositeTypeRef"))
    xr = (group_of(str(type_ref.get("apiVersion", ""))), str(type_ref.get("kind", "")))
    for i, step in enumerate(spec.get("pipeline") or []):
        if not isinstance(step, dict):
            continue
        name = str(step.get("step", f"#{i}"))
        inp = step.get("input")
        fn_ref = mapping(step.get("functionRef"))
        pkg = function_names.get(str(fn_ref.get("name", "")))
        fn_base = pkg.ref.path.rsplit("/", 1)[-1] if pkg is not None else ""
        here: Path_ = ("spec", "pipeline", i, "input")
        if not isinstance(inp, dict):
            if fn_base not in NON_COMPOSING_FUNCTIONS:
                opaque.append(Opaque(doc, name, i, "a step without input whose function is not known to "
                                                   "compose nothing"))
            continue
        group = group_of(str(inp.get("apiVersion", "")))
        if group == PT_GROUP:
            for j, res in enumerate(inp.get("resources") or []):
                base = res.get("base") if isinstance(res, dict) else None
                if _patches_type(res):
                    opaque.append(Opaque(doc, name, i, f"resources[{j}] patches its apiVersion or kind"))
                elif isinstance(base, dict):
                    templates.append(Template(doc, name, _gvk(base), base, (*here, "resources", j, "base", "apiVersion"),
                                              via="patch-and-transform"))
        elif group == GOTEMPLATE_GROUP:
            got, why = _go_templates(doc, name, inp, (*here, "inline", "template"), xr)
            templates.extend(got)
            if why:
                opaque.append(Opaque(doc, name, i, why))
        elif fn_base not in NON_COMPOSING_FUNCTIONS:
            opaque.append(Opaque(doc, name, i, f"input {inp.get('apiVersion')} {inp.get('kind')} cannot be read "
                                               "statically"))
    return Composition(doc, tuple(templates), tuple(opaque))


def _patches_type(res: Any) -> bool:
    """A P&T resource whose patches write apiVersion or kind composes something its base does not say."""
    patches = res.get("patches") if isinstance(res, dict) else None
    return any(isinstance(p, dict) and str(p.get("toFieldPath", "")).split(".")[0].split("[")[0]
               in ("apiVersion", "kind") for p in patches or [])


def _gvk(obj: dict[str, Any]) -> GVK:
    return GVK(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))


def _go_templates(doc: Document, step: str, inp: dict[str, Any], path: Path_,
                  xr: tuple[str, str]) -> tuple[list[Template], str | None]:
    if inp.get("source") != "Inline":
        return [], f"go-templating source {inp.get('source')!r} is not inline"
    inline = mapping(inp.get("inline"))
    text = inline.get("template")
    if not isinstance(text, str):
        return [], "go-templating input has no inline.template"
    start = doc.line_of(path) + (1 if doc.node is not None else 0)  # block scalar: text starts a line below
    out: list[Template] = []
    chunk: list[tuple[int, str]] = []
    for n, line in enumerate([*text.splitlines(), "---"]):
        if line.strip() != "---":
            chunk.append((n, line))
            continue
        fields: dict[str, tuple[int, int, str]] = {}
        for m_line, raw in chunk:
            m = _GT_LINE.match(raw)
            if m and (m.group(2) not in fields or len(m.group(1)) < fields[m.group(2)][0]):
                fields[m.group(2)] = (len(m.group(1)), m_line, m.group(3).strip("'\""))
        body = [raw for _, raw in chunk if raw.strip() and not raw.strip().startswith("#")
                and not _SILENT_ACTION.fullmatch(raw)]
        chunk = []
        if not fields:
            if body:
                return out, "an inline template document has no literal apiVersion/kind"
            continue
        if "apiVersion" not in fields or "kind" not in fields:
            return out, "an inline template document lacks apiVersion or kind"
        api, kind = fields["apiVersion"][2], fields["kind"][2]
        if "{{" in api or "{{" in kind:
            return out, f"templated apiVersion/kind ({api} {kind})"
        gvk = GVK(api, kind)
        if gvk.group == GOTEMPLATE_META_GROUP or (gvk.group, gvk.kind) == xr:
            continue  # Context/ExtraResources directives, or the XR itself (status)
        out.append(Template(doc, step, gvk, None, path, line=start + fields["apiVersion"][1], via="go-template"))
    return out, None


# --- the bundle index ------------------------------------------------------------------------------


@dataclass
class Bundle:
    target: Target
    docs: list[Document]  # manifests plus the objects of every package (meta and CRDs excluded)
    packages: list[Package]
    xrds: list[XRD] = field(default_factory=list)
    compositions: list[Composition] = field(default_factory=list)
    crd_owners: dict[tuple[str, str], list[tuple[Package, CRD]]] = field(default_factory=dict)
    functions: dict[str, Package] = field(default_factory=dict)  # install name -> Function package

    @classmethod
    def index(cls, manifests: list[Document], packages: list[Package], target: Target) -> Bundle:
        docs = list(manifests)
        for pkg in packages:
            docs.extend(d for d in pkg.objects if d is not pkg.meta and d.kind != "CustomResourceDefinition")
        b = cls(target, docs, packages)
        for pkg in packages:
            for crd in pkg.crds:
                b.crd_owners.setdefault((crd.group, crd.kind), []).append((pkg, crd))
        by_identity = {p.identity: p for p in packages if p.kind == "Function"}
        for pkg in by_identity.values():
            b.functions[pkg.dns_name] = pkg
        for doc in manifests:  # direct installs: pkg.crossplane.io Function objects name their package
            if (group_of(doc.api_version), doc.kind) == (XP_PKG, "Function"):
                ref = package_ref_of(doc)
                match = by_identity.get(ref) if ref else None
                if match is not None:
                    b.functions[doc.name] = match
        for doc in docs:
            if group_of(doc.api_version) != XP_APIEXT:
                continue
            if doc.kind == "CompositeResourceDefinition":
                b.xrds.append(XRD.from_doc(doc, target))
            elif doc.kind == "Composition":
                b.compositions.append(extract_templates(doc, b.functions))
        return b

    def xrds_for(self, group: str, kind: str) -> list[XRD]:
        found: dict[str, XRD] = {}
        for x in self.xrds:
            if x.group == group and x.kind == kind:
                found.setdefault(x.doc.name, x)  # the same XRD from a manifest and a package counts once
        return list(found.values())

    def owners(self, group: str, kind: str) -> list[tuple[Package, CRD]]:
        return self.crd_owners.get((group, kind), [])


def package_ref_of(doc: Document) -> str | None:
    """The identity (registry/repository) a Provider/Function/Configuration object installs, if it parses."""
    spec = doc.obj.get("spec")
    text = spec.get("package") if isinstance(spec, dict) else None
    ref = ImageRef.try_parse(text) if isinstance(text, str) else None
    return ref.name if ref is not None else None
