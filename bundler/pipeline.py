"""The build: wire the stages, report progress, write the bundle under a temporary name, rename it.

    spec -> render -> sweep -> pull -> crossplane -> rewrite (+ closed loop) -> bom/attest -> archive -> sign

`build(spec, options, progress) -> BuildResult` runs each stage in order and stops at the first one that
raises; that stage's error (and exit code) is the build's. The payload is assembled in a staging folder
next to the output and the archive is written to a temporary name, so a failed build leaves no file at
the output path and a previous bundle there untouched. One overlap: the pull hands over its images once
their manifests are stored, and its blobs keep arriving while the later stages run; the archive waits
for each blob when it reaches it (`pull.start`, `archive.Arriving`), and a failed download stops the build.

This module only wires: what an image is, how to pull, rewrite, sign or archive is each stage's job.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gzip
import hashlib
import io
import shutil
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import __version__, archive, attest, bom, charts, crossplane, pull, relocate, render, sign, sweep, xpkg
from . import lock as lockfile
from . import update as updates
from .crossplane_model import Target
from .documents import Document, Origin, load_stream
from .errors import (
    ArchiveError,
    DigestMismatchError,
    LockMismatchError,
    SpecError,
    UnrelocatedImageError,
    UnvendoredImageError,
    UsageError,
)
from .keys import Signer
from .layout import Layout
from .progress import NullProgress, Progress
from .reference import ImageRef
from .relocate import helm as relocate_helm
from .spec import Spec

STAGES = ("render", "sweep", "pull", "crossplane", "rewrite", "attest", "archive")


@dataclass(frozen=True)
class BuildOptions:
    output: Path
    signer: Signer | None  # None only with unsigned=True
    authority: str = "vendor"
    unsigned: bool = False
    cache: Path | None = None
    jobs: int = 8
    offline: bool = False
    insecure_registries: tuple[str, ...] = ()
    source_date_epoch: int | None = None  # the caller's SOURCE_DATE_EPOCH; else the spec's; else 0
    tools: render.Tools = field(default_factory=render.Tools)
    crossplane_target: str | None = None
    lock: Path | None = None  # the lock file; None: beside the spec (lock.path_for(spec.path))
    update: bool = False      # re-resolve every tag on purpose and rewrite the lock
    base: updates.Base | None = None  # an update bundle: omit the image blobs this verified base holds


@dataclass(frozen=True)
class LockOutcome:
    """What a build or `lock` did with the lock file."""

    path: Path
    action: str      # used | wrote | updated | unchanged | checked
    digest: str      # sha256 of the lock file's bytes (what the provenance records)
    images: int
    charts: int
    changes: tuple[lockfile.Change, ...] = ()
    differences: tuple[lockfile.Difference, ...] = ()   # `lock --check`: empty when spec and lock agree
    spec_changed: bool = False   # the spec's bytes differ from those the lock was made from

    def line(self) -> str:
        """The one line `build` and `lock` print about the lock."""
        where = render.display(self.path)
        counts = f"{_plural(self.images, 'image')}, {_plural(self.charts, 'chart')}"
        if self.action in ("updated", "unchanged"):
            counts += f"; {_plural(len(self.changes), 'change')}"
        said = {"used": f"used {where} ({counts} pinned; no tag re-resolved",
                "wrote": f"wrote {where} ({counts}",
                "updated": f"updated {where} ({counts}",
                "unchanged": f"kept {where}, already up to date ({counts}",
                "checked": f"{where} {'disagrees with' if self.differences else 'agrees with'} the spec "
                           f"({_plural(len(self.differences), 'difference')}; {counts}"}[self.action]
        return f"lock: {said}; {self.digest[:19]}...)"

    def to_json(self) -> dict[str, object]:
        return {"path": str(self.path), "action": self.action, "digest": self.digest, "images": self.images,
                "charts": self.charts, "changes": [c.to_json() for c in self.changes],
                "differences": [d.to_json() for d in self.differences], "specChanged": self.spec_changed}


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


@dataclass(frozen=True)
class BuildResult:
    output: Path
    size: int
    statement_sha256: str
    images: tuple[bom.ImageEntry, ...]
    charts: tuple[bom.ChartEntry, ...]
    signed_by: tuple[str, ...]
    coverage: tuple[str, ...]  # one line per output: what it rewrote
    lock: LockOutcome  # what the build did with the lock: used, wrote or updated
    base: bom.BaseEntry | None = None  # an update bundle: its base and the blobs taken from it


def build(spec: Spec, options: BuildOptions, progress: Progress | None = None) -> BuildResult:
    """Build a bundle from a spec.

    Raises:
        BundlerError: the first stage that fails decides the message and the exit code.
    """
    progress = progress or NullProgress()
    if options.signer is None and not options.unsigned:
        raise UsageError("refusing to write an unsigned bundle", hint="pass --key (and --cert), or --unsigned")
    epoch = options.source_date_epoch if options.source_date_epoch is not None else spec.source_date_epoch or 0
    options.output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{options.output.name}.", dir=options.output.parent))
    try:
        with contextlib.ExitStack() as running:  # what the build starts (downloads) ends before staging goes
            return _build(spec, options, progress, epoch, staging, running)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _build(spec: Spec, options: BuildOptions, progress: Progress, epoch: int, staging: Path,
           running: contextlib.ExitStack) -> BuildResult:
    payload = staging / "payload"
    payload.mkdir()

    # Kustomize trees first: a remote base or helmCharts fails the build before kubectl could fetch it.
    trees = [relocate.closure(directory) for directory in spec.kustomize]

    # The lock, when there is one and no --update: charts and images are fetched at its versions and digests.
    lock_path = options.lock or lockfile.path_for(spec.path)
    old = lockfile.load(lock_path) if lock_path.exists() else None
    use = old if not options.update else None

    # charts by reference, and missing chart dependencies: fetched through the allowlist, verified
    located = fetch_charts(spec, options, staging, pins=lockfile.chart_pins(use) if use else None)
    # What the BOM names as each chart's source: never the temporary folder a fetched chart sits in.
    shown = [c.fetched.reference if c.fetched else render.display(original.path)
             for c, original in zip(located, spec.charts, strict=True)]
    as_written = spec
    spec = dataclasses.replace(spec, charts=tuple(c.chart for c in located))

    # render + sweep
    streams, found = _render_and_sweep(spec, options.tools, progress)
    streams[:len(shown)] = [dataclasses.replace(stream, source=source) for stream, source in zip(streams, shown, strict=False)]
    docs = [doc for stream in streams for doc in stream.documents]
    carried = [image for image in found.images if image.carried]
    if not carried and not spec.charts:  # the statement's subjects are the images and charts
        raise SpecError(f"{render.display(spec.path)}: nothing to bundle: the sources pull no image and carry no chart",
                        hint="add charts, Kustomize bases or manifests under sources:, or images under extraImages:")

    # the lock and the spec must agree (else --update, or `lock SPEC`, records the change on purpose)
    charts_locked = tuple(lockfile.chart_entry(c, loc, spec.path.parent) for c, loc in zip(as_written.charts, located,
                                                                                          strict=True))
    if use is not None:
        lockfile.require_agrees(use, wanted(as_written, found))

    # pull: every carried image, every required platform, into images/ (an OCI layout). The blobs keep
    # arriving while the later stages run, and the archive is written right behind them.
    layout = payload / "images"
    pulling = running.enter_context(pull.start(
        [image.written for image in carried], layout=layout, platforms=spec.platforms, options_for=spec.options_for,
        sources=pull.Sources(registries=spec.registries, insecure_hosts=options.insecure_registries),
        cache=options.cache, jobs=options.jobs, offline=options.offline, progress=progress,
        pins=lockfile.pins(use) if use is not None else None,
        elsewhere=options.base.holds_blob if options.base is not None else None))  # an update skips the base's
    pulled = pulling.images
    by_source = {ImageRef.parse(p.source).canonical: p for p in pulled}
    locked, lock_bytes = _lock_outcome(spec, lock_path, options.update, old, pulled, charts_locked)
    pulling.name_images()  # index.json now: the archive lists every file before the blobs are in

    # crossplane gate: only when the sources hold Crossplane objects; fails closed
    packages = [image for image in carried if any(f.kind in CROSSPLANE_PACKAGE_KINDS for f in image.findings)]
    if crossplane.has_crossplane_objects(docs):
        pulling.wait_images([by_source[image.ref.canonical] for image in packages if image.ref.canonical in by_source])
        _crossplane_gate(spec, options, docs, packages, by_source, layout, progress)

    # rewrite, then the closed loop
    local = relocate.LocalRefs({
        source: relocate.local_reference(p.ref, p.bundled_digest, host=spec.local_registry, template=spec.template)
        for source, p in by_source.items()
    })
    names = _member_names(streams)
    rewritten = relocate.rewrite_streams(
        [relocate.Stream(names[i], s.text, s.source) for i, s in enumerate(streams)],
        functools.partial(sweep.find_images, catalogue=spec.catalogue), local)
    coverage = [f"{s.name}: {sum(1 for c in rewritten.changes if c.stream == s.name)} references rewritten"
                for s in rewritten.streams]
    for stream in rewritten.streams:
        _write(payload / stream.name, stream.text.encode())
    _require_local(spec, [(s.name, s.text) for s in rewritten.streams], found, "rewritten manifests")
    charts = _package_charts(spec, payload, local, epoch, options.tools, found, coverage, staging, located)
    _write_overlays(spec, trees, streams, payload, local, options.tools, found, coverage)
    progress.step("rewrite", 1, 1, f"{len(rewritten.changes)} references")

    # bill of materials, SBOM, provenance, statement
    images = tuple(_image_entry(p, local) for p in sorted(pulled, key=lambda p: p.source))
    manifests = tuple(bom.ManifestEntry(s.name, s.source) for s in rewritten.streams)
    crossplane_packages = tuple(
        bom.CrossplanePackageEntry(image.written, _package_kind(image), local.local_for(image.ref))
        for image in packages)
    partial = bom.Bom(spec.name, spec.version, epoch, __version__, spec.digest, spec.local_registry,
                      images=images, charts=charts, manifests=manifests, crossplane_packages=crossplane_packages)
    _write(payload / "sbom.cdx.json", bom.cyclonedx(partial))
    _write(payload / "provenance.intoto.json", attest.provenance(
        subjects=partial.subjects(), spec=spec.document, spec_digest=spec.digest,
        dependencies=[attest.Dependency(f"oci://{i.normalized}", i.upstream_digest) for i in images]
        + [attest.Dependency(f"file://{c.path}", c.digest) for c in charts]
        + [_chart_dependency(f) for located_chart in located for f in located_chart.all_fetched],
        builder_version=__version__, epoch=epoch,
        lock=(locked.path.name, locked.digest)))
    files, taken = _payload_files(payload, pulling), tuple[bom.FileEntry, ...]()
    if options.base is not None:  # an update bundle: the blobs its base holds are named, not carried
        files, taken = _split_for_base(files, options.base)
    base = options.base.entry(taken) if options.base else None
    progress.step("attest", 1, 1, f"{len(files)} files")

    def statement_of(written: Sequence[archive.Written]) -> bytes:
        full = dataclasses.replace(partial, files=tuple(bom.FileEntry(f.name, f.size, f.sha256) for f in written),
                                   base=base)
        return attest.statement(full.subjects(), bom.PREDICATE_TYPE, full.to_dict())

    signer = options.signer
    signature = archive.signature_name(options.authority) if signer is not None else ""  # a bad name fails first
    signed_by = (options.authority,) if signer is not None else ()

    def signatures_of(statement: bytes) -> list[tuple[str, bytes]]:
        return [(signature, sign.sign(statement, signer, options.authority))] if signer is not None else []

    # archive (+ vendor signature): one pass hashes each payload file for the statement while it is
    # written; under a temporary name, renamed by archive.write_hashed
    progress.step("archive", 0, 1)
    statement = archive.write_hashed(files, options.output, epoch, statement=statement_of, signatures=signatures_of,
                                     check=_require_blob_named_by_digest, before_rename=pulling.finish)
    progress.step("archive", 1, 1, str(options.output))
    if locked.action != "used":
        lockfile.write(locked.path, lock_bytes)  # only once the bundle is in place
    return BuildResult(options.output, options.output.stat().st_size, hashlib.sha256(statement).hexdigest(),
                       images, charts, signed_by, tuple(coverage), locked, base)


def _render_and_sweep(spec: Spec, tools: render.Tools, progress: Progress) -> tuple[list[render.Rendered],
                                                                                    sweep.Sweep]:
    progress.step("render", 0, len(spec.charts) + len(spec.kustomize) + len(spec.manifests))
    streams = render.render_streams(spec, tools)
    docs = [doc for stream in streams for doc in stream.documents]
    progress.step("render", len(streams), len(streams), f"{len(docs)} documents")
    chart_images = [image for chart in spec.charts for image in render.chart_images(chart.path)]
    found = sweep.sweep(docs, chart_images=chart_images, extra_images=spec.extra_images, options=spec.images,
                        spec_file=str(spec.path), catalogue=spec.catalogue)
    _require_clean_sweep(found, render.display(spec.path))
    progress.step("sweep", 1, 1, f"{sum(1 for i in found.images if i.carried)} images from "
                                 f"{found.documents} documents")
    return streams, found


def wanted(spec: Spec, found: sweep.Sweep) -> lockfile.Wanted:
    """What the spec (its charts as written, not fetched) asks for now, to compare with its lock:
    carried images, platforms, charts."""
    images: dict[str, tuple[bool, str]] = {}
    for image in [i for i in found.images if i.carried]:
        options = spec.options_for(image.ref)
        first = image.findings[0]
        images.setdefault(image.ref.canonical, (bool(options and options.keep_upstream_index),
                                                f"{render.display(Path(first.origin.file))}:{first.line}"))
    return lockfile.Wanted(spec.digest, tuple(map(str, spec.platforms)), images,
                           tuple(lockfile.wanted_chart(c, spec.path.parent) for c in spec.charts))


def _lock_outcome(spec: Spec, path: Path, update: bool, old: lockfile.Lock | None, pulled: list[pull.PulledImage],
                  charts: tuple[lockfile.LockedChart, ...]) -> tuple[LockOutcome, bytes]:
    """The lock this build used (checked against what it pulled) or will write, and its bytes."""
    new = lockfile.make(spec.path, spec.digest, [str(p) for p in spec.platforms], pulled, charts)
    changes = lockfile.changes(old, new)
    if old is not None and not update:
        if changes:  # fetched by the locked digests, yet the bundle would carry something else
            raise LockMismatchError(
                f"{old.name}: {changes[0]}: the locked digest was fetched, but this build would bundle "
                "another index", hint="narrowing changed (another airgap-bundle version?); re-resolve with "
                                      "`airgap-bundle lock SPEC --update` and review the change")
        return LockOutcome(path, "used", old.file_digest or "", len(old.images), len(old.charts),
                           spec_changed=old.spec_digest != spec.digest), b""
    data = lockfile.dumps(new)
    return LockOutcome(path, "wrote" if old is None else "updated", lockfile.digest_of(data),
                       len(new.images), len(new.charts), changes if old is not None else ()), data


@dataclass(frozen=True)
class LockOptions:
    lock: Path                                 # the lock file (lock.path_for(spec.path))
    update: tuple[str, ...] | None = None      # None: keep every pin; (): re-resolve all; else these images
    check: bool = False                        # compare only: no registry, nothing written
    cache: Path | None = None
    jobs: int = 8
    offline: bool = False
    insecure_registries: tuple[str, ...] = ()
    tools: render.Tools = field(default_factory=render.Tools)


def lock(spec: Spec, options: LockOptions, progress: Progress | None = None) -> LockOutcome:
    """`airgap-bundle lock`: make the lock agree with the spec, or (`check`) say where it does not.

    Without `update`, every pin of an image or chart the spec still has is kept (fetched by digest, which
    also recomputes the bundled digest, so a pin no registry serves fails here); what the spec added is
    resolved and what it removed dropped. `update` re-resolves every tag and chart version, or just the
    images it names. The lock is rewritten (temporary name, rename) only when its bytes change. `check`
    contacts no image registry; charts given by reference are fetched (at the locked versions, cache
    first) because rendering them is how their images are found.

    Raises:
        LockMismatchError: `check` and there is no lock to check.
        UsageError: an `update` image the spec does not carry.
        LockedDigestGoneError, BundlerError: as charts, render, sweep and pull.
    """
    progress = progress or NullProgress()
    old = lockfile.load(options.lock) if options.lock.exists() else None
    if options.check and old is None:
        raise LockMismatchError(f"{render.display(options.lock)}: no lock beside the spec",
                                hint="write one with `airgap-bundle lock SPEC` and commit it")
    keep_charts = old is not None and options.update != ()
    with tempfile.TemporaryDirectory(prefix="airgap-lock-") as tmp:
        located = fetch_charts(spec, options, Path(tmp),
                               pins=lockfile.chart_pins(old) if old is not None and keep_charts else None)
        _, found = _render_and_sweep(dataclasses.replace(spec, charts=tuple(c.chart for c in located)),
                                     options.tools, progress)
        charts = tuple(lockfile.chart_entry(c, loc, spec.path.parent)
                       for c, loc in zip(spec.charts, located, strict=True))
    if options.check:
        assert old is not None
        return LockOutcome(options.lock, "checked", old.file_digest or "", len(old.images), len(old.charts),
                           differences=lockfile.compare(old, wanted(spec, found)),
                           spec_changed=old.spec_digest != spec.digest)
    carried = [image for image in found.images if image.carried]
    queries = tuple(ImageRef.parse(q) for q in options.update or ())
    for text, query in zip(options.update or (), queries, strict=True):
        if not any(lockfile.matches(query, image.ref.canonical) for image in carried):
            raise UsageError(f"--update {text}: the spec carries no such image",
                             hint="name an image as `sweep SPEC` lists it (name, name:tag or name@digest)")
    resolved = pull.resolve([image.written for image in carried], cache=options.cache or pull.default_cache_dir(),
                            platforms=spec.platforms, options_for=spec.options_for,
                            sources=pull.Sources(registries=spec.registries,
                                                 insecure_hosts=options.insecure_registries),
                            jobs=options.jobs, offline=options.offline, progress=progress,
                            pins=lockfile.pins(old, update=queries if options.update is not None else None)
                            if old is not None else None)
    new = lockfile.make(spec.path, spec.digest, [str(p) for p in spec.platforms], resolved, charts)
    data = lockfile.dumps(new)
    changes = lockfile.changes(old, new) if old is not None else ()
    digest = lockfile.digest_of(data)
    if old is not None and digest == old.file_digest:
        action = "unchanged"
    else:
        lockfile.write(options.lock, data)
        action = "wrote" if old is None else "updated"
    return LockOutcome(options.lock, action, digest, len(new.images), len(new.charts), changes)


CROSSPLANE_PACKAGE_KINDS = frozenset({"Provider", "Function", "Configuration"})


def fetch_charts(spec: Spec, options: BuildOptions | LockOptions, staging: Path,
                 pins: Mapping[tuple[str, str], charts.ChartPin] | None = None) -> list[charts.Localized]:
    """The spec's charts made local (charts.localize), with the build's cache and allowlist, at the
    lock's versions when `pins` are given."""
    if options.offline and options.cache is None:
        raise UsageError("--offline needs a cache to read from", hint="pass --cache DIR")
    cache = Layout(options.cache if options.cache is not None else staging / "chart-cache", remember_checks=True)
    return charts.localize(spec.charts, workdir=staging / "charts", cache=cache, tools=options.tools,
                           registries=spec.registries, insecure_hosts=options.insecure_registries,
                           repositories=spec.chart_repositories, offline=options.offline, pins=pins)


