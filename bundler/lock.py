"""The lock: what a build resolved, written down so a later build resolves nothing. `bundle.lock` <-> `Lock`.

Input: the resolved images (`pull.PulledImage`, from `pull.pull` or `pull.resolve`), the charts as
`LockedChart` (a local chart by the digest of its files, `local_chart`; a fetched one as its fetcher
resolved it), and the spec's file name and digest. Output:
- `Lock` and its file bytes (`dumps`: deterministic YAML, sorted, one fact per line, so a diff reads
  as "this image moved"); `load` parses and schema-checks a file (`schemas/lock.schema.json`);
- `pins(lock)`: the digests `pull` fetches instead of resolving tags;
- `compare(lock, wanted)`: where the spec (as rendered and swept now) and the lock disagree, as data;
  `require_agrees` is its strict wrapper (`LockMismatchError`, exit 16);
- `changes(old, new)`: what re-resolving changed (old -> new digest, added, removed), as data.

Format and workflow: docs/lock.md. Not here: resolving tags (pull.py), rendering and sweeping
(pipeline.py wires them), printing (cli.py). I/O only at the edges: `load`, `write`, `local_chart`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import tarfile
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .charts import ChartPin, FetchedChart, Localized, helm_constraint, source_of
from .errors import InputError, LockMismatchError
from .pull import Pin, PulledImage
from .reference import ImageRef
from .render import display
from .semver import Constraint, SemverError, Version
from .spec import API_VERSION, ChartSource

KIND = "BundleLock"
HINT_RECORD = ("record the spec's change with `airgap-bundle lock SPEC`, which keeps every other pin; "
               "or re-resolve everything with --update")
SUFFIX = ".lock"
MAX_LOCK_BYTES = 4 * 1024 * 1024
HEADER = ("# Written by airgap-bundle: every image and chart the spec {spec} carries, pinned by digest.\n"
          "# Commit it with the spec. Builds use it; `airgap-bundle lock {spec} --update [IMAGE...]`\n"
          "# re-resolves on purpose. Format: docs/lock.md\n")


@dataclass(frozen=True)
class LockedImage:
    """One carried image: its canonical reference and the digests a build fetches and bundles."""

    ref: str                             # ImageRef.canonical: docker.io/library/nginx:1.27.3
    upstream_digest: str                 # what the tag resolved to: fetched by this digest from now on
    bundled_digest: str | None = None    # the narrowed index the bundle carries; None when not narrowed
    keep_upstream_index: bool = False
    line: int = field(default=0, compare=False)  # in the lock file, for messages

    @property
    def bundled(self) -> str:
        return self.bundled_digest or self.upstream_digest


@dataclass(frozen=True)
class LockedChart:
    """A chart or a dependency: where it comes from, its version, and the digest of what was used.

    `source` is a path relative to the spec's folder for a local chart (its dependencies: the path
    inside it, `charts/demo/charts/common`), and a repository URL or `oci://` reference for a fetched one.
    """

    source: str
    name: str
    version: str
    digest: str
    dependencies: tuple[LockedChart, ...] = ()
    line: int = field(default=0, compare=False)

    def flat(self) -> Iterable[LockedChart]:
        yield self
        for dep in self.dependencies:
            yield from dep.flat()


@dataclass(frozen=True)
class Lock:
    spec_file: str        # the spec's file name (the lock lives beside it)
    spec_digest: str      # sha256 of the spec bytes the lock was made from
    platforms: tuple[str, ...]
    images: tuple[LockedImage, ...] = ()
    charts: tuple[LockedChart, ...] = ()
    path: Path | None = field(default=None, compare=False)   # where it was read from
    file_digest: str | None = field(default=None, compare=False)  # sha256 of the bytes read

    @property
    def name(self) -> str:
        return display(self.path) if self.path else f"{Path(self.spec_file).stem}{SUFFIX}"

    def entry(self, image: LockedImage) -> str:
        """`bundle.lock:12 images[1] (docker.io/library/nginx:1.27.3)`: names an entry in messages."""
        n = self.images.index(image)
        return f"{self.name}:{image.line} images[{n}]" if image.line else f"{self.name} images[{n}]"


@dataclass(frozen=True)
class WantedChart:
    """A spec chart as a lock entry must match it: a local chart as it is on disk now (`local`), or a
    remote one by its source and the version or constraint the spec writes (known without a network)."""

    source: str
    name: str
    local: LockedChart | None = None
    constraint: str = ""


@dataclass(frozen=True)
class Wanted:
    """What the spec asks for now (after render and sweep), to compare with a lock."""

    spec_digest: str
    platforms: tuple[str, ...]
    images: Mapping[str, tuple[bool, str]]   # canonical ref -> (keepUpstreamIndex, where it is named)
    charts: tuple[WantedChart, ...]


@dataclass(frozen=True)
class Difference:
    """One way the spec and the lock disagree. `kind`: image-added, image-removed, platforms,
    keep-upstream-index, chart-added, chart-removed, chart-changed."""

    kind: str
    subject: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "subject": self.subject, "message": self.message}


@dataclass(frozen=True)
class Change:
    """What re-resolving changed for one image or chart: `old` and `new` are digests (None: absent)."""

    subject: str
    old: str | None
    new: str | None
    detail: str = ""   # "bundled", or a chart's "0.3.0 -> 0.3.1"

    @property
    def kind(self) -> str:
        return "added" if self.old is None else "removed" if self.new is None else "changed"

    def __str__(self) -> str:
        what = f" ({self.detail})" if self.detail else ""
        return f"{self.kind} {self.subject}{what}: {self.old or '-'} -> {self.new or '-'}"

    def to_json(self) -> dict[str, str | None]:
        return {"kind": self.kind, "subject": self.subject, "old": self.old, "new": self.new,
                "detail": self.detail or None}


def path_for(spec_path: Path) -> Path:
    """The lock beside a spec: `bundle.yaml` -> `bundle.lock`."""
    return spec_path.with_suffix(SUFFIX)


def make(spec_path: Path, spec_digest: str, platforms: Sequence[str], images: Iterable[PulledImage],
         charts: Iterable[LockedChart]) -> Lock:
    """A lock from what was resolved. Pure; entries sorted, each canonical reference once."""
    locked: dict[str, LockedImage] = {}
    for image in images:
        ref = image.ref.canonical
        locked[ref] = LockedImage(ref, image.upstream_digest,
                                  image.bundled_digest if image.narrowed else None, image.keep_upstream_index)
    return Lock(Path(spec_path).name, spec_digest, tuple(platforms),
                tuple(locked[k] for k in sorted(locked)), tuple(sorted(charts, key=lambda c: (c.source, c.name))))


# --- the file --------------------------------------------------------------------------------------


def dumps(lock: Lock) -> bytes:
    """The file's bytes: a comment header, then YAML in a fixed key order (lists sorted by `make`)."""
    doc = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "spec": {"file": lock.spec_file, "digest": lock.spec_digest},
        "platforms": list(lock.platforms),
        "images": [_image_json(i) for i in lock.images],
        "charts": [_chart_json(c) for c in lock.charts],
    }
    _validate(doc, lock.name, None)
    body = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=1 << 16)
    return (HEADER.format(spec=lock.spec_file) + body).encode()


