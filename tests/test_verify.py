"""Offline verification: every rejection with its own exit code, nothing left on disk, offline by construction."""

from __future__ import annotations

import ast
import base64
import datetime as dt
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bundler import archive, keys, sign, verify
from bundler.bom import FileEntry
from bundler.errors import (
    BadSignatureError,
    ExpiredKeyError,
    MissingAuthorityError,
    NoTrustAnchorError,
    NotYetValidError,
    StatementMismatchError,
    UnlistedMemberError,
    UnsafeArchiveError,
    UnsignedBundleError,
    UntrustedKeyError,
    VerificationError,
)
from tests.conftest import REPO
from tests.support.bundles import (
    LOCAL,
    NOW,
    Pki,
    build_bundle,
    describe,
    sha,
    small_payload,
    statement_for,
    tar_info,
    tar_with,
    without_hint,
    write_policy,
)
from tests.support.bundles import world as make_world

# No warning either: e.g. an unbuffered open() made line-buffered warns on the user's terminal.
pytestmark = pytest.mark.filterwarnings("error")


@pytest.fixture
def world(tmp_path: Path) -> dict:
    """Vendor root CA + short-lived vendor signing cert, a customer pinned Ed25519 key, and a policy."""
    return make_world(tmp_path)


def rejects(path: Path, trust: keys.TrustPolicy, error: type, code: int, tmp: Path, *, text: str = "") -> None:
    """verify_and_extract must raise `error` with exit `code`, and leave no extraction folder behind."""
    dest = tmp / "extracted"
    with pytest.raises(error) as info:
        verify.verify_and_extract(path, trust, dest, now=NOW)
    assert info.value.exit_code == code
    assert text.lower() in str(info.value).lower()
    assert not dest.exists()
    assert not [p for p in tmp.iterdir() if p.name.startswith(".extracted")], "staging folder left behind"
    result = verify.verify(path, trust, now=NOW)  # the non-raising form agrees
    assert not result and type(result.failure) is error


# --- accepted bundles ---------------------------------------------------------------------------------------


def test_vendor_and_customer_signed_bundle_verifies_and_extracts(world: dict) -> None:
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"], "customer": world["customer"]})
    dest = world["tmp"] / "out"
    result = verify.verify_and_extract(built.path, world["trust"], dest, now=NOW)
    assert result and result.members_checked == len(built.files)
    assert result.statement_sha256 == sha(built.statement)
    by_name = {a.authority: a for a in result.authorities}
    assert by_name["vendor"].ok and by_name["vendor"].serial == format(world["vendor"].certificate.serial_number, "x")
    assert by_name["vendor"].keyid == world["vendor"].fingerprint
    assert by_name["vendor"].not_after == world["vendor"].certificate.not_valid_after_utc
    assert by_name["customer"].ok and by_name["customer"].keyid == world["customer"].fingerprint
    for name, data in built.members.items():
        assert (dest / name).read_bytes() == data
        assert (dest / name).stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in world["tmp"].iterdir() if p.name.startswith(".")) == []


def test_cosigning_later_keeps_payload_bytes_and_verifies(world: dict) -> None:
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]})
    before = built.path.read_bytes()
    statement = archive.read_statement(built.path)
    archive.append_signature(built.path, "customer", sign.sign(statement, world["customer"], "customer"))
    after = built.path.read_bytes()
    assert after[: archive.read_index(io.BytesIO(before)).end] == before[: archive.read_index(io.BytesIO(before)).end]
    policy = write_policy(world["tmp"] / "strict.yaml", {"vendor": {"roots": [world["ca"][2]]},
                                                         "customer": {"required": True, "keys": [world["customer_pub"]]}})
    assert verify.verify(built.path, keys.load_trust(policy), now=NOW)


def test_signature_of_an_authority_not_in_the_policy_is_reported_not_checked(world: dict) -> None:
    stranger, _ = world["pki"].signer("stranger")
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"], "integrator-x": stranger})
    result = verify.require(verify.verify(built.path, world["trust"], now=NOW))
    other = next(a for a in result.authorities if a.authority == "integrator-x")
    assert not other.ok and not other.configured and "not named in the policy" in (other.reason or "")


@pytest.mark.parametrize("kind", ["ecdsa-p256", "ecdsa-p384", "ed25519", "rsa-3072"])
def test_every_key_type_verifies_with_a_pinned_key(tmp_path: Path, kind: str) -> None:
    pki = Pki(tmp_path / "pki")
    signer, pub = pki.signer("vendor", kind)
    built = build_bundle(tmp_path / "b.tar", {"vendor": signer})
    trust = keys.load_trust(write_policy(tmp_path / "p.yaml", {"vendor": {"keys": [pub]}}))
    assert verify.verify(built.path, trust, now=NOW)


# --- step 0: trust only from local configuration -----------------------------------------------------------


def test_policy_without_vendor_anchor_is_refused(world: dict) -> None:
    for spec in ({"customer": {"keys": [world["customer_pub"]]}}, {"vendor": {}}):
        with pytest.raises(NoTrustAnchorError) as info:
            keys.load_trust(write_policy(world["tmp"] / "p.yaml", spec))
        assert info.value.exit_code == 27


# --- step 3/4: signatures and policy ---------------------------------------------------------------------


def test_no_signature_at_all(world: dict) -> None:
    built = build_bundle(world["tmp"] / "b.tar", {})
    rejects(built.path, world["trust"], UnsignedBundleError, 21, world["tmp"], text="no signature")


def test_no_vendor_signature(world: dict) -> None:
    built = build_bundle(world["tmp"] / "b.tar", {"customer": world["customer"]})
    rejects(built.path, world["trust"], MissingAuthorityError, 22, world["tmp"], text="no vendor signature")


def test_required_customer_signature_missing(world: dict) -> None:
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]})
    policy = write_policy(world["tmp"] / "p.yaml", {"vendor": {"roots": [world["ca"][2]]},
                                                    "customer": {"required": True, "keys": [world["customer_pub"]]}})
    rejects(built.path, keys.load_trust(policy), MissingAuthorityError, 22, world["tmp"], text="customer")


def test_signature_by_an_unknown_key(world: dict) -> None:
    stranger, _ = world["pki"].signer("stranger")
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"], "customer": stranger})
    rejects(built.path, world["trust"], UntrustedKeyError, 25, world["tmp"], text="does not trust")


def test_bad_signature(world: dict) -> None:
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]})
    # A genuine signature by the same key over other bytes, with the payload swapped to this statement.
    other = json.loads(sign.sign(b'{"other":true}', world["vendor"], "vendor"))
    other["dsseEnvelope"]["payload"] = json.loads(built.signatures["vendor"])["dsseEnvelope"]["payload"]
    bad = build_bundle(world["tmp"] / "bad.tar", {}, files={**built.files, "_index": b""}, statement=built.statement,
                       extra={"signatures/vendor.sigstore.json": json.dumps(other).encode()})
    rejects(bad.path, world["trust"], BadSignatureError, 24, world["tmp"], text="does not verify")


def test_invalid_signature_claiming_an_optional_configured_authority_fails(world: dict) -> None:
    stranger, _ = world["pki"].signer("stranger")
    sig = json.loads(sign.sign(b"x", stranger, "customer"))
    sig["verificationMaterial"]["publicKey"]["hint"] = world["customer"].fingerprint
    payload = small_payload()
    index = payload["_index"]
    statement = statement_for({k: v for k, v in payload.items() if k != "_index"}, index)
    sig["dsseEnvelope"]["payload"] = json.loads(sign.sign(statement, stranger, "x"))["dsseEnvelope"]["payload"]
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]}, statement=statement,
                         extra={"signatures/customer.sigstore.json": json.dumps(sig).encode()})
    rejects(built.path, world["trust"], BadSignatureError, 24, world["tmp"])


def test_malformed_signature_file(world: dict) -> None:
    built = build_bundle(world["tmp"] / "b.tar", {"customer": world["customer"]},
                         extra={"signatures/vendor.sigstore.json": b'{"mediaType": "application/json"}'})
    rejects(built.path, world["trust"], BadSignatureError, 24, world["tmp"], text="malformed")


