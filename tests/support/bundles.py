"""Small real bundles, keys, certificates and policies for tests (no pipeline needed).

`small_payload()` gives the members of a tiny but complete bundle (an OCI layout with one image
index, a chart, a manifest, an SBOM and provenance stand-ins). `build_bundle()` describes them with a
real `bom.Bom`, serialises the statement with `attest.statement`, signs it per authority with
`sign.sign` and writes the archive with `archive.write`: the same calls the pipeline makes.
`Pki` makes keys and certificates with `cryptography`; `write_policy()` writes a policy YAML file.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from bundler import archive, attest, keys, sign
from bundler.bom import PREDICATE_TYPE, Bom, ChartEntry, FileEntry, ImageEntry, ManifestEntry, PlatformEntry

EPOCH = 1767225600  # 2026-01-01T00:00:00Z
# Certificates are made relative to the real clock so the CLI (which uses it) accepts them too.
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
LOCAL = "registry.local:5000"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def raw_tar(path: Path, members: Mapping[str, bytes]) -> Path:
    """A plain pax tar of `members`, in the order given, made by tarfile, not by the bundle writer."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def small_payload() -> dict[str, bytes]:
    """Members of a tiny bundle: an image index and its manifests as OCI layout blobs, a chart, ..."""
    config = b'{"architecture":"amd64","os":"linux"}'
    layer = b"layer bytes " * 20
    manifests = {}
    for arch in ("amd64", "arm64"):
        manifests[arch] = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + sha(config),
                       "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + sha(layer),
                        "size": len(layer)}],
            "annotations": {"arch": arch},
        }, sort_keys=True).encode()
    index = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + sha(m),
                       "size": len(m), "platform": {"os": "linux", "architecture": a}} for a, m in manifests.items()],
    }, sort_keys=True).encode()
    blobs = {f"images/blobs/sha256/{sha(b)}": b for b in (config, layer, index, *manifests.values())}
    layout_index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": "sha256:" + sha(index), "size": len(index),
        "annotations": {"org.opencontainers.image.ref.name": f"{LOCAL}/docker.io/library/demo:1.0"}}]}).encode()
    return {
        "sbom.cdx.json": b'{"bomFormat":"CycloneDX","specVersion":"1.6"}\n',
        "provenance.intoto.json": b'{"_type":"https://in-toto.io/Statement/v1"}\n',
        "manifests/deployment.yaml": b"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: demo\n",
        "charts/demo-1.0.0.tgz": b"\x1f\x8b chart bytes",
        "images/oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
        "images/index.json": layout_index,
        **blobs,
        "_index": index,  # not a member: removed by build_bundle, used to describe the image
    }


def describe(files: Mapping[str, bytes], index: bytes) -> Bom:
    """A Bom (the statement's predicate) for `files`, with one image (index) and one chart."""
    digest = "sha256:" + sha(index)
    platforms = tuple(PlatformEntry(f"linux/{m['platform']['architecture']}", m["digest"], m["size"])
                      for m in json.loads(index)["manifests"])
    image = ImageEntry(source="demo:1.0", normalized="docker.io/library/demo:1.0",
                       local=f"{LOCAL}/docker.io/library/demo:1.0@{digest}", upstream_digest=digest,
                       bundled_digest=digest, media_type="application/vnd.oci.image.index.v1+json",
                       platforms=platforms)
    chart = ChartEntry("demo", "1.0.0", "charts/demo-1.0.0.tgz", "sha256:" + sha(files["charts/demo-1.0.0.tgz"]))
    return Bom("demo", "1.0.0", EPOCH, "0.1.0", "sha256:" + "5" * 64, LOCAL, images=(image,), charts=(chart,),
               manifests=(ManifestEntry("manifests/deployment.yaml", "examples/manifests/deployment.yaml"),),
               files=tuple(FileEntry(p, len(b), sha(b)) for p, b in files.items()))


