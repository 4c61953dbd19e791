"""The pull stage: image references -> a verified, deduplicated OCI layout and one `PulledImage` each.

Input: references as written, the required platforms, per-image options (`Spec.options_for`), the
allowed sources (`Sources`: the spec's registries and mirrors, plain-HTTP hosts, a CA bundle), an output
layout, a cache layout, a job count and a `Progress`. Output: `list[PulledImage]` (what later stages pin
and record) and the layout on disk.

Steps, per docs/design.md "Pull" (the user's view: docs/release-engineer.md):
1. Resolve each reference (tag or digest) to its index or manifest, stored as served: media types are
   never converted. Digest-pinned references are checked against the bytes (registry.get_manifest).
2. Choose platforms (`select_platforms`, pure): every required platform, matched as containerd does
   (arm64 == arm64/v8); attestation manifests (platform unknown/unknown) of the chosen ones ride along.
   A missing platform fails the image unless the spec exempts it with a reason. When the index lists
   more than that, a new index over just those is written (same media type and annotations), so the
   bundled digest differs from the upstream one; `keepUpstreamIndex` keeps everything.
3. Fetch every blob once across all images (a thread pool of `jobs`; shared layers are one task;
   started in digest order, the order a bundle lists them), cache first, each streamed through
   `oci.verified()` into layout.py's temp -> verify -> rename. A blob that fails its digest is
   discarded and fetched again once; then the image fails.
4. Write manifests (children before parents) while the blobs arrive; once every blob is in, index.json
   (ref.name annotations): the output's name -> bundled descriptor, the cache's name -> upstream
   descriptor (what `--offline` reads). `start` returns after the manifests (`Pulling`), so a build
   writes its archive behind the downloads; `pull` is `start` then `Pulling.finish`.

Fails closed: only the registries in `Sources` are contacted (registry.plan_routes), one log line lists
them before the first request, and `offline=True` contacts nothing and names what the cache lacks.
Not here: finding images in manifests (sweep), rewriting references (rewrite), printing (cli).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import (
    BundlerError,
    DigestMismatchError,
    LockedDigestGoneError,
    NotFoundError,
    OfflineMissError,
    PlatformMissingError,
    RegistryError,
    UsageError,
)
from .layout import Layout
from .oci import (
    ANNOTATION_REFERENCE_DIGEST,
    ANNOTATION_REFERENCE_TYPE,
    DEFAULT_PLATFORMS,
    INDEX_TYPES,
    MANIFEST_TYPES,
    Descriptor,
    Platform,
    blob_descriptors,
    sha256_digest,
)
from .progress import NullProgress, Progress
from .reference import ImageRef
from .registry import Manifest, RegistryClient, media_type_of, plan_routes
from .spec import ImageOptions, PlatformExemption, RegistryConfig

log = logging.getLogger(__name__)

DEFAULT_JOBS = 8


@dataclass(frozen=True)
class PlatformManifest:
    """One platform's image manifest in the bundled index (or the image itself, for a single manifest)."""

    platform: Platform
    digest: str
    size: int
    media_type: str


@dataclass(frozen=True)
class PulledImage:
    """What the pull did for one reference; rewrite pins `bundled_digest`, the BOM records it all."""

    source: str                      # the reference as written
    ref: ImageRef                    # normalised, with :latest when neither tag nor digest was given
    name: str                        # its org.opencontainers.image.ref.name in the layout's index.json
    upstream_digest: str             # what the registry serves for the reference
    bundled_digest: str              # what the layout carries (differs when the index was narrowed)
    media_type: str                  # of the bundled top-level object (never converted)
    size: int                        # of the bundled top-level object
    platforms: tuple[PlatformManifest, ...]
    attestations: tuple[Descriptor, ...] = ()   # unknown/unknown manifests kept with the image
    exempted: tuple[PlatformExemption, ...] = ()  # required platforms missing upstream, with the spec's reason
    keep_upstream_index: bool = False
    origin: str = ""                 # endpoint URL the manifest came from, or "cache"

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.bundled_digest, self.size)

    @property
    def narrowed(self) -> bool:
        return self.upstream_digest != self.bundled_digest


