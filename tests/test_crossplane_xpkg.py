"""Reading Crossplane packages: directories, .xpkg tarballs, OCI layouts, and an image in a real registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bundler.errors import DigestMismatchError, InputError, UsageError
from bundler.reference import ImageRef
from bundler.registry import RegistryClient, plan_routes
from bundler.spec import RegistryConfig
from bundler.xpkg import read_image, read_layout, read_package, read_xpkg_file, to_dns_label
from tests.support.crossplane import PACKAGES, REFS, rules, run
from tests.support.images import Pusher
from tests.support.xpkg_image import (
    build,
    push,
    tar_layer,
    write_ggcr_tarball,
    write_layout,
    write_layout_tar,
)

S3_V160 = (PACKAGES / "provider-aws-s3-v1.6.0" / "package.yaml").read_text()
REF = ImageRef.parse(REFS["provider-aws-s3-v1.6.0"])


def test_local_dir_reads_meta_and_crds() -> None:
    p = read_package(f"{REF}={PACKAGES / 'provider-aws-s3-v1.6.0'}")
    assert (p.kind, p.name, p.version, p.identity) == ("Provider", "provider-aws-s3", "v1.6.0",
                                                        "xpkg.upbound.io/upbound/provider-aws-s3")
    assert p.family == "provider-family-aws" and p.crossplane_constraint == ">=v1.12.1-0"
    [crd] = p.crds
    assert (crd.name, crd.scope, [v.name for v in crd.versions]) == ("buckets.s3.aws.upbound.io", "Cluster", ["v1beta1"])
    [dep] = p.depends_on
    assert (dep.kind, dep.package, dep.version, dep.key) == ("Provider", "xpkg.upbound.io/upbound/provider-family-aws",
                                                             ">= 0.0.0", "package")
    assert p.problems == ()


def test_local_package_without_a_reference_is_unpublished() -> None:
    package = read_package(str(PACKAGES / "provider-aws-s3-v1.6.0"))
    assert not package.published and str(package.ref) == "unpublished/provider-aws-s3"
    assert package.kind == "Provider" and package.crds
    assert read_package(f"{REF}={PACKAGES / 'provider-aws-s3-v1.6.0'}").published
    with pytest.raises(UsageError, match="fully qualified"):
        read_package(f"provider-aws-s3:v1.6.0={PACKAGES / 'provider-aws-s3-v1.6.0'}")
    with pytest.raises(UsageError, match="does not exist"):
        read_package(f"{REF}=/nonexistent/dir")


def test_oci_layout_with_annotation_and_label(tmp_path: Path) -> None:
    layout = write_layout(build(S3_V160), tmp_path / "layout", ref_name=str(REF))
    p = read_package(str(layout))  # the layout records the reference
    assert p.ref == REF and p.kind == "Provider" and p.problems == ()
    assert [c.name for c in p.crds] == ["buckets.s3.aws.upbound.io"]


def test_ggcr_tarball_finds_base_layer_by_config_label(tmp_path: Path) -> None:
    # docker-save style tarballs lose descriptor annotations; the config label is the only marker
    extra = tar_layer({"package.yaml": b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: decoy}\n"})
    path = write_ggcr_tarball(build(S3_V160, extra_layer=extra), tmp_path / "s3.xpkg", str(REF))
    p = read_package(str(path))
    assert p.ref == REF and p.name == "provider-aws-s3" and p.problems == ()


def test_oci_layout_tarball_needs_ref_when_unnamed(tmp_path: Path) -> None:
    path = write_layout_tar(build(S3_V160), tmp_path / "s3.xpkg")
    with pytest.raises(UsageError, match="REF=PATH"):
        read_xpkg_file(path, None)
    assert read_package(f"{REF}={path}").crds[0].group == "s3.aws.upbound.io"


def test_legacy_unannotated_image_uses_flattened_filesystem(tmp_path: Path) -> None:
    p = read_layout(write_layout(build(S3_V160, annotate=False, label=False), tmp_path / "l"), REF)
    assert p.kind == "Provider" and p.problems == ()


@pytest.mark.parametrize("kwargs,problem", [
    ({"label_digest": "sha256:" + "0" * 64}, "name different base layers"),
    ({"annotate": False, "label_digest": "sha256:" + "1" * 64}, "the manifest lacks"),
])
def test_pkg_001_label_and_annotation_must_agree(tmp_path: Path, kwargs: dict[str, object], problem: str) -> None:
    p = read_layout(write_layout(build(S3_V160, **kwargs), tmp_path / "l"), REF)  # type: ignore[arg-type]
    assert any(problem in pr.message for pr in p.problems)
    report = run("", [p])
    assert "PKG-001" in rules(report) and report.verdict == "fail"


def test_pkg_001_base_layer_without_package_yaml(tmp_path: Path) -> None:
    other = tar_layer({"crossplane.yaml": S3_V160.encode()})  # the source name, not the image name
    p = read_layout(write_layout(_with_base(other), tmp_path / "l"), REF)
    [problem] = p.problems
    assert problem.message.startswith("the base layer sha256:")
    assert problem.message.endswith("has no package.yaml at its root")
    assert p.kind == "" and "PKG-001" in rules(run("", [p]))


def _with_base(layer: bytes):  # type: ignore[no-untyped-def]
    """An image whose annotated base layer is exactly `layer`."""
    from tests.support.xpkg_image import Image, digest
    config = json.dumps({"config": {"Labels": {f"io.crossplane.xpkg:{digest(layer)}": "base"}}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                                          "digest": digest(config), "size": len(config)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest(layer),
                                       "size": len(layer), "annotations": {"io.crossplane.xpkg": "base"}}]}).encode()
    return Image(manifest, config, (layer,))


def test_corrupt_blob_is_refused(tmp_path: Path) -> None:
    image = build(S3_V160)
    layout = write_layout(image, tmp_path / "l")
    blob = next(p for p in (layout / "blobs" / "sha256").iterdir() if p.read_bytes() == image.layers[0])
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(DigestMismatchError):
        read_layout(layout, REF)


def test_not_a_package_file(tmp_path: Path) -> None:
    (tmp_path / "x.xpkg").write_bytes(tar_layer({"hello.txt": b"hi"}))
    with pytest.raises(InputError, match="not an image tarball"):
        read_xpkg_file(tmp_path / "x.xpkg", REF)
    (tmp_path / "y.xpkg").write_bytes(b"not a tar at all")
    with pytest.raises(InputError):
        read_package(f"{REF}={tmp_path / 'y.xpkg'}")


def test_to_dns_label() -> None:
    assert to_dns_label("crossplane-contrib/function-patch-and-transform") == \
        "crossplane-contrib-function-patch-and-transform"


# --- a real xpkg image in a real registry, checked by reference ----------------------------------------------


def test_check_against_xpkg_image_by_reference(registry) -> None:  # type: ignore[no-untyped-def]
    """Push provider-aws-s3 v1.6.0 and its family as xpkg images, read them back by reference, and gate
    a composition using Bucket v1beta2 (first served in v1.7.0) against them."""
    refs = {}
    for name in ("provider-aws-s3-v1.6.0", "provider-family-aws-v1.6.0", "function-patch-and-transform-v0.10.0"):
        fixture = ImageRef.parse(REFS[name])
        repo = fixture.path
        push(Pusher.to(registry), repo, fixture.tag or "", build((PACKAGES / name / "package.yaml").read_text()))
        refs[name] = ImageRef.parse(f"{registry.host}/{repo}:{fixture.tag}")
    # read back through the product's registry client, as the build does
    client = RegistryClient(plan_routes([registry.host], [RegistryConfig(registry.host)],
                                        insecure_hosts=[registry.host]))
    packages = []
    for ref in refs.values():
        top = client.get_manifest(ref).data
        pkg = read_image(ref, top, lambda d, ref=ref: b"".join(client.blob_chunks(ref, d)))
        assert pkg.problems == () and pkg.crds
        packages.append(pkg)
    s3 = packages[0]
    assert s3.identity == f"{registry.host}/upbound/provider-aws-s3" and s3.version == "v1.6.0"
    # the family dependency names xpkg.upbound.io: a bundle holding only the 127.0.0.1 copy cannot satisfy it
    comp = """