def statement_for(files: Mapping[str, bytes], index: bytes, *, bom: Bom | None = None) -> bytes:
    bom = bom or describe(files, index)
    return attest.statement(bom.subjects(), PREDICATE_TYPE, bom.to_dict())


@dataclass
class BuiltBundle:
    path: Path
    statement: bytes
    files: dict[str, bytes]
    signatures: dict[str, bytes] = field(default_factory=dict)

    @property
    def members(self) -> dict[str, bytes]:
        """Every member, by name, with its bytes."""
        out = {archive.STATEMENT: self.statement, **self.files}
        out.update({archive.signature_name(a): s for a, s in self.signatures.items()})
        return out


def build_bundle(out: Path, signers: Mapping[str, keys.Signer], *, files: dict[str, bytes] | None = None,
                 statement: bytes | None = None, extra: Mapping[str, bytes] | None = None) -> BuiltBundle:
    """Write a signed bundle. `extra` adds members the statement does not list (for negative tests)."""
    payload = small_payload() if files is None else dict(files)
    index = payload.pop("_index", b"")
    statement = statement if statement is not None else statement_for(payload, index)
    sigs = {a: sign.sign(statement, s, a) for a, s in signers.items()}
    members: list[tuple[str, archive.Source]] = [(archive.STATEMENT, statement), *payload.items()]
    members += [(archive.signature_name(a), b) for a, b in sigs.items()]
    members += list((extra or {}).items())
    archive.write(members, out, EPOCH)
    return BuiltBundle(out, statement, payload, sigs)


def without_hint(built: BuiltBundle, out: Path) -> BuiltBundle:
    """`built` written again to `out` with the vendor signature's key hint emptied (nothing else changed,
    the signature still valid): a verifier must then try every pinned key of the authority."""
    sig = json.loads(built.signatures["vendor"])
    sig["verificationMaterial"]["publicKey"]["hint"] = ""
    return build_bundle(out, {}, files={**built.files, "_index": b""}, statement=built.statement,
                        extra={archive.signature_name("vendor"): json.dumps(sig).encode()})