@dataclass(frozen=True)
class Sources:
    """Where content may come from: the allowed registries (with mirrors), plain-HTTP hosts, a CA bundle."""

    registries: tuple[RegistryConfig, ...] = ()
    insecure_hosts: tuple[str, ...] = ()
    ca_file: Path | None = None
    retries: int = 5
    backoff: float = 0.5
    timeout: float = 60.0
    # How the client waits between retries (Retry-After, backoff): a seam, so tests record the waits
    # instead of spending them.
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)

    @classmethod
    def for_refs(cls, refs: Sequence[str], **kwargs: Any) -> Sources:
        """Allow exactly the registries of the given references (the CLI's REF... form)."""
        hosts = sorted({ImageRef.parse(r).domain for r in refs})
        return cls(registries=tuple(RegistryConfig(h) for h in hosts), **kwargs)


@dataclass(frozen=True)
class Pin:
    """A digest a lock file fixes for a reference: the tag is not resolved, this digest is fetched.

    `entry` names the lock entry for messages (`bundle.lock:12 images[1]`)."""

    digest: str
    entry: str


@dataclass(frozen=True)
class Selection:
    """`select_platforms`' answer: which index entries to keep, and why."""

    kept: tuple[dict[str, Any], ...]                 # raw index entries, upstream order
    platforms: tuple[tuple[Platform, dict[str, Any]], ...]
    attestations: tuple[dict[str, Any], ...]
    exempted: tuple[PlatformExemption, ...]


