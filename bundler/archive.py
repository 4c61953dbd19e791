"""The bundle file: a deterministic, uncompressed POSIX tar; header-only reading; safe streaming extract.

Inputs and outputs:
- `write(members, out, epoch)`: (arcname, source path or bytes) pairs -> `out`, written under a
  temporary name in the same folder and renamed into place.
- `write_hashed(files, out, epoch, statement=..., signatures=...)`: the same for a build, whose statement
  lists each payload file's size and sha256: every payload byte is read and written once, and hashed
  once in the run (here, unless the run hashed those very bytes as it downloaded them), the
  statement going into a slot reserved by its length (which the digests cannot change).
- `read_index(source) -> BundleIndex`: scans the headers only (seeking over data) and refuses what a
  bundle never contains (links, devices, fifos, absolute paths, `..`, duplicate names, data after the
  end-of-archive marker).
- `append_signature(path, authority, data, replace=False)`: co-signing. Appends one member after the
  last one without touching any earlier byte; replacing an authority's signature rewrites the file to
  a temporary name and renames it.
- `extract(source, dest, expected)`: streams each member into a staging folder next to `dest` while
  hashing it, then renames the folder into place; on any failure nothing is left.

Format (see docs/bundle-format.md): POSIX.1-2001 pax/ustar (`tarfile.PAX_FORMAT`; a pax extended
header appears only for names over 100 bytes or sizes over 8 GiB). Members in a fixed order:
`bundle.intoto.json` first, payload members sorted by name, `signatures/<authority>.sigstore.json`
last. Headers normalised: regular files only, mode 0644, uid/gid 0, empty uname/gname, mtime =
the given epoch (SOURCE_DATE_EPOCH), no pax timestamps. The archive ends with two zero blocks padded
to a 10240-byte record, as tar(1) writes it.

Memory is flat in bundle size: data moves in 1 MiB chunks. Does not know what the statement or the
signatures mean (`verify.py` does) and never opens a network connection.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from .bundlefile import BundleBytes, open_file
from .errors import ArchiveError, InputError, UnlistedMemberError, UnsafeArchiveError, open_file_limit_hint
from .layout import WRITEBACK_STEP, start_writeback

STATEMENT = "bundle.intoto.json"
SIGNATURES_DIR = "signatures/"
SIGNATURE_SUFFIX = ".sigstore.json"
BLOCK = 512
RECORD = 20 * BLOCK  # tar's default blocking factor: the archive is padded to a multiple of this
CHUNK = 1 << 20
MAX_NAME_BYTES = 4096



@dataclass(frozen=True)
class Arriving:
    """A payload file another task may still be writing (a blob being downloaded): its size is known
    in advance (a descriptor gives it), and `ready()` returns once the file is complete at `path`, or
    raises that task's error. The archive waits for it only when it reaches the member.

    `ready()` returns the file's sha256 hex when this run has hashed exactly its present bytes already
    (a download verified while it streamed): the archive then copies them without hashing them a second
    time. It returns None otherwise, and the archive hashes the bytes it writes."""

    path: Path
    size: int
    ready: Callable[[], str | None]


Source = Path | str | bytes
_SIGNATURE_NAME = re.compile(r"^signatures/([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)\.sigstore\.json$")


@dataclass(frozen=True)
class Member:
    """One regular file in the archive: where its header starts and where its data lies."""

    name: str
    size: int
    offset: int  # first header block (including any pax header) of this member
    data_offset: int

    @property
    def end(self) -> int:
        """Offset just past this member's data, padded to a block."""
        return self.data_offset + -(-self.size // BLOCK) * BLOCK


@dataclass(frozen=True)
class BundleIndex:
    """The members of a bundle file, in archive order, and where the end-of-archive marker starts."""

    members: tuple[Member, ...]
    end: int
    file_size: int

    def get(self, name: str) -> Member | None:
        for m in self.members:
            if m.name == name:
                return m
        return None

    @property
    def signatures(self) -> dict[str, Member]:
        """authority -> its signature member."""
        out = {}
        for m in self.members:
            match = _SIGNATURE_NAME.match(m.name)
            if match:
                out[match.group(1)] = m
        return out

    @property
    def payload(self) -> tuple[Member, ...]:
        """Every member except the statement and anything under signatures/."""
        return tuple(m for m in self.members if m.name != STATEMENT and not m.name.startswith(SIGNATURES_DIR))


def signature_name(authority: str) -> str:
    name = f"{SIGNATURES_DIR}{authority}{SIGNATURE_SUFFIX}"
    if not _SIGNATURE_NAME.match(name):
        raise InputError(f"invalid authority name {authority!r}", hint="use lowercase letters, digits and '-'")
    return name


def check_name(name: str, *, where: str = "archive") -> str:
    """Return `name` if it is a safe relative member path, else raise UnsafeArchiveError."""
    bad = None
    if not name:
        bad = "an empty name"
    elif len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        bad = "a name longer than 4096 bytes"
    elif name.startswith("/"):
        bad = "an absolute path"
    elif "\\" in name or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        bad = "a backslash or control character"
    elif any(part in ("", ".", "..") for part in name.split("/")):
        bad = "a '..', '.' or empty path component" if ".." in name.split("/") else "an empty or '.' component"
    if bad:
        raise UnsafeArchiveError(f"{where}: member {name!r} has {bad}",
                                 hint="bundle members are plain relative paths; this file was not made by airgap-bundle")
    return name


def _order_key(name: str) -> tuple[bool, bool, str]:
    # Statement first, payload sorted by name (bytewise on UTF-8), signatures last.
    return (name != STATEMENT, name.startswith(SIGNATURES_DIR), name)


# --------------------------------------------------------------------------------------------------
# Writing


def _header(name: str, size: int, epoch: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, int(epoch), 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")


def _write_member(out: BinaryIO, name: str, source: bytes, epoch: int) -> int:
    """Write header, data and padding of a small member held in memory; return bytes written."""
    head = _header(name, len(source), epoch)
    out.write(head)
    out.write(source)
    pad = -len(source) % BLOCK
    out.write(b"\0" * pad)
    return len(head) + len(source) + pad


def _finish(out: BinaryIO, offset: int) -> None:
    """End-of-archive: two zero blocks, then zero padding up to a full record (as tar(1) does)."""
    out.write(_end_blocks(offset))


def _end_blocks(offset: int) -> bytes:
    end = offset + 2 * BLOCK
    end += -end % RECORD
    return b"\0" * (end - offset)


@contextmanager
def atomic_fd(out: Path, what: str) -> Iterator[int]:
    """A file descriptor of a file under a temporary name next to `out`; fsync'd and renamed onto `out`
    only if the block finishes. On any error (making the temporary file included: a folder that does not
    exist) the temporary file is removed and `out` is untouched."""
    tmp: Path | None = None
    try:
        fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial")
        tmp = Path(name)
        try:
            os.fchmod(fd, 0o644)
            yield fd
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, out)
    except OSError as e:
        raise ArchiveError(f"{out}: cannot {what}: {e.strerror or e}") from e
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()


@contextmanager
def _atomic_output(out: Path, what: str) -> Iterator[BinaryIO]:
    """`atomic_fd` as a buffered file object."""
    with atomic_fd(out, what) as fd, os.fdopen(fd, "wb", buffering=CHUNK, closefd=False) as f:
        yield f


@dataclass(frozen=True)
class Written:
    """A payload member as the archive holds it: what the statement's `files` list says of it."""

    name: str
    size: int
    sha256: str


StatementOf = Callable[[Sequence[Written]], bytes]
SignaturesOf = Callable[[bytes], Sequence[tuple[str, bytes]]]
_UNKNOWN = "0" * 64  # stands for a digest not yet computed: sha256 hex is always 64 characters


def write(members: Iterable[tuple[str, Source]], out: Path | str, epoch: int) -> None:
    """Write a bundle file with members in the fixed order and normalised headers.

    `members` are (arcname, source) pairs; a source is a file path or bytes. Exactly one member must
    be `bundle.intoto.json`. Same inputs and epoch give the same bytes (those `write_hashed` gives).

    Raises:
        ArchiveError: no statement, a source that is not a regular file or changes while copied,
            or an I/O error (nothing is left at `out` and a previous file there is untouched).
        UnsafeArchiveError: an unsafe or duplicate member name.
    """
    out = Path(out)
    items = sorted(members, key=lambda m: _order_key(m[0]))
    names = [check_name(n, where=str(out)) for n, _ in items]
    _refuse_duplicates(names, str(out))
    if not names or names[0] != STATEMENT:
        raise ArchiveError(f"{out}: no {STATEMENT} among the members", hint="the statement is the first member")
    for name in names:
        if name.startswith(SIGNATURES_DIR) and not _SIGNATURE_NAME.match(name):
            raise ArchiveError(f"{out}: {name} is not signatures/<authority>.sigstore.json")
    statement = _in_memory(items[0][1])
    signatures = [(n, _in_memory(s)) for n, s in items if n.startswith(SIGNATURES_DIR)]
    payload = [(n, s) for n, s in items[1:] if not n.startswith(SIGNATURES_DIR)]
    _write_single_pass(out, epoch, payload, lambda _: statement, lambda _: signatures, None, None)


def write_hashed(files: Iterable[tuple[str, Path | bytes | Arriving]], out: Path | str, epoch: int, *,
                 statement: StatementOf, signatures: SignaturesOf = lambda _: (),
                 check: Callable[[Written], None] | None = None,
                 before_rename: Callable[[], None] | None = None) -> bytes:
    """Write a bundle whose statement lists the payload's sizes and digests, reading each payload byte once.

    `statement(files)` turns the payload members (in archive order, with size and sha256) into the
    statement's bytes; `signatures(statement)` gives the signature members. `check(member)` sees each
    payload member as soon as it is written and hashed, and raises to stop the build. An `Arriving`
    file is waited for when the archive reaches it, so the archive can be written behind downloads.
    `before_rename()` runs once every byte is written; raising from it discards the file. The statement's
    length is fixed by the sizes alone (a sha256 is always 64 hex characters): its slot is reserved
    first, the payload is streamed behind it (read, hashed and written once; the write of one chunk
    overlaps reading and hashing the next), and the statement is written into the slot at the end.
    The bytes equal those of `write` given the same statement and signatures. Returns the statement.

    Raises:
        ArchiveError: a source that is not a regular file or changes while copied, a statement whose
            length depends on the digests, a bad signature name, or an I/O error (nothing is left at
            `out` and a previous file there is untouched).
        UnsafeArchiveError: an unsafe or duplicate member name.
        whatever `statement`, `signatures` or `check` raise (nothing is left at `out` either).
    """
    out = Path(out)
    payload = sorted(files, key=lambda m: _order_key(m[0]))
    names = [check_name(n, where=str(out)) for n, _ in payload]
    for name in names:
        if name == STATEMENT or name.startswith(SIGNATURES_DIR):
            raise ArchiveError(f"{out}: {name} is not a payload member", hint="the archive writes it itself")
    _refuse_duplicates([STATEMENT, *names], str(out))
    return _write_single_pass(out, epoch, payload, statement, signatures, check, before_rename)


def _in_memory(source: Source) -> bytes:
    if isinstance(source, bytes):
        return source
    _regular_size(Path(source))
    return Path(source).read_bytes()


def _write_single_pass(out: Path, epoch: int, payload: Sequence[tuple[str, Source | Arriving]],
                       statement_of: StatementOf, signatures_of: SignaturesOf,
                       check: Callable[[Written], None] | None, before_rename: Callable[[], None] | None) -> bytes:
    sizes = [_size_of(source) for _, source in payload]
    reserved = len(statement_of(tuple(Written(n, size, _UNKNOWN) for (n, _), size in zip(payload, sizes,
                                                                                          strict=True))))
    slot = len(_header(STATEMENT, reserved, epoch)) + reserved + -reserved % BLOCK
    with atomic_fd(out, "write the bundle") as fd, _Sink(fd, slot) as sink:
        written = []
        for (name, source), size in zip(payload, sizes, strict=True):
            sink.put(_header(name, size, epoch))
            digest = _copy_hashing(sink, source, size)
            sink.put(b"\0" * (-size % BLOCK))
            member = Written(name, size, digest)
            if check is not None:
                check(member)
            written.append(member)
        statement = statement_of(tuple(written))
        if len(statement) != reserved:
            raise ArchiveError(f"{out}: the statement is {len(statement)} bytes, not the {reserved} reserved for it",
                               hint="its length must depend on the sizes only, never on the digests; "
                                    "this is a bug in airgap-bundle, please report it")
        sink.write_at(0, _header(STATEMENT, reserved, epoch) + statement + b"\0" * (-reserved % BLOCK))
        seen = set()
        for name, data in sorted(signatures_of(statement)):  # by name, as _order_key sorts them
            if not _SIGNATURE_NAME.match(name) or name in seen:
                raise ArchiveError(f"{out}: {name} is not a new signatures/<authority>.sigstore.json")
            seen.add(name)
            sink.put(_header(name, len(data), epoch) + data + b"\0" * (-len(data) % BLOCK))
        sink.put(_end_blocks(sink.offset))
        if before_rename is not None:
            before_rename()
    return statement


def _size_of(source: Source | Arriving) -> int:
    if isinstance(source, bytes):
        return len(source)
    if isinstance(source, Arriving):
        return source.size
    return _regular_size(Path(source))


def _regular_size(path: Path) -> int:
    try:
        st = os.stat(path)
    except OSError as e:
        raise ArchiveError(f"{path}: cannot read: {e.strerror}", hint="the build folder changed under the build") from e
    if not stat.S_ISREG(st.st_mode):
        raise ArchiveError(f"{path}: not a regular file", hint="bundle members are regular files")
    return st.st_size


def _copy_hashing(sink: _Sink, source: Source | Arriving, size: int) -> str:
    """Stream `source` into the sink while hashing exactly the bytes written; return the sha256 hex.
    An `Arriving` file whose present bytes this run hashed already is copied without a second hash."""
    if isinstance(source, bytes):
        sink.put(source)
        return hashlib.sha256(source).hexdigest()
    known = None
    if isinstance(source, Arriving):
        known = source.ready()
        source = source.path
    hasher = hashlib.sha256() if known is None else None
    with open(source, "rb", buffering=0) as src:
        copied = 0
        while copied < size:
            view = sink.buffer()
            n = src.readinto(view[: min(len(view), size - copied)])
            if not n:
                break
            if hasher is not None:
                hasher.update(view[:n])
            sink.put(view[:n])
            copied += n
        if copied != size or src.read(1):
            raise ArchiveError(f"{source}: changed size while being archived",
                               hint="do not modify the build folder while a bundle is written")
    return hasher.hexdigest() if hasher is not None else str(known)


class _Sink:
    """Sequential writes to `fd` from `offset` on, done by one worker thread in the order given, so
    that reading and hashing the next chunk (main thread) overlaps writing this one: hashlib and
    os.write both release the GIL, and each core does one of them. Chunks come from a ring of DEPTH
    buffers; `buffer()` hands out the next one once its previous write is done. The first write error
    is raised by the next call (the file is then discarded, whatever later writes did to it)."""

    DEPTH = 4

    def __init__(self, fd: int, offset: int) -> None:
        self.fd, self.offset = fd, offset
        os.lseek(fd, offset, os.SEEK_SET)
        self._ring = [memoryview(bytearray(CHUNK)) for _ in range(self.DEPTH)]
        self._busy: list[Future[None] | None] = [None] * self.DEPTH
        self._next = 0
        self._last: Future[None] | None = None
        self._errors: list[OSError] = []  # the first one is raised; later ones follow from it
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="archive-write")
        self._base, self._written, self._started = offset, 0, 0  # bytes written, and handed to write-back

    def __enter__(self) -> _Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        # Every queued write runs before the descriptor is closed (no write may reach a closed, reused fd
        # number); on a failure they go into a file that is discarded: at most DEPTH chunks of waste.
        self._pool.shutdown()  # waits for them
        if exc[0] is None:
            self._raise()  # the last writes (signatures, end blocks) are checked here

    def buffer(self) -> memoryview:
        """A free buffer to read the next chunk into; pass (a slice of) it to `put` before the next call."""
        i = self._next
        pending = self._busy[i]
        if pending is not None:
            pending.result()
        self._raise()
        return self._ring[i]

    def put(self, data: bytes | memoryview) -> None:
        self._raise()
        if not data:
            return
        future = self._pool.submit(self._write, data)
        if isinstance(data, memoryview) and data.obj is self._ring[self._next].obj:
            self._busy[self._next] = future
            self._next = (self._next + 1) % self.DEPTH
        self._last = future
        self.offset += len(data)

    def write_at(self, position: int, data: bytes) -> None:
        """Write `data` at `position` (a slot reserved earlier), once every queued write is done."""
        if self._last is not None:
            self._last.result()
        self._raise()
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, position)
            view, position = view[n:], position + n

    def _write(self, data: bytes | memoryview) -> None:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as e:
            self._errors.append(e)
            return
        self._written += len(data)
        if self._written - self._started >= WRITEBACK_STEP:
            start_writeback(self.fd, self._base + self._started, self._written - self._started)
            self._started = self._written

    def _raise(self) -> None:
        if self._errors:
            raise self._errors[0]