def _image_json(image: LockedImage) -> dict[str, Any]:
    out: dict[str, Any] = {"ref": image.ref, "upstreamDigest": image.upstream_digest}
    if image.bundled_digest:
        out["bundledDigest"] = image.bundled_digest
    if image.keep_upstream_index:
        out["keepUpstreamIndex"] = True
    return out


def _chart_json(chart: LockedChart) -> dict[str, Any]:
    out: dict[str, Any] = {"source": chart.source, "name": chart.name, "version": chart.version,
                           "digest": chart.digest}
    if chart.dependencies:
        out["dependencies"] = [_chart_json(d) for d in chart.dependencies]
    return out


def write(path: Path, data: bytes) -> None:
    """Write the lock under a temporary name in its folder, then rename: never a half-written lock."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def load(path: Path) -> Lock:
    """Read and check a lock file.

    Raises:
        InputError: unreadable, not YAML, or not a lock (`file:line: field: what is wrong`).
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the lock: {exc.strerror}") from None
    if len(raw) > MAX_LOCK_BYTES:
        raise InputError(f"{path}: larger than {MAX_LOCK_BYTES} bytes; not a bundle lock")
    hint = "write it again with `airgap-bundle lock SPEC` (see docs/lock.md)"
    try:
        node = yaml.compose(raw.decode("utf-8"), Loader=yaml.SafeLoader)
        data = yaml.safe_load(raw)
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 (byte {exc.start})", hint=hint) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise InputError(f"{path}:{line}: malformed YAML: {getattr(exc, 'problem', exc)}", hint=hint) from None
    _validate(data, str(path), node)
    images = tuple(
        LockedImage(str(i["ref"]), str(i["upstreamDigest"]), i.get("bundledDigest"),
                    bool(i.get("keepUpstreamIndex", False)), _line(node, ["images", n]))
        for n, i in enumerate(data["images"]))
    charts = tuple(_chart(c, _line(node, ["charts", n])) for n, c in enumerate(data["charts"]))
    return Lock(str(data["spec"]["file"]), str(data["spec"]["digest"]), tuple(map(str, data["platforms"])),
                images, charts, path, digest_of(raw))


