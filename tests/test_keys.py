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


# --- each refusal with its exact reason, and the boundaries (mutation testing, docs/testing.md) -------------------

def test_public_key_checks_name_the_key_and_the_limit(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import dsa, ed448
    small = rsa.generate_private_key(public_exponent=65537, key_size=3071).public_key()
    assert small.key_size < keys.MIN_RSA_BITS
    for key, message in (
            (ec.generate_private_key(ec.SECP521R1()).public_key(), "k: ECDSA curve secp521r1 is not supported"),
            (small, f"k: RSA key of {small.key_size} bits is too small"),
            (dsa.generate_private_key(key_size=2048).public_key(), "k: unsupported key type DSAPublicKey"),
            (ed448.Ed448PrivateKey.generate().public_key(), "k: unsupported key type Ed448PublicKey")):
        with pytest.raises(InputError) as err:
            keys.check_public_key(key, what="k")
        assert err.value.message == message
    for kind in ("ecdsa-p256", "ecdsa-p384", "ed25519", "rsa-3072"):
        public = keys.generate_private_key(kind).public_key()
        assert keys.check_public_key(public, what="k") is public


def test_each_key_type_signs_with_its_own_hash() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    data = b"statement"
    p384, p256 = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP256R1())
    assert keys.verify_signature(p384.public_key(), p384.sign(data, ec.ECDSA(hashes.SHA384())), data)
    assert not keys.verify_signature(p384.public_key(), p384.sign(data, ec.ECDSA(hashes.SHA256())), data)
    assert keys.verify_signature(p256.public_key(), p256.sign(data, ec.ECDSA(hashes.SHA256())), data)
    assert not keys.verify_signature(p256.public_key(), p256.sign(data, ec.ECDSA(hashes.SHA384())), data)
    rsa_key = keys.generate_private_key("rsa-3072")
    assert keys.verify_signature(rsa_key.public_key(), rsa_key.sign(data, padding.PKCS1v15(), hashes.SHA256()), data)
    assert not keys.verify_signature(rsa_key.public_key(), rsa_key.sign(data, padding.PKCS1v15(), hashes.SHA256()), b"x")
    assert not keys.verify_signature(p256.public_key(), b"not DER", data)
    # the certificate issuer's signature uses the same rule
    pki_key = keys.generate_private_key("ecdsa-p384")
    cert = keys.issue_certificate(pki_key.public_key(), common_name="x", issuer_key=pki_key,
                                  not_after=NOW + dt.timedelta(days=1))
    assert cert.signature_hash_algorithm.name == "sha384"  # type: ignore[union-attr]
    ed = keys.generate_private_key("ed25519")
    assert keys.issue_certificate(ed.public_key(), common_name="x", issuer_key=ed,
                                  not_after=NOW + dt.timedelta(days=1)).signature_hash_algorithm is None


def test_key_files_are_read_up_to_one_mib(tmp_path: Path) -> None:
    (tmp_path / "big.key").write_bytes(b"x" * (keys.MAX_KEY_FILE_BYTES + 1))
    with pytest.raises(InputError) as err:
        keys.load_signer(tmp_path / "big.key")
    assert err.value.message == f"{tmp_path / 'big.key'}: private key larger than 1048576 bytes"
    (tmp_path / "full.key").write_bytes(b"x" * keys.MAX_KEY_FILE_BYTES)
    with pytest.raises(InputError, match="not a PEM private key"):
        keys.load_signer(tmp_path / "full.key")
    with pytest.raises(InputError, match=f"^{tmp_path / 'none.key'}: cannot read private key: No such file"):
        keys.load_signer(tmp_path / "none.key")


