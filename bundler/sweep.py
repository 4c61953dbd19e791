"""The sweep: every image a set of documents makes a cluster pull, with the evidence for each.

Input: `Document`s (from `render.py`), the charts' `helm.sh/images` entries (`render.ChartImage`),
the spec's `extraImages` and `images:` options. Output: a `Sweep` of `Image`s, each grouping the
`Finding`s (every place the image is named) under its canonical reference, plus the invalid
references and the images the spec excludes, each with its reason.

What is found, and how sure (DESIGN.md "Sweep"):

definite (vendored by default)
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
    references, and split objects `{registry?, repository, tag | digest}` (a candidate, because how an
    operator joins the parts is its own business).

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
`path` points at the mapping and `span` is None (`form == "split"`).

Pure code: no I/O, no subprocesses. Does not decide whether a result fails the build (the CLI does,
with `vendored_status`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from .documents import Document, Origin, Path_, format_path, iter_documents
from .errors import InvalidReferenceError
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
    #            arg | env | cr-field | cr-string | split-object
    form: Form = "value"
    span: tuple[int, int] | None = None  # the reference's characters in the string at `path`

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
) -> Sweep:
    """Find every image in `docs`, the chart annotations and the spec's extra images.

    Args:
        docs: rendered documents (`kind: List` items are looked into).
        chart_images: `render.ChartImage` entries of the charts' `helm.sh/images` annotations.
        extra_images: the spec's `extraImages` (`spec.ExtraImage`: ref, reason, line).
        options: the spec's `images:` entries (`spec.ImageOptions`): `confirm` and `exclude`.
        spec_file: the spec's path, for the origin of extra images.
    """
    findings: list[Finding] = []
    invalid: list[Invalid] = []
    count = 0
    for doc in iter_documents(list(docs)):
        count += 1
        for item in sweep_document(doc):
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
    return _group(findings, invalid, options, count)


def sweep_document(doc: Document) -> list[Finding | Invalid]:
    """The findings of one document (no grouping): what `rewrite` calls per document."""
    obj = doc.obj
    if not isinstance(obj, dict):
        return []
    out: list[Finding | Invalid] = []
    ctx = _Context(doc, _is_test_hook(obj), _is_custom(doc.api_version), out, set())
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
    _walk(obj, (), ctx)
    return out



def find_images(obj: Any) -> list[Finding]:
    """The image findings inside one parsed object (no origin or lines): the finder `rewrite` uses, so
    one piece of code decides what an image is. Invalid references are left out."""
    return [f for f in sweep_document(Document(obj, Origin("<object>", 1))) if isinstance(f, Finding)]


# --- the walk ------------------------------------------------------------------------------------


@dataclass
class _Context:
    doc: Document
    hook: bool
    custom: bool
    out: list[Finding | Invalid]
    taken: set[Path_]

    def definite(self, value: Any, path: Path_, rule: str) -> None:
        if path in self.taken:
            return
        self.taken.add(path)
        d = self.doc
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
        )

    def candidate(
        self, ref: ImageRef, written: str, path: Path_, rule: str, *, span: tuple[int, int] | None, form: Form
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
                if isinstance(value, dict) and (_IMAGE_NAME.search(key) or "registry" in value):
                    split = _split_object(value)
                    if split is not None:
                        ctx.candidate(split[0], split[1], here, "split-object", span=None, form="split")
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
    for key in ("command", "args"):
        words = container.get(key)
        if not isinstance(words, list):
            continue
        for i, word in enumerate(words):
            if not isinstance(word, str):
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


def _split_object(value: dict[str, Any]) -> tuple[ImageRef, str] | None:
    """`{registry?, repository, tag | digest}` joined into a reference, when the parts are unambiguous."""
    repository = value.get("repository")
    tag = value.get("tag")
    digest = value.get("digest")
    registry = value.get("registry")
    if not isinstance(repository, str) or not repository:
        return None
    if tag is not None and not isinstance(tag, (str, int, float)) or isinstance(tag, bool):
        return None
    tag_text = str(tag) if tag not in (None, "") else None
    digest_text = digest if isinstance(digest, str) and digest else None
    if tag_text is None and digest_text is None:
        return None
    if registry is not None and (not isinstance(registry, str) or not _HOST.match(registry)):
        return None
    written = (f"{registry}/" if registry else "") + repository
    written += (f":{tag_text}" if tag_text else "") + (f"@{digest_text}" if digest_text else "")
    ref = ImageRef.try_parse(written)
    return (ref, written) if ref is not None else None


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
            (0, len(written)) if form == "value" else None,
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
    "sweep",
    "sweep_document",
    "vendored_status",
]