@pytest.mark.parametrize("count", [0, 7])
def test_certificate_chain_of_impossible_length_is_refused(world: dict, count: int) -> None:
    statement = statement_for(*_payload_and_index())
    doc = json.loads(sign.sign(statement, world["vendor"], "vendor"))
    leaf = doc["verificationMaterial"].pop("certificate")
    doc["verificationMaterial"]["x509CertificateChain"] = {"certificates": [leaf] * count}
    built = build_bundle(world["tmp"] / "b.tar", {}, statement=statement,
                         extra={"signatures/vendor.sigstore.json": json.dumps(doc).encode()})
    rejects(built.path, world["trust"], BadSignatureError, 24, world["tmp"], text="must hold 1 to 6 certificates")


def _payload_and_index() -> tuple[dict[str, bytes], bytes]:
    files = small_payload()
    return files, files.pop("_index")


def test_expired_certificate_says_resign(world: dict) -> None:
    vendor, _ = world["pki"].cert_signer("old", world["ca"], not_before=NOW - dt.timedelta(days=60),
                                         not_after=NOW - dt.timedelta(days=1))
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": vendor})
    rejects(built.path, world["trust"], ExpiredKeyError, 23, world["tmp"], text="re-sign")


def test_expired_pinned_key_says_resign(world: dict) -> None:
    signer, pub = world["pki"].signer("pinned")
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": signer})
    expired = (NOW - dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    policy = write_policy(world["tmp"] / "p.yaml", {"vendor": {"keys": [{"path": str(pub), "notAfter": expired}]}})
    rejects(built.path, keys.load_trust(policy), ExpiredKeyError, 23, world["tmp"], text="re-sign")
    later = (NOW + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    policy = write_policy(world["tmp"] / "p.yaml", {"vendor": {"keys": [{"path": str(pub), "notAfter": later}]}})
    assert verify.verify(built.path, keys.load_trust(policy), now=NOW)


def test_certificate_not_yet_valid(world: dict) -> None:
    vendor, _ = world["pki"].cert_signer("future", world["ca"], not_before=NOW + dt.timedelta(days=1),
                                         not_after=NOW + dt.timedelta(days=30))
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": vendor})
    rejects(built.path, world["trust"], NotYetValidError, 23, world["tmp"], text="not valid before")


def test_certificate_chain_not_reaching_the_anchor(world: dict) -> None:
    other_ca = world["pki"].ca("impostor")
    vendor, _ = world["pki"].cert_signer("impostor-signing", other_ca)
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": vendor})
    rejects(built.path, world["trust"], UntrustedKeyError, 25, world["tmp"], text="does not chain")


def test_ca_key_signing_directly_is_not_a_leaf(world: dict) -> None:
    # The vendor signs with the root CA's own key and carries the root certificate: the chain holds
    # (it is the anchor itself), so only the leaf-usage check stands between it and acceptance.
    root_key, root_cert, _ = world["ca"]
    signer = keys.Signer(root_key, root_key.public_key(), keys.fingerprint(root_key.public_key()), root_cert)
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": signer})
    rejects(built.path, world["trust"], UntrustedKeyError, 25, world["tmp"],
            text="the signing certificate is a CA certificate")


def test_ca_certificate_issued_by_the_root_is_not_a_signing_leaf(world: dict) -> None:
    # A certificate that passes every other check (issued by the root, valid now, digitalSignature,
    # codeSigning) but says CA:TRUE: it may issue certificates, so it must not sign bundles.
    root_key, root_cert, _ = world["ca"]
    priv, _, _ = world["pki"].key("sub-ca")
    usage = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vendor sub CA")]))
            .issuer_name(root_cert.subject).public_key(priv.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
            .sign(root_key, hashes.SHA256()))
    signer = keys.Signer(priv, priv.public_key(), keys.fingerprint(priv.public_key()), cert)
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": signer})
    rejects(built.path, world["trust"], UntrustedKeyError, 25, world["tmp"],
            text="the signing certificate is a CA certificate")


# --- step 5: members against the statement ----------------------------------------------------------------


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_one_byte_changed_in_any_member_is_refused(world: dict) -> None:
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"], "customer": world["customer"]})
    pristine = built.path.read_bytes()
    index = archive.read_index(built.path)
    assert len(index.members) == len(built.members) == 14
    for member in index.members:
        built.path.write_bytes(pristine)
        _flip(built.path, member.data_offset + member.size // 2)
        if member.name == archive.STATEMENT or member.name.startswith("signatures/"):
            expected: tuple[type, ...] = (BadSignatureError, UntrustedKeyError)
        else:
            expected = (UnlistedMemberError,)
        dest = world["tmp"] / "extracted"
        with pytest.raises(expected) as info:
            verify.verify_and_extract(built.path, world["trust"], dest, now=NOW)
        assert info.value.exit_code in (24, 25, 26), member.name
        if expected == (UnlistedMemberError,):
            assert member.name in str(info.value) and info.value.exit_code == 26
        assert not dest.exists(), member.name
    built.path.write_bytes(pristine)
    assert verify.verify(built.path, world["trust"], now=NOW)


def test_member_added(world: dict) -> None:
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]}, extra={"manifests/extra.yaml": b"x: 1\n"})
    rejects(built.path, world["trust"], UnlistedMemberError, 26, world["tmp"], text="manifests/extra.yaml is not listed")


def test_member_removed(world: dict) -> None:
    payload = small_payload()
    index = payload.pop("_index")
    statement = statement_for(payload, index)
    del payload["sbom.cdx.json"]
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]}, files=payload, statement=statement)
    rejects(built.path, world["trust"], UnlistedMemberError, 26, world["tmp"], text="sbom.cdx.json is listed")


def test_member_renamed(world: dict) -> None:
    payload = small_payload()
    index = payload.pop("_index")
    statement = statement_for(payload, index)
    payload["manifests/renamed.yaml"] = payload.pop("manifests/deployment.yaml")
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]}, files=payload, statement=statement)
    rejects(built.path, world["trust"], UnlistedMemberError, 26, world["tmp"], text="renamed.yaml")


def test_member_listed_twice(world: dict) -> None:
    payload = small_payload()
    index = payload.pop("_index")
    bom = describe(payload, index)
    twice = type(bom)(**{**bom.__dict__, "files": bom.files + (FileEntry("sbom.cdx.json", len(payload["sbom.cdx.json"]),
                                                                         sha(payload["sbom.cdx.json"])),)})
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]}, files=payload,
                         statement=statement_for(payload, index, bom=twice))
    rejects(built.path, world["trust"], UnlistedMemberError, 26, world["tmp"], text="listed twice")


def test_statement_subject_disagrees_with_members(world: dict) -> None:
    payload = small_payload()
    index = payload.pop("_index")
    bom = describe(payload, index)
    chart = bom.charts[0]
    wrong_chart = type(bom)(**{**bom.__dict__, "charts": (type(chart)(chart.name, chart.version, chart.path,
                                                                      "sha256:" + "0" * 64),)})
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]}, files=payload,
                         statement=statement_for(payload, index, bom=wrong_chart))
    rejects(built.path, world["trust"], StatementMismatchError, 29, world["tmp"], text="charts/demo-1.0.0.tgz")


def test_statement_image_not_carried(world: dict) -> None:
    payload = small_payload()
    index = payload.pop("_index")
    del payload[f"images/blobs/sha256/{sha(index)}"]
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]}, files=payload,
                         statement=statement_for(payload, index))
    rejects(built.path, world["trust"], StatementMismatchError, 29, world["tmp"], text="not carried")


def test_statement_predicate_failing_its_schema(world: dict) -> None:
    payload = small_payload()
    payload.pop("_index")
    from bundler import attest
    statement = attest.statement([attest.Subject("charts/demo-1.0.0.tgz", sha(payload["charts/demo-1.0.0.tgz"]))],
                                 "https://airgap-bundle.dev/bom/v1",
                                 {"files": [{"path": p, "size": len(b), "sha256": sha(b)} for p, b in payload.items()]})
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]}, files=payload, statement=statement)
    rejects(built.path, world["trust"], StatementMismatchError, 29, world["tmp"], text="predicate")