apiVersion: apiextensions.crossplane.io/v1
kind: CompositeResourceDefinition
metadata: {name: xbuckets.example.org}
spec:
  group: example.org
  names: {kind: XBucket, plural: xbuckets}
  versions: [{name: v1alpha1, served: true, referenceable: true}]
---
apiVersion: apiextensions.crossplane.io/v1
kind: Composition
metadata: {name: xbuckets}
spec:
  compositeTypeRef: {apiVersion: example.org/v1alpha1, kind: XBucket}
  mode: Pipeline
  pipeline:
  - step: pt
    functionRef: {name: crossplane-contrib-function-patch-and-transform}
    input:
      apiVersion: pt.fn.crossplane.io/v1beta1
      kind: Resources
      resources:
      - name: bucket
        base: {apiVersion: s3.aws.upbound.io/VERSION, kind: Bucket, spec: {forProvider: {region: eu-west-1}}}
"""
    report = run(comp.replace("VERSION", "v1beta2"), packages, target="1.20")
    pv = [f for f in report.findings if f.rule == "PV-001"]
    assert report.verdict == "fail" and len(pv) == 1
    assert f"{registry.host}/upbound/provider-aws-s3:v1.6.0 serves v1beta1" in pv[0].message
    assert any(f.rule == "PV-008" and "xpkg.upbound.io/upbound/provider-family-aws" in f.message
               for f in report.findings)
    ok = run(comp.replace("VERSION", "v1beta1"), packages, target="1.20")
    assert "PV-001" not in rules(ok)