def test_private_key_files_that_cannot_be_used(tmp_path: Path) -> None:
    key = keys.generate_private_key()
    encrypted = keys.private_key_pem(key, PASSWORD)
    cases = [
        (encrypted, None, "k: the private key is encrypted and no password was given"),
        (encrypted, lambda: b"wrong", "k: wrong password or corrupt encrypted key"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", None, "k: cannot parse private key: "),
        (b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n", None,
         "k: PEM type 'RSA PRIVATE KEY' is not supported"),
        (b"-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n", lambda: b"p",
         "k: cannot parse private key: malformed PEM"),
    ]
    for data, password, message in cases:
        with pytest.raises(InputError) as err:
            keys.load_private_key(data, source="k", password=password)
        assert err.value.message.startswith(message), message
    assert keys.load_private_key(encrypted, source="k", password=lambda: PASSWORD).public_key() == key.public_key()
    cosign = keys.private_key_pem(key, PASSWORD, cosign=True)
    with pytest.raises(InputError) as err:
        keys.load_private_key(cosign, source="k", password=lambda: b"wrong")
    assert err.value.message == "k: wrong password for the cosign key"
    with pytest.raises(InputError, match="^a cosign key file needs a password"):
        keys.private_key_pem(key, None, cosign=True)
    assert all(len(line) <= 64 for line in cosign.splitlines())
    assert cosign.splitlines()[0] == b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"


def test_cosign_blobs_with_other_parameters_are_refused() -> None:
    import json
    doc = json.loads(GO_VECTOR)
    for change, message in (
            (lambda d: d["kdf"].update(name="argon2"), "unsupported kdf/cipher argon2/nacl/secretbox"),
            (lambda d: d["cipher"].update(name="aes"), "unsupported kdf/cipher scrypt/aes"),
            (lambda d: d["kdf"]["params"].update(N=16384), "unsupported scrypt parameters N=16384 r=8 p=1"),
            (lambda d: d["kdf"]["params"].update(r=4), "unsupported scrypt parameters N=32768 r=4 p=1")):
        bad = json.loads(json.dumps(doc))
        change(bad)
        with pytest.raises(ValueError) as err:
            keys.cosign_decrypt(json.dumps(bad).encode(), b"supersecret")
        assert str(err.value) == message
    encrypted = json.loads(keys.cosign_encrypt(b"x", b"pw", n=65536))
    assert encrypted["kdf"]["params"] == {"N": 65536, "r": 8, "p": 1}
    assert len(keys.base64.b64decode(encrypted["kdf"]["salt"])) == 32
    assert len(keys.base64.b64decode(encrypted["cipher"]["nonce"])) == 24
    assert keys.cosign_decrypt(json.dumps(encrypted).encode(), b"pw") == b"x"


def test_certificates_load_from_pem_or_der(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    _, cert, pem = pki.ca("root")
    (tmp_path / "root.der").write_bytes(cert.public_bytes(serialization.Encoding.DER))
    assert keys.load_certificates(pem) == keys.load_certificates(tmp_path / "root.der") == (cert,)
    (tmp_path / "junk.crt").write_bytes(b"junk")
    with pytest.raises(InputError, match=f"^{tmp_path / 'junk.crt'}: not an X.509 certificate"):
        keys.load_certificates(tmp_path / "junk.crt")


def test_generated_keys_and_certificates(tmp_path: Path) -> None:
    assert isinstance(keys.generate_private_key("ecdsa-p384").curve, ec.SECP384R1)  # type: ignore[union-attr]
    assert keys.generate_private_key("rsa-3072").key_size == 3072  # type: ignore[union-attr]
    with pytest.raises(InputError) as err:
        keys.generate_private_key("rsa-2048")
    assert err.value.message == "unknown key type 'rsa-2048'"
    key = keys.generate_private_key()
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    cert = keys.issue_certificate(key.public_key(), common_name="c", issuer_key=key, not_after=NOW + dt.timedelta(days=1))
    assert before - dt.timedelta(minutes=5, seconds=2) <= cert.not_valid_before_utc <= before - dt.timedelta(minutes=4)
    ca = keys.issue_certificate(key.public_key(), common_name="ca", issuer_key=key, ca=True,
                                not_after=NOW + dt.timedelta(days=1))
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign and not usage.digital_signature
    leaf_usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert leaf_usage.digital_signature and not leaf_usage.key_cert_sign
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).critical


def test_new_files_get_the_default_mode(tmp_path: Path) -> None:
    keys.write_new_file(tmp_path / "pub", b"public")
    assert (tmp_path / "pub").stat().st_mode & 0o777 == 0o644


def test_policy_times_and_defaults(tmp_path: Path) -> None:
    where = "p"
    assert keys.parse_time("2027-01-01T00:00:00Z", where) == dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    assert keys.parse_time("2027-01-01T02:00:00+02:00", where) == dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    assert keys.parse_time(dt.date(2027, 1, 2), where) == dt.datetime(2027, 1, 2, tzinfo=dt.UTC)
    assert keys.parse_time(dt.datetime(2027, 1, 3), where) == dt.datetime(2027, 1, 3, tzinfo=dt.UTC)
    with pytest.raises(InputError) as err:
        keys.parse_time("next tuesday", where)
    assert err.value.message == "p: invalid time 'next tuesday'"
    pki = Pki(tmp_path)
    ca = pki.ca("vendor")
    _, _, pub = pki.key("other")
    (tmp_path / "p.yaml").write_text(
        f"authorities:\n  - {{name: vendor, roots: ['{ca[2]}']}}\n  - {{name: other, keys: [{{path: '{pub}', "
        "notAfter: 2027-01-04}]}\n")  # a YAML date, not a string
    trust = keys.load_trust(tmp_path / "p.yaml")
    assert trust.required == {"vendor"} and not trust.authorities["other"].required
    assert trust.authorities["other"].keys[0].not_after == dt.datetime(2027, 1, 4, tzinfo=dt.UTC)
    assert trust.authorities["vendor"].has_anchor and trust.source == str(tmp_path / "p.yaml")


def test_policy_refusals_name_the_entry(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    ca = pki.ca("vendor")
    cases = {
        "authorities: [{name: Vendor, roots: [x]}]\n": "p.yaml: authorities[0].name: 'Vendor' does not match ",
        "authorities: [{name: vendor, roots: [x], colour: red}]\n": "p.yaml: authorities[0]: Additional properties",
        "authorities: {}\n": "p.yaml: authorities: {} is not of type 'array'",
        "[1, 2\n": "p.yaml: malformed YAML: ",
        f"authorities: [{{name: vendor, roots: ['{ca[2]}']}}, {{name: x, keys: [{{path: '{ca[2]}'}}]}}]\n":
            f"{ca[2]}: not a PEM public key: ",
        f"authorities: [{{name: vendor, roots: ['{tmp_path / 'p.yaml'}']}}]\n": f"{tmp_path / 'p.yaml'}: no PEM certificate",
    }
    for text, message in cases.items():
        (tmp_path / "p.yaml").write_text(text)
        with pytest.raises(InputError) as err:
            keys.load_trust(tmp_path / "p.yaml")
        assert err.value.message.removeprefix(f"{tmp_path}/").startswith(message.removeprefix(f"{tmp_path}/")), text
    p521 = ec.generate_private_key(ec.SECP521R1())
    bad_root = keys.issue_certificate(p521.public_key(), common_name="r", issuer_key=p521, ca=True,  # type: ignore[arg-type]
                                      not_after=NOW + dt.timedelta(days=1))
    (tmp_path / "p521.pem").write_bytes(bad_root.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(InputError, match="ECDSA curve secp521r1 is not supported"):
        keys.load_roots(tmp_path / "p521.pem")
    with pytest.raises(NoTrustAnchorError) as trust_err:
        keys.TrustPolicy({})
    assert trust_err.value.message == "policy: no trust anchor for the vendor"
    assert keys.valid_authority_name("integrator-1") and not keys.valid_authority_name("-x")


# --- the slow ones last: mutation runs stop at the first failure (-x), so cheap tests first -----------------------

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


def test_cli_a_cosign_key_of_the_wrong_shape_is_one_line_and_exit_2(tmp_path: Path, run_cli) -> None:
    import base64
    import json
    t = keys.COSIGN_PEM_TYPES[0]
    blob = base64.b64encode(json.dumps({"kdf": 1, "cipher": {}, "ciphertext": ""}).encode()).decode()
    (tmp_path / "bad.key").write_text(f"-----BEGIN {t}-----\n{blob}\n-----END {t}-----\n")
    (tmp_path / "ca.crt").write_text("unused: the key is read first\n")
    res = run_cli("keys", "generate", "--out", str(tmp_path / "leaf"), "--ca-key", str(tmp_path / "bad.key"),
                  "--ca-cert", str(tmp_path / "ca.crt"), env={keys.PASSWORD_ENV: "pw"})
    assert res.returncode == 2
    assert res.stderr == f"airgap-bundle: error: {tmp_path / 'bad.key'}: cannot parse private key: " \
                         "kdf and cipher are not JSON objects\n"