def _refuse_duplicates(names: Iterable[str], where: str) -> None:
    seen: dict[str, str] = {}
    files = set()
    for name in names:
        key = name.casefold()  # two names that collide on a case-insensitive file system are refused too
        if key in seen:
            raise UnsafeArchiveError(f"{where}: duplicate member {name!r}",
                                     hint="a name may appear once; a later copy could shadow a checked one")
        seen[key] = name
        files.add(name)
    for name in files:  # "a" as a file and "a/b" cannot both exist on disk
        parts = name.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in files:
                raise UnsafeArchiveError(f"{where}: member {name!r} lies under the file {'/'.join(parts[:i])!r}")


# --------------------------------------------------------------------------------------------------
# Reading


def _open(source: Path | str | BundleBytes) -> tuple[BundleBytes, bool]:
    if isinstance(source, (str, Path)):
        return open_file(source), True
    return source, False


def read_index(source: Path | str | BundleBytes, *,
               admit: Callable[[BundleBytes, Member], None] | None = None) -> BundleIndex:
    """Scan the tar headers (seeking over data) and return the members in archive order.

    Directory entries are tolerated and skipped (they carry nothing; extraction makes folders itself).
    `admit(f, member)`, when given, sees each member as soon as its header is read and raises to stop
    the scan: a caller that knows which members may exist (verify, from the statement) bounds the work
    and the memory by that knowledge rather than by the archive's size. It may read from `f`.

    Raises:
        UnsafeArchiveError: a link, device, fifo or other special member; an unsafe or duplicate name;
            non-zero bytes after the end-of-archive marker.
        ArchiveError: not a tar file, or truncated.
    """
    f, owned = _open(source)
    where = str(source) if owned else getattr(f, "name", "bundle")
    try:
        size = f.seek(0, os.SEEK_END)
        f.seek(0)
        members: list[Member] = []
        end = 0
        try:
            with tarfile.open(fileobj=cast(BinaryIO, f), mode="r:") as tf:
                while (info := tf.next()) is not None:
                    check_name(info.name, where=where)  # tarfile strips a folder's trailing "/"
                    if info.isdir():
                        end = info.offset_data
                        continue
                    if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or info.issparse():
                        kind = ("a symbolic link" if info.issym() else "a hard link" if info.islnk()
                                else "a device file" if info.ischr() or info.isblk()
                                else "a fifo" if info.isfifo() else f"a member of type {info.type!r}")
                        raise UnsafeArchiveError(f"{where}: {info.name!r} is {kind}",
                                                 hint="bundles hold regular files only; refusing the whole bundle")
                    member = Member(info.name, info.size, info.offset, info.offset_data)
                    if member.data_offset + member.size > size:
                        raise ArchiveError(f"{where}: truncated inside member {info.name!r}",
                                           hint="the file is incomplete; copy it again")
                    if admit is not None:
                        admit(f, member)
                    members.append(member)
                    end = member.end
        except tarfile.TarError as e:
            raise ArchiveError(f"{where}: not a readable tar file: {e}") from e
        _refuse_duplicates((m.name for m in members), where)
        _check_trailer(f, end, size, where)
        return BundleIndex(tuple(members), end, size)
    finally:
        if owned:
            f.close()


