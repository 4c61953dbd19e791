"""Keys, certificates and policies: formats (PKCS#8, encrypted, cosign), fingerprints, policy loading."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import nacl.exceptions
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from bundler import keys
from bundler.errors import InputError, NoTrustAnchorError
from tests.support.bundles import NOW, Pki, write_policy

PASSWORD = b"correct horse battery staple"

# go-securesystemslib encrypted/encrypted_test.go TestDecrypt vector: passphrase "supersecret".
GO_VECTOR = (b'{"kdf":{"name":"scrypt","params":{"N":32768,"r":8,"p":1},"salt":"N9a7x5JFGbrtB2uBR81jPwp0eiLR4A7FV3mjVAQrg1g="},'
             b'"cipher":{"name":"nacl/secretbox","nonce":"2h8HxMmgRfuYdpswZBQaU3xJ1nkA/5Ik"},'
             b'"ciphertext":"SEW6sUh0jf2wfdjJGPNS9+bkk2uB+Cxamf32zR8XkQ=="}')


def test_fingerprint_is_sha256_of_the_der_public_key() -> None:
    key = keys.generate_private_key()
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert keys.fingerprint(key.public_key()) == "SHA256:" + hashlib.sha256(der).hexdigest()


@pytest.mark.parametrize("kind", keys.KEY_KINDS)
def test_plain_and_encrypted_pkcs8_keys_load(tmp_path: Path, kind: str) -> None:
    key = keys.generate_private_key(kind)
    plain, enc = tmp_path / "plain.key", tmp_path / "enc.key"
    plain.write_bytes(keys.private_key_pem(key))
    enc.write_bytes(keys.private_key_pem(key, PASSWORD))
    assert b"ENCRYPTED PRIVATE KEY" in enc.read_bytes()
    asked = []
    a = keys.load_signer(plain, password=lambda: asked.append(1) or PASSWORD)
    assert not asked  # the password is asked only for encrypted keys
    b = keys.load_signer(enc, password=lambda: PASSWORD)
    assert a.fingerprint == b.fingerprint == keys.fingerprint(key.public_key())
    with pytest.raises(InputError, match="no password"):
        keys.load_signer(enc)
    with pytest.raises(InputError, match="wrong password"):
        keys.load_signer(enc, password=lambda: b"wrong")


def test_cosign_format_decrypts_the_go_test_vector() -> None:
    assert keys.cosign_decrypt(GO_VECTOR, b"supersecret") == b"reallyimportant"
    with pytest.raises(nacl.exceptions.CryptoError):
        keys.cosign_decrypt(GO_VECTOR, b"wrong")
    odd = GO_VECTOR.replace(b'"N":32768', b'"N":99')
    with pytest.raises(ValueError, match="unsupported scrypt"):
        keys.cosign_decrypt(odd, b"supersecret")


def test_cosign_key_files_round_trip(tmp_path: Path) -> None:
    key = keys.generate_private_key()
    pem = keys.private_key_pem(key, PASSWORD, cosign=True)
    assert pem.startswith(b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
    path = tmp_path / "cosign.key"
    path.write_bytes(pem)
    signer = keys.load_signer(path, password=lambda: PASSWORD)
    assert signer.fingerprint == keys.fingerprint(key.public_key())
    with pytest.raises(InputError, match="wrong password"):
        keys.load_signer(path, password=lambda: b"nope")
    # The older PEM label cosign wrote is read the same way.
    legacy = tmp_path / "legacy.key"
    legacy.write_bytes(pem.replace(b"SIGSTORE", b"COSIGN"))
    assert keys.load_signer(legacy, password=lambda: PASSWORD).fingerprint == signer.fingerprint


def test_unsupported_keys_are_refused_with_a_hint(tmp_path: Path) -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "small.key").write_bytes(keys.private_key_pem(small))  # type: ignore[arg-type]
    with pytest.raises(InputError, match="at least 3072"):
        keys.load_signer(tmp_path / "small.key")
    p521 = ec.generate_private_key(ec.SECP521R1())
    (tmp_path / "p521.key").write_bytes(keys.private_key_pem(p521))
    with pytest.raises(InputError, match="P-256"):
        keys.load_signer(tmp_path / "p521.key")
    traditional = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption())
    (tmp_path / "sec1.key").write_bytes(traditional)
    with pytest.raises(InputError, match="pkcs8"):
        keys.load_signer(tmp_path / "sec1.key")
    (tmp_path / "junk.key").write_text("hello")
    with pytest.raises(InputError, match="not a PEM"):
        keys.load_signer(tmp_path / "junk.key")


def test_certificate_must_be_for_the_signing_key(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    ca = pki.ca("root")
    signer, cert_path = pki.cert_signer("leaf", ca)
    assert signer.certificate is not None and signer.certificate.issuer == ca[1].subject
    _, other_key, _ = pki.key("other")
    with pytest.raises(InputError, match="another key"):
        keys.load_signer(other_key, cert_path=cert_path)


def test_issued_certificates_carry_the_expected_extensions(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    ca = pki.ca("root")
    signer, _ = pki.cert_signer("leaf", ca, not_after=NOW + dt.timedelta(days=7))
    leaf = signer.certificate
    assert leaf is not None
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca[1].extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert x509.oid.ExtendedKeyUsageOID.CODE_SIGNING in leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert leaf.not_valid_after_utc == NOW + dt.timedelta(days=7)
    leaf.verify_directly_issued_by(ca[1])


def test_policy_loads_roots_and_pinned_keys(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    ca = pki.ca("vendor")
    _, _, pub = pki.key("customer", "ed25519")
    policy = write_policy(tmp_path / "p.yaml", {
        "vendor": {"roots": [ca[2].name]},  # relative to the policy file
        "customer": {"required": True, "keys": [{"path": str(pub), "notAfter": "2027-01-01T00:00:00Z"}]},
        "integrator": {"keys": [pub]},
    })
    trust = keys.load_trust(policy)
    assert trust.required == {"vendor", "customer"}
    assert trust.authorities["vendor"].roots == (ca[1],)
    pinned = trust.authorities["customer"].keys[0]
    assert pinned.not_after == dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    assert pinned.fingerprint.startswith("SHA256:")


def test_policy_errors(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    ca = pki.ca("vendor")
    with pytest.raises(NoTrustAnchorError):
        keys.load_trust(write_policy(tmp_path / "p.yaml", {"vendor": {}}))
    with pytest.raises(InputError, match="always required"):
        keys.load_trust(write_policy(tmp_path / "p.yaml", {"vendor": {"required": False, "roots": [ca[2]]}}))
    (tmp_path / "bad.yaml").write_text("authorities:\n  - name: vendor\n    roots: [x.pem]\n    colour: red\n")
    with pytest.raises(InputError, match="authorities\\[0\\]"):
        keys.load_trust(tmp_path / "bad.yaml")
    (tmp_path / "twice.yaml").write_text(f"authorities:\n  - {{name: vendor, roots: ['{ca[2]}']}}\n"
                                         f"  - {{name: vendor, roots: ['{ca[2]}']}}\n")
    with pytest.raises(InputError, match="twice"):
        keys.load_trust(tmp_path / "twice.yaml")
    with pytest.raises(InputError, match="cannot read"):
        keys.load_trust(write_policy(tmp_path / "p.yaml", {"vendor": {"roots": ["missing.pem"]}}))


def test_write_new_file_never_overwrites(tmp_path: Path) -> None:
    keys.write_new_file(tmp_path / "k", b"secret", mode=0o600)
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600
    with pytest.raises(InputError, match="already exists"):
        keys.write_new_file(tmp_path / "k", b"other")
    assert (tmp_path / "k").read_bytes() == b"secret"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k"]


def test_cli_keys_generate_ca_and_short_lived_leaf(tmp_path: Path, run_cli) -> None:
    env = {keys.PASSWORD_ENV: "pw"}
    res = run_cli("keys", "generate", "--out", str(tmp_path / "root"), "--ca", "--valid-days", "3650", "--encrypt",
                  env=env)
    assert res.returncode == 0, res.stderr
    assert b"ENCRYPTED PRIVATE KEY" in (tmp_path / "root.key").read_bytes()
    assert (tmp_path / "root.key").stat().st_mode & 0o777 == 0o600
    res = run_cli("keys", "generate", "--out", str(tmp_path / "signing"), "--type", "ed25519", "--cert",
                  "--ca-key", str(tmp_path / "root.key"), "--ca-cert", str(tmp_path / "root.crt"),
                  "--not-after", "2030-01-01", env=env)
    assert res.returncode == 0, res.stderr
    leaf = x509.load_pem_x509_certificate((tmp_path / "signing.crt").read_bytes())
    root = x509.load_pem_x509_certificate((tmp_path / "root.crt").read_bytes())
    leaf.verify_directly_issued_by(root)
    assert leaf.not_valid_after_utc == dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert "fingerprint SHA256:" in res.stdout
    res = run_cli("keys", "generate", "--out", str(tmp_path / "signing"), env=env)
    assert res.returncode == 2 and "already exists" in res.stderr
    res = run_cli("keys", "generate", "--out", str(tmp_path / "cos"), "--cosign", env=env)
    assert res.returncode == 0 and b"ENCRYPTED SIGSTORE PRIVATE KEY" in (tmp_path / "cos.key").read_bytes()