def _chart_dependency(fetched: charts.FetchedChart) -> attest.Dependency:
    """SLSA resolved dependency of a fetched chart: its download URL (or OCI reference), name and version."""
    uri = fetched.url if not fetched.is_oci else fetched.reference
    return attest.Dependency(uri, fetched.digest, fetched.name,
                             (("source", fetched.source), ("version", fetched.version)))


def _source_entry(fetched: charts.FetchedChart) -> bom.ChartSourceEntry:
    return bom.ChartSourceEntry(fetched.source, fetched.name, fetched.version, fetched.digest, fetched.url,
                                fetched.provenance)


def _package_kind(image: sweep.Image) -> str:
    return next(f.kind for f in image.findings if f.kind in CROSSPLANE_PACKAGE_KINDS)


def _require_clean_sweep(found: sweep.Sweep, spec_file: str) -> None:
    """Invalid references and unreviewed candidates stop the build: the bundle would not carry them."""
    if found.invalid:
        bad = found.invalid[0]
        raise UnvendoredImageError(f"{bad.origin.file}:{bad.line}: invalid image reference {bad.written!r}: "
                                   f"{bad.error}", hint="fix the reference in the source")
    sweep.require_reviewed(found, spec_file)


def _crossplane_gate(spec: Spec, options: BuildOptions, docs: list[Document], packages: list[sweep.Image],
                     by_source: dict[str, pull.PulledImage], layout: Path, progress: Progress) -> None:
    target_text = options.crossplane_target or spec.crossplane.target
    if not target_text:
        raise UsageError("the sources hold Crossplane objects but no target version is set",
                         hint="set crossplane.target in the spec (e.g. \"2.0\") or pass --crossplane-target")
    read = [xpkg.read_layout(layout, ImageRef.parse(by_source[image.ref.canonical].name))
            for image in packages if image.ref.canonical in by_source]
    report = crossplane.check(docs, [*crossplane.packages_from_spec(spec.crossplane), *read],
                              target=Target.parse(target_text), waivers=crossplane.waivers_from_spec(spec.crossplane),
                              images=list(by_source))
    progress.step("crossplane", 1, 1, f"{report.verdict}: {len(report.findings)} findings")
    crossplane.require(report)