def _signed_statement(world: dict, doc: object, *, canonical: bool = True) -> Path:
    """A bundle of the small payload whose statement is `doc` (serialised canonically or not), vendor-signed."""
    payload = small_payload()
    payload.pop("_index")
    from bundler import attest
    statement = attest.canonical_json(doc) if canonical else json.dumps(doc, indent=2).encode()
    return build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]}, files=payload, statement=statement).path


def test_statement_not_in_canonical_form(world: dict) -> None:
    payload = small_payload()
    index = payload.pop("_index")
    doc = json.loads(statement_for(payload, index))
    rejects(_signed_statement(world, doc, canonical=False), world["trust"], StatementMismatchError, 29,
            world["tmp"], text="not in RFC 8785 canonical form")


@pytest.mark.parametrize("change, text", [
    (lambda d: {**d, "_type": "https://in-toto.io/Statement/v0.1"}, "_type is not https://in-toto.io/Statement/v1"),
    (lambda d: {**d, "predicateType": "https://slsa.dev/provenance/v1"}, "predicateType 'https://slsa.dev"),
    # the header scan reads predicate.files first (to refuse unlisted members as it goes)
    (lambda d: [d], "no readable predicate.files (TypeError)"),
], ids=["old-type", "other-predicate", "a-list"])
def test_statement_of_the_wrong_type(world: dict, change, text: str) -> None:  # type: ignore[no-untyped-def]
    payload = small_payload()
    index = payload.pop("_index")
    doc = change(json.loads(statement_for(payload, index)))
    rejects(_signed_statement(world, doc), world["trust"], StatementMismatchError, 29, world["tmp"], text=text)


def test_statement_whose_files_are_not_a_list(world: dict) -> None:
    # `files: {}` lists nothing, so only a bundle without payload gets past the header scan to step 5.
    payload = small_payload()
    index = payload.pop("_index")
    doc = json.loads(statement_for(payload, index))
    doc["predicate"]["files"] = {}
    from bundler import attest
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]}, files={},
                         statement=attest.canonical_json(doc))
    rejects(built.path, world["trust"], StatementMismatchError, 29, world["tmp"], text="predicate.files is missing")


def test_blob_whose_name_is_not_its_digest(world: dict) -> None:
    # Listed with its true sha256 (so the member hash check passes), under the name of another digest.
    payload = small_payload()
    index = payload.pop("_index")
    impostor = "images/blobs/sha256/" + "0" * 64
    payload[impostor] = b"not the blob named 000..."
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]}, files=payload,
                         statement=statement_for(payload, index))
    rejects(built.path, world["trust"], StatementMismatchError, 29, world["tmp"],
            text=f"{impostor} is listed with sha256:{sha(payload[impostor])}, not the digest its name states")


@pytest.mark.parametrize("member", ["charts/demo-1.0.0.tgz", "manifests/deployment.yaml", "sbom.cdx.json"],
                         ids=["first", "middle", "last"])