def _check_trailer(f: BundleBytes, end: int, size: int, where: str) -> None:
    """Everything after the last member must be zeros: no hidden members for a lenient tar to find."""
    f.seek(end)
    while chunk := f.read(CHUNK):
        if chunk.count(0) != len(chunk):
            raise UnsafeArchiveError(f"{where}: data after the end-of-archive marker",
                                     hint="something was appended to the bundle outside the tar structure")


def iter_member(f: BundleBytes, member: Member) -> Iterator[memoryview]:
    """Yield a member's data in chunks of at most 1 MiB, read into one reused buffer.

    Each chunk is valid only until the next one is requested (memory stays flat whatever the size):
    hash or write it, never keep it.
    """
    remaining = member.size
    buf = bytearray(min(CHUNK, member.size))
    view = memoryview(buf)
    f.seek(member.data_offset)
    while remaining > 0:
        n = f.readinto(view[: min(len(buf), remaining)])
        if not n:
            raise ArchiveError(f"{member.name}: unexpected end of file")
        remaining -= n
        yield view[:n]


def read_range(f: BundleBytes, member: Member, start: int, length: int) -> Iterator[bytes]:
    """Yield bytes [start, start + length) of a member's data, in chunks of at most 1 MiB.

    Positioned reads (`pread`): many threads can stream members of one open bundle (a file or a
    split bundle's parts) at once without sharing a file position, and nothing is extracted to disk.

    Raises:
        ArchiveError: the range lies outside the member, or the file ends early.
    """
    if start < 0 or length < 0 or start + length > member.size:
        raise ArchiveError(f"{member.name}: bytes {start}-{start + length} are outside its {member.size} bytes")
    position, end = member.data_offset + start, member.data_offset + start + length
    while position < end:
        chunk = f.pread(min(CHUNK, end - position), position)
        if not chunk:
            raise ArchiveError(f"{member.name}: unexpected end of file", hint="the bundle file was truncated")
        position += len(chunk)
        yield chunk


