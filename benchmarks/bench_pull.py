"""Benchmark: `airgap-bundle pull` vs `skopeo copy --all`, against one loopback docker-registry.

20 images x 2 platforms (linux/amd64, linux/arm64), ~1 GB unique: a shared 48 MB base layer plus one
24 MB layer per image and platform (uncompressed tar, seeded random bytes; built and pushed once).
In each round, alternating: the tool (one CLI run, fresh cache and output) and skopeo (`copy --all`
image by image into one OCI layout). Then: warm reruns of the tool (nothing changed; --warm-runs of them,
whole processes, min and median) beside what any such process costs before it does anything (a bare
interpreter, and one that only imports the command line and the pull modules), and, once, a rerun after
one image changed (only its new blobs may be fetched). The machine's limits are measured in the
same run: sha256 throughput (hashlib), disk write (1 MiB writes + fsync) and loopback transfer (a plain
streamed GET of the base layer from the same registry).

    .venv/bin/python benchmarks/bench_pull.py [--rounds 2] [--workdir /tmp/bench-pull]
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from machine_limits import disk_limit, sha256_limit, tool_env  # noqa: E402

from tests.support.images import Blob, Index, Pusher, make_image, make_index, make_layer  # noqa: E402
from tests.support.registry import TestRegistry, start_registry  # noqa: E402

MB = 1_000_000
tool_env(REPO)  # bytecode compiled before anything is timed
PLATFORMS = ("linux/amd64", "linux/arm64")


def base_layer(size: int) -> Blob:
    """The base layer every image shares (seeded: the same bytes in every run)."""
    return make_layer("bench-base", size, compress=False)


def image_index(i: int, own: int, base: Blob, version: int = 1) -> Index:
    """Image `i` for every platform: `base`, then its own layer of `own` bytes, seeded by image, platform
    and `version` (a new version: new own layers)."""
    return make_index([make_image(p, [base, make_layer(f"bench/{i}/{p}/v{version}", own, compress=False)])
                       for p in PLATFORMS])


def build_and_push(pusher: Pusher, n: int, own: int, base_size: int, version: int = 1) -> list[str]:
    """Push images bench/app00 ... as :v1 (the first at `version`, the others at 1); return the repositories."""
    base = base_layer(base_size)
    repos = []
    for i in range(n):
        pusher.push(f"bench/app{i:02d}", image_index(i, own, base, version if i == 0 else 1), "v1")
        repos.append(f"bench/app{i:02d}")
    return repos


def loopback_limit(url: str, repo: str, digest: str) -> float:
    best = 0.0
    for _ in range(3):
        start, n = time.perf_counter(), 0
        with requests.get(f"{url}/v2/{repo}/blobs/{digest}", stream=True, timeout=60) as r:
            for chunk in r.raw.stream(1 << 20, decode_content=False):
                n += len(chunk)
        best = max(best, n / (time.perf_counter() - start) / MB)
    return best


def run_tool(host: str, refs: list[str], cache: Path, out: Path, jobs: int) -> float:
    os.sync()  # no run pays for the write-back of the one before it (the other tool's, or the image push)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bundler", "pull", "--insecure-registry", host, "--jobs", str(jobs),
                    "--cache", str(cache), "--output", str(out), *refs], check=True, capture_output=True,
                   env=tool_env(REPO))
    return time.perf_counter() - start


def run_skopeo(host: str, repos: list[str], out: Path) -> float:
    os.sync()
    start = time.perf_counter()
    for repo in repos:
        subprocess.run(["skopeo", "copy", "--quiet", "--all", "--src-tls-verify=false", f"docker://{host}/{repo}:v1",
                        f"oci:{out}:{host}/{repo}:v1"], check=True, capture_output=True)
    return time.perf_counter() - start


def process_floor(code: str, runs: int) -> list[float]:
    """Wall times of `python -c CODE`: what every run of the tool pays before its own work."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=tool_env(REPO))
        times.append(time.perf_counter() - start)
    return times