def _member_names(streams: list[render.Rendered]) -> list[str]:
    """`manifests/<kind>-<name>.yaml`, unique."""
    names: list[str] = []
    for stream in streams:
        stem = stream.name.rsplit(".", 1)[0] if stream.kind == "manifest" else stream.name
        base = f"manifests/{stream.kind}-{stem}"
        name, n = f"{base}.yaml", 1
        while name in names:
            n += 1
            name = f"{base}-{n}.yaml"
        names.append(name)
    return names


def _require_local(spec: Spec, texts: list[tuple[str, str]], found: sweep.Sweep, what: str) -> list[sweep.Sweep]:
    """The closed loop: sweep an output again; anything outside the local registry fails the build.
    Returns the sweeps, one per text."""
    excluded = {s.image.ref.canonical for s in found.skipped}
    host = spec.local_registry
    sweeps = []
    for name, text in texts:
        # The same operator knowledge as the first sweep: a recognised image left upstream fails.
        again = sweep.sweep(load_stream(text, Origin(name, 1)), catalogue=spec.catalogue)
        for image in again.images:
            if image.ref.domain != host and image.ref.canonical not in excluded:
                where = image.findings[0]
                raise UnrelocatedImageError(
                    f"{name}:{where.line}: {what} still pull {image.written} from outside {host}",
                    hint="this is a rewrite gap; report it, or exclude the image with a reason")
        sweeps.append(again)
    return sweeps


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _payload_files(root: Path, pulling: pull.Pulling) -> list[tuple[str, archive.Arriving]]:
    """(member name, file) of every payload file, sorted by name. The image layout holds what the pull
    names (blobs may still be arriving), never its bookkeeping (locks, partial downloads)."""
    images = root / "images"
    present = [p for p in root.rglob("*") if p.is_file() and images not in p.parents]
    present += [images / "oci-layout", images / "index.json"]
    files = [(p.relative_to(root).as_posix(), archive.Arriving(p, p.stat().st_size, _present)) for p in present]
    files += [(pulling.out.blob_path(digest).relative_to(root).as_posix(),
               archive.Arriving(pulling.out.blob_path(digest), size, functools.partial(_blob_ready, pulling, digest)))
              for digest, size in pulling.layout_blobs().items()]
    return sorted(files)