def default_cache_dir(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME", str(Path.home()))) / ".cache")
    return Path(base) / "airgap-bundle"


def select_platforms(index: dict[str, Any], required: Sequence[Platform], *, image: str,
                     exemptions: Sequence[PlatformExemption] = (), keep_all: bool = False) -> Selection:
    """Choose the index entries to bundle. Pure.

    Raises:
        PlatformMissingError: a required platform is absent and not exempted (names image and platform).
    """
    entries = [e for e in index.get("manifests") or [] if isinstance(e, dict)]
    chosen: list[tuple[Platform, dict[str, Any]]] = []
    exempted: list[PlatformExemption] = []
    for want in required:
        hit = next((e for e in entries if isinstance(e.get("platform"), dict)
                    and not Platform.from_json(e["platform"]).is_unknown
                    and Platform.from_json(e["platform"]).matches(want)), None)
        if hit is not None:
            chosen.append((Platform.from_json(hit["platform"]), hit))
            continue
        exemption = next((x for x in exemptions if x.platform.matches(want)), None)
        if exemption is None:
            offered = ", ".join(str(Platform.from_json(e["platform"])) for e in entries
                                if isinstance(e.get("platform"), dict)) or "none"
            raise PlatformMissingError(f"{image}: platform {want} is missing (the index offers: {offered})",
                                       hint="exempt it under images: with platformExemptions and a reason, "
                                            "or choose another image")
        exempted.append(exemption)
    if keep_all:
        chosen = [(Platform.from_json(e["platform"]), e) for e in entries
                  if isinstance(e.get("platform"), dict) and not Platform.from_json(e["platform"]).is_unknown]
    chosen_digests = {e["digest"] for _, e in chosen}
    attestations = [e for e in entries if _is_attestation(e)
                    and (keep_all or (e.get("annotations") or {}).get(ANNOTATION_REFERENCE_DIGEST) in chosen_digests)]
    keep_ids = {id(e) for _, e in chosen} | {id(e) for e in attestations}
    kept = entries if keep_all else [e for e in entries if id(e) in keep_ids]
    return Selection(tuple(kept), tuple(chosen), tuple(attestations), tuple(exempted))


def _is_attestation(entry: dict[str, Any]) -> bool:
    platform = entry.get("platform")
    unknown = isinstance(platform, dict) and Platform.from_json(platform).is_unknown
    return unknown or ANNOTATION_REFERENCE_TYPE in (entry.get("annotations") or {})


def narrowed_index(upstream: dict[str, Any], kept: Sequence[dict[str, Any]]) -> bytes:
    """A new index with the upstream's fields (mediaType, annotations, ...) over just `kept`. Deterministic."""
    obj = dict(upstream)
    obj["manifests"] = list(kept)
    return json.dumps(obj, indent=2).encode()


@dataclass
class _Plan:
    source: str
    ref: ImageRef
    top: Manifest
    bundled: bytes
    bundled_type: str
    platforms: list[PlatformManifest]
    attestations: list[Descriptor]
    exempted: tuple[PlatformExemption, ...]
    keep: bool
    manifests: list[Manifest] = field(default_factory=list)   # child manifests, stored before the top
    blobs: list[tuple[str, int]] = field(default_factory=list)  # (digest, size) of configs and layers


class _Puller:
    def __init__(self, out: Layout, store: Layout, client: RegistryClient | None, *, jobs: int,
                 progress: Progress, local: frozenset[ImageRef] = frozenset()) -> None:
        self.out, self.store, self.client = out, store, client
        self.local = local  # imported from archives or the daemon into `store`: never asked of a registry
        self.progress = progress
        self.pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="blob")
        self.lock = threading.Lock()
        self.inflight: dict[str, Future[None]] = {}
        self.done_blobs = 0
        self.total_blobs = 0
        self.stopping = threading.Event()  # set by close(): downloads under way stop at their next chunk

    # manifests -------------------------------------------------------------------------------------
    def manifest(self, ref: ImageRef, reference: str) -> Manifest:
        """Cache first for digests (immutable); the registry for tags, or the cache's record when offline."""
        if reference.startswith("sha256:"):
            for layout in (self.store, self.out):
                if layout.has_blob(reference):
                    data = layout.read_blob(reference)
                    return Manifest(data, media_type_of(data, "", f"{ref.name}@{reference}"), reference, "cache")
            if self.client is None:
                raise OfflineMissError(f"{ref.name}@{reference}: not in the cache {self.store.path}",
                                       hint="run once online to fill the cache, or drop --offline")
        elif self.client is None or ref in self.local:
            desc = self.store.resolve(str(ref))
            if desc is None or not self.store.has_blob(desc.digest):
                raise OfflineMissError(f"{ref}: not in the cache {self.store.path}",
                                       hint="run once online to fill the cache, or drop --offline")
            data = self.store.read_blob(desc.digest)
            origin = "archive" if ref in self.local else "cache"
            return Manifest(data, media_type_of(data, desc.media_type, str(ref)), desc.digest, origin)
        assert self.client is not None
        return self.client.get_manifest(ref, reference)

    def resolve(self, source: str, ref: ImageRef, required: Sequence[Platform],
                options: ImageOptions | None, pin: Pin | None = None) -> _Plan:
        top = self._top(source, ref, pin)
        keep = bool(options and options.keep_upstream_index)
        exemptions = options.platform_exemptions if options else ()
        if top.media_type in INDEX_TYPES:
            upstream = top.json()
            sel = select_platforms(upstream, required, image=source, exemptions=exemptions, keep_all=keep)
            all_entries = [e for e in upstream.get("manifests") or [] if isinstance(e, dict)]
            bundled = top.data if len(sel.kept) == len(all_entries) else narrowed_index(upstream, sel.kept)
            plan = _Plan(source, ref, top, bundled, top.media_type, [], [], sel.exempted, keep)
            for entry in sel.kept:
                desc = Descriptor.from_json(entry)
                child = self.manifest(ref, desc.digest)
                if child.media_type not in MANIFEST_TYPES:
                    raise RegistryError(f"{source}: entry {desc.digest} of the index is a {child.media_type}; "
                                        "nested indexes are not supported")
                if len(child.data) != desc.size:
                    raise DigestMismatchError(f"{source}: manifest {desc.digest} is {len(child.data)} bytes, "
                                              f"the index says {desc.size}")
                plan.manifests.append(child)
                plan.blobs += _blobs_of(child)
                if entry in sel.attestations:
                    plan.attestations.append(desc)
                else:
                    plan.platforms.append(PlatformManifest(desc.platform or Platform("unknown", "unknown"),
                                                           desc.digest, desc.size, child.media_type))
            return plan
        # A single manifest: acceptable only as the one platform still required.
        blobs = _blobs_of(top)  # a malformed manifest is refused here, before its config is fetched
        config_desc = Descriptor.from_json(top.json().get("config") or {})
        self.fetch_blob(ref, config_desc.digest, config_desc.size).result()
        cfg = json.loads(self.store.read_blob(config_desc.digest))
        have = Platform.from_json(cfg if isinstance(cfg, dict) else {})
        remaining = [p for p in required if not any(x.platform.matches(p) for x in exemptions)]
        if len(remaining) != 1 or not have.matches(remaining[0]):
            wanted = ", ".join(map(str, required))
            raise PlatformMissingError(
                f"{source}: a single-platform image ({have}), but {wanted} "
                f"{'is' if len(required) == 1 else 'are'} required",
                hint="use a multi-platform index, or exempt the other platforms in the spec with a reason, "
                     "or pull with --platform " + str(have))
        exempted = tuple(x for x in exemptions if not x.platform.matches(have))
        return _Plan(source, ref, top, top.data, top.media_type,
                     [PlatformManifest(have, top.digest, len(top.data), top.media_type)], [], exempted, keep,
                     [], blobs)

    def _top(self, source: str, ref: ImageRef, pin: Pin | None) -> Manifest:
        """The reference's own index or manifest; a pinned one by its locked digest, never by tag."""
        if pin is None or ref in self.local:
            top = self.manifest(ref, ref.digest or ref.tag or "latest")
            if pin is not None and top.digest != pin.digest:  # an archive is what it holds: compare, never fetch
                raise LockedDigestGoneError(f"{source}: {pin.entry} pins {pin.digest}, but its archives now hold "
                                            f"{top.digest}", hint="restore the archives the lock was made from, "
                                                                  "or re-resolve on purpose: airgap-bundle lock "
                                                                  "SPEC --update IMAGE")
            return top
        try:
            return self.manifest(ref, pin.digest)
        except NotFoundError as exc:
            raise LockedDigestGoneError(
                f"{source}: {pin.entry} pins {pin.digest}, which no configured registry serves any more "
                f"({exc.message})",
                hint="restore that image upstream, or re-resolve the tag on purpose: "
                     "airgap-bundle lock SPEC --update IMAGE") from None

    # blobs -------------------------------------------------------------------------------------------
    def fetch_blob(self, ref: ImageRef, digest: str, size: int) -> Future[None]:
        """One task per digest for the whole run (in-flight dedupe)."""
        with self.lock:
            fut = self.inflight.get(digest)
            if fut is None:
                fut = self.pool.submit(self._ensure_blob, ref, digest, size)
                self.inflight[digest] = fut
                self.total_blobs += 1
            return fut

    def _ensure_blob(self, ref: ImageRef, digest: str, size: int) -> None:
        if not self.out.has_blob(digest):
            if self.store is self.out or not self.out.link_from(self.store, digest):
                self._download(ref, digest, size)
                if self.store is not self.out:
                    self.out.link_from(self.store, digest)
        with self.lock:
            self.done_blobs += 1
            done, total = self.done_blobs, self.total_blobs
        self.progress.step("blobs", done, total, digest[:19])

    def _download(self, ref: ImageRef, digest: str, size: int) -> None:
        client = None if ref in self.local else self.client
        if client is None:
            raise OfflineMissError(f"{ref}: blob {digest} is not in the cache {self.store.path}",
                                   hint="run once online to fill the cache, or drop --offline")
        for attempt in (1, 2):
            try:
                self.store.write_blob(digest, size, lambda offset: client.blob_chunks(ref, digest, offset),
                                      on_bytes=self._transferred)
                return
            except DigestMismatchError as exc:
                if attempt == 2:
                    raise DigestMismatchError(f"{ref}: {exc.message} (twice; nothing was kept)",
                                              hint=exc.hint) from None
                log.warning("%s: %s; discarded, fetching once more", ref, exc.message)

    def _transferred(self, n: int) -> None:
        if self.stopping.is_set():
            raise _Stopped()  # the partial file stays: the next run continues it with a Range request
        self.progress.transferred(n)

    def close(self) -> None:
        """Wait for the blob tasks; queued ones never start. On success every task is done already; when
        the run failed or was interrupted (Ctrl-C, SIGTERM), a multi-gigabyte download under way stops
        at its next chunk instead of keeping the process alive until it ends."""
        self.stopping.set()
        with self.lock:
            under_way = sum(1 for fut in self.inflight.values() if fut.running())
        if under_way:
            log.info("pull: stopping; %d download(s) under way stop at their next chunk (their bytes are kept in the "
                     "cache's .partial folder for the next run)", under_way)
        self.pool.shutdown(wait=True, cancel_futures=True)