def digest_all(f: BundleBytes, index: BundleIndex) -> tuple[str, dict[str, str]]:
    """Read the file once, first byte to last: the sha256 of the whole file and of each member's data.

    One sequential pass (headers, data, padding and trailer alike) so a verifier gets the bundle
    file's own digest for its audit record without reading the file a second time. Member bytes feed
    two digests; they run on two cores (hashlib releases the GIL on large buffers), so the file's
    digest costs little wall time where a core is free.

    Raises:
        ArchiveError: the file is shorter or longer than when `index` was read (it is being changed).
    """
    whole, members = hashlib.sha256(), {}
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    f.seek(0)
    pos = 0

    def feed(stop: int, member: hashlib._Hash | None) -> None:
        nonlocal pos
        while pos < stop:
            n = f.readinto(view[: min(CHUNK, stop - pos)])
            if not n:
                raise ArchiveError(f"{getattr(f, 'name', 'bundle')}: shorter than when its headers were read",
                                   hint="the bundle file is being modified; try again on a stable copy")
            if member is None:
                whole.update(view[:n])
            else:  # both digests at once; the buffer is reused only after both are done with it
                pending = pool.submit(whole.update, view[:n])
                member.update(view[:n])
                pending.result()
            pos += n

    with ThreadPoolExecutor(max_workers=1) as pool:
        for m in sorted(index.members, key=lambda m: m.data_offset):
            feed(m.data_offset, None)  # header blocks and the previous member's padding
            hasher = hashlib.sha256()
            feed(m.data_offset + m.size, hasher)
            members[m.name] = hasher.hexdigest()
        feed(index.file_size, None)  # last padding and the end-of-archive blocks
    if f.read(1):
        raise ArchiveError(f"{getattr(f, 'name', 'bundle')}: grew while being read",
                           hint="the bundle file is being modified; try again on a stable copy")
    return whole.hexdigest(), members


