"""The bill of materials: schema round trip, subjects, and a CycloneDX 1.6 SBOM the official schema accepts."""

from __future__ import annotations

import json

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from bundler.bom import Bom, ChartEntry, ImageEntry, PlatformEntry, cyclonedx, purl
from bundler.errors import VerificationError

D = {c: "sha256:" + c * 64 for c in "abcdef"}
IMAGE = ImageEntry(
    source="nginx:1.27", normalized="docker.io/library/nginx:1.27",
    local=f"reg.local:5000/docker.io/library/nginx:1.27@{D['b']}",
    upstream_digest=D["c"], bundled_digest=D["b"], media_type="application/vnd.oci.image.index.v1+json",
    platforms=(PlatformEntry("linux/amd64", D["d"], 123), PlatformEntry("linux/arm64", D["e"], 124)),
    exemptions=(("linux/s390x", "not shipped"),),
)
BOM = Bom("demo", "1.0", 1767225600, "0.1.0", D["a"], "reg.local:5000", images=(IMAGE,),
          charts=(ChartEntry("demo", "0.3.0", "charts/demo-0.3.0.tgz", D["f"]),))


def test_predicate_round_trips_through_the_schema() -> None:
    data = BOM.to_dict()
    assert data["created"] == "2026-01-01T00:00:00Z"
    assert Bom.from_dict(json.loads(json.dumps(data))) == BOM


def test_a_predicate_off_schema_is_rejected() -> None:
    data = BOM.to_dict()
    data["images"][0]["bundledDigest"] = "sha256:xyz"
    with pytest.raises(VerificationError, match="images/0/bundledDigest"):
        Bom.from_dict(data)


def test_subjects_are_images_and_charts() -> None:
    assert BOM.subjects() == [
        {"name": "charts/demo-0.3.0.tgz", "digest": {"sha256": "f" * 64}},
        {"name": "reg.local:5000/docker.io/library/nginx:1.27", "digest": {"sha256": "b" * 64}},
    ]


def test_purl_follows_the_oci_type() -> None:
    assert purl(IMAGE) == f"pkg:oci/nginx@sha256:{'b' * 64}?repository_url=docker.io/library/nginx&tag=1.27"


def test_cyclonedx_is_valid_1_6_and_reproducible() -> None:
    sbom = cyclonedx(BOM)
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(sbom.decode()) is None
    doc = json.loads(sbom)
    assert doc["specVersion"] == "1.6"
    containers = [c for c in doc["components"] if c["type"] == "container"]
    assert containers[0]["hashes"] == [{"alg": "SHA-256", "content": "b" * 64}]
    assert containers[0]["purl"].startswith("pkg:oci/nginx@sha256")
    assert cyclonedx(BOM) == sbom


def test_attestations_round_trip_and_a_digest_only_image_has_no_tag_in_its_purl() -> None:
    from dataclasses import replace
    image = replace(IMAGE, normalized=f"docker.io/library/nginx@{D['c']}", attestations=(D["a"],))
    bom = replace(BOM, images=(image,))
    data = bom.to_dict()
    assert data["images"][0]["attestations"] == [D["a"]]
    assert Bom.from_dict(data) == bom
    assert purl(image) == f"pkg:oci/nginx@{D['b']}?repository_url=docker.io/library/nginx"


def test_a_chart_fetched_by_reference_records_source_version_and_digest() -> None:
    from dataclasses import replace

    from bundler.bom import ChartSourceEntry

    fetched = ChartSourceEntry("https://charts.example.com/stable", "demo", "0.3.0", D["c"],
                               "https://charts.example.com/stable/demo-0.3.0.tgz", "verified: Vendor <v@example.com>")
    dep = ChartSourceEntry("oci://reg.example.com/charts/common", "common", "2.29.1", D["d"],
                           f"oci://reg.example.com/charts/common@{D['e']}")
    bom = replace(BOM, charts=(replace(BOM.charts[0], fetched=fetched, dependencies=(dep,)),))
    data = bom.to_dict()
    assert data["charts"][0]["source"]["provenance"] == "verified: Vendor <v@example.com>"
    assert "provenance" not in data["charts"][0]["dependencies"][0]
    assert Bom.from_dict(json.loads(json.dumps(data))) == bom
    sbom = cyclonedx(bom)
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(sbom.decode()) is None
    props = {p["value"] for c in json.loads(sbom)["components"] for p in c.get("properties", [])}
    assert f"https://charts.example.com/stable demo 0.3.0 {D['c']}" in props
    assert f"oci://reg.example.com/charts/common common 2.29.1 {D['d']}" in props
