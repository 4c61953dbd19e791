"""A real, small bundle to push: built by the real `build` from images served by a real registry.

`ship(work, registry, run_cli)` seeds the source registry with three images chosen to exercise push:
- `docker.io/library/web:1.0`: a Docker manifest list over three platforms (the bundle narrows it to
  linux/amd64 + linux/arm64, so its bundled digest differs from upstream);
- `quay.io/team/app:2.0`: an OCI index with BuildKit attestation manifests (platform unknown/unknown);
- `quay.io/team/tool:3.1`: an OCI index with two 1.5 MiB layers (chunked uploads);
all three share a base layer (a cross-repository mount). A Deployment names web and app, and the spec
adds tool as an extra image. Keys: a vendor root CA and a signing certificate it issued; a policy that
trusts the root. Everything is written under `work`; `Shipped` says where.
"""

from __future__ import annotations

import base64
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.images import Pusher, make_layer, multi_platform

LOCAL = "registry.airgap.local:5000"
IMAGES = {  # source repository -> (tag, platforms, docker media types, attestations, layer size)
    "library/web": ("1.0", ("linux/amd64", "linux/arm64", "linux/arm/v7"), True, False, 4096),
    "team/app": ("2.0", ("linux/amd64", "linux/arm64"), False, True, 4096),
    "team/tool": ("3.1", ("linux/amd64", "linux/arm64"), False, False, 1536 * 1024),
}
HOSTS = {"library/web": "docker.io", "team/app": "quay.io", "team/tool": "quay.io"}

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      initContainers:
        - name: migrate
          image: quay.io/team/app:2.0
      containers:
        - name: web
          image: docker.io/library/web:1.0
"""


CHART = {  # a chart that composes its image from values (the values override moves it)
    "Chart.yaml": "apiVersion: v2\nname: shop\nversion: 0.1.0\nappVersion: '1.0'\n",
    "values.yaml": "image:\n  registry: docker.io\n  repository: library/web\n  tag: '1.0'\n",
    "templates/deployment.yaml": """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-web
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: "{{ .Values.image.registry }}/{{ .Values.image.repository }}:{{ .Values.image.tag }}"
""",
}
KUSTOMIZATION = {  # a base and an overlay that reaches it through ../
    "base/kustomization.yaml": "resources: [job.yaml]\n",
    "base/job.yaml": """\
apiVersion: batch/v1
kind: Job
metadata:
  name: migrate
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: migrate
          image: quay.io/team/app:2.0
""",
    "shop/kustomization.yaml": "resources: [../base]\nnamespace: shop\n",
}


@dataclass(frozen=True)
class Shipped:
    work: Path
    bundle: Path
    policy: Path
    root_cert: Path

    def statement(self) -> dict[str, Any]:
        out = subprocess.run(["tar", "-xOf", str(self.bundle), "bundle.intoto.json"], capture_output=True, check=True)
        return json.loads(out.stdout)  # type: ignore[no-any-return]

    def images(self) -> list[dict[str, Any]]:
        return list(self.statement()["predicate"]["images"])


def seed(registry: Any) -> None:
    pusher = Pusher.to(registry)
    base = [make_layer("shipped-base", 64 * 1024)]
    for n, (repo, (tag, platforms, docker, attest, size)) in enumerate(IMAGES.items()):
        pusher.push(f"{HOSTS[repo]}/{repo}", multi_platform(repo, seed=f"ship{n}", platforms=platforms, docker=docker,
                                                            attestations=attest, base=base, layer_size=size,
                                                            layers=2 if size > 65536 else 1), tag)


def ship(work: Path, registry: Any, run_cli: Any, *, every_path: bool = False) -> Shipped:
    """Seed `registry`, build and sign the bundle under `work`; return where everything is.

    `every_path` adds a chart (`charts/shop-0.1.0.tgz` and its values override) and a Kustomize
    overlay (`kustomize/shop/overlay`), so the bundle delivers by all three paths.
    """
    work.mkdir(parents=True, exist_ok=True)
    seed(registry)
    (work / "manifests").mkdir(exist_ok=True)
    (work / "manifests" / "deployment.yaml").write_text(DEPLOYMENT)
    sources: dict[str, Any] = {"manifests": [{"path": "manifests/*.yaml"}]}
    if every_path:
        for files, root in ((CHART, work / "src" / "chart"), (KUSTOMIZATION, work / "src" / "kustomize")):
            for name, text in files.items():
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                (root / name).write_text(text)
        sources["charts"] = [{"path": "src/chart", "release": "shop", "namespace": "shop"}]
        sources["kustomize"] = [{"path": "src/kustomize/shop"}]
    spec = {
        "apiVersion": "airgap-bundle.dev/v1alpha1", "kind": "Bundle",
        "metadata": {"name": "shop", "version": "1.0.0", "sourceDateEpoch": 1767225600},
        "localRegistry": {"host": LOCAL},
        "platforms": ["linux/amd64", "linux/arm64"],
        "sources": sources,
        "extraImages": [{"ref": "quay.io/team/tool:3.1", "reason": "started by the app at run time"}],
        "registries": [*({"host": h, "mirrors": [f"{registry.host}/{h}"], "skipUpstream": True}
                         for h in ("docker.io", "quay.io")),
                       {"host": registry.host, "insecure": True}],
    }
    (work / "bundle.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    for args in (["--out", "root", "--cert", "--ca", "--valid-days", "365", "--subject", "Shop Vendor Root"],
                 ["--out", "vendor", "--cert", "--ca-key", "root.key", "--ca-cert", "root.crt"]):
        done = run_cli("keys", "generate", *args, cwd=work)
        assert done.returncode == 0, done.stderr
    policy = work / "policy.yaml"
    policy.write_text("apiVersion: airgap-bundle.dev/v1\nkind: VerificationPolicy\n"
                      "authorities:\n  - name: vendor\n    roots: [root.crt]\n")
    built = run_cli("build", "bundle.yaml", "--output", "shop.bundle.tar", "--key", "vendor.key", "--cert",
                    "vendor.crt", "--cache", str(work / "cache"), cwd=work)
    assert built.returncode == 0, built.stderr
    return Shipped(work, work / "shop.bundle.tar", policy, work / "root.crt")


def auth_file(path: Path, host: str, username: str, password: str) -> Path:
    """A docker/podman auth file (what `docker login` writes) for REGISTRY_AUTH_FILE."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {host: {"auth": token}}}))
    return path
