"""The verification record: which keys signed a bundle that was accepted, kept after the terminal is gone.

Input: an accepted `verify.VerificationResult` (with the bundle file's sha256 that verification computed
in its single pass over the file), the policy, what was done (extract or push) and where, and `now`.
Output: a `VerificationRecord`, written
- next to an extraction as `.airgap-bundle/verification.json` (`write_record`, atomic; `verify --extract`
  puts it into the staging folder so the extraction never exists without it), and
- appended as one JSON line to an audit log (`append_log`: O_APPEND, fsync, never truncates; the log is
  JSON Lines, one record per line).
`read_records(path)` reads either form back (`inspect --record`).

Shape: `schemas/verification-record.schema.json` (docs/inspect-and-audit.md). Times are UTC, RFC 3339
with seconds. The policy is named by the sha256 of its file's bytes as loaded (`TrustPolicy.sha256`);
that digest does not cover the root and key files the policy names: the accepted fingerprints do.

Does not verify anything (`verify.py` does) and refuses to make a record of a bundle that was not
accepted. No network; the only I/O is the record and log files it is given.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import jsonschema

from . import __version__
from .errors import ArchiveError, InputError
from .keys import MAX_POLICY_BYTES, TrustPolicy, read_capped
from .verify import VerificationResult, require

API_VERSION = "airgap-bundle.dev/v1"
KIND = "VerificationRecord"
RECORD_DIR = ".airgap-bundle"
RECORD_NAME = "verification.json"
RECORD_PATH = f"{RECORD_DIR}/{RECORD_NAME}"  # relative to the extraction folder
MAX_LOG_BYTES = 256 * 1024 * 1024
Action = Literal["extract", "push"]


def default_audit_log(environ: Mapping[str, str] | None = None) -> Path:
    """Where `push` appends when no `--audit-log` is given: $XDG_STATE_HOME/airgap-bundle/audit.jsonl
    (XDG Base Directory: "state data that should persist between restarts"), else
    ~/.local/state/airgap-bundle/audit.jsonl."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME") or str(Path.home())) / ".local" / "state")
    return Path(base) / "airgap-bundle" / "audit.jsonl"


@dataclass(frozen=True)
class AcceptedAuthority:
    """One signature the policy accepted."""

    authority: str
    keyid: str  # key fingerprint, SHA256:<hex of the DER public key>
    serial: str | None = None  # certificate serial (hex), when the signature carried a certificate
    not_after: dt.datetime | None = None  # certificate or pinned key end of validity


@dataclass(frozen=True)
class RecordedImage:
    """An image of the accepted bundle: its cluster-local name and the digest it is pinned to."""

    local: str
    digest: str  # the bundled index or manifest
    platforms: tuple[str, ...] = ()  # each platform manifest's digest (a runtime may report either)


@dataclass(frozen=True)
class RecordedBase:
    """An update bundle's base, verified together with it: the full bundle its statement names."""

    statement_sha256: str  # hex, of the base's bundle.intoto.json bytes
    name: str
    version: str