class _Stopped(Exception):
    """A download stopped because the run is ending; never reported (the run's own error is)."""


def _blobs_of(manifest: Manifest) -> list[tuple[str, int]]:
    obj = manifest.json()
    try:
        return [(d.digest, d.size) for d in blob_descriptors(obj)]
    except (KeyError, TypeError, ValueError) as exc:
        raise RegistryError(f"manifest {manifest.digest} from {manifest.endpoint} is malformed: {exc}") from None


def pull(refs: Sequence[str], *, layout: Path | Layout, platforms: Sequence[Platform] = DEFAULT_PLATFORMS,
         options_for: Callable[[ImageRef], ImageOptions | None] = lambda ref: None,
         sources: Sources | None = None, cache: Path | Layout | None = None, jobs: int = DEFAULT_JOBS,
         offline: bool = False, progress: Progress | None = None,
         environ: dict[str, str] | None = None, pins: Mapping[str, Pin] | None = None) -> list[PulledImage]:
    """Pull every reference's required platforms into `layout`; return one PulledImage per reference.

    Args:
        refs: references as written (duplicates are pulled once, reported once each).
        layout: the output OCI layout (created if missing; on success a plain OCI layout without this
            tool's bookkeeping, unless it is also the cache).
        platforms: required platforms (Spec.platforms or --platform).
        options_for: per-image options (Spec.options_for): keepUpstreamIndex, platformExemptions.
        sources: allowed registries; default: exactly the hosts of `refs`.
        cache: a shared OCI layout consulted first and filled by the run; None: no cache.
        jobs: concurrent blob downloads.
        offline: contact nothing; everything must be in the cache.
        pins: digests a lock fixes, by canonical reference (`ImageRef.canonical`): fetched by digest,
            the tag is not resolved (and the cache's record of the tag is left alone).

    Raises:
        InvalidReferenceError, UsageError (a registry not allowed), AuthError, NotFoundError,
        RegistryError, DigestMismatchError, PlatformMissingError, OfflineMissError, LayoutError,
        LockedDigestGoneError (a pinned digest no configured registry serves).
    """
    with start(refs, layout=layout, platforms=platforms, options_for=options_for, sources=sources, cache=cache,
               jobs=jobs, offline=offline, progress=progress, environ=environ, pins=pins) as pulling:
        pulling.finish()
    return pulling.images


