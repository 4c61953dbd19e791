"""oci.py: digest and platform grammar, containerd's platform normalisation, descriptors, and the
verifying stream (too few bytes is as wrong as a different hash)."""

from __future__ import annotations

import pytest

from bundler.errors import DigestMismatchError, InvalidReferenceError
from bundler.oci import Descriptor, Platform, blob_descriptors, digest_hex, sha256_digest, verified


def test_only_sha256_digests_name_a_blob() -> None:
    assert digest_hex("sha256:" + "a" * 64) == "a" * 64
    with pytest.raises(InvalidReferenceError, match="unsupported digest algorithm in sha512:"):
        digest_hex("sha512:" + "a" * 128)


@pytest.mark.parametrize("text", ["linux", "linux/", "linux/arm64/v8/x", "/amd64"])
def test_a_malformed_platform_is_refused(text: str) -> None:
    with pytest.raises(InvalidReferenceError, match=r"expected os/arch\[/variant\], e.g. linux/arm64"):
        Platform.parse(text)


@pytest.mark.parametrize(("text", "normal"), [
    ("linux/aarch64", "linux/arm64"), ("linux/arm64/v8", "linux/arm64"), ("linux/x86_64", "linux/amd64"),
    ("linux/x86-64", "linux/amd64"), ("linux/amd64/v1", "linux/amd64"), ("linux/amd64/v3", "linux/amd64/v3"),
    ("linux/arm", "linux/arm/v7"), ("linux/arm/v6", "linux/arm/v6"),
])
def test_platforms_normalise_as_containerd_does(text: str, normal: str) -> None:
    assert str(Platform.parse(text)) == normal


def test_descriptor_json_keeps_platform_variant_and_annotations() -> None:
    obj = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + "b" * 64,
           "size": 7, "platform": {"architecture": "arm", "os": "linux", "variant": "v7"},
           "annotations": {"org.opencontainers.image.ref.name": "1.0"}}
    d = Descriptor.from_json(obj)
    assert d.to_json() == obj
    assert d.annotation("org.opencontainers.image.ref.name") == "1.0"
    plain = Descriptor.from_json({**obj, "platform": {"architecture": "amd64", "os": "linux"}, "annotations": {}})
    assert plain.to_json() == {"mediaType": obj["mediaType"], "digest": obj["digest"], "size": 7,
                               "platform": {"architecture": "amd64", "os": "linux"}}


def test_verified_refuses_too_few_bytes_and_too_many() -> None:
    data = b"hello"
    digest = sha256_digest(data)
    assert b"".join(verified([data], digest, 5, what="blob")) == data
    with pytest.raises(DigestMismatchError, match=f"blob: got 4 bytes, 5 declared for {digest}"):
        list(verified([data[:4]], digest, 5, what="blob"))
    with pytest.raises(DigestMismatchError, match="blob: more than the 4 bytes declared"):
        list(verified([data], digest, 4, what="blob"))


def test_blob_descriptors_are_the_config_then_the_layers_in_order() -> None:
    def desc(n: int) -> dict[str, object]:
        return {"mediaType": "application/octet-stream", "digest": "sha256:" + str(n) * 64, "size": n}

    manifest = {"config": desc(1), "layers": [desc(2), desc(3)]}
    assert [(d.digest[7], d.size) for d in blob_descriptors(manifest)] == [("1", 1), ("2", 2), ("3", 3)]
    assert [d.size for d in blob_descriptors({"config": desc(1)})] == [1]  # no layers: the config alone
    assert [d.size for d in blob_descriptors({"config": desc(1), "layers": None})] == [1]
    with pytest.raises(KeyError):  # no config: malformed, the caller names the manifest
        blob_descriptors({"layers": [desc(2)]})
