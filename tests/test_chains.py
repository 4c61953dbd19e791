"""Certificate chains with intermediates: vendor root -> intermediate CA(s) -> signing certificate.

The signature file carries the leaf and its intermediates (Sigstore bundle `x509CertificateChain`, no
root); verify builds the path to a root of the policy and applies the same rules at every level.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from bundler import archive, keys, verify
from bundler.errors import ExpiredKeyError, InputError, NotYetValidError, UntrustedKeyError
from tests.support.bundles import NOW, Pki, build_bundle, write_policy


def _rejects(path: Path, trust: keys.TrustPolicy, error: type, code: int, text: str) -> None:
    result = verify.verify(path, trust, now=NOW)
    assert not result and type(result.failure) is error, result.failure
    assert result.failure.exit_code == code
    assert text in str(result.failure)


def _signature_doc(path: Path, authority: str = "vendor") -> dict:
    with open(path, "rb") as f:
        index = archive.read_index(f)
        return json.loads(archive.read_member(f, index.signatures[authority], cap=1 << 20))


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


def test_root_intermediate_leaf_verifies_and_the_chain_is_carried(pki: Pki, tmp_path: Path) -> None:
    root = pki.ca("vendor", path_length=1)
    issuing = pki.intermediate("issuing", root)
    signer, _ = pki.cert_signer("vendor", issuing)
    assert signer.intermediates == (issuing[1],)
    built = build_bundle(tmp_path / "b.tar", {"vendor": signer})
    material = _signature_doc(built.path)["verificationMaterial"]
    carried = [x509.load_der_x509_certificate(__import__("base64").b64decode(c["rawBytes"]))
               for c in material["x509CertificateChain"]["certificates"]]
    assert carried == [signer.certificate, issuing[1]]  # leaf first, no root
    trust = keys.load_trust(write_policy(tmp_path / "p.yaml", {"vendor": {"roots": [root[2]]}}))
    result = verify.verify(built.path, trust, now=NOW)
    assert result, result.failure
    assert result.authorities[0].serial == format(signer.certificate.serial_number, "x")  # type: ignore[union-attr]
    # The policy trusting the intermediate alone is not enough: roots are roots.
    only_issuing = keys.load_trust(write_policy(tmp_path / "q.yaml", {"vendor": {"roots": [pki.ca("other")[2]]}}))
    _rejects(built.path, only_issuing, UntrustedKeyError, 25, "through 1 carried intermediate")


def test_two_intermediates(pki: Pki, tmp_path: Path) -> None:
    root = pki.ca("vendor", path_length=2)
    policy_ca = pki.intermediate("policy", root, path_length=1)
    issuing = pki.intermediate("issuing", policy_ca)
    signer, cert_path = pki.cert_signer("vendor", issuing)
    assert len(x509.load_pem_x509_certificates(cert_path.read_bytes())) == 3
    built = build_bundle(tmp_path / "b.tar", {"vendor": signer})
    trust = keys.load_trust(write_policy(tmp_path / "p.yaml", {"vendor": {"roots": [root[2]]}}))
    assert verify.verify(built.path, trust, now=NOW)


def test_leaf_without_its_intermediate_does_not_chain(pki: Pki, tmp_path: Path) -> None:
    root = pki.ca("vendor", path_length=1)
    issuing = pki.intermediate("issuing", root)
    signer, _ = pki.cert_signer("vendor", issuing)
    bare = keys.Signer(signer.private_key, signer.public_key, signer.fingerprint, signer.certificate, signer.source)
    built = build_bundle(tmp_path / "b.tar", {"vendor": bare})
    trust = keys.load_trust(write_policy(tmp_path / "p.yaml", {"vendor": {"roots": [root[2]]}}))
    _rejects(built.path, trust, UntrustedKeyError, 25, "does not chain to a root")


def test_root_path_length_zero_refuses_an_intermediate(pki: Pki, tmp_path: Path) -> None:
    root = pki.ca("vendor", path_length=0)
    issuing = pki.intermediate("issuing", root)
    signer, _ = pki.cert_signer("vendor", issuing)
    built = build_bundle(tmp_path / "b.tar", {"vendor": signer})
    trust = keys.load_trust(write_policy(tmp_path / "p.yaml", {"vendor": {"roots": [root[2]]}}))
    _rejects(built.path, trust, UntrustedKeyError, 25, "at most 0 intermediate CA(s) (pathLenConstraint)")


@pytest.mark.parametrize(("window", "error", "code", "text"), [
    ({"not_after": NOW - dt.timedelta(days=1), "not_before": NOW - dt.timedelta(days=90)}, ExpiredKeyError, 23,
     "intermediate CA certificate serial"),
    ({"not_before": NOW + dt.timedelta(days=1)}, NotYetValidError, 23, "intermediate CA certificate serial"),
])
def test_intermediate_outside_its_validity_is_refused(pki: Pki, tmp_path: Path, window: dict, error: type,
                                                        code: int, text: str) -> None:
    root = pki.ca("vendor", path_length=1)
    issuing = pki.intermediate("issuing", root, **window)
    signer, _ = pki.cert_signer("vendor", issuing)
    built = build_bundle(tmp_path / "b.tar", {"vendor": signer})
    trust = keys.load_trust(write_policy(tmp_path / "p.yaml", {"vendor": {"roots": [root[2]]}}))
    _rejects(built.path, trust, error, code, text)


def test_intermediate_without_key_cert_sign_is_refused(pki: Pki, tmp_path: Path) -> None:
    root = pki.ca("vendor", path_length=1)
    key = keys.generate_private_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "no-certsign CA")])
    bad = (x509.CertificateBuilder().subject_name(name).issuer_name(root[1].subject).public_key(key.public_key())
           .serial_number(x509.random_serial_number())
           .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=30))
           .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
           .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                        data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                        crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
           .sign(root[0], keys._signing_hash(root[0])))
    path = pki.root / "bad-ca.pem"
    path.write_bytes(bad.public_bytes(serialization.Encoding.PEM))
    signer, _ = pki.cert_signer("vendor", (key, bad, path))
    built = build_bundle(tmp_path / "b.tar", {"vendor": signer})
    trust = keys.load_trust(write_policy(tmp_path / "p.yaml", {"vendor": {"roots": [root[2]]}}))
    _rejects(built.path, trust, UntrustedKeyError, 25, "is not allowed to sign certificates (keyUsage)")


def test_a_carried_root_is_ignored_and_a_foreign_one_is_not_trusted(pki: Pki, tmp_path: Path) -> None:
    root = pki.ca("vendor", path_length=1)
    issuing = pki.intermediate("issuing", root)
    signer, _ = pki.cert_signer("vendor", issuing)
    built = build_bundle(tmp_path / "b.tar", {"vendor": signer})
    trust = keys.load_trust(write_policy(tmp_path / "p.yaml", {"vendor": {"roots": [root[2]]}}))
    doc = _signature_doc(built.path)
    der = root[1].public_bytes(serialization.Encoding.DER)
    doc["verificationMaterial"]["x509CertificateChain"]["certificates"].append(
        {"rawBytes": __import__("base64").b64encode(der).decode()})
    archive.append_signature(built.path, "vendor", json.dumps(doc).encode(), replace=True)
    assert verify.verify(built.path, trust, now=NOW)  # the policy's root, carried again: harmless
    # An attacker's own root and intermediate, carried in the file: never an anchor.
    rogue_root = pki.ca("rogue", path_length=1)
    rogue = pki.intermediate("rogue-issuing", rogue_root)
    forged, _ = pki.cert_signer("forged", rogue)
    forged_bundle = build_bundle(tmp_path / "f.tar", {"vendor": forged})
    doc = _signature_doc(forged_bundle.path)
    doc["verificationMaterial"]["x509CertificateChain"]["certificates"].append(
        {"rawBytes": __import__("base64").b64encode(rogue_root[1].public_bytes(serialization.Encoding.DER)).decode()})
    archive.append_signature(forged_bundle.path, "vendor", json.dumps(doc).encode(), replace=True)
    _rejects(forged_bundle.path, trust, UntrustedKeyError, 25, "does not chain through 2 carried")


def test_signer_chain_file_must_be_in_issuing_order_without_the_root(pki: Pki) -> None:
    root = pki.ca("vendor", path_length=1)
    issuing = pki.intermediate("issuing", root)
    _, cert_path = pki.cert_signer("vendor", issuing)
    key_path = pki.root / "vendor.key"
    leaf, inter = x509.load_pem_x509_certificates(cert_path.read_bytes())
    pem = serialization.Encoding.PEM
    with_root = pki.root / "with-root.crt"
    with_root.write_bytes(leaf.public_bytes(pem) + inter.public_bytes(pem) + root[1].public_bytes(pem))
    with pytest.raises(InputError, match="ends with a self-signed root"):
        keys.load_signer(key_path, cert_path=with_root)
    wrong_order = pki.root / "wrong.crt"
    other = pki.intermediate("other", root)
    wrong_order.write_bytes(leaf.public_bytes(pem) + other[1].public_bytes(pem))
    with pytest.raises(InputError, match="did not issue certificate 1"):
        keys.load_signer(key_path, cert_path=wrong_order)


def test_cli_makes_a_chain_that_signs_and_verifies(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    for args in (["--out", "root", "--ca", "--path-length", "1", "--valid-days", "3650"],
                 ["--out", "issuing", "--ca", "--ca-key", "root.key", "--ca-cert", "root.crt"],
                 ["--out", "signing", "--ca-key", "issuing.key", "--ca-cert", "issuing.crt"]):
        result = run_cli("keys", "generate", *args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    chain = x509.load_pem_x509_certificates((tmp_path / "signing.crt").read_bytes())
    assert [c.subject.rfc4514_string() for c in chain] == ["CN=signing", "CN=issuing"]
    signer = keys.load_signer(tmp_path / "signing.key", cert_path=tmp_path / "signing.crt")
    built = build_bundle(tmp_path / "b.tar", {"vendor": signer})
    policy = write_policy(tmp_path / "policy.yaml", {"vendor": {"roots": [tmp_path / "root.crt"]}})
    result = run_cli("verify", str(built.path), "--policy", str(policy))
    assert result.returncode == 0, result.stderr
    assert "signature ok: vendor" in result.stdout