def _present() -> None:
    """`Arriving.ready` of a file written before the archive starts: the archive hashes it."""


def _blob_ready(pulling: pull.Pulling, digest: str) -> str | None:
    """`Arriving.ready` of an image blob: once it is in, its sha256 hex when this run hashed those very
    bytes (downloaded them, verifying as they streamed), so the archive does not hash them twice. A
    blob trusted from the cache's record is hashed by the archive, against its name."""
    pulling.wait(digest)
    return digest.removeprefix("sha256:") if pulling.out.hashed_here(digest) else None


def _split_for_base(files: list[tuple[str, archive.Arriving]], base: updates.Base) -> tuple[
        list[tuple[str, archive.Arriving]], tuple[bom.FileEntry, ...]]:
    """(carried, taken) for an update bundle: a blob the base holds with the same name and size is taken
    from the base, whose copy was verified; its local copy is never read. Everything else is carried."""
    named = [bom.FileEntry(name, file.size, name.rpartition("/")[2]) for name, file in files
             if name.rpartition("/")[0] == "images/blobs/sha256"]
    _, taken = updates.split(named, base)
    gone = {f.path for f in taken}
    return [(name, path) for name, path in files if name not in gone], taken


def _require_blob_named_by_digest(member: archive.Written) -> None:
    """An image blob must hash to its own name: the cache may have skipped re-hashing it (layout
    RECORD), the bundle never does. Called as each member is written, with the hash of the bytes
    written (or of the same bytes as this run downloaded them, see `_blob_ready`)."""
    folder, _, name = member.name.rpartition("/")
    if folder == "images/blobs/sha256" and member.sha256 != name:
        raise DigestMismatchError(f"{member.name}: content hashes to sha256:{member.sha256}",
                                  hint="the cache holds a corrupted blob; delete it and build again")


