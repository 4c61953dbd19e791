"""Disk at size: the build's staging payload hard-links the cache's blobs, never copies them.

A bundle of tens of gigabytes must fit beside its cache: the build assembles its payload in a staging
folder next to the output, and every image blob there (layers, configs and manifests) is the cache's
own file (one inode), so the build's disk is the bundle plus the cache plus a small constant
(docs/performance.md "At size"). A real build from the real registry; the staging folder is looked at
while it exists, when the build reports the archive step.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bundler import pipeline
from bundler.keys import load_signer
from bundler.spec import load as load_spec
from tests.support.images import one_image_spec

REPO = Path(__file__).resolve().parents[2]


class StagingWatch:
    """A Progress that, once the archive is written (the staging folder still there), records (payload
    blob, its inode)."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.blobs: dict[str, int] = {}

    def step(self, stage: str, done: int, total: int | None, detail: str = "") -> None:
        if stage == "archive" and done == 1:  # written: every blob is in (they arrive while it is)
            (staging,) = self.output.parent.glob(f".{self.output.name}.*/payload/images/blobs/sha256")
            self.blobs = {p.name: p.stat().st_ino for p in staging.iterdir() if p.is_file()}

    def transferred(self, n: int) -> None:
        pass


def test_staging_payload_shares_the_cache_blobs_inodes(registry, tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    index = one_image_spec(registry, tmp_path, run_cli, "disk", seed=13, layer_size=300_000)
    output, cache = tmp_path / "out" / "disk.bundle.tar", tmp_path / "cache"
    watch = StagingWatch(output)
    options = pipeline.BuildOptions(output=output, signer=load_signer(tmp_path / "vendor.key"), cache=cache)
    pipeline.build(load_spec(tmp_path / "bundle.yaml"), options, watch)

    # Every blob: layers and configs (the bytes that scale) and the manifests (one fsync'd write fewer
    # each, which counts at hundreds of images); the index is the upstream one, not narrowed.
    blobs = {b.digest for i in index.images for b in (*i.blobs(), i.manifest)} | {index.digest}
    assert {d.removeprefix("sha256:") for d in blobs} == set(watch.blobs)
    for name, inode in watch.blobs.items():
        cached = cache / "blobs" / "sha256" / name
        assert cached.stat().st_ino == inode, f"{name} was copied into the staging payload, not linked"
    assert output.is_file() and not list(output.parent.glob(f".{output.name}.*"))  # staging removed


def test_a_build_stopped_by_sigterm_while_writing_leaves_no_file_behind(registry, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                         run_cli) -> None:
    """A CI job cancelled mid-build (SIGTERM) must not leave a half-written bundle or its staging folder:
    the signal unwinds like Ctrl-C (bundler/cli.py `Terminated`), and exits 143."""
    one_image_spec(registry, tmp_path, run_cli, "term", seed=17, layer_size=48 << 20)
    assert run_cli("pull", "bundle.yaml", "--cache", "cache", "--output", "images", cwd=tmp_path).returncode == 0
    out = tmp_path / "out"
    out.mkdir()
    build = subprocess.Popen([sys.executable, "-m", "bundler", "build", "bundle.yaml", "--output", "out/term.tar",
                              "--key", "vendor.key", "--cache", "cache", "--offline"], cwd=tmp_path,
                             env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob(".term.tar.*.partial")):  # the archive is being written
            assert build.poll() is None and time.monotonic() < deadline, "the build never wrote its archive"
            time.sleep(0.001)
        build.send_signal(signal.SIGTERM)
    finally:
        _, stderr = build.communicate(timeout=120)
    assert build.returncode == 143, stderr
    assert "airgap-bundle: stopped by SIGTERM; no output was left half-written" in stderr, stderr
    assert "Traceback" not in stderr
    assert list(out.iterdir()) == []  # neither the bundle, nor its temporary file, nor the staging folder