def read_member(f: BundleBytes, member: Member, *, cap: int) -> bytes:
    """Read a whole member into memory, refusing members larger than `cap` before reading."""
    if member.size > cap:
        raise ArchiveError(f"{member.name}: {member.size} bytes, more than the {cap} allowed",
                           hint="this member is never that large in a bundle made by airgap-bundle")
    f.seek(member.data_offset)
    data = f.read(member.size)
    if len(data) != member.size:
        raise ArchiveError(f"{member.name}: unexpected end of file")
    return data


def read_statement(path: Path | str, *, cap: int = 64 * 1024 * 1024) -> bytes:
    """The exact bytes of `bundle.intoto.json` (what a co-signer signs), after the header scan.

    Raises:
        ArchiveError: no statement, or larger than `cap`.
        UnsafeArchiveError: the header scan refuses the bundle.
    """
    with open_file(path) as f:
        member = read_index(f).get(STATEMENT)
        if member is None:
            raise ArchiveError(f"{path}: no {STATEMENT}: not an airgap bundle")
        return read_member(f, member, cap=cap)


# --------------------------------------------------------------------------------------------------
# Co-signing


def append_signature(path: Path | str, authority: str, data: bytes, *, replace: bool = False,
                     epoch: int | None = None) -> None:
    """Add `signatures/<authority>.sigstore.json` to a bundle without changing any earlier byte.

    The new member goes where the end-of-archive marker was; new end blocks follow. Its mtime is
    `epoch`, or the statement's mtime so the headers stay uniform. With `replace=True` an existing
    signature of that authority is dropped by rewriting the file (temporary name, then rename).

    Raises:
        ArchiveError: the authority already signed and `replace` is false; I/O errors (the bundle is
            restored to its previous bytes).
        UnsafeArchiveError: the bundle fails the header scan.
    """
    path = Path(path)
    name = signature_name(authority)
    index = read_index(path)
    statement = index.get(STATEMENT)
    if statement is None:
        raise ArchiveError(f"{path}: no {STATEMENT}: not a bundle")
    if epoch is None:
        with open(path, "rb") as f:
            f.seek(statement.offset)
            epoch = _mtime_of(f)
    existing = index.get(name)
    if existing is not None:
        if not replace:
            raise ArchiveError(f"{path}: {authority} has already signed this bundle",
                               hint="pass --replace to re-sign (e.g. with a renewed certificate)")
        _rewrite_without(path, index, existing, name, data, epoch)
        return
    with open(path, "r+b") as f:
        f.seek(index.end)
        tail = f.read()  # end-of-archive blocks: at most a record or so; kept to roll back
        try:
            f.seek(index.end)
            f.truncate()
            written = _write_member(f, name, data, epoch)
            _finish(f, index.end + written)
            f.flush()
            os.fsync(f.fileno())
        except BaseException as e:
            f.seek(index.end)
            f.truncate()
            f.write(tail)
            f.flush()
            if isinstance(e, OSError):
                raise ArchiveError(f"{path}: cannot append the signature: {e.strerror or e}") from e
            raise


