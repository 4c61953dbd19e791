"""Attestation bytes: the in-toto Statement v1 that becomes `bundle.intoto.json`, and the DSSE PAE.

Input: subjects and a predicate (plain JSON values built by `bom.py`). Output: bytes, serialised
once as RFC 8785 canonical JSON. Those exact bytes are stored in the bundle, hashed, signed and
verified; nothing downstream re-serialises them: sign bytes, not objects.

Specs:
- in-toto Statement v1: https://github.com/in-toto/attestation/blob/main/spec/v1/statement.md
- DSSE v1 PAE: https://github.com/secure-systems-lab/dsse/blob/master/protocol.md
- RFC 8785 JSON Canonicalization Scheme: https://www.rfc-editor.org/rfc/rfc8785

Does not decide what the predicate contains (that is `bom.py`), does not sign (`sign.py`), and does
no I/O. Importable by `verify.py`: nothing here can open a connection.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import rfc8785

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Subject:
    """One in-toto ResourceDescriptor subject: a name and its sha256 (64 lowercase hex)."""

    name: str
    sha256: str

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("subject name must not be empty")
        if not _HEX64.match(self.sha256):
            raise ValueError(f"subject {self.name}: sha256 must be 64 lowercase hex, got {self.sha256!r}")

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "digest": {"sha256": self.sha256}}


def strict_json(data: bytes) -> Any:
    """Parse JSON bytes, refusing duplicate keys in any object (a reader must not pick one of two
    values another reader would pick differently).

    Raises:
        ValueError (json.JSONDecodeError, UnicodeDecodeError, or a duplicate key).
    """
    return json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate key in JSON object")
    return dict(pairs)


def canonical_json(obj: Any) -> bytes:
    """RFC 8785 canonical bytes of a JSON value (sorted keys, no spaces, ECMAScript numbers)."""
    return bytes(rfc8785.dumps(obj))


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE v1 Pre-Authentication Encoding: the bytes a DSSE signature covers.

    PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body, with LEN as ASCII decimal
    of the byte length.
    """
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(body), body)


def _subject(s: Subject | Mapping[str, Any]) -> Subject:
    if isinstance(s, Subject):
        return s
    return Subject(str(s["name"]), str(s["digest"]["sha256"]))


def statement(subjects: Iterable[Subject | Mapping[str, Any]], predicate_type: str,
              predicate: Mapping[str, Any]) -> bytes:
    """Build an in-toto Statement v1 and serialise it once, canonically.

    `subjects` are `Subject`s or in-toto ResourceDescriptor dicts (`{"name", "digest": {"sha256"}}`,
    as `bom.Bom.subjects()` returns them). They are sorted by (name, digest) so the same inputs always
    give the same bytes.

    Raises:
        ValueError: no subjects, or two subjects with the same name (a programming error upstream).
    """
    ordered = sorted((_subject(s) for s in subjects), key=lambda s: (s.name, s.sha256))
    if not ordered:
        raise ValueError("an in-toto statement needs at least one subject")
    names = [s.name for s in ordered]
    if len(set(names)) != len(names):
        raise ValueError("duplicate subject names in statement")
    # in-toto Statement v1: _type, subject[], predicateType, predicate
    return canonical_json(
        {
            "_type": STATEMENT_TYPE,
            "subject": [s.to_json() for s in ordered],
            "predicateType": predicate_type,
            "predicate": dict(predicate),
        }
    )


SLSA_PROVENANCE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://airgap-bundle.dev/build/v1"
BUILDER_ID = "https://airgap-bundle.dev/builder/cli"


@dataclass(frozen=True, order=True)
class Dependency:
    """A SLSA resolved dependency (in-toto ResourceDescriptor): uri, sha256, optional name and annotations."""

    uri: str
    digest: str  # sha256:<hex>
    name: str | None = None
    annotations: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"uri": self.uri, "digest": {"sha256": self.digest.removeprefix("sha256:")}}
        if self.name:
            out["name"] = self.name
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


def provenance(*, subjects: Iterable[Subject | Mapping[str, Any]], spec: Mapping[str, Any], spec_digest: str,
               dependencies: Iterable[tuple[str, str] | Dependency], builder_version: str, epoch: int,
               lock: tuple[str, str] | None = None) -> bytes:
    """`provenance.intoto.json`: an in-toto Statement v1 with a SLSA provenance v1 predicate.

    The spec is the external parameters; every pulled image and chart, pinned by digest, is a resolved
    dependency (`(uri, "sha256:<hex>")`, or a `Dependency` with a name and annotations: a chart fetched
    by reference names its source and version). `lock` is the lock file the build used or wrote, as
    `(file name, "sha256:<hex of its bytes>")`: a parameter too (`externalParameters.lock`), so a
    customer can tell which lock built the bundle. Times are the build's SOURCE_DATE_EPOCH, so the
    bytes are reproducible. Spec: https://slsa.dev/spec/v1.0/provenance
    """
    resolved = {d if isinstance(d, Dependency) else Dependency(*d) for d in dependencies}
    created = dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    parameters: dict[str, Any] = {"spec": dict(spec), "specDigest": spec_digest}
    if lock is not None:
        parameters["lock"] = {"file": lock[0], "digest": lock[1]}
    predicate = {
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": parameters,
            "resolvedDependencies": [d.to_json() for d in sorted(resolved)],
        },
        "runDetails": {
            "builder": {"id": BUILDER_ID, "version": {"airgap-bundle": builder_version}},
            "metadata": {"startedOn": created, "finishedOn": created},
        },
    }
    return statement(subjects, SLSA_PROVENANCE_TYPE, predicate)