def start(refs: Sequence[str], *, layout: Path | Layout, platforms: Sequence[Platform] = DEFAULT_PLATFORMS,
          options_for: Callable[[ImageRef], ImageOptions | None] = lambda ref: None,
          sources: Sources | None = None, cache: Path | Layout | None = None, jobs: int = DEFAULT_JOBS,
          offline: bool = False, progress: Progress | None = None,
          environ: dict[str, str] | None = None, pins: Mapping[str, Pin] | None = None,
          elsewhere: Callable[[str, int], bool] | None = None) -> Pulling:
    """`pull`, returning as soon as every image is resolved and its manifests are stored, while the
    blobs still arrive (in digest order, the order a bundle lists them): a build writes its archive
    behind the downloads instead of after them. Same arguments and errors as `pull` (a blob's error
    is raised by `Pulling.wait` or `Pulling.finish`). Use it as a context manager: leaving the block
    stops what is still downloading.

    `elsewhere(digest, size)`: the caller has this blob in another place (an update bundle's base
    holds it), so it is not fetched unless `Pulling.wait` asks for it; the cache then does not name
    an image that lacks it."""
    progress = progress or NullProgress()
    pins = pins or {}
    out = layout if isinstance(layout, Layout) else Layout(layout)
    store = out
    if cache is not None:
        store = cache if isinstance(cache, Layout) else Layout(cache, remember_checks=True)
        if store.path.resolve() == out.path.resolve():
            store = out
    elif offline:
        raise UsageError("--offline needs a cache to read from", hint="pass --cache DIR")
    parsed, puller = _open(refs, out, store, sources, offline=offline, jobs=jobs, progress=progress,
                           environ=environ, options_for=options_for, platforms=platforms)
    try:
        unique, plans = _resolve_all(puller, parsed, platforms, options_for, pins, jobs, progress)
        first_of: dict[str, tuple[int, ImageRef]] = {}  # digest -> (size, first image): a shared blob is one task
        for ref in unique:
            for digest, size in plans[ref].blobs:
                first_of.setdefault(digest, (size, ref))
        blobs = {digest: puller.fetch_blob(ref, digest, size) for digest, (size, ref) in sorted(first_of.items())
                 if elsewhere is None or not elsewhere(digest, size)}
        # Manifests go on a pool of their own (each write ends in an fsync), not behind the downloads.
        with ThreadPoolExecutor(max_workers=max(1, min(4, jobs)), thread_name_prefix="manifest") as writer:
            stored = {ref: writer.submit(_store_manifests, plans[ref], out, store) for ref in unique}
            results: dict[ImageRef, PulledImage] = {}
            for ref in unique:
                results[ref] = stored[ref].result()
                progress.step("images", len(results), len(unique), str(ref))
    except BaseException:
        puller.close()
        raise
    cache_names = {} if store is out else {
        str(ref): Descriptor(plans[ref].top.media_type, plans[ref].top.digest, len(plans[ref].top.data))
        for ref in unique if not ref.digest and ref.canonical not in pins}
    return Pulling([_as_written(results[r], text) for text, r in parsed], puller, plans, blobs, out, cache_names,
                   left={d: entry for d, entry in first_of.items() if d not in blobs},
                   tidy=store is not out or cache is None)


