"""pull.py end to end against a real docker-registry; readback by skopeo; the CLI."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bundler.errors import NotFoundError, OfflineMissError, PlatformMissingError, UsageError
from bundler.layout import Layout
from bundler.oci import DOCKER_LIST, OCI_INDEX, Platform, sha256_digest
from bundler.pull import PulledImage, Sources, pull, select_platforms
from bundler.reference import ImageRef
from bundler.spec import ImageOptions, PlatformExemption, RegistryConfig
from tests.support.faultproxy import Fault, start_proxy
from tests.support.images import Catalog, push_standard_set
from tests.support.registry import running_registry

AMD64, ARM64 = Platform("linux", "amd64"), Platform("linux", "arm64")


@pytest.fixture(scope="module")
def cat(registry: Any) -> Catalog:
    return push_standard_set(registry, prefix="pull")


def run(refs: list[str], tmp: Path, host: str, **kw: Any) -> list[PulledImage]:
    kw.setdefault("sources", Sources.for_refs(refs, insecure_hosts=(host,)))
    kw.setdefault("cache", tmp / "cache")
    return pull(refs, layout=tmp / "out", **kw)


def layout_complete(path: Path) -> None:
    """Every manifest named in index.json is present with every blob it references, all verified."""
    layout = Layout(path)
    todo = [e["digest"] for e in layout.entries()]
    while todo:
        digest = todo.pop()
        obj = json.loads(layout.read_blob(digest))
        todo += [m["digest"] for m in obj.get("manifests", [])]
        for d in [obj.get("config"), *obj.get("layers", [])]:
            if d:
                assert layout.has_blob(d["digest"]), d
    assert list(layout.partial.iterdir()) == []


def test_multi_platform_index_narrowed(cat: Catalog, tmp_path: Path) -> None:
    [img] = run([cat.refs["multi"]], tmp_path, cat.host)
    upstream = cat.items["multi"]
    assert img.upstream_digest == upstream.digest and img.narrowed
    bundled = json.loads((tmp_path / "out/blobs/sha256" / img.bundled_digest[7:]).read_bytes())
    assert bundled["mediaType"] == OCI_INDEX == img.media_type
    assert bundled["annotations"] == {"org.opencontainers.image.source": "test/multi"}
    assert [m["platform"]["architecture"] for m in bundled["manifests"]] == ["amd64", "arm64"]
    assert [(str(p.platform), p.digest) for p in img.platforms] == [
        ("linux/amd64", upstream.images[0].digest), ("linux/arm64", upstream.images[1].digest)]
    assert img.size == len((tmp_path / "out/blobs/sha256" / img.bundled_digest[7:]).read_bytes())
    assert Layout(tmp_path / "out").resolve(img.name).digest == img.bundled_digest  # type: ignore[union-attr]
    assert Layout(tmp_path / "cache").resolve(img.name).digest == upstream.digest  # type: ignore[union-attr]
    # arm/v7 and s390x blobs are not carried
    assert not (tmp_path / "out/blobs/sha256" / upstream.images[2].layers[0].digest[7:]).exists()
    layout_complete(tmp_path / "out")


def test_docker_list_stays_docker_and_variant_matches(cat: Catalog, tmp_path: Path) -> None:
    [img] = run([cat.refs["dockerlist"]], tmp_path, cat.host)
    assert img.media_type == DOCKER_LIST
    bundled = json.loads(Layout(tmp_path / "out").read_blob(img.bundled_digest))
    assert bundled["mediaType"] == DOCKER_LIST and len(bundled["manifests"]) == 2
    assert str(img.platforms[1].platform) == "linux/arm64/v8"  # matched linux/arm64 as runtimes do


def test_keep_upstream_index(cat: Catalog, tmp_path: Path) -> None:
    ref = ImageRef.parse(cat.refs["multi"])
    opts = ImageOptions(ref=ref, keep_upstream_index=True)
    [img] = run([cat.refs["multi"]], tmp_path, cat.host, options_for=lambda r: opts)
    assert img.bundled_digest == img.upstream_digest and img.keep_upstream_index and len(img.platforms) == 4
    layout_complete(tmp_path / "out")


def test_attestations_ride_with_their_platforms(cat: Catalog, tmp_path: Path) -> None:
    [img] = run([cat.refs["attested"]], tmp_path, cat.host)
    item = cat.items["attested"]
    subjects = {p.digest for p in img.platforms}
    assert len(img.attestations) == 2
    assert {a.annotation("vnd.docker.reference.digest") for a in img.attestations} == subjects
    bundled = json.loads(Layout(tmp_path / "out").read_blob(img.bundled_digest))
    assert len(bundled["manifests"]) == 4 and item.digest == img.upstream_digest
    layout_complete(tmp_path / "out")


def test_single_platform_rules(cat: Catalog, tmp_path: Path) -> None:
    with pytest.raises(PlatformMissingError) as info:
        run([cat.refs["single"]], tmp_path, cat.host)
    assert "single-platform image (linux/amd64)" in str(info.value) and info.value.exit_code == 8
    assert not Layout(tmp_path / "out").entries()
    [img] = run([cat.refs["single"]], tmp_path, cat.host, platforms=[AMD64])
    assert img.bundled_digest == img.upstream_digest and [str(p.platform) for p in img.platforms] == ["linux/amd64"]
    with pytest.raises(PlatformMissingError):
        run([cat.refs["single-arm64"]], tmp_path, cat.host, platforms=[AMD64])
    layout_complete(tmp_path / "out")


def test_missing_platform_fails_unless_exempted(cat: Catalog, tmp_path: Path) -> None:
    ref = cat.refs["amd64-only"]
    with pytest.raises(PlatformMissingError) as info:
        run([ref], tmp_path, cat.host)
    assert ref in str(info.value) and "linux/arm64" in str(info.value)
    opts = ImageOptions(ImageRef.parse(ref), platform_exemptions=(PlatformExemption(ARM64, "vendor ships amd64 only"),))
    [img] = run([ref], tmp_path, cat.host, options_for=lambda r: opts)
    assert [x.reason for x in img.exempted] == ["vendor ships amd64 only"]
    assert [str(p.platform) for p in img.platforms] == ["linux/amd64"]


def test_select_platforms_is_pure_and_matches_variants() -> None:
    index = {"manifests": [{"digest": "sha256:" + "a" * 64, "size": 1, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                           {"digest": "sha256:" + "b" * 64, "size": 1, "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}}]}
    sel = select_platforms(index, [ARM64, Platform.parse("linux/arm")], image="x")
    assert [e["digest"][7] for e in sel.kept] == ["a", "b"]
    with pytest.raises(PlatformMissingError, match="linux/amd64"):
        select_platforms(index, [AMD64], image="x")


def test_digest_pinned_refs(cat: Catalog, tmp_path: Path) -> None:
    name = cat.refs["multi"].rsplit(":", 1)[0]
    pinned = f"{name}@{cat.items['multi'].digest}"
    [img] = run([pinned], tmp_path, cat.host)
    assert img.upstream_digest == cat.items["multi"].digest and img.source == pinned
    with pytest.raises(NotFoundError):
        run([f"{name}@sha256:{'0' * 64}"], tmp_path, cat.host)


def test_shared_layers_fetched_once_and_cache_first(cat: Catalog, registry: Any, tmp_path: Path) -> None:
    proxy = start_proxy(registry.url)
    try:
        refs = [cat.refs[n].replace(cat.host, proxy.host) for n in ("shared-a", "shared-b", "shared-a")]
        images = run(refs, tmp_path, proxy.host, jobs=4)
        assert len(images) == 3 and images[0] == images[2]
        base = cat.items["shared-a"].images[0].layers[0].digest
        assert base == cat.items["shared-b"].images[0].layers[0].digest
        assert len([r for r in proxy.requests_to(base) if r.method == "GET"]) == 1
        layout_complete(tmp_path / "out")
        proxy.clear()
        run(refs, tmp_path / "second", proxy.host, cache=tmp_path / "cache")  # new output, same cache
        assert not proxy.requests_to("/blobs/")  # every blob came from the cache
        layout_complete(tmp_path / "second/out")
    finally:
        proxy.stop()


def test_offline_uses_cache_only(cat: Catalog, tmp_path: Path) -> None:
    refs = [cat.refs["multi"], cat.refs["dockerlist"]]
    online = run(refs, tmp_path, cat.host)
    offline = pull(refs, layout=tmp_path / "offline", cache=tmp_path / "cache", offline=True)
    assert [i.bundled_digest for i in offline] == [i.bundled_digest for i in online]
    assert {i.origin for i in offline} == {"cache"}
    layout_complete(tmp_path / "offline")
    with pytest.raises(OfflineMissError) as info:
        pull([cat.refs["attested"]], layout=tmp_path / "o2", cache=tmp_path / "cache", offline=True)
    assert cat.refs["attested"] in str(info.value) and info.value.exit_code == 9
    with pytest.raises(UsageError, match="--offline needs a cache"):
        pull(refs, layout=tmp_path / "o3", offline=True)


def test_fail_closed_for_unlisted_registry(cat: Catalog, tmp_path: Path) -> None:
    sources = Sources(registries=(RegistryConfig(cat.host, insecure=True),))
    with pytest.raises(UsageError, match="docker.io is not allowed"):
        pull(["nginx:1.27"], layout=tmp_path / "out", cache=None, sources=sources)


def test_skopeo_reads_the_layout_and_copies_it_unchanged(cat: Catalog, tmp_path: Path) -> None:
    # skopeo 1.9 finds only OCI-typed index.json entries by name, so the Docker list is checked apart:
    # its entry keeps its true media type (docs/release-engineer.md "pull").
    images = run([cat.refs["multi"], cat.refs["attested"]], tmp_path, cat.host)
    [docker] = run([cat.refs["dockerlist"]], tmp_path, cat.host)
    assert Layout(tmp_path / "out").resolve(docker.name).media_type == DOCKER_LIST  # type: ignore[union-attr]
    out = tmp_path / "out"
    with running_registry(tmp_path / "peer") as peer:
        for img in images:
            inspect = subprocess.run(["skopeo", "inspect", "--raw", f"oci:{out}:{img.name}"],
                                     capture_output=True, check=True)
            assert sha256_digest(inspect.stdout) == img.bundled_digest
            dest = f"docker://{peer.host}/copy/{img.ref.path.rsplit('/', 1)[1]}:v1"
            subprocess.run(["skopeo", "copy", "--all", "--preserve-digests", "--dest-tls-verify=false",
                            f"oci:{out}:{img.name}", dest], capture_output=True, check=True)
            back = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", dest],
                                  capture_output=True, check=True)
            assert sha256_digest(back.stdout) == img.bundled_digest


def test_cli_json_and_exit_codes(cat: Catalog, run_cli: Any, tmp_path: Path) -> None:
    args = ["pull", "--insecure-registry", cat.host, "--cache", str(tmp_path / "cache"), "--output", str(tmp_path / "out")]
    ok = run_cli(*args, "--json", cat.refs["multi"])
    assert ok.returncode == 0, ok.stderr
    doc = json.loads(ok.stdout)
    [img] = doc["images"]
    assert img["source"] == cat.refs["multi"] and img["upstreamDigest"] == cat.items["multi"].digest
    assert [p["platform"] for p in img["platforms"]] == ["linux/amd64", "linux/arm64"]
    assert all(p["size"] > 0 and p["digest"].startswith("sha256:") for p in img["platforms"])
    assert "endpoints: http://" + cat.host in ok.stderr  # the one line listing endpoints
    missing = run_cli(*args, cat.refs["amd64-only"])
    assert missing.returncode == 8 and "linux/arm64" in missing.stderr and "Traceback" not in missing.stderr
    notfound = run_cli(*args, f"{cat.host}/pull/nothing:v1")
    assert notfound.returncode == 6 and "Traceback" not in notfound.stderr
    bad = run_cli(*args, "Not A Ref")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    single = run_cli(*args, "--platform", "linux/amd64", cat.refs["single"])
    assert single.returncode == 0, single.stderr


def test_cli_pull_spec_takes_extra_images_and_tagged_image_entries(cat: Catalog, run_cli: Any, tmp_path: Path) -> None:
    # `pull SPEC`: the spec's extraImages and its images: entries that name a tag or digest, from the
    # registries it lists (here a docker.io mirror), with its platforms; excluded and untagged entries stay out.
    mirror = cat.host
    (tmp_path / "bundle.yaml").write_text(f"""\
