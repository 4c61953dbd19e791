"""bundle.lock end to end: a real docker-registry (one per test, since tests move tags and delete digests),
real helm, the examples spec.

What a release engineer relies on: a rebuild with the lock is byte-identical after an upstream tag moved;
without the lock it is not; `--update` takes the new digest on purpose and says so; a locked digest the
registry no longer serves fails with exit 16 naming the image and the lock entry; the lock the first build
wrote is the one `lock SPEC` writes; CI's `lock --check` and `sweep SPEC` catch a spec the lock no
longer describes.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.images import Pusher, make_layer, multi_platform
from tests.support.registry import TestRegistry, start_registry

IMAGES = {
    "library/nginx": ("1.27.3", ("linux/amd64", "linux/arm64", "linux/arm/v7")),
    "library/busybox": ("1.36", ("linux/amd64",)),
    "prometheus/nginx-exporter": ("1.3.0", ("linux/amd64", "linux/arm64")),
    "prometheus-operator/prometheus-operator": ("v0.75.0", ("linux/amd64", "linux/arm64")),
    "prometheus-operator/prometheus-config-reloader": ("v0.75.0", ("linux/amd64", "linux/arm64")),
}
NGINX = "docker.io/library/nginx:1.27.3"


class Env:
    def __init__(self, registry: TestRegistry, work: Path, run_cli: Any) -> None:
        self.registry, self.work, self.run_cli = registry, work, run_cli
        self.pusher = Pusher.to(registry)
        self.spec = work / "examples" / "bundle.yaml"
        self.lock = work / "examples" / "bundle.lock"
        self.caches = 0

    def fresh_cache(self) -> str:
        """A new, empty cache: the build must fetch what it needs from the registry."""
        self.caches += 1
        return str(self.work / f"cache-{self.caches}")

    def build(self, output: str, *extra: str, cache: str | None = None) -> Any:
        return self.run_cli("build", "examples/bundle.yaml", "--output", output, "--unsigned",
                            "--cache", cache or self.fresh_cache(), *extra, cwd=self.work)

    def lock_cli(self, *args: str, cache: str | None = None) -> Any:
        return self.run_cli("lock", "examples/bundle.yaml", "--cache", cache or self.fresh_cache(), *args,
                            cwd=self.work)

    def push_nginx(self, seed: str) -> str:
        return self.pusher.push("library/nginx", multi_platform("library/nginx", seed=seed,
                                                                platforms=IMAGES["library/nginx"][1]), "1.27.3")

    def locked(self) -> dict[str, Any]:
        return {i["ref"]: i for i in yaml.safe_load(self.lock.read_text())["images"]}


@pytest.fixture
def env(tmp_path: Path, repo_root: Path, run_cli: Any) -> Iterator[Env]:
    registry = start_registry(tmp_path / "registry")
    try:
        pusher = Pusher.to(registry)
        base = [make_layer("lock-base", 4 * 1024)]
        for n, (repo, (tag, platforms)) in enumerate(IMAGES.items()):
            pusher.push(repo, multi_platform(repo, seed=f"lock{n}", platforms=platforms, base=base), tag)
        work = tmp_path / "work"
        shutil.copytree(repo_root / "examples", work / "examples")
        spec = work / "examples" / "bundle.yaml"
        spec.write_text(re.sub(r"127\.0\.0\.1:5000", registry.host, spec.read_text()))
        yield Env(registry, work, run_cli)
    finally:
        registry.stop()


def _member(bundle: Path, name: str) -> Any:
    with tarfile.open(bundle) as tar:
        handle = tar.extractfile(name)
        assert handle is not None
        return json.loads(handle.read())


def test_the_lock_makes_a_rebuild_byte_identical_after_the_tag_moved(env: Env) -> None:
    first = env.build("a.bundle.tar")
    assert first.returncode == 0, first.stderr
    assert re.search(r"^lock: wrote .*examples/bundle\.lock \(5 images, 1 chart; sha256:", first.stdout, re.M)
    old = env.locked()[NGINX]["upstreamDigest"]
    assert env.locked()[NGINX]["bundledDigest"] != old  # narrowed: arm/v7 dropped, both digests locked
    # the provenance names the lock that built the bundle
    lock_digest = "sha256:" + hashlib.sha256(env.lock.read_bytes()).hexdigest()
    provenance = _member(env.work / "a.bundle.tar", "provenance.intoto.json")
    assert provenance["predicate"]["buildDefinition"]["externalParameters"]["lock"] == \
        {"file": "bundle.lock", "digest": lock_digest}

    new = env.push_nginx("moved")  # upstream re-pushes the tag
    assert new != old
    lock_before = env.lock.read_bytes()

    # With the lock (and an empty cache, so every byte comes from the registry by the locked digest):
    second = env.build("b.bundle.tar")
    assert second.returncode == 0, second.stderr
    assert "lock: used" in second.stdout and "no tag re-resolved" in second.stdout
    assert (env.work / "b.bundle.tar").read_bytes() == (env.work / "a.bundle.tar").read_bytes()
    assert env.lock.read_bytes() == lock_before

    # Without the lock the tag resolves to the new digest and the bundle differs.
    env.lock.rename(env.work / "kept.lock")
    third = env.build("c.bundle.tar")
    assert third.returncode == 0, third.stderr
    assert (env.work / "c.bundle.tar").read_bytes() != (env.work / "a.bundle.tar").read_bytes()
    statement = _member(env.work / "c.bundle.tar", "bundle.intoto.json")
    assert {i["normalized"]: i["upstreamDigest"] for i in statement["predicate"]["images"]}[NGINX] == new
    (env.work / "kept.lock").replace(env.lock)

    # --update moves on purpose and says what moved; the result is the lockless build, to the byte.
    updated = env.build("d.bundle.tar", "--update")
    assert updated.returncode == 0, updated.stderr
    assert "lock: updated" in updated.stdout and "1 change;" in updated.stdout
    assert f"changed {NGINX}: {old} -> {new}" in updated.stdout
    assert env.locked()[NGINX]["upstreamDigest"] == new
    assert (env.work / "d.bundle.tar").read_bytes() == (env.work / "c.bundle.tar").read_bytes()

    # The locked digest deleted upstream: exit 16, naming the image and the lock entry; nothing written.
    env.pusher.delete_tag_target("library/nginx", new)
    lock_before = env.lock.read_bytes()
    gone = env.build("e.bundle.tar")
    assert gone.returncode == 16, gone.stderr
    line = gone.stderr.strip().splitlines()[-1]
    assert re.search(r"nginx:1\.27\.3: .*examples/bundle\.lock:\d+ images\[\d\] pins " + new, line), line
    assert "Traceback" not in gone.stderr
    assert not (env.work / "e.bundle.tar").exists() and env.lock.read_bytes() == lock_before
    # `lock SPEC` keeps pins, so it checks that each is still served, and fails the same way
    reconcile = env.lock_cli()
    assert reconcile.returncode == 16 and new in reconcile.stderr, reconcile.stderr
    assert env.lock.read_bytes() == lock_before


def test_lock_writes_what_the_build_writes_and_check_catches_a_stale_lock(env: Env) -> None:
    written = env.lock_cli("--json")
    assert written.returncode == 0, written.stderr
    report = json.loads(written.stdout)
    assert report["ok"] and report["action"] == "wrote" and report["images"] == 5 and report["charts"] == 1
    from_lock = env.lock.read_bytes()
    env.lock.unlink()
    built = env.build("a.bundle.tar")
    assert built.returncode == 0, built.stderr
    assert env.lock.read_bytes() == from_lock  # `lock` resolves exactly as the build pulls (narrowing too)

    again = env.lock_cli()
    assert again.returncode == 0 and "lock: kept" in again.stdout, again.stdout + again.stderr
    assert env.lock_cli("--check").returncode == 0

    # A comment changes the spec's digest, not what the lock pins: still agrees, and says so.
    env.spec.write_text(env.spec.read_text() + "# reviewed\n")
    check = env.lock_cli("--check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "nothing the lock pins differs" in check.stdout

    # The spec gains an image: check, sweep and build all refuse (exit 16) and say which.
    env.pusher.push("library/redis", multi_platform("library/redis", seed="r"), "7.4")
    env.spec.write_text(env.spec.read_text().replace(
        "extraImages:\n", "extraImages:\n  - ref: docker.io/library/redis:7.4\n    reason: session cache\n"))
    check = env.lock_cli("--check", "--json")
    assert check.returncode == 16, check.stderr
    differences = json.loads(check.stdout)["differences"]
    assert [(d["kind"], d["subject"]) for d in differences] == [("image-added", "docker.io/library/redis:7.4")]
    assert "examples/bundle.yaml:" in differences[0]["message"]  # where the spec names it
    sweep = env.run_cli("sweep", "examples/bundle.yaml", cwd=env.work)
    assert sweep.returncode == 16 and "docker.io/library/redis:7.4" in sweep.stderr, sweep.stderr
    refused = env.build("b.bundle.tar")
    assert refused.returncode == 16 and "docker.io/library/redis:7.4" in refused.stderr, refused.stderr
    assert not (env.work / "b.bundle.tar").exists()

    # Meanwhile nginx's tag moved. `lock SPEC` adds redis and keeps every other pin as it was.
    pinned = env.locked()[NGINX]
    env.push_nginx("moved")
    reconciled = env.lock_cli()
    assert reconciled.returncode == 0, reconciled.stderr
    assert "added docker.io/library/redis:7.4: - -> sha256:" in reconciled.stdout
    assert env.locked()[NGINX] == pinned
    assert env.lock_cli("--check").returncode == 0
    assert env.run_cli("sweep", "examples/bundle.yaml", cwd=env.work).returncode == 0

    # `--update IMAGE` moves just that image, and says old -> new.
    moved = env.lock_cli("--update", "nginx")
    assert moved.returncode == 0, moved.stderr
    assert f"changed {NGINX}: {pinned['upstreamDigest']} -> " in moved.stdout
    assert env.locked()[NGINX] != pinned
    assert env.lock_cli("--update", "nginx:9.9").returncode == 2  # the spec carries no such image

    # Platforms and a local chart are part of what the lock pins.
    lock_before = env.lock.read_bytes()
    env.spec.write_text(env.spec.read_text().replace("platforms: [linux/amd64, linux/arm64]",
                                                     "platforms: [linux/amd64]"))
    chart = env.work / "examples" / "charts" / "demo" / "Chart.yaml"
    chart.write_text(chart.read_text() + "# edited\n")
    check = env.lock_cli("--check")
    assert check.returncode == 16
    assert "platforms: the spec asks for linux/amd64; " in check.stdout
    assert re.search(r"chart demo \(charts/demo\) changed since examples/bundle\.lock:\d+ was written", check.stdout)
    assert env.lock.read_bytes() == lock_before  # --check writes nothing


def test_lock_usage_errors_a_tampered_lock_and_offline(env: Env) -> None:
    assert env.lock_cli("nginx").returncode == 2  # IMAGE without --update
    assert env.lock_cli("--check", "--update").returncode == 2
    missing = env.lock_cli("--check")
    assert missing.returncode == 16 and "no lock beside the spec" in missing.stderr
    cache = env.fresh_cache()
    built = env.build("a.bundle.tar", cache=cache)
    assert built.returncode == 0, built.stderr
    original = env.lock.read_text()

    # Offline, from the cache the build filled: every pin is there, nothing to change.
    offline = env.lock_cli("--offline", cache=cache)
    assert offline.returncode == 0 and "lock: kept" in offline.stdout, offline.stderr

    # A bundled digest the narrowing does not give (a lock from another tool version, or edited by hand).
    narrowed = env.locked()[NGINX]["bundledDigest"]
    env.lock.write_text(original.replace(narrowed, "sha256:" + "0" * 64))
    drift = env.build("b.bundle.tar", cache=cache)
    assert drift.returncode == 16, drift.stderr
    assert f"changed {NGINX} (bundled): sha256:{'0' * 64} -> {narrowed}" in drift.stderr
    assert "this build would bundle another index" in drift.stderr
    assert not (env.work / "b.bundle.tar").exists()

    # A malformed lock: one line naming file, line and field (exit 2), before anything is fetched.
    env.lock.write_text(original.replace("upstreamDigest: sha256:", "upstreamDigest: sha1:", 1))
    bad = env.build("b.bundle.tar", cache=cache)
    assert bad.returncode == 2 and re.search(r"bundle\.lock:\d+: images\[0\]\.upstreamDigest: ", bad.stderr)
    assert "Traceback" not in bad.stderr

    env.lock.write_text(original)
    # `sweep SPEC` with sources of its own is no statement about the spec: the lock is not compared.
    env.spec.write_text(env.spec.read_text().replace("platforms: [linux/amd64, linux/arm64]", "platforms: [linux/amd64]"))
    assert env.run_cli("sweep", "examples/bundle.yaml", cwd=env.work).returncode == 16
    assert env.run_cli("sweep", "examples/bundle.yaml", "--manifests", "examples/manifests/operator.yaml",
                       cwd=env.work).returncode == 0