def _package_charts(spec: Spec, payload: Path, local: relocate.LocalRefs, epoch: int, tools: render.Tools,
                    found: sweep.Sweep, coverage: list[str], staging: Path,
                    located: list[charts.Localized]) -> tuple[bom.ChartEntry, ...]:
    """Each chart as `charts/<name>-<version>.tgz` (a .tgz source as is; a directory, or a chart the
    spec stamps, packed deterministically) plus `charts/<name>-<version>.values-airgap.yaml`, the
    values override found by tracing. `relocate.helm` proves both invariants (only local images;
    nothing but image references changed) or fails the build."""
    entries: list[bom.ChartEntry] = []
    skipped = frozenset(s.image.ref.canonical for s in found.skipped)
    for n, chart in enumerate(spec.charts):
        source = chart.path
        if chart.stamp_version or chart.stamp_app_version:
            source = render.materialize_chart(chart, staging / f"chart-{n}")
        name, version, data = _chart_archive(source, epoch)
        member = f"charts/{name}-{version}.tgz"
        _write(payload / member, data)
        moved = relocate_helm.relocate_chart(chart, tools, local, host=spec.local_registry,
                                             find=functools.partial(sweep.sweep_document, catalogue=spec.catalogue),
                                             skipped=skipped)
        override_member = f"charts/{name}-{version}.values-airgap.yaml"
        _write(payload / override_member, moved.override.encode())
        coverage.append(f"{override_member}: {moved.summary()}")
        entries.append(bom.ChartEntry(name, version, member, "sha256:" + hashlib.sha256(data).hexdigest(),
                                      override_member,
                                      _source_entry(fetched) if (fetched := located[n].fetched) else None,
                                      tuple(_source_entry(d) for d in located[n].dependencies)))
    return tuple(entries)


