"""xpkg.py on malformed packages: each problem the reader records, and each refusal with its message.
Images are real bytes (tests/support/xpkg_image.py) read from dicts, layouts and tarballs on disk."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from bundler.errors import InputError, UsageError
from bundler.reference import ImageRef
from bundler.xpkg import (
    MAX_PACKAGE_BYTES,
    MAX_TAR_MEMBER,
    parse_package_yaml,
    read_image,
    read_layout,
    read_local,
    read_xpkg_file,
)
from tests.support.crossplane import PACKAGES, REFS
from tests.support.xpkg_image import (
    OCI_INDEX,
    OCI_MANIFEST,
    build,
    digest,
    tar_layer,
    write_ggcr_tarball,
    write_layout,
)

S3 = (PACKAGES / "provider-aws-s3-v1.6.0" / "package.yaml").read_text()
REF = ImageRef.parse(REFS["provider-aws-s3-v1.6.0"])
META = "apiVersion: meta.pkg.crossplane.io/v1\nkind: {kind}\nmetadata: {{name: p}}\n{spec}"


def _problems(text: str) -> list[str]:
    return [p.message for p in parse_package_yaml(text, REF, "pkg").problems]


def test_package_yaml_problems_are_recorded_not_raised() -> None:
    one = META.format(kind="Provider", spec="")
    assert _problems(one + "---\n" + one) == ["package.yaml has 2 meta.pkg.crossplane.io objects; exactly one is allowed"]
    assert _problems(META.format(kind="Widget", spec="")) == [
        "meta kind 'Widget' is not one of Provider, Function, Configuration"]
    crd = "---\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {{name: {n}}}\n{body}"
    text = (META.format(kind="Provider", spec="")
            + crd.format(n="a", body="spec: nope\n")
            + crd.format(n="b", body="spec: {names: {kind: B}, versions: []}\n")
            + crd.format(n="c", body="spec: {group: g.io, names: {kind: C}, versions: [v1, {name: v2, served: true}]}\n"))
    assert _problems(text) == [f"CustomResourceDefinition {n!r} lacks spec.group, names or versions" for n in "ab"]
    [c] = parse_package_yaml(text, REF, "pkg").crds
    assert [(v.name, v.served) for v in c.versions] == [("v2", True)]  # the entry that is not a mapping is skipped


def test_depends_on_entries_that_are_not_mappings_are_skipped() -> None:
    spec = "spec:\n  dependsOn:\n  - just-a-string\n  - {provider: xpkg.upbound.io/u/p, version: '>=1'}\n"
    [dep] = parse_package_yaml(META.format(kind="Configuration", spec=spec), REF, "pkg").depends_on
    assert (dep.kind, dep.package, dep.key, dep.index) == ("Provider", "xpkg.upbound.io/u/p", "provider", 1)


def test_read_local_refusals(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no package.yaml found"):
        read_local(tmp_path, REF)
    big = tmp_path / "package.yaml"
    with big.open("wb") as f:
        f.truncate(MAX_PACKAGE_BYTES + 1)  # sparse
    with pytest.raises(InputError, match=f"package.yaml: larger than {MAX_PACKAGE_BYTES} bytes"):
        read_local(tmp_path, REF)
    big.write_bytes(b"kind: \xff\n")
    with pytest.raises(InputError, match="package.yaml: cannot read: 'utf-8' codec"):
        read_local(tmp_path, REF)


def _index(*platforms: str | None, manifest: bytes) -> bytes:
    entries = []
    for p in platforms:
        e: dict[str, object] = {"mediaType": OCI_MANIFEST, "digest": digest(manifest), "size": len(manifest)}
        if p:
            os_, arch = p.split("/")
            e["platform"] = {"os": os_, "architecture": arch}
        entries.append(e)
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()


def test_an_index_gives_its_only_manifest_or_the_linux_amd64_one() -> None:
    image = build(S3)
    get = image.blobs().__getitem__
    for top in (_index("linux/amd64", "unknown/unknown", manifest=image.manifest),
                _index("linux/arm64", "linux/amd64", manifest=image.manifest)):
        assert read_image(REF, top, get).kind == "Provider"
    with pytest.raises(InputError, match="index has 2 manifests and none for linux/amd64"):
        read_image(REF, _index("linux/arm64", "linux/s390x", manifest=image.manifest), get)


def _image_with_layers(layers: list[bytes], annotate: list[bool], labels: dict[str, str]) -> tuple[bytes, dict]:
    config = json.dumps({"config": {"Labels": labels}}).encode()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                           "config": {"mediaType": "application/json", "digest": digest(config), "size": len(config)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest(layer),
                                       "size": len(layer),
                                       **({"annotations": {"io.crossplane.xpkg": "base"}} if a else {})}
                                      for layer, a in zip(layers, annotate, strict=True)]}).encode()
    blobs = {digest(config): config, **{digest(layer): layer for layer in layers}}
    return manifest, blobs


def test_base_layer_markers_that_disagree_or_are_missing() -> None:
    a, b = tar_layer({"package.yaml": S3.encode()}), tar_layer({"other": b"x"})
    manifest, blobs = _image_with_layers([a, b], [True, True], {})
    assert [p.message for p in read_image(REF, manifest, blobs.__getitem__).problems] == [
        "2 layers are annotated io.crossplane.xpkg: base; at most one"]
    labels = {f"io.crossplane.xpkg:{digest(a)}": "base", f"io.crossplane.xpkg:{digest(b)}": "base"}
    manifest, blobs = _image_with_layers([a, b], [False, False], labels)
    assert "2 config labels mark a base layer; at most one" in [
        p.message for p in read_image(REF, manifest, blobs.__getitem__).problems]
    manifest, blobs = _image_with_layers([b], [False], {})
    package = read_image(REF, manifest, blobs.__getitem__)
    assert package.kind == "" and [p.message for p in package.problems] == [
        "no layer is annotated io.crossplane.xpkg: base and no layer holds package.yaml"]


def _header_only(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    return info.tobuf(tarfile.PAX_FORMAT)  # a header that claims `size` bytes; none follow


@pytest.mark.parametrize(("layer", "message"), [
    (b"\x1f\x8b" + b"garbage", "bad gzip"),
    (b"not a tar at all" * 64, "not a readable tar layer"),
    (tar_layer({"package.yaml": b"kind: \xff\n"}), "not a readable tar layer: 'utf-8' codec"),
    (_header_only("package.yaml", MAX_PACKAGE_BYTES + 1), f"package.yaml is larger than {MAX_PACKAGE_BYTES} bytes"),
])
def test_unreadable_base_layers(layer: bytes, message: str) -> None:
    manifest, blobs = _image_with_layers([layer], [True], {})
    with pytest.raises(InputError, match=f"{REF}: layer {digest(layer)}: {message}"):
        read_image(REF, manifest, blobs.__getitem__)


@pytest.mark.parametrize(("top", "message"), [(b"{nope", "not JSON"), (b"[1, 2]", "not a JSON object")])
def test_a_manifest_that_is_not_a_json_object(top: bytes, message: str) -> None:
    with pytest.raises(InputError, match=f"{REF}: manifest: {message}"):
        read_image(REF, top, {}.__getitem__)


def test_layouts_missing_a_blob_or_an_index_or_a_name(tmp_path: Path) -> None:
    image = build(S3)
    layout = write_layout(image, tmp_path / "l", ref_name=str(REF))
    (layout / "blobs" / "sha256" / digest(image.config).split(":")[1]).unlink()
    with pytest.raises(InputError, match=f"l: blob {digest(image.config)} is missing"):
        read_layout(layout, REF)
    with pytest.raises(InputError, match="empty/index.json: cannot read: No such file or directory"):
        read_layout(tmp_path / "empty", REF)
    two = write_layout(image, tmp_path / "two", ref_name="a")
    index = json.loads((two / "index.json").read_text())
    index["manifests"].append({**index["manifests"][0], "annotations": {"org.opencontainers.image.ref.name": "b"}})
    (two / "index.json").write_text(json.dumps(index))
    with pytest.raises(InputError, match=f"two: 2 images in the layout and none is named {REF}"):
        read_layout(two, REF)


def _tar(path: Path, files: dict[str, bytes]) -> Path:
    path.write_bytes(tar_layer(files))
    return path


def test_xpkg_files_that_are_broken(tmp_path: Path) -> None:
    image = build(S3)
    index = json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": image.digest, "size": len(image.manifest)}]}).encode()
    no_blobs = _tar(tmp_path / "a.xpkg", {"index.json": index, "oci-layout": b"{}"})
    with pytest.raises(InputError, match=f"a.xpkg: blob {image.digest} is missing"):
        read_xpkg_file(no_blobs, REF)
    bad_manifest = _tar(tmp_path / "b.xpkg", {"manifest.json": b'[{"Config": "missing.json"}]'})
    with pytest.raises(InputError, match=r"b.xpkg: malformed manifest.json: KeyError\('missing.json'\)"):
        read_xpkg_file(bad_manifest, REF)
    untagged = write_ggcr_tarball(image, tmp_path / "c.xpkg", None)
    with pytest.raises(UsageError, match="c.xpkg: the package does not say which reference it stands for"):
        read_xpkg_file(untagged, None)
    huge = tmp_path / "d.xpkg"
    huge.write_bytes(_header_only("blob", MAX_TAR_MEMBER + 1))
    with pytest.raises(InputError, match=f"d.xpkg: member blob is larger than {MAX_TAR_MEMBER} bytes"):
        read_xpkg_file(huge, REF)

