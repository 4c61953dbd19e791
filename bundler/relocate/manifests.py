"""Point every image reference at the cluster-local registry, pinned by the bundled digest.

Input: the YAML streams that were swept (`Stream`: a name and its text), a finder that locates image
references inside one object (`sweep.find_images`, so one piece of code decides what an image is), and
the `LocalRefs` map (source reference -> cluster-local reference). Output: `Rewritten` with
- the rewritten streams: a ruamel.yaml round trip, so comments, key order and quoting stay, and only
  image strings change (a reference inside `--flag=REF` or an env value is replaced in place);
- split objects (`{repository, image, version}`, `{registry, repository, tag, digest}`, ...) are changed
  field by field with the join the operator uses (`catalogue.Composition`, carried by the finding), so
  the operator composes the local reference: pinned by digest where its format has a digest form
  (NVIDIA: `version: sha256:...`), else pinned by tag, which the `Change.note` says. `tag@digest` is
  never written into a field the format does not give a digest. A split object of unknown shape is
  left as is and reported in `unmapped` (the closed loop then fails the build);
- a Kustomize overlay per base (`templates/kustomize/`), one `images:` entry per image name;
- a Helm values override per chart for the common value shapes (`image.registry/repository/tag/digest`,
  `global.imageRegistry`, `image: "repo:tag"`).

The local reference is `template.format(host=, source_host=, path=, name=) + ":<tag>@<digest>"`; the
default template `{host}/{source_host}/{path}` keeps the source registry in the path, so two images
with the same path on different registries never collide (no flattening, no hash suffixes).

Does not render or sweep again; the pipeline runs the closed-loop check (render the outputs, sweep,
refuse anything outside the local registry). Pure code apart from reading the kustomize template.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from ..catalogue import Composition
from ..documents import format_path
from ..errors import InputError, SpecError
from ..reference import ImageRef

DEFAULT_TEMPLATE = "{host}/{source_host}/{path}"


class Hit(Protocol):
    """One image reference found inside an object (what `sweep.find_images` yields)."""

    @property
    def path(self) -> tuple[str | int, ...]: ...  # field path to the string, or to the split object
    @property
    def written(self) -> str: ...  # the reference exactly as it appears in the string
    @property
    def ref(self) -> ImageRef: ...


Finder = Callable[[Any], Iterable[Hit]]


@dataclass(frozen=True)
class Stream:
    name: str  # where it goes in the bundle, e.g. manifests/demo.yaml
    text: str
    source: str  # where it came from (chart, kustomize dir, file), for the report


@dataclass(frozen=True)
class LocalRefs:
    """source canonical reference -> local reference (`host/source_host/path:tag@digest`)."""

    by_source: Mapping[str, str]

    def local_for(self, ref: ImageRef) -> str | None:
        return self.by_source.get(ref.canonical)


@dataclass(frozen=True)
class Change:
    stream: str
    path: str
    before: str
    after: str
    note: str = ""  # e.g. "pinned by tag: ... has no digest form"


@dataclass(frozen=True)
class Rewritten:
    streams: tuple[Stream, ...]
    changes: tuple[Change, ...]
    unmapped: tuple[tuple[str, str, str], ...] = field(default=())  # (stream, path, reference) left as is


def local_reference(ref: ImageRef, digest: str, *, host: str, template: str = DEFAULT_TEMPLATE) -> str:
    """The cluster-local reference for `ref`, pinned by `digest` (tag kept for humans).

    Raises:
        SpecError: the template makes an invalid reference.
    """
    try:
        name = template.format(host=host, source_host=ref.domain, path=ref.path, name=ref.path.rsplit("/", 1)[-1])
    except (KeyError, IndexError, ValueError) as exc:
        raise SpecError(f"localRegistry.template {template!r}: {exc}",
                        hint="use the placeholders {host}, {source_host}, {path}, {name}") from None
    tag = ref.with_default_tag().tag
    text = f"{name}:{tag}@{digest}" if tag else f"{name}@{digest}"
    parsed = ImageRef.try_parse(text)
    if parsed is None or parsed.domain != ImageRef.parse(f"{host}/x").domain:
        raise SpecError(f"localRegistry.template {template!r} gives {text!r}, not a reference on {host}",
                        hint="the template must start with {host}/")
    return str(parsed)


def yaml_rt() -> YAML:
    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.width = 1 << 16  # never fold long strings: a folded image reference is a different string
    y.indent(mapping=2, sequence=4, offset=2)
    return y


def rewrite_streams(streams: Iterable[Stream], find: Finder, local: LocalRefs) -> Rewritten:
    """Rewrite every image reference the finder locates in each stream.

    Raises:
        InputError: a stream is not valid YAML (it was parsed once already, so this is a bug or a race).
    """
    out: list[Stream] = []
    changes: list[Change] = []
    unmapped: list[tuple[str, str, str]] = []
    for stream in streams:
        y = yaml_rt()
        try:
            docs = [d for d in y.load_all(stream.text) if d is not None]
        except YAMLError as exc:
            raise InputError(f"{stream.source}: cannot re-read for rewriting: {exc}") from None
        for doc in docs:
            for hit in list(find(doc)):
                target = local.local_for(hit.ref)
                where = format_path(hit.path)
                if target is None:
                    unmapped.append((stream.name, where, hit.written))
                    continue
                replaced = _replace(doc, hit, target)
                if replaced is None:
                    unmapped.append((stream.name, where, hit.written))
                    continue
                before, after, note = replaced
                if before != after:
                    changes.append(Change(stream.name, where, before, after, note))
        buf = io.StringIO()
        y.dump_all(docs, buf)
        out.append(Stream(stream.name, buf.getvalue(), stream.source))
    return Rewritten(tuple(out), tuple(changes), tuple(unmapped))


def _replace(doc: Any, hit: Hit, target: str) -> tuple[str, str, str] | None:
    parent: Any = doc
    for step in hit.path[:-1]:
        parent = parent[step]
    key = hit.path[-1] if hit.path else None
    value = parent[key] if key is not None else doc
    if isinstance(value, Mapping):  # a split object: spread the reference over its fields
        compose = getattr(hit, "compose", None)
        return split_fields(value, compose, target) if compose is not None else None
    text = str(value)
    span = getattr(hit, "span", None)  # where the reference sits inside a longer string (args, env)
    if span is not None and text[span[0]:span[1]] == hit.written:
        new = text[:span[0]] + target + text[span[1]:]
    else:
        new = text.replace(hit.written, target) if text != hit.written else target
    # Keep ruamel's scalar type (quoted, literal, ...) so quoting survives the round trip.
    parent[key] = type(value)(new) if type(value) is not str else new
    return text, new, ""


def split_fields(obj: Any, compose: Composition, target: str) -> tuple[str, str, str] | None:
    """Set the object's fields so that the operator's format composes `target`; None when it cannot
    (the format hard-codes the host, or the local name does not keep the source path as a suffix)."""
    ref = ImageRef.parse(target)
    values = compose.mapping
    fields = compose.format.decompose(ref.name, values)
    if fields is None:
        return None
    keys = [*compose.format.keys, *(compose.digest_format.keys if compose.digest_format else ())]
    before = " ".join(f"{k}={values[k]}" for k in dict.fromkeys(keys) if k in values)
    note = ""
    slot = compose.format.slot
    if compose.digest_format is not None and ref.digest is not None:
        # The operator's digest form: the digest goes into its own slot (NVIDIA: the version field).
        fields[compose.digest_format.slot] = ref.digest
        if compose.digest_format.slot != slot and slot in obj and ref.tag is not None:
            fields[slot] = ref.tag
    else:
        if ref.tag is None:
            return None
        fields[slot] = ref.tag
        if ref.digest is not None:
            note = f"pinned by tag: {compose.label} has no digest form; the bundle records {ref.digest}"
    for k, v in fields.items():
        old = obj.get(k)
        # Keep ruamel's scalar type (quoted, ...) so quoting survives the round trip.
        obj[k] = type(old)(v) if isinstance(old, str) and type(old) is not str else v
    after_values = {**values, **fields}
    after = " ".join(f"{k}={after_values[k]}" for k in dict.fromkeys(keys) if k in after_values)
    return before, after, note