def test_cli_plain_verify_refuses_a_changed_payload_member(world: dict, run_cli, member: str) -> None:  # type: ignore[no-untyped-def]
    # Plain `verify` (no --extract) must hash every member itself: extraction hashes again and would
    # hide a gap here.
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]})
    payload = archive.read_index(built.path).payload  # archive order: sorted by name
    assert (payload[0].name, payload[-1].name) == ("charts/demo-1.0.0.tgz", "sbom.cdx.json")
    m = archive.read_index(built.path).get(member)
    assert m is not None
    _flip(built.path, m.data_offset + m.size // 2)
    res = run_cli("verify", str(built.path), "--policy", str(world["policy"]))
    assert res.returncode == 26, res.stdout + res.stderr
    assert f"{member} hashes to sha256:" in res.stderr and "Traceback" not in res.stderr
    assert "verified" not in res.stdout
    res = run_cli("verify", str(built.path), "--policy", str(world["policy"]), "--json")
    assert res.returncode == 26 and json.loads(res.stdout)["failure"]["exitCode"] == 26


# --- step 1: the tar itself -----------------------------------------------------------------------------


def _tar_with(tmp: Path, built_path: Path, bad: tarfile.TarInfo, data: bytes = b"") -> Path:
    return tar_with(tmp / "hostile.tar", built_path, bad, data)


_info = tar_info


@pytest.mark.parametrize("bad, text", [
    (_info("../evil.txt", tarfile.REGTYPE, size=4), "'..'"),
    (_info("/etc/evil.txt", tarfile.REGTYPE, size=4), "absolute"),
    (_info("manifests/link.yaml", tarfile.SYMTYPE, linkname="/etc/passwd"), "symbolic link"),
    (_info("manifests/hard.yaml", tarfile.LNKTYPE, linkname="sbom.cdx.json"), "hard link"),
    (_info("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3), "device"),
    (_info("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0), "device"),
    (_info("fifo", tarfile.FIFOTYPE), "fifo"),
    (_info("sbom.cdx.json", tarfile.REGTYPE, size=4), "duplicate"),
])
def test_hostile_tar_entries_are_refused(world: dict, bad: tarfile.TarInfo, text: str) -> None:
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]})
    hostile = _tar_with(world["tmp"], built.path, bad, b"evil" if bad.size else b"")
    rejects(hostile, world["trust"], UnsafeArchiveError, 12, world["tmp"], text=text)
    assert not (world["tmp"] / "evil.txt").exists()


# --- offline by construction ------------------------------------------------------------------------------

FORBIDDEN = ("requests", "urllib3", "http", "urllib.request", "subprocess", "ssl", "asyncio", "socketserver",
             "bundler.registry", "bundler.render", "bundler.pipeline")


def test_importing_verify_loads_nothing_that_opens_connections() -> None:
    code = "import sys, bundler.verify; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}).stdout.split()
    bad = [m for m in out if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
    assert not bad, f"bundler.verify pulls in {bad}"


def test_verify_and_its_bundler_imports_name_no_network_module() -> None:
    # `socket` itself is loaded by cryptography (email.utils); our own modules may not import it or worse.
    for module in ("verify", "archive", "attest", "keys", "bom", "errors"):
        tree = ast.parse((REPO / "bundler" / f"{module}.py").read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                assert name.split(".")[0] not in ("socket", "urllib", "http", "requests", "subprocess", "ssl"), \
                    f"bundler/{module}.py imports {name}"


def test_verification_runs_with_sockets_disabled(world: dict) -> None:
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]})
    code = f"""
import socket, datetime
def refuse(*a, **k):
    raise AssertionError("network access attempted")
socket.socket = refuse; socket.create_connection = refuse; socket.getaddrinfo = refuse
from bundler import keys, verify
trust = keys.load_trust({str(world['policy'])!r})
r = verify.verify_and_extract({str(built.path)!r}, trust, {str(world['tmp'] / 'x')!r},
                              now=datetime.datetime.now(datetime.timezone.utc))
print(bool(r), r.members_checked)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", str(len(built.files))]


# --- the CLI ------------------------------------------------------------------------------------------------


def test_cli_verify_prints_each_accepted_signature_and_extracts(world: dict, run_cli) -> None:
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"], "customer": world["customer"]})
    dest = world["tmp"] / "out"
    res = run_cli("verify", str(built.path), "--policy", str(world["policy"]), "--extract", str(dest))
    assert res.returncode == 0, res.stderr
    assert f"signature ok: vendor key {world['vendor'].fingerprint} certificate serial " \
           f"{world['vendor'].certificate.serial_number:x} notAfter" in res.stdout
    assert f"signature ok: customer key {world['customer'].fingerprint}" in res.stdout
    assert (dest / "bundle.intoto.json").read_bytes() == built.statement
    res = run_cli("verify", str(built.path), "--policy", str(world["policy"]), "--json")
    doc = json.loads(res.stdout)
    assert doc["ok"] and doc["membersChecked"] == len(built.files) and doc["statementSha256"] == sha(built.statement)


def test_cli_verify_extract_into_an_existing_folder_is_a_usage_error(world: dict, run_cli) -> None:
    """A folder that exists is a mistake in the command, not in the bundle: exit 2, one line, nothing touched."""
    built = build_bundle(world["tmp"] / "x.tar", {"vendor": world["vendor"]})
    dest = world["tmp"] / "existing"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    res = run_cli("verify", str(built.path), "--policy", str(world["policy"]), "--extract", str(dest))
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert lines[0] == f"airgap-bundle: error: {dest} already exists: a bundle is extracted only into a new " \
                       "folder (name a folder that does not exist yet; nothing was verified or written)"
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]


def test_cli_verify_rejections_exit_with_their_code(world: dict, run_cli) -> None:
    unsigned = build_bundle(world["tmp"] / "u.tar", {})
    dest = world["tmp"] / "out"
    res = run_cli("verify", str(unsigned.path), "--policy", str(world["policy"]), "--extract", str(dest))
    assert res.returncode == 21 and "no signature" in res.stderr and "Traceback" not in res.stderr
    assert not dest.exists()
    old, _ = world["pki"].cert_signer("old", world["ca"], not_before=NOW - dt.timedelta(days=9),
                                      not_after=NOW - dt.timedelta(days=1))
    expired = build_bundle(world["tmp"] / "e.tar", {"vendor": old})
    res = run_cli("verify", str(expired.path), "--policy", str(world["policy"]), "--json")
    assert res.returncode == 23 and "re-sign" in res.stderr
    assert json.loads(res.stdout)["failure"]["exitCode"] == 23
    empty = write_policy(world["tmp"] / "none.yaml", {"customer": {"keys": [world["customer_pub"]]}})
    res = run_cli("verify", str(expired.path), "--policy", str(empty))
    assert res.returncode == 27


# --- exact refusals: each message names the member and both values (mutation testing, docs/testing.md) -------


def test_a_refused_bundle_reports_its_failure_and_no_member_checked(world: dict) -> None:
    built = build_bundle(world["tmp"] / "b.tar", {})
    result = verify.verify(built.path, world["trust"], now=NOW)
    assert result.members_checked == 0 and result.statement_sha256 is None and result.verified_files == ()
    assert result.to_json() == {
        "ok": False, "required": ["vendor"], "authorities": [], "statementSha256": None, "membersChecked": 0,
        "bundleSha256": None,
        "failure": {"error": "UnsignedBundleError", "exitCode": 21,
                    "message": f"{built.path}: the bundle carries no signature (the vendor signs at build time; "
                               "ask for a signed bundle)"}}


def _with_files(payload: dict[str, bytes], index: bytes, change: dict[str, FileEntry]) -> bytes:
    bom = describe(payload, index)
    files = tuple(change.get(f.path, f) for f in bom.files)
    return statement_for(payload, index, bom=type(bom)(**{**bom.__dict__, "files": files}))


def test_a_member_size_the_statement_disagrees_with_is_named_with_both_sizes(world: dict) -> None:
    payload = small_payload()
    index = payload.pop("_index")
    sbom = payload["sbom.cdx.json"]
    statement = _with_files(payload, index, {"sbom.cdx.json": FileEntry("sbom.cdx.json", len(sbom) + 1, sha(sbom))})
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]}, files=payload, statement=statement)
    result = verify.verify(built.path, world["trust"], now=NOW)
    assert type(result.failure) is UnlistedMemberError
    assert result.failure.message == f"{built.path}: sbom.cdx.json has {len(sbom)} bytes, the statement says {len(sbom) + 1}"


def test_a_chart_subject_with_another_digest_names_both_digests(world: dict) -> None:
    payload = small_payload()
    index = payload.pop("_index")
    bom = describe(payload, index)
    chart = bom.charts[0]
    wrong = type(bom)(**{**bom.__dict__, "charts": (type(chart)(chart.name, chart.version, chart.path, "sha256:" + "0" * 64),)})
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]}, files=payload,
                         statement=statement_for(payload, index, bom=wrong))
    result = verify.verify(built.path, world["trust"], now=NOW)
    assert type(result.failure) is StatementMismatchError
    assert result.failure.message == (f"bundle.intoto.json: subject charts/demo-1.0.0.tgz has sha256:{'0' * 64}, "
                                      f"the member has sha256:{sha(payload['charts/demo-1.0.0.tgz'])}")


def test_now_without_a_time_zone_is_taken_as_utc(world: dict) -> None:
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]})
    assert verify.verify(built.path, world["trust"], now=NOW.replace(tzinfo=None))
    assert verify.verify(built.path, world["trust"], now=NOW.astimezone(dt.timezone(dt.timedelta(hours=5))))


def test_a_certificate_is_valid_from_its_first_to_its_last_second(world: dict) -> None:
    start, end = NOW - dt.timedelta(hours=1), NOW + dt.timedelta(hours=1)
    vendor, _ = world["pki"].cert_signer("edge", world["ca"], not_before=start, not_after=end)
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": vendor})
    for now in (start, end):
        assert verify.verify(built.path, world["trust"], now=now), now
    early = verify.verify(built.path, world["trust"], now=start - dt.timedelta(seconds=1)).failure
    late = verify.verify(built.path, world["trust"], now=end + dt.timedelta(seconds=1)).failure
    assert type(early) is NotYetValidError and type(late) is ExpiredKeyError
    serial = f"{vendor.certificate.serial_number:x}"
    assert early.message == (f"signatures/vendor.sigstore.json: signing certificate serial {serial} is not valid "
                             f"before {start.isoformat()}")
    assert late.message == (f"signatures/vendor.sigstore.json: signing certificate serial {serial} expired "
                            f"{end.isoformat()}; re-sign the bundle")
    assert late.hint == verify.RESIGN_HINT


def test_an_expired_pinned_key_is_named_when_the_signature_gives_no_hint(world: dict) -> None:
    # Without a hint every pinned key of the authority is tried; the error names the first one.
    signer, pub = world["pki"].signer("pinned")
    other, other_pub = world["pki"].signer("other")
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": signer})
    unhinted = without_hint(built, world["tmp"] / "u.tar")
    first, second = NOW - dt.timedelta(days=2), NOW - dt.timedelta(days=1)
    keys_ = [{"path": str(pub), "notAfter": first.strftime("%Y-%m-%dT%H:%M:%SZ")},
             {"path": str(other_pub), "notAfter": second.strftime("%Y-%m-%dT%H:%M:%SZ")}]
    trust = keys.load_trust(write_policy(world["tmp"] / "p.yaml", {"vendor": {"keys": keys_}}))
    result = verify.verify(unhinted.path, trust, now=NOW)
    assert type(result.failure) is ExpiredKeyError
    assert result.failure.message == (f"signatures/vendor.sigstore.json: the pinned key {signer.fingerprint} for vendor "
                                      f"expired {first.isoformat()}; re-sign")
    assert result.authorities[0].not_after == first
    # one of them still valid: it is the one that verifies
    keys_[0]["notAfter"] = (NOW + dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    trust = keys.load_trust(write_policy(world["tmp"] / "p.yaml", {"vendor": {"keys": keys_}}))
    assert verify.verify(unhinted.path, trust, now=NOW).authorities[0].keyid == signer.fingerprint


@pytest.mark.parametrize("entry", [
    {"path": 1, "size": 1, "sha256": "0" * 64},
    {"path": "a", "size": "1", "sha256": "0" * 64}, {"path": "a", "size": True, "sha256": "0" * 64},
    {"path": "a", "size": -1, "sha256": "0" * 64}, {"path": "a", "size": 1}, {"path": "a", "size": 1, "sha256": 1},
    {"path": "a", "size": 1, "sha256": "0" * 63}, {"path": "a", "size": 1, "sha256": "A" * 64},
])
def test_a_files_entry_that_is_not_path_size_sha256_is_refused(world: dict, entry: object) -> None:
    from bundler import attest
    payload = small_payload()
    payload.pop("_index")
    chart = payload["charts/demo-1.0.0.tgz"]
    listing = [{"path": p, "size": len(b), "sha256": sha(b)} for p, b in payload.items()]
    statement = attest.statement([attest.Subject("charts/demo-1.0.0.tgz", sha(chart))],
                                 "https://airgap-bundle.dev/bom/v1", {"files": [*listing, entry]})
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]}, files=payload, statement=statement)
    result = verify.verify(built.path, world["trust"], now=NOW)
    assert type(result.failure) is StatementMismatchError
    assert result.failure.message == f"bundle.intoto.json: predicate.files[{len(listing)}] is not {{path, size, sha256}}"


@pytest.mark.parametrize(("entry", "error"), [("not an object", "TypeError"), ({"size": 1}, "KeyError")])
def test_a_files_entry_without_a_path_stops_the_scan(world: dict, entry: object, error: str) -> None:
    from bundler import attest
    payload = small_payload()
    payload.pop("_index")
    listing = [{"path": p, "size": len(b), "sha256": sha(b)} for p, b in payload.items()]
    statement = attest.statement([attest.Subject("charts/demo-1.0.0.tgz", sha(payload["charts/demo-1.0.0.tgz"]))],
                                 "https://airgap-bundle.dev/bom/v1", {"files": [*listing, entry]})
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]}, files=payload, statement=statement)
    failure = verify.verify(built.path, world["trust"], now=NOW).failure
    assert type(failure) is StatementMismatchError
    assert failure.message == f"bundle.intoto.json: no readable predicate.files ({error})"


def test_missing_and_unlisted_members_are_counted(world: dict) -> None:
    payload = small_payload()
    index = payload.pop("_index")
    statement = statement_for(payload, index)
    one = {k: v for k, v in payload.items() if k != "sbom.cdx.json"}
    two = {k: v for k, v in one.items() if k != "provenance.intoto.json"}
    for files, suffix in ((one, ""), (two, " (and 1 more)")):
        built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]}, files=files, statement=statement)
        failure = verify.verify(built.path, world["trust"], now=NOW).failure
        assert type(failure) is UnlistedMemberError
        first = "provenance.intoto.json" if suffix else "sbom.cdx.json"
        assert failure.message == f"{built.path}: {first} is listed in the statement but not in the bundle{suffix}"
    for extra in ({"x/a": b"1"}, {"x/a": b"1", "x/b": b"2"}):  # the scan stops at the first
        built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]}, extra=extra)
        failure = verify.verify(built.path, world["trust"], now=NOW).failure
        assert type(failure) is UnlistedMemberError
        assert failure.message == f"{built.path}: member x/a is not listed in the statement"


def test_plain_verify_hashes_every_member_itself(world: dict) -> None:
    # verify() without extraction: a changed byte in the first, a middle or the last payload member is refused.
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]})
    pristine = built.path.read_bytes()
    payload = archive.read_index(built.path).payload
    for member in (payload[0], payload[len(payload) // 2], payload[-1]):
        built.path.write_bytes(pristine)
        _flip(built.path, member.data_offset)
        failure = verify.verify(built.path, world["trust"], now=NOW).failure
        assert type(failure) is UnlistedMemberError, member.name
        assert failure.message.startswith(f"{built.path}: {member.name} hashes to sha256:")
        assert failure.message.endswith(f", the statement says sha256:{sha(built.files[member.name])}")


def test_subjects_the_predicate_does_not_describe_are_named_first_in_order(world: dict) -> None:
    from bundler import attest
    payload = small_payload()
    index = payload.pop("_index")
    bom = describe(payload, index)
    extra = [attest.Subject(name, sha(payload[name])) for name in ("sbom.cdx.json", "manifests/deployment.yaml")]
    statement = attest.statement([*bom.subjects(), *extra], "https://airgap-bundle.dev/bom/v1", bom.to_dict())
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]}, files=payload, statement=statement)
    failure = verify.verify(built.path, world["trust"], now=NOW).failure
    assert type(failure) is StatementMismatchError
    assert failure.message == (f"bundle.intoto.json: manifests/deployment.yaml@sha256:"
                               f"{sha(payload['manifests/deployment.yaml'])} is a subject but not in the predicate")


def _resigned(world: dict, edit, *, signer=None, statement: bytes | None = None) -> verify.VerificationResult:  # type: ignore[no-untyped-def]
    """Verify a bundle whose vendor signature file was changed by `edit(doc) -> doc | bytes`."""
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": signer or world["vendor"]}, statement=statement)
    changed = edit(json.loads(built.signatures["vendor"]))
    data = changed if isinstance(changed, bytes) else json.dumps(changed).encode()
    bad = build_bundle(world["tmp"] / "bad.tar", {}, files={**built.files, "_index": b""}, statement=built.statement,
                       extra={"signatures/vendor.sigstore.json": data})
    return verify.verify(bad.path, world["trust"], now=NOW)


def _set(path: str, value: object):  # type: ignore[no-untyped-def]
    def edit(doc: dict) -> dict:
        *parents, last = path.split(".")
        node = doc
        for key in parents:
            node = node[key]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value
        return doc
    return edit


MALFORMED = "signatures/vendor.sigstore.json: malformed signature file: "


@pytest.mark.parametrize(("edit", "reason"), [
    (lambda d: b"[]", "mediaType is not application/vnd.dev.sigstore.bundle.v0.3+json"),
    (_set("mediaType", "application/vnd.dev.sigstore.bundle+json;version=0.2"), "mediaType is not"),
    (lambda d: {**d, "messageSignature": {}}, "unexpected fields (only dsseEnvelope bundles are accepted)"),
    (_set("dsseEnvelope.payloadType", "application/json"), "payloadType is not application/vnd.in-toto+json"),
    (_set("dsseEnvelope.signatures", []), "the envelope must carry exactly one signature"),
    (lambda d: _set("dsseEnvelope.signatures", d["dsseEnvelope"]["signatures"] * 2)(d),
     "the envelope must carry exactly one signature"),
    (_set("dsseEnvelope.signatures", {"sig": "x"}), "the envelope must carry exactly one signature"),
    (_set("dsseEnvelope.payload", 5), "expected a base64 string"),
    (_set("dsseEnvelope.payload", "not base64!"), ""),
    (_set("verificationMaterial.publicKey", {"hint": ""}),
     "verificationMaterial needs exactly one of certificate, x509CertificateChain or publicKey"),
    (_set("verificationMaterial.certificate", KeyError),
     "verificationMaterial needs exactly one of certificate, x509CertificateChain or publicKey"),
    (_set("dsseEnvelope", KeyError), "'dsseEnvelope'"),
    (lambda d: b'{"mediaType": "x", ' + json.dumps(d).encode()[1:], "duplicate key in JSON object"),
    (lambda d: b"\xff" + json.dumps(d).encode(), "'utf-8' codec can't decode"),
])
def test_each_malformed_signature_file_is_refused_with_its_reason(world: dict, edit, reason: str) -> None:  # type: ignore[no-untyped-def]
    result = _resigned(world, edit)
    assert type(result.failure) is BadSignatureError and result.failure.exit_code == 24
    assert result.failure.message.startswith(MALFORMED + reason)
    assert result.failure.hint == "not a Sigstore bundle v0.3 with a DSSE envelope"
    (vendor,) = result.authorities
    assert (vendor.authority, vendor.ok, vendor.reason) == ("vendor", False, result.failure.message)


def test_a_signature_over_another_statement_is_refused(world: dict) -> None:
    other = json.loads(sign.sign(b'{"other":true}', world["vendor"], "vendor"))
    result = _resigned(world, lambda d: other)
    assert type(result.failure) is BadSignatureError
    assert result.failure.message == ("signatures/vendor.sigstore.json: signs a different statement than the "
                                      "bundle's bundle.intoto.json")


def test_key_material_the_policy_cannot_use_is_refused(world: dict) -> None:
    chain = _resigned(world, lambda d: {**d, "verificationMaterial": {"x509CertificateChain": {"certificates": []}}})
    assert type(chain.failure) is BadSignatureError
    assert "x509CertificateChain must hold 1 to " in chain.failure.message
    junk = _resigned(world, _set("verificationMaterial.certificate.rawBytes", "AAAA"))
    assert type(junk.failure) is BadSignatureError
    assert junk.failure.message.startswith("signatures/vendor.sigstore.json: unreadable key material: ")
    signer, _ = world["pki"].signer("stranger")
    unknown = _resigned(world, lambda d: d, signer=signer)
    assert type(unknown.failure) is UntrustedKeyError
    assert unknown.failure.message == (f"signatures/vendor.sigstore.json: signed by key {signer.hint}, which the "
                                       "policy does not trust for vendor")


def test_accepted_signatures_are_logged_with_key_serial_and_not_after(world: dict, caplog) -> None:  # type: ignore[no-untyped-def]
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"], "customer": world["customer"]})
    with caplog.at_level("INFO", logger="bundler.verify"):
        assert verify.verify(built.path, world["trust"], now=NOW)
    cert = world["vendor"].certificate
    assert caplog.messages == [
        f"accepted signature: authority=customer key={world['customer'].fingerprint} serial=- notAfter=-",
        f"accepted signature: authority=vendor key={world['vendor'].fingerprint} serial={cert.serial_number:x} "
        f"notAfter={cert.not_valid_after_utc.isoformat()}"]


def _leaf_signer(world: dict, *, ca: bool = False, digital_signature: bool | None = True,
                 eku: list | None = None, issuer: tuple | None = None) -> keys.Signer:  # type: ignore[type-arg]
    """A vendor signer whose certificate has exactly the given extensions (None: extension absent)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    priv = keys.generate_private_key()
    issuer_key, issuer_cert, _ = issuer or world["ca"]
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vendor signing")]))
               .issuer_name(issuer_cert.subject).public_key(priv.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if digital_signature is not None:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=digital_signature, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    return keys.Signer(priv, priv.public_key(), keys.fingerprint(priv.public_key()), cert)


def _verify_signed_by(world: dict, signer: keys.Signer, trust: keys.TrustPolicy | None = None) -> verify.VerificationResult:
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": signer})
    return verify.verify(built.path, trust or world["trust"], now=NOW)


def test_leaf_certificate_usage_is_checked(world: dict) -> None:
    from cryptography.x509.oid import ExtendedKeyUsageOID as Eku
    member = "signatures/vendor.sigstore.json"
    for kw, message in (
            ({"ca": True}, "the signing certificate is a CA certificate"),
            ({"digital_signature": False}, "the certificate's key usage does not allow signatures"),
            ({"eku": [Eku.SERVER_AUTH]}, "the certificate's extended key usage does not include codeSigning")):
        failure = _verify_signed_by(world, _leaf_signer(world, **kw)).failure  # type: ignore[arg-type]
        assert type(failure) is UntrustedKeyError and failure.message == f"{member}: {message}", kw
    assert failure.exit_code == 25
    for kw in ({"digital_signature": None}, {"eku": None}, {"eku": [Eku.ANY_EXTENDED_KEY_USAGE]},
               {"eku": [Eku.SERVER_AUTH, Eku.CODE_SIGNING]}):
        assert _verify_signed_by(world, _leaf_signer(world, **kw)), kw  # type: ignore[arg-type]


def test_the_anchor_is_found_among_several_roots(world: dict) -> None:
    # Roots that are not the issuer (other subject, not a CA, same subject but another key) are skipped.
    pki = world["pki"]
    other = pki.ca("other")
    not_ca_priv, _, _ = pki.key("not-ca")
    not_ca = keys.issue_certificate(not_ca_priv.public_key(), common_name="vendor root CA", issuer_key=not_ca_priv,
                                    not_after=NOW + dt.timedelta(days=9), ca=False)
    same_name = pki.ca("vendor")  # "vendor root CA" again, another key
    from cryptography.hazmat.primitives import serialization
    bundle_pem = world["tmp"] / "roots.pem"
    bundle_pem.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM)
                                    for c in (other[1], not_ca, same_name[1], world["ca"][1])))
    trust = keys.load_trust(write_policy(world["tmp"] / "p.yaml", {"vendor": {"roots": [bundle_pem]}}))
    result = _verify_signed_by(world, world["vendor"], trust)
    assert result and result.authorities[0].serial == f"{world['vendor'].certificate.serial_number:x}"
    # without the real root: none of them is the anchor
    bundle_pem.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (other[1], not_ca, same_name[1])))
    trust = keys.load_trust(write_policy(world["tmp"] / "p.yaml", {"vendor": {"roots": [bundle_pem]}}))
    failure = _verify_signed_by(world, world["vendor"], trust).failure
    assert type(failure) is UntrustedKeyError
    assert failure.message == ("signatures/vendor.sigstore.json: certificate CN=vendor signing (issuer CN=vendor root CA) "
                               "does not chain to a root the policy trusts for vendor")