class Pulling:
    """A pull under way (`start`): every image resolved, its manifests stored, its blobs arriving.

    `images` is what `pull` returns. `wait(digest)` returns once that blob is in the layout (or raises
    the first failure of any download: a build stops at once, not when it reaches the failed blob).
    `finish()` waits for every blob, then names the images in index.json (the output's, and the
    cache's tags) and tidies the output. Leaving the `with` block stops downloads still under way.
    """

    def __init__(self, images: list[PulledImage], puller: _Puller, plans: dict[ImageRef, _Plan],
                 blobs: dict[str, Future[None]], out: Layout, cache_names: dict[str, Descriptor], *,
                 left: dict[str, tuple[int, ImageRef]], tidy: bool) -> None:
        self.images = images
        self.out = out  # the output layout
        self._puller, self._plans, self._blobs = puller, plans, blobs
        self._left = left  # digest -> (size, image): not fetched (`elsewhere`) unless waited for
        self._cache_names, self._tidy = cache_names, tidy
        self._changed = threading.Condition()
        self._failure: Future[None] | None = None
        for fut in blobs.values():
            fut.add_done_callback(self._done)

    def __enter__(self) -> Pulling:
        return self

    def __exit__(self, *exc: object) -> None:
        self._puller.close()

    def _done(self, fut: Future[None]) -> None:
        with self._changed:
            if self._failure is None and not fut.cancelled() and fut.exception() is not None:
                self._failure = fut
            self._changed.notify_all()

    def layout_blobs(self) -> dict[str, int]:
        """Every blob the output layout will hold once the pull is done: digest -> size."""
        plans = self._plans.values()
        return {**{digest: size for plan in plans for digest, size in plan.blobs},
                **{child.digest: len(child.data) for plan in plans for child in plan.manifests},
                **{image.bundled_digest: image.size for image in self.images}}

    def wait(self, digest: str) -> None:
        """Return once the blob is in the layout; raise the first download failure, whichever blob."""
        if digest in self._left:  # held elsewhere, but wanted after all (the Crossplane gate reads it)
            size, ref = self._left.pop(digest)
            self._blobs[digest] = self._puller.fetch_blob(ref, digest, size)
            self._blobs[digest].add_done_callback(self._done)
        fut = self._blobs.get(digest)
        if fut is None:
            return  # a manifest: stored before `start` returned
        with self._changed:
            self._changed.wait_for(lambda: fut.done() or self._failure is not None)
        (self._failure or fut).result()

    def wait_images(self, images: Sequence[PulledImage]) -> None:
        """Return once every blob of these images is in the layout."""
        for image in images:
            for digest, _ in self._plans[image.ref].blobs:
                self.wait(digest)

    def name_images(self) -> None:
        """Write the output's index.json now, before the blobs are in: only for an output that is thrown
        away if the run fails (a build's staging folder). `finish` does it otherwise."""
        self.out.set_refs({p.name: p.descriptor for p in self.images})

    def finish(self) -> None:
        """Wait for every blob; then name the images in the output and the cache, and tidy the output."""
        for digest in list(self._blobs):
            self.wait(digest)
        self.name_images()
        complete = {str(ref) for ref, plan in self._plans.items() if not any(d in self._left for d, _ in plan.blobs)}
        if names := {name: desc for name, desc in self._cache_names.items() if name in complete}:
            self._puller.store.set_refs(names)  # a name in the cache promises every blob of the image
        if self._tidy:  # an output, not also the cache: a plain OCI layout, no bookkeeping
            self.out.tidy()


