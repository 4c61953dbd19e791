"""Offline verification of a bundle file: signatures against the policy first, then every member.

Input: a bundle path, a `keys.TrustPolicy` (trust comes only from local files) and `now`. Output: a
`VerificationResult` (one `AuthorityResult` per signature file, and the first failure if any);
`require(result)` raises that failure; `verify_and_extract(...)` also extracts, only after every
check passed. The steps follow docs/bundle-format.md section 6 (docs/design.md "Verify") and are labelled below:

0. trust from local files only; no vendor anchor means refuse (NoTrustAnchorError)
1. scan the tar headers only (archive.read_index refuses links, devices, `..`, duplicates, ...), with
   the work bounded by the statement: it is the first member, read (size-capped) as soon as its
   header is seen, and only the paths it lists and a few signature files are admitted after it. The
   first other member dooms the bundle and stops the scan, so a hostile file with a million appended
   members costs no more than an honest one (the statement's paths are read here, not yet trusted)
2. read `signatures/*` into memory, size-capped
3. verify each signature: shape, payload == statement bytes, key or certificate chain to an anchor,
   certificate valid now, signature over the DSSE PAE; log each accepted one
4. policy: a valid vendor signature always, others where required; an invalid signature claiming a
   configured authority fails the bundle
5. only now check the statement's form and content; stream the whole file once, every listed member
   through sha256 and the file itself too (`VerificationResult.bundle_sha256`, for the audit record)
6. (verify_and_extract) extract into a staging folder, hashing again, then rename into place; the
   caller's `extra` files (the verification record) go into the same staging folder

Steps 1-2 (`read_signed`), 3-4 (`check_signatures`) and the statement's check (`check_listing`) are
public so `inspect` reads and judges a bundle exactly as verify does, without hashing its members.

Specs: Sigstore bundle v0.3, DSSE v1, in-toto Statement v1, RFC 5280 (validity, issuance).

Offline is structural: this module imports nothing that can open a connection (no registry, render,
requests, subprocess, urllib.request, http); tests/test_verify.py enforces it. It never re-serialises
the statement: it compares and hashes the stored bytes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID

from . import archive, sign
from .attest import PAYLOAD_TYPE, STATEMENT_TYPE, canonical_json, pae, strict_json
from .bom import PREDICATE_TYPE as BOM_PREDICATE_TYPE
from .bom import BaseEntry, Bom
from .bundlefile import BundleBytes, opened
from .errors import (
    ArchiveError,
    BadSignatureError,
    BaseRequiredError,
    BundlerError,
    ExpiredKeyError,
    InputError,
    MissingAuthorityError,
    NoTrustAnchorError,
    NotYetValidError,
    StatementMismatchError,
    UnlistedMemberError,
    UnsignedBundleError,
    UntrustedKeyError,
    UsageError,
    VerificationError,
)
from .keys import (
    VENDOR,
    AuthorityPolicy,
    PublicKey,
    TrustPolicy,
    check_public_key,
    fingerprint,
    key_hint,
    verify_signature,
)

log = logging.getLogger(__name__)

MAX_STATEMENT_BYTES = 64 * 1024 * 1024
MAX_SIGNATURE_BYTES = 1024 * 1024
MAX_SIGNATURE_MEMBERS = 64  # far above any real set of co-signers; bounds a hostile scan
BLOBS_DIR = "images/blobs/sha256/"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
RESIGN_HINT = "re-sign the bundle with a current key or certificate: airgap-bundle sign BUNDLE --replace ..."


@dataclass(frozen=True)
class AuthorityResult:
    """The check of one signature file (TUF VerificationResult style: data, not an exception)."""

    authority: str
    ok: bool
    reason: str | None = None  # why it was not accepted, e.g. "certificate expired 2026-01-02T00:00:00+00:00"
    keyid: str | None = None  # key fingerprint, SHA256:<hex>
    serial: str | None = None  # certificate serial (hex), when a certificate was carried
    not_after: dt.datetime | None = None  # certificate or pinned-key end of validity
    configured: bool = True  # False: the policy does not name this authority, so it was not checked
    error: VerificationError | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"authority": self.authority, "ok": self.ok, "reason": self.reason, "keyid": self.keyid,
                "serial": self.serial, "notAfter": self.not_after.isoformat() if self.not_after else None,
                "configured": self.configured}


@dataclass(frozen=True)
class VerificationResult:
    """Outcome of `verify`: per-authority results and the first failure (None when the bundle passed)."""

    authorities: tuple[AuthorityResult, ...]
    required: frozenset[str]
    failure: BundlerError | None = field(default=None, compare=False)
    statement_sha256: str | None = None
    members_checked: int = 0
    bundle_sha256: str | None = None  # the whole file, hashed in the same pass that checked the members
    bom: Bom | None = field(default=None, compare=False, repr=False)  # the predicate, once it verified
    # name -> (size, sha256 hex) of every member (statement and signatures included), for extraction.
    verified_files: tuple[tuple[str, int, str], ...] = field(default=(), compare=False, repr=False)

    @property
    def missing(self) -> frozenset[str]:
        """Required authorities with no accepted signature."""
        return self.required - {a.authority for a in self.authorities if a.ok}

    def __bool__(self) -> bool:
        return self.failure is None and not self.missing

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": bool(self),
            "failure": None if self.failure is None else {
                "error": type(self.failure).__name__, "exitCode": self.failure.exit_code, "message": str(self.failure)},
            "required": sorted(self.required),
            "authorities": [a.to_json() for a in self.authorities],
            "statementSha256": self.statement_sha256,
            "bundleSha256": self.bundle_sha256,
            "membersChecked": self.members_checked,
        }


def require(result: VerificationResult) -> VerificationResult:
    """Return `result` if the bundle passed; raise its failure otherwise.

    Raises:
        VerificationError (a subclass naming the rejection), UnsafeArchiveError or ArchiveError.
    """
    if result.failure is not None:
        raise result.failure
    if result.missing:  # pragma: no cover - verify() records missing authorities as the failure
        raise MissingAuthorityError(f"missing required signatures: {', '.join(sorted(result.missing))}")
    return result


def verify(source: Path | str | BundleBytes, trust: TrustPolicy, *, now: dt.datetime) -> VerificationResult:
    """Verify a bundle offline: a file, or the bytes of one the caller holds open (a split bundle's
    parts, `parts.open_bundle`). Writes nothing.

    Raises (only for the caller's inputs; a bad bundle is a result with a `failure`):
        NoTrustAnchorError: the policy has no vendor anchor.
        InputError: the bundle file cannot be opened.
    """
    _check_trust(trust)
    with opened(source) as (f, where):
        return _verify_open(f, where, trust, _utc(now))


def verify_file(f: BundleBytes, where: str, trust: TrustPolicy, *, now: dt.datetime,
                allow_update: bool = False) -> VerificationResult:
    """`verify` on a bundle the caller holds open, so that what it then reads (push streams blobs out
    of this very file) is the file that was checked, whatever happens to the path meanwhile.

    An update bundle (its predicate names a `base`) is refused with BaseRequiredError unless
    `allow_update`: only `update.py`, which then checks the base, passes it.

    Raises:
        NoTrustAnchorError: the policy has no vendor anchor.
    """
    _check_trust(trust)
    return _verify_open(f, where, trust, _utc(now), allow_update=allow_update)


def verify_and_extract(source: Path | str | BundleBytes, trust: TrustPolicy, dest: Path | str, *, now: dt.datetime,
                       extra: Callable[[VerificationResult], Mapping[str, bytes]] | None = None
                       ) -> VerificationResult:
    """Verify, then extract every member into the new folder `dest` (step 6); nothing is written on failure.

    `extra(result)`, called once the bundle is accepted, gives files to add to the extraction (the
    verification record): they are written into the staging folder with the members.

    Raises:
        the failure of `verify` (see `require`), UsageError if `dest` exists (a mistake in the command,
        not in the bundle), ArchiveError on I/O errors.
    """
    _check_trust(trust)
    dest = Path(dest)
    if dest.exists() or dest.is_symlink():  # checked first so a long verification is not wasted
        raise UsageError(f"{dest} already exists: a bundle is extracted only into a new folder",
                         hint="name a folder that does not exist yet; nothing was verified or written")
    with opened(source) as (f, where):  # the same open file for checking and extracting: swapping the path
        result = require(_verify_open(f, where, trust, _utc(now)))  # midway changes nothing
        # 6: extract into staging while hashing again, then rename into place
        archive.extract(f, dest, {name: (size, sha) for name, size, sha in result.verified_files},
                        extra=extra(result) if extra else None)
    return result


# --------------------------------------------------------------------------------------------------


def _utc(now: dt.datetime) -> dt.datetime:
    return now if now.tzinfo else now.replace(tzinfo=dt.UTC)


def _check_trust(trust: TrustPolicy) -> None:
    # 0: trust comes only from the policy the caller loaded from local files; no vendor anchor, no go.
    vendor = trust.authorities.get(VENDOR)
    if vendor is None or not vendor.has_anchor:  # pragma: no cover - TrustPolicy refuses this on construction
        raise NoTrustAnchorError("the verification policy has no vendor trust anchor",
                                 hint="configure the vendor root CA or public key in the policy")


def scan(f: BundleBytes, where: str) -> tuple[archive.BundleIndex, bytes, dict[str, Any]]:
    """Scan a bundle's headers with work and memory bounded by its statement; return the index, the
    statement bytes (read once, capped) and the JSON object they parse to (parsed once, here; neither
    is trusted yet: step 5, `check_listing`, checks them).

    The statement must be the first member. Its `predicate.files` paths (read here to bound the
    scan) and up to MAX_SIGNATURE_MEMBERS signature files are the only members admitted after it:
    any other member dooms the bundle, so the scan stops there rather than reading every header of a
    file with members appended. `inspect` and `push` scan with this too.

    Raises:
        VerificationError: no statement first (not a bundle).
        StatementMismatchError: the statement is not JSON with a files list, so nothing can bound the scan.
        UnlistedMemberError: a member the statement does not list, or too many signature files.
        ArchiveError, UnsafeArchiveError: from archive.read_index.
    """
    bound = _ScanBound(where)
    index = archive.read_index(f, admit=bound)
    if bound.statement is None:
        raise VerificationError(f"{where}: no {archive.STATEMENT}: not an airgap bundle")
    return index, bound.statement, bound.document


@dataclass
class _ScanBound:
    """The `admit` callback of `scan`: remembers the statement and what it lets in."""

    where: str
    statement: bytes | None = None
    document: dict[str, Any] = field(default_factory=dict)  # `statement` parsed, once it is read
    listed: frozenset[str] = frozenset()
    signature_files: int = 0

    def __call__(self, f: BundleBytes, member: archive.Member) -> None:
        if self.statement is None:
            if member.name != archive.STATEMENT:
                raise VerificationError(f"{self.where}: the first member is {member.name!r}, not "
                                        f"{archive.STATEMENT}: not an airgap bundle")
            self.statement = archive.read_member(f, member, cap=MAX_STATEMENT_BYTES)
            self.document, self.listed = _parse_statement(self.statement)
        elif member.name.startswith(archive.SIGNATURES_DIR):
            self.signature_files += 1
            if self.signature_files > MAX_SIGNATURE_MEMBERS:
                raise UnlistedMemberError(f"{self.where}: more than {MAX_SIGNATURE_MEMBERS} members under "
                                          f"{archive.SIGNATURES_DIR}", hint="refusing the bundle")
        elif member.name not in self.listed:
            raise UnlistedMemberError(f"{self.where}: member {member.name} is not listed in the statement",
                                      hint="a file was added or renamed after signing; refusing the bundle")


def _parse_statement(statement: bytes) -> tuple[dict[str, Any], frozenset[str]]:
    """The one parse of an untrusted statement, and its `predicate.files[].path` strings (step 5 checks
    the rest). Getting the paths proves the shape step 5 relies on: the statement and its predicate are
    JSON objects, and every entry of `files` is an object with a `path`."""
    try:
        doc = strict_json(statement)
        files = doc["predicate"]["files"]
        return doc, frozenset(entry["path"] for entry in files if isinstance(entry["path"], str))
    except (ValueError, KeyError, TypeError) as e:  # ValueError: also not UTF-8 (UnicodeDecodeError)
        raise StatementMismatchError(f"{archive.STATEMENT}: no readable predicate.files ({type(e).__name__})",
                                     hint="this is not a bundle statement; refusing the bundle") from e


@dataclass(frozen=True)
class SignedParts:
    """What steps 1-2 read: the header index, the statement (its bytes and the object they parse to, not
    yet checked) and each authority's signature file."""

    index: archive.BundleIndex
    statement: bytes
    document: dict[str, Any]  # `statement` parsed by the scan (see `_parse_statement`); checked by `check_listing`
    signatures: Mapping[str, bytes]  # authority -> bytes of signatures/<authority>.sigstore.json


def read_signed(f: BundleBytes, where: str) -> SignedParts:
    """Steps 1-2: the header scan bounded by the statement (`scan`), then the signature files, size-capped.

    `inspect` reads a bundle through this too, so it meets exactly verify's refusals.

    Raises:
        ArchiveError: not a tar, truncated, a member over its cap; UnsafeArchiveError: the header scan.
        VerificationError: no statement first (not an airgap bundle); StatementMismatchError and
            UnlistedMemberError: see `scan`.
    """
    # 1: headers only, bounded by the statement, which is read (capped) on the way
    index, statement, document = scan(f, where)
    # 2: the signature files into memory, capped
    signatures = {a: archive.read_member(f, m, cap=MAX_SIGNATURE_BYTES) for a, m in index.signatures.items()}
    return SignedParts(index, statement, document, signatures)


def check_signatures(parts: SignedParts, trust: TrustPolicy, now: dt.datetime,
                     where: str) -> tuple[tuple[AuthorityResult, ...], BundlerError | None]:
    """Steps 3-4: each signature on its own, then the policy. Returns the per-authority results and the
    failure (None when the policy accepts the signatures; the members are not looked at here)."""
    if not parts.signatures:
        return (), UnsignedBundleError(f"{where}: the bundle carries no signature",
                                       hint="the vendor signs at build time; ask for a signed bundle")
    results: list[AuthorityResult] = []
    # 3: each signature on its own
    for authority in sorted(parts.signatures):
        policy = trust.authorities.get(authority)
        if policy is None:
            results.append(AuthorityResult(authority, False, "authority not named in the policy: not checked",
                                           configured=False))
            continue
        result = check_signature_file(authority, parts.signatures[authority], parts.statement, policy, _utc(now))
        if result.ok:
            log.info("accepted signature: authority=%s key=%s serial=%s notAfter=%s", authority, result.keyid,
                     result.serial or "-", result.not_after.isoformat() if result.not_after else "-")
        results.append(result)

    # 4: policy
    for r in results:
        if r.configured and not r.ok and r.error is not None:
            return tuple(results), r.error
    accepted = {r.authority for r in results if r.ok}
    if VENDOR not in accepted:
        return tuple(results), MissingAuthorityError(f"{where}: no vendor signature",
                                                     hint="every bundle must be signed by the vendor at build time")
    missing = trust.required - accepted
    if missing:
        return tuple(results), MissingAuthorityError(
            f"{where}: required signature missing: {', '.join(sorted(missing))}",
            hint="the policy requires these co-signatures: airgap-bundle sign BUNDLE --authority NAME --key KEY")
    return tuple(results), None


def needs_base(where: str, base: BaseEntry) -> BaseRequiredError:
    """The refusal of an update bundle met without its base: it names the base and the fix."""
    return BaseRequiredError(f"{where} is an update bundle: it needs its base {base.describe()}",
                             hint="pass --base PREVIOUS.bundle.tar, the full bundle it was built against")


def _verify_open(f: BundleBytes, where: str, trust: TrustPolicy, now: dt.datetime, *,
                 allow_update: bool = False) -> VerificationResult:
    required = trust.required
    try:
        parts = read_signed(f, where)
    except (ArchiveError, VerificationError) as e:  # ArchiveError includes UnsafeArchiveError
        return VerificationResult((), required, failure=e)
    results, failure = check_signatures(parts, trust, now, where)
    if failure is not None:
        return VerificationResult(results, required, failure=failure)

    # 5: only now check the statement's form and content, then stream the members
    statement = parts.statement
    verified = [(archive.STATEMENT, len(statement), hashlib.sha256(statement).hexdigest())]
    verified += [(archive.signature_name(a), len(d), hashlib.sha256(d).hexdigest()) for a, d in parts.signatures.items()]
    try:
        files, bom = check_listing(parts, where)
        if bom.base is not None and not allow_update:  # before hashing: alone, it can never be accepted
            raise needs_base(where, bom.base)
        file_sha256 = _check_digests(f, parts.index, files, verified, where)
    except (VerificationError, ArchiveError) as e:
        return VerificationResult(results, required, failure=e)
    verified += [(name, size, sha) for name, (size, sha) in files.items()]
    return VerificationResult(results, required, None, hashlib.sha256(statement).hexdigest(),
                              len(files), file_sha256, bom, tuple(verified))


# --------------------------------------------------------------------------------------------------
# Step 3: one signature file


def _carried_certificates(parsed: sign.SignatureFile) -> list[x509.Certificate]:
    """The leaf (`certificate`), or the leaf and its intermediates (`x509CertificateChain`, leaf first)."""
    if not 1 <= len(parsed.certificates) <= MAX_INTERMEDIATES + 2:
        raise ValueError(f"x509CertificateChain must hold 1 to {MAX_INTERMEDIATES + 2} certificates")
    return [x509.load_der_x509_certificate(der) for der in parsed.certificates]


def check_signature_file(authority: str, data: bytes, statement: bytes | None, policy: AuthorityPolicy,
                         now: dt.datetime, *, member: str | None = None,
                         payload_type: str = PAYLOAD_TYPE) -> AuthorityResult:
    """Step 3 for one signature file of `authority`, judged against that authority's `policy`.

    `statement` None: the envelope's payload is taken as it is, not compared with a statement (a
    split bundle's parts index, whose signature file carries the index itself, bundler/parts.py).
    `member` names the file in messages (default: the bundle member of `authority`).
    """
    def reject(error: VerificationError, **extra: Any) -> AuthorityResult:
        return AuthorityResult(authority, False, error.message, error=error, **extra)

    member = member or f"signatures/{authority}.sigstore.json"
    # (3a) envelope shape: Sigstore bundle v0.3, DSSE, one signature
    try:
        parsed = sign.parse(data, payload_type=payload_type)
    except ValueError as e:
        return reject(BadSignatureError(f"{member}: malformed signature file: {e}",
                                        hint="not a Sigstore bundle v0.3 with a DSSE envelope"))
    payload, signature = parsed.payload, parsed.signature
    # (3b) the payload is the statement, byte for byte
    if statement is not None and payload != statement:
        return reject(BadSignatureError(f"{member}: signs a different statement than the bundle's {archive.STATEMENT}",
                                        hint="the statement or the signature file was changed"))
    # (3c) key or certificate chain to a configured anchor, (3d) valid now
    serial: str | None = None
    not_after: dt.datetime | None = None
    candidates: list[tuple[PublicKey, dt.datetime | None]]  # each key to try, with its own end of validity
    try:
        if parsed.material != "publicKey":
            leaf, *intermediates = _carried_certificates(parsed)
            key = check_public_key(leaf.public_key(), what=member)
            serial, not_after = format(leaf.serial_number, "x"), leaf.not_valid_after_utc
            _check_chain(authority, member, leaf, tuple(intermediates), policy, now)
            candidates = [(key, not_after)]
        else:
            hint = parsed.hint
            # sigstore-go's hint form, or the fingerprint form of bundles signed before it; no hint: try all
            pinned = ([k for k in policy.keys if hint in (key_hint(k.public_key), k.fingerprint)]
                      or ([] if hint else list(policy.keys)))
            if not pinned:
                raise UntrustedKeyError(f"{member}: signed by key {hint}, which the policy does not trust "
                                        f"for {authority}", hint="add the key to the policy or ask for a correct signature")
            live = [k for k in pinned if k.not_after is None or now <= k.not_after]
            if not live:
                not_after = pinned[0].not_after
                raise ExpiredKeyError(f"{member}: the pinned key {pinned[0].fingerprint} for {authority} expired "
                                      f"{not_after.isoformat() if not_after else ''}; re-sign", hint=RESIGN_HINT)
            candidates = [(k.public_key, k.not_after) for k in live]
    except VerificationError as e:
        return reject(e, serial=serial, not_after=not_after)
    except (ValueError, TypeError, InputError) as e:  # ValueError: also bad base64 (binascii.Error)
        return reject(BadSignatureError(f"{member}: unreadable key material: {e}"))
    # (3e) signature over DSSE PAE(payloadType, payload)
    signed = pae(payload_type, payload)
    for key, key_not_after in candidates:
        if verify_signature(key, signature, signed):
            return AuthorityResult(authority, True, None, fingerprint(key), serial, key_not_after)
    key, key_not_after = candidates[0]
    return reject(BadSignatureError(f"{member}: the signature does not verify",
                                    hint="the statement or signature was altered, or the wrong key signed"),
                  keyid=fingerprint(key), serial=serial, not_after=key_not_after)


MAX_INTERMEDIATES = 4  # CAs between a signing certificate and a root; enterprise PKIs use one or two


def _check_chain(authority: str, member: str, leaf: x509.Certificate, intermediates: tuple[x509.Certificate, ...],
                 policy: AuthorityPolicy, now: dt.datetime) -> None:
    """Build the path leaf -> carried intermediates (untrusted) -> a configured root of this authority,
    then apply the same rules at every level: each issuer a CA allowed to sign certificates, within its
    path length constraint, and every certificate valid at `now`."""
    path = _build_path(leaf, intermediates, policy.roots)
    if path is None:
        carried = f" through {len(intermediates)} carried intermediate certificate(s)" if intermediates else ""
        raise UntrustedKeyError(
            f"{member}: certificate {leaf.subject.rfc4514_string()} (issuer {leaf.issuer.rfc4514_string()}) "
            f"does not chain{carried} to a root the policy trusts for {authority}",
            hint="configure that authority's root CA in the policy, or ask for a certificate it issued")
    # Also for a pinned certificate (a path of one): a root CA's own key signing directly is not a leaf.
    _check_leaf_usage(member, leaf)
    for below, ca in enumerate(path[1:]):
        _check_ca_usage(member, ca, below)
    for i, cert in enumerate(path):
        last = i == len(path) - 1
        what = "signing certificate" if i == 0 else "root CA certificate" if last else "intermediate CA certificate"
        if now > cert.not_valid_after_utc:
            hint = "the policy's root has expired; update the policy" if last and i else RESIGN_HINT
            raise ExpiredKeyError(f"{member}: {what} serial {cert.serial_number:x} expired "
                                  f"{cert.not_valid_after_utc.isoformat()}; re-sign the bundle", hint=hint)
        if now < cert.not_valid_before_utc:
            raise NotYetValidError(f"{member}: {what} serial {cert.serial_number:x} is not valid before "
                                   f"{cert.not_valid_before_utc.isoformat()}",
                                   hint="check this machine's clock, or wait until the certificate is valid")


def _build_path(leaf: x509.Certificate, intermediates: tuple[x509.Certificate, ...],
                roots: tuple[x509.Certificate, ...]) -> list[x509.Certificate] | None:
    """[leaf, intermediates..., root] with a configured root at the end, or None.

    A carried copy of a root is ignored (roots come from the policy only), as the Sigstore bundle
    spec asks of verifiers meeting superfluous CA certificates."""
    if leaf in roots:  # a pinned self-signed leaf
        return [leaf]
    path = [leaf]
    pool = [c for c in intermediates if c not in roots]
    while len(path) <= MAX_INTERMEDIATES + 1:
        root = _issuer_among(path[-1], roots)
        if root is not None:
            return [*path, root]
        issuer = _issuer_among(path[-1], tuple(c for c in pool if c not in path))
        if issuer is None:
            return None
        path.append(issuer)
    return None


def _issuer_among(cert: x509.Certificate, candidates: tuple[x509.Certificate, ...] | list[x509.Certificate],
                  ) -> x509.Certificate | None:
    for candidate in candidates:
        if candidate.subject != cert.issuer or not _is_ca(candidate):
            continue
        try:
            cert.verify_directly_issued_by(candidate)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return candidate
    return None


def _check_ca_usage(member: str, ca: x509.Certificate, below: int) -> None:
    """An issuing CA: keyUsage, if present, allows keyCertSign; its pathLenConstraint admits the
    `below` intermediate CAs between it and the signing certificate (RFC 5280 4.2.1.3, 4.2.1.9)."""
    name = ca.subject.rfc4514_string()
    constraint = ca.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length
    if constraint is not None and below > constraint:
        raise UntrustedKeyError(f"{member}: CA {name} may issue through at most {constraint} intermediate CA(s) "
                                f"(pathLenConstraint), this chain has {below} below it",
                                hint="the vendor's PKI issued outside its constraints; ask for a valid chain")
    try:
        usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not usage.key_cert_sign:
        raise UntrustedKeyError(f"{member}: CA {name} is not allowed to sign certificates (keyUsage)",
                                hint="the vendor's PKI issued outside its constraints; ask for a valid chain")


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _check_leaf_usage(member: str, leaf: x509.Certificate) -> None:
    if _is_ca(leaf):
        raise UntrustedKeyError(f"{member}: the signing certificate is a CA certificate",
                                hint="sign with a leaf certificate issued by the root, not the root's key")
    try:
        ku = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
        if not ku.digital_signature:
            raise UntrustedKeyError(f"{member}: the certificate's key usage does not allow signatures")
    except x509.ExtensionNotFound:
        pass
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ExtendedKeyUsageOID.CODE_SIGNING not in eku and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in eku:
            raise UntrustedKeyError(f"{member}: the certificate's extended key usage does not include codeSigning")
    except x509.ExtensionNotFound:
        pass


# --------------------------------------------------------------------------------------------------
# Step 5: the statement against the members


def check_listing(parts: SignedParts, where: str) -> tuple[dict[str, tuple[int, str]], Bom]:
    """Check the statement the scan parsed against the headers (names and sizes) and its own schema and
    consistency rules; return {path: (size, sha256)} of the payload and the predicate. The member
    bytes are hashed by `_check_digests`; `inspect` stops here (it reads no payload). A member the
    statement does not list never gets here: the scan refused it.

    Raises:
        StatementMismatchError, UnlistedMemberError, UnsafeArchiveError (an unsafe listed path).
    """

    def mismatch(msg: str) -> StatementMismatchError:
        return StatementMismatchError(f"{archive.STATEMENT}: {msg}",
                                      hint="the statement does not describe this bundle; rebuild it")

    index, doc = parts.index, parts.document  # an object whose predicate is an object (`_parse_statement`)
    if canonical_json(doc) != parts.statement:
        raise mismatch("not in RFC 8785 canonical form")
    if doc.get("_type") != STATEMENT_TYPE:
        raise mismatch(f"_type is not {STATEMENT_TYPE}")
    if doc.get("predicateType") != BOM_PREDICATE_TYPE:
        raise mismatch(f"predicateType {doc.get('predicateType')!r} is not {BOM_PREDICATE_TYPE}")
    predicate = doc["predicate"]
    listing = predicate["files"]
    if not isinstance(listing, list):
        raise mismatch("predicate.files is missing")

    listed: dict[str, tuple[int, str]] = {}
    for i, entry in enumerate(listing):  # each entry an object with a path (`_parse_statement`)
        if (not isinstance(entry.get("path"), str)
                or not isinstance(entry.get("size"), int) or isinstance(entry.get("size"), bool)
                or entry["size"] < 0 or not isinstance(entry.get("sha256"), str) or not _HEX64.match(entry["sha256"])):
            raise mismatch(f"predicate.files[{i}] is not {{path, size, sha256}}")
        path = entry["path"]
        archive.check_name(path, where=archive.STATEMENT)
        if path == archive.STATEMENT or path.startswith(archive.SIGNATURES_DIR):
            raise mismatch(f"predicate.files lists {path!r}, which is never a payload member")
        if path in listed:
            raise UnlistedMemberError(f"{archive.STATEMENT}: {path} is listed twice in predicate.files",
                                      hint="each member is listed once")
        listed[path] = (entry["size"], entry["sha256"])

    signature_names = {m.name for m in index.signatures.values()}
    for m in index.members:
        if m.name.startswith(archive.SIGNATURES_DIR) and m.name not in signature_names:
            raise UnlistedMemberError(f"{where}: {m.name} is not signatures/<authority>.sigstore.json")
    payload = {m.name: m for m in index.payload}  # all listed: the scan stopped at any other member
    missing = sorted(set(listed) - set(payload))
    if missing:
        raise UnlistedMemberError(f"{where}: {missing[0]} is listed in the statement but not in the bundle"
                                  + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
                                  hint="a file was removed or renamed after signing; refusing the bundle")
    for name, m in payload.items():
        if m.size != listed[name][0]:
            raise UnlistedMemberError(f"{where}: {name} has {m.size} bytes, the statement says {listed[name][0]}")

    try:
        bom = Bom.from_dict(predicate)  # predicate schema (schemas/bom-predicate.schema.json)
    except VerificationError as e:
        raise mismatch(f"predicate: {e.message}") from e
    _check_subjects(doc, bom, listed, mismatch)
    return listed, bom


def _check_digests(f: BundleBytes, index: archive.BundleIndex, listed: dict[str, tuple[int, str]],
                   read: list[tuple[str, int, str]], where: str) -> str:
    """Stream the whole file once (archive order, sequential reads): every payload member must hash to
    its listed sha256, and the statement and signatures to the bytes steps 2-3 checked. Returns the
    sha256 of the whole file, which then names exactly the bytes that were verified."""
    file_sha256, digests = archive.digest_all(f, index)
    for name, (_, sha) in listed.items():
        if digests[name] != sha:
            raise UnlistedMemberError(f"{where}: {name} hashes to sha256:{digests[name]}, "
                                      f"the statement says sha256:{sha}",
                                      hint="the member was changed after signing; refusing the bundle")
    for name, _, sha in read:
        if digests[name] != sha:
            raise UnlistedMemberError(f"{where}: {name} changed while the bundle was being verified",
                                      hint="the bundle file is being modified; verify a stable copy")
    return file_sha256


def _base_listing(bom: Bom, listed: dict[str, tuple[int, str]], mismatch: Any) -> dict[str, tuple[int, str]]:
    """An update's `base.files` (docs/bundle-format.md section 7): image blobs only, each listed once,
    none also carried. Whether the base holds them is `update.py`'s check, with the base at hand."""
    taken: dict[str, tuple[int, str]] = {}
    for entry in bom.base.files if bom.base is not None else ():
        if not entry.path.startswith(BLOBS_DIR) or entry.path in listed or entry.path in taken:
            raise mismatch(f"predicate.base.files lists {entry.path!r}: only image blobs the update does not "
                           "carry, each once")
        taken[entry.path] = (entry.size, entry.sha256)
    return taken


def _check_subjects(doc: dict[str, Any], bom: Bom, listed: dict[str, tuple[int, str]], mismatch: Any) -> None:
    """Subjects and predicate must describe the members: see docs/bundle-format.md "Consistency"."""
    subjects = doc.get("subject")
    if not isinstance(subjects, list) or not subjects:
        raise mismatch("no subject")
    listed = {**listed, **_base_listing(bom, listed, mismatch)}  # rules 3-4 count what the base supplies
    pairs: set[tuple[str, str]] = set()
    for i, s in enumerate(subjects):
        digest = s.get("digest") if isinstance(s, dict) else None
        sha = digest.get("sha256") if isinstance(digest, dict) else None
        if not isinstance(s, dict) or not isinstance(s.get("name"), str) or not isinstance(sha, str) or not _HEX64.match(sha):
            raise mismatch(f"subject[{i}] is not {{name, digest: {{sha256}}}}")
        name = s["name"]
        if name in listed:  # a file subject (a chart): its digest is the member's
            if listed[name][1] != sha:
                raise mismatch(f"subject {name} has sha256:{sha}, the member has sha256:{listed[name][1]}")
        elif BLOBS_DIR + sha not in listed:  # an image subject: the bundle carries that index or manifest
            raise mismatch(f"subject {name}: sha256:{sha} is not carried under {BLOBS_DIR}")
        pairs.add((name, sha))
    # OCI image-layout: blobs/<alg>/<hex> holds the bytes whose digest is <hex>
    for path, (_, sha) in listed.items():
        if path.startswith(BLOBS_DIR) and path[len(BLOBS_DIR):] != sha:
            raise mismatch(f"{path} is listed with sha256:{sha}, not the digest its name states")
    # The predicate's images and charts are exactly the subjects (bom.Bom.subjects is the writer's rule).
    described: set[tuple[str, str]] = set()
    for image in bom.images:
        name, _, pinned = image.local.partition("@")
        if pinned and pinned != image.bundled_digest:
            raise mismatch(f"image {image.local} is pinned to another digest than its bundled {image.bundled_digest}")
        described.add((name, image.bundled_digest.removeprefix("sha256:")))
    for chart in bom.charts:
        if chart.path not in listed:
            raise mismatch(f"chart {chart.name} {chart.version}: {chart.path} is not a listed member")
        described.add((chart.path, chart.digest.removeprefix("sha256:")))
    if described != pairs:
        diff = sorted(described ^ pairs)[0]
        side = "a subject but not in the predicate" if diff in pairs else "in the predicate but not a subject"
        raise mismatch(f"{diff[0]}@sha256:{diff[1]} is {side}")