def test_a_pinned_self_signed_leaf_is_its_own_anchor(world: dict) -> None:
    priv, _, _ = world["pki"].key("self")
    cert = keys.issue_certificate(priv.public_key(), common_name="self", issuer_key=priv,  # valid around NOW, not the clock
                                  not_before=NOW - dt.timedelta(days=1), not_after=NOW + dt.timedelta(days=9))
    from cryptography.hazmat.primitives import serialization
    (world["tmp"] / "self.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    trust = keys.load_trust(write_policy(world["tmp"] / "p.yaml", {"vendor": {"roots": [world["tmp"] / "self.pem"]}}))
    signer = keys.Signer(priv, priv.public_key(), keys.fingerprint(priv.public_key()), cert)
    assert _verify_signed_by(world, signer, trust)


def test_an_expired_or_future_root_is_named(world: dict) -> None:
    pki = world["pki"]
    for name, kw, error, text, hint in (
            ("old-root", {"not_before": NOW - dt.timedelta(days=9), "not_after": NOW - dt.timedelta(seconds=1)},
             ExpiredKeyError, "root CA certificate serial {serial} expired {when}; re-sign the bundle",
             "the policy's root has expired; update the policy"),
            ("new-root", {"not_before": NOW + dt.timedelta(seconds=1), "not_after": NOW + dt.timedelta(days=9)},
             NotYetValidError, "root CA certificate serial {serial} is not valid before {when}",
             "check this machine's clock, or wait until the certificate is valid")):
        root = pki.ca(name, **kw)  # type: ignore[arg-type]
        signer = _leaf_signer(world, issuer=root)
        trust = keys.load_trust(write_policy(world["tmp"] / "p.yaml", {"vendor": {"roots": [root[2]]}}))
        failure = _verify_signed_by(world, signer, trust).failure
        when = (root[1].not_valid_after_utc if error is ExpiredKeyError else root[1].not_valid_before_utc).isoformat()
        assert type(failure) is error
        assert failure.message == "signatures/vendor.sigstore.json: " + text.format(serial=f"{root[1].serial_number:x}",
                                                                                   when=when)
        assert failure.hint == hint


def _statement_edited(world: dict, edit, *, raw: bytes | None = None, extra=None):  # type: ignore[no-untyped-def]
    """Verify a bundle whose (signed) statement is the standard one changed by `edit(doc)`, or `raw`."""
    from bundler.attest import canonical_json
    payload = small_payload()
    index = payload.pop("_index")
    doc = json.loads(statement_for(payload, index))
    if raw == "indented":  # the same statement, not in canonical form
        raw = json.dumps(doc, indent=1).encode()
    elif raw is None:
        edit(doc)
        raw = canonical_json(doc)
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]}, files=payload, statement=raw, extra=extra)
    return verify.verify(built.path, world["trust"], now=NOW).failure, payload