def resolve(refs: Sequence[str], *, cache: Path, platforms: Sequence[Platform] = DEFAULT_PLATFORMS,
            options_for: Callable[[ImageRef], ImageOptions | None] = lambda ref: None,
            sources: Sources | None = None, jobs: int = DEFAULT_JOBS, offline: bool = False,
            progress: Progress | None = None, environ: dict[str, str] | None = None,
            pins: Mapping[str, Pin] | None = None) -> list[PulledImage]:
    """What `pull` would bundle, without its layers: each reference's upstream digest and the digest of
    the index the bundle would carry (narrowed to `platforms` as `pull` narrows it). For `lock`.

    Reads index and manifests (and a single-platform image's config, to learn its platform) through
    the cache; writes nothing else. Same arguments and errors as `pull`.
    """
    progress = progress or NullProgress()
    store = Layout(cache, remember_checks=True)
    parsed, puller = _open(refs, store, store, sources, offline=offline, jobs=jobs, progress=progress,
                           environ=environ, options_for=options_for, platforms=platforms)
    try:
        _, plans = _resolve_all(puller, parsed, platforms, options_for, pins or {}, jobs, progress)
    finally:
        puller.close()
    return [_as_written(_planned(plans[r]), text) for text, r in parsed]


def _open(refs: Sequence[str], out: Layout, store: Layout, sources: Sources | None, *, offline: bool, jobs: int,
          progress: Progress, environ: dict[str, str] | None,
          options_for: Callable[[ImageRef], ImageOptions | None],
          platforms: Sequence[Platform]) -> tuple[list[tuple[str, ImageRef]], _Puller]:
    """Parse the references, import the local ones (archives, daemon) into `store`, and connect (or
    not, offline): the endpoint line is logged here."""
    parsed = [(text, ImageRef.parse(text).with_default_tag()) for text in refs]
    local = {ref: opts for _, ref in parsed if (opts := options_for(ref)) is not None and opts.local}
    if offline:
        client = None
        log.info("pull: offline; reading only the cache %s", store.path)
    else:
        sources = sources or Sources.for_refs(refs)
        routes = plan_routes(sorted({r.domain for _, r in parsed if r not in local}), sources.registries,
                             insecure_hosts=sources.insecure_hosts, ca_file=sources.ca_file, environ=environ)
        client = RegistryClient(routes, retries=sources.retries, backoff=sources.backoff, timeout=sources.timeout,
                                sleep=sources.sleep)
        # One line, before the first request: every endpoint this run may contact.
        log.info("pull: endpoints: %s; cache: %s", "; ".join(client.describe()) or "none",
                 store.path if store is not out else "none")
    for ref, opts in local.items():
        store.set_refs({str(ref): _import_local(ref, opts, store, platforms)})
        log.info("pull: %s imported from %s", ref, ", ".join(map(str, opts.archives)) or "the Docker daemon")
    return parsed, _Puller(out, store, client, jobs=jobs, progress=progress, local=frozenset(local))