apiVersion: airgap-bundle.dev/v1alpha1
kind: Bundle
metadata: {{name: p, version: "1"}}
localRegistry: {{host: registry.local:5000}}
platforms: [linux/amd64]
extraImages:
  - {{ref: "{cat.refs['multi']}", reason: injected by an operator}}
images:
  - {{ref: "{cat.refs['dockerlist']}", confirm: true}}
  - {{ref: "{cat.refs['single']}", exclude: not shipped}}
  - {{ref: "{mirror}/pull/attested", confirm: true}}
registries:
  - {{host: "{mirror}", insecure: true}}
""")
    res = run_cli("pull", str(tmp_path / "bundle.yaml"), "--output", str(tmp_path / "out"), "--cache",
                  str(tmp_path / "cache"), "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert [i["source"] for i in doc["images"]] == [cat.refs["multi"], cat.refs["dockerlist"]]
    assert all([p["platform"] for p in i["platforms"]] == ["linux/amd64"] for i in doc["images"])
    assert {e["annotations"]["org.opencontainers.image.ref.name"] for e in Layout(tmp_path / "out").entries()} == \
        {cat.refs["multi"], cat.refs["dockerlist"]}
    layout_complete(tmp_path / "out")


def test_cli_unreachable_registry_is_exit_4(run_cli: Any, tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        host = f"127.0.0.1:{s.getsockname()[1]}"
        res = run_cli("pull", "--insecure-registry", host, "--output", str(tmp_path / "out"), "--cache",
                      str(tmp_path / "cache"), f"{host}/team/app:v1")
    assert res.returncode == 4, res.stderr
    assert f"airgap-bundle: error: manifest {host}/team/app:v1: connection refused by http://{host}/v2/team/app/" \
           "manifests/v1 (start the registry, or fix its host and port (the spec's registries:, or push --registry))" in res.stderr
    assert "Traceback" not in res.stderr and not Layout(tmp_path / "out").entries()


def test_cli_unwritable_layout_is_exit_11(cat: Catalog, run_cli: Any, tmp_path: Path) -> None:
    # Running as root, permissions cannot make a folder unwritable: a file where a folder must go can.
    (tmp_path / "file").write_text("not a folder")
    res = run_cli("pull", "--insecure-registry", cat.host, "--output", str(tmp_path / "file" / "layout"),
                  "--cache", str(tmp_path / "cache"), cat.refs["multi"])
    assert res.returncode == 11, res.stderr
    assert f"cannot create the OCI layout {tmp_path / 'file' / 'layout'}: Not a directory" in res.stderr
    assert "Traceback" not in res.stderr and (tmp_path / "file").read_text() == "not a folder"


def test_cli_docker_content_digest_mismatch_on_a_tag_is_exit_7(cat: Catalog, run_cli: Any, registry: Any,
                                                               tmp_path: Path) -> None:
    # A tag's bytes are checked against the registry's Docker-Content-Digest header: a proxy that
    # says another digest than the bytes it serves fails the pull, and nothing is recorded.
    proxy = start_proxy(registry.url)
    try:
        lie = "sha256:" + "0" * 64
        proxy.add(Fault("header", match="/manifests/v1", header=("Docker-Content-Digest", lie)))
        ref = f"{proxy.host}/pull/multi:v1"
        res = run_cli("pull", "--insecure-registry", proxy.host, "--output", str(tmp_path / "out"), "--cache",
                      str(tmp_path / "cache"), ref)
    finally:
        proxy.stop()
    assert res.returncode == 7, res.stderr
    assert f"manifest {proxy.host}/pull/multi:v1 from http://{proxy.host}: bytes hash to " \
           f"{cat.items['multi'].digest}, Docker-Content-Digest says {lie}" in res.stderr
    assert not Layout(tmp_path / "out").entries()


def _listing(root: Path) -> dict[str, int]:
    """Every path under an OCI layout but the blobs themselves, with its permission bits."""
    return {p.relative_to(root).as_posix(): p.stat().st_mode & 0o777 for p in root.rglob("*")
            if p.parent.name != "sha256"}


def test_pull_output_is_a_plain_oci_layout_readable_by_others(cat: Catalog, run_cli: Any, tmp_path: Path) -> None:
    """As build's images/: no .index.lock, no .partial folder, files 0644 (0666 less the umask, never 0600)."""
    import os

    out = tmp_path / "out"
    old = os.umask(0o022)
    try:
        done = run_cli("pull", "--insecure-registry", cat.host, "--cache", str(tmp_path / "cache"),
                       "--output", str(out), cat.refs["multi"])
    finally:
        os.umask(old)
    assert done.returncode == 0, done.stderr
    assert _listing(out) == {"blobs": 0o755, "blobs/sha256": 0o755, "index.json": 0o644, "oci-layout": 0o644}
    assert {p.stat().st_mode & 0o777 for p in (out / "blobs" / "sha256").iterdir()} == {0o644}
    old = os.umask(0o027)  # a stricter umask is honoured, not overridden
    try:
        run([cat.refs["multi"]], tmp_path / "strict", cat.host)
    finally:
        os.umask(old)
    assert _listing(tmp_path / "strict" / "out") == {"blobs": 0o750, "blobs/sha256": 0o750, "index.json": 0o640,
                                                     "oci-layout": 0o640}
    layout_complete(out)


