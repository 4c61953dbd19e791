"""The OCI image layout store: content-addressed blobs, written temp -> verify -> rename.

Input: blob digests with a way to stream their bytes; output: a directory that skopeo, oras and crane
read as an OCI image layout:

    oci-layout                      {"imageLayoutVersion": "1.0.0"}
    index.json                      an OCI index; each entry annotated org.opencontainers.image.ref.name
    blobs/sha256/<hex>              every blob once
    blobs/sha256/.partial/<hex>     a blob being fetched (kept across runs so a rerun resumes with Range)

Spec: OCI image-spec v1.1 image-layout.md.

Rules: bytes are hashed while they stream (`oci.verified`), and a blob gets its final name
(`os.replace`) only once size and digest match. A blob already present is trusted only after its digest
is recomputed (never its size); the result is remembered for the rest of the run (per inode, so a blob
hard-linked between the cache and the output is hashed once), and a cache keeps it across runs in
`.verified` while the blob's device, inode, mtime and size are unchanged (see RECORD). index.json is rewritten atomically under
an advisory lock so concurrent runs sharing a cache do not lose entries.

Not here: the network (the caller passes a `fetch(offset) -> chunks` callable), platform choice.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import ArchiveError, DigestMismatchError
from .oci import ANNOTATION_REF_NAME, OCI_INDEX, Descriptor, digest_hex, sha256_digest, verified

CHUNK = 1 << 20
LAYOUT_VERSION = {"imageLayoutVersion": "1.0.0"}

Fetch = Callable[[int], Iterable[bytes]]


class LayoutError(ArchiveError):
    """The layout directory cannot be created, read or written (permissions, disk full, not a layout)."""


# Verified (device, inode, mtime_ns, size) -> digest, shared by every Layout in the process.
_checked: dict[tuple[int, int, int, int], str] = {}
_checked_lock = threading.Lock()
# The keys of `_checked` this process hashed itself (a download, or a re-hash), not read from a record.
_hashed_here: set[tuple[int, int, int, int]] = set()

# A cache layout remembers its checks across runs in this file, one line per check:
# "<hex> <device> <inode> <mtime_ns> <size>". A blob is trusted again without re-hashing only while
# all four of its stat fields are unchanged (git's index makes the same bet); writing new bytes into
# the file changes mtime_ns. ctime is left out on purpose: hard-linking a cache blob into an output
# layout changes it. Build outputs never carry this file (`Layout.tidy`), and `build` never takes its
# bet: it hashes every bundled blob against its name, on the bytes it writes into the bundle, unless
# this very process hashed those bytes (`hashed_here`: downloaded them, the file unchanged since).
RECORD = ".verified"
NAMES = "names.json"


class Layout:
    """An OCI image layout directory. Thread-safe for distinct digests; callers dedupe in-flight fetches."""

    def __init__(self, path: str | Path, *, remember_checks: bool = False) -> None:
        """`remember_checks`: keep the digest checks in `<path>/.verified` for later runs (caches)."""
        self.path = Path(path)
        self.blobs = self.path / "blobs" / "sha256"
        self.partial = self.blobs / ".partial"
        self.record = self.path / RECORD if remember_checks else None
        try:
            self.partial.mkdir(parents=True, exist_ok=True)
            marker = self.path / "oci-layout"
            if not marker.exists():
                _atomic_write(marker, json.dumps(LAYOUT_VERSION).encode())
            if not (self.path / "index.json").exists():
                _atomic_write(self.path / "index.json", _index_bytes([]))
        except OSError as exc:
            raise LayoutError(f"cannot create the OCI layout {self.path}: {exc.strerror}",
                              hint="choose a writable folder") from None
        if self.record is not None:
            self._load_record()

    def _load_record(self) -> None:
        assert self.record is not None
        try:
            lines = self.record.read_text().splitlines()
        except FileNotFoundError:
            return
        with _checked_lock:
            for line in lines:
                fields = line.split()
                if len(fields) == 5 and all(f.isdigit() for f in fields[1:]) and len(fields[0]) == 64:
                    dev, ino, mtime_ns, size = (int(f) for f in fields[1:])
                    _checked[(dev, ino, mtime_ns, size)] = f"sha256:{fields[0]}"

    def _remember(self, st: os.stat_result, digest: str) -> None:
        key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        with _checked_lock:
            _checked[key] = digest
            _hashed_here.add(key)
            if self.record is not None:
                # One short O_APPEND write per line: concurrent runs sharing the cache do not interleave.
                with open(self.record, "a") as f:
                    f.write(f"{digest_hex(digest)} {key[0]} {key[1]} {key[2]} {key[3]}\n")

    def tidy(self) -> None:
        """Remove this tool's bookkeeping (partial blobs, the lock, the check record), leaving a plain
        OCI layout to ship. Only for a layout no other run is using."""
        shutil.rmtree(self.partial, ignore_errors=True)
        for name in (".index.lock", RECORD, NAMES):
            (self.path / name).unlink(missing_ok=True)

    def blob_path(self, digest: str) -> Path:
        # OCI image-layout: blobs/<alg>/<encoded>
        return self.blobs / digest_hex(digest)

    def partial_path(self, digest: str) -> Path:
        return self.partial / digest_hex(digest)

    # --- reading --------------------------------------------------------------------------------
    def has_blob(self, digest: str) -> bool:
        """True when the blob is present and its bytes hash to `digest`. A bad blob is deleted."""
        path = self.blob_path(digest)
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        with _checked_lock:
            if _checked.get(key) == digest:
                return True
        try:
            with path.open("rb") as f:
                for _ in verified(iter(lambda: f.read(CHUNK), b""), digest, None, what=str(path)):
                    pass
        except DigestMismatchError:
            path.unlink(missing_ok=True)  # never keep a blob that is not what its name says
            return False
        self._remember(st, digest)
        return True

    def hashed_here(self, digest: str) -> bool:
        """True when this process hashed the blob's present bytes itself (it downloaded or re-hashed
        them) and the file is unchanged since: same device, inode, mtime and size. A build need not
        hash those bytes again. False for a blob trusted from the cache's record, which a build hashes."""
        try:
            st = self.blob_path(digest).stat()
        except FileNotFoundError:
            return False
        key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        with _checked_lock:
            return key in _hashed_here and _checked.get(key) == digest

    def read_blob(self, digest: str, max_size: int = 16 << 20) -> bytes:
        """A small blob (manifest, config), checked against its digest.

        Raises:
            LayoutError: missing or larger than `max_size`. DigestMismatchError: corrupted.
        """
        path = self.blob_path(digest)
        try:
            data = path.read_bytes() if path.stat().st_size <= max_size else None
        except FileNotFoundError:
            raise LayoutError(f"{self.path}: blob {digest} is missing") from None
        if data is None:
            raise LayoutError(f"{self.path}: blob {digest} is larger than {max_size} bytes")
        if sha256_digest(data) != digest:
            raise DigestMismatchError(f"{path}: content does not match {digest}")
        return data

    def open_blob(self, digest: str) -> Iterator[bytes]:
        """The blob's bytes in chunks, checked against its digest as they stream."""
        def chunks() -> Iterator[bytes]:
            with self.blob_path(digest).open("rb") as f:
                yield from iter(lambda: f.read(CHUNK), b"")
        return verified(chunks(), digest, None, what=f"{self.path}: blob {digest}")

    # --- writing --------------------------------------------------------------------------------
    def put_bytes(self, data: bytes, digest: str | None = None) -> str:
        """Store a small blob (a manifest as served, a new index). Returns its digest."""
        digest = digest or sha256_digest(data)
        if not self.has_blob(digest):
            self.write_blob(digest, len(data), lambda offset: [data[offset:]])
        return digest

    def write_blob(self, digest: str, size: int, fetch: Fetch,
                   on_bytes: Callable[[int], None] | None = None) -> None:
        """Fetch a blob into `.partial/<hex>` (continuing what is there), verify, and rename into place.

        `fetch(offset)` yields the blob's bytes from `offset` on. On a digest mismatch the partial file
        is deleted and the error raised: nothing bad stays, and the next attempt starts from zero.

        Raises:
            DigestMismatchError, LayoutError, and whatever `fetch` raises (the partial file is kept).
        """
        final, part = self.blob_path(digest), self.partial_path(digest)
        try:
            with _locked(part) as fd:
                if self.has_blob(digest):  # another process finished it while we waited for the lock
                    return
                have = os.fstat(fd).st_size
                if have > size:  # not a prefix of this blob: start again
                    os.ftruncate(fd, 0)
                    have = 0

                def stream() -> Iterator[bytes]:
                    os.lseek(fd, 0, os.SEEK_SET)
                    read = 0
                    while read < have:
                        chunk = os.read(fd, min(CHUNK, have - read))
                        if not chunk:  # pragma: no cover - nobody else writes the partial file while we hold its lock
                            break
                        read += len(chunk)
                        yield chunk
                    if have < size:
                        yield from fetch(have)

                written, started = 0, have  # bytes seen, and the end of what was handed to write-back
                os.lseek(fd, have, os.SEEK_SET)
                try:
                    for chunk in verified(stream(), digest, size, what=f"blob {digest}"):
                        written += len(chunk)
                        if written > have:
                            fresh = chunk[len(chunk) - min(len(chunk), written - have):]
                            _write_all(fd, fresh)
                            if on_bytes:
                                on_bytes(len(fresh))
                            if written - started >= WRITEBACK_STEP:
                                start_writeback(fd, started, written - started)
                                started = written
                except DigestMismatchError:
                    os.ftruncate(fd, 0)
                    part.unlink(missing_ok=True)
                    raise
                os.fsync(fd)
                os.replace(part, final)
                st = os.stat(final)
            self._remember(st, digest)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise LayoutError(f"{self.path}: disk full while writing blob {digest}",
                                  hint="free space; a rerun resumes where this one stopped") from None
            raise LayoutError(f"{self.path}: cannot write blob {digest}: {exc.strerror}") from None

    def link_from(self, other: Layout, digest: str) -> bool:
        """Take a verified blob from another layout (hard link, else a checked copy). False if it has none."""
        if not other.has_blob(digest):
            return False
        src, dst = other.blob_path(digest), self.blob_path(digest)
        try:
            tmp = self.partial / f"link-{digest_hex(digest)}-{threading.get_ident()}"
            tmp.unlink(missing_ok=True)
            os.link(src, tmp)
            os.replace(tmp, dst)
            return True
        except OSError:
            pass
        size = src.stat().st_size
        self.write_blob(digest, size, lambda offset: skip_bytes(other.open_blob(digest), offset))
        return True

    # --- names.json: names of blobs that are not manifests (a chart repository's index.yaml) ------
    def names(self) -> dict[str, str]:
        """`names.json`: name -> digest, for blobs index.json cannot name (it lists only manifests)."""
        try:
            data = json.loads((self.path / NAMES).read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise LayoutError(f"{self.path}/{NAMES} is unreadable: {exc}",
                              hint=f"delete {NAMES}; the next online run writes it again") from None
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def set_names(self, names: Mapping[str, str]) -> None:
        """Record name -> digest in `names.json` (atomic, under the index lock)."""
        with _locked(self.path / ".index.lock"):
            merged = {**self.names(), **names}
            _atomic_write(self.path / NAMES, json.dumps(merged, indent=2, sort_keys=True).encode() + b"\n")

    # --- index.json -----------------------------------------------------------------------------
    def entries(self) -> list[dict[str, Any]]:
        """index.json's `manifests` entries (raw JSON objects)."""
        try:
            data = json.loads((self.path / "index.json").read_bytes())
        except (OSError, ValueError) as exc:
            raise LayoutError(f"{self.path}/index.json is unreadable: {exc}") from None
        return list(data.get("manifests") or [])

    def resolve(self, name: str) -> Descriptor | None:
        """The descriptor index.json records under ref.name `name`."""
        for entry in self.entries():
            if (entry.get("annotations") or {}).get(ANNOTATION_REF_NAME) == name:
                return Descriptor.from_json(entry)
        return None

    def set_refs(self, refs: Mapping[str, Descriptor]) -> None:
        """Point each ref.name at a descriptor in index.json (replacing older entries for that name)."""
        index = self.path / "index.json"
        with _locked(self.path / ".index.lock"):
            kept = [e for e in self.entries()
                    if (e.get("annotations") or {}).get(ANNOTATION_REF_NAME) not in refs]
            for name, desc in refs.items():
                annotations = {**dict(desc.annotations), ANNOTATION_REF_NAME: name}
                entry = Descriptor(desc.media_type, desc.digest, desc.size, desc.platform,
                                   tuple(sorted(annotations.items()))).to_json()
                kept.append(entry)
            kept.sort(key=lambda e: e["annotations"][ANNOTATION_REF_NAME] if e.get("annotations") else "")
            data = _index_bytes(kept)
            if index.read_bytes() == data:  # a warm run changes nothing: no write, no fsync
                return
            try:
                _atomic_write(index, data)
            except OSError as exc:
                raise LayoutError(f"{index}: cannot write: {exc.strerror}",
                                  hint="free space or fix permissions; the previous index.json is unchanged") from None


def _index_bytes(manifests: list[dict[str, Any]]) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests},
                      indent=2).encode() + b"\n"


