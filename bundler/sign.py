"""One signature file per authority: a Sigstore bundle v0.3 holding a DSSE envelope over the statement.

Input: the exact bytes of `bundle.intoto.json`, a `keys.Signer`, an authority name. Output: the bytes
of `signatures/<authority>.sigstore.json`:

    {"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
     "verificationMaterial": {"certificate": {"rawBytes": <leaf DER>}}   # or "publicKey": {"hint": ...},
                             # or "x509CertificateChain": {"certificates": [leaf, intermediates...]}
                             + "tlogEntries": [],
     "dsseEnvelope": {"payload": <statement bytes>, "payloadType": "application/vnd.in-toto+json",
                      "signatures": [{"sig": <sig over PAE>, "keyid": <fingerprint>}]}}

Libraries: securesystemslib makes the DSSE envelope and signs its PAE (`CryptoSigner`,
`dsse.Envelope`); sigstore-models (pydantic models of the protobuf-specs JSON) builds and checks the
bundle. No transparency-log entry: bundles are verified offline against keys the verifier holds.

Specs: Sigstore bundle (protobuf-specs sigstore_bundle.proto, v0.3), DSSE v1 envelope.

`parse(data) -> SignatureFile` reads a signature file back: its shape only (what `verify.py` and
`inspect.py` share). Does not write the archive (`archive.append_signature` does) and does not decide
whether a signature is trusted or valid (`verify.py`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import importlib.abc
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from .attest import PAYLOAD_TYPE, canonical_json, pae, strict_json
from .errors import InputError
from .keys import Signer, valid_authority_name, verify_signature

if TYPE_CHECKING:
    from securesystemslib.signer import SSlibKey  # type: ignore[attr-defined]

# securesystemslib.signer imports, when they are installed, the cloud SDKs of KMS signers this tool never
# uses (AWS, Azure, Google Cloud): boto3 alone costs 0.16 s of every signing process on an idle machine.
# They are hidden while it is imported.
_CLOUD_SDKS: Final = frozenset({"boto3", "botocore", "azure", "google.cloud"})

BUNDLE_MEDIA_TYPE: Final = "application/vnd.dev.sigstore.bundle.v0.3+json"


def signature_member(authority: str) -> str:
    """The archive member name of an authority's signature file."""
    if not valid_authority_name(authority):
        raise InputError(f"invalid authority name {authority!r}",
                         hint="use lowercase letters, digits and '-', e.g. vendor, customer, integrator-acme")
    return f"signatures/{authority}.sigstore.json"


def _sslib_key(signer: Signer) -> SSlibKey:
    # securesystemslib scheme names for the key types keys.py accepts; RSA is PKCS#1 v1.5 (its
    # default would be PSS, which sigstore-js does not use for PKIX RSA keys).
    from securesystemslib.signer import SSlibKey  # type: ignore[attr-defined]

    key = signer.public_key
    if isinstance(key, rsa.RSAPublicKey):
        scheme = "rsa-pkcs1v15-sha256"
    elif isinstance(key, ec.EllipticCurvePublicKey):
        scheme = "ecdsa-sha2-nistp384" if isinstance(key.curve, ec.SECP384R1) else "ecdsa-sha2-nistp256"
    elif isinstance(key, ed25519.Ed25519PublicKey):
        scheme = "ed25519"
    else:  # pragma: no cover - keys.check_public_key refuses other types
        raise InputError(f"{signer.source}: unsupported key type")
    return SSlibKey.from_crypto(key, keyid=signer.fingerprint, scheme=scheme)


class _Hidden(importlib.abc.MetaPathFinder):
    """Makes `import NAME` (and so NAME's submodules) fail as if NAME were not installed."""

    def __init__(self, names: frozenset[str]) -> None:
        self.names = names

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        if fullname in self.names:  # a submodule is imported after its package: hiding the package hides it
            raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
        return None


@contextlib.contextmanager
def _without(names: frozenset[str]) -> Iterator[None]:
    """Hide `names` from imports made inside the block (a library's optional imports); a module already
    imported stays as it is."""
    finder = _Hidden(frozenset(n for n in names if n not in sys.modules))
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


def _b64(data: bytes) -> bytes:
    """sigstore-models ProtoBytes fields take base64 input."""
    return base64.b64encode(data)


