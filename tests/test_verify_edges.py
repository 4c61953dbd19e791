"""verify.py's remaining refusals, each with its error class, exit code and message, nothing left on
disk: malformed signature files (shape by shape), certificates whose usage forbids signing or whose
root is no CA, a pinned self-signed leaf, statements that are signed but do not describe the bundle,
and bundles without a statement or with an oversized signature. (tests/test_verify.py holds the main
cases; its `world` fixture and `rejects` helper are reused here.)"""

from __future__ import annotations

import datetime as dt
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bundler import archive, keys, verify
from bundler.attest import canonical_json
from bundler.errors import (
    ArchiveError,
    BadSignatureError,
    InputError,
    StatementMismatchError,
    UnlistedMemberError,
    UntrustedKeyError,
    UsageError,
    VerificationError,
)
from tests import test_verify
from tests.conftest import REPO
from tests.support.bundles import (
    EPOCH,
    NOW,
    build_bundle,
    raw_tar,
    sha,
    small_payload,
    statement_for,
    without_hint,
    write_policy,
)

world = test_verify.world
rejects = test_verify.rejects
SIG = archive.signature_name("vendor")
pytestmark = pytest.mark.filterwarnings("error")  # see tests/test_verify.py


# --- signature files, shape by shape --------------------------------------------------------------------


def _with_vendor_file(world: dict, edit: Any) -> Path:
    """A bundle whose vendor signature file is the real one, edited."""
    good = build_bundle(world["tmp"] / "good.tar", {"vendor": world["vendor"]})
    doc = json.loads(good.signatures["vendor"])
    data = edit(doc)
    out = world["tmp"] / "b.tar"
    archive.write([(archive.STATEMENT, good.statement), *good.files.items(),
                   (SIG, data if isinstance(data, bytes) else json.dumps(data).encode())], out, EPOCH)
    return out


def _two_sigs(doc: dict) -> dict:
    doc["dsseEnvelope"]["signatures"] *= 2
    return doc


def _payload_number(doc: dict) -> dict:
    doc["dsseEnvelope"]["payload"] = 7
    return doc


def _key_and_cert(doc: dict) -> dict:
    doc["verificationMaterial"]["publicKey"] = {"hint": "x"}
    return doc


def _empty_chain(doc: dict) -> dict:
    material = doc["verificationMaterial"]
    material.pop("certificate")
    material["x509CertificateChain"] = {"certificates": []}
    return doc


def _garbage_cert(doc: dict) -> dict:
    doc["verificationMaterial"]["certificate"]["rawBytes"] = "AAAA"
    return doc


@pytest.mark.parametrize(("edit", "error", "code", "text"), [
    (lambda d: json.dumps(d)[:-1].encode() + b', "mediaType": "x"}', BadSignatureError, 24,
     "malformed signature file: duplicate key in JSON object"),
    (lambda d: {**d, "messageSignature": {}}, BadSignatureError, 24,
     "malformed signature file: unexpected fields (only dsseEnvelope bundles are accepted)"),
    (lambda d: {**d, "dsseEnvelope": {**d["dsseEnvelope"], "payloadType": "text/plain"}}, BadSignatureError, 24,
     "malformed signature file: payloadType is not application/vnd.in-toto+json"),
    (_two_sigs, BadSignatureError, 24, "malformed signature file: the envelope must carry exactly one signature"),
    (_payload_number, BadSignatureError, 24, "malformed signature file: expected a base64 string"),
    (_key_and_cert, BadSignatureError, 24,
     "malformed signature file: verificationMaterial needs exactly one of certificate, x509CertificateChain or "
     "publicKey"),
    (_empty_chain, BadSignatureError, 24, "unreadable key material: x509CertificateChain must hold 1 to 6 "
                                          "certificates"),
    (_garbage_cert, BadSignatureError, 24, "unreadable key material"),
], ids=["duplicate-key", "extra-field", "payload-type", "two-signatures", "payload-not-text", "key-and-cert",
        "chain", "garbage-cert"])
