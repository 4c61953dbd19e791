"""Image archives that are damaged or odd, built here as real tar files: each refusal is one line
naming the archive (never a traceback), and a docker-archive naming the exact reference is chosen."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from bundler.archives import import_image
from bundler.errors import DigestMismatchError, InputError, UsageError
from bundler.layout import Layout
from bundler.oci import Platform
from bundler.reference import ImageRef

REF = ImageRef.parse("registry.example.com/team/app:1.4.0")
AMD64 = [Platform("linux", "amd64")]
LAYER = b"layer-bytes" * 100
CONFIG = json.dumps({"architecture": "amd64", "os": "linux",
                     "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(LAYER).hexdigest()]}}).encode()


def _tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _docker(path: Path, *, manifest: object = None, config: bytes = CONFIG, drop: str | None = None) -> Path:
    entry = {"Config": "config.json", "RepoTags": ["other/app:9", str(REF)], "Layers": ["layer.tar"]}
    files = {"manifest.json": json.dumps([entry] if manifest is None else manifest).encode(),
             "config.json": config, "layer.tar": LAYER}
    files.pop(drop or "", None)
    return _tar(path, files)


def test_a_docker_archive_naming_the_exact_reference_imports(tmp_path: Path) -> None:
    top = import_image(REF, [_docker(tmp_path / "a.tar")], Layout(tmp_path / "out"), required=AMD64)
    assert Layout(tmp_path / "out").has_blob(top.digest)


def test_no_archive_at_all_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=f"{REF}: no archive given"):
        import_image(REF, [], Layout(tmp_path / "out"), required=AMD64)


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"manifest": {"not": "a list"}}, InputError, "manifest.json is not a list of images"),
    ({"manifest": [{"Config": "config.json", "RepoTags": [str(REF)]}]}, InputError,
     "manifest.json entry without Config or Layers: KeyError"),
    ({"drop": "config.json"}, InputError, "config.json is missing from the archive"),
    ({"config": json.dumps({"rootfs": {"diff_ids": []}}).encode()}, DigestMismatchError,
     "1 layers, but the config lists 0 diff_ids"),
    ({"config": b"{not json"}, InputError, r"malformed image archive \(JSONDecodeError"),
], ids=["manifest-not-a-list", "no-layers", "config-missing", "diff-ids", "config-not-json"])
def test_damaged_docker_archives(tmp_path: Path, kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        import_image(REF, [_docker(tmp_path / "a.tar", **kwargs)], Layout(tmp_path / "out"), required=AMD64)


def test_a_manifest_json_that_is_not_json(tmp_path: Path) -> None:
    path = _tar(tmp_path / "a.tar", {"manifest.json": b"[{", "config.json": CONFIG})
    with pytest.raises(InputError, match="a.tar: manifest.json is not JSON"):
        import_image(REF, [path], Layout(tmp_path / "out"), required=AMD64)


def test_an_oci_archive_whose_manifest_is_not_what_its_name_says(tmp_path: Path) -> None:
    manifest = b'{"schemaVersion": 2, "layers": []}'
    claimed = "sha256:" + "0" * 64
    index = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                                "digest": claimed, "size": len(manifest)}]}
    path = _tar(tmp_path / "o.tar", {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}',
                                     "index.json": json.dumps(index).encode(), f"blobs/sha256/{'0' * 64}": manifest})
    with pytest.raises(DigestMismatchError, match=f"o.tar: manifest {claimed}: content hashes to sha256:"):
        import_image(REF, [path], Layout(tmp_path / "out"), required=AMD64)