def sign(statement: bytes, signer: Signer, authority: str, *, payload_type: str = PAYLOAD_TYPE) -> bytes:
    """Sign the statement bytes and return the Sigstore bundle JSON for `signatures/<authority>...`.

    `payload_type` is the DSSE payloadType: the in-toto statement's by default; a split bundle's
    parts index is signed with its own (bundler/parts.py), so neither can stand for the other.

    Raises:
        InputError: invalid authority name.
    """
    # securesystemslib and sigstore-models are imported here, not at the top: securesystemslib loads
    # subprocess, and verify.py (which reads signature files with `parse` below) must load nothing that
    # can reach the network or run programs; sigstore-models (pydantic) costs 0.2 s that verify never needs.
    with _without(_CLOUD_SDKS):
        from securesystemslib.dsse import Envelope as DsseEnvelope

        # The documented import path; the package does not re-export these names explicitly for mypy.
        from securesystemslib.signer import CryptoSigner  # type: ignore[attr-defined]
    from sigstore_models.bundle.v1 import Bundle, VerificationMaterial
    from sigstore_models.common.v1 import PublicKeyIdentifier, X509Certificate, X509CertificateChain
    from sigstore_models.intoto import Envelope, Signature

    signature_member(authority)  # validates the name
    # DSSE v1: sign PAE(payloadType, payload) over the exact statement bytes.
    envelope = DsseEnvelope(payload=statement, payload_type=payload_type, signatures={})
    sig = envelope.sign(CryptoSigner(signer.private_key, _sslib_key(signer)))
    raw_sig = bytes.fromhex(sig.signature)
    # Belt and braces: the verifier's own primitive must accept what the signer library produced.
    if not verify_signature(signer.public_key, raw_sig, pae(payload_type, statement)):
        raise InputError(  # pragma: no cover - only a broken crypto backend fails its own fresh signature
            f"{signer.source}: the signature just made does not verify")

    if signer.certificate is not None and signer.intermediates:
        # The Sigstore bundle's x509CertificateChain: the leaf, then the issuing intermediates, no root.
        chain = [X509Certificate(raw_bytes=_b64(c.public_bytes(serialization.Encoding.DER)))
                 for c in (signer.certificate, *signer.intermediates)]
        material = VerificationMaterial(x509_certificate_chain=X509CertificateChain(certificates=chain),
                                        tlog_entries=[])
    elif signer.certificate is not None:
        der = signer.certificate.public_bytes(serialization.Encoding.DER)
        material = VerificationMaterial(certificate=X509Certificate(raw_bytes=_b64(der)), tlog_entries=[])
    else:
        material = VerificationMaterial(public_key=PublicKeyIdentifier(hint=signer.hint), tlog_entries=[])
    bundle = Bundle(
        media_type=BUNDLE_MEDIA_TYPE,
        verification_material=material,
        dsse_envelope=Envelope(
            payload=_b64(statement),
            payload_type=payload_type,
            signatures=[Signature(sig=_b64(raw_sig), keyid=signer.fingerprint)],
        ),
    )
    return canonical_json(bundle.to_dict())


# --------------------------------------------------------------------------------------------------
# Reading a signature file back (its shape only: whether it verifies is `verify.py`'s job)


@dataclass(frozen=True)
class SignatureFile:
    """A signature file whose shape checked out. Nothing in it is trusted yet."""

    payload: bytes  # what was signed: must be the statement's bytes
    signature: bytes
    material: Literal["certificate", "publicKey", "x509CertificateChain"]
    certificates: tuple[bytes, ...] = ()  # DER, the leaf first, then any carried intermediates
    hint: str = ""  # the publicKey hint (unauthenticated: it only selects a configured key)

    def certificate(self) -> x509.Certificate:
        """The carried leaf certificate.

        Raises:
            ValueError: no certificate carried, or not DER X.509.
        """
        if not self.certificates:
            raise ValueError("no certificate carried")
        return x509.load_der_x509_certificate(self.certificates[0])


def parse(data: bytes, *, payload_type: str = PAYLOAD_TYPE) -> SignatureFile:
    """Check the shape of a signature file (Sigstore bundle v0.3, a DSSE envelope of `payload_type`,
    one signature, exactly one kind of verification material) and return its parts.

    Raises:
        ValueError: the reason it is not such a file.
    """
    try:
        doc = strict_json(data)
        if not isinstance(doc, dict) or doc.get("mediaType") != BUNDLE_MEDIA_TYPE:
            raise ValueError(f"mediaType is not {BUNDLE_MEDIA_TYPE}")
        if set(doc) - {"mediaType", "verificationMaterial", "dsseEnvelope"}:
            raise ValueError("unexpected fields (only dsseEnvelope bundles are accepted)")
        envelope, material = doc["dsseEnvelope"], doc["verificationMaterial"]
        if envelope.get("payloadType") != payload_type:
            raise ValueError(f"payloadType is not {payload_type}")
        sigs = envelope.get("signatures")
        if not isinstance(sigs, list) or len(sigs) != 1:
            raise ValueError("the envelope must carry exactly one signature")
        payload, signature = _unb64(envelope.get("payload")), _unb64(sigs[0].get("sig"))
        kinds = [k for k in ("certificate", "publicKey", "x509CertificateChain") if k in material]
        if len(kinds) != 1:
            raise ValueError("verificationMaterial needs exactly one of certificate, x509CertificateChain or publicKey")
        if kinds[0] == "certificate":
            return SignatureFile(payload, signature, "certificate",
                                 certificates=(_unb64(material["certificate"].get("rawBytes")),))
        if kinds[0] == "publicKey":
            return SignatureFile(payload, signature, "publicKey", hint=str(material["publicKey"].get("hint") or ""))
        entries = material["x509CertificateChain"].get("certificates")
        if not isinstance(entries, list):
            raise ValueError("x509CertificateChain.certificates is not a list")
        return SignatureFile(payload, signature, "x509CertificateChain",
                             certificates=tuple(_unb64(e.get("rawBytes")) for e in entries))
    except (KeyError, TypeError, AttributeError, binascii.Error) as e:  # UnicodeDecodeError is a ValueError
        raise ValueError(str(e) or type(e).__name__) from e


def _unb64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise ValueError("expected a base64 string")
    return base64.b64decode(value, validate=True)