def skip_bytes(chunks: Iterable[bytes], offset: int) -> Iterator[bytes]:
    """The chunks from byte `offset` on: what a `write_blob` fetch gives when it continues a partial file."""
    for chunk in chunks:
        if offset >= len(chunk):
            offset -= len(chunk)
            continue
        yield chunk[offset:]
        offset = 0


# Writers of big files (a pulled blob here, the bundle in archive.py) start the disk write of every 8 MiB
# at once instead of leaving it all to the final fsync, so the disk works while the next bytes are
# fetched, read and hashed: a warm build of 1 GB took 1.56 s instead of 2.08 s on an idle machine (8 MiB
# was the best of 8 to 128; docs/performance.md "Build").
WRITEBACK_STEP = 8 << 20


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing `fd`'s dirty pages in [offset, offset + length) to the disk now,
    without waiting (Linux: POSIX_FADV_DONTNEED starts the write-back, then drops only pages already
    clean). Advice only: where it is missing or refused, the final fsync does all the writing."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is not None:
        try:
            advise(fd, offset, length, os.POSIX_FADV_DONTNEED)
        except OSError:  # a file system that refuses advice: the final fsync still writes everything
            pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


@contextmanager
def _locked(path: Path) -> Iterator[int]:
    """Open (creating) `path` read-write with an exclusive advisory lock held until exit."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    # Not mkstemp: its 0600 would make index.json and oci-layout unreadable to other users. 0644 less the
    # umask, as for every other file the tool writes (blobs, the bundle).
    tmp = path.parent / f".{path.name}.{os.urandom(6).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        _write_all(fd, data)
        os.fsync(fd)
        os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        os.close(fd) if _is_open(fd) else None
        Path(tmp).unlink(missing_ok=True)
        raise


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False
