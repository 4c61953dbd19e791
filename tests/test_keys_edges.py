"""keys.py's refusals, each with its exact message: key types, oversized and malformed files, cosign
blobs with other ciphers, certificates signed by RSA and Ed25519 issuers, policy times and anchors."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import dsa

from bundler import keys
from bundler.errors import InputError
from tests.support.bundles import NOW, Pki, write_policy


def test_a_dsa_key_is_an_unsupported_type() -> None:
    with pytest.raises(InputError, match="k.pub: unsupported key type"):
        keys.check_public_key(dsa.generate_private_key(2048).public_key(), what="k.pub")


def test_a_key_file_over_the_cap_is_refused_before_parsing(tmp_path: Path) -> None:
    big = tmp_path / "big.key"
    big.write_bytes(b"-" * (keys.MAX_KEY_FILE_BYTES + 1))
    with pytest.raises(InputError, match=f"big.key: private key larger than {keys.MAX_KEY_FILE_BYTES} bytes"):
        keys.load_signer(big)


def test_malformed_cosign_files_are_parse_errors(tmp_path: Path) -> None:
    t = keys.COSIGN_PEM_TYPES[0]
    cut = tmp_path / "cut.key"
    cut.write_text(f"-----BEGIN {t}-----\nAAAA\n")  # no END line
    with pytest.raises(InputError, match="cut.key: cannot parse private key: malformed PEM"):
        keys.load_signer(cut, password=lambda: b"x")
    blob = json.dumps({"kdf": {"name": "pbkdf2"}, "cipher": {"name": "aes-gcm"}, "ciphertext": ""}).encode()
    import base64
    other = tmp_path / "other.key"
    other.write_text(f"-----BEGIN {t}-----\n{base64.b64encode(blob).decode()}\n-----END {t}-----\n")
    with pytest.raises(InputError, match="other.key: cannot parse private key: unsupported kdf/cipher pbkdf2/aes-gcm"):
        keys.load_signer(other, password=lambda: b"x")


def test_a_certificate_file_that_is_not_one(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    _, key_path, _ = pki.key("leaf")
    junk = tmp_path / "leaf.crt"
    junk.write_bytes(b"\x30\x03\x02\x01\x00")
    with pytest.raises(InputError, match="leaf.crt: not an X.509 certificate"):
        keys.load_signer(key_path, cert_path=junk)


def test_unknown_key_kind_and_a_cosign_file_without_password() -> None:
    with pytest.raises(InputError, match="unknown key type 'dsa-1024'"):
        keys.generate_private_key("dsa-1024")
    with pytest.raises(InputError, match="a cosign key file needs a password"):
        keys.private_key_pem(keys.generate_private_key(), cosign=True)


@pytest.mark.parametrize("issuer_kind", ["ed25519", "rsa-3072"])
def test_certificates_issued_by_ed25519_and_rsa_cas_verify(issuer_kind: str) -> None:
    issuer = keys.generate_private_key(issuer_kind)
    ca = keys.issue_certificate(issuer.public_key(), common_name="root", ca=True, issuer_key=issuer,
                                not_after=NOW + dt.timedelta(days=10))
    leaf_key = keys.generate_private_key()
    leaf = keys.issue_certificate(leaf_key.public_key(), common_name="leaf", issuer_key=issuer, issuer_cert=ca,
                                  not_after=NOW + dt.timedelta(days=1))
    leaf.verify_directly_issued_by(ca)  # raises if the signature algorithm did not fit the issuer key


def test_policy_not_after_as_yaml_timestamp_date_and_text(tmp_path: Path) -> None:
    _, _, pub = Pki(tmp_path).key("vendor")
    for value, expected in (("2030-01-02T03:04:05Z", dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)),
                            ("2030-01-02", dt.datetime(2030, 1, 2, tzinfo=dt.UTC)),
                            ("'2030-01-02T03:04:05+02:00'",
                             dt.datetime(2030, 1, 2, 1, 4, 5, tzinfo=dt.UTC))):
        policy = tmp_path / "p.yaml"
        policy.write_text(f"authorities:\n- name: vendor\n  keys:\n  - path: {pub}\n    notAfter: {value}\n")
        assert keys.load_trust(policy).authorities["vendor"].keys[0].not_after == expected
    policy.write_text(f"authorities:\n- name: vendor\n  keys:\n  - path: {pub}\n    notAfter: soon\n")
    with pytest.raises(InputError, match=r"p.yaml: authorities\[0\]: invalid time 'soon'"):
        keys.load_trust(policy)


def test_policy_anchor_files_that_are_not_keys_or_certificates(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not pem\n")
    with pytest.raises(InputError, match="junk.pem: not a PEM public key"):
        keys.load_trust(write_policy(tmp_path / "k.yaml", {"vendor": {"keys": [junk]}}))
    with pytest.raises(InputError, match="junk.pem: no PEM certificate"):
        keys.load_trust(write_policy(tmp_path / "r.yaml", {"vendor": {"roots": [junk]}}))


def test_malformed_policy_yaml(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("authorities: [\n")
    with pytest.raises(InputError, match="p.yaml: malformed YAML"):
        keys.load_trust(policy)


def test_a_certificate_naming_itself_as_issuer_but_signed_by_another_key_is_not_self_signed() -> None:
    own, other = keys.generate_private_key(), keys.generate_private_key()
    real = keys.issue_certificate(own.public_key(), common_name="root", ca=True, issuer_key=own,
                                  not_after=NOW + dt.timedelta(days=1))
    forged = keys.issue_certificate(own.public_key(), common_name="root", ca=True, issuer_key=other,
                                    not_after=NOW + dt.timedelta(days=1))
    assert keys.is_self_signed(real) and not keys.is_self_signed(forged)


# --- what the mutation run of keys.py found unchecked (docs/testing-mutation.md) ------------------------------------

# go-securesystemslib encrypted/encrypted_test.go TestDecrypt vector: passphrase "supersecret".
GO_DOC = {"kdf": {"name": "scrypt", "params": {"N": 32768, "r": 8, "p": 1},
                  "salt": "N9a7x5JFGbrtB2uBR81jPwp0eiLR4A7FV3mjVAQrg1g="},
          "cipher": {"name": "nacl/secretbox", "nonce": "2h8HxMmgRfuYdpswZBQaU3xJ1nkA/5Ik"},
          "ciphertext": "SEW6sUh0jf2wfdjJGPNS9+bkk2uB+Cxamf32zR8XkQ=="}


def _cosign_pem(doc: object) -> bytes:
    import base64
    t = keys.COSIGN_PEM_TYPES[0]
    return f"-----BEGIN {t}-----\n{base64.b64encode(json.dumps(doc).encode()).decode()}\n-----END {t}-----\n".encode()


def _load_error(data: bytes, password: bytes = b"supersecret") -> str:
    with pytest.raises(InputError) as err:
        keys.load_private_key(data, source="k", password=lambda: password)
    return err.value.message


def test_a_cosign_file_of_the_wrong_shape_is_a_parse_error_not_a_traceback() -> None:
    # kdf or cipher that are not JSON objects once raised AttributeError (a traceback from the CLI).
    assert _load_error(_cosign_pem({**GO_DOC, "kdf": 1})) == "k: cannot parse private key: kdf and cipher are not JSON objects"
    assert _load_error(_cosign_pem({**GO_DOC, "cipher": "x"})) == \
        "k: cannot parse private key: kdf and cipher are not JSON objects"
    assert _load_error(_cosign_pem({"cipher": GO_DOC["cipher"]})) == "k: cannot parse private key: 'kdf'"  # KeyError
    assert _load_error(_cosign_pem([GO_DOC])).startswith("k: cannot parse private key: list indices")  # TypeError


def test_a_damaged_cosign_file_is_not_reported_as_a_wrong_password() -> None:
    # PyNaCl's size errors are CryptoErrors too; only a ciphertext that fails authentication means a wrong password.
    short_nonce = {**GO_DOC, "cipher": {"name": "nacl/secretbox", "nonce": "AAAA"}}
    assert _load_error(_cosign_pem(short_nonce)) == \
        "k: cannot parse private key: The nonce must be exactly 24 bytes long"
    assert _load_error(_cosign_pem({**GO_DOC, "ciphertext": "AAAA"})) == \
        "k: cannot parse private key: Input ciphertext must be at least 16 long"
    assert _load_error(_cosign_pem(GO_DOC), b"wrong") == "k: wrong password for the cosign key"


@pytest.mark.parametrize("field", ["salt", "nonce", "ciphertext", "pem"])
def test_cosign_base64_is_strict(field: str) -> None:
    # A stray character is refused, not skipped: the bytes decrypted are exactly the file's.
    doc = json.loads(json.dumps(GO_DOC))
    part = doc["kdf"] if field == "salt" else doc["cipher"] if field == "nonce" else doc
    if field != "pem":
        part[field] = part[field][:8] + "*" + part[field][8:]
        with pytest.raises(ValueError, match="Only base64 data is allowed|Non-base64 digit found"):
            keys.cosign_decrypt(json.dumps(doc).encode(), b"supersecret")
        return
    lines = keys.private_key_pem(keys.generate_private_key(), b"pw", cosign=True).splitlines()
    lines[1] = lines[1][:8] + b"*" + lines[1][8:]
    assert _load_error(b"\n".join(lines) + b"\n", b"pw") == \
        "k: cannot parse private key: Only base64 data is allowed"


# Made by keys.cosign_encrypt(b"owasp", b"pw", n=131072): go-securesystemslib's OWASP parameter set.
OWASP_BLOB = (b'{"kdf":{"name":"scrypt","params":{"N":131072,"r":8,"p":1},'
              b'"salt":"YJzs76AoBOfrwfE3HcoW5LW3APpa4WW8Xs1nSkODJyo="},'
              b'"cipher":{"name":"nacl/secretbox","nonce":"HATzkXwHArjg8r77WHcBE3pI+1NtgJNT"},'
              b'"ciphertext":"fjps1TN7JRF4uIe88YIl230N9JPY"}')


def test_the_owasp_scrypt_parameters_decrypt_and_larger_ones_are_refused() -> None:
    # Legacy (N=32768) and Standard (65536) are tested in test_keys.py; OWASP is 131072, each with r=8, p=1.
    assert keys.cosign_decrypt(OWASP_BLOB, b"pw") == b"owasp"
    for n, r, p in ((262144, 8, 1), (131072, 16, 1), (131072, 8, 2)):
        changed = OWASP_BLOB.replace(b'"N":131072,"r":8,"p":1', f'"N":{n},"r":{r},"p":{p}'.encode())
        with pytest.raises(ValueError, match=f"^unsupported scrypt parameters N={n} r={r} p={p}$"):
            keys.cosign_decrypt(changed, b"pw")


def _unknown_algorithm(der: bytes) -> bytes:
    # Ed25519's OID 1.3.101.112 made 1.3.101.99, which no library knows.
    return der.replace(bytes.fromhex("06032b6570"), bytes.fromhex("06032b6563"))


def test_keys_of_an_unknown_algorithm_are_refused_in_one_line(tmp_path: Path) -> None:
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    key = ed25519.Ed25519PrivateKey.generate()
    private = _unknown_algorithm(key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
    pem = b"-----BEGIN PRIVATE KEY-----\n" + base64.encodebytes(private) + b"-----END PRIVATE KEY-----\n"
    with pytest.raises(InputError) as err:
        keys.load_private_key(pem, source="k")
    assert err.value.message == "k: cannot parse private key: Unknown key type: 1.3.101.99"
    public = _unknown_algorithm(keys.public_der(key.public_key()))
    path = tmp_path / "odd.pub"
    path.write_bytes(b"-----BEGIN PUBLIC KEY-----\n" + base64.encodebytes(public) + b"-----END PUBLIC KEY-----\n")
    with pytest.raises(InputError) as err:
        keys.load_pinned_key(path)
    assert err.value.message == f"{path}: not a PEM public key: Unknown key type: 1.3.101.99"


def test_an_ed25519_signature_is_over_the_data_itself() -> None:
    key = keys.generate_private_key("ed25519")
    assert keys.verify_signature(key.public_key(), key.sign(b"statement"), b"statement")  # type: ignore[call-arg]
    assert not keys.verify_signature(key.public_key(), key.sign(b"statement"), b"statement!")  # type: ignore[call-arg]


def test_verify_signature_says_no_for_a_key_type_it_does_not_support() -> None:
    key = dsa.generate_private_key(2048)
    from cryptography.hazmat.primitives import hashes
    assert not keys.verify_signature(key.public_key(), key.sign(b"d", hashes.SHA256()), b"d")  # type: ignore[arg-type]


def test_a_policy_file_is_read_up_to_one_mib(tmp_path: Path) -> None:
    _, _, pub = Pki(tmp_path).key("vendor")
    text = f"authorities: [{{name: vendor, keys: [{{path: '{pub}'}}]}}]\n#"
    policy = tmp_path / "p.yaml"
    policy.write_text(text + "x" * (keys.MAX_POLICY_BYTES - len(text)))
    assert policy.stat().st_size == 1 << 20
    assert keys.load_trust(policy).authorities["vendor"].keys[0].source == str(pub)
    policy.write_text(text + "x" * (keys.MAX_POLICY_BYTES - len(text) + 1))
    with pytest.raises(InputError) as err:
        keys.load_trust(policy)
    assert err.value.message == f"{policy}: policy larger than 1048576 bytes"


def test_the_loaded_policy_and_signer_cannot_be_changed_and_never_print_the_private_key(tmp_path: Path) -> None:
    import dataclasses
    pki = Pki(tmp_path)
    ca = pki.ca("vendor")
    signer, _ = pki.cert_signer("leaf", ca)
    _, _, pub = pki.key("customer")
    trust = keys.load_trust(write_policy(tmp_path / "p.yaml", {"vendor": {"roots": [ca[2]]}, "customer": {"keys": [pub]}}))
    # TrustPolicy checks the vendor anchor once, when it is made: it must stay as checked.
    for obj, name in ((trust, "authorities"), (trust.authorities["vendor"], "roots"),
                      (trust.authorities["customer"].keys[0], "not_after"), (signer, "certificate")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, name, None)
    assert "private_key" not in repr(signer) and "public_key=" in repr(signer)


def test_the_key_hint_and_the_fingerprint_name_the_same_digest_in_two_forms(tmp_path: Path) -> None:
    import base64
    import hashlib
    signer, _ = Pki(tmp_path).signer("vendor")
    digest = hashlib.sha256(keys.public_der(signer.public_key)).digest()
    assert signer.hint == keys.key_hint(signer.public_key) == base64.b64encode(digest).decode()  # sigstore-go's form
    assert signer.fingerprint == "SHA256:" + digest.hex()  # the form of bundles signed before 0.2


def test_a_dangling_symlink_at_the_output_path_is_never_followed(tmp_path: Path) -> None:
    # path.exists() follows the link and says no; the final link() refuses, and the message is the same.
    target, link = tmp_path / "elsewhere.key", tmp_path / "new.key"
    link.symlink_to(target)
    with pytest.raises(InputError) as err:
        keys.write_new_file(link, b"secret")
    assert err.value.message == f"{link} already exists"
    assert link.is_symlink() and not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.key"]  # no temporary file left


def _self_named(public_key: object, signing_key: object, kind: str = "cert") -> object:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "root")])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(public_key)  # type: ignore[arg-type]
            .serial_number(1).not_valid_before(NOW).not_valid_after(NOW + dt.timedelta(days=1))
            .sign(signing_key, hashes.SHA256()))  # type: ignore[arg-type]


def test_a_self_named_certificate_its_own_key_cannot_check_is_not_self_signed() -> None:
    from cryptography.hazmat.primitives.asymmetric import x25519
    ec_key, rsa_key = keys.generate_private_key(), keys.generate_private_key("rsa-3072")
    # An RSA key under an ECDSA signature (ValueError), an X25519 key that cannot sign at all (TypeError).
    assert not keys.is_self_signed(_self_named(rsa_key.public_key(), ec_key))  # type: ignore[arg-type]
    assert not keys.is_self_signed(_self_named(x25519.X25519PrivateKey.generate().public_key(), ec_key))  # type: ignore[arg-type]
    assert keys.is_self_signed(_self_named(ec_key.public_key(), ec_key))  # type: ignore[arg-type]


def test_chain_file_refusals_name_the_certificates(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    pem = serialization.Encoding.PEM
    pki = Pki(tmp_path)
    root = pki.ca("vendor", path_length=2)
    upper = pki.intermediate("upper", root, path_length=1)
    lower = pki.intermediate("lower", upper)
    _, cert_path = pki.cert_signer("leaf", lower)
    key_path = tmp_path / "leaf.key"
    leaf = keys.load_certificates(cert_path)[0]
    chain = tmp_path / "chain.crt"
    chain.write_bytes(b"".join(c.public_bytes(pem) for c in (leaf, lower[1], upper[1])))
    assert keys.load_signer(key_path, cert_path=chain).intermediates == (lower[1], upper[1])
    # the second link broken: numbers count from 1, leaf first
    chain.write_bytes(b"".join(c.public_bytes(pem) for c in (leaf, lower[1], root[1])))
    with pytest.raises(InputError) as err:
        keys.load_signer(key_path, cert_path=chain)
    assert err.value.message == (f"{chain}: certificate 3 (CN=vendor root CA) did not issue certificate 2 "
                                 "(CN=lower intermediate CA)")
    chain.write_bytes(b"".join(c.public_bytes(pem) for c in (leaf, lower[1], upper[1], root[1])))
    with pytest.raises(InputError) as err:
        keys.load_signer(key_path, cert_path=chain)
    assert err.value.message == f"{chain}: the chain ends with a self-signed root (CN=vendor root CA)"
    # the shortest such file: a leaf the root issued, then the root
    direct, _ = pki.cert_signer("direct", root)
    assert direct.intermediates == ()
    chain.write_bytes(b"".join(c.public_bytes(pem) for c in (direct.certificate, root[1])))  # type: ignore[union-attr]
    with pytest.raises(InputError) as err:
        keys.load_signer(tmp_path / "direct.key", cert_path=chain)
    assert err.value.message == f"{chain}: the chain ends with a self-signed root (CN=vendor root CA)"


def test_a_self_signed_leaf_alone_is_a_valid_certificate_file(tmp_path: Path) -> None:
    # Only a chain that goes on after the leaf may not end in a root: a lone self-signed leaf is pinned as itself.
    from cryptography.hazmat.primitives import serialization
    key, key_path, _ = Pki(tmp_path).key("leaf")
    cert = keys.issue_certificate(key.public_key(), common_name="leaf", issuer_key=key,
                                  not_after=NOW + dt.timedelta(days=1))
    assert keys.is_self_signed(cert)
    (tmp_path / "leaf.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    signer = keys.load_signer(key_path, cert_path=tmp_path / "leaf.crt")
    assert signer.certificate == cert and signer.intermediates == ()


def test_issued_certificates_carry_exactly_the_key_usages_and_criticality_of_rfc_5280(tmp_path: Path) -> None:
    from cryptography import x509
    pki = Pki(tmp_path)
    root = pki.ca("vendor", path_length=None)
    assert root[1].extensions.get_extension_for_class(x509.BasicConstraints).value.path_length is None
    issuing = pki.intermediate("issuing", root, path_length=1)
    signer, _ = pki.cert_signer("leaf", issuing)
    leaf = signer.certificate
    assert leaf is not None

    def usage(**on: bool) -> x509.KeyUsage:
        flags = dict.fromkeys(("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                               "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"), False)
        return x509.KeyUsage(**{**flags, **on})

    assert issuing[1].extensions.get_extension_for_class(x509.KeyUsage).value == usage(key_cert_sign=True, crl_sign=True)
    assert leaf.extensions.get_extension_for_class(x509.KeyUsage).value == usage(digital_signature=True)
    assert issuing[1].extensions.get_extension_for_class(x509.BasicConstraints).value == x509.BasicConstraints(True, 1)
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value == x509.BasicConstraints(False, None)
    critical = {ext.oid._name: ext.critical for ext in leaf.extensions}
    assert critical == {"basicConstraints": True, "subjectKeyIdentifier": False, "keyUsage": True,
                        "extendedKeyUsage": False, "authorityKeyIdentifier": False}
    assert {ext.oid._name: ext.critical for ext in root[1].extensions} == {
        "basicConstraints": True, "subjectKeyIdentifier": False, "keyUsage": True}  # self-signed: no AKI
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = issuing[1].extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest


def test_a_certificate_starts_five_minutes_before_it_is_issued() -> None:
    key = keys.generate_private_key()
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    cert = keys.issue_certificate(key.public_key(), common_name="c", issuer_key=key, not_after=NOW + dt.timedelta(days=1))
    after = dt.datetime.now(dt.UTC).replace(microsecond=0)
    five = dt.timedelta(minutes=5)
    assert before - five <= cert.not_valid_before_utc <= after - five
    given = NOW - dt.timedelta(days=2)
    assert keys.issue_certificate(key.public_key(), common_name="c", issuer_key=key, not_before=given,
                                  not_after=NOW).not_valid_before_utc == given


def test_policy_refusals_with_the_policy_named(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    ca = pki.ca("vendor")
    policy = write_policy(tmp_path / "p.yaml", {"vendor": {"required": False, "roots": [ca[2]]}})
    with pytest.raises(InputError) as err:
        keys.load_trust(policy)
    assert err.value.message == f"{policy}: the vendor signature is always required"
    from bundler.errors import NoTrustAnchorError
    with pytest.raises(NoTrustAnchorError) as anchor:
        keys.load_trust(write_policy(policy, {"vendor": {}, "customer": {"roots": [ca[2]]}}))
    assert anchor.value.message == f"{policy}: no trust anchor for the vendor"
    # Of several schema errors the first by position is named; an error of the whole file says so.
    policy.write_text("authorities: [{name: vendor, roots: [x], colour: red}, {name: Bad}]\n")
    with pytest.raises(InputError) as err:
        keys.load_trust(policy)
    assert err.value.message.startswith(f"{policy}: authorities[0]: Additional properties are not allowed ('colour'")
    policy.write_text("kind: VerificationPolicy\n")
    with pytest.raises(InputError) as err:
        keys.load_trust(policy)
    assert err.value.message == f"{policy}: top level: 'authorities' is a required property"
