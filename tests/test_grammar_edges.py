"""The small parsers' refusals and printers: digests, references, semantic versions, and the bundle
spec's own checks (size, top-level shape, image references, registry lookup)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bundler import spec
from bundler.errors import InvalidReferenceError, SpecError
from bundler.reference import ImageRef, validate_digest
from bundler.semver import Version
from tests.test_spec import MINIMAL, write

HEX = "a" * 64


@pytest.mark.parametrize(("value", "message"), [
    ("sha256", "expected ALGORITHM:HEX"), (":abc", "expected ALGORITHM:HEX"), ("sha256:", "expected ALGORITHM:HEX"),
    ("Sha256:abc", "malformed"), ("md5:" + "a" * 32, "unsupported digest algorithm 'md5'"),
])
def test_malformed_digests(value: str, message: str) -> None:
    with pytest.raises(InvalidReferenceError, match=message):
        validate_digest(value)


def test_reference_refusals_name_the_reason() -> None:
    with pytest.raises(InvalidReferenceError, match="not a string"):
        ImageRef.parse(None)  # type: ignore[arg-type]
    with pytest.raises(InvalidReferenceError, match="invalid reference format: 'example.com:5000x/app'"):
        ImageRef.parse("example.com:5000x/app")


def test_repository_and_with_digest() -> None:
    ref = ImageRef.parse("quay.io/org/app:1.0")
    assert ref.repository == "org/app"
    assert str(ref.with_digest("sha256:" + HEX)) == f"quay.io/org/app:1.0@sha256:{HEX}"
    with pytest.raises(InvalidReferenceError):
        ref.with_digest("sha256:short")


@pytest.mark.parametrize("text", ["1.2.3", "1.2.3-rc.1", "1.2.3+build.5", "1.2.3-beta+exp.sha.5114f85"])
def test_versions_print_as_semver(text: str) -> None:
    assert str(Version.parse(text)) == text
    assert str(Version.parse("v" + text)) == text


def test_a_spec_over_the_size_cap_is_refused_unread(tmp_path: Path) -> None:
    big = tmp_path / "bundle.yaml"
    with big.open("wb") as f:
        f.truncate(spec.MAX_SPEC_BYTES + 1)
    with pytest.raises(SpecError, match=f"bundle.yaml: larger than {spec.MAX_SPEC_BYTES} bytes; not a bundle spec"):
        spec.load(big)


def test_a_spec_that_is_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="bundle.yaml:1: the bundle spec must be a YAML mapping"):
        spec.load(write(tmp_path, "- just\n- a list\n"))


def test_an_invalid_image_reference_names_its_line(tmp_path: Path) -> None:
    text = MINIMAL + "images:\n- ref: docker.io/Library/Nginx:1.27\n  confirm: true\n"
    with pytest.raises(SpecError, match=r"bundle.yaml:9: images\[0\].ref: invalid reference format: "
                                        r"repository name \(Library/Nginx\) must be lowercase"):
        spec.load(write(tmp_path, text))


def test_registry_lookup_by_host(tmp_path: Path) -> None:
    text = MINIMAL + "registries:\n- host: docker.io\n  mirrors: [mirror.local:5000]\n"
    s = spec.load(write(tmp_path, text))
    found = s.registry("docker.io")
    assert found is not None and found.mirrors == ("mirror.local:5000",)
    assert s.registry("quay.io") is None


def test_an_invalid_exemption_platform_names_its_line(tmp_path: Path) -> None:
    text = MINIMAL + ("images:\n- ref: busybox:1.36\n  platformExemptions:\n"
                      "  - {platform: linux, reason: not built for arm}\n")
    with pytest.raises(SpecError, match=r"bundle.yaml:11: images\[0\].platformExemptions\[0\].platform: invalid "
                                        r"platform 'linux': expected os/arch\[/variant\]"):
        spec.load(write(tmp_path, text))