def _mtime_of(f: BinaryIO) -> int:
    block = f.read(BLOCK)
    info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    return int(info.mtime)


def _rewrite_without(path: Path, index: BundleIndex, dropped: Member, name: str, data: bytes, epoch: int) -> None:
    with _atomic_output(path, "rewrite the bundle") as out, open(path, "rb", buffering=0) as src:
        offset = 0
        for m in index.members:
            if m is dropped:
                continue
            # Copy header and data blocks verbatim: payload bytes never change.
            src.seek(m.offset)
            remaining = m.end - m.offset
            while remaining:
                chunk = src.read(min(CHUNK, remaining))
                if not chunk:
                    raise ArchiveError(f"{path}: unexpected end of file in {m.name}")
                out.write(chunk)
                remaining -= len(chunk)
            offset += m.end - m.offset
        offset += _write_member(out, name, data, epoch)
        _finish(out, offset)


# --------------------------------------------------------------------------------------------------
# Extracting


def extract(source: Path | str | BundleBytes, dest: Path | str, expected: Mapping[str, tuple[int, str]], *,
            extra: Mapping[str, bytes] | None = None,
            also: Sequence[tuple[BundleBytes, Mapping[str, tuple[int, str]]]] = ()) -> None:
    """Extract exactly the `expected` members ({name: (size, sha256 hex)}) into the new folder `dest`.

    `extra` files ({relative path: bytes}, not members: e.g. the verification record) are written into
    the staging folder too, so `dest` appears with them or not at all. `also` names other archives and
    the members to take from each (an update bundle's base: the blobs it omits), hashed the same way.

    Each file is written into a staging folder next to `dest` while it is hashed; the folder is
    renamed to `dest` only when every member matched. Files get mode 0644 and folders 0755 whatever
    the headers say. Any failure removes the staging folder: `dest` never exists half-written.

    Raises:
        ArchiveError: `dest` exists, or an I/O error; or the staging folder of a failed extraction
            could not be removed (the message names it and the first failure).
        UnlistedMemberError: the archive's members differ from `expected`, or a member's bytes do.
        UnsafeArchiveError: the header scan refuses the archive.
    """
    dest = Path(dest)
    if dest.exists() or dest.is_symlink():
        raise ArchiveError(f"{dest} already exists", hint="extract into a new folder")
    if not dest.parent.is_dir():
        raise ArchiveError(f"{dest.parent} is not a folder")
    f, owned = _open(source)
    staging: Path | None = None
    made: list[Path] = []  # each file as it is made: a failure removes them without listing a folder
    try:
        index = read_index(f)
        present = {m.name for m in index.members}
        if present != set(expected):
            unexpected, missing = sorted(present - set(expected)), sorted(set(expected) - present)
            raise UnlistedMemberError(f"{dest}: archive members differ from the verified list "
                                      f"(unexpected: {unexpected[:5]}, missing: {missing[:5]})")
        staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.staging-"))
        _extract_members(f, index.members, expected, staging, made)
        for other, wanted in also:
            members = [m for m in read_index(other).members if m.name in wanted]
            if len(members) != len(wanted) or present & set(wanted):
                raise UnlistedMemberError(f"{dest}: the members to take from another archive are not all there, "
                                          "or overlap the bundle's own")
            _extract_members(other, members, wanted, staging, made)
        for name, data in (extra or {}).items():
            if name in present:
                raise UnlistedMemberError(f"{dest}: the bundle has a member {name}, which extraction writes itself",
                                          hint="refusing to overwrite a bundle member")
            target = staging.joinpath(*check_name(name, where=str(dest)).split("/"))
            made.append(target)
            target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "wb", buffering=CHUNK) as out:  # buffered, as above: no silent short write
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
        os.chmod(staging, 0o755)
        os.rename(staging, dest)
        staging = None
    except OSError as e:
        raise ArchiveError(f"{dest}: cannot extract: {e.strerror or e}", hint=open_file_limit_hint(e)) from e
    finally:
        if owned:  # first: _remove_staging may raise, and the bundle's descriptor is then one more free
            f.close()
        if staging is not None:  # only on the way out of a failure: sys.exception() is that failure
            _remove_staging(staging, made, sys.exception())


