"""The Kustomize delivery path: the kustomization's whole tree, plus an overlay that pins every image.

Input: a kustomization directory (`sources.kustomize[].path`), the text `kubectl kustomize` renders
from it, the finder the sweep uses (`sweep.find_images`) and the `LocalRefs` map. Output:
- `closure(directory) -> Closure`: every file the kustomization reaches, transitively, relative to
  the common ancestor of them all (`base/`, `components/x/`, `overlays/prod/`, ...);
- `copy_closure(closure, dest)`: those files, and only those, copied below `dest` (the bundle's
  `kustomize/<name>/tree/`);
- `overlay(rendered, find, local, tree=) -> Overlay`: the files of `kustomize/<name>/overlay/`: a
  `kustomization.yaml` over the tree with one `images:` entry per image name as the sources write it
  (`newName` + `digest`), and a JSON 6902 patch per resource for the images kustomize's images
  transformer does not reach (custom-resource fields, `--x-image=REF` args, env values, split
  objects, ephemeral containers). The new values are the ones `manifests.rewrite_streams` writes into
  the rendered documents, so one piece of code decides them.

The fields followed are those of the Kustomization reference
(https://kubectl.docs.kubernetes.io/references/kustomize/kustomization/): `resources`, `bases`,
`components` (files, or directories holding a kustomization), `patches[].path`,
`patchesStrategicMerge` (file entries), `patchesJson6902[].path`, `replacements[].path`,
`configMapGenerator`/`secretGenerator` (`files` with an optional `key=`, `envs`, `env`), `crds`,
`configurations`, `openapi.path`, and `transformers`/`generators`/`validators` (file or directory
entries, plus the `path` a builtin patch or replacement config names).

Fails closed, before anything is rendered or fetched: a remote resource (a git or http(s) URL,
`github.com/...`), `helmCharts` (kustomize would download the chart), a referenced file that is
missing, and a symlink that leads outside the tree. Each error names the kustomization file and line.

Does not run kubectl (the pipeline builds the overlay again and sweeps it: the closed loop), does not
decide what an image is (the finder does) and does not follow inline transformer configs' plugins.
`closure` and `copy_closure` read and write files; `overlay` and `kustomize_overlay` are pure.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from ..errors import InputError, SpecError
from ..reference import ImageRef
from ..render import display
from .manifests import Finder, LocalRefs, Stream, rewrite_streams, yaml_rt

# The three names kustomize looks for in a directory, in its own order.
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
# Kustomize's images transformer rewrites `image` in every `containers` and `initContainers` list,
# wherever it sits (its legacy filter walks the whole object); `ephemeralContainers` it leaves alone.
IMAGES_TRANSFORMER_LISTS = frozenset({"containers", "initContainers"})
VENDOR_HINT = "vendor the remote base into the tree as a local folder and reference it by relative path"

try:  # libyaml keeps line marks on composed nodes and is much faster (DESIGN.md "Performance")
    _Loader: type[yaml.SafeLoader] = yaml.CSafeLoader  # type: ignore[assignment]
except AttributeError:  # pragma: no cover - PyYAML wheels ship libyaml; a source build may not
    _Loader = yaml.SafeLoader


# --- the closure ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Closure:
    """Every file a kustomization reaches, relative to `root`, the common ancestor of them all."""

    root: Path  # absolute
    entry: PurePosixPath  # the kustomization directory itself, relative to root ("." when it is the root)
    files: tuple[PurePosixPath, ...]  # sorted; kustomization files included


@dataclass(frozen=True)
class _Where:
    """The kustomization entry that referenced a path, for one-line errors."""

    file: Path
    line: int
    field: str
    value: str

    def __str__(self) -> str:
        return f"{display(self.file)}:{self.line}: {self.field} entry {self.value!r}"


@dataclass
class _Walk:
    files: dict[Path, _Where | None] = field(default_factory=dict)  # lexical absolute path -> first referrer
    dirs: set[Path] = field(default_factory=set)


def closure(directory: Path) -> Closure:
    """The kustomization in `directory` and everything it reaches, transitively.

    Raises:
        SpecError: a remote resource, `helmCharts`, or a symlink leading outside the tree (file:line).
        InputError: a kustomization or a file it references is missing or unreadable.
    """
    start = Path(os.path.abspath(directory))
    walk = _Walk()
    _visit(start, None, walk)
    # The tree's root is the deepest folder holding every file reached: `overlays/prod` reaching
    # `../../base` roots the tree two levels up, and only the files reached are taken from it.
    root = Path(os.path.commonpath([str(f.parent) for f in walk.files]))
    real_root = Path(os.path.realpath(root))
    for path, where in walk.files.items():
        real = Path(os.path.realpath(path))
        if not real.is_relative_to(real_root):
            raise SpecError(f"{where or display(path)}: {display(path)} is a symlink that leads outside the "
                            f"kustomization tree (to {real})",
                            hint="copy the file into the tree; the bundle never follows links out of it")
    files = tuple(sorted(PurePosixPath(p.relative_to(root).as_posix()) for p in walk.files))
    return Closure(root, PurePosixPath(start.relative_to(root).as_posix()), files)


def copy_closure(tree: Closure, dest: Path) -> None:
    """Copy every file of the closure below `dest`, as regular files at their relative paths."""
    for rel in tree.files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tree.root / rel, target)


def _visit(directory: Path, where: _Where | None, walk: _Walk) -> None:
    """Add the kustomization in `directory` and follow its references (each directory once)."""
    if directory in walk.dirs:
        return
    walk.dirs.add(directory)
    if where is None and not directory.is_dir():
        raise InputError(f"{display(directory)}: kustomization directory not found")
    present = [directory / n for n in KUSTOMIZATION_FILES if (directory / n).is_file()]
    if len(present) != 1:
        what = "holds no kustomization" if not present else f"holds {len(present)} kustomization files"
        raise InputError(f"{where or display(directory)}: {display(directory)} {what}",
                         hint=f"a kustomization directory needs exactly one of {', '.join(KUSTOMIZATION_FILES)}")
    kfile = present[0]
    walk.files.setdefault(kfile, where)
    node = _compose(kfile)
    for key in ("helmCharts", "helmChartInflationGenerator"):
        if (found := _get(node, key)) is not None:
            raise SpecError(f"{display(kfile)}:{_line(found)}: {key}: kustomize would download the chart at build "
                            "time, which the bundle cannot pin or relocate",
                            hint="list the chart under sources.charts in the bundle spec and drop it here")
    for ref in _references(kfile, node):
        _follow(kfile.parent, ref, walk)


@dataclass(frozen=True)
class _Ref:
    where: _Where
    dirs: bool  # a directory (another kustomization) is allowed here


def _references(kfile: Path, node: yaml.MappingNode) -> Iterable[_Ref]:
    """Every local path one kustomization names, with its line (Kustomization reference, field by field)."""

    def ref(value: yaml.Node | None, name: str, *, dirs: bool = False) -> Iterable[_Ref]:
        if isinstance(value, yaml.ScalarNode) and value.value:
            yield _Ref(_Where(kfile, _line(value), name, str(value.value)), dirs)

    # resources / bases (deprecated) / components: files or directories, possibly remote.
    for key in ("resources", "bases", "components"):
        for item in _items(_get(node, key)):
            yield from ref(item, key, dirs=True)
    for key in ("crds", "configurations"):
        for item in _items(_get(node, key)):
            yield from ref(item, key)
    # patchesStrategicMerge: a file name, or an inline patch (a string holding YAML), which is no file.
    for item in _items(_get(node, "patchesStrategicMerge")):
        if isinstance(item, yaml.ScalarNode) and not _inline_patch(item.value):
            yield from ref(item, "patchesStrategicMerge")
    for key in ("patches", "patchesJson6902", "replacements"):
        for item in _items(_get(node, key)):
            yield from ref(_get(item, "path"), f"{key}[].path")
    yield from ref(_get(_get(node, "openapi"), "path"), "openapi.path")
    # Generators: `files: [key=path | path]`, `envs: [path]`, `env: path` (deprecated).
    for key in ("configMapGenerator", "secretGenerator"):
        for item in _items(_get(node, key)):
            for entry in _items(_get(item, "files")):
                if isinstance(entry, yaml.ScalarNode):
                    path = str(entry.value).split("=", 1)[-1]
                    yield _Ref(_Where(kfile, _line(entry), f"{key}[].files", path), False)
            for entry in _items(_get(item, "envs")):
                yield from ref(entry, f"{key}[].envs")
            yield from ref(_get(item, "env"), f"{key}[].env")
    # Plugin configs: a string entry is a file (or a kustomization directory); a mapping entry is an
    # inline config. Builtin patch and replacement configs name further files by `path`.
    for key in ("transformers", "generators", "validators"):
        for item in _items(_get(node, key)):
            if isinstance(item, yaml.ScalarNode):
                yield from ref(item, key, dirs=True)
            else:
                yield from _config_paths(kfile, item, key)


def _config_paths(kfile: Path, config: yaml.Node | None, key: str) -> Iterable[_Ref]:
    """The files a builtin transformer config names (`path`, `replacements[].path`), relative to
    the kustomization that uses it."""
    for node in (_get(config, "path"), *(_get(i, "path") for i in _items(_get(config, "replacements")))):
        if isinstance(node, yaml.ScalarNode) and node.value:
            yield _Ref(_Where(kfile, _line(node), f"{key}[].path", str(node.value)), False)


def _follow(base: Path, ref: _Ref, walk: _Walk) -> None:
    where, value = ref.where, ref.where.value
    if _remote(value):
        raise SpecError(f"{where} is a remote resource; the bundle is built offline and fetches nothing",
                        hint=VENDOR_HINT)
    # Kustomize joins and cleans paths lexically (Go filepath.Join); so do we, and the symlink check
    # in `closure` then makes sure the real file lies inside the tree.
    path = Path(os.path.normpath(base / value))
    if path.is_dir():
        if not ref.dirs:
            raise InputError(f"{where}: {display(path)} is a directory, where kustomize expects a file",
                             hint="name the file")
        _visit(path, where, walk)
    elif path.is_file():
        walk.files.setdefault(path, where)
        if ref.where.field in ("transformers", "generators", "validators"):
            for doc in _compose_all(path):
                for inner in _config_paths(path, doc, ref.where.field):
                    _follow(base, inner, walk)
    elif _looks_like_host(value):
        raise SpecError(f"{where} looks like a remote resource (no such local path); nothing is fetched",
                        hint=VENDOR_HINT)
    else:
        raise InputError(f"{where}: {display(path)} does not exist",
                         hint="fix the path, or add the missing file to the tree")


# Remote targets kustomize accepts: URLs (https://, http://, git::, ssh://, file://), scp-like
# `git@host:org/repo`, and the `github.com/org/repo//path?ref=v1` shorthand
# (https://github.com/kubernetes-sigs/kustomize/blob/master/examples/remoteBuild.md).
_URL = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*::|[A-Za-z][A-Za-z0-9+.-]*://|[\w.-]+@[\w.-]+:)")
_KNOWN_HOSTS = re.compile(r"^(?:github\.com|gitlab\.com|bitbucket\.org|dev\.azure\.com)[/:]")


def _remote(value: str) -> bool:
    return bool(_URL.match(value) or _KNOWN_HOSTS.match(value) or "?ref=" in value or "?version=" in value)


def _looks_like_host(value: str) -> bool:
    first = value.split("/", 1)[0]
    return "/" in value and "." in first and first not in (".", "..") and not first.startswith(".")


def _inline_patch(value: str) -> bool:
    return "\n" in value or value.lstrip().startswith(("{", "apiVersion:", "kind:"))


def _compose(path: Path) -> yaml.MappingNode:
    docs = _compose_all(path)
    if len(docs) > 1:
        raise InputError(f"{display(path)}: a kustomization holds one YAML document, not {len(docs)}")
    node = docs[0] if docs else yaml.MappingNode("tag:yaml.org,2002:map", [])
    if not isinstance(node, yaml.MappingNode):
        raise InputError(f"{display(path)}:{_line(node)}: a kustomization is a mapping")
    return node


def _compose_all(path: Path) -> list[yaml.Node]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{display(path)}: cannot read: {exc}") from None
    try:
        return [n for n in yaml.compose_all(text, Loader=_Loader) if n is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise InputError(f"{display(path)}{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from None


def _get(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    return next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key), None)


def _items(node: yaml.Node | None) -> list[yaml.Node]:
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


# --- the overlay ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceId:
    """A patch target: a resource as the tree renders it (after its namePrefix and namespace)."""

    group: str
    version: str
    kind: str
    name: str
    namespace: str | None

    def target(self) -> CommentedMap:
        out = CommentedMap()
        if self.group:
            out["group"] = self.group
        out["version"], out["kind"], out["name"] = self.version, self.kind, self.name
        if self.namespace:
            out["namespace"] = self.namespace
        return out


@dataclass(frozen=True)
class FieldChange:
    """One JSON 6902 `replace` (guarded by a `test` of the value the tree renders)."""

    pointer: str  # RFC 6901
    before: Any
    after: Any


@dataclass(frozen=True)
class Overlay:
    files: Mapping[str, str]  # path below the overlay directory -> text
    images: int  # images: entries
    patched: int  # fields set by JSON 6902 patches
    unmapped: tuple[str, ...]  # references the local map does not know (left as rendered)


def overlay(rendered: str, find: Finder, local: LocalRefs, *, tree: str, source: str = "") -> Overlay:
    """The overlay directory's files for a tree whose kustomization renders `rendered`.

    Container images go through kustomize's own images transformer (one `images:` entry per name as
    written). Every other image field the finder locates, and every container image whose name the
    transformer cannot pin unambiguously (two tags of one name, or one the map does not know), gets a
    JSON 6902 patch that sets exactly the value `rewrite_streams` writes into the rendered document.

    Raises:
        InputError: the rendered text is not YAML, or a resource to patch has no kind or name.
    """
    rewritten = rewrite_streams([Stream("rendered", rendered, source)], find, local)
    try:
        before = [d for d in yaml.load_all(rendered, Loader=_Loader) if d is not None]
        after = [d for d in yaml.load_all(rewritten.streams[0].text, Loader=_Loader) if d is not None]
    except yaml.YAMLError as exc:
        raise InputError(f"{source}: cannot re-read the rendered kustomization: {exc}") from None
    if len(before) != len(after):  # pragma: no cover - rewrite_streams keeps every document; this is a bug guard
        raise InputError(f"{source}: rewriting changed the number of documents ({len(before)} -> {len(after)})")

    # Which names the images transformer may pin: every container image of that name must map to
    # one and the same local reference, or the single `images:` entry would repoint the others.
    targets: dict[str, set[str | None]] = {}
    per_doc = [list(find(doc)) for doc in before]
    for hits in per_doc:
        for hit in hits:
            if _transformer_field(hit.path) and _form(hit) == "value":
                targets.setdefault(_image_name(hit.written), set()).add(local.local_for(hit.ref))
    pinned = {name for name, t in targets.items() if len(t) == 1 and None not in t}

    patches: dict[ResourceId, list[FieldChange]] = {}
    written: list[str] = []
    for doc, new, hits in zip(before, after, per_doc, strict=True):
        seen: set[tuple[str | int, ...]] = set()
        for hit in hits:
            path = tuple(hit.path)
            if path in seen:
                continue
            seen.add(path)
            if _transformer_field(path) and _form(hit) == "value" and _image_name(hit.written) in pinned:
                written.append(hit.written)
                continue
            changes = list(_changes(_at(doc, path), _at(new, path), path))
            if changes:
                patches.setdefault(_resource_id(doc, source), []).extend(changes)

    files: dict[str, str] = {}
    entries: list[tuple[str, ResourceId]] = []
    for n, rid in enumerate(sorted(patches, key=_sort_key), start=1):
        name = f"patches/{n:02d}-{_slug(rid.kind)}-{_slug(rid.name)}.yaml"
        files[name] = _patch_text(rid, patches[rid])
        entries.append((name, rid))
    files["kustomization.yaml"] = kustomize_overlay(written, local, base=tree, patches=entries)
    unmapped = tuple(sorted({ref for _, _, ref in rewritten.unmapped}))
    return Overlay(files, len({_image_name(w) for w in written}),
                   sum(len(c) for c in patches.values()), unmapped)


def kustomize_overlay(written_refs: Iterable[str], local: LocalRefs, *, base: str = "../base",
                      patches: Sequence[tuple[str, ResourceId]] = ()) -> str:
    """`kustomization.yaml` for an overlay over `base`: one `images:` entry per image name as written,
    then one `patches:` entry per (patch file, target).

    Kustomize matches `images[].name` against the name part of each image string, so the entry uses
    the name exactly as the base writes it (`nginx`, `docker.io/library/nginx`), with `newName` and
    `digest` from the local reference.
    """
    y = yaml_rt()
    doc = y.load(resources.files("bundler").joinpath("templates/kustomize/kustomization.yaml.tmpl").read_text())
    doc["resources"] = CommentedSeq([base])
    entries: dict[str, CommentedMap] = {}
    for written in sorted(set(written_refs)):
        ref = ImageRef.try_parse(written)
        target = local.local_for(ref) if ref is not None else None
        if ref is None or target is None:
            continue
        name = _image_name(written)
        local_ref = ImageRef.parse(target)
        entry = CommentedMap()
        entry["name"] = name
        entry["newName"] = local_ref.name
        if local_ref.digest:
            entry["digest"] = local_ref.digest
        entries[name] = entry
    doc["images"] = CommentedSeq(entries[k] for k in sorted(entries))
    if patches:
        seq = CommentedSeq()
        for path, rid in patches:
            item = CommentedMap()
            item["path"] = path
            item["target"] = rid.target()
            seq.append(item)
        doc["patches"] = seq
    buf = io.StringIO()
    y.dump(doc, buf)
    return buf.getvalue()


def _image_name(written: str) -> str:
    """The name part kustomize's images transformer matches: no digest, no tag."""
    name = written.split("@", 1)[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    return name


def _transformer_field(path: Sequence[str | int]) -> bool:
    return (len(path) >= 3 and path[-1] == "image" and isinstance(path[-2], int)
            and path[-3] in IMAGES_TRANSFORMER_LISTS)


def _form(hit: object) -> str:
    return str(getattr(hit, "form", "value"))


def _at(obj: Any, path: Sequence[str | int]) -> Any:
    for step in path:
        obj = obj[step]
    return obj


def _changes(old: Any, new: Any, path: tuple[str | int, ...]) -> Iterable[FieldChange]:
    """The scalar differences between a field before and after the rewrite (a split object's parts)."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in new:
            if key in old:
                yield from _changes(old[key], new[key], (*path, key))
            else:  # a part the rewrite adds (e.g. a digest): JSON 6902 `add`, no `test`
                yield FieldChange(_pointer((*path, key)), None, new[key])
    elif old != new:
        yield FieldChange(_pointer(path), old, new)


def _pointer(path: Iterable[str | int]) -> str:
    # RFC 6901: `~` -> `~0`, `/` -> `~1`.
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _resource_id(doc: Any, source: str) -> ResourceId:
    meta = doc.get("metadata") if isinstance(doc, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    kind, api = (doc.get("kind"), doc.get("apiVersion")) if isinstance(doc, dict) else (None, None)
    if not name or not kind or not api:
        raise InputError(f"{source}: a rendered resource with an image to relocate has no apiVersion, kind or name",
                         hint="kustomize patches target resources by group/version/kind/name")
    group, _, version = str(api).rpartition("/")
    namespace = meta.get("namespace") if isinstance(meta, dict) else None
    return ResourceId(group, version, str(kind), str(name), str(namespace) if namespace else None)


def _sort_key(rid: ResourceId) -> tuple[str, str, str, str, str]:
    return (rid.namespace or "", rid.group, rid.kind, rid.name, rid.version)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def _patch_text(rid: ResourceId, changes: Sequence[FieldChange]) -> str:
    """A JSON 6902 patch: `test` the value the tree renders, then `replace` it. If the tree changes
    under the overlay, the `test` fails the build instead of silently overwriting another value."""
    ops: list[dict[str, Any]] = []
    for change in changes:
        if change.before is None:
            ops.append({"op": "add", "path": change.pointer, "value": change.after})
        else:
            ops.append({"op": "test", "path": change.pointer, "value": change.before})
            ops.append({"op": "replace", "path": change.pointer, "value": change.after})
    ns = f" in namespace {rid.namespace}" if rid.namespace else ""
    head = (f"# Generated by airgap-bundle for {rid.kind} {rid.name}{ns}: the images kustomize's images\n"
            "# transformer does not reach, pointed at the cluster-local registry and pinned by digest.\n")
    # JSON is YAML: one op per line keeps every value exactly as written (no folding or re-quoting).
    return head + "".join(f"- {json.dumps(op, sort_keys=False)}\n" for op in ops)
