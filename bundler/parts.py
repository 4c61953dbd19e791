"""A bundle in parts that fit the media: split, a signed parts index, and the parts read as one bundle.

Inputs and outputs:
- `split(bundle, max_part_size, signer, authority)`: one signed bundle file -> `NAME.part-0001`, ...
  (consecutive byte ranges of the file, so `cat NAME.part-* > NAME` is the bundle again) and the
  signed index `NAME.parts.json`. Reads the bundle once; parts and index are written under temporary
  names and renamed into place at the end, the index last.
- `open_bundle(path, trust, now)`: a bundle file, or a parts index, as `bundlefile.BundleBytes`. For
  an index: its signature is checked against the policy first (an authority the policy requires must
  have signed it; `verify.check_signature_file` judges it exactly as a bundle signature), then every
  part's size (a missing or short part is named before any byte is hashed); then the concatenation is
  handed out as one read-only file (`PartsFile`), never copied. `verify`, `inspect` and `push` read it
  as they read a file.
- A failure of those checks inside `open_bundle`'s block (the header scan, a signature, a member's
  digest) is explained by the parts when it can be: each part is hashed and the first whose sha256
  differs from the index is named instead ("part 2 of 7 (NAME.part-0002) is damaged: ...").

An intact set is read once by `verify`: its checks cover every byte (every member's digest, zeros
after the end), so parts are only hashed to name the damaged one. Format: docs/bundle-format.md
section 8. Does not verify bundles (verify.py) or print (cli.py).
"""

from __future__ import annotations

import bisect
import datetime as dt
import decimal
import hashlib
import io
import json
import logging
import os
import re
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from . import archive, sign, verify
from .attest import canonical_json, strict_json
from .bundlefile import BundleBytes, open_file
from .errors import (
    ArchiveError,
    BadSignatureError,
    InputError,
    MissingAuthorityError,
    PartError,
    UsageError,
    VerificationError,
    open_file_limit_hint,
)
from .keys import VENDOR, Signer, TrustPolicy, read_capped
from .layout import WRITEBACK_STEP, start_writeback

log = logging.getLogger(__name__)

PAYLOAD_TYPE = "application/vnd.airgap-bundle.parts.v1+json"
API_VERSION = "airgap-bundle.dev/v1"
KIND = "BundleParts"
INDEX_SUFFIX = ".parts.json"
MAX_PARTS = 9999  # four-digit part numbers; a bundle of 20 GB on 4 GiB media needs 5
MAX_INDEX_BYTES = 4 << 20  # 9999 parts take about 1.5 MB
CHUNK = archive.CHUNK
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}