class Pki:
    """Keys and certificates for tests, written under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def key(self, name: str, kind: str = "ecdsa-p256") -> tuple[keys.PrivateKey, Path, Path]:
        """A key pair: (private key, PKCS#8 PEM path, public PEM path)."""
        priv = keys.generate_private_key(kind)
        key_path, pub_path = self.root / f"{name}.key", self.root / f"{name}.pub"
        key_path.write_bytes(keys.private_key_pem(priv))
        pub_path.write_bytes(keys.public_pem(priv.public_key()))
        return priv, key_path, pub_path

    def signer(self, name: str, kind: str = "ecdsa-p256") -> tuple[keys.Signer, Path]:
        """A public-key signer and the path of its public key."""
        _, key_path, pub_path = self.key(name, kind)
        return keys.load_signer(key_path), pub_path

    def ca(self, name: str, *, not_after: dt.datetime | None = None, not_before: dt.datetime | None = None,
           path_length: int | None = 0) -> tuple[keys.PrivateKey, x509.Certificate, Path]:
        priv, _, _ = self.key(name)
        cert = keys.issue_certificate(priv.public_key(), common_name=f"{name} root CA", ca=True, issuer_key=priv,
                                      not_before=not_before or NOW - dt.timedelta(days=365),
                                      not_after=not_after or NOW + dt.timedelta(days=3650), path_length=path_length)
        path = self.root / f"{name}-ca.pem"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return priv, cert, path

    def intermediate(self, name: str, issuer: tuple[keys.PrivateKey, x509.Certificate, Path], *,
                     not_after: dt.datetime | None = None, not_before: dt.datetime | None = None,
                     path_length: int | None = 0) -> tuple[keys.PrivateKey, x509.Certificate, Path]:
        """An intermediate CA issued by `issuer`; its PEM file holds it and the issuer's non-root chain."""
        priv, _, _ = self.key(name)
        cert = keys.issue_certificate(priv.public_key(), common_name=f"{name} intermediate CA", ca=True,
                                      issuer_key=issuer[0], issuer_cert=issuer[1], path_length=path_length,
                                      not_before=not_before or NOW - dt.timedelta(days=30),
                                      not_after=not_after or NOW + dt.timedelta(days=365))
        above = [] if keys.is_self_signed(issuer[1]) else [issuer[2].read_bytes()]
        path = self.root / f"{name}-ca.pem"
        path.write_bytes(b"".join([cert.public_bytes(serialization.Encoding.PEM), *above]))
        return priv, cert, path

    def cert_signer(self, name: str, ca: tuple[keys.PrivateKey, x509.Certificate, Path], *,
                    kind: str = "ecdsa-p256", not_before: dt.datetime | None = None,
                    not_after: dt.datetime | None = None) -> tuple[keys.Signer, Path]:
        """A signer carrying a leaf certificate issued by `ca`; returns it and the cert path."""
        priv, key_path, _ = self.key(name, kind)
        cert = keys.issue_certificate(priv.public_key(), common_name=f"{name} signing", issuer_key=ca[0],
                                      issuer_cert=ca[1], not_before=not_before or NOW - dt.timedelta(days=1),
                                      not_after=not_after or NOW + dt.timedelta(days=30))
        cert_path = self.root / f"{name}.crt"
        above = [] if keys.is_self_signed(ca[1]) else [ca[2].read_bytes()]  # leaf first, then intermediates
        cert_path.write_bytes(b"".join([cert.public_bytes(serialization.Encoding.PEM), *above]))
        return keys.load_signer(key_path, cert_path=cert_path), cert_path


def write_policy(path: Path, authorities: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write a policy: {name: {required?, roots: [paths], keys: [path | {path, notAfter}]}}."""
    doc: dict[str, Any] = {"apiVersion": "airgap-bundle.dev/v1", "kind": "VerificationPolicy", "authorities": []}
    for name, spec in authorities.items():
        entry: dict[str, Any] = {"name": name}
        if "required" in spec:
            entry["required"] = spec["required"]
        if spec.get("roots"):
            entry["roots"] = [str(p) for p in spec["roots"]]
        if spec.get("keys"):
            entry["keys"] = [k if isinstance(k, dict) else {"path": str(k)} for k in spec["keys"]]
        doc["authorities"].append(entry)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def world(tmp: Path, *, customer: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The usual parties: a vendor root CA and a short-lived vendor signing certificate, a customer pinned
    Ed25519 key, and a policy trusting both (`customer` adds policy fields for the customer, e.g.
    `required` or a key `notAfter`; by default the customer is optional)."""
    pki = Pki(tmp / "pki")
    ca = pki.ca("vendor")
    vendor, _ = pki.cert_signer("vendor", ca)
    cust, customer_pub = pki.signer("customer", "ed25519")
    spec = dict(customer or {})
    key: Any = {"path": str(customer_pub), "notAfter": spec.pop("notAfter")} if "notAfter" in spec else customer_pub
    policy = write_policy(tmp / "policy.yaml", {"vendor": {"roots": [ca[2]]},
                                                "customer": {"required": False, **spec, "keys": [key]}})
    return {"pki": pki, "ca": ca, "vendor": vendor, "customer": cust, "customer_pub": customer_pub,
            "policy": policy, "trust": keys.load_trust(policy), "tmp": tmp}


def tar_with(out: Path, bundle: Path, bad: Any, data: bytes = b"") -> Path:
    """A valid bundle's members plus one hostile entry (`bad`, a tarfile.TarInfo), written by Python's
    tarfile in GNU format, as an attacker's tool would."""
    with tarfile.open(bundle) as src, tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as dst:
        for info in src.getmembers():
            dst.addfile(info, src.extractfile(info))
        dst.addfile(bad, io.BytesIO(data) if data else None)
    return out


def tar_info(name: str, kind: bytes, **fields: object) -> Any:
    """A tarfile.TarInfo of any type, for hostile entries."""
    info = tarfile.TarInfo(name)
    info.type = kind
    for k, v in fields.items():
        setattr(info, k, v)
    return info