def _resolve_all(puller: _Puller, parsed: list[tuple[str, ImageRef]], platforms: Sequence[Platform],
                 options_for: Callable[[ImageRef], ImageOptions | None], pins: Mapping[str, Pin], jobs: int,
                 progress: Progress) -> tuple[list[ImageRef], dict[ImageRef, _Plan]]:
    unique = list(dict.fromkeys(r for _, r in parsed))
    plans: dict[ImageRef, _Plan] = {}
    with ThreadPoolExecutor(max_workers=max(1, min(4, jobs)), thread_name_prefix="resolve") as resolver:
        futures = {ref: resolver.submit(puller.resolve, next(t for t, r in parsed if r == ref), ref,
                                        platforms, options_for(ref), pins.get(ref.canonical)) for ref in unique}
        for n, ref in enumerate(unique, 1):
            plans[ref] = _result(futures[ref], [*futures.values()])
            progress.step("resolve", n, len(unique), str(ref))
    return unique, plans


def _import_local(ref: ImageRef, opts: ImageOptions, store: Layout, platforms: Sequence[Platform]) -> Descriptor:
    """An image from `docker save` / `podman save` files, or the local Docker daemon, into `store`."""
    from . import archives  # docker-save archives are rare: tarfile is loaded only for them

    with tempfile.TemporaryDirectory(prefix="airgap-daemon-") as tmp:
        files = list(opts.archives)
        if opts.docker_daemon:  # pragma: no cover - needs a Docker engine (docs/release-engineer.md "Images that were never in a registry")
            files.append(archives.save_from_daemon(ref, Path(tmp) / "daemon.tar"))
        return archives.import_image(ref, files, store, required=platforms, exemptions=opts.platform_exemptions)


def _result(fut: Future[_Plan], all_futures: list[Future[_Plan]]) -> _Plan:
    try:
        return fut.result()
    except BundlerError:
        for other in all_futures:
            other.cancel()
        raise


def _store_manifests(plan: _Plan, out: Layout, store: Layout) -> PulledImage:
    # Children before parents, so a layout never names a manifest whose parts are missing. A manifest
    # the cache holds is hard-linked into the output, as blobs are: one write (and fsync) instead of two.
    for child in plan.manifests:
        store.put_bytes(child.data, child.digest)
        if store is not out:
            out.link_from(store, child.digest)
    if store is not out:
        store.put_bytes(plan.top.data, plan.top.digest)
    bundled_digest = sha256_digest(plan.bundled)
    if store is out or bundled_digest != plan.top.digest:  # a narrowed index is the output's own
        out.put_bytes(plan.bundled, bundled_digest)
    else:
        out.link_from(store, bundled_digest)
    if bundled_digest != plan.top.digest:
        log.info("%s: index narrowed to %s (upstream %s, bundled %s)", plan.source,
                 ", ".join(str(p.platform) for p in plan.platforms), plan.top.digest, bundled_digest)
    return _planned(plan)


def _planned(plan: _Plan) -> PulledImage:
    """The PulledImage a plan would give, without storing anything (`resolve`)."""
    return PulledImage(
        source=plan.source, ref=plan.ref, name=str(plan.ref), upstream_digest=plan.top.digest,
        bundled_digest=sha256_digest(plan.bundled), media_type=plan.bundled_type, size=len(plan.bundled),
        platforms=tuple(plan.platforms), attestations=tuple(plan.attestations), exempted=plan.exempted,
        keep_upstream_index=plan.keep, origin=plan.top.endpoint)


def _as_written(image: PulledImage, source: str) -> PulledImage:
    if image.source == source:
        return image
    return replace(image, source=source)
