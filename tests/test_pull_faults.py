"""pull.py under faults (tests/support/faultproxy.py): drops, 500/429, flipped bytes, SIGKILL and resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bundler.errors import DigestMismatchError, RegistryError
from bundler.layout import Layout
from bundler.pull import PulledImage, Pulling, Sources, pull, start
from tests.conftest import REPO
from tests.support.faultproxy import Fault, FaultProxy, start_proxy
from tests.support.images import Pusher, multi_platform

IMAGE = multi_platform("faulty", seed=21, platforms=("linux/amd64", "linux/arm64"), layer_size=1_500_000,
                       compress=False)
BIG = multi_platform("resume", seed=22, platforms=("linux/amd64", "linux/arm64"), layer_size=6_000_000,
                     layers=2, compress=False)
SIZES = {b.digest.removeprefix("sha256:"): b.size for image in BIG.images for b in image.blobs()}


@pytest.fixture(scope="module")
def refs(registry: Any) -> dict[str, str]:
    pusher = Pusher.to(registry)
    pusher.push("faults/app", IMAGE, "v1")
    pusher.push("faults/big", BIG, "v1")
    return {"app": "faults/app:v1", "big": "faults/big:v1"}


@pytest.fixture
def proxy(registry: Any):  # type: ignore[no-untyped-def]
    p = start_proxy(registry.url)
    yield p
    p.stop()


def pull_via(proxy: FaultProxy, path: str, tmp: Path, *, sleep: Callable[[float], None] = time.sleep,
             **kw: Any) -> list[PulledImage]:
    ref = f"{proxy.host}/{path}"
    sources = Sources.for_refs([ref], insecure_hosts=(proxy.host,), backoff=0.01, sleep=sleep)
    return pull([ref], layout=tmp / "out", cache=tmp / "cache", sources=sources, **kw)


def blobs_on_disk(tmp: Path) -> set[str]:
    return {p.name for d in ("out", "cache") if (tmp / d / "blobs/sha256").exists()
            for p in (tmp / d / "blobs/sha256").iterdir() if p.is_file()}


LAYER = IMAGE.images[0].layers[0]


def test_drop_mid_blob_recovers_with_range(proxy: FaultProxy, refs: dict[str, str], tmp_path: Path) -> None:
    proxy.add(Fault("drop", match=LAYER.digest, after=LAYER.size // 2))
    [img] = pull_via(proxy, refs["app"], tmp_path)
    assert Layout(tmp_path / "out").has_blob(LAYER.digest)
    gets = proxy.requests_to(LAYER.digest)
    assert len(gets) == 2 and gets[1].range and gets[1].range.startswith("bytes=")
    assert img.bundled_digest == IMAGE.digest


def test_500_and_429_recover(proxy: FaultProxy, refs: dict[str, str], tmp_path: Path) -> None:
    proxy.add(Fault("status", match="/manifests/v1", status=500))
    proxy.add(Fault("status", match="/blobs/", status=429, retry_after="7"))
    waits: list[float] = []  # the client's waits, recorded instead of spent: no clock in this test
    [img] = pull_via(proxy, refs["app"], tmp_path, sleep=waits.append)
    assert img.upstream_digest == IMAGE.digest
    assert 7.0 in waits  # Retry-After honoured to the second
    assert len(waits) == 2 and all(w <= 0.01 for w in waits if w != 7.0)  # and the 500 backed off
    assert [r.status for r in proxy.requests_to("/manifests/v1")] == [500, 200]
    assert {r.status for r in proxy.log} >= {500, 429, 200}


def test_flipped_byte_refetched_once(proxy: FaultProxy, refs: dict[str, str], tmp_path: Path) -> None:
    proxy.add(Fault("corrupt", match=LAYER.digest))
    pull_via(proxy, refs["app"], tmp_path)
    assert len(proxy.requests_to(LAYER.digest)) == 2
    assert Layout(tmp_path / "out").has_blob(LAYER.digest)


def test_flipped_byte_twice_fails_and_keeps_nothing_bad(proxy: FaultProxy, refs: dict[str, str],
                                                       tmp_path: Path) -> None:
    proxy.add(Fault("corrupt", match=LAYER.digest, times=2))
    with pytest.raises(DigestMismatchError) as info:
        pull_via(proxy, refs["app"], tmp_path)
    assert info.value.exit_code == 7 and LAYER.digest in str(info.value)
    assert LAYER.digest[7:] not in blobs_on_disk(tmp_path)
    assert not list((tmp_path / "cache/blobs/sha256/.partial").glob(LAYER.digest[7:]))
    assert not Layout(tmp_path / "out").entries()  # no image recorded


def test_persistent_500_fails_with_registry_error(proxy: FaultProxy, refs: dict[str, str], tmp_path: Path) -> None:
    proxy.add(Fault("status", match="/blobs/", status=500, times=1000))
    with pytest.raises(RegistryError) as info:
        pull_via(proxy, refs["app"], tmp_path)
    assert info.value.exit_code == 4 and "HTTP 500" in str(info.value)
    assert not Layout(tmp_path / "out").entries()
    assert all(name.startswith(".") or len(name) == 64 for name in blobs_on_disk(tmp_path))


def _until(condition: Callable[[], bool], what: str, child: subprocess.Popen[bytes]) -> None:
    """Wait for a state the pull must reach. The deadline only turns a hang into a failure."""
    deadline = time.monotonic() + 120
    while not condition():
        assert child.poll() is None, f"the pull exited ({child.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} after 120 s"
        time.sleep(0.02)


def test_sigkill_then_rerun_resumes_with_range(proxy: FaultProxy, refs: dict[str, str], tmp_path: Path) -> None:
    # Event-driven: the proxy holds one layer after 3 MB, so the kill cannot race its completion,
    # and the test waits for states (bytes on disk, the other blobs whole), never for a duration.
    held = BIG.images[0].layers[0]
    pause = proxy.add(Fault("pause", match=held.digest, after=3_000_000))
    others = {h for h in SIZES if h != held.digest.removeprefix("sha256:")}
    ref = f"{proxy.host}/{refs['big']}"
    args = [sys.executable, "-m", "bundler", "pull", "--insecure-registry", proxy.host, "--jobs", "2",
            "--cache", str(tmp_path / "cache"), "--output", str(tmp_path / "out"), ref]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    blobs, partial_dir = tmp_path / "cache/blobs/sha256", tmp_path / "cache/blobs/sha256/.partial"
    held_partial = partial_dir / held.digest.removeprefix("sha256:")
    child = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert pause.reached.wait(120), "the held layer was never requested"
        # mid-way on disk: the client wrote at least its first 1 MiB chunk of the held layer
        _until(lambda: held_partial.exists() and held_partial.stat().st_size >= 1 << 20, "bytes of the held layer",
               child)
        # every other blob whole (the second job fetches them while the first is held)
        _until(lambda: others <= {p.name for p in blobs.glob("*") if p.is_file()}, "other blobs", child)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
        child.wait()
    resumed = held_partial.stat().st_size
    assert 1 << 20 <= resumed < held.size
    proxy.clear()  # releases the held response and forgets the log
    rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    blob_gets = [r for r in proxy.log if "/blobs/" in r.path and r.method == "GET"]
    # whole blobs are not fetched again; the held one continues from the byte the disk holds
    assert [(r.path.rsplit("/", 1)[1], r.range) for r in blob_gets] == [(held.digest, f"bytes={resumed}-")]
    layout = Layout(tmp_path / "out")
    for image in BIG.images:
        assert all(layout.has_blob(b.digest) for b in image.blobs())
    assert not [p for p in partial_dir.glob("*")]


def test_sigterm_stops_a_download_under_way_at_its_next_chunk_and_keeps_its_bytes(
        proxy: FaultProxy, refs: dict[str, str], tmp_path: Path) -> None:
    """A cancelled CI job (SIGTERM) or Ctrl-C ends the pull without waiting for a long download to finish:
    the download stops at its next chunk, its bytes stay in .partial, and the next run continues them."""
    held = BIG.images[0].layers[0]
    pause = proxy.add(Fault("pause", match=held.digest, after=3_000_000))
    args = [sys.executable, "-m", "bundler", "pull", "--insecure-registry", proxy.host, "--jobs", "2",
            "--cache", str(tmp_path / "cache"), "--output", str(tmp_path / "out"), f"{proxy.host}/{refs['big']}"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    held_partial = tmp_path / "cache/blobs/sha256/.partial" / held.digest.removeprefix("sha256:")
    child = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    stopping = threading.Event()

    def read_stderr() -> None:
        assert child.stderr is not None
        for line in child.stderr:
            lines.append(line)
            if line.startswith("pull: stopping; 1 download(s) under way"):
                stopping.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        assert pause.reached.wait(120), "the held layer was never requested"
        _until(lambda: held_partial.exists() and held_partial.stat().st_size >= 1 << 20, "bytes of the held layer",
               child)
        others = {h for h in SIZES if h != held.digest.removeprefix("sha256:")}
        _until(lambda: others <= {p.name for p in held_partial.parent.parent.glob("*") if p.is_file()}, "other blobs",
               child)  # so the held layer is the one download under way
        child.send_signal(signal.SIGTERM)
        assert stopping.wait(120), "".join(lines)  # the pull is unwinding, the held download still under way
    finally:
        pause.release.set()  # the held response goes on: the download must stop at its next chunk
        child.wait(timeout=120)
        reader.join(timeout=120)
    assert child.returncode == 143, "".join(lines)
    assert any(line.startswith("airgap-bundle: stopped by SIGTERM") for line in lines), "".join(lines)
    kept = held_partial.stat().st_size
    assert 1 << 20 <= kept < held.size  # stopped mid-way, not run to the end
    assert not (tmp_path / "cache/blobs/sha256" / held.digest.removeprefix("sha256:")).exists()
    proxy.clear()
    rerun = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert [r.range for r in proxy.requests_to(held.digest)] == [f"bytes={kept}-"]


def _start_via(proxy: FaultProxy, path: str, tmp: Path, **kw: Any) -> Pulling:
    ref = f"{proxy.host}/{path}"
    sources = Sources.for_refs([ref], insecure_hosts=(proxy.host,), backoff=0.01)
    return start([ref], layout=tmp / "out", cache=tmp / "cache", sources=sources, jobs=2, **kw)


def test_start_returns_while_a_blob_is_still_arriving_and_finish_names_the_image_once_it_is_in(
        proxy: FaultProxy, refs: dict[str, str], tmp_path: Path) -> None:
    """A build writes its archive behind the downloads: `start` hands over the images while a layer is
    held, each other blob can be waited for on its own, and the output names the image only once
    every part of it is in (an interrupted pull never leaves a layout naming a missing layer)."""
    held = max(b.digest for image in BIG.images for b in image.blobs())  # the last a bundle lists
    pause = proxy.add(Fault("pause", match=held, after=1 << 20))
    with _start_via(proxy, refs["big"], tmp_path) as pulling:
        assert [p.bundled_digest for p in pulling.images] == [BIG.digest]
        assert pause.reached.wait(60)
        others = [b.digest for image in BIG.images for b in image.blobs() if b.digest != held]
        for digest in others:
            pulling.wait(digest)
            assert Layout(tmp_path / "out").has_blob(digest)
        assert not Layout(tmp_path / "out").has_blob(held) and not Layout(tmp_path / "out").entries()
        assert pulling.layout_blobs() == {**{b.digest: b.size for image in BIG.images for b in image.blobs()},
                                          **{image.digest: image.manifest.size for image in BIG.images},
                                          BIG.digest: BIG.manifest.size}
        pause.release.set()
        pulling.wait(held)
        pulling.finish()
    assert Layout(tmp_path / "out").resolve(f"{proxy.host}/{refs['big']}") is not None
    assert Layout(tmp_path / "cache").resolve(f"{proxy.host}/{refs['big']}") is not None


def test_waiting_for_one_blob_raises_the_first_failure_of_any_other_at_once(
        proxy: FaultProxy, refs: dict[str, str], tmp_path: Path) -> None:
    """The archive waits for blobs in digest order; a later blob that fails must stop it now, not after
    the earlier ones arrive (here one is held until the end of the test)."""
    digests = sorted(b.digest for image in BIG.images for b in image.blobs())
    pause = proxy.add(Fault("pause", match=digests[0], after=1 << 20))
    proxy.add(Fault("corrupt", match=digests[-1], times=2))
    with _start_via(proxy, refs["big"], tmp_path) as pulling:
        with pytest.raises(DigestMismatchError) as info:
            pulling.wait(digests[0])
        assert not Layout(tmp_path / "cache").has_blob(digests[0])  # raised while the first was still held
        pause.release.set()
    assert digests[-1] in str(info.value) and "(twice; nothing was kept)" in str(info.value)


def test_blobs_held_elsewhere_are_fetched_only_when_waited_for_and_the_cache_names_only_whole_images(
        proxy: FaultProxy, refs: dict[str, str], tmp_path: Path) -> None:
    """An update build skips what its base holds; the Crossplane gate may still need one of those blobs."""
    digests = sorted(b.digest for image in IMAGE.images for b in image.blobs())
    name = f"{proxy.host}/{refs['app']}"
    with _start_via(proxy, refs["app"], tmp_path, elsewhere=lambda digest, size: True) as pulling:
        assert not proxy.requests_to("/blobs/")
        pulling.wait(digests[0])
        assert [r.path.rsplit("/", 1)[1] for r in proxy.requests_to("/blobs/")] == [digests[0]]
        assert Layout(tmp_path / "out").has_blob(digests[0])
        pulling.finish()
    assert Layout(tmp_path / "out").resolve(name) is not None  # the output: a build's staging, named as before
    assert Layout(tmp_path / "cache").resolve(name) is None  # the cache lacks blobs of it: not named
    with _start_via(proxy, refs["app"], tmp_path) as pulling:
        pulling.finish()
    assert Layout(tmp_path / "cache").resolve(name) is not None