def parse_size(text: str) -> int:
    """A size in bytes: `4GiB`, `4095MiB`, `700MB`, `1.5GB`, `65536` (binary and decimal suffixes,
    case-insensitive). A bare `4G` is refused: binary or decimal differ by 7% and media limits are exact.

    Raises:
        UsageError: not a size, an ambiguous or unknown unit, or less than one byte.
    """
    match = _SIZE.match(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        ambiguous = unit in ("k", "m", "g", "t")
        raise UsageError(f"{text!r} is not a size" + (": the unit is ambiguous" if ambiguous else ""),
                         hint="write e.g. 4GiB (binary, 4 x 1024^3 bytes), 4GB (decimal, 4 x 1000^3 bytes) "
                              "or a number of bytes")
    size = int(decimal.Decimal(match.group(1)) * _UNITS[unit])
    if size < 1:
        raise UsageError(f"{text!r} is less than one byte", hint="a part holds at least one byte")
    return size


def part_name(bundle_name: str, number: int) -> str:
    """The file name of part `number` (from 1): `NAME.part-0001`."""
    return f"{bundle_name}.part-{number:04d}"


def index_path(bundle: Path) -> Path:
    """Where the index of `bundle`'s parts goes: `NAME.parts.json` beside it."""
    return bundle.with_name(bundle.name + INDEX_SUFFIX)


# --------------------------------------------------------------------------------------------------
# The index


@dataclass(frozen=True)
class Part:
    name: str
    size: int
    sha256: str
    offset: int  # where it starts in the bundle (the sizes of the parts before it)


@dataclass(frozen=True)
class PartsIndex:
    """What `NAME.parts.json` signs: the bundle (name, size, sha256, statement digest) and its parts in order."""

    authority: str
    bundle: str
    size: int
    sha256: str
    statement_sha256: str
    parts: tuple[Part, ...]

    def to_bytes(self) -> bytes:
        """The signed payload: RFC 8785 canonical JSON."""
        return canonical_json({
            "apiVersion": API_VERSION, "kind": KIND, "authority": self.authority,
            "bundle": {"name": self.bundle, "size": self.size, "sha256": self.sha256,
                       "statementSha256": self.statement_sha256},
            "parts": [{"name": p.name, "size": p.size, "sha256": p.sha256} for p in self.parts],
        })

    def to_json(self) -> dict[str, Any]:
        return {"authority": self.authority, "bundle": self.bundle, "size": self.size, "sha256": self.sha256,
                "statementSha256": self.statement_sha256,
                "parts": [{"name": p.name, "size": p.size, "sha256": p.sha256} for p in self.parts]}

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> PartsIndex:
        """Parse and check a payload (docs/bundle-format.md section 8.2).

        Raises:
            PartError: not canonical JSON of that shape, parts out of order or not adding up to the bundle.
        """
        def bad(msg: str) -> PartError:
            return PartError(f"{where}: the parts index is malformed: {msg}",
                             hint="the index was not written by airgap-bundle split; ask for the set again")

        try:
            doc = strict_json(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise bad(f"not JSON ({e})") from e
        if canonical_json(doc) != data:
            raise bad("not in RFC 8785 canonical form")
        if (not isinstance(doc, dict) or set(doc) != {"apiVersion", "kind", "authority", "bundle", "parts"}
                or doc["apiVersion"] != API_VERSION or doc["kind"] != KIND):
            raise bad(f"not {{apiVersion: {API_VERSION}, kind: {KIND}, authority, bundle, parts}}")
        bundle, parts = doc["bundle"], doc["parts"]
        if (not isinstance(bundle, dict) or set(bundle) != {"name", "size", "sha256", "statementSha256"}
                or not _safe_name(bundle["name"]) or not _count(bundle["size"])
                or not _hex(bundle["sha256"]) or not _hex(bundle["statementSha256"])):
            raise bad("bundle is not {name, size, sha256, statementSha256}")
        if not isinstance(parts, list) or not 1 <= len(parts) <= MAX_PARTS:
            raise bad(f"parts is not a list of 1 to {MAX_PARTS} entries")
        out, offset = [], 0
        for i, entry in enumerate(parts):
            if (not isinstance(entry, dict) or set(entry) != {"name", "size", "sha256"}
                    or not isinstance(entry["name"], str) or not _count(entry["size"]) or not _hex(entry["sha256"])):
                raise bad(f"parts[{i}] is not {{name, size, sha256}}")
            if entry["name"] != part_name(bundle["name"], i + 1):
                raise bad(f"parts[{i}] is {entry['name']}, expected {part_name(bundle['name'], i + 1)}: "
                          "the parts are listed in order, numbered from 1")
            out.append(Part(entry["name"], entry["size"], entry["sha256"], offset))
            offset += entry["size"]
        if offset != bundle["size"]:
            raise bad(f"the parts add up to {offset:,} bytes, the bundle has {bundle['size']:,}")
        if not isinstance(doc["authority"], str):
            raise bad("authority is not a string")
        return cls(doc["authority"], bundle["name"], bundle["size"], bundle["sha256"], bundle["statementSha256"],
                   tuple(out))


def _safe_name(value: Any) -> bool:
    return (isinstance(value, str) and 0 < len(value.encode()) <= 200 and value not in (".", "..")
            and not any(c in value for c in "/\\\0"))


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _hex(value: Any) -> bool:
    return isinstance(value, str) and bool(_HEX64.match(value))


@dataclass(frozen=True)
class CheckedIndex:
    """An index file read, and how far it was checked: `signer` is the accepted signature, or None
    when no policy was given (`inspect` without --policy shows an unverified index, as it shows bundles)."""

    path: Path
    index: PartsIndex
    signer: verify.AuthorityResult | None

    def to_json(self) -> dict[str, Any]:
        return {"index": str(self.path), "verified": self.signer is not None, **self.index.to_json(),
                "signature": self.signer.to_json() if self.signer else None}


def is_index(path: Path | str) -> bool:
    """Whether `path` holds a parts index (a JSON document) rather than a bundle (a tar, which starts
    with its first member's name). Garbage that happens to start with `{` is not JSON: a bundle, then,
    and the tar reader says what is wrong with it.

    Raises:
        OSError: out of file descriptors (EMFILE, ENFILE), when what the file holds cannot be told: read
            as a bundle, an index would be refused as a broken tar.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(MAX_INDEX_BYTES + 1)
    except OSError as e:
        if open_file_limit_hint(e):
            raise
        return False  # opening it as a bundle says what is wrong
    if head.lstrip()[:1] != b"{":
        return False
    try:
        json.loads(head)
    except ValueError:  # UnicodeDecodeError included
        return False
    return True


def read_index(path: Path, trust: TrustPolicy | None, now: dt.datetime) -> CheckedIndex:
    """Read `NAME.parts.json`; with `trust`, check its signature: an authority the policy requires
    (the vendor always is) must have signed it, judged as verify judges a bundle signature.

    Raises:
        InputError: unreadable or too large.
        BadSignatureError: not a signed parts index, or the signature does not verify (24);
        MissingAuthorityError: signed by an authority the policy does not require (22);
        UntrustedKeyError, ExpiredKeyError: the key or certificate (25, 23);
        PartError: a signed index that is malformed (31).
    """
    where = str(path)
    data = read_capped(path, MAX_INDEX_BYTES, "the parts index")
    try:
        payload = sign.parse(data, payload_type=PAYLOAD_TYPE).payload
        claimed = strict_json(payload).get("authority", VENDOR)  # untrusted: only selects the policy to apply
    except (ValueError, AttributeError) as e:
        raise BadSignatureError(f"{path}: not a signed parts index: {e}",
                                hint=f"a Sigstore bundle whose DSSE payloadType is {PAYLOAD_TYPE}") from e
    signer = None
    if trust is not None:
        policy = trust.authorities.get(str(claimed))
        if policy is None or str(claimed) not in trust.required:
            raise MissingAuthorityError(
                f"{path}: the parts index is signed as {claimed!r}, which the policy does not "
                f"{'name' if policy is None else 'require'}",
                hint="the index must be signed by an authority the policy requires (the vendor always is)")
        signer = verify.check_signature_file(str(claimed), data, None, policy, now, member=where,
                                             payload_type=PAYLOAD_TYPE)
        if signer.error is not None:
            raise signer.error
        log.info("accepted parts index signature: authority=%s key=%s serial=%s notAfter=%s", claimed,
                 signer.keyid, signer.serial or "-", signer.not_after.isoformat() if signer.not_after else "-")
    index = PartsIndex.from_bytes(payload, where)
    if index.authority != claimed:  # pragma: no cover - both are read from the same payload bytes
        raise BadSignatureError(f"{path}: the index names two authorities")
    return CheckedIndex(path, index, signer)


# --------------------------------------------------------------------------------------------------
# The parts as one read-only file


class PartsFile(io.RawIOBase):
    """The concatenation of a set's parts, read through one open descriptor per part, never copied."""

    def __init__(self, checked: CheckedIndex, fds: Sequence[int]) -> None:
        super().__init__()
        self.checked, self._fds = checked, list(fds)
        self._starts = [p.offset for p in checked.index.parts]
        self.size, self._pos = checked.index.size, 0

    @property
    def name(self) -> str:
        return str(self.checked.path)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET, /) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise OSError(f"{self.name}: seek to a negative position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any, /) -> int:
        """Fill `buffer` (across part boundaries) unless the set ends first."""
        n = self._preadinto(memoryview(buffer).cast("B"), self._pos)
        self._pos += n
        return n

    def pread(self, size: int, position: int, /) -> bytes:
        buf = bytearray(max(0, min(size, self.size - position)))
        return bytes(buf[: self._preadinto(memoryview(buf), position)])

    def _preadinto(self, view: memoryview, position: int) -> int:
        filled = 0
        while filled < len(view) and position < self.size:
            i = bisect.bisect_right(self._starts, position) - 1
            part = self.checked.index.parts[i]
            want = min(len(view) - filled, part.offset + part.size - position)
            n = os.preadv(self._fds[i], [view[filled: filled + want]], position - part.offset)
            if not n:
                raise ArchiveError(f"{self.name}: {_label(self.checked, i)} ended early",
                                   hint="a part was changed while it was read; copy the set again")
            filled += n
            position += n
        return filled

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []
        super().close()


def _label(checked: CheckedIndex, i: int) -> str:
    parts = checked.index.parts
    return f"part {i + 1} of {len(parts)} ({parts[i].name})"


def _open_parts(checked: CheckedIndex) -> list[int]:
    """One descriptor per part, each part's size checked: a missing or short part is named here,
    before any byte is hashed."""
    fds: list[int] = []
    try:
        for i, part in enumerate(checked.index.parts):
            path = checked.path.parent / part.name
            try:
                fds.append(os.open(path, os.O_RDONLY))
            except FileNotFoundError:
                raise PartError(f"{checked.path}: {_label(checked, i)} is missing",
                                hint=f"copy it into {checked.path.parent} beside the index, then run this again"
                                ) from None
            except OSError as e:
                raise InputError(f"{path}: cannot open {_label(checked, i)}: {e.strerror}") from e
            _check_size(checked, i, os.fstat(fds[-1]).st_size)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def _check_size(checked: CheckedIndex, i: int, actual: int) -> None:
    want = checked.index.parts[i].size
    if actual != want:
        raise PartError(f"{checked.path}: {_label(checked, i)} is {'short' if actual < want else 'too long'}: "
                        f"{actual:,} bytes, the index says {want:,}",
                        hint="copy this part again from the delivery media")


def find_damaged(f: PartsFile) -> PartError | None:
    """Hash every part (sizes first); the first that differs from the index, or None when all match."""
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    for i, part in enumerate(f.checked.index.parts):
        try:
            _check_size(f.checked, i, os.fstat(f._fds[i]).st_size)
        except PartError as e:
            return e
        hasher, done = hashlib.sha256(), 0
        while done < part.size:
            n = os.preadv(f._fds[i], [view[: min(CHUNK, part.size - done)]], done)
            hasher.update(view[:n])
            done += n
        if hasher.hexdigest() != part.sha256:
            return PartError(f"{f.checked.path}: {_label(f.checked, i)} is damaged: sha256 {hasher.hexdigest()}, "
                             f"index says {part.sha256}", hint="copy this part again from the delivery media")
    return None


def _statement_sha256(f: PartsFile) -> str | None:
    """The sha256 of the first member's data when it is the statement (untrusted: only compared with
    the index, so a set that is not the indexed bundle is named before the long checks)."""
    try:
        with tarfile.open(fileobj=cast(BinaryIO, f), mode="r:") as tf:
            info = tf.next()
    except tarfile.TarError:
        return None
    if info is None or info.name != archive.STATEMENT or info.size > verify.MAX_STATEMENT_BYTES:
        return None
    member = archive.Member(info.name, info.size, info.offset, info.offset_data)
    return hashlib.sha256(archive.read_member(f, member, cap=verify.MAX_STATEMENT_BYTES)).hexdigest()


@contextmanager
def open_set(path: Path, trust: TrustPolicy | None, now: dt.datetime) -> Iterator[PartsFile]:
    """A checked index's parts as one `PartsFile` (see the module docstring for the order of checks).

    A verification or archive error raised in the block becomes the damaged part's `PartError` when a
    part's sha256 differs from the index.

    Raises:
        see `read_index`; PartError: a part missing, of another size, or damaged.
    """
    checked = read_index(path, trust, now)
    with PartsFile(checked, _open_parts(checked)) as f:
        if _statement_sha256(f) != checked.index.statement_sha256:
            raise find_damaged(f) or PartError(
                f"{path}: the parts do not begin with the statement the index names "
                f"(sha256:{checked.index.statement_sha256})",
                hint="the index was signed for another bundle; ask for the set again")
        f.seek(0)
        try:
            yield f
        except PartError:
            raise
        except (ArchiveError, VerificationError) as e:  # explained by a damaged part, when one is
            damaged = find_damaged(f)
            if damaged is not None:
                raise damaged from e
            raise


@contextmanager
def open_bundle(path: Path | str, trust: TrustPolicy | None, now: dt.datetime) -> Iterator[BundleBytes]:
    """A bundle file, or a parts index's set (`open_set`), as one read-only `BundleBytes`."""
    if is_index(path):
        with open_set(Path(path), trust, now) as parts:
            yield parts
    else:
        with open_file(path) as f:
            yield f


@contextmanager
def open_optional(path: Path | str | None, trust: TrustPolicy | None,
                  now: dt.datetime) -> Iterator[BundleBytes | None]:
    """`open_bundle`, or None when no path is given (an optional `--base`)."""
    if path is None:
        yield None
    else:
        with open_bundle(path, trust, now) as f:
            yield f


@dataclass(frozen=True)
class JoinResult:
    path: Path
    index: PartsIndex


def join(path: Path, trust: TrustPolicy, now: dt.datetime, out: Path | None = None) -> JoinResult:
    """Write the bundle a split set stands for as one file at `out` (default: the bundle's name as the
    signed index gives it, beside the index), for tools that need one file.

    The index is checked against `trust` first and the parts' sizes and statement as `open_set` checks
    them; then every part is read once, in order, and the whole must hash to the index's sha256 (else
    the damaged part is named). Written under a temporary name, fsync'd as it goes, renamed at the end:
    `out` is never half written. The result is byte for byte the bundle that was split; it is not
    verified here (verify it as any bundle).

    Raises:
        UsageError: `out` exists; the errors of `open_set`; PartError: a part's bytes differ;
        ArchiveError: `out` cannot be written.
    """
    with open_set(path, trust, now) as f:
        checked = f.checked
        out = out or path.parent / checked.index.bundle  # a plain file name: the index refuses any other
        if out.exists() or out.is_symlink():
            raise UsageError(f"{out} already exists", hint="give --output a new file name")
        whole, done, started = hashlib.sha256(), 0, 0
        buffer = memoryview(bytearray(CHUNK))
        with archive.atomic_fd(out, "join the parts") as fd:
            while n := f.readinto(buffer):
                whole.update(buffer[:n])
                view = buffer[:n]
                while view:
                    view = view[os.write(fd, view):]
                done += n
                if done - started >= WRITEBACK_STEP:
                    start_writeback(fd, started, done - started)
                    started = done
            if whole.hexdigest() != checked.index.sha256:
                raise find_damaged(f) or PartError(
                    f"{path}: the parts join to sha256:{whole.hexdigest()}, the index says "
                    f"sha256:{checked.index.sha256}", hint="ask for the set again")
    return JoinResult(out, checked.index)


# --------------------------------------------------------------------------------------------------
# Splitting


@dataclass(frozen=True)
class SplitResult:
    index_path: Path
    index: PartsIndex
    signer: str  # the key fingerprint that signed the index


def split(bundle: Path, max_part_size: int, signer: Signer, authority: str = VENDOR, *,
          out_dir: Path | None = None) -> SplitResult:
    """Write `bundle` as parts of at most `max_part_size` bytes and a signed index, beside it or in `out_dir`.

    The bundle is checked as verify's header scan checks it (and must carry its statement first); it
    is read once, first byte to last, each part hashed as it is written. Signing and co-signing happen
    before: the parts are byte ranges of the signed file.

    Raises:
        UsageError: more than MAX_PARTS parts would be needed.
        ArchiveError, UnsafeArchiveError, VerificationError: not a bundle; I/O errors (nothing is left
            behind, earlier parts or index under the same names are untouched).
    """
    out_dir = out_dir or bundle.parent
    with open_file(bundle) as f:
        index, statement, _ = verify.scan(f, str(bundle))
        size = index.file_size
        count = -(-size // max_part_size)
        if count > MAX_PARTS:
            raise UsageError(f"{bundle}: {size:,} bytes in parts of {max_part_size:,} would make {count:,} parts, "
                             f"more than {MAX_PARTS}", hint="raise --max-part-size")
        temps: list[Path] = []
        try:
            parts, whole = _write_parts(f, bundle, size, max_part_size, out_dir, temps)
            checked = PartsIndex(authority, bundle.name, size, whole, hashlib.sha256(statement).hexdigest(),
                                 tuple(parts))
            signed = sign.sign(checked.to_bytes(), signer, authority, payload_type=PAYLOAD_TYPE)
            final = index_path(out_dir / bundle.name)
            _write_temp(out_dir, final.name, signed, temps)
            # The index last: until it is in place, no index names the new parts.
            for temp, part in zip(temps, (*parts, None), strict=True):
                os.replace(temp, out_dir / part.name if part else final)
            temps.clear()
        except OSError as e:
            raise ArchiveError(f"{out_dir}: cannot write the parts: {e.strerror or e}") from e
        finally:
            for temp in temps:
                temp.unlink(missing_ok=True)
    return SplitResult(final, checked, signer.fingerprint)


def _write_parts(f: BundleBytes, bundle: Path, size: int, max_part_size: int, out_dir: Path,
                 temps: list[Path]) -> tuple[list[Part], str]:
    whole = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    parts: list[Part] = []
    f.seek(0)
    with ThreadPoolExecutor(max_workers=1) as pool:  # the whole file's digest on a second core, as digest_all
        for offset in range(0, size, max_part_size):
            parts.append(_write_part(f, bundle, len(parts) + 1, offset, min(max_part_size, size - offset), out_dir,
                                     temps, view, lambda chunk: pool.submit(whole.update, chunk)))
    if f.read(1):
        raise ArchiveError(f"{bundle}: grew while being split", hint="the bundle is being modified; split a stable copy")
    return parts, whole.hexdigest()


def _write_part(f: BundleBytes, bundle: Path, number: int, offset: int, length: int, out_dir: Path,
                temps: list[Path], view: memoryview, also: Callable[[memoryview], Future[None]]) -> Part:
    """Copy `length` bytes from `f` into a new temporary part file, hashing them (and handing each
    chunk to `also`, which must be done with it before the buffer is reused)."""
    name = part_name(bundle.name, number)
    fd, temp = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.", suffix=".partial")
    temps.append(Path(temp))
    hasher, done, started = hashlib.sha256(), 0, 0
    with os.fdopen(fd, "wb", buffering=CHUNK) as out:  # buffered: it retries a short write, or raises
        os.fchmod(out.fileno(), 0o644)
        while done < length:
            n = f.readinto(view[: min(CHUNK, length - done)])
            if not n:
                raise ArchiveError(f"{bundle}: shorter than when its headers were read",
                                   hint="the bundle is being modified; split a stable copy")
            pending = also(view[:n])
            hasher.update(view[:n])
            out.write(view[:n])
            pending.result()
            done += n
            if done - started >= WRITEBACK_STEP:
                out.flush()
                start_writeback(out.fileno(), started, done - started)
                started = done
        out.flush()
        os.fsync(out.fileno())
    return Part(name, length, hasher.hexdigest(), offset)


def _write_temp(out_dir: Path, name: str, data: bytes, temps: list[Path]) -> None:
    fd, temp = tempfile.mkstemp(dir=out_dir, prefix=f".{name}.", suffix=".partial")
    temps.append(Path(temp))
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), 0o644)
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
