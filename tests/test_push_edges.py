"""push.py and the push half of registry.py at their edges: hand-made signed bundles (one single-manifest
image with an exempted platform, two tags of one repository, deployment files naming images that are
not there), malformed bundled manifests, and a real registry that declines mounts, fails uploads,
refuses credentials, or has a tag moved after the push."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bundler import archive, attest, push
from bundler.bom import PREDICATE_TYPE, Bom, FileEntry, ImageEntry, ManifestEntry, PlatformEntry
from bundler.bundlefile import open_file
from bundler.errors import (
    ArchiveError,
    AuthError,
    DigestMismatchError,
    InputError,
    ReadbackError,
    RegistryError,
)
from bundler.keys import load_trust
from bundler.oci import verified
from bundler.reference import ImageRef
from bundler.registry import RegistryClient, plan_routes
from bundler.spec import RegistryConfig
from tests.support.bundles import EPOCH, Pki, build_bundle, sha, write_policy
from tests.support.faultproxy import Fault, start_proxy
from tests.support.images import Index, Pusher, make_image, make_layer, multi_platform
from tests.support.registry import running_registry, start_registry

LOCAL = "registry.local:5000"
NOW = dt.datetime.now(dt.UTC)


def _blobs(image: Any) -> dict[str, bytes]:
    parts = [image.manifest, *image.blobs()] + ([i.manifest for i in image.images] if isinstance(image, Index) else [])
    return {f"images/blobs/sha256/{b.digest[7:]}": b.data for b in parts}


def _entry(name: str, image: Any, exemptions: tuple[tuple[str, str], ...] = ()) -> ImageEntry:
    if isinstance(image, Index):
        platforms = tuple(PlatformEntry(f"{i.platform['os']}/{i.platform['architecture']}", i.digest, i.manifest.size)
                          for i in image.images)
    else:
        platforms = (PlatformEntry("linux/amd64", image.digest, image.manifest.size),)
    return ImageEntry(source=name, normalized=f"docker.io/{name}", local=f"{LOCAL}/{name}@{image.digest}",
                      upstream_digest=image.digest, bundled_digest=image.digest, media_type=image.media_type,
                      platforms=platforms, exemptions=exemptions)


def make_bundle(tmp: Path, images: list[tuple[str, Any, tuple[tuple[str, str], ...]]], deploy: str) -> tuple[Path, Path]:
    """A signed bundle carrying `images` (name:tag, Image or Index, exemptions) and manifests/deploy.yaml."""
    files: dict[str, bytes] = {"images/oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
                               "manifests/deploy.yaml": deploy.encode()}
    for _, image, _ in images:
        files.update(_blobs(image))
    files["images/index.json"] = json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": i.media_type, "digest": i.digest, "size": i.manifest.size} for _, i, _ in images]}).encode()
    bom = Bom("edges", "1.0.0", EPOCH, "0.1.0", "sha256:" + "5" * 64, LOCAL,
              images=tuple(_entry(n, i, x) for n, i, x in images),
              manifests=(ManifestEntry("manifests/deploy.yaml", "deploy.yaml"),),
              files=tuple(FileEntry(p, len(b), sha(b)) for p, b in files.items()))
    pki = Pki(tmp / "pki")
    signer, pub = pki.signer("vendor")
    statement = attest.statement(bom.subjects(), PREDICATE_TYPE, bom.to_dict())
    built = build_bundle(tmp / "edges.bundle.tar", {"vendor": signer}, files=files, statement=statement)
    return built.path, write_policy(tmp / "policy.yaml", {"vendor": {"keys": [pub]}})


def _client(host: str, **kwargs: Any) -> RegistryClient:
    routes = plan_routes([host], [RegistryConfig(host, insecure=True)], environ=kwargs.pop("environ", {}))
    return RegistryClient(routes, retries=kwargs.pop("retries", 1), backoff=0.01, sleep=lambda s: None, **kwargs)


@pytest.fixture(scope="module")
def images() -> dict[str, Any]:
    base = [make_layer("edges-base", 3000)]
    one = make_image("linux/amd64", [*base, make_layer("edges-one", 2000)])
    two = multi_platform("team/two", seed="a", platforms=("linux/amd64", "linux/arm64"), base=base)
    two_b = multi_platform("team/two", seed="b", platforms=("linux/amd64", "linux/arm64"), base=base)
    return {"one": one, "two": two, "two_b": two_b}


@pytest.fixture(scope="module")
def edges(tmp_path_factory: pytest.TempPathFactory, images: dict[str, Any]) -> tuple[Path, Path]:
    deploy = (f"apiVersion: v1\nkind: Pod\nmetadata: {{name: a}}\nspec:\n  containers:\n"
              f"    - {{name: a, image: '{LOCAL}/team/one:1.0@{images['one'].digest}'}}\n"
              f"    - {{name: b, image: '{LOCAL}/team/two:1.1'}}\n")
    return make_bundle(tmp_path_factory.mktemp("edges"), [
        ("team/one:1.0", images["one"], (("linux/arm64", "an amd64-only tool"),)),
        ("team/two:1.0", images["two"], ()), ("team/two:1.1", images["two_b"], ())], deploy)


def test_single_manifest_exempted_platform_and_two_tags_of_one_repository(edges: tuple[Path, Path],
                                                                          tmp_path: Path) -> None:
    bundle, policy = edges
    with running_registry(tmp_path / "target") as target, \
            push.open_verified(bundle, load_trust(policy), now=NOW) as opened:
        where = push.Target(target.host, insecure=True)
        result = push.require_readback(push.push(opened, where, _client(target.host)))
        assert result.readback is not None and result.readback.references == 2
        # the shared base layer: uploaded to team/one, mounted once into team/two (not once per tag)
        base = make_layer("edges-base", 3000).digest
        assert sorted(b.state for b in result.blobs if b.digest == base) == ["mounted", "uploaded"]
        assert {i.target.split("@")[0] for i in result.images} == {
            f"{target.host}/team/one:1.0", f"{target.host}/team/two:1.0", f"{target.host}/team/two:1.1"}

        # the tag moved at the registry after the push: the readback names it
        Pusher(target.url).push("team/two", multi_platform("team/two", seed="c", platforms=("linux/amd64",)), "1.0")
        plans = push.plan(opened.bom, opened.blob, where)
        problems = push.read_back(opened, plans, where, _client(target.host)).problems
        assert any(p.startswith(f"{target.host}/team/two:1.0 is sha256:") for p in problems), problems


def test_references_that_do_not_resolve_fail_the_readback(images: dict[str, Any], tmp_path: Path) -> None:
    missing = "sha256:" + "0" * 64
    deploy = (f"apiVersion: v1\nkind: Pod\nmetadata: {{name: a}}\nspec:\n  containers:\n"
              f"    - {{name: a, image: 'docker.io/library/busybox:1.36'}}\n"
              f"    - {{name: b, image: '{LOCAL}/team/unknown:2'}}\n"
              f"    - {{name: c, image: '{LOCAL}/team/two:1.0@{missing}'}}\n")
    bundle, policy = make_bundle(tmp_path, [("team/two:1.0", images["two"], ())], deploy)
    with running_registry(tmp_path / "target") as target, \
            push.open_verified(bundle, load_trust(policy), now=NOW) as opened:
        result = push.push(opened, push.Target(target.host, insecure=True), _client(target.host))
        with pytest.raises(ReadbackError) as failed:
            push.require_readback(result)
    text = "\n".join(result.readback.problems if result.readback else ())
    assert "docker.io/library/busybox:1.36 is not on the local registry" in text
    assert f"{LOCAL}/team/unknown:2 is not an image the bundle carries" in text
    assert f"does not resolve at {target.host} by digest {missing}" in text
    assert failed.value.exit_code == 30 and "(and 2 more)" in failed.value.message


def test_members_the_bundle_lacks_or_that_are_too_large(edges: tuple[Path, Path], tmp_path: Path) -> None:
    bundle, policy = edges
    with pytest.raises(InputError):
        with push.open_verified(tmp_path / "absent.bundle.tar", load_trust(policy), now=NOW):
            pass  # pragma: no cover - not reached
    with push.open_verified(bundle, load_trust(policy), now=NOW) as opened:
        with pytest.raises(ArchiveError, match="is not in the bundle"):
            opened.blob("sha256:" + "0" * 64)
        with pytest.raises(ArchiveError, match="more than the 1 read into memory"):
            opened.read("manifests/deploy.yaml", cap=1)


def _bom(image: ImageEntry) -> Bom:
    return Bom("x", "1", EPOCH, "0.1.0", "sha256:" + "5" * 64, LOCAL, images=(image,))


@pytest.mark.parametrize(("blobs", "message"), [
    ({"top": b"not json"}, "is unreadable"),
    ({"top": json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                         "config": {}, "layers": []}).encode()}, "the statement says"),
    ({"top": json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                         "manifests": [{"digest": "sha256:" + "1" * 64}]}).encode()}, "the bundled index is malformed"),
    ({"top": json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                         "manifests": [{"mediaType": "x", "digest": "sha256:" + "1" * 64, "size": 2}]}).encode(),
      "sha256:" + "1" * 64: json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                                       "manifests": []}).encode()}, "nested index"),
    ({"top": json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                         "manifests": [{"mediaType": "x", "digest": "sha256:" + "1" * 64, "size": 2}]}).encode(),
      "sha256:" + "1" * 64: json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                       "config": {"digest": "nope"}, "layers": []}).encode()}, "is malformed"),
])
def test_malformed_bundled_manifests_are_named(blobs: dict[str, bytes], message: str) -> None:
    entry = ImageEntry("a", "docker.io/a", f"{LOCAL}/a:1", "sha256:" + "2" * 64, "sha256:" + "2" * 64,
                       "application/vnd.oci.image.index.v1+json", ())
    data = {("sha256:" + "2" * 64 if k == "top" else k): v for k, v in blobs.items()}
    with pytest.raises(ArchiveError, match=message):
        push.plan(_bom(entry), data.__getitem__, push.Target("127.0.0.1:1"))


# --- the push half of RegistryClient ---------------------------------------------------------------------


def _reader(data: bytes) -> Any:
    def read(start: int, length: int) -> Iterator[bytes]:
        yield data[start:start + length]
    return read


def test_a_declined_mount_cancels_its_session_and_says_so(registry: Any) -> None:
    client = _client(registry.host)
    blob = make_layer("edges-mount", 1000)
    ref = ImageRef.parse(f"{registry.host}/edges/mount-target:1")
    assert client.mount_blob(ref, blob.digest, "edges/nowhere") is False  # the source never had it
    assert not client.blob_exists(ref, blob.digest)


def test_uploads_start_over_after_a_failure_and_give_up_with_a_rerun_hint(registry: Any) -> None:
    proxy = start_proxy(registry.url)
    try:
        blob = make_layer("edges-retry", 5000)
        ref = ImageRef.parse(f"{proxy.host}/edges/retry:1")
        proxy.add(Fault("status", match="/blobs/uploads/", methods=("POST",), status=500))
        client = _client(proxy.host)
        client.push_blob(ref, blob.digest, blob.size, _reader(blob.data))
        assert client.stats["retries"] == 1 and client.blob_exists(ref, blob.digest)

        proxy.add(Fault("status", match="/blobs/uploads/", methods=("POST",), status=503, times=10))
        other = make_layer("edges-retry-2", 5000)
        with pytest.raises(RegistryError, match="failed 2 times") as failed:
            client.push_blob(ref, other.digest, other.size, _reader(other.data))
        assert "rerun" in str(failed.value) and failed.value.exit_code == 4
    finally:
        proxy.stop()


def test_credentials_and_digest_failures_are_not_retried(auth_registry: Any, registry: Any) -> None:
    blob = make_layer("edges-auth", 100)
    anonymous = _client(auth_registry.host, retries=3)
    with pytest.raises(AuthError):
        anonymous.push_blob(ImageRef.parse(f"{auth_registry.host}/edges/a:1"), blob.digest, blob.size,
                            _reader(blob.data))
    client = _client(registry.host, retries=3)
    wrong = make_layer("edges-other", 100)

    def lying(start: int, length: int) -> Iterator[bytes]:
        return verified(iter([wrong.data[start:start + length]]), blob.digest, blob.size, what="bundle member")

    with pytest.raises(DigestMismatchError):
        client.push_blob(ImageRef.parse(f"{registry.host}/edges/d:1"), blob.digest, blob.size, lying)
    assert client.stats["retries"] == 0


def test_a_manifest_whose_blobs_are_missing_is_refused_in_the_registrys_words(registry: Any) -> None:
    image = make_image("linux/amd64", [make_layer("edges-never-pushed", 100)])
    client = _client(registry.host)
    with pytest.raises(RegistryError, match="MANIFEST_BLOB_UNKNOWN"):
        client.put_manifest(ImageRef.parse(f"{registry.host}/edges/m:1"), "1", image.manifest.data, image.media_type)


def test_a_token_service_that_drops_the_mount_scope_makes_push_upload(edges: tuple[Path, Path],
                                                                     tmp_path: Path) -> None:
    bundle, policy = edges
    target = start_registry(tmp_path / "token", variant="token")
    try:
        target.extra["issuer"].max_scopes = 1  # type: ignore[attr-defined]
        auth = tmp_path / "auth.json"
        from tests.support.shipped import auth_file

        auth_file(auth, target.host, target.username or "", target.password or "")
        client = _client(target.host, environ={"REGISTRY_AUTH_FILE": str(auth)})
        with push.open_verified(bundle, load_trust(policy), now=NOW) as opened:
            result = push.require_readback(push.push(opened, push.Target(target.host, insecure=True), client))
        assert result.count("mounted") == 0 and result.count("uploaded") > 0
    finally:
        target.stop()


def test_read_range_refuses_ranges_outside_the_member_and_short_files(tmp_path: Path) -> None:
    path = tmp_path / "one.tar"
    archive.write([(archive.STATEMENT, b"{}"), ("a", b"0123456789")], path, EPOCH)
    member = archive.read_index(path).get("a")
    assert member is not None
    with open_file(path) as f:
        assert b"".join(archive.read_range(f, member, 2, 5)) == b"23456"
        with pytest.raises(ArchiveError, match="outside"):
            list(archive.read_range(f, member, 8, 5))
    os.truncate(path, member.data_offset + 4)
    with open_file(path) as f, pytest.raises(ArchiveError, match="unexpected end of file"):
        list(archive.read_range(f, member, 0, 10))


def test_an_unreachable_target_or_not_a_registry_fails_once(edges: tuple[Path, Path], registry: Any) -> None:
    bundle, policy = edges
    proxy = start_proxy(registry.url)
    try:
        proxy.add(Fault("status", match="/v2/", status=404))
        with push.open_verified(bundle, load_trust(policy), now=NOW) as opened:
            with pytest.raises(RegistryError, match="not a container registry") as failed:
                push.push(opened, push.Target(proxy.host, insecure=True), _client(proxy.host))
        assert "0 blob(s) in place" in failed.value.message
        assert [r.path for r in proxy.log] == ["/v2/"]  # one request, then nothing
    finally:
        proxy.stop()
    port = proxy.host.rsplit(":", 1)[1]  # stopped: nothing listens there now
    with push.open_verified(bundle, load_trust(policy), now=NOW) as opened:
        with pytest.raises(RegistryError, match="connection refused by") as refused:
            push.push(opened, push.Target(f"127.0.0.1:{port}", insecure=True), _client(f"127.0.0.1:{port}"))
    assert "/v2/" in refused.value.message and "0 blob(s) in place" in refused.value.message
