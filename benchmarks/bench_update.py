"""Benchmark: an update bundle (`build --base`) against the full bundle, when one image of 200 changes.

200 images x 2 platforms (linux/amd64, linux/arm64) on one loopback docker-registry, reached as a mirror
of quay.io: bench_pull.py's images with other sizes, a shared 8 MB base layer plus one ~1 MB own layer per
image and platform (uncompressed tar of seeded random bytes; built and pushed once). The tool runs as a
whole process (`python -m bundler build`), signed, as a release engineer runs it:

1. full build of version 1 (cold cache: it pulls everything);
2. one image changes (a new tag with new own layers), and the spec names it;
3. full build of version 2 (warm cache: only the changed image is fetched);
4. update build of version 2 with `--base` version 1 (warm cache; includes verifying the base fully);
5. the same update build on an empty cache, as on a fresh CI runner that has the previous bundle but
   not its images: it downloads only what the base lacks (and every manifest);
6. `verify --base` of the pair, and `verify` of the full version 2, for comparison.

It reports each bundle's size and each step's wall time, and checks the update carries exactly the
changed image's new blobs.

    .venv/bin/python benchmarks/bench_update.py [--images 200] [--layer-mb 1] [--base-mb 8] [--jobs 8]
        [--workdir /tmp/bench-update]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_pull import (  # noqa: E402
    MB,
    PLATFORMS,
    base_layer,
    build_and_push,
    image_arguments,
    image_index,
    registry_workdir,
    tree_bytes,
)
from machine_limits import tool_env  # noqa: E402

from tests.support.images import Pusher  # noqa: E402

LOCAL = "registry.airgap.local:5000"


def cli(*args: str, cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bundler", *args], cwd=cwd, capture_output=True, text=True,
                          env=tool_env(REPO))
    if done.returncode != 0:
        raise SystemExit(f"airgap-bundle {' '.join(args)}: exit {done.returncode}\n{done.stderr}")
    return time.perf_counter() - start


def write_spec(directory: Path, host: str, refs: list[str], version: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    spec = {"apiVersion": "airgap-bundle.dev/v1alpha1", "kind": "Bundle",
            "metadata": {"name": "bench", "version": version, "sourceDateEpoch": 1767225600},
            "localRegistry": {"host": LOCAL}, "platforms": list(PLATFORMS),
            "extraImages": [{"ref": r, "reason": "benchmark"} for r in refs],
            "registries": [{"host": "quay.io", "mirrors": [host], "skipUpstream": True},
                           {"host": host, "insecure": True}]}
    (directory / "bundle.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


def blobs(bundle: Path) -> set[str]:
    with tarfile.open(bundle) as tar:
        return {m.name.rsplit("/", 1)[1] for m in tar.getmembers() if m.name.startswith("images/blobs/sha256/")}


def main() -> None:
    args = image_arguments(rounds=None, images=200, layer_mb=1, base_mb=8).parse_args()
    with registry_workdir(args.workdir, "bench-update-") as (work, reg):
        own, base_size = args.layer_mb * MB, args.base_mb * MB
        pusher = Pusher.to(reg)
        t0 = time.perf_counter()
        repos = build_and_push(pusher, args.images, own, base_size)
        refs = [f"quay.io/{r}:v1" for r in repos]  # through the mirror on the loopback registry
        changed = image_index(0, own, base_layer(base_size), version=2)  # a new tag with new own layers
        pusher.push(repos[0], changed, "v2")
        print(f"pushed {args.images} images x {len(PLATFORMS)} platforms (+1 changed) in {time.perf_counter() - t0:.1f}s")

        for name in ("vendor-root", "vendor"):
            extra = ["--ca", "--valid-days", "365"] if name == "vendor-root" else ["--ca-key", "vendor-root.key",
                                                                                   "--ca-cert", "vendor-root.crt"]
            cli("keys", "generate", "--out", name, "--cert", *extra, cwd=work)
        (work / "policy.yaml").write_text("apiVersion: airgap-bundle.dev/v1\nkind: VerificationPolicy\n"
                                          "authorities:\n  - name: vendor\n    roots: [vendor-root.crt]\n")
        keys = ["--key", str(work / "vendor.key"), "--cert", str(work / "vendor.crt"), "--jobs", str(args.jobs)]
        sign = [*keys, "--cache", str(work / "cache")]
        write_spec(work / "v1", reg.host, refs, "1.0.0")
        write_spec(work / "v2", reg.host, [f"quay.io/{repos[0]}:v2", *refs[1:]], "1.1.0")
        v1, full, upd = work / "v1/bench.bundle.tar", work / "v2/full.bundle.tar", work / "v2/update.bundle.tar"
        times = {
            "full build v1 (cold cache)": cli("build", "bundle.yaml", "-o", str(v1), *sign, cwd=work / "v1"),
            "full build v2 (warm cache)": cli("build", "bundle.yaml", "-o", str(full), *sign, cwd=work / "v2"),
            "update build v2 --base v1 (warm cache, base verified)":
                cli("build", "bundle.yaml", "-o", str(upd), *sign, "--base", str(v1), "--base-policy",
                    str(work / "policy.yaml"), cwd=work / "v2"),
            "update build v2 --base v1 (empty cache, base verified)":
                cli("build", "bundle.yaml", "-o", str(work / "v2/update-empty-cache.bundle.tar"),
                    *keys, "--cache", str(work / "empty-cache"), "--base", str(v1),
                    "--base-policy", str(work / "policy.yaml"), cwd=work / "v2"),
            "verify full v2": cli("verify", str(full), "--policy", "policy.yaml", cwd=work),
            "verify update v2 --base v1": cli("verify", str(upd), "--base", str(v1), "--policy", "policy.yaml",
                                              cwd=work),
        }
        new = {d.removeprefix("sha256:") for d in [changed.digest, *(i.digest for i in changed.images),
                                                   *(b.digest for i in changed.images for b in i.blobs())]}
        carried = blobs(upd)
        assert carried == new - blobs(v1), f"update carries {len(carried)} blobs, expected {len(new - blobs(v1))}"
        with tarfile.open(upd) as tar:
            statement = json.load(tar.extractfile("bundle.intoto.json"))  # type: ignore[arg-type]
        taken = statement["predicate"]["base"]["files"]
        sizes = {"full bundle v1": v1.stat().st_size, "full bundle v2": full.stat().st_size,
                 "update bundle v2": upd.stat().st_size}
        print(f"{args.images} images x {len(PLATFORMS)} platforms, own layer {args.layer_mb} MB, "
              f"shared base layer {args.base_mb} MB")
        for k, v in sizes.items():
            print(f"size  {k}: {v:,} bytes ({v / MB:.1f} MB)")
        print(f"update = {sizes['update bundle v2'] / sizes['full bundle v2'] * 100:.2f}% of the full bundle; "
              f"carries {len(carried)} blobs, takes {len(taken)} ({sum(f['size'] for f in taken) / MB:.1f} MB) "
              f"from the base; statement {len(json.dumps(statement)) / 1000:.0f} kB")
        first, empty = tree_bytes(work / "cache"), tree_bytes(work / "empty-cache")
        print(f"cache: {first / MB:.1f} MB after the builds of both versions; the update build on an empty cache "
              f"downloaded {empty / MB:.1f} MB ({empty / first * 100:.2f}%)")
        for k, t in times.items():
            print(f"time  {k}: {t:.1f}s")


if __name__ == "__main__":
    main()