@dataclass(frozen=True)
class VerificationRecord:
    bundle_sha256: str
    statement_sha256: str
    policy_sha256: str
    authorities: tuple[AcceptedAuthority, ...]
    time: dt.datetime  # UTC
    tool_version: str
    action: Action
    destination: str  # the extraction folder (absolute) or the registry pushed to
    image_count: int
    bundle_name: str | None = None  # from the verified statement
    bundle_version: str | None = None
    images: tuple[RecordedImage, ...] = ()  # so "which key signed the image we run" needs the log alone
    base: RecordedBase | None = None  # set when the bundle is an update (verified with its base)

    def to_json(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION, "kind": KIND,
            "time": _rfc3339(self.time),
            "tool": {"name": "airgap-bundle", "version": self.tool_version},
            "action": self.action, "destination": self.destination,
            "bundle": {"sha256": self.bundle_sha256, "name": self.bundle_name, "version": self.bundle_version},
            "statementSha256": self.statement_sha256,
            "policySha256": self.policy_sha256,
            "authorities": [{"authority": a.authority, "keyid": a.keyid, "serial": a.serial,
                             "notAfter": _rfc3339(a.not_after) if a.not_after else None} for a in self.authorities],
            "imageCount": self.image_count,
            "images": [{"local": i.local, "digest": i.digest, "platforms": list(i.platforms)} for i in self.images],
            **({"base": {"statementSha256": self.base.statement_sha256, "name": self.base.name,
                         "version": self.base.version}} if self.base else {}),
        }

    def to_text(self) -> str:
        """A few lines for a terminal: when, what, where, and which keys signed."""
        what = f"{self.bundle_name} {self.bundle_version}" if self.bundle_name else "bundle"
        lines = [f"{_rfc3339(self.time)}  {self.action} -> {self.destination}",
                 f"  {what}  sha256:{self.bundle_sha256}  ({self.image_count} images)",
                 f"  statement sha256:{self.statement_sha256}  policy sha256:{self.policy_sha256}  "
                 f"airgap-bundle {self.tool_version}"]
        if self.base:
            lines.append(f"  update of {self.base.name} {self.base.version}  statement sha256:{self.base.statement_sha256}")
        for a in self.authorities:
            extra = (f" certificate serial {a.serial}" if a.serial else "") + (
                f" notAfter {_rfc3339(a.not_after)}" if a.not_after else "")
            lines.append(f"  signed by {a.authority}: key {a.keyid}{extra}")
        lines += [f"  image {i.local}" for i in self.images]
        return "\n".join(lines) + "\n"

    def names_image(self, query: str) -> bool:
        """True if this record's bundle carried the image `query`: a digest (sha256:..., of the index or
        of one platform's manifest), a reference pinned by digest (as `kubectl get pods` reports
        imageID), or a local reference by name."""
        digest = query[query.index("sha256:"):] if "sha256:" in query else None
        for image in self.images:
            if digest is not None and digest in (image.digest, *image.platforms):
                return True
            if query in (image.local, image.local.split("@", 1)[0]):
                return True
        return False

    def to_bytes(self) -> bytes:
        """The record as written to verification.json (one line, sorted keys, newline-terminated)."""
        return (json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")) + "\n").encode()

    @classmethod
    def from_json(cls, doc: Any, *, where: str = "record") -> VerificationRecord:
        """Parse a record, checking it against the schema first.

        Raises:
            InputError: the document is not a verification record.
        """
        error = jsonschema.exceptions.best_match(_validator().iter_errors(doc))
        if error is not None:
            at = "/".join(str(p) for p in error.absolute_path) or "(top level)"
            raise InputError(f"{where}: not a verification record: {at}: {error.message}",
                             hint="expected .airgap-bundle/verification.json or an audit log (one record per line)")
        bundle = doc["bundle"]
        try:
            authorities = tuple(AcceptedAuthority(a["authority"], a["keyid"], a.get("serial"),
                                                  _parse_time(a["notAfter"]) if a.get("notAfter") else None)
                                for a in doc["authorities"])
            time = _parse_time(doc["time"])
        except ValueError as e:  # the schema's pattern admits a 13th month; strptime does not
            raise InputError(f"{where}: not a verification record: {e}") from e
        return cls(
            bundle_sha256=bundle["sha256"], statement_sha256=doc["statementSha256"],
            policy_sha256=doc["policySha256"], authorities=authorities, time=time,
            tool_version=doc["tool"]["version"], action=doc["action"],
            destination=doc["destination"], image_count=doc["imageCount"],
            bundle_name=bundle.get("name"), bundle_version=bundle.get("version"),
            images=tuple(RecordedImage(i["local"], i["digest"], tuple(i.get("platforms", ())))
                         for i in doc.get("images", ())),
            base=RecordedBase(doc["base"]["statementSha256"], doc["base"]["name"], doc["base"]["version"])
            if "base" in doc else None,
        )


def record_for(result: VerificationResult, *, policy: Path | TrustPolicy, action: Action, destination: str,
               now: dt.datetime, bundle_sha256: str | None = None, image_count: int | None = None) -> VerificationRecord:
    """The record of an accepted verification.

    `policy` is the loaded `TrustPolicy` (its digest is of the very bytes that were parsed) or the
    policy file's path (hashed now). `bundle_sha256` defaults to the digest verification computed;
    `image_count` to the number of images of the verified statement.

    Raises:
        the result's failure (a VerificationError subclass) if the bundle was not accepted;
        InputError: the policy file cannot be read; ValueError: no bundle digest known.
    """
    require(result)
    bundle_sha256 = bundle_sha256 or result.bundle_sha256
    if not bundle_sha256 or not result.statement_sha256:
        raise ValueError("record_for needs the bundle's sha256: pass bundle_sha256= or a result from verify()")
    images = tuple(RecordedImage(i.local, i.bundled_digest, tuple(p.digest for p in i.platforms))
                   for i in result.bom.images) if result.bom else ()
    named = result.bom.base if result.bom else None  # an update is only accepted together with this base
    base = RecordedBase(named.statement_digest.removeprefix("sha256:"), named.name, named.version) if named else None
    return VerificationRecord(
        bundle_sha256=bundle_sha256, statement_sha256=result.statement_sha256,
        policy_sha256=policy.sha256 if isinstance(policy, TrustPolicy) else _file_sha256(policy),
        authorities=tuple(AcceptedAuthority(a.authority, a.keyid or "", a.serial, a.not_after)
                          for a in result.authorities if a.ok),
        time=now.astimezone(dt.UTC).replace(microsecond=0), tool_version=__version__, action=action,
        destination=destination, image_count=len(images) if image_count is None else image_count,
        bundle_name=result.bom.name if result.bom else None, bundle_version=result.bom.version if result.bom else None,
        images=images, base=base,
    )


def write_record(record: VerificationRecord, folder: Path) -> Path:
    """Write `folder/.airgap-bundle/verification.json` atomically (temp name, fsync, rename); return its path.

    Raises:
        ArchiveError: the folder cannot be written.
    """
    target = folder / RECORD_DIR / RECORD_NAME
    try:
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{RECORD_NAME}.", suffix=".partial")
        try:
            os.fchmod(fd, 0o644)
            with os.fdopen(fd, "wb") as f:
                f.write(record.to_bytes())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as e:
        raise ArchiveError(f"{target}: cannot write the verification record: {e.strerror or e}") from e
    return target


def check_log(log: Path) -> None:
    """Open (creating) the audit log for appending and close it: callers fail before doing any work
    when the log cannot be written, rather than after an extraction or push that then goes unrecorded.

    Raises:
        InputError: the log cannot be opened for appending.
    """
    os.close(_open_log(log))


def append_log(record: VerificationRecord, log: Path) -> None:
    """Append the record as one JSON line to `log` (created with its folders if missing).

    Opened with O_APPEND and never truncated; one write(2) per line, then fsync. When the log does not
    end with a newline (a line cut short by a crash), a newline is written first so the new record
    stays on its own line.

    Raises:
        InputError: the log cannot be opened or written.
    """
    fd = _open_log(log)
    try:
        line = record.to_bytes()
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError as e:
        raise InputError(f"{log}: cannot append to the audit log: {e.strerror or e}") from e
    finally:
        os.close(fd)


def _open_log(log: Path) -> int:
    # O_RDWR only to peek at the last byte; O_APPEND makes every write land at the end, whatever the offset.
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        return os.open(log, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise InputError(f"{log}: cannot open the audit log for appending: {e.strerror or e}",
                         hint="choose another --audit-log or fix the folder's permissions") from e


def read_records(path: Path, *, cap: int = MAX_LOG_BYTES) -> list[VerificationRecord]:
    """Read a verification.json (one record) or an audit log (JSON Lines; blank lines are skipped).

    Raises:
        InputError: unreadable, too large, not JSON (names the line), or not a record.
    """
    data = read_capped(path, cap, "verification records")
    records = []
    for number, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            doc = json.loads(line)
        except (ValueError, UnicodeDecodeError) as e:
            raise InputError(f"{where}: not a JSON line: {e}",
                             hint="an audit log holds one JSON record per line") from e
        records.append(VerificationRecord.from_json(doc, where=where))
    if not records:
        raise InputError(f"{path}: holds no verification record")
    return records


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(read_capped(path, MAX_POLICY_BYTES, "policy")).hexdigest()


def _rfc3339(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


@cache
def _validator() -> jsonschema.Draft202012Validator:
    text = resources.files("bundler").joinpath("schemas/verification-record.schema.json").read_text()
    return jsonschema.Draft202012Validator(json.loads(text))