def _files(doc: dict) -> list:  # type: ignore[type-arg]
    return doc["predicate"]["files"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(("edit", "raw", "message"), [
    (None, b"not json", "no readable predicate.files (JSONDecodeError)"),
    (None, b'{"_type": "https://in-toto.io/Statement/v1"}', "no readable predicate.files (KeyError)"),
    (None, b"[]", "no readable predicate.files (TypeError)"),
    (None, "indented", "not in RFC 8785 canonical form"),
    (lambda d: d.update(_type="https://in-toto.io/Statement/v0.1"), None, "_type is not https://in-toto.io/Statement/v1"),
    (lambda d: d.update(predicateType="x"), None, "predicateType 'x' is not https://airgap-bundle.dev/bom/v1"),
    (lambda d: d.update(predicate=[]), None, "no readable predicate.files (TypeError)"),
    (lambda d: d["predicate"].pop("files"), None, "no readable predicate.files (KeyError)"),
    (lambda d: _files(d).append({"path": "bundle.intoto.json", "size": 1, "sha256": "0" * 64}), None,
     "predicate.files lists 'bundle.intoto.json', which is never a payload member"),
    (lambda d: _files(d).append({"path": "signatures/x.sigstore.json", "size": 1, "sha256": "0" * 64}), None,
     "predicate.files lists 'signatures/x.sigstore.json', which is never a payload member"),
    (lambda d: d.update(subject=[]), None, "no subject"),
    (lambda d: d.update(subject={}), None, "no subject"),
    (lambda d: d["subject"].append("x"), None, "subject[2] is not {name, digest: {sha256}}"),
    (lambda d: d["subject"].append({"name": 1, "digest": {"sha256": "0" * 64}}), None,
     "subject[2] is not {name, digest: {sha256}}"),
    (lambda d: d["subject"].append({"name": "x", "digest": {"sha512": "0" * 64}}), None,
     "subject[2] is not {name, digest: {sha256}}"),
    (lambda d: d["subject"].append({"name": "x", "digest": {"sha256": "0" * 63}}), None,
     "subject[2] is not {name, digest: {sha256}}"),
    (lambda d: d["subject"].append({"name": "x", "digest": "0" * 64}), None, "subject[2] is not {name, digest: {sha256}}"),
])
def test_each_statement_the_members_cannot_trust_is_refused(world: dict, edit, raw: bytes | str | None, message: str) -> None:  # type: ignore[no-untyped-def]
    failure, _ = _statement_edited(world, edit, raw=raw)
    assert type(failure) is StatementMismatchError and failure.exit_code == 29
    assert failure.message.startswith(f"bundle.intoto.json: {message}")
    assert failure.hint == ("this is not a bundle statement; refusing the bundle" if "no readable" in message
                            else "the statement does not describe this bundle; rebuild it")


def test_an_unsafe_listed_path_is_refused_before_anything_is_read(world: dict) -> None:
    failure, _ = _statement_edited(world, lambda d: _files(d).append({"path": "../x", "size": 1, "sha256": "0" * 64}))
    assert type(failure) is UnsafeArchiveError
    assert failure.message == "bundle.intoto.json: member '../x' has a '..', '.' or empty path component"


def test_a_stray_file_under_signatures_is_refused(world: dict) -> None:
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]})
    stray = _tar_with(world["tmp"], built.path, _info("signatures/notes.txt", tarfile.REGTYPE, size=2), b"hi")
    failure = verify.verify(stray, world["trust"], now=NOW).failure
    assert type(failure) is UnlistedMemberError
    assert failure.message == f"{stray}: signatures/notes.txt is not signatures/<authority>.sigstore.json"


