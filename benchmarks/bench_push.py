"""Benchmark: `airgap-bundle push` vs `skopeo copy --all oci:... docker://...`, on one loopback registry.

A bundle of 10 images x 2 platforms (OCI indexes; a shared 32 MB base layer plus one 16 MB layer per
image and platform, uncompressed seeded random bytes; ~350 MB unique) is built once by the real
`build`. Then, in each round, alternating, into a fresh docker-registry each time:
- the tool: one CLI run of `push` (verification of the whole bundle, the push streamed out of the tar,
  the readback);
- skopeo: `copy --all` image by image from the bundle's extracted OCI layout (`verify --extract`
  once, not timed; skopeo verifies nothing and reads nothing back).
Once more at the end: the tool again into a registry that already has everything (a resumed or
repeated push: HEADs only).

    .venv/bin/python benchmarks/bench_push.py [--rounds 2] [--images 10] [--workdir /tmp/bench-push]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from machine_limits import tool_env  # noqa: E402

from tests.support.images import Pusher, make_image, make_index, make_layer  # noqa: E402
from tests.support.registry import start_registry  # noqa: E402

MB = 1_000_000
tool_env(REPO)  # bytecode compiled before anything is timed
PLATFORMS = ("linux/amd64", "linux/arm64")


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bundler", *args], cwd=cwd, capture_output=True, text=True,
                          env=tool_env(REPO), check=False)


def make_bundle(work: Path, images: int, base_size: int, own: int) -> tuple[Path, Path, list[str]]:
    source = start_registry(work / "source")
    try:
        pusher = Pusher.to(source)
        base = make_layer("bench-push-base", base_size, compress=False)
        refs = []
        for i in range(images):
            idx = make_index([make_image(p, [base, make_layer(f"bench-push/{i}/{p}", own, compress=False)])
                              for p in PLATFORMS])
            pusher.push(f"quay.io/bench/app{i:02d}", idx, "v1")
            refs.append(f"quay.io/bench/app{i:02d}:v1")
        spec = {"apiVersion": "airgap-bundle.dev/v1alpha1", "kind": "Bundle",
                "metadata": {"name": "bench", "version": "1.0.0", "sourceDateEpoch": 1767225600},
                "localRegistry": {"host": "registry.airgap.local:5000"}, "platforms": list(PLATFORMS),
                "extraImages": [{"ref": r, "reason": "benchmark"} for r in refs],
                "registries": [{"host": "quay.io", "mirrors": [f"{source.host}/quay.io"], "skipUpstream": True},
                               {"host": source.host, "insecure": True}]}
        (work / "bundle.yaml").write_text(json.dumps(spec))
        for args in (["--out", "root", "--cert", "--ca"], ["--out", "vendor", "--cert", "--ca-key", "root.key",
                                                           "--ca-cert", "root.crt"]):
            cli("keys", "generate", *args, cwd=work)
        (work / "policy.yaml").write_text("apiVersion: airgap-bundle.dev/v1\nkind: VerificationPolicy\n"
                                          "authorities:\n  - name: vendor\n    roots: [root.crt]\n")
        built = cli("build", "bundle.yaml", "--output", "bench.bundle.tar", "--key", "vendor.key", "--cert",
                    "vendor.crt", "--cache", str(work / "cache"), cwd=work)
        if built.returncode:
            sys.exit(built.stderr)
    finally:
        source.stop()
    extracted = cli("verify", "bench.bundle.tar", "--policy", "policy.yaml", "--extract", "extracted", cwd=work)
    if extracted.returncode:
        sys.exit(extracted.stderr)
    shutil.rmtree(work / "cache")
    return work / "bench.bundle.tar", work / "policy.yaml", refs


def tool(work: Path, bundle: Path, policy: Path, host: str) -> tuple[float, dict[str, int]]:
    start = time.perf_counter()
    done = cli("push", str(bundle), "--policy", str(policy), "--registry", host, "--insecure-registry", host,
               "--json", "--audit-log", str(work / "audit.jsonl"), cwd=work)
    elapsed = time.perf_counter() - start
    if done.returncode:
        sys.exit(done.stderr)
    return elapsed, json.loads(done.stdout)["totals"]


def skopeo(work: Path, refs: list[str], host: str) -> float:
    layout = work / "extracted" / "images"
    start = time.perf_counter()
    for ref in refs:
        subprocess.run(["skopeo", "copy", "--all", "--quiet", "--dest-tls-verify=false",
                        f"oci:{layout}:{ref}",
                        f"docker://{host}/{ref}"], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-push-"))
    work.mkdir(parents=True, exist_ok=True)
    bundle, policy, refs = make_bundle(work, args.images, 32 * MB, 16 * MB)
    size = bundle.stat().st_size
    print(f"bundle: {size / MB:,.0f} MB, {len(refs)} images x {len(PLATFORMS)} platforms", flush=True)
    times: dict[str, list[float]] = {"tool": [], "skopeo": []}
    for n in range(args.rounds):
        for name in ("tool", "skopeo") if n % 2 == 0 else ("skopeo", "tool"):
            target = start_registry(work / f"target-{name}-{n}")
            try:
                if name == "tool":
                    elapsed, totals = tool(work, bundle, policy, target.host)
                else:
                    elapsed = skopeo(work, refs, target.host)
                if name == "tool" and n == args.rounds - 1:
                    again, again_totals = tool(work, bundle, policy, target.host)
                    print(f"tool, everything already there: {again:.2f} s "
                          f"(uploaded {again_totals['uploaded']}, present {again_totals['present']})", flush=True)
            finally:
                target.stop()
                shutil.rmtree(target.storage, ignore_errors=True)
            times[name].append(elapsed)
            print(f"round {n + 1}: {name}: {elapsed:.2f} s ({size / MB / elapsed:,.0f} MB/s of bundle)"
                  + (f" totals {totals}" if name == "tool" else ""), flush=True)
    t, s = statistics.median(times["tool"]), statistics.median(times["skopeo"])
    print(f"median: tool {t:.2f} s, skopeo copy --all {s:.2f} s, ratio tool/skopeo {t / s:.2f}")


if __name__ == "__main__":
    main()