def test_an_output_that_is_also_the_cache_keeps_its_bookkeeping(cat: Catalog, tmp_path: Path) -> None:
    """--cache and --output the same folder: it stays a cache, and another run's resumable partial blob
    in it survives (only a folder that is just an output is tidied)."""
    shared = tmp_path / "shared"
    other = shared / "blobs" / "sha256" / ".partial" / ("ab" * 32)
    other.parent.mkdir(parents=True)
    other.write_bytes(b"half a layer")
    pull([cat.refs["multi"]], layout=shared, cache=shared,
         sources=Sources.for_refs([cat.refs["multi"]], insecure_hosts=(cat.host,)))
    assert other.read_bytes() == b"half a layer"


def test_cli_pull_spec_fetches_what_the_lock_pins_and_a_warm_run_asks_no_registry(run_cli: Any,
                                                                                   tmp_path: Path) -> None:
    """`pull SPEC` reads bundle.lock as `build` does: a tag that moved since the lock still gives the
    locked digest (--no-lock resolves it again), and with the cache warm nothing is asked of any registry."""
    from tests.support.images import Pusher, multi_platform

    spec = tmp_path / "bundle.yaml"
    with running_registry(tmp_path / "reg") as reg:
        locked, moved = (multi_platform("locked/app", seed=f"pull-lock-{n}") for n in (1, 2))
        Pusher.to(reg).push("locked/app", locked, "v1")
        spec.write_text(f"""\
apiVersion: airgap-bundle.dev/v1alpha1
kind: Bundle
metadata: {{name: locked, version: "1"}}
localRegistry: {{host: registry.local:5000}}
extraImages:
  - {{ref: "{reg.host}/locked/app:v1", reason: started by the app}}
registries:
  - {{host: "{reg.host}", insecure: true}}
""")
        done = run_cli("lock", str(spec))
        assert done.returncode == 0, done.stderr
        Pusher.to(reg).push("locked/app", moved, "v1")  # the tag moves on after the lock was written
        args = ["--output", str(tmp_path / "out"), "--cache", str(tmp_path / "cache"), "--json"]
        pinned = run_cli("pull", str(spec), *args)
        assert pinned.returncode == 0, pinned.stderr
        assert json.loads(pinned.stdout)["images"][0]["upstreamDigest"] == locked.digest
        assert f"pull: 1 of 1 image(s) by the digests {tmp_path / 'bundle.lock'} pins" in pinned.stderr
        fresh = run_cli("pull", str(spec), "--no-lock", "--output", str(tmp_path / "fresh"), "--cache",
                        str(tmp_path / "cache2"), "--json")
        assert fresh.returncode == 0, fresh.stderr
        assert json.loads(fresh.stdout)["images"][0]["upstreamDigest"] == moved.digest
        assert "bundle.lock" not in fresh.stderr
    # the registry is gone: the locked digests are all in the cache, so a warm run needs nothing from it
    warm = run_cli("pull", str(spec), *args)
    assert warm.returncode == 0, warm.stderr
    assert json.loads(warm.stdout)["images"][0]["upstreamDigest"] == locked.digest
    by_tag = run_cli("pull", str(spec), "--no-lock", *args)
    assert by_tag.returncode == 4 and "connection refused" in by_tag.stderr, by_tag.stderr
