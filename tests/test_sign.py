"""Signature files: Sigstore bundle v0.3 shape, DSSE PAE, signatures other implementations accept."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from securesystemslib.dsse import Envelope as SslibEnvelope
from securesystemslib.signer import Signature as SslibSignature
from securesystemslib.signer import SSlibKey
from sigstore_models.bundle.v1 import Bundle

from bundler import attest, keys, sign
from bundler.errors import InputError
from tests.support.bundles import Pki

STATEMENT = attest.statement([{"name": "charts/demo.tgz", "digest": {"sha256": "a" * 64}}],
                             "https://airgap-bundle.dev/bom/v1", {"files": []})


def test_pae_follows_dsse_v1() -> None:
    # DSSE protocol.md example
    assert attest.pae("http://example.com/HelloWorld", b"hello world") == \
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    env = SslibEnvelope(STATEMENT, attest.PAYLOAD_TYPE, {})
    assert attest.pae(attest.PAYLOAD_TYPE, STATEMENT) == env.pae()


def test_statement_is_canonical_and_deterministic() -> None:
    subjects = [attest.Subject("b", "1" * 64), {"name": "a", "digest": {"sha256": "2" * 64}}]
    one = attest.statement(subjects, "urn:x", {"z": 1, "a": [True, None]})
    two = attest.statement(list(reversed(subjects)), "urn:x", {"a": [True, None], "z": 1})
    assert one == two == attest.canonical_json(json.loads(one))
    assert one.startswith(b'{"_type":"https://in-toto.io/Statement/v1","predicate":{"a":[true,null],"z":1}')
    assert [s["name"] for s in json.loads(one)["subject"]] == ["a", "b"]
    with pytest.raises(ValueError):
        attest.statement([], "urn:x", {})
    with pytest.raises(ValueError):
        attest.Subject("x", "ABC")


@pytest.mark.parametrize("kind", keys.KEY_KINDS)
def test_signature_file_shape_and_signature(tmp_path: Path, kind: str) -> None:
    signer, _ = Pki(tmp_path).signer("vendor", kind)
    data = sign.sign(STATEMENT, signer, "vendor")
    doc = json.loads(data)
    assert doc["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    assert doc["verificationMaterial"] == {"publicKey": {"hint": keys.key_hint(signer.public_key)}, "tlogEntries": []}
    env = doc["dsseEnvelope"]
    assert env["payloadType"] == "application/vnd.in-toto+json"
    assert base64.b64decode(env["payload"]) == STATEMENT
    assert len(env["signatures"]) == 1
    sig = base64.b64decode(env["signatures"][0]["sig"])
    assert keys.verify_signature(signer.public_key, sig, attest.pae(attest.PAYLOAD_TYPE, STATEMENT))
    assert not keys.verify_signature(signer.public_key, sig, attest.pae(attest.PAYLOAD_TYPE, STATEMENT + b" "))
    Bundle.from_json(data)  # sigstore-models (protobuf-specs JSON) accepts it
    # An independent verifier: securesystemslib's key classes over the DSSE PAE.
    scheme = {"ecdsa-p256": "ecdsa-sha2-nistp256", "ecdsa-p384": "ecdsa-sha2-nistp384", "ed25519": "ed25519"}
    key = SSlibKey.from_crypto(signer.public_key, keyid="k", scheme=scheme.get(kind, "rsa-pkcs1v15-sha256"))
    key.verify_signature(SslibSignature("k", sig.hex()), SslibEnvelope(STATEMENT, attest.PAYLOAD_TYPE, {}).pae())


def test_certificate_is_carried_as_the_leaf(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    signer, _ = pki.cert_signer("vendor", pki.ca("root"))
    doc = json.loads(sign.sign(STATEMENT, signer, "vendor"))
    material = doc["verificationMaterial"]
    assert set(material) == {"certificate", "tlogEntries"} and material["tlogEntries"] == []
    assert base64.b64decode(material["certificate"]["rawBytes"]) == \
        signer.certificate.public_bytes(serialization.Encoding.DER)


def test_authority_names_are_checked(tmp_path: Path) -> None:
    signer, _ = Pki(tmp_path).signer("vendor")
    for bad in ("", "Vendor", "../x", "a/b", "-x"):
        with pytest.raises(InputError):
            sign.sign(STATEMENT, signer, bad)
    assert sign.signature_member("integrator-acme") == "signatures/integrator-acme.sigstore.json"


def test_cli_sign_appends_and_refuses_a_second_signature(tmp_path: Path, run_cli) -> None:
    from bundler import archive
    from tests.support.bundles import build_bundle

    pki = Pki(tmp_path / "pki")
    vendor, _ = pki.signer("vendor")
    built = build_bundle(tmp_path / "b.tar", {"vendor": vendor})
    _, key_path, _ = pki.key("customer")
    end = archive.read_index(built.path).end
    before = built.path.read_bytes()[:end]
    res = run_cli("sign", str(built.path), "--authority", "customer", "--key", str(key_path))
    assert res.returncode == 0, res.stderr
    assert built.path.read_bytes()[:end] == before
    assert sorted(archive.read_index(built.path).signatures) == ["customer", "vendor"]
    res = run_cli("sign", str(built.path), "--authority", "customer", "--key", str(key_path))
    assert res.returncode == 11 and "already signed" in res.stderr and "--replace" in res.stderr
    res = run_cli("sign", str(built.path), "--authority", "customer", "--key", str(key_path), "--replace")
    assert res.returncode == 0, res.stderr
    assert built.path.read_bytes()[:end] == before


# --- reading a signature file back (sign.parse: the shape verify and inspect share) ------------------------


def _good(tmp_path: Path, *, cert: bool) -> dict:
    pki = Pki(tmp_path / "pki")
    signer = pki.cert_signer("v", pki.ca("root"))[0] if cert else pki.signer("v")[0]
    return json.loads(sign.sign(STATEMENT, signer, "vendor"))


@pytest.mark.parametrize("cert", [True, False])
def test_parse_reads_back_what_sign_writes(tmp_path: Path, cert: bool) -> None:
    doc = _good(tmp_path, cert=cert)
    parsed = sign.parse(json.dumps(doc).encode())
    assert parsed.payload == STATEMENT and parsed.material == ("certificate" if cert else "publicKey")
    if cert:
        assert parsed.certificate().subject.rfc4514_string() == "CN=v signing"
    else:
        assert len(base64.b64decode(parsed.hint)) == 32  # sigstore-go's hint: base64 of the key's sha256
        with pytest.raises(ValueError, match="no certificate carried"):
            parsed.certificate()


@pytest.mark.parametrize("mutate, reason", [
    (lambda d: b"\xff not utf-8", "utf-8"),
    (lambda d: b"[1]", "mediaType is not"),
    (lambda d: b'{"a": 1, "a": 2}', "duplicate key"),
    (lambda d: {**d, "messageSignature": {}}, "unexpected fields"),
    (lambda d: {**d, "dsseEnvelope": {**d["dsseEnvelope"], "payloadType": "text/plain"}}, "payloadType is not"),
    (lambda d: {**d, "dsseEnvelope": {**d["dsseEnvelope"], "signatures": []}}, "exactly one signature"),
    (lambda d: {**d, "dsseEnvelope": {**d["dsseEnvelope"], "payload": 5}}, "expected a base64 string"),
    (lambda d: {**d, "dsseEnvelope": {**d["dsseEnvelope"], "payload": "***"}}, "base64"),
    (lambda d: {k: v for k, v in d.items() if k != "dsseEnvelope"}, "dsseEnvelope"),
    (lambda d: {**d, "verificationMaterial": {"tlogEntries": []}}, "exactly one of certificate, x509CertificateChain or publicKey"),
    (lambda d: {**d, "dsseEnvelope": {**d["dsseEnvelope"], "signatures": ["x"]}}, "get"),
])
def test_parse_names_what_is_wrong(tmp_path: Path, mutate, reason: str) -> None:
    changed = mutate(_good(tmp_path, cert=False))
    data = changed if isinstance(changed, bytes) else json.dumps(changed).encode()
    with pytest.raises(ValueError, match=reason):
        sign.parse(data)


def test_parse_reads_a_certificate_chain_leaf_first(tmp_path: Path) -> None:
    doc = _good(tmp_path, cert=False)
    ders = [base64.b64encode(b"leaf").decode(), base64.b64encode(b"intermediate").decode()]
    doc["verificationMaterial"] = {"x509CertificateChain": {"certificates": [{"rawBytes": d} for d in ders]},
                                   "tlogEntries": []}
    parsed = sign.parse(json.dumps(doc).encode())
    assert parsed.material == "x509CertificateChain" and parsed.certificates == (b"leaf", b"intermediate")
    doc["verificationMaterial"]["x509CertificateChain"]["certificates"] = "x"
    with pytest.raises(ValueError, match="not a list"):
        sign.parse(json.dumps(doc).encode())


def test_a_parsed_signature_file_is_a_value(tmp_path: Path) -> None:
    import dataclasses
    signer, _ = Pki(tmp_path).signer("vendor")
    parsed = sign.parse(sign.sign(STATEMENT, signer, "vendor"))
    assert (parsed.payload, parsed.material, parsed.hint) == (STATEMENT, "publicKey", keys.key_hint(signer.public_key))
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.payload = b"other"  # type: ignore[misc]


def test_the_carried_leaf_is_the_first_certificate(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    root = pki.ca("root")
    leaf, _ = pki.cert_signer("leaf", root)
    der = [c.public_bytes(serialization.Encoding.DER) for c in (leaf.certificate, root[1])]  # type: ignore[union-attr]
    carried = sign.SignatureFile(STATEMENT, b"sig", "x509CertificateChain", certificates=tuple(der))
    assert carried.certificate() == leaf.certificate
    with pytest.raises(ValueError, match="no certificate carried"):
        sign.SignatureFile(STATEMENT, b"sig", "publicKey").certificate()


def test_hidden_modules_cannot_be_imported_inside_the_block_and_can_after_it() -> None:
    """sign() imports securesystemslib with the cloud KMS SDKs hidden (`_without`): inside the block a
    hidden name and its submodules fail as if not installed; others, and everything after it, import."""
    import importlib
    import sys

    for name in ("wave", "wsgiref", "wsgiref.simple_server"):
        sys.modules.pop(name, None)
    with sign._without(frozenset({"wave", "wsgiref.simple_server"})):
        with pytest.raises(ModuleNotFoundError, match="No module named 'wave'"):
            importlib.import_module("wave")
        with pytest.raises(ModuleNotFoundError, match="No module named 'wsgiref.simple_server'"):
            importlib.import_module("wsgiref.simple_server")
        assert importlib.import_module("wsgiref").__name__ == "wsgiref"  # the hidden module's parent is not
    assert importlib.import_module("wave").__name__ == "wave"
    assert importlib.import_module("wsgiref.simple_server").__name__ == "wsgiref.simple_server"
