"""Install from the bundle three ways, as a customer would, from the extracted bundle alone.

A spec with charts shaped like real ones (tests/fixtures/charts/trace), a Kustomize tree with bases,
components and overlays (tests/fixtures/kustomize/shop) and operator manifests is built against a real
docker-registry holding every image it names (each under the mirror prefix of its source host). The
bundle is verified and extracted; then, with nothing but the extracted folder:
- the rewritten manifests,
- each chart `.tgz` rendered with `helm template` and its values override,
- each Kustomize overlay built with `kubectl kustomize`,
must name only images on the local registry, pinned by a digest that the bundle's OCI layout carries
with both required platforms.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from bundler import render, sweep
from bundler import spec as spec_mod
from bundler.documents import Origin, load_stream
from bundler.reference import ImageRef
from tests.support.images import Pusher, make_layer, multi_platform

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
LOCAL = "registry.airgap.local:5000"
CHARTS = {  # fixture chart -> extra spec keys
    "operator-cr": {},
    "appversion": {},
    "bitnami-like": {},
    "gpu-operator": {},  # ClusterPolicy split objects composed from values
    "hardcoded": {"acceptHardcoded": [{"ref": "docker.io/library/busybox:1.36",
                                       "reason": "upstream init container; the customer's mirror carries it"}]},
}
PLATFORMS = ("linux/amd64", "linux/arm64")


def _spec(registry_host: str, hosts: list[str], confirm: list[str] = ()) -> dict[str, object]:  # type: ignore[assignment]
    sources: dict[str, object] = {
        "charts": [{"path": str(FIXTURES / "charts" / "trace" / name), "release": name, "namespace": "apps", **extra}
                   for name, extra in CHARTS.items()],
        "manifests": [{"path": str(FIXTURES / "delivery" / "manifests")}],
    }
    kustomize_tree = FIXTURES / "kustomize" / "shop" / "overlays" / "prod"
    if kustomize_tree.is_dir():
        sources["kustomize"] = [{"path": str(kustomize_tree)}]
    return {
        "apiVersion": "airgap-bundle.dev/v1alpha1", "kind": "Bundle",
        "metadata": {"name": "delivery", "version": "1.0.0", "sourceDateEpoch": 1767225600},
        "localRegistry": {"host": LOCAL},
        "platforms": list(PLATFORMS),
        "sources": sources,
        # what a release engineer does after `sweep`: review each candidate and confirm it
        "images": [{"ref": ref, "confirm": True} for ref in confirm],
        "registries": [*({"host": h, "mirrors": [f"{registry_host}/{h}"], "skipUpstream": True} for h in hosts),
                       {"host": registry_host, "insecure": True}],
    }


@pytest.fixture(scope="module")
def delivered(tmp_path_factory: pytest.TempPathFactory, registry, run_cli, helm: str) -> Path:  # type: ignore[no-untyped-def]
    work = tmp_path_factory.mktemp("delivery")
    # Every image the sources name, pushed under `<source host>/<path>` (the mirrors' prefix).
    draft = work / "draft.yaml"
    draft.write_text(yaml.safe_dump(_spec(registry.host, [])))
    spec = spec_mod.load(draft)
    found = sweep.sweep(render.render(spec, render.Tools(helm=helm)))
    refs = sorted({i.ref for i in found.images}, key=str)
    pusher = Pusher.to(registry)
    base = [make_layer("delivery-base", 4096)]
    for n, ref in enumerate(refs):
        pusher.push(f"{ref.domain}/{ref.path}", multi_platform(ref.path, seed=f"d{n}", platforms=PLATFORMS, base=base),
                    ref.tag or ref.digest)
    candidates = sorted({str(i.ref) for i in found.candidates})
    (work / "bundle.yaml").write_text(yaml.safe_dump(_spec(registry.host, sorted({r.domain for r in refs}),
                                                           candidates)))
    for args in (["--out", "root", "--cert", "--ca", "--valid-days", "365"],
                 ["--out", "vendor", "--cert", "--ca-key", "root.key", "--ca-cert", "root.crt"]):
        assert run_cli("keys", "generate", *args, cwd=work).returncode == 0
    (work / "policy.yaml").write_text("apiVersion: airgap-bundle.dev/v1\nkind: VerificationPolicy\n"
                                      "authorities:\n  - name: vendor\n    roots: [root.crt]\n")
    built = run_cli("build", "bundle.yaml", "--output", "delivery.bundle.tar", "--key", "vendor.key", "--cert",
                    "vendor.crt", "--cache", str(work / "cache"), "--json", cwd=work)
    assert built.returncode == 0, built.stderr
    result = json.loads(built.stdout)
    (work / "build.json").write_text(built.stdout)
    assert result["coverage"], result
    verified = run_cli("verify", "delivery.bundle.tar", "--policy", "policy.yaml", "--extract", "extracted", cwd=work)
    assert verified.returncode == 0, verified.stderr
    return work / "extracted"


def _carried(extracted: Path) -> dict[str, set[str]]:
    """Bundled digest -> platforms, read from the extracted OCI layout alone."""
    layout = extracted / "images"
    index = json.loads((layout / "index.json").read_text())
    out: dict[str, set[str]] = {}
    for entry in index["manifests"]:
        blob = json.loads((layout / "blobs" / "sha256" / entry["digest"].split(":", 1)[1]).read_text())
        platforms = {f"{m['platform']['os']}/{m['platform']['architecture']}" for m in blob.get("manifests", [])
                     if m.get("platform", {}).get("os") != "unknown"}
        out[entry["digest"]] = platforms
    return out


def _bom_locals(extracted: Path) -> dict[str, str]:
    """`name:tag` of each bundled image's local reference -> its bundled digest (the statement's BOM)."""
    statement = json.loads((extracted / "bundle.intoto.json").read_text())
    return {i["local"].split("@", 1)[0]: i["bundledDigest"] for i in statement["predicate"]["images"]}


def _check_local(text: str, extracted: Path, what: str, *, allowed: frozenset[str] = frozenset(),
                 tag_only: int = 0) -> int:
    """Every image local and carried with both platforms; digest-pinned except `tag_only` of them,
    whose local name:tag must still be one the bundle carries."""
    carried, bom = _carried(extracted), _bom_locals(extracted)
    images = sweep.sweep(load_stream(text, Origin(what, 1))).images
    assert images, f"{what}: no images at all"
    by_tag = 0
    for image in images:
        if image.ref.canonical in allowed:
            continue
        assert image.ref.domain == LOCAL, f"{what}: {image.written} is not on {LOCAL}"
        digest = image.ref.digest
        if digest is None:
            by_tag += 1
            digest = bom.get(str(image.ref))
        assert digest in carried, f"{what}: {image.written} is not an image the bundle carries"
        assert set(PLATFORMS) <= carried[digest], f"{what}: {image.written} lacks a platform"
    assert by_tag == tag_only, f"{what}: {by_tag} images pinned by tag only, expected {tag_only}"
    return len(images)


def test_rewritten_manifests_alone(delivered: Path) -> None:
    files = sorted((delivered / "manifests").glob("*.yaml"))
    assert files
    # the shop tree's Exporter CR has `{registry, repository, tag}` fields and no digest form: by tag
    tag_only = {"kustomize-prod.yaml": 1}
    assert sum(_check_local(f.read_text(), delivered, f.name, tag_only=tag_only.get(f.name, 0)) for f in files) >= 20


def test_each_chart_with_its_override_alone(delivered: Path, helm: str) -> None:
    accepted = frozenset({ImageRef.parse("docker.io/library/busybox:1.36").canonical})
    charts = sorted((delivered / "charts").glob("*.tgz"))
    assert len(charts) == len(CHARTS)
    for chart in charts:
        override = chart.with_name(chart.name.removesuffix(".tgz") + ".values-airgap.yaml")
        text = subprocess.run([helm, "template", "r", str(chart), "--namespace", "apps", "-f", str(override)],
                              capture_output=True, text=True, check=True).stdout
        _check_local(text, delivered, chart.name, allowed=accepted if "hardcoded" in chart.name else frozenset(),
                     tag_only=1 if "appversion" in chart.name else 0)  # its tag also renders a label


def test_each_kustomize_overlay_alone(delivered: Path, kubectl: str) -> None:
    overlays = sorted((delivered / "kustomize").glob("*/overlay")) if (delivered / "kustomize").is_dir() else []
    if not (FIXTURES / "kustomize" / "shop").is_dir():
        pytest.skip("no Kustomize tree fixture in this checkout")
    assert overlays
    for overlay in overlays:
        text = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True, check=True).stdout
        _check_local(text, delivered, str(overlay.relative_to(delivered)), tag_only=1)


def test_the_coverage_line_counts_how_each_chart_moved(delivered: Path) -> None:
    result = json.loads((delivered.parent / "build.json").read_text())
    lines = {line.split(":", 1)[0]: line for line in result["coverage"] if line.startswith("charts/")}
    operator = next(v for k, v in lines.items() if "operator-cr" in k)
    assert "4 through digest fields" in operator
    appversion = next(v for k, v in lines.items() if "appversion" in k)
    assert "1 pinned only by tag" in appversion and "app.kubernetes.io/version" in appversion
    hardcoded = next(v for k, v in lines.items() if "hardcoded" in k)
    assert "1 accepted as hard-coded" in hardcoded