def test_predicate_and_subjects_must_agree(world: dict) -> None:
    def image(d: dict) -> dict:  # type: ignore[type-arg]
        return d["predicate"]["images"][0]  # type: ignore[no-any-return]

    def repin(d: dict) -> None:  # type: ignore[type-arg]
        image(d)["local"] = image(d)["local"].split("@")[0] + "@sha256:" + "e" * 64

    failure, payload = _statement_edited(world, repin)
    assert type(failure) is StatementMismatchError
    assert failure.message.startswith(f"bundle.intoto.json: image {LOCAL_DEMO}@sha256:{'e' * 64} is pinned to another digest")
    failure, _ = _statement_edited(world, lambda d: d["predicate"]["charts"][0].update(path="charts/other.tgz"))
    assert failure.message == ("bundle.intoto.json: chart demo 1.0.0: charts/other.tgz is not a listed member")
    failure, _ = _statement_edited(world, lambda d: d.update(subject=[s for s in d["subject"] if "chart" not in s["name"]]))
    chart = sha(payload["charts/demo-1.0.0.tgz"])
    assert failure.message == (f"bundle.intoto.json: charts/demo-1.0.0.tgz@sha256:{chart} is in the predicate but "
                               "not a subject")
    # an image listed without its digest in its local reference is fine: the subject carries the digest
    assert _statement_edited(world, lambda d: image(d).update(local=LOCAL_DEMO))[0] is None


def test_a_blob_listed_under_another_digest_is_refused(world: dict) -> None:
    def rename(d: dict) -> None:  # type: ignore[type-arg]
        entry = next(f for f in _files(d) if f["path"].startswith("images/blobs/sha256/"))
        entry["sha256"] = "f" * 64

    failure, _ = _statement_edited(world, rename)
    assert type(failure) is StatementMismatchError
    assert failure.message.endswith(f"is listed with sha256:{'f' * 64}, not the digest its name states")


LOCAL_DEMO = f"{LOCAL}/docker.io/library/demo:1.0"


def test_inputs_that_are_not_a_bundle(world: dict) -> None:
    from bundler.errors import InputError, UsageError, VerificationError
    missing = world["tmp"] / "missing.tar"
    for call in (lambda: verify.verify(missing, world["trust"], now=NOW),
                 lambda: verify.verify_and_extract(missing, world["trust"], world["tmp"] / "x", now=NOW)):
        with pytest.raises(InputError, match=f"^{missing}: cannot open the bundle: No such file"):
            call()
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]})
    (world["tmp"] / "taken").mkdir()
    (world["tmp"] / "dangling").symlink_to(world["tmp"] / "nowhere")
    for dest in ("taken", "dangling"):
        with pytest.raises(UsageError, match="already exists: a bundle is extracted only into a new folder"):
            verify.verify_and_extract(built.path, world["trust"], world["tmp"] / dest, now=NOW)
    with tarfile.open(world["tmp"] / "n.tar", "w") as tar:  # a tar, but no statement
        tar.addfile(_info("x", tarfile.REGTYPE, size=1), io.BytesIO(b"x"))
    failure = verify.verify(world["tmp"] / "n.tar", world["trust"], now=NOW).failure
    assert type(failure) is VerificationError
    assert failure.message == f"{world['tmp'] / 'n.tar'}: the first member is 'x', not bundle.intoto.json: not an airgap bundle"


def test_a_signature_file_over_one_mib_is_not_read(world: dict) -> None:
    from bundler.errors import ArchiveError
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]})
    doc = json.loads(built.signatures["vendor"])
    for size, ok in ((verify.MAX_SIGNATURE_BYTES, True), (verify.MAX_SIGNATURE_BYTES + 1, False)):
        padded = json.dumps(doc).encode()
        padded = padded[:-1] + b" " * (size - len(padded)) + b"}"
        assert len(padded) == size
        big = build_bundle(world["tmp"] / "big.tar", {}, files={**built.files, "_index": b""}, statement=built.statement,
                           extra={"signatures/vendor.sigstore.json": padded})
        result = verify.verify(big.path, world["trust"], now=NOW)
        if ok:
            assert result
        else:
            assert type(result.failure) is ArchiveError
            assert result.failure.message == (f"signatures/vendor.sigstore.json: {size} bytes, more than the "
                                              f"{1024 * 1024} allowed")


# --- bounded work on hostile bundles ------------------------------------------------------------------------


class _CountingReader(io.RawIOBase):
    """A read-only file that counts the bytes handed out: proof of how much of a bundle a scan touched."""

    def __init__(self, path: Path) -> None:
        self._f = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by close()
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
        n = self._f.readinto(b)
        self.bytes_read += n or 0
        return n  # type: ignore[no-any-return]

    def close(self) -> None:
        self._f.close()
        super().close()


def test_appended_members_stop_the_scan_at_the_first_unlisted_one(world: dict) -> None:
    # 20,000 one-byte members appended after the signatures, as `tar -rf` would: the statement (read
    # first) does not list them, so the first one dooms the bundle and no further header is read.
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]})
    with tarfile.open(built.path, "a", format=tarfile.PAX_FORMAT) as tf:
        for i in range(20_000):
            info = tarfile.TarInfo(f"zz/junk-{i:05d}")
            info.size = 1
            tf.addfile(info, io.BytesIO(b"j"))
    size = built.path.stat().st_size
    assert size > 15 * 1024 * 1024
    reader = _CountingReader(built.path)
    with pytest.raises(UnlistedMemberError, match="zz/junk-00000 is not listed"):
        verify.scan(reader, "b.tar")  # type: ignore[arg-type]
    reader.close()
    assert reader.bytes_read < 2 * 1024 * 1024, f"read {reader.bytes_read} of {size} bytes"
    rejects(built.path, world["trust"], UnlistedMemberError, 26, world["tmp"], text="zz/junk-00000 is not listed")


