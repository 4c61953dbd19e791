"""Point every image reference at the cluster-local registry, pinned by the bundled digest.

Input: the YAML streams that were swept (`Stream`: a name and its text), a finder that locates image
references inside one object (`sweep.find_images`, so one piece of code decides what an image is), and
the `LocalRefs` map (source reference -> cluster-local reference). Output: `Rewritten` with
- the rewritten streams: a ruamel.yaml round trip, so comments, key order and quoting stay, and only
  image strings change (a reference inside `--flag=REF` or an env value is replaced in place; split
  `{registry, repository, tag, digest}` objects get each part);
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
from importlib import resources
from typing import Any, Protocol

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from .documents import format_path
from .errors import InputError, SpecError
from .reference import ImageRef

DEFAULT_TEMPLATE = "{host}/{source_host}/{path}"
SPLIT_KEYS = ("registry", "repository", "tag", "digest")


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


def _yaml() -> YAML:
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
        y = _yaml()
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
                before, after = _replace(doc, hit, target)
                if before != after:
                    changes.append(Change(stream.name, where, before, after))
        buf = io.StringIO()
        y.dump_all(docs, buf)
        out.append(Stream(stream.name, buf.getvalue(), stream.source))
    return Rewritten(tuple(out), tuple(changes), tuple(unmapped))


def _replace(doc: Any, hit: Hit, target: str) -> tuple[str, str]:
    parent: Any = doc
    for step in hit.path[:-1]:
        parent = parent[step]
    key = hit.path[-1] if hit.path else None
    value = parent[key] if key is not None else doc
    if isinstance(value, Mapping):  # a split {registry, repository, tag, digest} object
        return _replace_split(value, target)
    text = str(value)
    span = getattr(hit, "span", None)  # where the reference sits inside a longer string (args, env)
    if span is not None and text[span[0]:span[1]] == hit.written:
        new = text[:span[0]] + target + text[span[1]:]
    else:
        new = text.replace(hit.written, target) if text != hit.written else target
    # Keep ruamel's scalar type (quoted, literal, ...) so quoting survives the round trip.
    parent[key] = type(value)(new) if type(value) is not str else new
    return text, new


def _replace_split(obj: Any, target: str) -> tuple[str, str]:
    before = " ".join(f"{k}={obj[k]}" for k in SPLIT_KEYS if k in obj)
    ref = ImageRef.parse(target)
    if "registry" in obj:
        obj["registry"] = ref.domain
        obj["repository"] = ref.path
    else:
        obj["repository"] = ref.name
    if "tag" in obj and ref.tag is not None:
        obj["tag"] = ref.tag
    if ref.digest is not None:
        if "digest" in obj:
            obj["digest"] = ref.digest
        elif "tag" in obj:
            # No digest field: pin through the tag (`tag@digest`), which the common
            # `{{repository}}:{{tag}}` templates turn into a digest-pinned reference.
            obj["tag"] = f"{ref.tag}@{ref.digest}" if ref.tag else ref.digest
    after = " ".join(f"{k}={obj[k]}" for k in SPLIT_KEYS if k in obj)
    return before, after


# --- Kustomize overlay ---------------------------------------------------------------------------

def kustomize_overlay(written_refs: Iterable[str], local: LocalRefs, *, base: str = "../base") -> str:
    """`kustomization.yaml` for an overlay over `base`: one `images:` entry per image name as written.

    Kustomize matches `images[].name` against the name part of each image string, so the entry uses
    the name exactly as the base writes it (`nginx`, `docker.io/library/nginx`), with `newName` and
    `digest` from the local reference.
    """
    y = _yaml()
    doc = y.load(resources.files("bundler").joinpath("templates/kustomize/kustomization.yaml.tmpl").read_text())
    doc["resources"] = CommentedSeq([base])
    entries: dict[str, CommentedMap] = {}
    for written in sorted(set(written_refs)):
        ref = ImageRef.try_parse(written)
        target = local.local_for(ref) if ref is not None else None
        if ref is None or target is None:
            continue
        name = written.split("@", 1)[0]
        if ":" in name.rsplit("/", 1)[-1]:
            name = name.rsplit(":", 1)[0]
        local_ref = ImageRef.parse(target)
        entry = CommentedMap()
        entry["name"] = name
        entry["newName"] = local_ref.name
        if local_ref.digest:
            entry["digest"] = local_ref.digest
        entries[name] = entry
    doc["images"] = CommentedSeq(entries[k] for k in sorted(entries))
    buf = io.StringIO()
    y.dump(doc, buf)
    return buf.getvalue()


# --- Helm values override ------------------------------------------------------------------------

def helm_values_override(values_text: str, local: LocalRefs, *, host: str) -> tuple[str, tuple[str, ...]]:
    """A values file that points a chart's images at the local registry.

    Recognised shapes: `{registry, repository, tag[, digest]}` objects, `{repository, tag}` objects
    whose repository holds the registry, `image: "repo:tag"` strings, and `global.imageRegistry`.
    Returns the override YAML and the list of value paths it sets.

    Raises:
        InputError: values.yaml is not valid YAML.
    """
    y = _yaml()
    try:
        values = y.load(values_text) or CommentedMap()
    except YAMLError as exc:
        raise InputError(f"values.yaml: {exc}") from None
    override = CommentedMap()
    paths: list[str] = []

    def put(path: tuple[str, ...], value: str) -> None:
        node = override
        for step in path[:-1]:
            node = node.setdefault(step, CommentedMap())
        node[path[-1]] = value
        paths.append(".".join(path))

    def walk(node: Any, path: tuple[str, ...], registry_default: str | None) -> None:
        if not isinstance(node, Mapping):
            return
        if isinstance(node.get("repository"), str) and ("tag" in node or "registry" in node):
            registry = node.get("registry") or registry_default
            written = f"{registry}/{node['repository']}" if registry else str(node["repository"])
            tag = node.get("tag")
            ref = ImageRef.try_parse(f"{written}:{tag}" if tag not in (None, "") else written)
            target = local.local_for(ref) if ref is not None else None
            if ref is not None and target is not None:
                local_ref = ImageRef.parse(target)
                if "registry" in node or registry_default:
                    put((*path, "registry"), local_ref.domain)
                    put((*path, "repository"), local_ref.path)
                else:
                    put((*path, "repository"), local_ref.name)
                if "digest" in node and local_ref.digest is not None:
                    put((*path, "digest"), local_ref.digest)
                    if local_ref.tag is not None:
                        put((*path, "tag"), local_ref.tag)
                elif local_ref.digest is not None:  # no digest value: pin through the tag, as _replace_split
                    put((*path, "tag"), f"{local_ref.tag}@{local_ref.digest}" if local_ref.tag else local_ref.digest)
            return
        for key, value in node.items():
            if isinstance(value, str) and key in ("image", "imageRef") or (isinstance(value, str) and key.endswith("Image")):
                ref = ImageRef.try_parse(value)
                target = local.local_for(ref) if ref is not None else None
                if target is not None:
                    put((*path, str(key)), target)
            elif isinstance(value, Mapping):
                walk(value, (*path, str(key)), registry_default)

    global_registry = (values.get("global") or {}).get("imageRegistry") if isinstance(values, Mapping) else None
    if isinstance(values, Mapping) and isinstance(values.get("global"), Mapping) and "imageRegistry" in values["global"]:
        put(("global", "imageRegistry"), host)
    walk(values, (), global_registry or None)
    buf = io.StringIO()
    buf.write("# Generated by airgap-bundle: the chart's images on the cluster-local registry, pinned by digest.\n")
    y.dump(override, buf)
    return buf.getvalue(), tuple(paths)