def test_malformed_signature_files_are_refused(world: dict, edit: Any, error: type, code: int, text: str) -> None:
    rejects(_with_vendor_file(world, edit), world["trust"], error, code, world["tmp"], text=text)


# --- certificates --------------------------------------------------------------------------------------------


def _cert(public_key: Any, issuer_key: Any, issuer: x509.Name | None, *, ca: bool | None,
          key_usage: bool | None, eku: list[x509.ObjectIdentifier] | None, name: str) -> x509.Certificate:
    """A certificate with exactly the extensions asked for (None: the extension is absent)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer or subject).public_key(public_key)
               .serial_number(x509.random_serial_number())
               .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=30)))
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    if key_usage is not None:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=key_usage, content_commitment=False, key_encipherment=not key_usage,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _signed_with(world: dict, cert: x509.Certificate, key_path: Path, roots: list[x509.Certificate]) -> tuple[Path, keys.TrustPolicy]:
    cert_path = world["tmp"] / f"leaf-{cert.serial_number}.crt"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    signer = keys.load_signer(key_path, cert_path=cert_path)
    roots_path = world["tmp"] / f"roots-{cert.serial_number}.pem"
    roots_path.write_bytes(b"".join(r.public_bytes(serialization.Encoding.PEM) for r in roots))
    policy = write_policy(world["tmp"] / f"policy-{cert.serial_number}.yaml", {"vendor": {"roots": [roots_path]}})
    built = build_bundle(world["tmp"] / f"b-{cert.serial_number}.tar", {"vendor": signer})
    return built.path, keys.load_trust(policy)


SIGNING = [ExtendedKeyUsageOID.CODE_SIGNING]


@pytest.mark.parametrize(("key_usage", "eku", "text"), [
    (False, SIGNING, "the certificate's key usage does not allow signatures"),
    (True, [ExtendedKeyUsageOID.SERVER_AUTH], "the certificate's extended key usage does not include codeSigning"),
])
def test_a_leaf_whose_usage_forbids_signing_is_refused(world: dict, key_usage: bool, eku: list, text: str) -> None:
    ca_key, ca_cert, _ = world["ca"]
    priv, key_path, _ = world["pki"].key("odd-leaf")
    leaf = _cert(priv.public_key(), ca_key, ca_cert.subject, ca=False, key_usage=key_usage, eku=eku, name="odd")
    path, trust = _signed_with(world, leaf, key_path, [ca_cert])
    rejects(path, trust, UntrustedKeyError, 25, world["tmp"], text=text)


def test_a_leaf_without_usage_extensions_is_accepted(world: dict) -> None:
    ca_key, ca_cert, _ = world["ca"]
    priv, key_path, _ = world["pki"].key("plain-leaf")
    leaf = _cert(priv.public_key(), ca_key, ca_cert.subject, ca=None, key_usage=None, eku=None, name="plain")
    path, trust = _signed_with(world, leaf, key_path, [ca_cert])
    assert verify.verify(path, trust, now=NOW)


def test_a_root_without_basic_constraints_is_no_ca(world: dict) -> None:
    root_key, _, _ = world["pki"].key("bc-less-root")
    root = _cert(root_key.public_key(), root_key, None, ca=None, key_usage=None, eku=None, name="bc-less root")
    priv, key_path, _ = world["pki"].key("bc-less-leaf")
    leaf = _cert(priv.public_key(), root_key, root.subject, ca=False, key_usage=True, eku=SIGNING, name="bc-less")
    path, trust = _signed_with(world, leaf, key_path, [root])
    rejects(path, trust, UntrustedKeyError, 25, world["tmp"], text="does not chain to a root the policy trusts")


def test_a_chain_longer_than_the_bound_does_not_chain_and_a_ca_without_key_usage_may_issue(world: dict) -> None:
    pki = world["pki"]
    root = pki.ca("long-root", path_length=None)
    chain = [root]
    for n in range(verify.MAX_INTERMEDIATES + 1):
        chain.append(pki.intermediate(f"long-{n}", chain[-1], path_length=None))
    trust = keys.load_trust(write_policy(world["tmp"] / "long.yaml", {"vendor": {"roots": [root[2]]}}))
    at_bound, _ = pki.cert_signer("bound-leaf", chain[-2])  # MAX_INTERMEDIATES between leaf and root: fine
    assert verify.verify(build_bundle(world["tmp"] / "bound.tar", {"vendor": at_bound}).path, trust, now=NOW)
    signer, _ = pki.cert_signer("long-leaf", chain[-1])
    built = build_bundle(world["tmp"] / "long.tar", {"vendor": signer})
    rejects(built.path, trust, UntrustedKeyError, 25, world["tmp"],
            text=f"does not chain through {verify.MAX_INTERMEDIATES + 1} carried intermediate certificate(s) to a root")
    # a root CA certificate without a keyUsage extension (older PKIs) still issues
    root_key, _, _ = pki.key("ku-less-root")
    ku_less = _cert(root_key.public_key(), root_key, None, ca=True, key_usage=None, eku=None, name="ku-less root")
    priv, key_path, _ = pki.key("ku-less-leaf")
    leaf = _cert(priv.public_key(), root_key, ku_less.subject, ca=False, key_usage=True, eku=SIGNING, name="ku-less")
    path, trust = _signed_with(world, leaf, key_path, [ku_less])
    assert verify.verify(path, trust, now=NOW)


def test_a_pinned_self_signed_leaf_is_its_own_anchor(world: dict) -> None:
    priv, key_path, _ = world["pki"].key("self")
    leaf = keys.issue_certificate(priv.public_key(), common_name="self-signed vendor", issuer_key=priv,
                                  not_before=NOW - dt.timedelta(days=1), not_after=NOW + dt.timedelta(days=30))
    path, trust = _signed_with(world, leaf, key_path, [leaf])
    result = verify.verify(path, trust, now=NOW)
    assert result and result.authorities[0].serial == format(leaf.serial_number, "x")


# --- the statement, signed but wrong --------------------------------------------------------------------------


def _statement_dict() -> tuple[dict[str, bytes], dict]:
    payload = small_payload()
    index = payload.pop("_index")
    return payload, json.loads(statement_for(payload, index))


def _signed(world: dict, payload: dict[str, bytes], statement: bytes) -> Path:
    return build_bundle(world["tmp"] / "s.tar", {"vendor": world["vendor"]}, files=payload, statement=statement).path


def _edit(edit: Any) -> Any:
    def run(world: dict) -> Path:
        payload, doc = _statement_dict()
        edit(doc, payload)
        return _signed(world, payload, canonical_json(doc))
    return run


def _files(doc: dict) -> list[dict]:
    return doc["predicate"]["files"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(("make", "error", "code", "text"), [
    (lambda w: _signed(w, _statement_dict()[0], b"not json at all"), StatementMismatchError, 29,
     "bundle.intoto.json: no readable predicate.files (JSONDecodeError)"),
    (_edit(lambda d, p: d["predicate"].pop("files")), StatementMismatchError, 29,
     "bundle.intoto.json: no readable predicate.files (KeyError)"),
    (_edit(lambda d, p: (d["predicate"].update(files={}), p.clear())), StatementMismatchError, 29,
     "predicate.files is missing"),  # a mapping lets the header scan pass (nothing listed, nothing there)
    (_edit(lambda d, p: _files(d)[0].update(size=_files(d)[0]["size"] + 1)), UnlistedMemberError, 26,
     "bytes, the statement says"),
    (_edit(lambda d, p: _files(d)[0].update(size=-1)), StatementMismatchError, 29,
     "predicate.files[0] is not {path, size, sha256}"),
    (_edit(lambda d, p: _files(d).append({"path": "signatures/x.sigstore.json", "size": 1, "sha256": "0" * 64})),
     StatementMismatchError, 29, "predicate.files lists 'signatures/x.sigstore.json', which is never a payload member"),
    (_edit(lambda d, p: d.update(subject=[])), StatementMismatchError, 29, "no subject"),
    (_edit(lambda d, p: d["subject"].append({"name": "x", "digest": {"sha512": "0"}})), StatementMismatchError, 29,
     "subject[2] is not {name, digest: {sha256}}"),
    (_edit(lambda d, p: d["predicate"]["images"][0].update(local=d["predicate"]["images"][0]["local"].split("@")[0]
                                                             + "@sha256:" + "0" * 64)),
     StatementMismatchError, 29, "is pinned to another digest than its bundled"),
    (_edit(lambda d, p: d["predicate"]["charts"][0].update(path="charts/other.tgz")), StatementMismatchError, 29,
     "chart demo 1.0.0: charts/other.tgz is not a listed member"),
    (_edit(lambda d, p: d["predicate"].update(charts=[])), StatementMismatchError, 29,
     "charts/demo-1.0.0.tgz@sha256:"),
], ids=["not-json", "no-files", "files-a-mapping", "wrong-size", "bad-file-entry", "lists-a-signature", "no-subject", "bad-subject",
        "image-pinned-elsewhere", "chart-not-listed", "subject-not-in-predicate"])
def test_signed_statements_that_do_not_describe_the_bundle(world: dict, make: Any, error: type, code: int,
                                                            text: str) -> None:
    rejects(make(world), world["trust"], error, code, world["tmp"], text=text)


def test_a_subject_missing_from_the_predicate_says_which_side(world: dict) -> None:
    payload, doc = _statement_dict()
    doc["predicate"]["charts"] = []
    path = _signed(world, payload, canonical_json(doc))
    result = verify.verify(path, world["trust"], now=NOW)
    assert isinstance(result.failure, StatementMismatchError)
    assert str(result.failure).endswith(f"charts/demo-1.0.0.tgz@sha256:{sha(payload['charts/demo-1.0.0.tgz'])} is a "
                                        "subject but not in the predicate (the statement does not describe this "
                                        "bundle; rebuild it)")


# --- the tar around them ----------------------------------------------------------------------------------------


def test_a_tar_without_statement_is_not_a_bundle(world: dict) -> None:
    path = raw_tar(world["tmp"] / "n.tar", {"manifests/x.yaml": b"x", SIG: b"{}"})
    rejects(path, world["trust"], VerificationError, 20, world["tmp"],
            text="the first member is 'manifests/x.yaml', not bundle.intoto.json: not an airgap bundle")
    empty = raw_tar(world["tmp"] / "e.tar", {})
    rejects(empty, world["trust"], VerificationError, 20, world["tmp"], text="no bundle.intoto.json: not an airgap bundle")


def test_an_oversized_signature_file_is_refused_unread(world: dict) -> None:
    good = build_bundle(world["tmp"] / "good.tar", {"vendor": world["vendor"]})
    big = good.signatures["vendor"] + b" " * verify.MAX_SIGNATURE_BYTES
    path = raw_tar(world["tmp"] / "big.tar", {archive.STATEMENT: good.statement, **good.files, SIG: big})
    rejects(path, world["trust"], ArchiveError, 11, world["tmp"], text="more than the")


def test_a_misnamed_member_under_signatures_is_unlisted(world: dict) -> None:
    good = build_bundle(world["tmp"] / "good.tar", {"vendor": world["vendor"]})
    path = raw_tar(world["tmp"] / "odd.tar", {archive.STATEMENT: good.statement, **good.files,
                                               SIG: good.signatures["vendor"], "signatures/notes.txt": b"hi"})
    rejects(path, world["trust"], UnlistedMemberError, 26, world["tmp"],
            text="signatures/notes.txt is not signatures/<authority>.sigstore.json")


def test_a_missing_bundle_or_an_existing_destination_are_input_errors(world: dict) -> None:
    with pytest.raises(InputError, match="nope.tar: cannot open the bundle: No such file or directory"):
        verify.verify(world["tmp"] / "nope.tar", world["trust"], now=NOW)
    with pytest.raises(InputError, match="nope.tar: cannot open the bundle"):
        verify.verify_and_extract(world["tmp"] / "nope.tar", world["trust"], world["tmp"] / "new", now=NOW)
    (world["tmp"] / "taken").mkdir()
    with pytest.raises(UsageError, match="taken already exists: a bundle is extracted only into a new folder"):
        verify.verify_and_extract(world["tmp"] / "nope.tar", world["trust"], world["tmp"] / "taken", now=NOW)


def test_a_member_read_in_steps_2_3_must_hash_the_same_in_the_digest_pass(world: dict) -> None:
    # The statement and signatures are read (and checked) before the one hashing pass over the file; if
    # the file changed in between, the bytes hashed are not the bytes checked. Staging that race needs a
    # second writer at the right moment, so the pass is given a statement digest that differs instead.
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]})
    with open(built.path, "rb") as f:
        parts = verify.read_signed(f, "b.tar")
        listed, _ = verify.check_listing(parts, "b.tar")
        assert verify._check_digests(f, parts.index, listed, [(archive.STATEMENT, 0, sha(built.statement))],
                                     "b.tar") == sha(built.path.read_bytes())
        read = [(archive.STATEMENT, len(built.statement), sha(built.statement)), (SIG, 1, "0" * 64)]
        with pytest.raises(UnlistedMemberError) as err:
            verify._check_digests(f, parts.index, listed, read, "b.tar")
    assert (err.value.message, err.value.hint) == (
        f"b.tar: {SIG} changed while the bundle was being verified",
        "the bundle file is being modified; verify a stable copy")


def test_cli_extract_out_of_file_descriptors_leaves_nothing_and_says_raise_ulimit(world: dict) -> None:
    # The open-file limit reached while extracting (EMFILE): exit 11, one line that says what to do, no
    # traceback, and no `.out.staging-*` folder left (shutil.rmtree needs descriptors too, and left it).
    # The limit cannot simply be set when the process starts: verification holds as many files open at
    # once as extraction (the bundle and one more), and so does Python's own start-up. So it is lowered
    # while the command runs (prlimit(2), as `prlimit --pid` does), once the staging folder exists: with
    # stdin, stdout, stderr and the bundle open (descriptors 0-3), no member file can be opened. Thousands
    # of members keep the extraction going long enough for that.
    files = {**small_payload(), **{f"manifests/many/{i:04d}.yaml": b"kind: ConfigMap\n" for i in range(5000)}}
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]}, files=files)
    out = world["tmp"] / "out"
    child = subprocess.Popen([sys.executable, "-m", "bundler", "verify", str(built.path), "--policy",
                              str(world["policy"]), "--extract", str(out)],
                             env={**os.environ, "PYTHONPATH": str(REPO)}, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while child.poll() is None and not any(p.name.startswith(".out.staging-") for p in world["tmp"].iterdir()):
        time.sleep(0.001)
    assert child.poll() is None, "the command ended before its extraction was seen: give the bundle more members"
    resource.prlimit(child.pid, resource.RLIMIT_NOFILE, (4, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    _, stderr = child.communicate(timeout=300)
    assert (child.returncode, stderr) == (11, f"airgap-bundle: error: {out}: cannot extract: Too many open files "
                                              "(raise the open-file limit with ulimit -n, then run again)\n")
    assert sorted(p.name for p in world["tmp"].iterdir()) == ["b.tar", "pki", "policy.yaml"]


def test_a_pinned_key_is_valid_through_its_not_after_second(world: dict) -> None:
    signer, pub = world["pki"].signer("pinned")
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": signer})
    policy = {"vendor": {"keys": [{"path": str(pub), "notAfter": NOW.strftime("%Y-%m-%dT%H:%M:%SZ")}]}}
    trust = keys.load_trust(write_policy(world["tmp"] / "p.yaml", policy))
    assert verify.verify(built.path, trust, now=NOW)
    late = verify.verify(built.path, trust, now=NOW + dt.timedelta(seconds=1)).failure
    assert late is not None and late.message == (f"signatures/vendor.sigstore.json: the pinned key {signer.fingerprint} "
                                                 f"for vendor expired {NOW.isoformat()}; re-sign")


def test_what_verify_hands_on_is_immutable(world: dict) -> None:
    import dataclasses
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": world["vendor"]})
    result = verify.verify(built.path, world["trust"], now=NOW)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.members_checked = 0  # type: ignore[misc]
    with open(built.path, "rb") as f:
        parts = verify.read_signed(f, "b.tar")
    with pytest.raises(dataclasses.FrozenInstanceError):
        parts.statement = b"{}"  # type: ignore[misc]


def test_an_expired_intermediate_asks_for_a_re_signature_not_a_new_policy(world: dict) -> None:
    # Only the policy's own root expiring is the policy's problem; an intermediate is the signer's chain.
    pki = world["pki"]
    root = pki.ca("chain", path_length=1)
    issuing = pki.intermediate("issuing", root, not_after=NOW - dt.timedelta(days=1),
                               not_before=NOW - dt.timedelta(days=90))
    signer, _ = pki.cert_signer("vendor-chain", issuing)
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": signer})
    trust = keys.load_trust(write_policy(world["tmp"] / "p.yaml", {"vendor": {"roots": [root[2]]}}))
    failure = verify.verify(built.path, trust, now=NOW).failure
    assert failure is not None and failure.message.startswith(
        "signatures/vendor.sigstore.json: intermediate CA certificate serial ")
    assert failure.hint == verify.RESIGN_HINT


def test_a_signature_no_candidate_key_verifies_names_the_first_candidate(world: dict) -> None:
    # Without a hint every pinned key of the authority is a candidate; the result names the first tried.
    first, first_pub = world["pki"].signer("first")
    _, second_pub = world["pki"].signer("second")
    stranger, _ = world["pki"].signer("stranger")
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": stranger})
    unhinted = without_hint(built, world["tmp"] / "u.tar")
    policy = {"vendor": {"keys": [{"path": str(first_pub)}, {"path": str(second_pub)}]}}
    trust = keys.load_trust(write_policy(world["tmp"] / "p.yaml", policy))
    result = verify.verify(unhinted.path, trust, now=NOW)
    assert type(result.failure) is BadSignatureError
    assert result.failure.message == "signatures/vendor.sigstore.json: the signature does not verify"
    assert result.authorities[0].keyid == first.fingerprint
    # results are values: the same rejection twice compares equal (the exceptions they carry are not compared)
    again = verify.verify(unhinted.path, trust, now=NOW)
    assert again == result and again.authorities[0].error is not result.authorities[0].error


def test_an_accepted_pinned_key_reports_its_own_not_after(world: dict) -> None:
    # Without a hint every live pinned key is a candidate; the result names the key that verified, with
    # that key's notAfter (not the first candidate's).
    _, first_pub = world["pki"].signer("first")
    second, second_pub = world["pki"].signer("second")
    built = build_bundle(world["tmp"] / "b.tar", {"vendor": second})
    unhinted = without_hint(built, world["tmp"] / "u.tar")
    soon, later = NOW + dt.timedelta(days=10), NOW + dt.timedelta(days=400)
    policy = {"vendor": {"keys": [{"path": str(first_pub), "notAfter": soon.strftime("%Y-%m-%dT%H:%M:%SZ")},
                                  {"path": str(second_pub), "notAfter": later.strftime("%Y-%m-%dT%H:%M:%SZ")}]}}
    trust = keys.load_trust(write_policy(world["tmp"] / "p.yaml", policy))
    result = verify.verify(unhinted.path, trust, now=NOW)
    assert result and (result.authorities[0].keyid, result.authorities[0].not_after) == (second.fingerprint, later)
