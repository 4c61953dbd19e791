"""Interop: sigstore-js (@sigstore/verify) accepts our signature files offline, and rejects tampering.

The node script tests/interop/verify.mjs gives sigstore-js a trust material holding only the public
key (no transparency log, no timestamps, no Fulcio) and verifies one signature file. `scripts/setup.sh`
installs the npm packages into tests/interop/node_modules.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from bundler import archive, keys
from tests.support.bundles import Pki, build_bundle

INTEROP = Path(__file__).resolve().parent / "interop"
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.skipif(NODE is None, reason="node is not installed: the sigstore-js interop check needs node >= 20"),
    pytest.mark.skipif(not (INTEROP / "node_modules" / "@sigstore" / "verify").is_dir(),
                       reason="sigstore-js not installed: run scripts/setup.sh (npm install --prefix tests/interop)"),
]


def _sigstore_js(signature: bytes, public_pem: Path, statement: bytes, tmp: Path,
                 *decoys: Path) -> subprocess.CompletedProcess[str]:
    (tmp / "sig.json").write_bytes(signature)
    (tmp / "statement.json").write_bytes(statement)
    return subprocess.run([str(NODE), str(INTEROP / "verify.mjs"), str(tmp / "sig.json"), str(public_pem),
                           str(tmp / "statement.json"), *map(str, decoys)], capture_output=True, text=True, timeout=60)


def _assert_refused_with_payload(signature: bytes, payload: bytes, public_pem: Path, tmp: Path) -> None:
    """The signature file with another payload in its envelope (the signature left as it was): refused."""
    doc = json.loads(signature)
    assert base64.b64decode(doc["dsseEnvelope"]["payload"]) != payload
    doc["dsseEnvelope"]["payload"] = base64.b64encode(payload).decode()
    bad = _sigstore_js(json.dumps(doc).encode(), public_pem, payload, tmp)
    assert bad.returncode == 1 and "SIGNATURE_ERROR" in bad.stdout


@pytest.mark.parametrize("kind", ["ecdsa-p256", "ed25519", "rsa-3072"])
def test_sigstore_js_verifies_our_signature_and_rejects_tampering(tmp_path: Path, kind: str) -> None:
    signer, pub = Pki(tmp_path / "pki").signer("vendor", kind)
    built = build_bundle(tmp_path / "b.tar", {"vendor": signer})
    # Read what a third party would: the members of the bundle file itself.
    with open(built.path, "rb") as f:
        index = archive.read_index(f)
        statement = archive.read_member(f, index.get(archive.STATEMENT), cap=1 << 20)
        signature = archive.read_member(f, index.signatures["vendor"], cap=1 << 20)

    # sigstore-js selects the key by the bundle's hint, from a keyring that also holds another key.
    _, decoy = Pki(tmp_path / "decoy").signer("decoy", kind)
    ok = _sigstore_js(signature, pub, statement, tmp_path, decoy)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    expected_hint = base64.b64encode(hashlib.sha256(keys.public_der(signer.public_key)).digest()).decode()
    assert ok.stdout.strip() == f"ok {expected_hint}"

    # The fingerprint form of earlier bundles names no key sigstore-js knows: the hint really selects.
    old = json.loads(signature)
    old["verificationMaterial"]["publicKey"]["hint"] = signer.fingerprint
    unselected = _sigstore_js(json.dumps(old).encode(), pub, statement, tmp_path, decoy)
    assert unselected.returncode == 1 and "no key with hint SHA256:" in unselected.stdout

    # A tampered statement inside the envelope: the signature no longer verifies.
    tampered = statement.replace(b"demo", b"dem0", 1)
    _assert_refused_with_payload(signature, tampered, pub, tmp_path)

    # The envelope intact but the bundle's statement file changed: the payload no longer matches it.
    mismatch = _sigstore_js(signature, pub, tampered, tmp_path)
    assert mismatch.returncode == 1 and "payload differs" in mismatch.stdout

    # Another key: rejected.
    _, other_pub = Pki(tmp_path / "other").signer("other", kind)
    wrong = _sigstore_js(signature, other_pub, statement, tmp_path)
    assert wrong.returncode == 1


def test_sigstore_js_verifies_a_parts_index_signed_as_a_signature_file(tmp_path: Path) -> None:
    """A split bundle's NAME.parts.json is a section-4 signature file over the index document (its own
    payloadType): a third-party Sigstore verifier checks it as it checks a bundle's signatures."""
    from bundler import parts

    signer, pub = Pki(tmp_path / "pki").signer("vendor", "ecdsa-p256")
    built = build_bundle(tmp_path / "b.tar", {"vendor": signer})
    (tmp_path / "set").mkdir()
    done = parts.split(built.path, 1000, signer, out_dir=tmp_path / "set")
    signature = done.index_path.read_bytes()
    envelope = json.loads(signature)["dsseEnvelope"]
    assert envelope["payloadType"] == parts.PAYLOAD_TYPE
    document = base64.b64decode(envelope["payload"])
    assert json.loads(document)["parts"] and document == done.index.to_bytes()

    ok = _sigstore_js(signature, pub, document, tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # a part's digest changed inside the signed index: sigstore-js refuses it, as verify does (exit 24)
    _assert_refused_with_payload(signature, document.replace(b'"sha256":"', b'"sha256":"0', 1), pub, tmp_path)
