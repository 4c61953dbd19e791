"""Keys, certificates and the verification policy: loading them, making them, naming them.

Inputs: key, certificate and policy files. Outputs: a `Signer` (private key, public key, fingerprint,
optional X.509 leaf) for `sign.py`, and a `TrustPolicy` (per-authority trust anchors and whether
the authority is required) for `verify.py`.

Supported keys: ECDSA P-256 (default) and P-384, Ed25519, RSA >= 3072 bits (PKCS#1 v1.5, SHA-256).
Private keys are PKCS#8 PEM, plain or encrypted, or cosign's `ENCRYPTED SIGSTORE PRIVATE KEY`
files (scrypt + NaCl secretbox, format of go-securesystemslib `encrypted`, used by
sigstore/sigstore pkg/cryptoutils). The password never comes from a command-line flag: callers pass
a function that returns it (the CLI reads `AIRGAP_BUNDLE_KEY_PASSWORD` or prompts).

Key fingerprint: `SHA256:<hex sha256 of the DER SubjectPublicKeyInfo>` (docs/bundle-format.md).

Does not sign or verify bundles (`sign.py`, `verify.py`) and never touches the network; the only
I/O is reading the files it is given (and `write_new_file` writing new key files atomically).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import nacl.bindings
import nacl.exceptions
import nacl.secret
import nacl.utils
import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import InputError, NoTrustAnchorError

PASSWORD_ENV = "AIRGAP_BUNDLE_KEY_PASSWORD"
VENDOR = "vendor"
MIN_RSA_BITS = 3072
MAX_KEY_FILE_BYTES = 1024 * 1024
MAX_POLICY_BYTES = 1024 * 1024

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey
PasswordFn = Callable[[], bytes]
KeyKind = Literal["ecdsa-p256", "ecdsa-p384", "ed25519", "rsa-3072", "rsa-4096"]
KEY_KINDS: tuple[str, ...] = ("ecdsa-p256", "ecdsa-p384", "ed25519", "rsa-3072", "rsa-4096")

# cosign / go-securesystemslib `encrypted`: PEM types and the scrypt parameter sets it accepts
# (Legacy, Standard, OWASP). Anything else is refused, as the Go code does.
COSIGN_PEM_TYPES = ("ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY")
_SCRYPT_PARAMS = {(32768, 8, 1), (65536, 8, 1), (131072, 8, 1)}
_AUTHORITY_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_PEM_TYPE = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")


# --------------------------------------------------------------------------------------------------
# Public keys: checks, fingerprint, signature verification (the primitive `verify.py` uses)


def check_public_key(public_key: Any, *, what: str) -> PublicKey:
    """Return the key if its type and size are supported, else raise InputError naming `what`."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, (ec.SECP256R1, ec.SECP384R1)):
            raise InputError(f"{what}: ECDSA curve {public_key.curve.name} is not supported",
                             hint="use P-256 (default) or P-384")
        return public_key
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return public_key
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise InputError(f"{what}: RSA key of {public_key.key_size} bits is too small",
                             hint=f"use at least {MIN_RSA_BITS} bits")
        return public_key
    raise InputError(f"{what}: unsupported key type {type(public_key).__name__}",
                     hint="use ECDSA P-256/P-384, Ed25519 or RSA >= 3072")


def public_der(public_key: PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def public_pem(public_key: PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def fingerprint(public_key: PublicKey) -> str:
    """`SHA256:<hex sha256 of the DER SubjectPublicKeyInfo>`."""
    return "SHA256:" + hashlib.sha256(public_der(public_key)).hexdigest()


def key_hint(public_key: PublicKey) -> str:
    """The Sigstore bundle `publicKey.hint` as sigstore-go writes it: standard base64 of the sha256 of
    the DER SubjectPublicKeyInfo, so that verifiers which select keys by hint find ours. (Bundles
    signed before 0.2 carry the `fingerprint` form; verify accepts both.)"""
    return base64.b64encode(hashlib.sha256(public_der(public_key)).digest()).decode("ascii")


def _ecdsa_hash(curve: ec.EllipticCurve) -> hashes.SHA256 | hashes.SHA384:
    # Sigstore key details: PKIX_ECDSA_P256_SHA_256, PKIX_ECDSA_P384_SHA_384.
    return hashes.SHA384() if isinstance(curve, ec.SECP384R1) else hashes.SHA256()


def verify_signature(public_key: PublicKey, signature: bytes, data: bytes) -> bool:
    """True if `signature` over `data` is valid for `public_key` (the schemes listed in the docstring).

    ECDSA signatures are ASN.1 DER (as Sigstore and securesystemslib write them); RSA is
    PKCS#1 v1.5 with SHA-256; Ed25519 signs the data itself.
    """
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(_ecdsa_hash(public_key.curve)))
        elif isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, data)
        elif isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        else:  # pragma: no cover - check_public_key refuses other types earlier
            return False
    except (InvalidSignature, ValueError):
        return False
    return True


