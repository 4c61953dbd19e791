"""Look inside a bundle without extracting it, and say which of what it shows was checked.

Input: a bundle path, optionally a `keys.TrustPolicy`, and `now`. Output: an `Inspection`: the
statement's predicate (name, version, images, charts, manifests, Kustomize overlays, Crossplane
packages), each signature file described (authority, key fingerprint, certificate subject, issuer,
serial, notAfter, days left) and, with a policy, judged exactly as `verify` judges it; totals.

Reads only what `verify` reads first, through the same functions: the tar headers (the same hostile-input
scan), the statement and the signature files, size-capped (`verify.read_signed`); then the statement is
checked against the headers, its schema and its consistency rules (`verify.check_listing`). It never
reads a payload member and never writes anything.

What is and is not checked, in the result (`Inspection.trust`):
- without a policy, signatures are parsed, not verified: every fact comes from unauthenticated bytes;
- with a policy and an accepted verdict, the statement is authentic, but the members' contents were
  not hashed (`verify` does that): only their names and sizes were compared with the statement.
A key fingerprint taken from a `publicKey` hint (not from a certificate) is what the file claims.

Shape of `to_json()`: `schemas/inspection.schema.json` (docs/inspect-and-audit.md).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from . import archive, sign, verify
from .bom import Bom
from .bundlefile import BundleBytes, opened
from .errors import BundlerError, InputError
from .keys import TrustPolicy, check_public_key, fingerprint

API_VERSION = "airgap-bundle.dev/v1"
KIND = "BundleInspection"
Status = Literal["unchecked", "accepted", "rejected", "not-in-policy"]
Trust = Literal["unverified", "signed", "rejected"]


@dataclass(frozen=True)
class SignatureInfo:
    """One signature file, as read; `status` says whether a policy judged it."""

    authority: str
    status: Status
    reason: str | None = None  # why the policy rejected it or did not check it
    problems: tuple[str, ...] = ()  # what is wrong with the file itself, seen without a policy
    keyid: str | None = None  # SHA256:<hex>
    key_from: Literal["certificate", "hint", "policy"] | None = None
    subject: str | None = None
    issuer: str | None = None
    serial: str | None = None
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None
    days_left: int | None = None  # whole days until notAfter; negative once expired
    signs_statement: bool | None = None  # the DSSE payload is the statement's bytes
    intermediates: int = 0  # intermediate CA certificates carried with the leaf (x509CertificateChain)


@dataclass(frozen=True)
class Overlay:
    """A Kustomize delivery path: `kustomize/<name>/overlay/` over `kustomize/<name>/tree/`."""

    name: str
    path: str
    tree_files: int


@dataclass(frozen=True)
class Inspection:
    path: str
    file_size: int
    member_count: int
    statement_sha256: str
    bom: Bom
    listed: Mapping[str, tuple[int, str]]  # payload path -> (size, sha256) as the statement lists them
    signatures: tuple[SignatureInfo, ...]
    now: dt.datetime
    policy: str | None = None
    policy_sha256: str | None = None
    failure: BundlerError | None = None  # the policy's rejection, if a policy was given and rejected

    @property
    def trust(self) -> Trust:
        if self.policy is None:
            return "unverified"
        return "rejected" if self.failure is not None else "signed"

    @property
    def notes(self) -> tuple[str, ...]:
        """What the reader must know about how far the facts shown were checked."""
        if self.trust == "unverified":
            return ("UNVERIFIED: no policy was given; signatures were parsed, not verified, so nothing "
                    "shown is authenticated",
                    "member names and sizes were compared with the statement; member contents were not hashed",
                    "run `airgap-bundle verify BUNDLE --policy POLICY.yaml` before trusting any of it")
        if self.trust == "rejected":
            return (f"REJECTED by the policy: {self.failure}",
                    "nothing shown is authenticated: it is what the statement claims")
        return ("the statement is signed and the policy accepts its signatures: the facts shown are authentic",
                "member names and sizes were compared with the statement; member contents were not hashed "
                "(`airgap-bundle verify` does that)")

    @property
    def overlays(self) -> tuple[Overlay, ...]:
        out = []
        for path in sorted(self.listed):
            parts = path.split("/")
            if len(parts) == 4 and parts[0] == "kustomize" and parts[2:] == ["overlay", "kustomization.yaml"]:
                tree = f"kustomize/{parts[1]}/tree/"
                out.append(Overlay(parts[1], f"kustomize/{parts[1]}/overlay",
                                   sum(1 for p in self.listed if p.startswith(tree))))
        return tuple(out)

    def totals(self) -> dict[str, int]:
        blobs = [size for path, (size, _) in self.listed.items() if path.startswith(verify.BLOBS_DIR)]
        return {
            "images": len(self.bom.images),
            "platforms": sum(len(i.platforms) for i in self.bom.images),
            "charts": len(self.bom.charts),
            "manifests": len(self.bom.manifests),
            "kustomizeOverlays": len(self.overlays),
            "crossplanePackages": len(self.bom.crossplane_packages),
            "files": len(self.listed),
            "payloadBytes": sum(size for size, _ in self.listed.values()),
            "imageBlobs": len(blobs),
            "imageBlobBytes": sum(blobs),
            "signatures": len(self.signatures),
            "bundleBytes": self.file_size,
        }

    def to_json(self) -> dict[str, Any]:
        """The documented, stable shape (schemas/inspection.schema.json): fields are only ever added."""
        b = self.bom
        return {
            "apiVersion": API_VERSION, "kind": KIND,
            "bundle": {"path": self.path, "size": self.file_size, "members": self.member_count,
                       "statementSha256": self.statement_sha256},
            "trust": {"statement": self.trust, "policy": self.policy, "policySha256": self.policy_sha256,
                      "signaturesVerified": self.policy is not None, "membersHashed": False,
                      "failure": None if self.failure is None else {
                          "error": type(self.failure).__name__, "exitCode": self.failure.exit_code,
                          "message": str(self.failure)},
                      "notes": list(self.notes)},
            "name": b.name, "version": b.version, "created": b.created_rfc3339,
            "tool": {"name": "airgap-bundle", "version": b.tool_version},
            "specDigest": b.spec_digest, "localRegistry": b.local_registry,
            "images": [{
                "source": i.source, "normalized": i.normalized, "local": i.local,
                "bundledDigest": i.bundled_digest, "upstreamDigest": i.upstream_digest,
                "narrowed": i.bundled_digest != i.upstream_digest, "mediaType": i.media_type,
                "platforms": [{"platform": p.platform, "digest": p.digest, "manifestSize": p.size}
                              for p in i.platforms],
                "attestations": list(i.attestations),
                "exemptions": [{"platform": p, "reason": r} for p, r in i.exemptions],
            } for i in b.images],
            "charts": [{"name": c.name, "version": c.version, "path": c.path, "digest": c.digest,
                        "size": self.listed[c.path][0], "valuesOverride": c.values_override}
                       for c in b.charts],
            "manifests": [{"path": m.path, "source": m.source,
                           "size": self.listed[m.path][0] if m.path in self.listed else None} for m in b.manifests],
            "kustomizeOverlays": [{"name": o.name, "path": o.path, "treeFiles": o.tree_files} for o in self.overlays],
            "crossplanePackages": [{"ref": p.ref, "kind": p.kind, "local": p.local} for p in b.crossplane_packages],
            "signatures": [_signature_json(s) for s in self.signatures],
            "update": None if b.base is None else {
                "base": {"statementDigest": b.base.statement_digest, "name": b.base.name, "version": b.base.version},
                "blobsFromBase": len(b.base.files), "bytesFromBase": sum(f.size for f in b.base.files)},
            "totals": self.totals(),
        }


def inspect(source: Path | str | BundleBytes, *, now: dt.datetime, trust: TrustPolicy | None = None) -> Inspection:
    """Read a bundle's headers, statement and signatures; with `trust`, judge the signatures as verify does.

    A policy rejection is not raised: it is `Inspection.failure` (the caller shows the report, then
    fails with it).

    Raises:
        InputError: the file cannot be opened.
        ArchiveError, UnsafeArchiveError: not a tar, truncated, hostile headers (verify's scan).
        VerificationError: no statement; StatementMismatchError, UnlistedMemberError: the statement
            is malformed or does not describe the members.
    """
    now = now if now.tzinfo else now.replace(tzinfo=dt.UTC)
    with opened(source) as (f, path):
        parts = verify.read_signed(f, path)
    results: Mapping[str, verify.AuthorityResult] = {}
    failure = None
    if trust is not None:
        checked, failure = verify.check_signatures(parts, trust, now, path)
        results = {r.authority: r for r in checked}
    listed, bom = verify.check_listing(parts, path)
    return Inspection(
        path=path, file_size=parts.index.file_size, member_count=len(parts.index.members),
        statement_sha256=hashlib.sha256(parts.statement).hexdigest(), bom=bom, listed=listed,
        signatures=tuple(describe_signature(a, parts.signatures[a], parts.statement, now, results.get(a))
                         for a in sorted(parts.signatures)),
        now=now, policy=trust.source if trust is not None else None,
        policy_sha256=trust.sha256 if trust is not None else None, failure=failure)


def describe_signature(authority: str, data: bytes, statement: bytes, now: dt.datetime,
                       result: verify.AuthorityResult | None = None) -> SignatureInfo:
    """What a signature file says about its signer; with `result` (verify's judgement), its status."""
    problems: list[str] = []
    fields: dict[str, Any] = {}
    try:
        parsed = sign.parse(data)
    except ValueError as e:
        problems.append(f"malformed signature file: {e}")
    else:
        fields["signs_statement"] = parsed.payload == statement
        if not fields["signs_statement"]:
            problems.append("signs a different statement than this bundle's")
        if parsed.material == "publicKey":
            fields.update(keyid=_hint_fingerprint(parsed.hint), key_from="hint" if parsed.hint else None)
        else:  # a certificate, or a chain: the leaf first, then its intermediates
            try:
                cert = parsed.certificate()
                key = check_public_key(cert.public_key(), what=f"{authority} certificate")
            except (ValueError, InputError) as e:
                problems.append(f"unreadable certificate: {e}")
            else:
                fields.update(keyid=fingerprint(key), key_from="certificate", subject=cert.subject.rfc4514_string(),
                              issuer=cert.issuer.rfc4514_string(), serial=format(cert.serial_number, "x"),
                              not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
                              intermediates=len(parsed.certificates) - 1)
    status: Status = "unchecked"
    reason = None
    if result is not None:
        status = "accepted" if result.ok else "rejected" if result.configured else "not-in-policy"
        reason = result.reason
        if result.ok and fields.get("key_from") != "certificate":  # a pinned key: the policy names it
            fields.update(keyid=result.keyid, key_from="policy", not_after=result.not_after)
    not_after = fields.get("not_after")
    days_left = (not_after - now).days if not_after is not None else None
    return SignatureInfo(authority, status, reason, tuple(problems), days_left=days_left, **fields)


def _hint_fingerprint(hint: str) -> str | None:
    """A publicKey hint as a fingerprint (SHA256:<hex>): sigstore-go's form is the base64 of the same
    sha256 (keys.key_hint); bundles signed before it carry the fingerprint itself."""
    if not hint or hint.startswith("SHA256:"):
        return hint or None
    try:
        digest = base64.b64decode(hint, validate=True)
    except binascii.Error:
        return hint
    return "SHA256:" + digest.hex() if len(digest) == 32 else hint


def _signature_json(s: SignatureInfo) -> dict[str, Any]:
    def t(v: dt.datetime | None) -> str | None:
        return v.strftime("%Y-%m-%dT%H:%M:%SZ") if v else None

    return {"authority": s.authority, "member": archive.signature_name(s.authority), "status": s.status,
            "reason": s.reason, "problems": list(s.problems), "keyid": s.keyid, "keyFrom": s.key_from,
            "subject": s.subject, "issuer": s.issuer, "serial": s.serial, "notBefore": t(s.not_before),
            "notAfter": t(s.not_after), "daysLeft": s.days_left, "signsStatement": s.signs_statement,
            "intermediates": s.intermediates}


def render_text(ins: Inspection) -> str:
    """The human report: what the bundle claims, then how far that was checked, then the totals."""
    b, lines = ins.bom, list[str]()
    lines.append(f"bundle     {ins.path} ({ins.file_size:,} bytes, {ins.member_count} members)")
    lines.append(f"statement  sha256:{ins.statement_sha256}")
    for n, note in enumerate(ins.notes):
        lines.append(("trust      " if n == 0 else "           ") + note)
    lines += ["", f"name       {b.name} {b.version}, created {b.created_rfc3339}",
              f"tool       airgap-bundle {b.tool_version}, spec {b.spec_digest}",
              f"registry   {b.local_registry}"]
    if b.base is not None:  # alone, this bundle is refused by verify and push (exit 28)
        lines += [f"update     of {b.base.describe()}: takes {_n(len(b.base.files), 'image blob')} "
                  f"({sum(f.size for f in b.base.files):,} bytes) from it; verify and push it with --base "
                  "PREVIOUS.bundle.tar"]
    lines += ["", f"images ({len(b.images)})"]
    for i in b.images:
        lines.append(f"  {i.source}")
        lines.append(f"    local      {i.local}")
        same = "same as upstream" if i.bundled_digest == i.upstream_digest else f"upstream {i.upstream_digest}"
        lines.append(f"    bundled    {i.bundled_digest} ({same})")
        for p in i.platforms:
            lines.append(f"    platform   {p.platform:<14} {p.digest} (manifest {p.size:,} bytes)")
        if i.attestations:
            lines.append(f"    attested   {_n(len(i.attestations), 'attestation manifest')} kept with the index")
        for plat, why in i.exemptions:
            lines.append(f"    exempted   {plat}: {why}")
    lines.append(f"charts ({len(b.charts)})")
    for c in b.charts:
        lines.append(f"  {c.name} {c.version}  {c.path} ({ins.listed[c.path][0]:,} bytes) {c.digest}")
        lines.append(f"    values override {c.values_override or '(none)'}")
    lines.append(f"manifests ({len(b.manifests)})")
    lines += [f"  {m.path}  (from {m.source})" for m in b.manifests]
    lines.append(f"kustomize overlays ({len(ins.overlays)})")
    lines += [f"  {o.path}  (over {o.tree_files} files in kustomize/{o.name}/tree)" for o in ins.overlays]
    lines.append(f"crossplane packages ({len(b.crossplane_packages)})")
    lines += [f"  {p.kind} {p.ref}" + (f" -> {p.local}" if p.local else "") for p in b.crossplane_packages]
    lines.append(f"signatures ({len(ins.signatures)})")
    for s in ins.signatures:
        key = {"certificate": " (from its certificate)", "hint": " (the file's unauthenticated hint)",
               "policy": " (the policy's pinned key)", None: ""}[s.key_from]
        lines.append(f"  {s.authority:<10} {s.status:<13} key {s.keyid or '-'}{key}")
        if s.subject:
            chain = f" (+{_n(s.intermediates, 'intermediate CA')} carried)" if s.intermediates else ""
            lines.append(f"             certificate {s.subject}, issuer {s.issuer}, serial {s.serial}{chain}")
        if s.not_after:
            left = (f"{_n(s.days_left, 'day')} left" if s.days_left is not None and s.days_left >= 0
                    else f"EXPIRED {_n((ins.now - s.not_after).days, 'day')} ago")
            lines.append(f"             notAfter {s.not_after.strftime('%Y-%m-%dT%H:%M:%SZ')} ({left})")
        if s.reason:
            lines.append(f"             {s.reason}")
        lines += [f"             problem: {p}" for p in s.problems]
    t = ins.totals()
    lines += ["", f"totals     {_n(t['images'], 'image')} ({_n(t['platforms'], 'platform manifest')}), "
              f"{_n(t['charts'], 'chart')}, {_n(t['manifests'], 'manifest')}, "
              f"{_n(t['kustomizeOverlays'], 'Kustomize overlay')}, {_n(t['crossplanePackages'], 'Crossplane package')}, "
              f"{_n(t['signatures'], 'signature')}",
              f"           {_n(t['files'], 'payload file')}, {t['payloadBytes']:,} bytes; "
              f"{_n(t['imageBlobs'], 'image blob')}, {t['imageBlobBytes']:,} bytes"]
    return "\n".join(lines) + "\n"


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