def manifest_answers(host: str, repos: list[str], threads: int = 4) -> float:
    """Seconds the registry takes to answer one manifest GET per repository, `threads` at a time on
    kept-alive connections, from a bare http.client loop: what a warm pull must wait for at least."""
    accept = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"

    def get(batch: list[str]) -> None:
        conn = http.client.HTTPConnection(host, timeout=30)
        for repo in batch:
            conn.request("GET", f"/v2/{repo}/manifests/v1", headers={"Accept": accept})
            conn.getresponse().read()
        conn.close()

    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(get, [repos[i::threads] for i in range(threads)]))
        best = min(best, time.perf_counter() - start)
    return best


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@contextmanager
def registry_workdir(workdir: str | None, prefix: str) -> Iterator[tuple[Path, TestRegistry]]:
    """A work folder (removed afterwards unless given) with a loopback docker-registry in it."""
    work = Path(workdir or tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    reg = start_registry(work / "registry")
    try:
        yield work, reg
    finally:
        reg.stop()
        if not workdir:
            shutil.rmtree(work, ignore_errors=True)


def image_arguments(rounds: int | None, *, images: int = 20, layer_mb: int = 24,
                    base_mb: int = 48) -> argparse.ArgumentParser:
    """The options of this benchmark's data set, shared with bench_build.py and bench_update.py (which
    has its own sizes, and no --rounds when `rounds` is None)."""
    parser = argparse.ArgumentParser()
    if rounds is not None:
        parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--images", type=int, default=images)
    parser.add_argument("--layer-mb", type=int, default=layer_mb)
    parser.add_argument("--base-mb", type=int, default=base_mb)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--workdir", default=None)
    return parser


def main() -> None:
    parser = image_arguments(rounds=2)
    parser.add_argument("--warm-runs", type=int, default=5)
    args = parser.parse_args()
    with registry_workdir(args.workdir, "bench-pull-") as (work, reg):
        t0 = time.perf_counter()
        repos = build_and_push(Pusher.to(reg), args.images, args.layer_mb * MB, args.base_mb * MB)
        refs = [f"{reg.host}/{r}:v1" for r in repos]
        print(f"pushed {len(repos)} images x {len(PLATFORMS)} platforms in {time.perf_counter() - t0:.1f}s")
        unique = (args.base_mb + args.images * len(PLATFORMS) * args.layer_mb) * MB
        base_digest = base_layer(args.base_mb * MB).digest
        tool_times, skopeo_times = [], []
        for n in range(args.rounds):
            for d in ("t-cache", "t-out", "s-out"):
                shutil.rmtree(work / f"{d}{n}", ignore_errors=True)
            tool_times.append(run_tool(reg.host, refs, work / f"t-cache{n}", work / f"t-out{n}", args.jobs))
            skopeo_times.append(run_skopeo(reg.host, repos, work / f"s-out{n}"))
            print(f"round {n}: tool {tool_times[-1]:.2f}s  skopeo {skopeo_times[-1]:.2f}s")
        last = args.rounds - 1
        stored = tree_bytes(work / f"t-out{last}")
        warm_times = [run_tool(reg.host, refs, work / f"t-cache{last}", work / f"t-out{last}", args.jobs)
                      for _ in range(args.warm_runs)]
        bare = process_floor("pass", args.warm_runs)
        imports = process_floor("import bundler.cli, bundler.pull", args.warm_runs)
        stack = process_floor("import click, http.client, json, logging", args.warm_runs)
        answers = manifest_answers(reg.host, repos)
        before = {p.name for p in (work / f"t-cache{last}/blobs/sha256").iterdir() if p.is_file()}
        build_and_push(Pusher.to(reg), 1, args.layer_mb * MB, args.base_mb * MB, version=2)
        changed = run_tool(reg.host, refs, work / f"t-cache{last}", work / f"t-out{last}", args.jobs)
        after = {p.name for p in (work / f"t-cache{last}/blobs/sha256").iterdir() if p.is_file()}
        new = after - before
        new_bytes = sum((work / f"t-cache{last}/blobs/sha256" / h).stat().st_size for h in new)
        limits = {"sha256": sha256_limit(), "disk write+fsync": disk_limit(work),
                  "loopback GET": loopback_limit(reg.url, repos[0], base_digest)}
        tool, skopeo = statistics.median(tool_times), statistics.median(skopeo_times)
        slowest = min(limits.values())
        print(f"unique content: {unique / MB:.0f} MB (layout on disk {stored / MB:.0f} MB)")
        print(f"tool (median of {args.rounds}): {tool:.2f}s = {unique / tool / MB:.0f} MB/s; "
              f"skopeo copy --all: {skopeo:.2f}s; ratio skopeo/tool = {skopeo / tool:.2f}x")
        print("limits: " + ", ".join(f"{k} {v:.0f} MB/s" for k, v in limits.items())
              + f"; tool = {unique / tool / MB / slowest * 100:.0f}% of the slowest")
        warm, warm_median = min(warm_times), statistics.median(warm_times)
        print(f"warm rerun, whole process ({args.warm_runs} runs): min {warm:.3f}s = {warm / tool * 100:.1f}% of cold, "
              f"median {warm_median:.3f}s = {warm_median / tool * 100:.1f}%")
        print(f"  of which any process pays: bare interpreter {min(bare):.3f}s, interpreter + imports of the "
              f"command line and pull modules {min(imports):.3f}s (min of {args.warm_runs}); load average "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        floor = min(stack) + answers
        print(f"  floor of any warm pull here: a process that loads click and http.client {min(stack):.3f}s + the "
              f"registry's answers to {len(repos)} manifest GETs (4 at a time, bare) {answers:.3f}s = {floor:.3f}s "
              f"= {floor / tool * 100:.1f}% of cold")
        print(f"one image changed: {changed:.2f}s, {len(new)} new blobs, {new_bytes / MB:.1f} MB fetched "
              f"(expected 2 layers of {args.layer_mb} MB + 2 configs + manifests)")


if __name__ == "__main__":
    main()
