"""`airgap-bundle build` end to end: real docker-registry, real helm, real keys; reproducible bytes,
offline verification, and failures that leave nothing behind."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from bundler import archive
from tests.support.images import Pusher, make_layer, multi_platform

IMAGES = {
    "library/nginx": ("1.27.3", ("linux/amd64", "linux/arm64", "linux/arm/v7")),
    "library/busybox": ("1.36", ("linux/amd64",)),
    "prometheus/nginx-exporter": ("1.3.0", ("linux/amd64", "linux/arm64")),
    "prometheus-operator/prometheus-operator": ("v0.75.0", ("linux/amd64", "linux/arm64")),
    "prometheus-operator/prometheus-config-reloader": ("v0.75.0", ("linux/amd64", "linux/arm64")),
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, registry, repo_root: Path, run_cli) -> Path:  # type: ignore[no-untyped-def]
    pusher = Pusher.to(registry)
    base = [make_layer("e2e-base", 8 * 1024)]
    for n, (repo, (tag, platforms)) in enumerate(IMAGES.items()):
        pusher.push(repo, multi_platform(repo, seed=f"e2e{n}", platforms=platforms, base=base), tag)
    work = tmp_path_factory.mktemp("e2e")
    shutil.copytree(repo_root / "examples", work / "examples")
    spec = work / "examples" / "bundle.yaml"
    spec.write_text(re.sub(r"127\.0\.0\.1:5000", registry.host, spec.read_text()))
    for args in (["--out", "root", "--cert", "--ca", "--valid-days", "365"],
                 ["--out", "vendor", "--cert", "--ca-key", "root.key", "--ca-cert", "root.crt"]):
        assert run_cli("keys", "generate", *args, cwd=work).returncode == 0
    (work / "policy.yaml").write_text("apiVersion: airgap-bundle.dev/v1\nkind: VerificationPolicy\n"
                                      "authorities:\n  - name: vendor\n    roots: [root.crt]\n")
    return work


def build(run_cli, work: Path, registry, output: str, *extra: str, spec: str = "examples/bundle.yaml"):  # type: ignore[no-untyped-def]
    return run_cli("build", spec, "--output", output, "--key", "vendor.key", "--cert", "vendor.crt",
                   "--cache", str(work / "cache"), *extra, cwd=work)


def test_build_is_reproducible_verifies_and_carries_what_it_says(workspace: Path, registry, run_cli) -> None:  # type: ignore[no-untyped-def]
    first = build(run_cli, workspace, registry, "a.bundle.tar")
    assert first.returncode == 0, first.stderr
    second = build(run_cli, workspace, registry, "b.bundle.tar", "--json")
    assert second.returncode == 0, second.stderr
    report = json.loads(second.stdout)  # `build --json`: what a release pipeline reads
    assert set(report) == {"output", "size", "statementSha256", "signedBy", "coverage", "images", "charts", "lock",
                           "base"}
    assert report["base"] is None  # a full bundle; an update names its base here (tests/test_update.py)
    # the first build wrote examples/bundle.lock, the second fetched by its digests (docs/lock.md)
    assert "lock: wrote" in first.stdout
    assert report["lock"]["action"] == "used" and report["lock"]["images"] == 5 and report["lock"]["changes"] == []
    assert report["output"] == "b.bundle.tar" and report["size"] == (workspace / "b.bundle.tar").stat().st_size
    assert report["signedBy"] == ["vendor"]
    assert report["statementSha256"] == hashlib.sha256(archive.read_statement(workspace / "b.bundle.tar")).hexdigest()
    assert report["charts"] == [{"name": "demo", "version": "0.3.0", "path": "charts/demo-0.3.0.tgz"}]
    assert len(report["images"]) == 5 and all(
        set(i) == {"source", "local", "upstreamDigest", "bundledDigest", "platforms"}
        and re.fullmatch(r"registry\.airgap\.local:5000/.+@" + re.escape(i["bundledDigest"]), i["local"])
        for i in report["images"])
    nginx = next(i for i in report["images"] if i["source"].endswith("nginx:1.27.3"))
    assert nginx["platforms"] == ["linux/amd64", "linux/arm64"] and nginx["upstreamDigest"] != nginx["bundledDigest"]
    assert any(re.fullmatch(r"manifests/chart-demo\.yaml: \d+ references rewritten", c) for c in report["coverage"])
    assert any(c.startswith("charts/demo-0.3.0.values-airgap.yaml: ") for c in report["coverage"])
    # ECDSA signatures are randomised, so everything up to the signature member must be identical,
    # and two unsigned builds must be identical to the byte.
    a, b = (workspace / "a.bundle.tar").read_bytes(), (workspace / "b.bundle.tar").read_bytes()
    cut = archive.read_index(workspace / "a.bundle.tar").get("signatures/vendor.sigstore.json").offset  # type: ignore[union-attr]
    assert a[:cut] == b[:cut]
    for name in ("u1.bundle.tar", "u2.bundle.tar"):
        unsigned = run_cli("build", "examples/bundle.yaml", "--output", name, "--unsigned", "--cache",
                           str(workspace / "cache"), cwd=workspace)
        assert unsigned.returncode == 0, unsigned.stderr
    assert (workspace / "u1.bundle.tar").read_bytes() == (workspace / "u2.bundle.tar").read_bytes()
    assert (workspace / "u1.bundle.tar").read_bytes()[:cut] == a[:cut]

    with tarfile.open(workspace / "a.bundle.tar") as tar:
        names = tar.getnames()
        manifests = tar.extractfile("manifests/chart-demo.yaml").read().decode()  # type: ignore[union-attr]
        provenance = json.loads(tar.extractfile("provenance.intoto.json").read())  # type: ignore[union-attr]
        statement = json.loads(tar.extractfile("bundle.intoto.json").read())  # type: ignore[union-attr]
    assert names[0] == "bundle.intoto.json" and names[-1] == "signatures/vendor.sigstore.json"
    # the image folder is a plain OCI layout: no partial blobs, locks or check records of the cache
    assert {n for n in names if n.startswith("images/") and not n.startswith("images/blobs/sha256/")} == \
        {"images/index.json", "images/oci-layout"}
    assert all(re.fullmatch(r"images/blobs/sha256/[a-f0-9]{64}", n) for n in names if n.startswith("images/blobs/"))
    assert {"sbom.cdx.json", "provenance.intoto.json", "images/index.json", "images/oci-layout",
            "charts/demo-0.3.0.tgz", "charts/demo-0.3.0.values-airgap.yaml"} <= set(names)
    # every image of the rewritten chart is on the local registry, pinned by digest
    images = re.findall(r"image: \"?([^\s\"]+)", manifests)
    assert images and all(re.match(r"registry\.airgap\.local:5000/.+@sha256:[a-f0-9]{64}$", i) for i in images)
    assert "# Source: demo/templates/deployment.yaml" in manifests  # comments survive the round trip
    # SLSA provenance: the spec as external parameters, every image pinned by its upstream digest
    assert provenance["predicateType"] == "https://slsa.dev/provenance/v1"
    definition = provenance["predicate"]["buildDefinition"]
    assert definition["externalParameters"]["spec"]["metadata"]["name"] == "demo"
    upstream = {i["normalized"]: i["upstreamDigest"] for i in statement["predicate"]["images"]}
    deps = {d["uri"]: "sha256:" + d["digest"]["sha256"] for d in definition["resolvedDependencies"]}
    assert len(upstream) == 5 and all(deps[f"oci://{name}"] == digest for name, digest in upstream.items())

    verified = run_cli("verify", "a.bundle.tar", "--policy", "policy.yaml", "--extract", "out", cwd=workspace)
    assert verified.returncode == 0, verified.stderr
    assert (workspace / "out" / "images" / "oci-layout").is_file()


def test_a_failed_build_leaves_the_previous_bundle_untouched(workspace: Path, registry, run_cli) -> None:  # type: ignore[no-untyped-def]
    spec = workspace / "examples" / "bundle.yaml"
    broken = workspace / "examples" / "broken.yaml"
    broken.write_text(spec.read_text().replace('set: ["replicaCount=2"]', 'set: ["image.tag=9.9.9"]'))
    out = workspace / "previous.bundle.tar"
    out.write_bytes(b"previous bundle")
    before = sorted(p.name for p in workspace.iterdir())
    result = build(run_cli, workspace, registry, "previous.bundle.tar", spec="examples/broken.yaml")
    assert result.returncode == 6, result.stderr  # not found
    assert "Traceback" not in result.stderr and "9.9.9" in result.stderr
    assert out.read_bytes() == b"previous bundle"
    assert sorted(p.name for p in workspace.iterdir()) == before  # no staging or temporary file left


def test_unsigned_bundles_are_refused_unless_asked(workspace: Path, registry, run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("build", "examples/bundle.yaml", "--output", "refused.bundle.tar", cwd=workspace)
    assert result.returncode == 2 and "unsigned" in result.stderr
    assert not (workspace / "refused.bundle.tar").exists()


def test_a_corrupted_cache_blob_is_caught_before_it_is_bundled(workspace: Path, registry, run_cli) -> None:  # type: ignore[no-untyped-def]
    # Corrupt one cached blob in place, keeping its size and mtime, so the cache's check record
    # still vouches for it: the build must hash it again and refuse.
    blob = max((p for p in (workspace / "cache" / "blobs" / "sha256").iterdir() if p.is_file()),
               key=lambda p: p.stat().st_size)
    original, st = blob.read_bytes(), blob.stat()
    try:
        blob.write_bytes(bytes([original[0] ^ 1]) + original[1:])
        os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))
        result = build(run_cli, workspace, registry, "corrupt.bundle.tar")
        assert result.returncode == 7, result.stderr
        assert blob.name in result.stderr and "Traceback" not in result.stderr
        assert not (workspace / "corrupt.bundle.tar").exists()
    finally:
        blob.write_bytes(original)
        os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_offline_builds_from_the_cache_alone_and_names_what_it_lacks(workspace: Path, registry, run_cli) -> None:  # type: ignore[no-untyped-def]
    warm = run_cli("build", "examples/bundle.yaml", "--output", "online.bundle.tar", "--unsigned", "--cache",
                   str(workspace / "cache"), cwd=workspace)
    assert warm.returncode == 0, warm.stderr
    offline = run_cli("build", "examples/bundle.yaml", "--output", "offline.bundle.tar", "--unsigned", "--offline",
                      "--cache", str(workspace / "cache"), cwd=workspace)
    assert offline.returncode == 0, offline.stderr
    assert "pull: offline; reading only the cache" in offline.stderr and "endpoints:" not in offline.stderr
    assert (workspace / "offline.bundle.tar").read_bytes() == (workspace / "online.bundle.tar").read_bytes()
    empty = workspace / "empty-cache"
    empty.mkdir()
    cold = run_cli("build", "examples/bundle.yaml", "--output", "cold.bundle.tar", "--unsigned", "--offline",
                   "--cache", str(empty), cwd=workspace)
    assert cold.returncode == 9, cold.stderr
    assert re.search(r"airgap-bundle: error: \S+: not in the cache .*empty-cache \(run once online to fill the "
                     r"cache, or drop --offline\)", cold.stderr), cold.stderr
    assert "Traceback" not in cold.stderr and not (workspace / "cold.bundle.tar").exists()


def test_source_date_epoch_overrides_the_spec_and_must_be_a_number(workspace: Path, registry, run_cli) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("build", "examples/bundle.yaml", "--output", "epoch.bundle.tar", "--unsigned", "--cache",
                     str(workspace / "cache"), cwd=workspace, env={"SOURCE_DATE_EPOCH": "1700000000"})
    assert result.returncode == 0, result.stderr
    with tarfile.open(workspace / "epoch.bundle.tar") as tar:
        assert {m.mtime for m in tar.getmembers()} == {1700000000}  # the spec says 1767225600
        statement = json.loads(tar.extractfile("bundle.intoto.json").read())  # type: ignore[union-attr]
    assert statement["predicate"]["created"] == "2023-11-14T22:13:20Z"
    bad = run_cli("build", "examples/bundle.yaml", "--output", "bad-epoch.bundle.tar", "--unsigned", "--cache",
                  str(workspace / "cache"), cwd=workspace, env={"SOURCE_DATE_EPOCH": "yesterday"})
    assert bad.returncode == 2
    assert "airgap-bundle: error: SOURCE_DATE_EPOCH='yesterday' is not a number of seconds" in bad.stderr
    assert "Traceback" not in bad.stderr and not (workspace / "bad-epoch.bundle.tar").exists()


def test_a_packaged_chart_is_bundled_as_is(workspace: Path, registry, run_cli, helm: str) -> None:  # type: ignore[no-untyped-def]
    packaged = workspace / "packaged"
    packaged.mkdir()
    subprocess.run([helm, "package", str(workspace / "examples" / "charts" / "demo"), "--destination", str(packaged)],
                   check=True, capture_output=True)
    tgz = packaged / "demo-0.3.0.tgz"
    spec = workspace / "examples" / "packaged.yaml"
    spec.write_text((workspace / "examples" / "bundle.yaml").read_text()
                    .replace("- path: charts/demo\n", "- path: ../packaged/demo-0.3.0.tgz\n"))
    assert "demo-0.3.0.tgz" in spec.read_text()
    result = run_cli("build", "examples/packaged.yaml", "--output", "packaged.bundle.tar", "--unsigned", "--cache",
                     str(workspace / "cache"), "--json", cwd=workspace)
    assert result.returncode == 0, result.stderr
    with tarfile.open(workspace / "packaged.bundle.tar") as tar:
        carried = tar.extractfile("charts/demo-0.3.0.tgz").read()  # type: ignore[union-attr]
        override = tar.extractfile("charts/demo-0.3.0.values-airgap.yaml").read().decode()  # type: ignore[union-attr]
        statement = json.loads(tar.extractfile("bundle.intoto.json").read())  # type: ignore[union-attr]
    assert carried == tgz.read_bytes()  # the vendor's archive, byte for byte (helm's own provenance would match)
    [chart] = statement["predicate"]["charts"]
    assert chart["digest"] == "sha256:" + hashlib.sha256(tgz.read_bytes()).hexdigest()
    assert "registry.airgap.local:5000/" in override


def test_build_without_its_registry_fails_at_once_naming_the_url(repo_root: Path, tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    """The --help example when its mirror is not running: one error line naming the URL, no retry storm."""
    import time

    from tests.support.registry import free_port

    shutil.copytree(repo_root / "examples", tmp_path / "examples")
    spec = tmp_path / "examples" / "bundle.yaml"
    host = f"127.0.0.1:{free_port()}"
    spec.write_text(spec.read_text().replace("127.0.0.1:5000", host))
    start = time.monotonic()
    done = run_cli("build", "examples/bundle.yaml", "--output", "demo.bundle.tar", "--unsigned",
                   "--cache", str(tmp_path / "cache"), cwd=tmp_path)
    took = time.monotonic() - start
    assert done.returncode == 4, done.stderr
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("airgap-bundle: error:")]
    assert len(errors) == 1 and f"connection refused by http://{host}/v2/" in errors[0], done.stderr
    assert "retrying" not in done.stderr and "Traceback" not in done.stderr
    assert took < 20, took  # was 23 s of retries; rendering with helm takes the rest
    assert not (tmp_path / "demo.bundle.tar").exists()


def test_build_through_one_wildcard_registries_entry(registry, repo_root: Path, tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    """The example's three registries entries replaced by one: every source host through the mirror under
    the prefix `{host}`, as a pull-through cache lays it out (docker.io/library/nginx is on the mirror as
    docker.io/library/nginx). The images exist on the mirror only under those prefixed names."""
    pusher = Pusher.to(registry)
    base = [make_layer("wild-base", 4 * 1024)]
    pushed = {}
    for n, (repo, (tag, platforms)) in enumerate(IMAGES.items()):
        host = "quay.io" if repo.startswith("prometheus") else "docker.io"
        image = multi_platform(repo, seed=f"wild{n}", platforms=platforms, base=base)
        pusher.push(f"{host}/{repo}", image, tag)
        pushed[f"{host}/{repo}:{tag}"] = image.digest
    shutil.copytree(repo_root / "examples", tmp_path / "examples")
    spec = tmp_path / "examples" / "bundle.yaml"
    text = spec.read_text()
    registries = text[text.index("\nregistries:\n"):text.index("\nsigning:")]
    spec.write_text(text.replace(registries, f'''
registries:
  - host: "*"
    mirror: {{host: "{registry.host}", prefix: "{{host}}", insecure: true}}
'''))
    done = run_cli("build", "examples/bundle.yaml", "--output", "wild.bundle.tar", "--unsigned", "--json",
                   "--cache", str(tmp_path / "cache"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"pull: endpoints: {registry.url}/docker.io (mirror of docker.io, plain HTTP); " \
           f"{registry.url}/quay.io (mirror of quay.io, plain HTTP)" in done.stderr
    result = json.loads(done.stdout)
    assert sorted(i["upstreamDigest"] for i in result["images"]) == sorted(pushed.values())
    assert all(i["local"].startswith("registry.airgap.local:5000/") for i in result["images"])