def _write_overlays(spec: Spec, trees: list[relocate.Closure], streams: list[render.Rendered], payload: Path,
                    local: relocate.LocalRefs, tools: render.Tools, found: sweep.Sweep, coverage: list[str]) -> None:
    """`kustomize/<name>/tree/` (the kustomization's closure, at its paths from their common ancestor) and
    `kustomize/<name>/overlay/` (images: entries and patches over the tree).

    Closed loop: `kustomize/<name>` alone is copied elsewhere, as a customer would extract it, the overlay
    is built there with kubectl and swept: every image must be on the local registry, pinned by digest.
    """
    rendered = [s for s in streams if s.kind == "kustomize"]
    taken: set[str] = set()
    for directory, tree, stream in zip(spec.kustomize, trees, rendered, strict=True):
        name, n = directory.name, 1
        while name in taken:  # two sources named `prod` (a/overlays/prod, b/overlays/prod)
            n += 1
            name = f"{directory.name}-{n}"
        taken.add(name)
        root = payload / "kustomize" / name
        relocate.copy_closure(tree, root / "tree")
        entry = "../tree" if str(tree.entry) == "." else f"../tree/{tree.entry}"
        overlay = relocate.overlay(stream.text, functools.partial(sweep.find_images, catalogue=spec.catalogue), local,
                                   tree=entry, source=stream.source)
        for member, text in overlay.files.items():
            _write(root / "overlay" / member, text.encode())
        with tempfile.TemporaryDirectory(prefix="airgap-kustomize-") as extracted:
            shutil.copytree(root, Path(extracted) / name)
            text = render.kustomize_build(Path(extracted) / name / "overlay", tools)
        what = f"kustomize/{name}/overlay"
        (again,) = _require_local(spec, [(what, text)], found, "the kustomize overlay")
        by_tag = _require_pinned(spec, what, again, local)
        coverage.append(f"{what}: {overlay.images} images: entries, {overlay.patched} fields patched "
                        f"over a tree of {len(tree.files)} files; every image of the built overlay is on the "
                        "local registry, " + (f"{by_tag} pinned only by tag (an operator's split fields with no "
                                              "digest form), the rest by digest" if by_tag else "pinned by digest"))


