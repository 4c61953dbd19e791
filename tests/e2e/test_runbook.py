"""docs/customer-runbook.md, run as written: the customer's commands against a real local registry.

The vendor side builds a bundle that delivers by all three paths (tests/support/shipped.py). The
customer side gets a fresh folder with only the bundle file and the vendor's root certificate, and a
second docker-registry as its cluster-local registry. Then the runbook's fenced blocks run in order:
- ```` ```sh site ```` is the only block the test replaces (with this machine's values), after checking
  that it sets exactly the variables the test sets;
- every ```` ```sh ```` block runs in one bash shell, as written (`set -euo pipefail`);
- ```` ```sh cluster ```` blocks need a cluster: `helm template` stands in for `helm install`,
  `kubectl kustomize` for `kubectl apply -k`, and the files themselves for `kubectl apply -f`. Every
  image in what they would apply must be on the bundle's local registry and resolve in the registry
  the runbook pushed to, by digest (read with skopeo);
- ```` ```sh update ```` blocks need an update bundle and its base: tests/test_update.py runs the same
  commands (inspect, verify --base, push --base, verify --base --extract) on a real pair.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bundler import sweep
from bundler.documents import Origin, load_stream
from tests.support.registry import running_registry
from tests.support.shipped import LOCAL, ship

RUNBOOK = Path(__file__).resolve().parents[2] / "docs" / "customer-runbook.md"
FENCE = re.compile(r"^```(\w+)?[ \t]*([\w-]*)\n(.*?)^```", re.M | re.S)


def blocks(kind: str) -> list[str]:
    """The bodies of the runbook's fenced blocks whose info string is `kind` (e.g. "sh", "sh cluster")."""
    return [body for lang, extra, body in FENCE.findall(RUNBOOK.read_text())
            if " ".join(x for x in (lang, extra) if x) == kind]


def test_the_runbook_names_every_step() -> None:
    text = RUNBOOK.read_text()
    for needle in ("airgap-bundle inspect", "airgap-bundle verify", "airgap-bundle sign", "airgap-bundle push",
                   "kubectl apply -f", "helm install", "kubectl apply -k", "re-signed bundle", "--record"):
        assert needle in text, needle
    assert len(blocks("sh site")) == 1 and len(blocks("sh cluster")) == 3


@pytest.fixture(scope="module")
def customer(tmp_path_factory: pytest.TempPathFactory, registry: Any, run_cli: Any) -> Path:
    vendor = ship(tmp_path_factory.mktemp("vendor"), registry, run_cli, every_path=True)
    site = tmp_path_factory.mktemp("customer")
    shutil.copy(vendor.bundle, site / "shop.bundle.tar")
    shutil.copy(vendor.root_cert, site / "vendor-root.crt")
    return site


def _site(site: Path, registry_host: str) -> dict[str, str]:
    return {"BUNDLE": "shop.bundle.tar", "REGISTRY": registry_host, "PUSH_FLAGS": f"--insecure-registry {registry_host}",
            "APP": "shop-1.0.0", "AUDIT_LOG": str(site / "log" / "audit.jsonl"),
            "AIRGAP_BUNDLE_KEY_PASSWORD": "runbook-test-password"}


def test_the_runbook_as_written(customer: Path, tmp_path: Path, helm: str, kubectl: str) -> None:
    with running_registry(tmp_path / "cluster-registry") as target:
        site = _site(customer, target.host)
        declared = re.findall(r"^export (\w+)=", blocks("sh site")[0], re.M)
        assert declared == list(site), "the runbook's site block and this test set different variables"
        tools = os.pathsep.join([str(Path(sys.executable).parent), str(Path(helm).parent), str(Path(kubectl).parent),
                                 os.environ.get("PATH", "")])
        env = {**os.environ, **site, "PATH": tools, "HOME": str(customer)}
        script = "set -euo pipefail\n" + "\n".join(blocks("sh"))
        done = subprocess.run(["bash", "-c", script], cwd=customer, env=env, capture_output=True, text=True,
                              timeout=900)
        assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        out = done.stdout + done.stderr
        assert "signature ok: vendor" in out and "signature ok: customer" in out
        assert "push: target http://" + target.host in out and "dry run: would push" in out
        assert re.search(r"read back \d+ manifests", out)

        # the audit log answers "which key signed what" alone: a push and an extraction, both keys
        records = [json.loads(line) for line in Path(site["AUDIT_LOG"]).read_text().splitlines()]
        assert [r["action"] for r in records] == ["push", "extract"]
        assert {a["authority"] for a in records[0]["authorities"]} == {"vendor", "customer"}

        app = customer / site["APP"]
        rendered = _what_the_cluster_would_apply(app, env, helm, kubectl)
        assert set(rendered) == {"kubectl apply -f", "helm install", "kubectl apply -k"}
        for command, text in rendered.items():
            _every_image_resolves(text, command, target.host)


def _what_the_cluster_would_apply(app: Path, env: dict[str, str], helm: str, kubectl: str) -> dict[str, str]:
    """Run each `sh cluster` command's offline stand-in; return the YAML each would apply."""
    out: dict[str, str] = {}
    for block in blocks("sh cluster"):
        # the shell's expansion of "$APP" and friends, with the site's values
        argv = [re.sub(r"\$\{?(\w+)\}?", lambda m: env[m.group(1)], a) for a in shlex.split(block.strip())]
        cwd = app.parent
        if argv[:3] == ["kubectl", "apply", "-f"]:
            folder = cwd / argv[3]
            out["kubectl apply -f"] = "\n---\n".join(p.read_text() for p in sorted(folder.glob("*.yaml")))
        elif argv[:2] == ["helm", "install"]:
            stand_in = [helm, "template", *(a for a in argv[2:] if a != "--create-namespace")]
            out["helm install"] = subprocess.run(stand_in, cwd=cwd, env=env, capture_output=True, text=True,
                                                 check=True).stdout
        elif argv[:3] == ["kubectl", "apply", "-k"]:
            out["kubectl apply -k"] = subprocess.run([kubectl, "kustomize", argv[3]], cwd=cwd, env=env,
                                                     capture_output=True, text=True, check=True).stdout
        else:  # pragma: no cover - a new cluster command needs a stand-in here
            pytest.fail(f"no offline stand-in for {block!r}")
    return out


def _every_image_resolves(text: str, what: str, host: str) -> None:
    images = sweep.sweep(load_stream(text, Origin(what, 1))).images
    assert images, what
    for image in images:
        assert image.ref.domain == LOCAL, f"{what}: {image.written} is not on {LOCAL}"
        assert image.ref.digest, f"{what}: {image.written} is not pinned by digest"
        at = f"{host}/{image.ref.path}@{image.ref.digest}"
        raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{at}"],
                             capture_output=True, timeout=60)
        assert raw.returncode == 0, f"{what}: {at}: {raw.stderr.decode()}"
        assert "sha256:" + hashlib.sha256(raw.stdout).hexdigest() == image.ref.digest
