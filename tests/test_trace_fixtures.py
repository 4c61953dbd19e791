"""The trace fixture charts render with real helm and carry exactly the upstream images they are meant to.

Pins the fixtures themselves (tests/fixtures/charts/trace/README.md says what each reproduces), so a later
change to a fixture cannot silently change what the values tracer is tested against.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

TRACE = Path(__file__).resolve().parent / "fixtures" / "charts" / "trace"

# Every image string each chart renders with its own defaults (exact, as written in the manifests).
EXPECTED: dict[str, set[str]] = {
    "appversion": {
        "quay.io/jetstack/cert-manager-controller:v1.16.2",
        "quay.io/jetstack/cert-manager-acmesolver:v1.16.2",  # in --acme-http01-solver-image=
    },
    "bitnami-like": {
        "docker.io/bitnami/redis:7.4.2-debian-12-r0",
        "docker.io/bitnami/redis-exporter:1.67.0-debian-12-r0",
        "docker.io/bitnami/os-shell:12-debian-12-r35",
    },
    "digest": {
        "registry.k8s.io/ingress-nginx/controller:v1.12.1"
        "@sha256:d2fbc4ec70d8aa2050dd91a91506e998765e86c96f32cffb56c503c9c34eed5b",
        "registry.k8s.io/ingress-nginx/kube-webhook-certgen:v1.5.2",
    },
    "operator-cr": {
        "quay.io/prometheus-operator/prometheus-operator:v0.80.1",
        "quay.io/prometheus-operator/prometheus-config-reloader:v0.80.1",  # --prometheus-config-reloader=
        "quay.io/thanos/thanos:v0.37.2",  # --thanos-default-base-image=
        "quay.io/prometheus/prometheus:v3.1.0",  # Prometheus CR spec.image
    },
    "alias": {
        "ghcr.io/stefanprodan/podinfo:6.7.1",
        "docker.io/valkey/valkey:8.0.2",
        "docker.io/library/redis:7.4.2",
        "ghcr.io/oliver006/redis_exporter:v1.67.0",
    },
    "hardcoded": {
        "ghcr.io/fluxcd/source-controller:v1.4.1",
        "busybox:1.36",
    },
    "validating": {
        "registry.k8s.io/external-dns/external-dns:v0.15.1",
        "nvcr.io/nvidia/k8s-device-plugin:v0.17.0",
    },
    "single-string": {
        "ghcr.io/dexidp/dex:v2.41.1",
        "quay.io/oauth2-proxy/oauth2-proxy:v7.8.1",
        "ghcr.io/jimmidyson/configmap-reload:v0.14.0",
        "registry.k8s.io/ingress-nginx/opentelemetry-1.25.3:v20240813-b933310d",
        "nvcr.io/nvidia/cuda:12.6.3-base-ubuntu24.04",
    },
    "gpu-operator": {
        "nvcr.io/nvidia/gpu-operator:v24.9.0",
        # the ClusterPolicy's `image:` fields are only the last part of split objects (see the test below)
        "driver", "container-toolkit", "k8s-device-plugin",
    },
}

_IMAGE_FIELD = re.compile(r"^\s*-?\s*image:\s*\"?([^\"\s]+)\"?\s*$", re.M)
_IMAGE_FLAG = re.compile(
    r"--(?:acme-http01-solver-image|prometheus-config-reloader|thanos-default-base-image)=(\S+)")


def _render(helm: str, chart: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, "template", "x", str(TRACE / chart), *args],
                          capture_output=True, text=True, timeout=60)


def _images(text: str) -> set[str]:
    return set(_IMAGE_FIELD.findall(text)) | set(_IMAGE_FLAG.findall(text))


def test_every_fixture_chart_is_pinned() -> None:
    charts = {p.name for p in TRACE.iterdir() if (p / "Chart.yaml").is_file()}
    assert charts == set(EXPECTED)
    readme = (TRACE / "README.md").read_text()
    for chart in charts:
        assert f"`{chart}/`" in readme, f"README.md does not describe {chart}/"


@pytest.mark.parametrize("chart", sorted(EXPECTED))
def test_fixture_renders_its_upstream_images(helm: str, chart: str) -> None:
    done = _render(helm, chart)
    assert done.returncode == 0, done.stderr
    assert _images(done.stdout) == EXPECTED[chart]


def test_appversion_tag_feeds_the_version_label(helm: str) -> None:
    out = _render(helm, "appversion", "--set", "image.tag=v1.16.1").stdout
    assert 'app.kubernetes.io/version: "v1.16.1"' in out
    assert "quay.io/jetstack/cert-manager-controller:v1.16.1" in out


def test_bitnami_like_refuses_relocation_without_allow_insecure(helm: str) -> None:
    relocated = _render(helm, "bitnami-like", "--set", "global.imageRegistry=registry.local:5000")
    assert relocated.returncode != 0
    assert "Original containers have been substituted" in relocated.stderr
    allowed = _render(helm, "bitnami-like", "--set", "global.imageRegistry=registry.local:5000",
                      "--set", "global.security.allowInsecureImages=true",
                      "--set", "image.digest=sha256:" + "a" * 64)
    assert allowed.returncode == 0, allowed.stderr
    assert _images(allowed.stdout) == {
        "registry.local:5000/bitnami/redis@sha256:" + "a" * 64,
        "registry.local:5000/bitnami/redis-exporter:1.67.0-debian-12-r0",
        "registry.local:5000/bitnami/os-shell:12-debian-12-r35",
    }


def test_operator_cr_tag_flows_into_spec_version(helm: str) -> None:
    naive = _render(helm, "operator-cr",
                    "--set", "prometheus.prometheusSpec.image.tag=v3.1.0@sha256:" + "b" * 64)
    assert "version: v3.1.0@sha256:" in naive.stdout  # what a naive override breaks
    proper = _render(helm, "operator-cr", "--set", "global.imageRegistry=registry.local",
                     "--set", "prometheus.prometheusSpec.image.sha=" + "b" * 64)
    assert "version: v3.1.0\n" in proper.stdout
    pinned = "registry.local/prometheus/prometheus:v3.1.0@sha256:" + "b" * 64
    assert f'image: "{pinned}"' in proper.stdout
    reloader = "registry.local/prometheus-operator/prometheus-config-reloader:v0.80.1"
    assert f"--prometheus-config-reloader={reloader}" in proper.stdout


def test_alias_values_live_under_each_alias(helm: str) -> None:
    out = _render(helm, "alias", "--set", "query-cache.image.tag=7.4.1",
                  "--set", "audit-cache.enabled=true").stdout
    images = _images(out)
    assert "docker.io/library/redis:7.4.1" in images
    assert "docker.io/valkey/valkey:8.0.2" in images
    assert "public.ecr.aws/docker/library/redis:7.2.7" in images


@pytest.mark.parametrize("setting", [
    "image.tag=latest",
    "image.tag=v0.12.0",
    "image.registry=",
    "image.tag=v0.15.1@sha256:" + "c" * 64,
    "policy=bogus",
])
def test_validating_fails_on_unexpected_values(helm: str, setting: str) -> None:
    done = _render(helm, "validating", "--set", setting)
    assert done.returncode != 0


def test_validating_digest_field_also_flips_pull_policy(helm: str) -> None:
    out = _render(helm, "validating", "--set", "devicePlugin.image.digest=sha256:" + "d" * 64).stdout
    assert '"nvcr.io/nvidia/k8s-device-plugin@sha256:' + "d" * 64 + '"' in out
    assert "imagePullPolicy: IfNotPresent" in out  # was Always: not an image-only change


def test_hardcoded_image_ignores_values(helm: str) -> None:
    moved = "registry.local/ghcr.io/fluxcd/source-controller"
    out = _render(helm, "hardcoded", "--set", f"image.repository={moved}").stdout
    assert _images(out) == {f"{moved}:v1.4.1", "busybox:1.36"}


def test_gpu_operator_cluster_policy_holds_split_objects(helm: str) -> None:
    from bundler import sweep
    from bundler.documents import Origin, load_stream

    found = sweep.sweep(load_stream(_render(helm, "gpu-operator").stdout, Origin("x", 1)))
    split = {str(i.ref) for i in found.images if all(f.form == "split" for f in i.findings)}
    assert split == {"nvcr.io/nvidia/driver:550.127.08", "nvcr.io/nvidia/k8s/container-toolkit:v1.17.3-ubuntu20.04",
                     "nvcr.io/nvidia/k8s-device-plugin:v0.17.0"}
