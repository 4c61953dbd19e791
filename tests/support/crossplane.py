"""Test helpers for the Crossplane gate: the fixture packages and a short way to run `check`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bundler.crossplane import Report, Target, Waiver, check
from bundler.documents import Origin, load_stream
from bundler.reference import ImageRef
from bundler.xpkg import Package, read_local

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "crossplane"
PACKAGES = FIXTURES / "packages"

UPBOUND = "xpkg.upbound.io/upbound"
CONTRIB = "xpkg.crossplane.io/crossplane-contrib"
# fixture directory -> the reference it stands for
REFS = {
    "provider-family-aws-v1.6.0": f"{UPBOUND}/provider-family-aws:v1.6.0",
    "provider-family-aws-v1.7.0": f"{UPBOUND}/provider-family-aws:v1.7.0",
    "provider-family-aws-v2.0.0": f"{UPBOUND}/provider-family-aws:v2.0.0",
    "provider-aws-s3-v1.6.0": f"{UPBOUND}/provider-aws-s3:v1.6.0",
    "provider-aws-s3-v1.7.0": f"{UPBOUND}/provider-aws-s3:v1.7.0",
    "provider-aws-s3-v2.0.0": f"{UPBOUND}/provider-aws-s3:v2.0.0",
    "provider-aws-v1.7.0": f"{UPBOUND}/provider-aws:v1.7.0",
    "provider-kubernetes-v0.18.0": f"{CONTRIB}/provider-kubernetes:v0.18.0",
    "provider-kubernetes-v1.0.0": f"{CONTRIB}/provider-kubernetes:v1.0.0",
    "function-patch-and-transform-v0.9.0": f"{CONTRIB}/function-patch-and-transform:v0.9.0",
    "function-patch-and-transform-v0.10.0": f"{CONTRIB}/function-patch-and-transform:v0.10.0",
    "function-go-templating-v0.11.0": f"{CONTRIB}/function-go-templating:v0.11.0",
    "function-kcl-v0.11.0": f"{CONTRIB}/function-kcl:v0.11.0",
    "function-auto-ready-v0.5.0": f"{CONTRIB}/function-auto-ready:v0.5.0",
    "function-operation-only-v0.1.0": f"{CONTRIB}/function-operation-only:v0.1.0",
}


def pkg(name: str, ref: str | None = None) -> Package:
    return read_local(PACKAGES / name, ImageRef.parse(ref or REFS[name]))


def arg(name: str) -> str:
    """The CLI form REF=DIR for a fixture package."""
    return f"{REFS[name]}={PACKAGES / name}"


def run(manifests: str, packages: Sequence[str | Package], target: str = "2.0",
        waivers: Sequence[Waiver] = (), images: Sequence[str] = ()) -> Report:
    docs = load_stream(manifests, Origin("test.yaml", 1))
    pkgs = [p if isinstance(p, Package) else pkg(p) for p in packages]
    return check(docs, pkgs, target=Target.parse(target), waivers=waivers, images=images)


def rules(report: Report, severity: str = "error") -> set[str]:
    return {f.rule for f in report.findings if f.severity == severity}
