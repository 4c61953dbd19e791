"""Images that were never in a registry: docker-archive and oci-archive files, imported digest-honestly.

The archives are written by skopeo (containers/image, the library podman save uses) from images pushed
to the real docker-registry fixture, so they have the shapes real tools write: a docker-archive with
`manifest.json`, a config named by its digest and uncompressed layer tars; an oci-archive holding an
OCI layout, with the registry's own multi-platform index.
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from bundler.errors import DigestMismatchError, InputError, PlatformMissingError
from bundler.layout import Layout
from bundler.oci import OCI_INDEX, OCI_LAYER, Platform
from bundler.pull import Sources, pull
from bundler.reference import ImageRef
from bundler.spec import ImageOptions, PlatformExemption
from tests.support.images import Pusher, make_image, make_layer, multi_platform

REF = "registry.example.com/team/app:1.4.0"  # what the manifests name; no such registry is configured


def _skopeo(src: str, dest: str, *extra: str) -> None:
    subprocess.run(["skopeo", "copy", "--src-tls-verify=false", *extra, src, dest], check=True,
                   capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def saved(registry: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """docker-archives of an amd64 and an arm64 image, and an oci-archive of a multi-platform index."""
    tmp = tmp_path_factory.mktemp("archives")
    pusher = Pusher.to(registry)
    images = {}
    for arch in ("amd64", "arm64"):
        # Uncompressed layers, as docker save writes them (diff_id == layer digest).
        image = make_image(f"linux/{arch}", [make_layer(f"app/{arch}/{n}", 4096, compress=False) for n in range(2)])
        pusher.push("archives/app", image, tag=arch)
        _skopeo(f"docker://{registry.host}/archives/app:{arch}", f"docker-archive:{tmp / arch}.tar:team/app:1.4.0")
        images[arch] = image
    index = multi_platform("oci-app", seed=7)
    pusher.push("archives/multi", index, tag="v1")
    _skopeo(f"docker://{registry.host}/archives/multi:v1", f"oci-archive:{tmp / 'multi.tar'}:app:1.4.0", "--all",
            "--preserve-digests")
    return {"tmp": tmp, "images": images, "index": index, "host": registry.host}


def _pull(tmp: Path, opts: ImageOptions, ref: str = REF, **kw: Any) -> Any:
    [image] = pull([ref], layout=tmp / "out", options_for=lambda r: opts, sources=Sources(), cache=tmp / "cache", **kw)
    return image


def test_docker_archives_one_per_platform_make_an_honest_index(saved: dict[str, Any], tmp_path: Path) -> None:
    archives = (saved["tmp"] / "amd64.tar", saved["tmp"] / "arm64.tar")
    image = _pull(tmp_path, ImageOptions(ImageRef.parse(REF), archives=archives))
    out = Layout(tmp_path / "out")
    index = json.loads(out.read_blob(image.bundled_digest))
    assert index["mediaType"] == OCI_INDEX and image.origin == "archive"
    assert [str(p.platform) for p in image.platforms] == ["linux/amd64", "linux/arm64"]
    for platform, arch in zip(image.platforms, ("amd64", "arm64"), strict=True):
        manifest = json.loads(out.read_blob(platform.digest))
        pushed = saved["images"][arch]
        # The config is the image's own (its digest is the image ID docker shows); layers are the bytes
        # of the archive, uncompressed, each equal to the config's diff_id.
        assert manifest["config"]["digest"] == pushed.config.digest
        assert [layer["digest"] for layer in manifest["layers"]] == [layer.digest for layer in pushed.layers]
        assert {layer["mediaType"] for layer in manifest["layers"]} == {OCI_LAYER}
        for layer in pushed.layers:
            assert out.read_blob(layer.digest) == layer.data
    # Deterministic: the same archives give the same digest.
    again = _pull(tmp_path / "again", ImageOptions(ImageRef.parse(REF), archives=tuple(reversed(archives))))
    assert again.bundled_digest == image.bundled_digest


def test_oci_archive_keeps_the_index_byte_for_byte(saved: dict[str, Any], tmp_path: Path) -> None:
    image = _pull(tmp_path, ImageOptions(ImageRef.parse(REF), archives=(saved["tmp"] / "multi.tar",)))
    assert image.upstream_digest == saved["index"].digest  # the registry's index, carried unchanged
    assert [str(p.platform) for p in image.platforms] == ["linux/amd64", "linux/arm64"]  # narrowed as usual
    assert image.bundled_digest != image.upstream_digest


def test_a_missing_platform_fails_naming_it(saved: dict[str, Any], tmp_path: Path) -> None:
    only_amd64 = ImageOptions(ImageRef.parse(REF), archives=(saved["tmp"] / "amd64.tar",))
    with pytest.raises(PlatformMissingError, match=r"platform linux/arm64 is missing from .*amd64\.tar "
                                                   r"\(they provide: linux/amd64\)") as info:
        _pull(tmp_path, only_amd64)
    assert info.value.exit_code == 8 and "archives:" in str(info.value)
    exempt = ImageOptions(ImageRef.parse(REF), archives=(saved["tmp"] / "amd64.tar",),
                          platform_exemptions=(PlatformExemption(Platform("linux", "arm64"), "x86 only appliance"),))
    image = _pull(tmp_path / "exempt", exempt)
    assert [str(p.platform) for p in image.platforms] == ["linux/amd64"] and image.exempted


def test_a_damaged_layer_is_refused(saved: dict[str, Any], tmp_path: Path) -> None:
    damaged = tmp_path / "damaged.tar"
    with tarfile.open(saved["tmp"] / "amd64.tar") as src, tarfile.open(damaged, "w") as dst:
        layer_name = json.load(src.extractfile("manifest.json"))[0]["Layers"][1]  # type: ignore[arg-type]
        for info in src.getmembers():
            data = src.extractfile(info).read() if info.isfile() else None  # type: ignore[union-attr]
            if info.name == layer_name:
                data = data[:-1] + bytes([data[-1] ^ 1])  # type: ignore[index]
            dst.addfile(info, io.BytesIO(data) if data is not None else None)
    opts = ImageOptions(ImageRef.parse(REF), archives=(damaged, saved["tmp"] / "arm64.tar"))
    with pytest.raises(DigestMismatchError, match="layer 2 .* the config's diff_id is"):
        _pull(tmp_path, opts)
    assert not list(Layout(tmp_path / "cache").partial.iterdir())


def test_a_pinned_digest_must_be_what_the_archives_hold(saved: dict[str, Any], tmp_path: Path) -> None:
    archives = (saved["tmp"] / "multi.tar",)
    pinned = f"registry.example.com/team/app@{saved['index'].digest}"
    image = _pull(tmp_path, ImageOptions(ImageRef.parse(pinned), archives=archives), ref=pinned)
    assert image.upstream_digest == saved["index"].digest
    wrong = "registry.example.com/team/app@sha256:" + "0" * 64
    with pytest.raises(DigestMismatchError, match="the archives hold sha256:.*not the pinned"):
        _pull(tmp_path / "w", ImageOptions(ImageRef.parse(wrong), archives=archives), ref=wrong)


def test_not_an_image_archive(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.tar"
    with tarfile.open(bogus, "w") as tar:
        info = tarfile.TarInfo("README")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(InputError, match="neither an OCI layout"):
        _pull(tmp_path, ImageOptions(ImageRef.parse(REF), archives=(bogus,)))
    (tmp_path / "text.tar").write_text("not a tar")
    with pytest.raises(InputError, match="not a readable image archive"):
        _pull(tmp_path, ImageOptions(ImageRef.parse(REF), archives=(tmp_path / "text.tar",)))


def test_offline_works_from_archives(saved: dict[str, Any], tmp_path: Path) -> None:
    archives = (saved["tmp"] / "amd64.tar", saved["tmp"] / "arm64.tar")
    image = _pull(tmp_path, ImageOptions(ImageRef.parse(REF), archives=archives), offline=True)
    assert len(image.platforms) == 2


def test_pull_spec_cli_imports_archives(saved: dict[str, Any], tmp_path: Path, run_cli: Any) -> None:
    import shutil

    for arch in ("amd64", "arm64"):
        shutil.copy(saved["tmp"] / f"{arch}.tar", tmp_path / f"app-{arch}.tar")
    spec = tmp_path / "bundle.yaml"
    spec.write_text(f"""apiVersion: airgap-bundle.dev/v1alpha1