def _require_pinned(spec: Spec, name: str, again: sweep.Sweep, local: relocate.LocalRefs) -> int:
    """Every local reference in an output carries a digest (a tag alone could be re-pushed), except
    where the rewrite pinned an operator's split fields by tag because the operator has no digest form
    (the same name:tag the bundle carries). Returns how many are pinned by tag only."""
    carried = {ref.split("@", 1)[0] for ref in local.by_source.values()}
    by_tag = 0
    for image in again.images:
        if image.ref.domain != spec.local_registry or image.ref.digest:
            continue
        if str(image.ref) in carried and all(f.form == "split" for f in image.findings):
            by_tag += 1
            continue
        raise UnrelocatedImageError(f"{name}:{image.findings[0].line}: {image.written} is not pinned by digest",
                                    hint="this is a rewrite gap; report it")
    return by_tag


def _image_entry(pulled: pull.PulledImage, local: relocate.LocalRefs) -> bom.ImageEntry:
    return bom.ImageEntry(
        source=pulled.source, normalized=str(pulled.ref), local=local.by_source[pulled.ref.canonical],
        upstream_digest=pulled.upstream_digest, bundled_digest=pulled.bundled_digest,
        media_type=pulled.media_type, keep_upstream_index=pulled.keep_upstream_index,
        platforms=tuple(bom.PlatformEntry(str(p.platform), p.digest, p.size, p.media_type)
                        for p in pulled.platforms),
        attestations=tuple(a.digest for a in pulled.attestations),
        exemptions=tuple((str(e.platform), e.reason) for e in pulled.exempted),
    )