def test_signature_files_beyond_the_bound_are_refused(world: dict) -> None:
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]})
    with tarfile.open(built.path, "a", format=tarfile.PAX_FORMAT) as tf:
        for i in range(verify.MAX_SIGNATURE_MEMBERS):
            info = tarfile.TarInfo(f"signatures/x{i}.sigstore.json")
            info.size = 2
            tf.addfile(info, io.BytesIO(b"{}"))
    rejects(built.path, world["trust"], UnlistedMemberError, 26, world["tmp"],
            text=f"more than {verify.MAX_SIGNATURE_MEMBERS} members under signatures/")


def test_statement_not_first_is_not_a_bundle(world: dict) -> None:
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]})
    out = world["tmp"] / "reordered.tar"
    with tarfile.open(built.path) as src, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as dst:
        infos = src.getmembers()
        for info in infos[1:] + infos[:1]:
            dst.addfile(info, src.extractfile(info))
    rejects(out, world["trust"], VerificationError, 20, world["tmp"], text="not bundle.intoto.json")


def test_statement_without_a_files_list_cannot_bound_the_scan(world: dict) -> None:
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]})
    out = world["tmp"] / "nofiles.tar"
    with tarfile.open(built.path) as src, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as dst:
        for info in src.getmembers():
            data = src.extractfile(info).read()  # type: ignore[union-attr]
            if info.name == archive.STATEMENT:
                data = b'{"predicate": {}}'
                info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    rejects(out, world["trust"], StatementMismatchError, 29, world["tmp"], text="no readable predicate.files")


# --- the publicKey hint ---------------------------------------------------------------------------------------


def test_pinned_key_hint_is_sigstore_go_form_and_the_earlier_form_still_verifies(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    signer, pub = pki.signer("vendor", "ecdsa-p256")
    _, other_pub = pki.signer("other", "ecdsa-p256")
    trust = keys.load_trust(write_policy(tmp_path / "p.yaml", {"vendor": {"keys": [other_pub, pub]}}))
    built = build_bundle(tmp_path / "b.tar", {"vendor": signer})
    with open(built.path, "rb") as f:
        index = archive.read_index(f)
        doc = json.loads(archive.read_member(f, index.signatures["vendor"], cap=1 << 20))
    hint = doc["verificationMaterial"]["publicKey"]["hint"]
    assert hint == keys.key_hint(signer.public_key) and len(base64.b64decode(hint, validate=True)) == 32
    assert verify.verify(built.path, trust, now=NOW)
    # A bundle signed before the change carries `SHA256:<hex>`: it still selects the key and verifies.
    doc["verificationMaterial"]["publicKey"]["hint"] = signer.fingerprint
    archive.append_signature(built.path, "vendor", json.dumps(doc).encode(), replace=True)
    result = verify.verify(built.path, trust, now=NOW)
    assert result and result.authorities[0].keyid == signer.fingerprint
    # A hint naming no configured key is refused, in either form.
    doc["verificationMaterial"]["publicKey"]["hint"] = keys.key_hint(pki.signer("x", "ecdsa-p256")[0].public_key)
    archive.append_signature(built.path, "vendor", json.dumps(doc).encode(), replace=True)
    rejects(built.path, trust, UntrustedKeyError, 25, tmp_path, text="which the policy does not trust")


# --- verify --at: validity at a stated time, for audits ------------------------------------------------------


def test_cli_verify_at_a_stated_time_is_labelled_and_never_extracts(world: dict, run_cli) -> None:
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]})
    policy = str(world["policy"])
    leaf = world["vendor"].certificate  # valid from NOW - 1 day to NOW + 30 days
    inside = (NOW + dt.timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    res = run_cli("verify", str(built.path), "--policy", policy, "--at", inside)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0].startswith(f"validity checked at {inside[:-1]}+00:00 (--at: an audit")
    assert "not an acceptance for delivery" in res.stdout.splitlines()[-1]
    doc = json.loads(run_cli("verify", str(built.path), "--policy", policy, "--at", inside, "--json").stdout)
    assert doc["ok"] and doc["validAtGiven"] is True and doc["validAt"].startswith(inside[:-1])
    # After the leaf's notAfter: rejected as expired, although it is valid now.
    after = (leaf.not_valid_after_utc + dt.timedelta(seconds=1)).isoformat()
    res = run_cli("verify", str(built.path), "--policy", policy, "--at", after)
    assert res.returncode == 23 and "signing certificate serial" in res.stderr and "expired" in res.stderr
    # Before its notBefore: not yet valid (same code, its own message).
    before = (leaf.not_valid_before_utc - dt.timedelta(seconds=1)).isoformat()
    res = run_cli("verify", str(built.path), "--policy", policy, "--at", before)
    assert res.returncode == 23 and "is not valid before" in res.stderr
    # Delivery always checks now: --at with --extract is a usage error and nothing is written.
    dest = world["tmp"] / "out"
    res = run_cli("verify", str(built.path), "--policy", policy, "--at", inside, "--extract", str(dest))
    assert res.returncode == 2 and "requires validity now" in res.stderr and not dest.exists()
    res = run_cli("verify", str(built.path), "--policy", policy, "--at", "next tuesday")
    assert res.returncode == 2 and "--at: invalid time 'next tuesday'" in res.stderr


def test_an_empty_member_is_a_valid_member(world: dict) -> None:
    payload = small_payload()
    payload["manifests/empty.yaml"] = b""
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]}, files=payload)
    assert verify.verify(built.path, world["trust"], now=NOW)


def test_results_are_values(world: dict) -> None:
    built = build_bundle(world["tmp"] / "b.tar", {})
    first, second = (verify.verify(built.path, world["trust"], now=NOW) for _ in range(2))
    assert first == second and first.failure is not second.failure  # compared by their data, not the exception
    ok = verify.verify(build_bundle(world["tmp"] / "c.tar", {"vendor": world["vendor"]}).path, world["trust"], now=NOW)
    import dataclasses
    with pytest.raises(dataclasses.FrozenInstanceError):
        ok.authorities[0].ok = False  # type: ignore[misc]
    assert len({ok.authorities[0], ok.authorities[0]}) == 1


def test_at_most_64_signature_files_are_scanned(world: dict) -> None:
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]})
    for count, refused in ((verify.MAX_SIGNATURE_MEMBERS - 1, False), (verify.MAX_SIGNATURE_MEMBERS, True)):
        extra = {f"signatures/x{n}.sigstore.json": b"{}" for n in range(count)}  # plus the vendor's
        many = build_bundle(world["tmp"] / "m.tar", {}, files={**built.files, "_index": b""}, statement=built.statement,
                            extra={**extra, "signatures/vendor.sigstore.json": built.signatures["vendor"]})
        failure = verify.verify(many.path, world["trust"], now=NOW).failure
        message = f"{many.path}: more than 64 members under signatures/"
        assert (failure is not None and failure.message == message) is refused, count


def test_a_statement_over_64_mib_is_not_read(world: dict) -> None:
    from bundler.errors import ArchiveError
    for size, refused in ((verify.MAX_STATEMENT_BYTES, False), (verify.MAX_STATEMENT_BYTES + 1, True)):
        built = build_bundle(world["tmp"] / "b.tar", {}, files={"_index": b""}, statement=b" " * size)
        failure = verify.verify(built.path, world["trust"], now=NOW).failure
        assert (type(failure) is ArchiveError) is refused, size
        if refused:
            assert failure.message == f"bundle.intoto.json: {size} bytes, more than the {64 * 1024 * 1024} allowed"
        built.path.unlink()


def test_a_root_without_key_usage_may_issue(world: dict) -> None:
    # RFC 5280 4.2.1.3: keyUsage is checked only where the certificate carries it.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID
    key = keys.generate_private_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bare root")])
    root = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=9))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (world["tmp"] / "bare.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    trust = keys.load_trust(write_policy(world["tmp"] / "p.yaml", {"vendor": {"roots": [world["tmp"] / "bare.pem"]}}))
    signer = _leaf_signer(world, issuer=(key, root, world["tmp"] / "bare.pem"))
    assert _verify_signed_by(world, signer, trust)