kind: Bundle
metadata: {{name: local-images, version: 1.0.0}}
localRegistry: {{host: registry.local:5000}}
images:
  - ref: {REF}
    archives: [app-amd64.tar, app-arm64.tar]   # docker save, one per platform
""")
    result = run_cli("pull", str(spec), "--output", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"),
                     "--json")
    assert result.returncode == 0, result.stderr
    [entry] = json.loads(result.stdout)["images"]
    assert entry["source"] == REF and [p["platform"] for p in entry["platforms"]] == ["linux/amd64", "linux/arm64"]
    assert "pull: endpoints: none;" in result.stderr  # no registry was to be contacted for it
    assert f"pull: {REF} imported from {tmp_path / 'app-amd64.tar'}, {tmp_path / 'app-arm64.tar'}" in result.stderr


def test_an_archive_of_several_images_is_searched_by_name(saved: dict[str, Any], tmp_path: Path) -> None:
    # `docker save a b` writes one manifest.json entry per image, each with its RepoTags.
    both = tmp_path / "both.tar"
    with tarfile.open(saved["tmp"] / "amd64.tar") as src, tarfile.open(both, "w") as dst:
        for info in src.getmembers():
            data = src.extractfile(info).read() if info.isfile() else None  # type: ignore[union-attr]
            if info.name == "manifest.json":
                [entry] = json.loads(data)  # type: ignore[arg-type]
                other = {**entry, "RepoTags": ["other/tool:2.0"], "Layers": entry["Layers"][:1]}
                data = json.dumps([other, entry]).encode()
                info.size = len(data)
            dst.addfile(info, io.BytesIO(data) if data is not None else None)
    exempt = (PlatformExemption(Platform("linux", "arm64"), "test"),)
    image = _pull(tmp_path, ImageOptions(ImageRef.parse(REF), archives=(both,), platform_exemptions=exempt))
    manifest = json.loads(Layout(tmp_path / "out").read_blob(image.platforms[0].digest))
    assert len(manifest["layers"]) == 2  # the entry tagged team/app:1.4.0, not other/tool
    with pytest.raises(InputError, match=r"holds 2 images and none is named .*missing:1.0 "
                                         r"\(docker.io/team/app:1.4.0, other/tool:2.0\)"):
        _pull(tmp_path / "x", ImageOptions(ImageRef.parse("registry.example.com/missing:1.0"), archives=(both,),
                                           platform_exemptions=exempt), ref="registry.example.com/missing:1.0")


def test_a_lock_pins_an_archived_image_by_what_the_archives_hold(saved: dict[str, Any], tmp_path: Path) -> None:
    from bundler.errors import LockedDigestGoneError
    from bundler.pull import Pin

    opts = ImageOptions(ImageRef.parse(REF), archives=(saved["tmp"] / "amd64.tar", saved["tmp"] / "arm64.tar"))
    image = _pull(tmp_path / "first", opts)
    key = ImageRef.parse(REF).canonical
    again = _pull(tmp_path / "again", opts, pins={key: Pin(image.upstream_digest, "bundle.lock:9 images[0]")})
    assert again.bundled_digest == image.bundled_digest
    other = "sha256:" + "0" * 64
    with pytest.raises(LockedDigestGoneError, match=r"bundle\.lock:9 images\[0\] pins sha256:0+, but its archives "
                                                    "now hold " + image.upstream_digest):
        _pull(tmp_path / "moved", opts, pins={key: Pin(other, "bundle.lock:9 images[0]")})