def _chart_archive(path: Path, epoch: int) -> tuple[str, str, bytes]:
    """(name, version, .tgz bytes) of a chart directory or archive."""
    if path.is_file():
        data = path.read_bytes()
        with tarfile.open(fileobj=io.BytesIO(data)) as tgz:
            top = tgz.getnames()[0].split("/")[0]
            meta = yaml.safe_load(_member_text(tgz, f"{top}/Chart.yaml"))
        return str(meta["name"]), str(meta["version"]), data
    meta = yaml.safe_load((path / "Chart.yaml").read_text())
    name = str(meta["name"])
    raw = io.BytesIO()
    # Deterministic: sorted names, fixed mtime/uid/gid/mode, gzip header without a timestamp.
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w",
                                                                          format=tarfile.PAX_FORMAT) as tar:
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            info = tarfile.TarInfo(f"{name}/{file.relative_to(path).as_posix()}")
            info.size, info.mtime, info.mode = file.stat().st_size, epoch, 0o644
            with file.open("rb") as f:
                tar.addfile(info, f)
    return name, str(meta["version"]), raw.getvalue()


def _member_text(tgz: tarfile.TarFile, name: str) -> str:
    try:
        member = tgz.extractfile(name)
    except KeyError:
        member = None
    if member is None:
        raise ArchiveError(f"chart archive has no {name}")
    return member.read().decode()