# --------------------------------------------------------------------------------------------------
# Signers


@dataclass(frozen=True)
class Signer:
    """A private key ready to sign, with what a verifier needs to identify it."""

    private_key: PrivateKey = field(repr=False)
    public_key: PublicKey
    fingerprint: str
    certificate: x509.Certificate | None = None
    source: str = ""
    intermediates: tuple[x509.Certificate, ...] = ()  # issuing CAs between the leaf and a root, leaf's first

    @property
    def hint(self) -> str:
        """The value written to `verificationMaterial.publicKey.hint` when no certificate is carried."""
        return key_hint(self.public_key)


def read_capped(path: Path, cap: int, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(cap + 1)
    except OSError as e:
        raise InputError(f"{path}: cannot read {what}: {e.strerror}") from e
    if len(data) > cap:
        raise InputError(f"{path}: {what} larger than {cap} bytes")
    return data


def _pem_type(data: bytes) -> str | None:
    m = _PEM_TYPE.search(data)
    return m.group(1).decode() if m else None


def _pem_body(data: bytes, pem_type: str) -> bytes:
    begin, end = f"-----BEGIN {pem_type}-----".encode(), f"-----END {pem_type}-----".encode()
    start, stop = data.find(begin), data.find(end)
    if start < 0 or stop < start:
        raise ValueError("malformed PEM")
    return base64.b64decode(b"".join(data[start + len(begin) : stop].split()), validate=True)


def cosign_decrypt(blob: bytes, password: bytes) -> bytes:
    """Decrypt a go-securesystemslib `encrypted` JSON blob (kdf scrypt, cipher nacl/secretbox).

    Raises:
        ValueError: malformed blob or unsupported parameters.
        nacl.exceptions.CryptoError: wrong password or tampered ciphertext.
    """
    doc = json.loads(blob)
    kdf, cipher = doc["kdf"], doc["cipher"]
    if not (isinstance(kdf, dict) and isinstance(cipher, dict)):
        raise ValueError("kdf and cipher are not JSON objects")
    if kdf.get("name") != "scrypt" or cipher.get("name") != "nacl/secretbox":
        raise ValueError(f"unsupported kdf/cipher {kdf.get('name')}/{cipher.get('name')}")
    params = (int(kdf["params"]["N"]), int(kdf["params"]["r"]), int(kdf["params"]["p"]))
    if params not in _SCRYPT_PARAMS:
        raise ValueError(f"unsupported scrypt parameters N={params[0]} r={params[1]} p={params[2]}")
    salt = base64.b64decode(kdf["salt"], validate=True)
    nonce = base64.b64decode(cipher["nonce"], validate=True)
    ciphertext = base64.b64decode(doc["ciphertext"], validate=True)
    key = _scrypt(password, salt, params)
    try:
        return bytes(nacl.secret.SecretBox(key).decrypt(ciphertext, nonce))
    except (nacl.exceptions.ValueError, nacl.exceptions.TypeError) as e:
        # A nonce or ciphertext of the wrong size: a damaged file. These are CryptoErrors too, which the
        # caller reports as a wrong password; only a ciphertext that fails authentication is one.
        raise ValueError(str(e)) from e


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def cosign_encrypt(plaintext: bytes, password: bytes, *, n: int = 32768) -> bytes:
    """Encrypt as go-securesystemslib `encrypted.Encrypt` does (32-byte salt, 24-byte nonce)."""
    salt, nonce = nacl.utils.random(32), nacl.utils.random(nacl.secret.SecretBox.NONCE_SIZE)
    key = _scrypt(password, salt, (n, 8, 1))
    ciphertext = nacl.secret.SecretBox(key).encrypt(plaintext, nonce).ciphertext
    # Field order as Go's encoding/json writes the struct: kdf, cipher, ciphertext.
    doc = {
        "kdf": {"name": "scrypt", "params": {"N": n, "r": 8, "p": 1}, "salt": _b64(salt)},
        "cipher": {"name": "nacl/secretbox", "nonce": _b64(nonce)},
        "ciphertext": _b64(ciphertext),
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def _scrypt(password: bytes, salt: bytes, params: tuple[int, int, int]) -> bytes:
    n, r, p = params
    return bytes(nacl.bindings.crypto_pwhash_scryptsalsa208sha256_ll(
        password, salt, n, r, p, dklen=32, maxmem=2 * 128 * n * r * p + (1 << 20)))


def load_private_key(data: bytes, *, source: str, password: PasswordFn | None = None) -> PrivateKey:
    """Parse a PKCS#8 PEM (plain or encrypted) or cosign encrypted private key.

    `password` is called only when the key is encrypted.

    Raises:
        InputError: unknown format, encrypted without a password, wrong password, unsupported key.
    """
    pem_type = _pem_type(data)
    if pem_type is None:
        raise InputError(f"{source}: not a PEM private key", hint="expected PKCS#8 PEM or a cosign key file")

    def need_password() -> bytes:
        if password is None:
            raise InputError(f"{source}: the private key is encrypted and no password was given",
                             hint=f"set {PASSWORD_ENV} or run interactively to be prompted")
        return password()

    try:
        if pem_type in COSIGN_PEM_TYPES:
            try:
                der = cosign_decrypt(_pem_body(data, pem_type), need_password())
            except nacl.exceptions.CryptoError as e:
                raise InputError(f"{source}: wrong password for the cosign key") from e
            key: Any = serialization.load_der_private_key(der, password=None)
        elif pem_type == "ENCRYPTED PRIVATE KEY":
            try:
                key = serialization.load_pem_private_key(data, password=need_password())
            except ValueError as e:
                raise InputError(f"{source}: wrong password or corrupt encrypted key") from e
        elif pem_type == "PRIVATE KEY":
            key = serialization.load_pem_private_key(data, password=None)
        else:
            raise InputError(f"{source}: PEM type {pem_type!r} is not supported",
                             hint="convert it to PKCS#8: openssl pkcs8 -topk8 -in OLD -out NEW")
    except (ValueError, KeyError, TypeError, UnsupportedAlgorithm) as e:  # JSONDecodeError is a ValueError
        raise InputError(f"{source}: cannot parse private key: {e}") from e
    check_public_key(key.public_key(), what=source)
    return key  # type: ignore[no-any-return]


def load_certificates(path: Path) -> tuple[x509.Certificate, ...]:
    """Every certificate in a PEM file (a leaf followed by its intermediates, as in a fullchain file),
    or the one certificate of a DER file."""
    data = read_capped(path, MAX_KEY_FILE_BYTES, "certificate")
    try:
        if b"-----BEGIN" in data:
            return tuple(x509.load_pem_x509_certificates(data))
        return (x509.load_der_x509_certificate(data),)
    except ValueError as e:
        raise InputError(f"{path}: not an X.509 certificate: {e}") from e


def is_self_signed(cert: x509.Certificate) -> bool:
    """Issuer equals subject and the certificate's own key verifies it: a root."""
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _check_chain_file(path: Path, chain: tuple[x509.Certificate, ...]) -> None:
    # Signers carry the leaf and its intermediates in issuing order, never the root (the Sigstore
    # bundle's rule: verifiers hold the roots), so a verifier builds the path and trusts nothing here.
    for i, (cert, issuer) in enumerate(zip(chain, chain[1:], strict=False)):
        if cert.issuer != issuer.subject:
            raise InputError(f"{path}: certificate {i + 2} ({issuer.subject.rfc4514_string()}) did not issue "
                             f"certificate {i + 1} ({cert.subject.rfc4514_string()})",
                             hint="list the leaf first, then each intermediate CA in issuing order")
    if len(chain) > 1 and is_self_signed(chain[-1]):
        raise InputError(f"{path}: the chain ends with a self-signed root ({chain[-1].subject.rfc4514_string()})",
                         hint="leave the root out: verifiers take it from their policy")


def load_signer(key_path: Path | str, *, cert_path: Path | str | None = None,
                password: PasswordFn | None = None) -> Signer:
    """Load a signing key and, optionally, the X.509 leaf certificate that names its public key,
    followed in the same PEM file by the intermediate CAs that issued it (no root).

    Raises:
        InputError: unreadable or unsupported key, wrong password, or a certificate for another key.
    """
    key_path = Path(key_path)
    key = load_private_key(read_capped(key_path, MAX_KEY_FILE_BYTES, "private key"),
                           source=str(key_path), password=password)
    public_key = check_public_key(key.public_key(), what=str(key_path))
    cert: x509.Certificate | None = None
    intermediates: tuple[x509.Certificate, ...] = ()
    if cert_path is not None:
        cert, *rest = load_certificates(Path(cert_path))
        intermediates = tuple(rest)
        if public_der(cert.public_key()) != public_der(public_key):  # type: ignore[arg-type]
            raise InputError(f"{cert_path}: the certificate is for another key than {key_path}",
                             hint="pass the certificate issued for this signing key (first in the file)")
        _check_chain_file(Path(cert_path), (cert, *intermediates))
    return Signer(key, public_key, fingerprint(public_key), cert, str(key_path), intermediates)


# --------------------------------------------------------------------------------------------------
# Making keys and certificates (`airgap-bundle keys generate`)


def generate_private_key(kind: str = "ecdsa-p256") -> PrivateKey:
    if kind == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ecdsa-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind in ("rsa-3072", "rsa-4096"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[4:]))
    raise InputError(f"unknown key type {kind!r}", hint=f"choose one of {', '.join(KEY_KINDS)}")


def private_key_pem(key: PrivateKey, password: bytes | None = None, *, cosign: bool = False) -> bytes:
    """PKCS#8 PEM (encrypted with the best available scheme when a password is given), or cosign format."""
    if cosign:
        if not password:
            raise InputError("a cosign key file needs a password", hint=f"set {PASSWORD_ENV}")
        der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        body = base64.encodebytes(cosign_encrypt(der, password)).replace(b"\n", b"")
        lines = [body[i : i + 64] for i in range(0, len(body), 64)]
        t = COSIGN_PEM_TYPES[0].encode()
        return b"-----BEGIN " + t + b"-----\n" + b"\n".join(lines) + b"\n-----END " + t + b"-----\n"
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def _signing_hash(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384 | None:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return _ecdsa_hash(key.curve)
    return hashes.SHA256()


def issue_certificate(public_key: PublicKey, *, common_name: str, not_after: dt.datetime,
                      not_before: dt.datetime | None = None,
                      issuer_key: PrivateKey, issuer_cert: x509.Certificate | None = None,
                      ca: bool = False, path_length: int | None = 0) -> x509.Certificate:
    """Issue an X.509 certificate for `public_key`, self-signed when `issuer_cert` is None.

    A CA certificate (`ca=True`) may sign certificates and nothing else; a leaf may sign code
    (digitalSignature, extended key usage codeSigning), as Sigstore signing certificates do.
    `path_length` is the CA's pathLenConstraint: 0 issues leaves only, 1 also intermediates, None no limit.
    """
    now = dt.datetime.now(dt.UTC)
    not_before = not_before or now - dt.timedelta(minutes=5)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    issuer = issuer_cert.subject if issuer_cert is not None else subject
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(issuer).public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
    else:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
    if issuer_cert is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key()),  # type: ignore[arg-type]
            critical=False)
    return builder.sign(issuer_key, _signing_hash(issuer_key))


