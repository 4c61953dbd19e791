"""A cold build writes its archive behind the downloads (pipeline.py with `pull.start`).

Every image is resolved and its manifests stored first; the charts, rewritten manifests, BOM and
provenance are made while the blobs still arrive, and the archive waits for each blob only when it
reaches it (in digest order, the order downloads are started in). A real build from the real
registry through the fault proxy, which holds or damages one layer: the one a bundle lists last.
"""

from __future__ import annotations

import hashlib
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bundler import archive, pipeline
from bundler.errors import DigestMismatchError
from bundler.keys import load_signer
from bundler.spec import load as load_spec
from tests.support.faultproxy import Fault, FaultProxy, start_proxy
from tests.support.images import Index, one_image_spec


@pytest.fixture
def proxy(registry: Any) -> Iterator[FaultProxy]:
    p = start_proxy(registry.url)
    yield p
    p.stop()


def _layout_blobs(index: Index) -> dict[str, int]:
    """digest -> size of everything the bundle's OCI layout holds: layers, configs, manifests, index."""
    return {**{b.digest: b.size for image in index.images for b in (*image.blobs(), image.manifest)},
            index.digest: index.manifest.size}


def _build_in_thread(tmp_path: Path, output: Path) -> tuple[threading.Thread, list[object]]:
    """`pipeline.build` of tmp_path/bundle.yaml with a fresh cache; `ended` gets its result or error."""
    options = pipeline.BuildOptions(output=output, signer=load_signer(tmp_path / "vendor.key"),
                                    cache=tmp_path / "cache")
    ended: list[object] = []

    def run() -> None:
        try:
            ended.append(pipeline.build(load_spec(tmp_path / "bundle.yaml"), options))
        except BaseException as exc:  # handed to the test, which asserts on it
            ended.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, ended


def _until(condition: Callable[[], bool], what: str) -> None:
    """The deadline only turns a hang into a failure."""
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"no {what} after 60 s"
        time.sleep(0.02)


def test_the_archive_is_written_while_the_last_blob_is_still_downloading(registry, proxy: FaultProxy,  # type: ignore[no-untyped-def]
                                                                         tmp_path: Path, run_cli) -> None:
    index = one_image_spec(registry, tmp_path, run_cli, "behind", seed=31, layer_size=3_000_000, via=proxy.host)
    blobs = _layout_blobs(index)
    held = max(b.digest for image in index.images for b in image.layers)
    ahead = sum(size for digest, size in blobs.items() if digest < held)  # what the archive holds before it
    pause = proxy.add(Fault("pause", match=held, after=1 << 20))
    output = tmp_path / "out" / "behind.bundle.tar"
    thread, ended = _build_in_thread(tmp_path, output)
    try:
        assert pause.reached.wait(60), "the held layer was never requested"

        def archived_up_to_the_held_blob() -> bool:
            partial = list(output.parent.glob(f".{output.name}.*.partial"))
            return bool(partial) and partial[0].stat().st_size >= ahead

        _until(archived_up_to_the_held_blob, f"{ahead} bytes archived ahead of the held layer")
        assert thread.is_alive() and not output.exists()
        assert not (tmp_path / "cache/blobs/sha256" / held.removeprefix("sha256:")).exists()
    finally:
        pause.release.set()
        thread.join(60)
    [result] = ended
    assert isinstance(result, pipeline.BuildResult), result
    members = {m.name: m.size for m in archive.read_index(output).payload}
    assert {f"images/blobs/sha256/{d.removeprefix('sha256:')}": s for d, s in blobs.items()}.items() <= members.items()
    assert sorted(p.name for p in output.parent.iterdir()) == [output.name]  # no staging, no partial file


