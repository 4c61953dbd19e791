"""The Crossplane gate's spec wiring on bad input: unreadable manifests, packages without a local path,
manifest entries that match nothing, and what counts as a bundle spec."""

from __future__ import annotations

from pathlib import Path

import pytest

from bundler import crossplane, spec
from bundler.errors import InputError, UsageError
from tests.support.crossplane import FIXTURES

SPEC = """apiVersion: airgap-bundle.dev/v1alpha1
kind: Bundle
metadata: {{name: xp, version: 1.0.0}}
localRegistry: {{host: registry.airgap.local:5000}}
sources:
  manifests:
    - path: {manifests}
crossplane:
  packages:
    - ref: xpkg.upbound.io/upbound/provider-aws-s3:v2.0.0
"""


def test_a_manifest_that_is_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_bytes(b"kind: \xff\n")
    (tmp_path / "notes.txt").write_bytes(b"\xff")  # not a manifest: never read
    with pytest.raises(InputError, match=r"m.yaml: cannot read: 'utf-8' codec can't decode"):
        crossplane.load_manifests([tmp_path])


def test_spec_packages_without_a_path_and_manifests_matching_nothing(tmp_path: Path) -> None:
    (tmp_path / "bundle.yaml").write_text(SPEC.format(manifests="nothing/*.yaml"))
    s = spec.load(tmp_path / "bundle.yaml")
    with pytest.raises(UsageError, match="crossplane package xpkg.upbound.io/upbound/provider-aws-s3:v2.0.0 has no "
                                         "local path"):
        crossplane.packages_from_spec(s.crossplane)
    with pytest.raises(InputError, match=r"bundle.yaml: manifests entry .*nothing/\*.yaml matches nothing"):
        crossplane.manifests_from_spec(s)


def test_what_counts_as_a_bundle_spec(tmp_path: Path) -> None:
    (tmp_path / "bundle.yaml").write_text(SPEC.format(manifests="m.yaml"))
    (tmp_path / "quoted.yml").write_text('apiVersion: "airgap-bundle.dev/v1alpha1"\n')
    (tmp_path / "bundle.json").write_text('{"apiVersion": "airgap-bundle.dev/v1alpha1"}')
    assert crossplane.is_spec_file(tmp_path / "bundle.yaml") and crossplane.is_spec_file(tmp_path / "quoted.yml")
    assert not crossplane.is_spec_file(tmp_path / "bundle.json")  # only YAML specs
    assert not crossplane.is_spec_file(tmp_path)  # a folder of manifests
    assert not crossplane.is_spec_file(FIXTURES / "manifests" / "v2-good.yaml")


UNREADABLE = Path("/proc/self/mem")  # a regular file whose read fails (EIO), even for root


@pytest.mark.skipif(not UNREADABLE.exists(), reason="needs Linux /proc")
def test_an_unreadable_yaml_file_is_not_taken_for_a_spec(tmp_path: Path) -> None:
    (tmp_path / "mem.yaml").symlink_to(UNREADABLE)
    assert not crossplane.is_spec_file(tmp_path / "mem.yaml")
    with pytest.raises(InputError, match=r"mem.yaml: cannot read: \[Errno 5\] Input/output error"):
        crossplane.load_manifests([tmp_path / "mem.yaml"])
