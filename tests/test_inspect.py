"""`inspect`: what a bundle holds and who signed it, without extracting, labelled by how far it was checked;
the same hostile-input refusals as verify; a JSON shape held to its schema; records read back."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from bundler import archive, audit, inspect, keys, sign, verify
from bundler.bom import CrossplanePackageEntry, ManifestEntry
from bundler.errors import (
    ArchiveError,
    ExpiredKeyError,
    InputError,
    StatementMismatchError,
    UnlistedMemberError,
    UnsafeArchiveError,
    UnsignedBundleError,
    VerificationError,
)
from tests.conftest import REPO
from tests.support import shape
from tests.support.bundles import (
    NOW,
    build_bundle,
    describe,
    raw_tar,
    sha,
    small_payload,
    statement_for,
    tar_info,
    tar_with,
    write_policy,
)
from tests.support.bundles import world as make_world

SCHEMA = json.loads((REPO / "bundler" / "schemas" / "inspection.schema.json").read_text())


def check_shape(doc: dict[str, Any]) -> None:
    shape.check_shape(doc, SCHEMA)


@pytest.fixture
def world(tmp_path: Path) -> dict:
    w = make_world(tmp_path, customer={"notAfter": "2099-01-01T00:00:00Z"})
    w["built"] = build_bundle(tmp_path / "b.tar", {"vendor": w["vendor"], "customer": w["customer"]})
    return w


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- what it shows ------------------------------------------------------------------------------------------


def test_without_a_policy_everything_is_shown_and_labelled_unverified(world: dict) -> None:
    built, vendor = world["built"], world["vendor"]
    before = snapshot(world["tmp"])
    ins = inspect.inspect(built.path, now=NOW)
    assert snapshot(world["tmp"]) == before, "inspect wrote something"
    assert ins.trust == "unverified" and ins.failure is None and "UNVERIFIED" in ins.notes[0]
    assert (ins.bom.name, ins.bom.version, ins.bom.created_rfc3339) == ("demo", "1.0.0", "2026-01-01T00:00:00Z")
    assert ins.statement_sha256 == sha(built.statement) and ins.file_size == built.path.stat().st_size
    by = {s.authority: s for s in ins.signatures}
    v = by["vendor"]
    assert v.status == "unchecked" and v.key_from == "certificate" and v.keyid == vendor.fingerprint
    assert v.serial == format(vendor.certificate.serial_number, "x") and v.subject == "CN=vendor signing"
    assert v.issuer == "CN=vendor root CA" and v.not_after == vendor.certificate.not_valid_after_utc
    assert v.days_left == (vendor.certificate.not_valid_after_utc - NOW).days and v.signs_statement
    c = by["customer"]
    assert c.status == "unchecked" and c.key_from == "hint" and c.keyid == world["customer"].fingerprint
    assert c.not_after is None and c.days_left is None and not c.problems
    t = ins.totals()
    blobs = [p for p in built.files if p.startswith("images/blobs/")]
    assert t == {"images": 1, "platforms": 2, "charts": 1, "manifests": 1, "kustomizeOverlays": 0,
                 "crossplanePackages": 0, "files": len(built.files),
                 "payloadBytes": sum(len(b) for b in built.files.values()), "imageBlobs": len(blobs),
                 "imageBlobBytes": sum(len(built.files[p]) for p in blobs), "signatures": 2,
                 "bundleBytes": built.path.stat().st_size}
    doc = ins.to_json()
    check_shape(doc)
    assert doc["trust"]["statement"] == "unverified" and not doc["trust"]["signaturesVerified"]
    assert doc["charts"][0]["size"] == len(built.files["charts/demo-1.0.0.tgz"])
    assert doc["images"][0]["platforms"][0]["platform"] == "linux/amd64" and not doc["images"][0]["narrowed"]
    text = inspect.render_text(ins)
    assert "trust      UNVERIFIED" in text and f"key {vendor.fingerprint} (from its certificate)" in text
    assert "(the file's unauthenticated hint)" in text and "days left" in text and "values override (none)" in text


def test_with_a_policy_signatures_are_judged_as_verify_judges_them(world: dict) -> None:
    ins = inspect.inspect(world["built"].path, now=NOW, trust=world["trust"])
    assert ins.trust == "signed" and ins.failure is None and ins.policy_sha256 == sha(world["policy"].read_bytes())
    by = {s.authority: s for s in ins.signatures}
    assert by["vendor"].status == "accepted" and by["vendor"].key_from == "certificate"
    # A pinned key: the fingerprint and notAfter are the policy's, not the file's claim.
    assert by["customer"].status == "accepted" and by["customer"].key_from == "policy"
    assert by["customer"].not_after == dt.datetime(2099, 1, 1, tzinfo=dt.UTC) and by["customer"].days_left > 20000
    check_shape(ins.to_json())
    assert "the policy accepts its signatures" in inspect.render_text(ins)


def test_expired_and_unknown_signers_are_reported_and_the_rejection_kept(world: dict) -> None:
    old, _ = world["pki"].cert_signer("old", world["ca"], not_before=NOW - dt.timedelta(days=9),
                                      not_after=NOW - dt.timedelta(days=1))
    stranger, _ = world["pki"].signer("stranger")
    built = build_bundle(world["tmp"] / "e.tar", {"vendor": old, "integrator-x": stranger})
    ins = inspect.inspect(built.path, now=NOW, trust=world["trust"])
    assert ins.trust == "rejected" and isinstance(ins.failure, ExpiredKeyError)
    by = {s.authority: s for s in ins.signatures}
    assert by["vendor"].status == "rejected" and "re-sign" in (by["vendor"].reason or "")
    assert by["vendor"].days_left is not None and by["vendor"].days_left < 0
    assert by["integrator-x"].status == "not-in-policy"
    text = inspect.render_text(ins)
    assert "REJECTED by the policy" in text and "(EXPIRED 1 day ago)" in text
    doc = ins.to_json()
    check_shape(doc)
    assert doc["trust"]["failure"]["exitCode"] == 23


def test_unsigned_bundle_inspects_and_fails_only_a_policy(world: dict) -> None:
    built = build_bundle(world["tmp"] / "u.tar", {})
    assert inspect.inspect(built.path, now=NOW).signatures == ()
    assert isinstance(inspect.inspect(built.path, now=NOW, trust=world["trust"]).failure, UnsignedBundleError)


def _signature_doc(world: dict, **change: Any) -> dict[str, Any]:
    doc = json.loads(sign.sign(world["built"].statement, world["vendor"], "vendor"))
    for dotted, value in change.items():
        target = doc
        *path, last = dotted.split("__")
        for p in path:
            target = target[p]
        if value is None:
            del target[last]
        else:
            target[last] = value
    return doc


@pytest.mark.parametrize("change, problem", [
    ({"mediaType": "other"}, "malformed signature file: mediaType"),
    ({"dsseEnvelope__payload": base64.b64encode(b"{}").decode()}, "signs a different statement"),
    ({"verificationMaterial__certificate__rawBytes": base64.b64encode(b"not DER").decode()},
     "unreadable certificate"),
    ({"verificationMaterial__certificate": None, "verificationMaterial__x509CertificateChain": {"certificates": []}},
     "unreadable certificate: no certificate carried"),
])
def test_problems_with_a_signature_file_are_seen_without_a_policy(world: dict, change: dict, problem: str) -> None:
    path = world["built"].path
    archive.append_signature(path, "integrator-x", json.dumps(_signature_doc(world, **change)).encode())
    ins = inspect.inspect(path, now=NOW)
    (info,) = [s for s in ins.signatures if s.authority == "integrator-x"]
    assert any(problem in p for p in info.problems), info.problems
    assert f"problem: {info.problems[0]}" in inspect.render_text(ins)
    check_shape(ins.to_json())


@pytest.mark.parametrize("hint, keyid", [
    ("", None),
    ("SHA256:" + "ab" * 32, "SHA256:" + "ab" * 32),  # the fingerprint form of older bundles
    (base64.b64encode(bytes(range(32))).decode(), "SHA256:" + bytes(range(32)).hex()),  # sigstore-go's form
    ("not base64!", "not base64!"), (base64.b64encode(b"short").decode(), base64.b64encode(b"short").decode()),
])
def test_public_key_hint_is_shown_as_a_fingerprint_when_it_is_one(world: dict, hint: str, keyid: str | None) -> None:
    doc = _signature_doc(world, verificationMaterial__certificate=None, verificationMaterial__publicKey={"hint": hint})
    info = inspect.describe_signature("x", json.dumps(doc).encode(), world["built"].statement, NOW)
    assert info.keyid == keyid and info.key_from == ("hint" if hint else None) and not info.problems


def test_the_customer_hint_names_the_customer_key(world: dict) -> None:
    (customer,) = [s for s in inspect.inspect(world["built"].path, now=NOW).signatures if s.authority == "customer"]
    assert customer.keyid == world["customer"].fingerprint and customer.key_from == "hint"


def test_a_certificate_chain_shows_its_leaf_and_how_many_intermediates(world: dict) -> None:
    pki = world["pki"]
    root = pki.ca("corp", path_length=1)
    signer, _ = pki.cert_signer("chained", pki.intermediate("issuing", root))
    built = build_bundle(world["tmp"] / "c.tar", {"vendor": signer})
    trust = keys.load_trust(write_policy(world["tmp"] / "corp.yaml", {"vendor": {"roots": [root[2]]}}))
    ins = inspect.inspect(built.path, now=NOW, trust=trust)
    (v,) = ins.signatures
    assert ins.trust == "signed" and v.status == "accepted" and v.intermediates == 1
    assert v.subject == "CN=chained signing" and v.issuer == "CN=issuing intermediate CA"
    assert "(+1 intermediate CA carried)" in inspect.render_text(ins)
    check_shape(ins.to_json())


def test_overlays_packages_exemptions_and_narrowed_indexes_are_shown(world: dict) -> None:
    files = small_payload()
    index = files.pop("_index")
    files["kustomize/prod/overlay/kustomization.yaml"] = b"resources: [../tree]\n"
    files["kustomize/prod/tree/deployment.yaml"] = b"kind: Deployment\n"
    files["kustomize/prod/tree/service.yaml"] = b"kind: Service\n"
    files["charts/demo-1.0.0.values-airgap.yaml"] = b"image: {}\n"
    bom = describe(files, index)
    image = dataclasses.replace(bom.images[0], upstream_digest="sha256:" + "e" * 64,
                                exemptions=(("linux/s390x", "not built upstream"),),
                                attestations=("sha256:" + "a" * 64,))
    bom = dataclasses.replace(
        bom, images=(image,), charts=(dataclasses.replace(bom.charts[0],
                                                          values_override="charts/demo-1.0.0.values-airgap.yaml"),),
        manifests=(*bom.manifests, ManifestEntry("manifests/not-carried.yaml", "x.yaml")),
        crossplane_packages=(CrossplanePackageEntry("xpkg.upbound.io/upbound/provider-aws-s3:v2.0.0", "Provider",
                                                    "registry.local:5000/provider-aws-s3:v2.0.0"),
                             CrossplanePackageEntry("xpkg.upbound.io/crossplane/function-x:v1", "Function")))
    files["_index"] = index
    built = build_bundle(world["tmp"] / "k.tar", {"vendor": world["vendor"]}, files=files,
                         statement=statement_for({k: v for k, v in files.items() if k != "_index"}, index, bom=bom))
    ins = inspect.inspect(built.path, now=NOW)
    assert ins.overlays == (inspect.Overlay("prod", "kustomize/prod/overlay", 2),)
    doc = ins.to_json()
    check_shape(doc)
    assert doc["images"][0]["narrowed"] and doc["images"][0]["exemptions"][0]["platform"] == "linux/s390x"
    assert doc["images"][0]["attestations"] == ["sha256:" + "a" * 64]
    assert [m["size"] for m in doc["manifests"]] == [len(files["manifests/deployment.yaml"]), None]
    assert doc["totals"]["kustomizeOverlays"] == 1 and doc["totals"]["crossplanePackages"] == 2
    text = inspect.render_text(ins)
    for needle in ("kustomize/prod/overlay  (over 2 files in kustomize/prod/tree)", "exempted   linux/s390x",
                   "Provider xpkg.upbound.io/upbound/provider-aws-s3:v2.0.0 -> registry.local:5000/",
                   "Function xpkg.upbound.io/crossplane/function-x:v1\n", "upstream sha256:eeee",
                   "values override charts/demo-1.0.0.values-airgap.yaml",
                   "attested   1 attestation manifest kept with the index", "1 Kustomize overlay, 2 Crossplane packages"):
        assert needle in text, needle


def test_member_contents_are_not_read(world: dict) -> None:
    """inspect reads headers, statement and signatures only: a changed payload byte goes unnoticed here
    (the report says contents were not hashed) and verify catches it."""
    path = world["built"].path
    member = archive.read_index(path).get("sbom.cdx.json")
    data = bytearray(path.read_bytes())
    data[member.data_offset] ^= 0xFF
    path.write_bytes(bytes(data))
    ins = inspect.inspect(path, now=NOW, trust=world["trust"])
    assert ins.trust == "signed" and "contents were not hashed" in " ".join(ins.notes)
    assert isinstance(verify.verify(path, world["trust"], now=NOW).failure, UnlistedMemberError)


# --- hostile and broken input: verify's refusals, one line each ---------------------------------------------


def _hostile(tmp: Path, built: Path, bad: tarfile.TarInfo, data: bytes = b"") -> Path:
    return tar_with(tmp / "hostile.tar", built, bad, data)


_info = tar_info


@pytest.mark.parametrize("make, error, code, text", [
    (lambda w: _cut(w, 3000), ArchiveError, 11, "truncated"),
    (lambda w: _write(w, os.urandom(4096)), ArchiveError, 11, "not a readable tar"),
    (lambda w: _write(w, b""), ArchiveError, 11, ""),
    (lambda w: _hostile(w["tmp"], w["built"].path, _info("extra.txt", tarfile.REGTYPE, size=4), b"evil"),
     UnlistedMemberError, 26, "not listed in the statement"),
    (lambda w: _hostile(w["tmp"], w["built"].path, _info("manifests/l.yaml", tarfile.SYMTYPE, linkname="/etc/passwd")),
     UnsafeArchiveError, 12, "symbolic link"),
    (lambda w: _hostile(w["tmp"], w["built"].path, _info("../evil", tarfile.REGTYPE, size=4), b"evil"),
     UnsafeArchiveError, 12, "'..'"),
    (lambda w: _append(w, b"hidden"), UnsafeArchiveError, 12, "after the end-of-archive"),
    (lambda w: _only(w, {"readme.txt": b"hi"}), VerificationError, 20, "not an airgap bundle"),
    (lambda w: _only(w, {archive.STATEMENT: b"{not json"}), StatementMismatchError, 29, "no readable predicate.files"),
    (lambda w: _only(w, {archive.STATEMENT: b'{ "predicate": {"files": []}}'}), StatementMismatchError, 29,
     "not in RFC 8785 canonical form"),
])
def test_broken_and_hostile_files_are_refused_like_verify(world: dict, make: Any, error: type, code: int,
                                                          text: str, run_cli: Any) -> None:
    path = make(world)
    with pytest.raises(error) as info:
        inspect.inspect(path, now=NOW)
    assert info.value.exit_code == code and text in str(info.value)
    res = run_cli("inspect", str(path))
    assert res.returncode == code and "Traceback" not in res.stderr
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("airgap-bundle: error:") and res.stdout == ""


def _write(w: dict, data: bytes) -> Path:
    path = w["tmp"] / "garbage.tar"
    path.write_bytes(data)
    return path


def _cut(w: dict, size: int) -> Path:
    return _write(w, w["built"].path.read_bytes()[:size])


def _append(w: dict, data: bytes) -> Path:
    return _write(w, w["built"].path.read_bytes() + data)


def _only(w: dict, members: dict[str, bytes]) -> Path:
    return raw_tar(w["tmp"] / "odd.tar", members)


def test_missing_file_is_a_usage_error(world: dict) -> None:
    with pytest.raises(InputError, match="cannot open the bundle"):
        inspect.inspect(world["tmp"] / "absent.tar", now=NOW)


# --- the CLI ------------------------------------------------------------------------------------------------


def test_cli_inspect_text_json_and_policy_exit_codes(world: dict, run_cli: Any) -> None:
    path = str(world["built"].path)
    res = run_cli("inspect", path)
    assert res.returncode == 0 and "trust      UNVERIFIED" in res.stdout and "totals" in res.stdout
    res = run_cli("inspect", path, "--policy", str(world["policy"]), "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    check_shape(doc)
    assert doc["trust"]["statement"] == "signed" and {s["status"] for s in doc["signatures"]} == {"accepted"}
    old, _ = world["pki"].cert_signer("old", world["ca"], not_before=NOW - dt.timedelta(days=9),
                                      not_after=NOW - dt.timedelta(days=1))
    expired = build_bundle(world["tmp"] / "e.tar", {"vendor": old})
    res = run_cli("inspect", str(expired.path), "--policy", str(world["policy"]))
    assert res.returncode == 23 and "REJECTED by the policy" in res.stdout and "EXPIRED" in res.stdout
    assert res.stderr.count("\n") == 1 and "re-sign" in res.stderr
    res = run_cli("inspect", str(expired.path), "--policy", str(world["policy"]), "--json")
    assert res.returncode == 23 and json.loads(res.stdout)["trust"]["failure"]["exitCode"] == 23
    res = run_cli("inspect", "--help")
    assert res.returncode == 0 and "airgap-bundle inspect app.bundle.tar" in res.stdout


def test_cli_usage_errors(world: dict, run_cli: Any) -> None:
    path = str(world["built"].path)
    for args, text in ((("inspect",), "give a BUNDLE"),
                       (("inspect", path, "--image", "sha256:" + "a" * 64), "--image filters records"),
                       (("inspect", path, "--record", path), "--record reads records only")):
        res = run_cli(*args)
        assert res.returncode == 2 and text in res.stderr, res.stderr


def test_cli_record_answers_which_key_signed_the_image_we_run(world: dict, run_cli: Any) -> None:
    log = world["tmp"] / "audit.jsonl"
    res = run_cli("verify", str(world["built"].path), "--policy", str(world["policy"]), "--extract",
                  str(world["tmp"] / "app"), "--audit-log", str(log))
    assert res.returncode == 0, res.stderr
    (rec,) = audit.read_records(log)
    digest = rec.images[0].digest
    running = rec.images[0].local.split(":1.0@")[0] + "@" + digest  # what `kubectl get pod` reports as imageID
    res = run_cli("inspect", "--record", str(log), "--image", running)
    assert res.returncode == 0, res.stderr
    assert f"signed by vendor: key {world['vendor'].fingerprint} certificate serial" in res.stdout
    assert f"signed by customer: key {world['customer'].fingerprint}" in res.stdout
    assert f"sha256:{rec.bundle_sha256}" in res.stdout
    res = run_cli("inspect", "--record", str(world["tmp"] / "app" / audit.RECORD_PATH), "--json")
    assert json.loads(res.stdout)["records"][0] == rec.to_json()
    res = run_cli("inspect", "--record", str(log), "--image", "sha256:" + "0" * 64)
    assert res.returncode == 1 and "no record names image" in res.stderr


def test_record_image_matching(world: dict) -> None:
    rec = audit.record_for(verify.require(verify.verify(world["built"].path, world["trust"], now=NOW)),
                           policy=world["trust"], action="push", destination="r", now=NOW)
    image = rec.images[0]
    name = image.local.split("@")[0]
    assert rec.names_image(image.digest) and rec.names_image(name) and rec.names_image(image.local)
    assert rec.names_image("elsewhere/x@" + image.digest) and len(image.platforms) == 2
    assert all(rec.names_image(p) for p in image.platforms)
    assert not rec.names_image("registry.local:5000/other:1.0") and not rec.names_image("sha256:" + "1" * 64)
    assert hashlib.sha256(world["built"].path.read_bytes()).hexdigest() == rec.bundle_sha256
