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