def write_new_file(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write `data` to a new file atomically (temp name in the same folder, then link into place).

    Refuses to overwrite: losing a private key to a typo is not recoverable.
    """
    if path.exists():
        raise InputError(f"{path} already exists", hint="choose another --out or move the old file away")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)  # fails if the path appeared meanwhile: never clobbers
    except FileExistsError as e:  # the file appeared after the check above, or is a dangling symlink
        raise InputError(f"{path} already exists") from e
    finally:
        os.unlink(tmp)


# --------------------------------------------------------------------------------------------------
# Trust policy (`verify --policy POLICY.yaml`)


@dataclass(frozen=True)
class PinnedKey:
    """A public key trusted directly, with an optional end of validity."""

    public_key: PublicKey
    fingerprint: str
    not_after: dt.datetime | None = None
    source: str = ""


@dataclass(frozen=True)
class AuthorityPolicy:
    """What to trust for one authority: CA certificates that issue its signing certs, and/or pinned keys."""

    name: str
    required: bool
    roots: tuple[x509.Certificate, ...] = ()
    keys: tuple[PinnedKey, ...] = ()

    @property
    def has_anchor(self) -> bool:
        return bool(self.roots or self.keys)


@dataclass(frozen=True)
class TrustPolicy:
    """Per-authority trust anchors. The vendor is always required and must have an anchor."""

    authorities: Mapping[str, AuthorityPolicy]
    source: str = ""
    sha256: str = ""  # of the policy file's bytes as parsed: the audit record names the policy by it

    def __post_init__(self) -> None:
        vendor = self.authorities.get(VENDOR)
        if vendor is None or not vendor.has_anchor:
            raise NoTrustAnchorError(
                f"{self.source or 'policy'}: no trust anchor for the vendor",
                hint="list the vendor root CA under roots: or its public key under keys:; "
                     "a bundle is never accepted without one")
        if not vendor.required:
            raise InputError(f"{self.source or 'policy'}: the vendor signature is always required",
                             hint="remove `required: false` from the vendor authority")

    @property
    def required(self) -> frozenset[str]:
        return frozenset(name for name, a in self.authorities.items() if a.required)


def parse_time(value: Any, where: str) -> dt.datetime:
    """An RFC 3339 time (or a YAML date), as UTC; a time without a zone is taken as UTC."""
    if isinstance(value, dt.datetime):
        t = value
    elif isinstance(value, dt.date):
        t = dt.datetime(value.year, value.month, value.day)
    else:
        try:
            t = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError as e:
            raise InputError(f"{where}: invalid time {value!r}", hint="use RFC 3339, e.g. 2027-01-01T00:00:00Z") from e
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _policy_schema() -> dict[str, Any]:
    text = resources.files("bundler").joinpath("schemas/policy.schema.json").read_text()
    return json.loads(text)  # type: ignore[no-any-return]


def _validate_policy(doc: Any, source: str) -> None:
    import jsonschema  # imported here: only policy loading needs it

    def plain(v: Any) -> Any:  # YAML timestamps -> strings, so the schema sees JSON types
        if isinstance(v, (dt.date, dt.datetime)):
            return v.isoformat()
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, list):
            return [plain(x) for x in v]
        return v

    validator = jsonschema.Draft202012Validator(_policy_schema())
    errors = sorted(validator.iter_errors(plain(doc)), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path).lstrip(".")
        raise InputError(f"{source}: {where or 'top level'}: {e.message}",
                         hint="the policy format: airgap-bundle verify --help, or docs/customer-runbook.md")


def load_pinned_key(path: Path, *, not_after: dt.datetime | None = None) -> PinnedKey:
    data = read_capped(path, MAX_KEY_FILE_BYTES, "public key")
    try:
        pub = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as e:
        raise InputError(f"{path}: not a PEM public key: {e}") from e
    pub = check_public_key(pub, what=str(path))
    return PinnedKey(pub, fingerprint(pub), not_after, str(path))


def load_roots(path: Path) -> tuple[x509.Certificate, ...]:
    data = read_capped(path, MAX_KEY_FILE_BYTES, "CA certificates")
    try:
        certs = tuple(x509.load_pem_x509_certificates(data))
    except ValueError as e:
        raise InputError(f"{path}: no PEM certificate: {e}") from e
    for cert in certs:
        check_public_key(cert.public_key(), what=str(path))
    return certs


def load_trust(path: Path | str) -> TrustPolicy:
    """Read a verification policy YAML file; relative paths in it are relative to the file.

    Raises:
        InputError: unreadable, malformed or schema-invalid policy, unreadable anchors.
        NoTrustAnchorError: no vendor authority, or one without roots or keys.
    """
    path = Path(path)
    data = read_capped(path, MAX_POLICY_BYTES, "policy")
    try:
        doc = yaml.safe_load(data)
    except yaml.YAMLError as e:
        raise InputError(f"{path}: malformed YAML: {e}") from e
    _validate_policy(doc, str(path))
    base = path.parent
    authorities: dict[str, AuthorityPolicy] = {}
    for i, entry in enumerate(doc["authorities"]):
        name = entry["name"]
        where = f"{path}: authorities[{i}]"
        if not _AUTHORITY_NAME.match(name):  # pragma: no cover - the schema's name pattern refuses it first
            raise InputError(f"{where}: invalid authority name {name!r}", hint="use lowercase letters, digits and -")
        if name in authorities:
            raise InputError(f"{where}: authority {name!r} listed twice")
        roots = tuple(c for r in entry.get("roots", []) for c in load_roots(base / r))
        keys = tuple(
            load_pinned_key(base / k["path"], not_after=parse_time(k["notAfter"], where) if "notAfter" in k else None)
            for k in entry.get("keys", [])
        )
        required = bool(entry.get("required", name == VENDOR))
        authorities[name] = AuthorityPolicy(name, required, roots, keys)
    return TrustPolicy(authorities, str(path), hashlib.sha256(data).hexdigest())


def valid_authority_name(name: str) -> bool:
    return bool(_AUTHORITY_NAME.match(name))
