"""The push stage: a verified bundle -> its images in a registry, byte for byte, then read back.

Input: a bundle path and a `keys.TrustPolicy` (`open_verified`: `verify`'s own checks, on the very
open file the blobs are then streamed from), a `Target` (the bundle's local registry, or another host
such as a port-forward; repository paths never change) and a `registry.RegistryClient` for it.
Output: `PushResult` (per image: what was already there, uploaded, mounted or pushed; the readback).

Steps (distribution-spec v1.1 "Push", image-spec v1.1 image-index.md / manifest.md):
1. plan (pure): walk each bundled index or manifest (`images/blobs/sha256/<hex>`) to every child
   manifest (attestation manifests included) and every config and layer;
2. blobs, one task per digest over `jobs` threads: HEAD in each repository that needs it; a missing
   one is mounted from a repository that has it (cross-repository mount), else uploaded, streamed out
   of the tar by member offset (`archive.read_range`), hashed on the way (`oci.verified`);
3. manifests, children before parents (a registry refuses an index whose children it lacks): the
   bundled bytes under their digest, the top one also under its tag; present ones are skipped;
4. readback: every manifest by digest and the tag (digest and media type), every required platform,
   every blob, and every image a rewritten manifest (`manifests/`) names, at the target, by digest.

An update bundle is pushed with its base (`open_verified(..., base=)`: both checked as `update.open_pair`
checks them); each blob is then read from whichever of the two files holds it.
A rerun after a failure or a kill resumes: what the registry already has is skipped (step 2-3 HEADs).
A failure says what was in place when it stopped. `dry_run` does the HEADs only and reports them.
Not here: verification rules (verify.py), HTTP, auth and retries (registry.py), printing (cli.py).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from . import archive, sweep, update, verify
from .bom import Bom, ImageEntry
from .bundlefile import BundleBytes, opened
from .documents import MAX_STREAM_BYTES, Origin, load_stream
from .errors import (
    ArchiveError,
    AuthError,
    DigestMismatchError,
    InvalidReferenceError,
    NotFoundError,
    ReadbackError,
    RegistryError,
    TooManyOpenFilesError,
)
from .keys import TrustPolicy
from .oci import (
    DEFAULT_PLATFORMS,
    INDEX_TYPES,
    MANIFEST_TYPES,
    Descriptor,
    Platform,
    blob_descriptors,
    verified,
)
from .progress import NullProgress, Progress
from .reference import ImageRef
from .registry import RegistryClient, media_type_of, plan_routes
from .spec import RegistryConfig

log = logging.getLogger(__name__)

BLOBS = "images/blobs/sha256/"
MAX_MANIFEST_BYTES = 4 << 20
DEFAULT_JOBS = 8
RESUME_HINT = "fix the cause and run the same command again: it resumes, skipping what is already there"
BlobState = Literal["present", "uploaded", "mounted", "missing"]  # "missing": dry run, would be pushed
ManifestState = Literal["present", "pushed", "missing"]


@dataclass(frozen=True)
class Target:
    """Where images go: `host` (the bundle's local registry or `--registry`), how to reach it."""

    host: str
    insecure: bool = False
    ca_file: Path | None = None

    def ref(self, local: str) -> ImageRef:
        """The target reference for a bundle's local reference: same repository path and tag, our host."""
        parsed = ImageRef.parse(local)
        return ImageRef.parse(f"{self.host}/{parsed.path}" + (f":{parsed.tag}" if parsed.tag else ""))


def connect(target: Target, *, environ: dict[str, str] | None = None) -> RegistryClient:
    """A client for the target alone, with credentials and TLS found exactly as `pull` finds them.

    Raises:
        AuthError: a credentials file is unreadable.
    """
    routes = plan_routes([target.host], [RegistryConfig(target.host, insecure=target.insecure)],
                         ca_file=target.ca_file, environ=environ)
    return RegistryClient(routes)


# --------------------------------------------------------------------------------------------------
# The verified bundle: an open file, checked, and what it says


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle that passed `verify`, held open: every read below is from the file that was checked.
    An update bundle holds its verified base too, and reads the blobs it takes from there."""

    path: Path
    file: BundleBytes
    verification: verify.VerificationResult
    index: archive.BundleIndex
    bom: Bom
    checked: dict[str, tuple[int, str]] = field(repr=False)  # member -> (size, sha256) as verified
    base: VerifiedBundle | None = None  # an update's base, `checked` limited to what the update takes

    def _locate(self, name: str) -> tuple[VerifiedBundle, archive.Member]:
        """The bundle (this one, or an update's base) that holds `name`, and the member."""
        found = self.index.get(name)
        if found is None or name not in self.checked:
            if self.base is not None and name in self.base.checked:
                return self.base._locate(name)
            raise ArchiveError(f"{self.path}: {name} is not in the bundle",
                               hint="the bundle is incomplete; ask the vendor for a new one")
        return self, found

    def read(self, name: str, *, cap: int = MAX_MANIFEST_BYTES) -> bytes:
        """A small member (a manifest, a rewritten YAML file), checked against its verified digest again."""
        owner, member = self._locate(name)
        size, sha = owner.checked[name]
        if size > cap:
            raise ArchiveError(f"{owner.path}: {name} has {size} bytes, more than the {cap} read into memory")
        return b"".join(verified(archive.read_range(owner.file, member, 0, size), f"sha256:{sha}", size,
                                 what=f"{owner.path}: {name}"))

    def blob(self, digest: str) -> bytes:
        return self.read(BLOBS + digest.removeprefix("sha256:"))

    def reader(self, digest: str) -> Callable[[int, int], Iterator[bytes]]:
        """`read(start, length)` over a blob member; a whole-blob read is hashed as it streams."""
        owner, member = self._locate(BLOBS + digest.removeprefix("sha256:"))

        def read(start: int, length: int) -> Iterator[bytes]:
            chunks = archive.read_range(owner.file, member, start, length)
            if start == 0 and length == member.size:
                return verified(chunks, digest, member.size, what=f"{owner.path}: {member.name}")
            return chunks

        return read


@contextmanager
def open_verified(source: Path | str | BundleBytes, trust: TrustPolicy, *, now: dt.datetime,
                  base: Path | str | BundleBytes | None = None) -> Iterator[VerifiedBundle]:
    """Open the bundle (a file, or a split bundle's parts held open by the caller), run `verify` on it
    (nothing is sent anywhere before this passes), keep it open.
    With `base`, the bundle is an update and both are checked as `update.open_pair` checks them.

    Raises:
        the verify failures (VerificationError subclasses, ArchiveError, UnsafeArchiveError),
        NoTrustAnchorError, InputError; with `base`, those of `update.open_pair`.
    """
    if base is not None:
        with update.open_pair(source, base, trust, now=now) as pair:
            base_bundle = _held(Path(pair.base_where), pair.base_file, pair.base, pair.taken)
            yield _held(Path(pair.update_where), pair.update_file, pair.update, base=base_bundle)
        return
    with opened(source) as (f, where):
        yield _held(Path(where), f, verify.require(verify.verify_file(f, where, trust, now=now)))


def _held(path: Path, f: BundleBytes, result: verify.VerificationResult, only: Mapping[str, tuple[int, str]] | None = None,
          base: VerifiedBundle | None = None) -> VerifiedBundle:
    """A VerifiedBundle over an accepted result; `only` limits the members read from it."""
    assert result.bom is not None  # an accepted result always carries its statement's predicate
    checked = {name: (size, sha) for name, size, sha in result.verified_files}
    if only is not None:
        checked = {name: checked[name] for name in only}
    return VerifiedBundle(path, f, result, verify.scan(f, str(path))[0], result.bom, checked, base)


# --------------------------------------------------------------------------------------------------
# Step 1: the plan (pure, given the bundle's bytes)


@dataclass(frozen=True)
class ManifestItem:
    digest: str
    media_type: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class ImagePlan:
    """One bundled image: where it goes and everything it consists of."""

    entry: ImageEntry
    target: ImageRef                      # target host, the bundle's repository path and tag
    top: ManifestItem                     # the bundled index or manifest (entry.bundled_digest)
    children: tuple[ManifestItem, ...]    # platform and attestation manifests, in index order
    blobs: tuple[Descriptor, ...]         # configs and layers, first appearance order, unique

    @property
    def reference(self) -> str:
        """What the top manifest is pushed under: the tag, or its digest when the local name has none."""
        return self.target.tag or self.top.digest


def plan(bom: Bom, read_blob: Callable[[str], bytes], target: Target) -> tuple[ImagePlan, ...]:
    """Walk every image of the BOM through the bundle's blobs.

    Raises:
        ArchiveError: a manifest the bundle must carry is missing or malformed.
    """
    out = []
    for entry in bom.images:
        def manifest(digest: str, entry: ImageEntry = entry) -> tuple[ManifestItem, dict[str, Any]]:
            data = read_blob(digest)
            try:
                obj = json.loads(data)
                media_type = media_type_of(data, "", f"{entry.local}@{digest}")
            except (ValueError, RegistryError) as exc:
                raise ArchiveError(f"{entry.local}: bundled manifest {digest} is unreadable: {exc}") from None
            return ManifestItem(digest, media_type, data), obj

        top, obj = manifest(entry.bundled_digest)
        if top.media_type != entry.media_type:
            raise ArchiveError(f"{entry.local}: bundled manifest is {top.media_type}, the statement says {entry.media_type}")
        children: list[ManifestItem] = []
        blobs: dict[str, Descriptor] = {}
        images = [(top, obj)]
        if top.media_type in INDEX_TYPES:
            images = []
            for desc in _descriptors(obj.get("manifests"), entry.local):
                child, child_obj = manifest(desc.digest)
                if child.media_type not in MANIFEST_TYPES:
                    raise ArchiveError(f"{entry.local}: {desc.digest} is a nested index, which is not supported")
                children.append(child)
                images.append((child, child_obj))
        for item, item_obj in images:
            try:
                descs = blob_descriptors(item_obj)
            except (KeyError, TypeError, ValueError, InvalidReferenceError) as exc:
                raise ArchiveError(f"{entry.local}: manifest {item.digest} is malformed: {exc}") from None
            for desc in descs:
                blobs.setdefault(desc.digest, desc)
        out.append(ImagePlan(entry, target.ref(entry.local), top, tuple(children), tuple(blobs.values())))
    return tuple(out)


def _descriptors(entries: Any, what: str) -> list[Descriptor]:
    try:
        return [Descriptor.from_json(e) for e in entries or []]
    except (KeyError, TypeError, ValueError, InvalidReferenceError) as exc:
        raise ArchiveError(f"{what}: the bundled index is malformed: {exc}") from None


# --------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class BlobOutcome:
    repository: str
    digest: str
    size: int
    state: BlobState
    source: str | None = None  # the repository a mounted blob came from


@dataclass(frozen=True)
class ManifestOutcome:
    repository: str
    reference: str  # a tag or a digest
    digest: str
    media_type: str
    state: ManifestState


@dataclass(frozen=True)
class ImageOutcome:
    local: str            # the bundle's local reference
    target: str           # the reference at the target, pinned by digest
    digest: str
    media_type: str
    platforms: tuple[str, ...]
    attestations: int
    manifests: tuple[ManifestOutcome, ...]


@dataclass(frozen=True)
class Readback:
    """What was read back from the target after the push; `problems` empty means it serves it all."""

    manifests: int = 0
    blobs: int = 0
    references: int = 0  # image references in the rewritten manifests, resolved by digest
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class PushResult:
    target: str
    dry_run: bool
    images: tuple[ImageOutcome, ...]
    blobs: tuple[BlobOutcome, ...]
    uploaded_bytes: int
    readback: Readback | None
    resumed_bytes: int = 0  # upload bytes not sent again: the registry held them when a chunked upload failed

    def count(self, state: str) -> int:
        return sum(1 for b in self.blobs if b.state == state) + sum(
            1 for i in self.images for m in i.manifests if m.state == state)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target, "dryRun": self.dry_run, "uploadedBytes": self.uploaded_bytes,
            "resumedBytes": self.resumed_bytes,
            "images": [{"local": i.local, "target": i.target, "digest": i.digest, "mediaType": i.media_type,
                        "platforms": list(i.platforms), "attestations": i.attestations,
                        "manifests": [{"reference": m.reference, "digest": m.digest, "mediaType": m.media_type,
                                       "state": m.state} for m in i.manifests]} for i in self.images],
            "blobs": [{"repository": b.repository, "digest": b.digest, "size": b.size, "state": b.state,
                       **({"mountedFrom": b.source} if b.source else {})} for b in self.blobs],
            "totals": {s: self.count(s) for s in ("present", "uploaded", "mounted", "pushed", "missing")},
            "readback": None if self.readback is None else {
                "manifests": self.readback.manifests, "blobs": self.readback.blobs,
                "references": self.readback.references, "problems": list(self.readback.problems)},
        }


# --------------------------------------------------------------------------------------------------
# Steps 2-3: blobs, then manifests


class _Run:
    """One push: thread pool, counters for the progress line and for the message if it stops midway."""

    def __init__(self, bundle: VerifiedBundle, client: RegistryClient, *, jobs: int, chunk_size: int,
                 dry_run: bool, progress: Progress) -> None:
        self.bundle, self.client, self.jobs = bundle, client, max(1, jobs)
        self.chunk_size, self.dry_run, self.progress = chunk_size, dry_run, progress
        self.lock = threading.Lock()
        self.blob_outcomes: list[BlobOutcome] = []
        self.manifest_outcomes: list[ManifestOutcome] = []
        self.uploaded_bytes = 0

    def blobs(self, plans: Sequence[ImagePlan]) -> None:
        needed: dict[str, tuple[Descriptor, list[ImageRef]]] = {}
        for p in plans:
            for desc in p.blobs:
                repos = needed.setdefault(desc.digest, (desc, []))[1]
                if all(r.path != p.target.path for r in repos):
                    repos.append(p.target)
        total = len(needed)
        # Executor.map cancels the tasks not yet started when one fails or on Ctrl-C.
        with ThreadPoolExecutor(self.jobs, thread_name_prefix="push-blob") as pool:
            for n, outcomes in enumerate(pool.map(lambda item: self._blob(*item), needed.values()), 1):
                self.progress.step("blobs", n, total, outcomes[0].digest[:19])

    def _blob(self, desc: Descriptor, repos: list[ImageRef]) -> list[BlobOutcome]:
        present = [r for r in repos if self.client.blob_exists(r, desc.digest)]
        outcomes = [BlobOutcome(r.path, desc.digest, desc.size, "present") for r in present]
        self._record(outcomes)
        source = present[0] if present else None
        for repo in (r for r in repos if r not in present):
            if self.dry_run:
                outcome = BlobOutcome(repo.path, desc.digest, desc.size, "missing", source.path if source else None)
            elif source is not None and self._mount(repo, desc.digest, source):
                outcome = BlobOutcome(repo.path, desc.digest, desc.size, "mounted", source.path)
            else:
                self.client.push_blob(repo, desc.digest, desc.size, self._metered(self.bundle.reader(desc.digest)),
                                      chunk_size=self.chunk_size)
                outcome = BlobOutcome(repo.path, desc.digest, desc.size, "uploaded")
                with self.lock:
                    self.uploaded_bytes += desc.size
                source = repo
            self._record([outcome])
            outcomes.append(outcome)
        return outcomes

    def _mount(self, repo: ImageRef, digest: str, source: ImageRef) -> bool:
        try:
            return self.client.mount_blob(repo, digest, source.path)
        except AuthError as exc:  # no pull access to the source granted: upload instead, as clients do
            log.info("%s: cannot mount from %s (%s); uploading", repo.path, source.path, exc.message)
            return False

    def _metered(self, read: Callable[[int, int], Iterator[bytes]]) -> Callable[[int, int], Iterator[bytes]]:
        def metered(start: int, length: int) -> Iterator[bytes]:
            for chunk in read(start, length):
                self.progress.transferred(len(chunk))
                yield chunk
        return metered

    def _record(self, outcomes: Sequence[BlobOutcome | ManifestOutcome]) -> None:
        with self.lock:
            self.blob_outcomes += [o for o in outcomes if isinstance(o, BlobOutcome)]
            self.manifest_outcomes += [o for o in outcomes if isinstance(o, ManifestOutcome)]

    def manifests(self, plans: Sequence[ImagePlan]) -> list[ImageOutcome]:
        with ThreadPoolExecutor(self.jobs, thread_name_prefix="push-manifest") as pool:
            results = []
            for n, outcome in enumerate(pool.map(self._image, plans), 1):
                results.append(outcome)
                self.progress.step("images", n, len(plans), outcome.target)
        return results

    def _image(self, p: ImagePlan) -> ImageOutcome:
        outcomes = [self._manifest(p.target, item, item.digest) for item in p.children]
        outcomes.append(self._manifest(p.target, p.top, p.reference))
        platforms = tuple(pe.platform for pe in p.entry.platforms)
        return ImageOutcome(p.entry.local, f"{p.target}@{p.top.digest}", p.top.digest, p.top.media_type, platforms,
                            len(p.entry.attestations), tuple(outcomes))

    def _manifest(self, ref: ImageRef, item: ManifestItem, reference: str) -> ManifestOutcome:
        have = self.client.manifest_digest(ref, reference)
        state: ManifestState = "present" if have == item.digest else "missing" if self.dry_run else "pushed"
        if state == "pushed":
            self.client.put_manifest(ref, reference, item.data, item.media_type)
        outcome = ManifestOutcome(ref.path, reference, item.digest, item.media_type, state)
        self._record([outcome])
        return outcome

    def so_far(self, total_images: int) -> str:
        with self.lock:
            blobs = sum(1 for b in self.blob_outcomes if b.state != "missing")
            sent = sum(1 for b in self.blob_outcomes if b.state in ("uploaded", "mounted"))
            tops = sum(1 for m in self.manifest_outcomes if m.state != "missing" and not m.reference.startswith("sha256:"))
            manifests = sum(1 for m in self.manifest_outcomes if m.state == "pushed")
        return (f"stopped with {blobs} blob(s) in place ({sent} sent by this run, {self.uploaded_bytes:,} bytes), "
                f"{manifests} manifest(s) pushed, {tops} of {total_images} tag(s) in place")


def push(bundle: VerifiedBundle, target: Target, client: RegistryClient, *, jobs: int = DEFAULT_JOBS,
         chunk_size: int = 0, dry_run: bool = False, readback: bool = True,
         progress: Progress | None = None) -> PushResult:
    """Push every image of a verified bundle to `target`, then read it back (`require_readback` judges it).

    Raises:
        RegistryError and subclasses (exit 4-7): the registry could not take it; the message says what
            was already in place, and a rerun resumes from there.
        ArchiveError: the bundle lacks a blob its manifests reference.
    """
    progress = progress or NullProgress()
    plans = plan(bundle.bom, bundle.blob, target)
    run = _Run(bundle, client, jobs=jobs, chunk_size=chunk_size, dry_run=dry_run, progress=progress)
    resumed = client.stats["resumed_bytes"]
    try:
        client.ping(target.host)
        run.blobs(plans)
        images = run.manifests(plans)
    except (RegistryError, TooManyOpenFilesError) as exc:
        # Nothing half-pushed without saying so: a blob exists only once complete, a tag only after its
        # manifests, and a rerun skips what is there.
        raise type(exc)(f"{exc.message}; {run.so_far(len(plans))}", hint=RESUME_HINT) from exc
    except KeyboardInterrupt:
        log.warning("push interrupted: %s (%s)", run.so_far(len(plans)), RESUME_HINT)
        raise
    endpoint = next(iter(client.routes.values()))[0].url
    result = PushResult(endpoint, dry_run, tuple(images),
                        tuple(sorted(run.blob_outcomes, key=lambda b: (b.repository, b.digest))),
                        run.uploaded_bytes, None, client.stats["resumed_bytes"] - resumed)
    if dry_run or not readback:
        return result
    return replace(result, readback=read_back(bundle, plans, target, client, jobs=jobs))


def require_readback(result: PushResult) -> PushResult:
    """Return `result` if the readback found nothing wrong (or did not run); raise otherwise.

    Raises:
        ReadbackError (exit 30): the registry does not serve what was pushed.
    """
    problems = result.readback.problems if result.readback else ()
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ReadbackError(f"readback from {result.target}: {problems[0]}{more}",
                            hint="the registry accepted the push but does not serve it back; check its storage "
                                 "and run the push again")
    return result


# --------------------------------------------------------------------------------------------------
# Step 4: readback


def read_back(bundle: VerifiedBundle, plans: Sequence[ImagePlan], target: Target, client: RegistryClient, *,
              jobs: int = DEFAULT_JOBS) -> Readback:
    """Read back what `plans` pushed and every image the rewritten manifests name. Never raises for a
    registry that answers wrongly: each difference is one line in `problems`."""
    problems: list[str] = []
    counts = {"manifests": 0, "blobs": 0}
    lock = threading.Lock()

    def check(p: ImagePlan) -> None:
        found: list[str] = []
        served: set[str] = set()  # manifests the target served back with the bundled bytes
        n_manifests = n_blobs = 0
        for reference, want in [(p.reference, p.top), *((c.digest, c) for c in p.children)]:
            try:
                got = client.get_manifest(p.target, reference)
            except (NotFoundError, DigestMismatchError) as exc:
                found.append(f"{p.target.name}:{reference}: {exc.message}")
                continue
            n_manifests += 1
            if got.digest != want.digest:
                found.append(f"{p.target.name}:{reference} is {got.digest}, the bundle has {want.digest}")
            elif got.media_type != want.media_type:  # pragma: no cover - only for bytes without a mediaType
                found.append(f"{p.target.name}@{want.digest} is served as {got.media_type}, pushed as {want.media_type}")
            else:
                served.add(want.digest)
        exempt = {Platform.parse(platform) for platform, _ in p.entry.exemptions}
        for required in DEFAULT_PLATFORMS:
            entry = next((pe for pe in p.entry.platforms if Platform.parse(pe.platform).matches(required)), None)
            if any(x.matches(required) for x in exempt):
                continue
            if entry is None or entry.digest not in served:
                found.append(f"{p.target.name}: platform {required} is not served")
        for desc in p.blobs:
            if not client.blob_exists(p.target, desc.digest):
                found.append(f"{p.target.name}: blob {desc.digest} is missing")
            n_blobs += 1
        with lock:
            problems.extend(found)
            counts["manifests"] += n_manifests
            counts["blobs"] += n_blobs

    with ThreadPoolExecutor(max(1, jobs), thread_name_prefix="readback") as pool:
        list(pool.map(check, plans))
    references, missing = _check_references(bundle, plans, target, client)
    return Readback(counts["manifests"], counts["blobs"], references, tuple(problems + missing))


def rewritten_references(bundle: VerifiedBundle) -> list[tuple[str, ImageRef]]:
    """(member, image) for every image the bundle's rewritten manifests name, read from the bundle."""
    found = []
    for entry in bundle.bom.manifests:
        text = bundle.read(entry.path, cap=MAX_STREAM_BYTES).decode("utf-8")
        for image in sweep.sweep(load_stream(text, Origin(entry.path, 1))).images:
            found.append((entry.path, image.ref))
    return found


def _check_references(bundle: VerifiedBundle, plans: Sequence[ImagePlan], target: Target,
                      client: RegistryClient) -> tuple[int, list[str]]:
    local = bundle.bom.local_registry
    by_name = {str(p.target): p.top.digest for p in plans}
    problems: list[str] = []
    refs = rewritten_references(bundle)
    for member, ref in refs:
        if ref.domain != ImageRef.parse(f"{local}/x").domain:
            problems.append(f"{member}: {ref} is not on the local registry {local}")
            continue
        at_target = ImageRef.parse(f"{target.host}/{ref.path}" + (f":{ref.tag}" if ref.tag else ""))
        want = ref.digest or by_name.get(str(at_target))
        if want is None:
            problems.append(f"{member}: {ref} is not an image the bundle carries")
            continue
        have = client.manifest_digest(at_target, ref.digest or at_target.tag or "latest")
        if have != want:
            problems.append(f"{member}: {ref} does not resolve at {target.host} by digest {want}"
                            + (f" (it serves {have})" if have else ""))
    return len(refs), problems

