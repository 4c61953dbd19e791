"""The sweep: every image a set of documents makes a cluster pull, with the evidence for each.

Input: `Document`s (from `render.py`), the charts' `helm.sh/images` entries (`render.ChartImage`),
the spec's `extraImages` and `images:` options. Output: a `Sweep` of `Image`s, each grouping the
`Finding`s (every place the image is named) under its canonical reference, plus the invalid
references and the images the spec excludes, each with its reason.

What is found, and how sure (DESIGN.md "Sweep"):

definite (vendored by default)
  - whatever the operator catalogue (`catalogue.py`, the built-in `bundler/catalogue/*.yaml` plus the
    spec's `discovery.rules`) names: custom-resource fields, split objects joined by the operator's
    own format, controller flags and env vars of its containers (`rule="catalogue"`, the entry's id
    in `Finding.evidence`).
  - split objects of a common shape (`catalogue.SHAPES`: `{registry, repository, tag|digest}`,
    `{repository, image, version}`, `{repository, tag}`, `{image, tag}`, ...) in custom resources, when
    something says they are an image: the key names an image, or the object has `registry` or `image`
    (`rule="split-shape"`, the shape in `Finding.evidence`).
  - `image` of every item in `containers`, `initContainers` and `ephemeralContainers`, wherever such a
    list sits: Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob (`jobTemplate`),
    ReplicationController, PodTemplate, OLM deployments and pod templates inside any custom resource
    (the walk is generic: a list under one of those keys whose items are mappings with `image`).
  - Crossplane `Provider`/`Function`/`Configuration` (`pkg.crossplane.io`) `spec.package`.
  - OLM `ClusterServiceVersion` `spec.relatedImages[].image`.
  - the chart's `helm.sh/images` annotation; the spec's `extraImages`.
candidate (reported for review; vendored only when the spec's `images:` entry says `confirm: true`)
  - container `args`/`command`: `--x-image=REF`, `--x-image REF` (two arguments), and any flag value
    or word that is an unmistakable reference (see `_strong`); `env` values, with `*IMAGE*` names
    (`RELATED_IMAGE_*`, `*_IMAGE`, `IMAGE_*`) read more leniently than others.
  - in custom resources: string fields named `image`/`*Image`, whole strings that are unmistakable
    references, and objects under an image-named key of no known shape that still have a name part and
    a tag/version part (`rule="split-unknown"`: how that operator joins them is its own business).

Precision: a heuristic value must parse (reference.py) *and* carry evidence that it is an image: a
registry host with a dot (or `localhost`, or an IP) together with a tag or digest, or a digest, or, when
the field's name says "image", a tag. Ports (`1001:1001`), paths (`db:3306/readyz`), `latest`,
version strings, URLs and rule names fail one of these tests. ConfigMaps, Secrets and other built-in
kinds are never searched for heuristic strings, nor are annotations.

An invalid reference in a definite field is an `Invalid` with its location; the sweep goes on.
Helm test hooks (`helm.sh/hook: test` / `test-success`) give findings with `hook=True`.

Field paths: `Finding.path` is a tuple of keys and indexes (`("spec", "template", "spec",
"containers", 0, "image")`); `Finding.field_path` prints it as `spec.template.spec.containers[0].image`
(keys that are not plain words are quoted: `annotations["helm.sh/images"][0].image`).
`Finding.span` is the (start, end) character range of the reference inside that string value, so a
rewrite replaces exactly that substring (the whole string for `image:` fields). For split objects
`path` points at the mapping, `span` is None (`form == "split"`) and `compose` says how the operator joins
the fields (the rewrite spreads the local reference over the same fields).

Pure code: no I/O, no subprocesses. Does not decide whether a result fails the build (the CLI does,
with `vendored_status`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

from . import catalogue as catalogue_mod
from .catalogue import Catalogue, Composition
from .documents import Document, Origin, Path_, format_path, iter_documents
from .errors import InvalidReferenceError, UnvendoredImageError
from .reference import ImageRef

Confidence = Literal["definite", "candidate"]
Form = Literal["value", "substring", "split", "annotation", "spec"]

CONTAINER_KEYS = ("containers", "initContainers", "ephemeralContainers")
CROSSPLANE_PACKAGE_KINDS = frozenset({"Provider", "Function", "Configuration"})
TEST_HOOKS = frozenset({"test", "test-success"})
# Built-in API groups: documents of these groups are searched only for container images (and their
# args/env); their other strings (ConfigMap data, Service fields, CRD schemas) are never image candidates.
BUILTIN_GROUPS = frozenset(
    {
        "",
        "apps",
        "batch",
        "policy",
        "autoscaling",
        "extensions",
        "rbac.authorization.k8s.io",
        "networking.k8s.io",
        "storage.k8s.io",
        "apiextensions.k8s.io",
        "admissionregistration.k8s.io",
        "scheduling.k8s.io",
        "coordination.k8s.io",
        "node.k8s.io",
        "discovery.k8s.io",
        "events.k8s.io",
        "certificates.k8s.io",
        "apiregistration.k8s.io",
        "flowcontrol.apiserver.k8s.io",
        "resource.k8s.io",
        "authentication.k8s.io",
        "authorization.k8s.io",
        "kustomize.config.k8s.io",
        "gateway.networking.k8s.io",
    }
)
SKIP_KEYS = frozenset({"metadata", "status", "description"})  # never hold images we should pull

_IMAGE_NAME = re.compile(r"image", re.IGNORECASE)
# `IMAGE_TAG`, `imagePullPolicy`, `--image-version`: the name says image, the value is a part of one.
_IMAGE_PART = re.compile(r"(?:tag|version|policy|digest|secrets?|dir|path|name_?prefix)$", re.IGNORECASE)
_TOKEN = re.compile(r"""(?:(?P<flag>--?[A-Za-z0-9][A-Za-z0-9_.-]*)=)?(?P<value>[^\s=,;"'`()\[\]{}<>|&]+)""")
_HOST = re.compile(r"^(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+|localhost|\[[0-9a-fA-F:]+\])(?::[0-9]+)?$")
_FLAG_ONLY = re.compile(r"^--?[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Finding:
    """One place an image is named."""

    ref: ImageRef
    written: str  # the reference as written (for split objects: the joined parts)
    origin: Origin  # the document's origin (`origin.line` is the document start)
    line: int  # the line of the field itself
    kind: str
    namespace: str | None
    name: str
    path: Path_  # field path inside the resource (see the module docstring)
    confidence: Confidence
    hook: bool  # a Helm test hook (`helm.sh/hook: test`)
    rule: str  # container | crossplane-package | olm-related-image | chart-annotation | extra-image |
    #            catalogue | split-shape | arg | env | cr-field | cr-string | split-unknown
    form: Form = "value"
    span: tuple[int, int] | None = None  # the reference's characters in the string at `path`
    evidence: str | None = None  # the catalogue entry id, or the split shape, that recognised it
    compose: Composition | None = None  # split objects: the fields and how the operator joins them

    @property
    def field_path(self) -> str:
        return format_path(self.path)


@dataclass(frozen=True)
class Invalid:
    """A definite image field whose value is not a valid reference."""

    written: str
    error: str
    origin: Origin
    line: int
    kind: str
    namespace: str | None
    name: str
    path: Path_
    hook: bool

    @property
    def field_path(self) -> str:
        return format_path(self.path)


@dataclass(frozen=True)
class Image:
    """All findings of one image, grouped by canonical reference (nginx = docker.io/library/nginx:latest)."""

    ref: ImageRef  # canonical: `:latest` added when neither tag nor digest was written
    written: str  # as first written
    confidence: Confidence  # definite if any finding is
    confirmed: bool  # the spec's `images:` entry says `confirm: true`
    hook: bool  # every finding is in a Helm test hook
    findings: tuple[Finding, ...]

    @property
    def carried(self) -> bool:
        """What a bundle built from the spec carries: definite or confirmed."""
        return self.confidence == "definite" or self.confirmed


@dataclass(frozen=True)
class Skipped:
    """An image the spec's `images:` entry excludes, with its reason."""

    image: Image
    reason: str


@dataclass(frozen=True)
class Sweep:
    found: tuple[Image, ...]  # definite or confirmed, pulled by something other than a test hook
    candidates: tuple[Image, ...]  # heuristic and not confirmed: review, then confirm or exclude
    test_hooks: tuple[Image, ...]  # pulled only by Helm test hooks
    invalid: tuple[Invalid, ...]
    skipped: tuple[Skipped, ...]
    documents: int
    review: bool = False  # a spec reviews the candidates: each must be confirmed or excluded there

    @property
    def unresolved(self) -> tuple[Image, ...]:
        """Candidates a spec neither confirms nor excludes: the review is not done (a bundle would not
        carry them, and nothing says they are not needed). Empty when no spec reviews the sweep."""
        return self.candidates if self.review else ()

    @property
    def images(self) -> tuple[Image, ...]:
        """Every image not excluded, sorted by reference."""
        return tuple(sorted((*self.found, *self.candidates, *self.test_hooks), key=lambda i: str(i.ref)))

    def why(self, ref: ImageRef) -> list[Finding]:
        """Every place `ref` comes from (all tags when `ref` has neither tag nor digest)."""
        return [
            f
            for image in (*self.images, *(s.image for s in self.skipped))
            if matches(ref, image.ref)
            for f in image.findings
        ]


# --- entry point ---------------------------------------------------------------------------------


class ChartImageLike(Protocol):
    """What `sweep` reads from a `render.ChartImage`."""

    @property
    def image(self) -> str: ...
    @property
    def chart(self) -> str: ...
    @property
    def file(self) -> str: ...
    @property
    def line(self) -> int: ...
    @property
    def index(self) -> int: ...


class ExtraImageLike(Protocol):
    """What `sweep` reads from a `spec.ExtraImage`."""

    @property
    def ref(self) -> str: ...
    @property
    def line(self) -> int: ...


class ImageOptionLike(Protocol):
    """What `sweep` reads from a `spec.ImageOptions`."""

    @property
    def ref(self) -> ImageRef: ...
    @property
    def confirm(self) -> bool: ...
    @property
    def exclude(self) -> str | None: ...

    def matches(self, ref: ImageRef) -> bool: ...


def sweep(
    docs: Iterable[Document],
    *,
    chart_images: Sequence[ChartImageLike] = (),
    extra_images: Sequence[ExtraImageLike] = (),
    options: Sequence[ImageOptionLike] = (),
    spec_file: str = "bundle.yaml",
    catalogue: Catalogue | None = None,
    review: bool = False,
) -> Sweep:
    """Find every image in `docs`, the chart annotations and the spec's extra images.

    Args:
        docs: rendered documents (`kind: List` items are looked into).
        chart_images: `render.ChartImage` entries of the charts' `helm.sh/images` annotations.
        extra_images: the spec's `extraImages` (`spec.ExtraImage`: ref, reason, line).
        options: the spec's `images:` entries (`spec.ImageOptions`): `confirm` and `exclude`.
        spec_file: the spec's path, for the origin of extra images.
        catalogue: operator knowledge; the built-in catalogue when None (add the spec's
            `discovery.rules` with `catalogue.builtin().extend(spec.discovery_rules)`).
        review: a spec's `images:` is where candidates are reviewed, so unconfirmed ones are
            `Sweep.unresolved` (False when there is no spec to record a review in).
    """
    known = catalogue if catalogue is not None else catalogue_mod.builtin()
    findings: list[Finding] = []
    invalid: list[Invalid] = []
    count = 0
    for doc in iter_documents(list(docs)):
        count += 1
        for item in sweep_document(doc, known):
            if isinstance(item, Finding):
                findings.append(item)
            else:
                invalid.append(item)
    for entry in chart_images:
        origin = Origin(entry.file, 1, chart=entry.chart, source="chart")
        path: Path_ = ("annotations", "helm.sh/images", entry.index, "image")
        _definite(
            entry.image,
            origin,
            entry.line,
            "Chart",
            None,
            entry.chart.rsplit("/", 1)[-1],
            path,
            False,
            "chart-annotation",
            findings,
            invalid,
            form="annotation",
        )
    for n, extra in enumerate(extra_images):
        origin = Origin(spec_file, extra.line or 1, source="spec")
        _definite(
            extra.ref,
            origin,
            extra.line or 1,
            "Bundle",
            None,
            "extraImages",
            ("extraImages", n, "ref"),
            False,
            "extra-image",
            findings,
            invalid,
            form="spec",
        )
    return replace(_group(findings, invalid, options, count), review=review)


def sweep_document(doc: Document, catalogue: Catalogue | None = None) -> list[Finding | Invalid]:
    """The findings of one document (no grouping): what `rewrite` calls per document."""
    obj = doc.obj
    if not isinstance(obj, dict):
        return []
    out: list[Finding | Invalid] = []
    known = catalogue if catalogue is not None else catalogue_mod.builtin()
    ctx = _Context(doc, _is_test_hook(obj), _is_custom(doc.api_version), out, set(), known)
    # Crossplane packages and OLM related images first, so their paths are taken as definite.
    group = doc.api_version.split("/", 1)[0] if "/" in doc.api_version else ""
    spec = obj.get("spec")
    if isinstance(spec, dict):
        if group == "pkg.crossplane.io" and doc.kind in CROSSPLANE_PACKAGE_KINDS and "package" in spec:
            ctx.definite(spec["package"], ("spec", "package"), "crossplane-package")
        if group == "operators.coreos.com" and doc.kind == "ClusterServiceVersion":
            for i, related in enumerate(spec.get("relatedImages") or ()):
                if isinstance(related, dict) and "image" in related:
                    ctx.definite(related["image"], ("spec", "relatedImages", i, "image"), "olm-related-image")
    _catalogue_resource(obj, group, ctx)
    _walk(obj, (), ctx)
    return out



def find_images(obj: Any, catalogue: Catalogue | None = None) -> list[Finding]:
    """The image findings inside one parsed object (no origin or lines): the finder `rewrite` uses, so
    one piece of code decides what an image is. Invalid references are left out."""
    found = sweep_document(Document(obj, Origin("<object>", 1)), catalogue)
    return [f for f in found if isinstance(f, Finding)]


# --- the walk ------------------------------------------------------------------------------------


@dataclass
class _Context:
    doc: Document
    hook: bool
    custom: bool
    out: list[Finding | Invalid]
    taken: set[Path_]
    catalogue: Catalogue
    splits: set[Path_] = field(default_factory=set)  # objects already read as split images

    def definite(
        self,
        value: Any,
        path: Path_,
        rule: str,
        *,
        evidence: str | None = None,
        span: tuple[int, int] | None = None,
        compose: Composition | None = None,
    ) -> None:
        if compose is not None:
            # One object can compose several images (Istio's hub + tag: pilot, proxyv2, ...).
            key: Path_ = (*path, f"<{compose.format.text}>")
            if key in self.taken:
                return
            self.taken.add(key)
            self.splits.add(path)
        elif path in self.taken:
            return
        elif span is None:
            self.taken.add(path)  # a reference inside a longer string leaves the rest of it to the caller
        d = self.doc
        form: Form = "split" if compose is not None else "value" if span is None else "substring"
        _definite(
            value,
            d.origin,
            d.line_of(path),
            d.kind,
            d.namespace,
            d.name,
            path,
            self.hook,
            rule,
            self.out,
            self.out,
            form=form,
            span=span,
            evidence=evidence,
            compose=compose,
        )

    def candidate(
        self,
        ref: ImageRef,
        written: str,
        path: Path_,
        rule: str,
        *,
        span: tuple[int, int] | None,
        form: Form,
        evidence: str | None = None,
    ) -> None:
        key = (*path, span[0] if span else -1)
        if path in self.taken or key in self.taken:
            return
        self.taken.add(key)
        d = self.doc
        self.out.append(
            Finding(
                ref,
                written,
                d.origin,
                d.line_of(path),
                d.kind,
                d.namespace,
                d.name,
                path,
                "candidate",
                self.hook,
                rule,
                form,
                span,
                evidence,
            )
        )


def _walk(node: Any, path: Path_, ctx: _Context) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if not isinstance(key, str) or key in SKIP_KEYS:
                continue
            here = (*path, key)
            if key in CONTAINER_KEYS and isinstance(value, list):
                for i, container in enumerate(value):
                    if isinstance(container, dict) and "image" in container:
                        _container(container, (*here, i), ctx)
                continue
            if ctx.custom:
                if isinstance(value, str) and _image_named(key):
                    ref = _lenient(value)
                    if ref is not None:
                        ctx.candidate(ref, value, here, "cr-field", span=(0, len(value)), form="value")
                        continue
                if here in ctx.taken:
                    continue
                if isinstance(value, dict) and here not in ctx.splits and _split(key, value, here, ctx):
                    continue
                if isinstance(value, str):
                    ref = _strong(value)
                    if ref is not None:
                        ctx.candidate(ref, value, here, "cr-string", span=(0, len(value)), form="value")
                        continue
            if isinstance(value, (dict, list)):
                _walk(value, here, ctx)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            if isinstance(item, (dict, list)):
                _walk(item, (*path, i), ctx)
            elif ctx.custom and isinstance(item, str):
                ref = _strong(item)
                if ref is not None:
                    ctx.candidate(ref, item, (*path, i), "cr-string", span=(0, len(item)), form="value")


def _container(container: dict[str, Any], path: Path_, ctx: _Context) -> None:
    ctx.definite(container["image"], (*path, "image"), "container")
    image = str(container["image"])
    for key in ("command", "args"):
        words = container.get(key)
        if not isinstance(words, list):
            continue
        for i, word in enumerate(words):
            if not isinstance(word, str):
                continue
            if _catalogue_flag(words, i, image, (*path, key, i), ctx):
                continue
            for ref, text, span in _scan_words(word, _prev_flag(words, i)):
                ctx.candidate(
                    ref,
                    text,
                    (*path, key, i),
                    "arg",
                    span=span,
                    form="value" if span == (0, len(word)) else "substring",
                )
    for i, env in enumerate(container.get("env") or ()):
        if not isinstance(env, dict) or not isinstance(env.get("value"), str):
            continue
        value = env["value"]
        entry = ctx.catalogue.env(str(env.get("name", "")), image)
        if entry is not None:
            _catalogue_env(value, (*path, "env", i, "value"), entry.id, ctx)
            continue
        image_named = _image_named(str(env.get("name", "")))
        for ref, text, span in _scan_words(value, image_named):
            ctx.candidate(
                ref,
                text,
                (*path, "env", i, "value"),
                "env",
                span=span,
                form="value" if span == (0, len(value)) else "substring",
            )


def _image_named(name: str) -> bool:
    """The name of a flag, env var or field says it holds an image (and not a tag, policy, ...)."""
    return bool(_IMAGE_NAME.search(name)) and not _IMAGE_PART.search(name)


def _prev_flag(words: list[Any], i: int) -> bool:
    """`--x-image REF`: the previous argument is a flag, without `=`, whose name says image."""
    if i == 0 or not isinstance(words[i - 1], str):
        return False
    prev = words[i - 1]
    return bool(_FLAG_ONLY.match(prev)) and _image_named(prev)


def _scan_words(text: str, image_named: bool) -> Iterator[tuple[ImageRef, str, tuple[int, int]]]:
    """References inside an argument or env value, with their character spans.

    `image_named`: the value belongs to a flag or variable whose name says image, so a tag alone is
    evidence enough; `--foo-image=REF` inside the text gets the same leniency.
    """
    if text.startswith("-") and "=" not in text and " " not in text:
        return  # a bare flag
    for match in _TOKEN.finditer(text):
        value = match.group("value")
        flag = match.group("flag")
        lenient = _image_named(flag) if flag else image_named
        ref = _lenient(value) if lenient else _strong(value)
        if ref is not None:
            yield ref, value, (match.start("value"), match.end("value"))


# --- deciding what is a reference --------------------------------------------------------------


def _parse(text: str) -> ImageRef | None:
    if not text or len(text) > 512 or not any(c.isalpha() for c in text.rsplit("/", 1)[-1].split(":")[0]):
        return None
    return ImageRef.try_parse(text)


def _explicit_host(text: str) -> bool:
    """The first component is a registry host by evidence: a dotted name, localhost, or an IP literal."""
    first, sep, _ = text.partition("/")
    return bool(sep) and bool(_HOST.match(first))


def _strong(text: str) -> ImageRef | None:
    """Unmistakably a reference without context: a digest, or an explicit host plus a tag."""
    if "/" not in text and "@" not in text:
        return None
    ref = _parse(text)
    if ref is None:
        return None
    if ref.digest is not None or (_explicit_host(text) and ref.tag is not None):
        return ref
    return None


def _lenient(text: str) -> ImageRef | None:
    """A reference where the field's name says image: a tag or digest is enough evidence, except that a
    one-component name (`db:3306`, `alert.rules:High`) also needs a non-numeric tag and no dot."""
    ref = _parse(text)
    if ref is None or (ref.tag is None and ref.digest is None):
        return None
    if ref.digest is None and "/" not in text and ("." in text.split(":", 1)[0] or (ref.tag or "").isdigit()):
        return None
    return ref


# --- operator knowledge ----------------------------------------------------------------------------


def _catalogue_resource(obj: dict[str, Any], group: str, ctx: _Context) -> None:
    """Fields and split objects the catalogue names for this resource: definite, with the entry named."""
    for entry, rule in ctx.catalogue.resource_rules(group, ctx.doc.kind, obj):
        for path, value in catalogue_mod.resolve(obj, rule.steps):
            if isinstance(rule, catalogue_mod.SplitRule):
                comp = catalogue_mod.compose(rule, value, entry.id)
                written = comp.written() if comp is not None else None
                if written is not None:
                    ctx.definite(written, path, "catalogue", evidence=entry.id, compose=comp)
            elif value not in (None, ""):
                if rule.references_only and not (isinstance(value, str) and ("/" in value or "@" in value)):
                    continue  # a plain version: the operator's default image, named elsewhere
                ctx.definite(value, path, "catalogue", evidence=entry.id)


def _catalogue_flag(words: list[Any], i: int, image: str, path: Path_, ctx: _Context) -> bool:
    """`--flag=REF` or `--flag REF` for a flag the catalogue names; True when it was one."""
    word = words[i]
    match = re.match(r"^--?([A-Za-z0-9][A-Za-z0-9_.-]*)=", word)
    if match:
        entry = ctx.catalogue.flag(match.group(1), image)
        if entry is not None:
            ctx.definite(word[match.end():], path, "catalogue", evidence=entry.id, span=(match.end(), len(word)))
            ctx.taken.add(path)
            return True
    if i > 0 and isinstance(words[i - 1], str) and _FLAG_ONLY.match(words[i - 1]):
        entry = ctx.catalogue.flag(words[i - 1].lstrip("-"), image)
        if entry is not None:
            ctx.definite(word, path, "catalogue", evidence=entry.id)
            return True
    return False


def _catalogue_env(value: str, path: Path_, entry: str, ctx: _Context) -> None:
    """An env var the catalogue names: one reference, or several (`3.8.0=REF` lines, as Strimzi's)."""
    if not any(c.isspace() or c in "=," for c in value):
        if value:
            ctx.definite(value, path, "catalogue", evidence=entry)
        return
    for _, text, span in _scan_words(value, True):
        ctx.definite(text, path, "catalogue", evidence=entry, span=span)
    ctx.taken.add(path)


_NAME_PART = ("repository", "repo", "name", "image", "imageName", "path")
_TAG_PART = ("tag", "version", "ver", "imageTag")


def _split(key: str, value: dict[str, Any], path: Path_, ctx: _Context) -> bool:
    """A split image object in a custom resource. A common shape with evidence is definite; an object
    under an image-named key with a name part and a tag part of no known shape is a candidate."""
    if not (_IMAGE_NAME.search(key) or "registry" in value or isinstance(value.get("image"), str)):
        return False  # `source: {repository, tag}` is as likely a git source as an image
    comp = catalogue_mod.match_shape(value)
    written = comp.written() if comp is not None else None
    if written is not None:
        if ImageRef.try_parse(written) is None:
            return False
        ctx.definite(written, path, "split-shape", evidence=comp.label if comp else None, compose=comp)
        return True
    if not _IMAGE_NAME.search(key):
        return False
    name = next((str(value[k]) for k in _NAME_PART if isinstance(value.get(k), str) and value[k]), None)
    tag = next((str(value[k]) for k in _TAG_PART if isinstance(value.get(k), (str, int, float)) and value[k]), None)
    if name is None or tag is None:
        return False
    ref = _lenient(f"{name}:{tag}")
    if ref is None:
        return False
    keys = ", ".join(sorted(k for k in value if isinstance(k, str)))
    ctx.candidate(ref, f"{name}:{tag}", path, "split-unknown", span=None, form="split",
                  evidence=f"unknown shape {{{keys}}}")
    return True


def _definite(
    value: Any,
    origin: Origin,
    line: int,
    kind: str,
    namespace: str | None,
    name: str,
    path: Path_,
    hook: bool,
    rule: str,
    findings: list[Any],
    invalid: list[Any],
    *,
    form: Form = "value",
    span: tuple[int, int] | None = None,
    evidence: str | None = None,
    compose: Composition | None = None,
) -> None:
    written = value if isinstance(value, str) else ("" if value is None else str(value))
    try:
        if not isinstance(value, str):
            raise InvalidReferenceError(f"invalid reference {value!r}: not a string")
        if not value:
            raise InvalidReferenceError("invalid reference: empty")
        ref = ImageRef.parse(value)
    except InvalidReferenceError as exc:
        invalid.append(Invalid(written, exc.message, origin, line, kind, namespace, name, path, hook))
        return
    findings.append(
        Finding(
            ref,
            written,
            origin,
            line,
            kind,
            namespace,
            name,
            path,
            "definite",
            hook,
            rule,
            form,
            span if span is not None else (0, len(written)) if form == "value" else None,
            evidence,
            compose,
        )
    )


def _is_test_hook(obj: dict[str, Any]) -> bool:
    meta = obj.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    hooks = annotations.get("helm.sh/hook") if isinstance(annotations, dict) else None
    return isinstance(hooks, str) and any(h.strip() in TEST_HOOKS for h in hooks.split(","))


def _is_custom(api_version: str) -> bool:
    group = api_version.split("/", 1)[0] if "/" in api_version else ""
    return group not in BUILTIN_GROUPS


# --- grouping ------------------------------------------------------------------------------------


def matches(query: ImageRef, ref: ImageRef) -> bool:
    """`query` names `ref`: same name, and same tag/digest where `query` gives one."""
    if query.name != ref.name:
        return False
    if query.tag is not None and query.tag != ref.tag:
        return False
    return query.digest is None or query.digest == ref.digest


def _option_for(options: Sequence[ImageOptionLike], ref: ImageRef) -> ImageOptionLike | None:
    hits = [o for o in options if o.matches(ref)]
    return max(hits, key=lambda o: (o.ref.digest is not None, o.ref.tag is not None), default=None)


def _group(
    findings: list[Finding], invalid: list[Invalid], options: Sequence[ImageOptionLike], documents: int
) -> Sweep:
    by_ref: dict[ImageRef, list[Finding]] = {}
    for finding in findings:
        by_ref.setdefault(finding.ref.with_default_tag(), []).append(finding)
    found: list[Image] = []
    candidates: list[Image] = []
    hooks: list[Image] = []
    skipped: list[Skipped] = []
    for ref in sorted(by_ref, key=str):
        group = by_ref[ref]
        definite = any(f.confidence == "definite" for f in group)
        option = _option_for(options, ref)
        image = Image(
            ref,
            group[0].written,
            "definite" if definite else "candidate",
            bool(option is not None and option.confirm),
            all(f.hook for f in group),
            tuple(group),
        )
        if option is not None and option.exclude:
            skipped.append(Skipped(image, str(option.exclude)))
        elif not image.carried:
            candidates.append(image)
        elif image.hook:
            hooks.append(image)
        else:
            found.append(image)
    return Sweep(tuple(found), tuple(candidates), tuple(hooks), tuple(invalid), tuple(skipped), documents)


def require_reviewed(result: Sweep, spec_file: str) -> None:
    """The strict wrapper for the review (build, and `sweep SPEC`): a candidate the spec neither confirms
    nor excludes stops here, since nobody has said whether the cluster pulls it.

    Raises:
        UnvendoredImageError: names the first such candidate's file and line, and how many there are.
    """
    if not result.candidates:
        return
    image = result.candidates[0]
    where = image.findings[0]
    raise UnvendoredImageError(
        f"{where.origin.file}:{where.line}: {image.ref} looks like an image ({where.rule}) but the spec neither "
        f"confirms nor excludes it ({len(result.candidates)} unresolved candidate(s))",
        hint=f"review: `airgap-bundle sweep {spec_file} --emit-images` prints the images: entries to paste "
             "(confirm: true, or exclude: <reason>)")


# --- the vendored check --------------------------------------------------------------------------

VendoredCheck = Callable[[Image], bool]


def carried(image: Image) -> bool:
    """Vendored = what a bundle built from the spec carries: definite, or confirmed in `images:`."""
    return image.carried


def in_list(refs: Iterable[ImageRef], digests: Iterable[str] = ()) -> VendoredCheck:
    """Vendored = named in a list of references (same name and tag, or same digest), or its digest is
    one of `digests` (e.g. the manifests of an OCI layout's index.json)."""
    entries = [r.with_default_tag() for r in refs]
    digest_set = frozenset(digests)

    def check(image: Image) -> bool:
        ref = image.ref
        if ref.digest is not None and ref.digest in digest_set:
            return True
        for entry in entries:
            if entry.name != ref.name:
                continue
            if ref.digest is not None and entry.digest == ref.digest:
                return True
            if ref.tag is not None and entry.tag == ref.tag and (entry.digest is None or ref.digest is None):
                return True
        return False

    return check


def at_registry(host: str) -> VendoredCheck:
    """Vendored = already points at the local registry (`host`, or `host/prefix`)."""
    prefix = host.rstrip("/").lower()

    def check(image: Image) -> bool:
        return image.ref.domain.lower() == prefix or image.ref.name.lower().startswith(prefix + "/")

    return check


def vendored_status(result: Sweep, check: VendoredCheck | None) -> dict[ImageRef, bool | None]:
    """Per image: True/False under `check`, None when no check was asked. Every image is checked,
    candidates too: a candidate the bundle does not carry fails until the spec confirms or excludes it."""
    return {image.ref: (None if check is None else check(image)) for image in result.images}


__all__ = [
    "Finding",
    "Image",
    "Invalid",
    "Skipped",
    "Sweep",
    "at_registry",
    "carried",
    "find_images",
    "in_list",
    "matches",
    "require_reviewed",
    "sweep",
    "sweep_document",
    "vendored_status",
]