def _chart(data: Mapping[str, Any], line: int) -> LockedChart:
    return LockedChart(str(data["source"]), str(data["name"]), str(data["version"]), str(data["digest"]),
                       tuple(_chart(d, line) for d in data.get("dependencies") or ()), line)


@cache
def _schema_validator() -> Any:
    import jsonschema

    schema = json.loads(resources.files("bundler").joinpath("schemas/lock.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema)


def _validate(data: Any, name: str, node: yaml.Node | None) -> None:
    errors = sorted(_schema_validator().iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    if not errors:
        return
    err = errors[0]
    where = list(err.absolute_path)
    field_ = "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in where).lstrip(".") or "(top level)"
    line = _line(node, where) if node is not None else 0
    raise InputError(f"{name}:{line}: {field_}: {err.message}" if line else f"{name}: {field_}: {err.message}",
                     hint="write it again with `airgap-bundle lock SPEC` (see docs/lock.md)")


def _line(node: yaml.Node | None, path: Sequence[str | int]) -> int:
    """1-based line of the deepest node on `path` found in the composed document."""
    line = node.start_mark.line + 1 if node is not None else 0
    for step in path:
        child = None
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if getattr(k, "value", None) == step), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            child = node.value[step]
        if child is None:
            break
        node, line = child, child.start_mark.line + 1
    return line


# --- using it --------------------------------------------------------------------------------------


def pins(lock: Lock, *, update: Sequence[ImageRef] | None = None) -> dict[str, Pin]:
    """The digests `pull` fetches instead of resolving tags, by canonical reference.

    `update`: images to re-resolve on purpose (matched by name, and tag or digest when given); their
    pins are left out. An empty sequence re-resolves everything; None keeps every pin.
    """
    if update is not None and not update:
        return {}
    return {i.ref: Pin(i.upstream_digest, lock.entry(i)) for i in lock.images
            if not any(matches(query, i.ref) for query in update or ())}


def matches(query: ImageRef, ref: str) -> bool:
    """`nginx` matches every docker.io/library/nginx entry; `nginx:1.27` only that tag."""
    have = ImageRef.parse(ref)
    return (query.name == have.name and (query.tag is None or query.tag == have.tag)
            and (query.digest is None or query.digest == have.digest))


def compare(lock: Lock, wanted: Wanted) -> tuple[Difference, ...]:
    """Where the spec and the lock disagree, in a fixed order. Pure; no network.

    What matters is what the lock pins: the set of carried images, the platforms (they decide the
    narrowed digests), keepUpstreamIndex, and the charts. Other spec edits (comments, signing,
    registries, the local registry) leave the lock valid.
    """
    out: list[Difference] = []
    if tuple(lock.platforms) != tuple(wanted.platforms):
        out.append(Difference("platforms", "platforms",
                              f"platforms: the spec asks for {', '.join(wanted.platforms)}; {lock.name} "
                              f"pins {', '.join(lock.platforms)}"))
    locked = {i.ref: i for i in lock.images}
    for ref in sorted(set(wanted.images) - set(locked)):
        out.append(Difference("image-added", ref, f"{ref}: carried by the spec ({wanted.images[ref][1]}) "
                                                  f"but not in {lock.name}"))
    for ref in sorted(set(locked) - set(wanted.images)):
        out.append(Difference("image-removed", ref, f"{ref}: {lock.entry(locked[ref])} pins it, but the spec "
                                                    "no longer carries it"))
    for ref in sorted(set(locked) & set(wanted.images)):
        keep = wanted.images[ref][0]
        if keep != locked[ref].keep_upstream_index:
            out.append(Difference("keep-upstream-index", ref,
                                  f"{ref}: keepUpstreamIndex is {str(keep).lower()} in the spec, "
                                  f"{str(locked[ref].keep_upstream_index).lower()} in {lock.entry(locked[ref])}"))
    have = {(c.source, c.name): c for c in lock.charts}
    now = {(c.source, c.name): c for c in wanted.charts}
    for key in sorted(set(now) - set(have)):
        out.append(Difference("chart-added", key[0], f"chart {key[1]} ({key[0]}): in the spec but not in "
                                                     f"{lock.name}"))
    for key in sorted(set(have) - set(now)):
        out.append(Difference("chart-removed", key[0], f"chart {key[1]} ({key[0]}): {lock.name}:{have[key].line} "
                                                       "pins it, but the spec no longer has it"))
    for key in sorted(set(have) & set(now)):
        locked_chart, want = have[key], now[key]
        where = f"{lock.name}:{locked_chart.line}"
        if want.local is not None and (want.local.version, want.local.digest) != (locked_chart.version,
                                                                                  locked_chart.digest):
            out.append(Difference("chart-changed", key[0],
                                  f"chart {key[1]} ({key[0]}) changed since {where} was written "
                                  f"({locked_chart.version} {locked_chart.digest} -> {want.local.version} "
                                  f"{want.local.digest})"))
        elif want.local is None and not satisfies(locked_chart.version, want.constraint):
            out.append(Difference("chart-changed", key[0],
                                  f"chart {key[1]} ({key[0]}): the spec asks for version {want.constraint}, "
                                  f"{where} pins {locked_chart.version}"))
    return tuple(out)


def require_agrees(lock: Lock, wanted: Wanted) -> None:
    """Raises:
        LockMismatchError: the first difference, and how many there are."""
    differences = compare(lock, wanted)
    if differences:
        more = f" (and {len(differences) - 1} more; `airgap-bundle lock SPEC --check` lists them)" \
            if len(differences) > 1 else ""
        raise LockMismatchError(f"{lock.name} disagrees with the spec: {differences[0].message}{more}",
                                hint=HINT_RECORD)


def changes(old: Lock | None, new: Lock) -> tuple[Change, ...]:
    """What changed from `old` to `new`: images by digest (upstream, and bundled when narrowed), charts
    and dependencies by version and digest. Pure."""
    out: list[Change] = []
    before = {i.ref: i for i in (old.images if old else ())}
    after = {i.ref: i for i in new.images}
    for ref in sorted(set(before) | set(after)):
        a, b = before.get(ref), after.get(ref)
        if a is None or b is None or a.upstream_digest != b.upstream_digest:
            out.append(Change(ref, a.upstream_digest if a else None, b.upstream_digest if b else None))
        elif a.bundled != b.bundled:
            out.append(Change(ref, a.bundled, b.bundled, "bundled"))
    charts_before = {(c.source, c.name): c for c in (old.charts if old else ())}
    charts_after = {(c.source, c.name): c for c in new.charts}
    for key in sorted(set(charts_before) | set(charts_after)):
        a_chart, b_chart = charts_before.get(key), charts_after.get(key)
        if a_chart is None or b_chart is None:
            chart = a_chart or b_chart
            assert chart is not None
            out.append(Change(f"{chart.source} ({chart.name})", a_chart.digest if a_chart else None,
                              b_chart.digest if b_chart else None, chart.version))
        else:
            out.extend(_chart_changes(a_chart, b_chart))
    return tuple(out)


def _chart_changes(old: LockedChart, new: LockedChart) -> Iterable[Change]:
    before = {c.source: c for c in old.flat()}
    after = {c.source: c for c in new.flat()}
    for source in sorted(set(before) | set(after)):
        a, b = before.get(source), after.get(source)
        if a is not None and b is not None and (a.version, a.digest) == (b.version, b.digest):
            continue
        chart = b or a
        assert chart is not None
        detail = f"{a.version} -> {b.version}" if a and b and a.version != b.version else chart.version
        yield Change(f"{source} ({chart.name})", a.digest if a else None, b.digest if b else None, detail)


def satisfies(version: str, constraint: str) -> bool:
    """Whether a locked chart version is one the spec's version (exact, or a helm constraint) admits."""
    if version == constraint:
        return True
    try:
        return Constraint.parse(helm_constraint(constraint)).check(Version.parse(version))
    except SemverError:
        return False


def chart_pins(lock: Lock) -> dict[tuple[str, str], ChartPin]:
    """Every fetched chart and dependency the lock pins, by `(source, name)` as `charts.localize` takes them.
    Local charts (a path, not a URL) are not fetched, so not pinned: `compare` checks their digest."""
    return {(c.source, c.name): ChartPin(c.version, c.digest, f"{lock.name}:{c.line}")
            for top in lock.charts for c in top.flat() if _is_url(c.source)}


def _is_url(source: str) -> bool:
    return re.match(r"^[a-z][a-z0-9+.-]*://", source) is not None


def wanted_chart(chart: ChartSource, spec_dir: Path) -> WantedChart:
    """A spec chart as `compare` needs it; a local one is read (and digested), a remote one is not fetched."""
    if chart.remote is not None:
        return WantedChart(source_of(chart.remote.repo, chart.remote.name), chart.remote.name,
                           constraint=chart.remote.version)
    local = local_chart(chart, spec_dir)
    return WantedChart(local.source, local.name, local)


def chart_entry(chart: ChartSource, located: Localized, spec_dir: Path) -> LockedChart:
    """A spec chart's lock entry after `charts.localize`: a fetched chart with its fetched dependencies, or a
    local chart (by its files) with the dependencies fetched into it."""
    if located.fetched is not None:
        return from_fetched(located.fetched)
    local = local_chart(chart, spec_dir)
    deps = (*local.dependencies, *(from_fetched(d) for d in located.dependencies))
    return dataclasses.replace(local, dependencies=tuple(sorted(deps, key=lambda d: (d.source, d.name))))


def from_fetched(chart: FetchedChart) -> LockedChart:
    return LockedChart(chart.source, chart.name, chart.version, chart.digest,
                       tuple(sorted((from_fetched(d) for d in chart.dependencies), key=lambda d: (d.source, d.name))))


# --- local charts ------------------------------------------------------------------------------------


def local_chart(chart: ChartSource, spec_dir: Path) -> LockedChart:
    """A chart on disk as the lock records it: a `.tgz` by the sha256 of its bytes, a directory by its
    tree digest (`tree_digest`), each subchart under `charts/` as a dependency the same way.
    The version is the one the bundle carries (the spec's `stamp.version` when it sets one).

    Raises:
        InputError: the chart or its Chart.yaml cannot be read.
    """
    path = Path(chart.path)
    source = Path(os.path.relpath(path.resolve(), spec_dir.resolve())).as_posix()
    try:
        if path.is_dir():
            files = {p.relative_to(path).as_posix(): p.read_bytes()
                     for p in sorted(path.rglob("*")) if p.is_file()}
            locked = _chart_files(files, source, tree_digest(files))
        else:
            locked = _chart_tgz(path.read_bytes(), source)
    except (OSError, tarfile.TarError) as exc:
        raise InputError(f"{path}: cannot read the chart: {exc}") from None
    if chart.stamp_version:
        locked = LockedChart(locked.source, locked.name, chart.stamp_version, locked.digest, locked.dependencies)
    return locked


def tree_digest(files: Mapping[str, bytes]) -> str:
    """sha256 of the `sha256sum` listing of the files, sorted by path (byte order): the same as
    `find . -type f | LC_ALL=C sort | sed 's|^\\./||' | xargs -d '\\n' sha256sum | sha256sum` in the folder."""
    listing = "".join(f"{hashlib.sha256(files[name]).hexdigest()}  {name}\n" for name in sorted(files))
    return digest_of(listing.encode())


def _chart_files(files: Mapping[str, bytes], source: str, digest: str) -> LockedChart:
    if "Chart.yaml" not in files:
        raise InputError(f"{source}: not a chart (no Chart.yaml)")
    meta = yaml.safe_load(files["Chart.yaml"]) or {}
    if not isinstance(meta, dict):
        raise InputError(f"{source}/Chart.yaml: not a mapping")
    deps: list[LockedChart] = []
    for name in sorted({n.split("/")[1] for n in files if re.fullmatch(r"charts/[^/]+/.+", n)}):
        prefix = f"charts/{name}/"
        sub = {n.removeprefix(prefix): data for n, data in files.items() if n.startswith(prefix)}
        if "Chart.yaml" in sub:
            deps.append(_chart_files(sub, f"{source}/charts/{name}", tree_digest(sub)))
    for name in sorted(n for n in files if re.fullmatch(r"charts/[^/]+\.tgz", n)):
        deps.append(_chart_tgz(files[name], f"{source}/{name}"))
    return LockedChart(source, str(meta.get("name", "")), str(meta.get("version", "")), digest,
                       tuple(sorted(deps, key=lambda d: d.source)))


def _chart_tgz(data: bytes, source: str) -> LockedChart:
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member in archive.getmembers():
            handle = archive.extractfile(member) if member.isfile() else None
            if handle is not None and "/" in member.name:
                files[member.name.split("/", 1)[1]] = handle.read()
    return _chart_files(files, source, digest_of(data))
