"""The main job end to end on embedded defaults (README "Quick start").

1. starts the Debian docker-registry on 127.0.0.1 (a free port) and seeds it with generated,
   deterministic multi-platform images under the names the sample chart uses (linux/amd64,
   linux/arm64 and linux/arm/v7, so the bundle narrows each index to the two required platforms;
   busybox is amd64-only and exempted for arm64 in the spec; one image carries an attestation);
2. copies examples/ to a work folder and points the spec's mirrors at that registry;
3. makes a vendor root CA, a short-lived vendor signing certificate, and a customer key;
4. builds the signed bundle, verifies it offline, co-signs it as the customer, verifies again with
   the customer required, and extracts it;
5. starts a second docker-registry, the customer's cluster-local registry, and pushes the bundle into
   it (verified first, read back after), appending a verification record to an audit log;
6. prints the customer's next commands and where everything is (docs/customer-runbook.md has the rest).

Usage: python scripts/demo.py [WORKDIR]   (default: a temporary folder, kept and printed)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.images import Pusher, make_layer, multi_platform  # noqa: E402
from tests.support.registry import start_registry  # noqa: E402

DEMO_IMAGES = {  # repository on the mirror -> (tag, platforms)
    "library/nginx": ("1.27.3", ("linux/amd64", "linux/arm64", "linux/arm/v7")),
    "library/busybox": ("1.36", ("linux/amd64",)),
    "prometheus/nginx-exporter": ("1.3.0", ("linux/amd64", "linux/arm64", "linux/arm/v7")),
    "prometheus-operator/prometheus-operator": ("v0.75.0", ("linux/amd64", "linux/arm64")),
    "prometheus-operator/prometheus-config-reloader": ("v0.75.0", ("linux/amd64", "linux/arm64")),
}


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> None:
    print("$ airgap-bundle " + " ".join(args), flush=True)
    result = subprocess.run([sys.executable, "-m", "bundler", *args], cwd=cwd,
                            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
    if result.returncode != 0:
        sys.exit(f"demo: `airgap-bundle {args[0]}` failed with exit code {result.returncode}")


def main() -> None:
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="airgap-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    registry = start_registry(work / "registry")
    try:
        print(f"demo: docker-registry on {registry.host}, work folder {work}", flush=True)
        pusher = Pusher.to(registry)
        base = [make_layer("demo-base", 256 * 1024)]
        for n, (repo, (tag, platforms)) in enumerate(DEMO_IMAGES.items()):
            pusher.push(repo, multi_platform(repo, seed=n, platforms=platforms, base=base,
                                             attestations=repo == "library/nginx", layer_size=64 * 1024), tag)
        examples = work / "examples"
        shutil.rmtree(examples, ignore_errors=True)
        shutil.copytree(REPO / "examples", examples)
        spec = examples / "bundle.yaml"
        spec.write_text(re.sub(r"127\.0\.0\.1:5000", registry.host, spec.read_text()))

        keys = work / "keys"
        shutil.rmtree(keys, ignore_errors=True)
        keys.mkdir()
        run("keys", "generate", "--out", str(keys / "vendor-root"), "--cert", "--ca", "--valid-days", "3650",
            "--subject", "Demo Vendor Root CA", cwd=work)
        run("keys", "generate", "--out", str(keys / "vendor"), "--cert", "--ca-key", str(keys / "vendor-root.key"),
            "--ca-cert", str(keys / "vendor-root.crt"), "--valid-days", "30", "--subject", "Demo Vendor Release",
            cwd=work)
        run("keys", "generate", "--out", str(keys / "customer"), "--type", "ed25519", cwd=work)
        policy = work / "policy.yaml"
        policy.write_text(
            "apiVersion: airgap-bundle.dev/v1\nkind: VerificationPolicy\nauthorities:\n"
            "  - name: vendor\n    roots: [keys/vendor-root.crt]\n"
            "  - name: customer\n    required: true\n    keys:\n      - path: keys/customer.pub\n")
        vendor_only = work / "policy-vendor.yaml"
        vendor_only.write_text(policy.read_text().replace("required: true", "required: false"))

        bundle = work / "demo.bundle.tar"
        run("build", str(spec), "--output", str(bundle), "--key", str(keys / "vendor.key"),
            "--cert", str(keys / "vendor.crt"), "--cache", str(work / "cache"), cwd=work)
        run("verify", str(bundle), "--policy", str(vendor_only), cwd=work)
        run("sign", str(bundle), "--authority", "customer", "--key", str(keys / "customer.key"), cwd=work)
        shutil.rmtree(work / "extracted", ignore_errors=True)
        audit_log = work / "audit.jsonl"
        run("verify", str(bundle), "--policy", str(policy), "--extract", str(work / "extracted"),
            "--audit-log", str(audit_log), cwd=work)
        print(f"demo: {bundle} verified (vendor + customer) and extracted to {work / 'extracted'}", flush=True)

        # The customer's side: a second registry stands in for the cluster-local one (as a port-forward
        # to it would); the bundle names registry.airgap.local:5000, the paths and tags stay the same.
        cluster = start_registry(work / "cluster-registry")
        try:
            print(f"demo: cluster-local registry (a second docker-registry) on {cluster.host}", flush=True)
            run("push", str(bundle), "--policy", str(policy), "--registry", cluster.host,
                "--insecure-registry", cluster.host, "--audit-log", str(audit_log), cwd=work)
        finally:
            cluster.stop()
        charts = "\n".join(f"  helm install {c.name.split('-')[0]} {c} -f {c.with_name(c.name[:-4] + '.values-airgap.yaml')}"
                           for c in sorted((work / "extracted" / "charts").glob("*.tgz")))
        print(NEXT.format(work=work, bundle=bundle, extracted=work / "extracted", audit=audit_log, charts=charts,
                          registry=work / "registry", cluster=work / "cluster-registry", keys=keys, policy=policy))
    finally:
        registry.stop()


NEXT = """
demo: ok. Where everything is:
  bundle              {bundle}
  keys                {keys}  (vendor root CA and signing certificate, customer key)
  policy              {policy}  (vendor root + customer key, both required)
  extracted bundle    {extracted}  (manifests/, charts/, images/, .airgap-bundle/verification.json)
  audit log           {audit}  (one record per push and per extraction)
  source registry     {registry}  (data of the vendor-side registry; stopped)
  cluster registry    {cluster}  (data of the registry the bundle was pushed into; stopped)

The customer's next commands, in a cluster with registry.airgap.local:5000 (docs/customer-runbook.md):
  kubectl apply -f {extracted}/manifests/
{charts}
  airgap-bundle inspect --record {audit}                      # which key signed what was loaded
"""


if __name__ == "__main__":
    main()