def _remove_staging(staging: Path, made: Iterable[Path], failure: BaseException | None) -> None:
    """Remove the staging folder of a failed extraction, which holds the files `made` and their folders.

    shutil.rmtree opens each folder to list it and keeps one descriptor per level open: when the
    extraction stopped for want of file descriptors (EMFILE), it fails too, and silently. Removing the
    files by name, then their folders deepest first, needs no descriptor at all (the caller may still
    hold the bundle open, so not even one may be free).

    Raises:
        ArchiveError: the folder stays; the message names it, so the user can remove it.
    """
    shutil.rmtree(staging, ignore_errors=True)
    if not os.path.lexists(staging):
        return
    folders = {staging}
    try:
        for path in made:
            with suppress(FileNotFoundError):
                path.unlink()
            folders.update(p for p in path.parents if p.is_relative_to(staging))
        for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            with suppress(FileNotFoundError):
                folder.rmdir()
    except OSError as e:
        first = str(failure) or type(failure).__name__  # Ctrl-C's KeyboardInterrupt has no text
        raise ArchiveError(f"{first}; and the staging folder {staging} cannot be removed: {e.strerror or e}",
                           hint="remove it by hand") from e


def _extract_members(f: BundleBytes, members: Iterable[Member], expected: Mapping[str, tuple[int, str]],
                     staging: Path, made: list[Path]) -> None:
    """Write each member under `staging` while hashing it, adding its path to `made` first; refuse one
    whose bytes differ from `expected`."""
    for member in members:
        size, digest = expected[member.name]
        target = staging.joinpath(*member.name.split("/"))
        made.append(target)
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        hasher, written = hashlib.sha256(), 0
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        # buffered: a raw write may write only part of a chunk (disk or quota full) and say so
        # only in its return value; the buffered writer retries and raises instead
        with os.fdopen(fd, "wb", buffering=CHUNK) as out:
            for chunk in iter_member(f, member):
                hasher.update(chunk)
                out.write(chunk)
                written += len(chunk)
        if written != size or hasher.hexdigest() != digest:
            raise UnlistedMemberError(f"{member.name}: content changed between verification and extraction",
                                      hint="the bundle file is being modified; nothing was extracted")