def test_a_blob_that_fails_while_the_archive_is_written_leaves_nothing(registry, proxy: FaultProxy,  # type: ignore[no-untyped-def]
                                                                      tmp_path: Path, run_cli) -> None:
    index = one_image_spec(registry, tmp_path, run_cli, "damaged", seed=32, layer_size=3_000_000, via=proxy.host)
    damaged = max(b.digest for image in index.images for b in image.layers)
    proxy.add(Fault("corrupt", match=damaged, times=2))
    output = tmp_path / "out" / "damaged.bundle.tar"
    output.parent.mkdir()
    output.write_bytes(b"the previous bundle")
    thread, ended = _build_in_thread(tmp_path, output)
    thread.join(60)
    [error] = ended
    assert isinstance(error, DigestMismatchError) and error.exit_code == 7
    assert damaged in str(error) and "(twice; nothing was kept)" in str(error)
    assert output.read_bytes() == b"the previous bundle"
    assert sorted(p.name for p in output.parent.iterdir()) == [output.name]


def test_a_cold_build_hashes_each_downloaded_blob_once(registry, tmp_path: Path, run_cli,  # type: ignore[no-untyped-def]
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The download verifies each blob as it streams; the archive copies those very bytes (same file,
    unchanged since) without hashing them again. Everything else it hashes as it writes it."""
    index = one_image_spec(registry, tmp_path, run_cli, "once", seed=33, layer_size=3_000_000)
    fed: list[int] = []
    real = hashlib.sha256

    def counting(data: bytes = b"") -> Any:
        hasher = real(data)
        fed.append(len(data))

        class Fed:
            def update(self, chunk: bytes | memoryview) -> None:
                fed.append(len(chunk))
                hasher.update(chunk)

            def hexdigest(self) -> str:
                return hasher.hexdigest()

        return Fed()

    monkeypatch.setattr(archive, "hashlib", types.SimpleNamespace(sha256=counting))  # archive.py's hashing only
    output = tmp_path / "out" / "once.bundle.tar"
    thread, ended = _build_in_thread(tmp_path, output)
    thread.join(60)
    assert isinstance(ended[0], pipeline.BuildResult), ended
    payload = archive.read_index(output).payload
    blobs = sum(m.size for m in payload if m.name.startswith("images/blobs/"))
    assert blobs >= sum(_layout_blobs(index).values())
    assert sum(fed) == sum(m.size for m in payload) - blobs  # the rest: index.json, oci-layout, SBOM, provenance


def test_a_blob_changed_in_the_cache_after_its_download_is_hashed_again_and_stops_the_build(  # type: ignore[no-untyped-def]
        registry, proxy: FaultProxy, tmp_path: Path, run_cli) -> None:
    """Trusting the download's hash holds only while the file is the one downloaded: same inode, size
    and mtime. Here a layer is overwritten in the cache (same size) while the archive waits for another;
    the archive hashes it again and the build fails as for any corrupted cache blob."""
    index = one_image_spec(registry, tmp_path, run_cli, "changed", seed=34, layer_size=3_000_000, via=proxy.host)
    layers = sorted(b.digest for image in index.images for b in image.layers)
    pause = proxy.add(Fault("pause", match=layers[0], after=1 << 20))  # the archive waits here
    output = tmp_path / "out" / "changed.bundle.tar"
    thread, ended = _build_in_thread(tmp_path, output)
    changed = tmp_path / "cache/blobs/sha256" / layers[-1].removeprefix("sha256:")
    try:
        assert pause.reached.wait(60)
        _until(changed.exists, "the last layer in the cache")
        data = bytearray(changed.read_bytes())
        data[0] ^= 1
        with changed.open("r+b") as f:  # in place: the staging payload's hard link sees it too
            f.write(bytes(data))
    finally:
        pause.release.set()
        thread.join(60)
    [error] = ended
    assert isinstance(error, DigestMismatchError) and error.exit_code == 7, error
    assert str(error).startswith(f"images/blobs/sha256/{layers[-1].removeprefix('sha256:')}: content hashes to")
    assert "the cache holds a corrupted blob" in str(error)
    assert not output.exists() and list(output.parent.iterdir()) == []
