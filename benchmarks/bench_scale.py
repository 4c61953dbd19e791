"""Benchmark at size: pull, build+sign, verify (and extract) and push a bundle of 1 GB, 5 GB, 20 GB, ...

For each size, against loopback `docker-registry` processes (nothing leaves 127.0.0.1):
- generate N two-platform images (linux/amd64, linux/arm64), one seeded random uncompressed layer per
  platform, so the unique bytes are exactly the size asked for; layers are streamed into a source
  registry (AES-CTR keystream, chunked PATCH upload), never held whole in memory;
- then five stages, each one CLI process:
    pull     `pull SPEC --cache CACHE` (the cache fills; the output is hard links, deleted after)
    build    `build SPEC --offline --cache CACHE --key ...` (the source registry is gone by then)
    verify   `verify BUNDLE --policy ...`
    extract  `verify BUNDLE --extract DIR` (with --extract only)
    push     `push BUNDLE --registry TARGET`, into a second, empty loopback registry
- and, in the same run, the machine's limits: sha256 (hashlib), disk write (1 MiB writes + fsync), disk
  read (1 MiB reads, the file's pages dropped from the page cache first) and a loopback GET of layers
  from the source registry (as bench_pull.py measures them).

Before verify, extract and push the bundle's pages are dropped from the page cache (posix_fadvise on
that one file), so each reads it from the disk as it would from media that just arrived, at whatever
size. Their floors include the rate at which the whole bundle is read from the disk, measured once
before verify (a plain read, evicted before and after): on a virtual machine's disk the 1 GiB probe
can be served by the host's cache and overstate what a 20 GB file reads at.

Per stage: wall time; peak RSS of the stage's process (ru_maxrss from os.wait4); peak disk use during
the stage, polled every 0.2 s both as `os.statvfs` of the work filesystem (counts every other writer on
a shared machine too) and as the stage's own files (unique inodes under the folders it writes, so a
blob hard-linked from the cache into the staging payload counts once); throughput, and the wall time
over the floor the machine's limits allow for the passes the stage makes over the data (PASSES; the
registry PUT limit is the rate at which the source registry took the generated images). Prints a
markdown table for docs/performance.md, one line per goal of issue 13, and writes JSON.

ru_maxrss of an exec'd child starts at the memory of the process that spawned it (Linux keeps the
high-water mark across exec), so every stage is spawned by a tiny spawner process started before this
one imports anything heavy; the spawner's own floor (`true` run through it) is printed.

Disk: a size needs room for the source registry plus the cache during the pull, then (the source
registry deleted) the cache plus the bundle during the build, then the bundle plus the target registry
(the cache deleted) during the push: about twice the size plus a margin. A size that cannot fit is
refused, saying what it needs. `--dry-run` checks the disk, measures the machine's limits briefly and
prints the plan with an expected time (from a previous `--json` results file with `--calibrate`, else
twice the floor of each stage: the goal).

    .venv/bin/python benchmarks/bench_scale.py --sizes 1G,5G [--images N] [--extract] [--json out.json]
    .venv/bin/python benchmarks/bench_scale.py --sizes 20G --dry-run --calibrate bench-scale.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from machine_limits import disk_limit, disk_read_limit, evict, read_limit, sha256_limit

REPO = Path(__file__).resolve().parent.parent
MB = 1_000_000
CHUNK = 1 << 20
PLATFORMS = ("linux/amd64", "linux/arm64")
LAYER_TARGET = 50 * MB           # default layer size: --images defaults to size / (2 x this)
MARGIN = 2 * 10**9               # free disk kept beyond the plan (keys, specs, registry metadata, others)
POLL = 0.2

# The spawner: starts each stage and reports its exit code, wall time and rusage (ru_maxrss is exact
# down to the spawner's own small footprint, which every child inherits at exec).
SPAWNER = r"""
import json, os, subprocess, sys, time
for line in sys.stdin:
    req = json.loads(line)
    with open(req["stdout"], "wb") as out, open(req["stderr"], "wb") as err:
        t = time.perf_counter()
        p = subprocess.Popen(req["argv"], cwd=req["cwd"], env=req["env"], stdout=out, stderr=err,
                             stdin=subprocess.DEVNULL)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t
    print(json.dumps({"rc": p.returncode, "wall": wall, "maxrss_kb": ru.ru_maxrss,
                      "utime": ru.ru_utime, "stime": ru.ru_stime}), flush=True)
"""


class Spawner:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", SPAWNER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def run(self, argv: list[str], cwd: Path, stdout: Path, stderr: Path) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        # Bytecode is written and reused, as on a user's machine (a CI setting may turn it off).
        env = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}, "PYTHONPATH": str(REPO)}
        self.proc.stdin.write(json.dumps({"argv": argv, "cwd": str(cwd), "env": env, "stdout": str(stdout),
                                          "stderr": str(stderr)}) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())  # type: ignore[no-any-return]

    def close(self) -> None:
        assert self.proc.stdin
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


# --- sizes, disk --------------------------------------------------------------------------------------

def parse_size(text: str) -> int:
    units = {"K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    text = text.strip().upper().removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def fmt_size(n: float) -> str:
    return f"{n / 10**9:.2f} GB" if n >= 10**9 else f"{n / MB:.0f} MB"


@dataclass(frozen=True)
class Plan:
    size: int
    images: int
    layer: int                  # bytes of each layer blob (one per image and platform)

    @property
    def unique(self) -> int:
        return self.images * len(PLATFORMS) * self.layer

    def disk_needed(self, extract: bool, online_build: bool) -> dict[str, int]:
        """Peak bytes on disk per phase (everything else is deleted before the next phase)."""
        u = self.unique
        phases = {"pull: source registry + cache": 2 * u,
                  "build: cache + bundle" + (" + source registry" if online_build else ""): (3 if online_build
                                                                                               else 2) * u,
                  "push: bundle + target registry": 2 * u}
        if extract:
            phases["extract: bundle + extracted copy"] = 2 * u
        return phases


def plan_for(size: int, images: int | None) -> Plan:
    n = images or max(1, math.ceil(size / (len(PLATFORMS) * LAYER_TARGET)))
    return Plan(size, n, size // (n * len(PLATFORMS)))


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def used_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def tree_bytes(paths: list[Path]) -> int:
    """Bytes allocated to the files under `paths`, each inode once (hard links count once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    stack = [p for p in paths if p.exists()]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
            elif (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


class DiskPoller:
    """Peak disk use above the start of a stage: statvfs of the filesystem, and the stage's own files."""

    def __init__(self, fs: Path, own: list[Path]) -> None:
        self.fs, self.own = fs, own
        self.base_fs, self.base_own = used_bytes(fs), tree_bytes(own)
        self.peak_fs = self.peak_own = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        self.peak_fs = max(self.peak_fs, used_bytes(self.fs) - self.base_fs)
        self.peak_own = max(self.peak_own, tree_bytes(self.own) - self.base_own)

    def _run(self) -> None:
        while not self._stop.wait(POLL):
            self._sample()

    def __enter__(self) -> DiskPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


# --- machine limits ------------------------------------------------------------------------------------

def loopback_limit(url: str, blobs: list[tuple[str, str]], budget: int = 512 * MB) -> float:
    """A plain streamed GET of layers from the registry, up to `budget` bytes; the best of two passes."""
    import requests

    best = 0.0
    for _ in range(2):
        start, n = time.perf_counter(), 0
        for repo, digest in blobs:
            with requests.get(f"{url}/v2/{repo}/blobs/{digest}", stream=True, timeout=120) as r:
                r.raise_for_status()
                for chunk in r.raw.stream(CHUNK, decode_content=False):
                    n += len(chunk)
            if n >= budget:
                break
        best = max(best, n / (time.perf_counter() - start) / MB)
    return best


# --- images --------------------------------------------------------------------------------------------

def layer_chunks(seed: str, total: int) -> Iterator[bytes]:
    """A tar of exactly `total` bytes (a multiple of 512, at least 2048) holding one file of seeded
    pseudo-random bytes (AES-CTR keystream: deterministic, incompressible, ~GB/s), chunk by chunk."""
    import tarfile

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    data = total - 3 * 512  # one header block, the data padded to a block, two zero blocks
    data -= data % 512
    info = tarfile.TarInfo(f"data/{hashlib.sha256(seed.encode()).hexdigest()[:12]}.bin")
    info.size, info.mtime, info.mode = data, 0, 0o644
    yield info.tobuf(tarfile.USTAR_FORMAT)
    stream = Cipher(algorithms.AES(hashlib.sha256(seed.encode()).digest()), modes.CTR(bytes(16))).encryptor()
    zeros = bytes(CHUNK)
    left = data
    while left:
        n = min(CHUNK, left)
        yield stream.update(zeros[:n])
        left -= n
    yield bytes(total - 512 - data)


def push_images(registry: Any, plan: Plan, jobs: int = 2) -> tuple[list[str], list[tuple[str, str]]]:
    """Generate and push the plan's images; returns (repositories, [(repo, layer digest)])."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.support.images import OCI_LAYER, Pusher, make_image, make_index

    layer_size = plan.layer - plan.layer % 512

    def one(i: int) -> tuple[str, list[tuple[str, str]]]:
        pusher = Pusher.to(registry)  # a session per thread
        repo = f"quay.io/bench/app{i:03d}"
        images, layers = [], []
        for p in PLATFORMS:
            digest, size = pusher.push_blob_chunks(repo, layer_chunks(f"scale/{i}/{p}", layer_size))
            layer = _Descriptor(OCI_LAYER, digest, size)
            image = make_image(p, [layer], label=f"app{i:03d}")  # type: ignore[list-item]
            pusher.push_blob(repo, image.config)
            pusher.push_manifest(repo, image.manifest, image.digest)
            images.append(image)
            layers.append((repo, digest))
        index = make_index(images)
        pusher.push_manifest(repo, index.manifest, "v1")
        return repo, layers

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        done = list(pool.map(one, range(plan.images)))
    return [r for r, _ in done], [layer for _, ls in done for layer in ls]


@dataclass(frozen=True)
class _Descriptor:
    """Stands in for a tests.support Blob where only the descriptor is needed (the bytes were streamed)."""

    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] | None = None

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "size": self.size, "digest": self.digest}


# --- one size ------------------------------------------------------------------------------------------

@dataclass
class Stage:
    name: str
    wall_s: float
    maxrss_mb: float
    cpu_s: float
    disk_fs_peak: int
    disk_own_peak: int
    bytes: int
    floor_s: float                 # the time the machine's limits allow (see PASSES)
    load: tuple[float, float]      # 1-minute load average at the start and at the end

    @property
    def mbps(self) -> float:
        return self.bytes / self.wall_s / MB

    @property
    def ratio(self) -> float:
        """Wall time over the floor the machine's limits allow (goal <= 2)."""
        return self.wall_s / self.floor_s


@dataclass
class SizeResult:
    size: int
    images: int
    layer: int
    unique: int
    generate_s: float = 0.0
    bundle_bytes: int = 0
    cache_bytes: int = 0
    limits: dict[str, float] = field(default_factory=dict)         # mean of before and after
    limits_before: dict[str, float] = field(default_factory=dict)
    limits_after: dict[str, float] = field(default_factory=dict)
    stages: list[Stage] = field(default_factory=list)


class Bench:
    def __init__(self, work: Path, spawner: Spawner, jobs: int) -> None:
        self.work, self.spawner, self.jobs = work, spawner, jobs

    def cli(self, name: str, *args: str, own: list[Path], nbytes: int, result: SizeResult) -> dict[str, Any]:
        out, err = self.work / f"{name}.stdout", self.work / f"{name}.stderr"
        load0 = os.getloadavg()[0]
        with DiskPoller(self.work, own) as disk:
            r = self.spawner.run([sys.executable, "-m", "bundler", *args], self.work, out, err)
        if r["rc"]:
            sys.exit(f"{name} failed (exit {r['rc']}): {err.read_text()[-3000:]}")
        stage = Stage(name, r["wall"], r["maxrss_kb"] / 1024, r["utime"] + r["stime"], disk.peak_fs,
                      disk.peak_own, nbytes, floor_seconds(name, nbytes, result.limits_before),
                      (load0, os.getloadavg()[0]))
        result.stages.append(stage)
        print(f"  {name:8} {stage.wall_s:7.1f} s  {stage.mbps:6.0f} MB/s (wall/floor {stage.ratio:.2f}: "
              f"{floor_text(name)})  RSS {stage.maxrss_mb:4.0f} MB  disk +{fmt_size(stage.disk_own_peak)} own, "
              f"+{fmt_size(stage.disk_fs_peak)} fs  load {stage.load[0]:.1f}-{stage.load[1]:.1f}", flush=True)
        return r

    def run(self, plan: Plan, extract: bool, online_build: bool) -> SizeResult:
        from tests.support.registry import start_registry

        result = SizeResult(plan.size, plan.images, plan.layer, plan.unique)
        work = self.work
        keys(work, self.spawner)
        source = start_registry(work / "source")
        try:
            t = time.perf_counter()
            repos, layers = push_images(source, plan)
            result.generate_s = time.perf_counter() - t
            print(f"  generated {plan.images} images x {len(PLATFORMS)} platforms, {fmt_size(plan.unique)} "
                  f"in {result.generate_s:.1f} s (load {os.getloadavg()[0]:.1f})", flush=True)
            write_spec(work, source.host, repos)
            result.limits_before = {**self.limits(work, source.url, layers),
                                    "registry PUT": plan.unique / result.generate_s / MB}
            lim = result.limits_before
            cache, pulled = work / "cache", work / "pulled"
            self.cli("pull", "pull", "bundle.yaml", "--output", str(pulled), "--cache", str(cache),
                     "--jobs", str(self.jobs), own=[cache, pulled], nbytes=plan.unique, result=result)
            shutil.rmtree(pulled)
            if not online_build:
                source.stop()
                shutil.rmtree(source.storage.parent, ignore_errors=True)
            out = work / "out"
            out.mkdir()
            bundle = out / "bench.bundle.tar"
            self.cli("build", "build", "bundle.yaml", "--output", str(bundle), "--key", "vendor.key", "--cert",
                     "vendor.crt", "--cache", str(cache), "--jobs", str(self.jobs),
                     *([] if online_build else ["--offline"]), own=[cache, out], nbytes=plan.unique, result=result)
        finally:
            source.stop()
            shutil.rmtree(source.storage.parent, ignore_errors=True)
        result.bundle_bytes = bundle.stat().st_size
        result.cache_bytes = tree_bytes([cache])
        shutil.rmtree(cache)  # the bundle alone from here on, as on the far side of the air gap
        b = result.bundle_bytes
        # The bundle itself read from the disk, once, before verify reads it: the read limit that holds
        # for this file at this size (the 1 GiB probe can be served by the host's cache of a VM disk).
        lim["bundle read"] = read_limit(bundle)
        print(f"  limits: bundle read {lim['bundle read']:.0f} MB/s (the whole bundle, from the disk)", flush=True)
        evict(bundle)
        self.cli("verify", "verify", str(bundle), "--policy", "policy.yaml", own=[out], nbytes=b, result=result)
        if extract:
            dest = work / "extracted"
            evict(bundle)
            self.cli("extract", "verify", str(bundle), "--policy", "policy.yaml", "--extract", str(dest),
                     own=[out, dest], nbytes=b, result=result)
            shutil.rmtree(dest)
        target = start_registry(work / "target")
        evict(bundle)
        try:
            self.cli("push", "push", str(bundle), "--policy", "policy.yaml", "--registry", target.host,
                     "--insecure-registry", target.host, "--jobs", str(self.jobs), "--json",
                     "--audit-log", str(work / "audit.jsonl"), own=[out, target.storage], nbytes=b, result=result)
        finally:
            target.stop()
            shutil.rmtree(target.storage.parent, ignore_errors=True)
        # The limits again at the end (the source registry is gone: its GET and PUT figures stand);
        # stages are judged against the mean of both, since neighbours on a shared machine come and go.
        after = self.limits(work, None, [])
        result.limits_after = {**lim, **after}  # the bundle read is measured once
        result.limits = {k: (v + result.limits_after[k]) / 2 for k, v in lim.items()}
        for stage in result.stages:
            stage.floor_s = floor_seconds(stage.name, stage.bytes, result.limits)
        shutil.rmtree(out)
        return result

    @staticmethod
    def limits(work: Path, url: str | None, layers: list[tuple[str, str]]) -> dict[str, float]:
        found = {"sha256": sha256_limit(), "disk write": disk_limit(work, 1024),
                 "disk read": disk_read_limit(work, 1024)}
        if url:
            found["loopback GET"] = loopback_limit(url, layers)
        print("  limits: " + ", ".join(f"{k} {v:.0f} MB/s" for k, v in found.items())
              + f" (load {os.getloadavg()[0]:.1f})", flush=True)
        return found


# The passes each stage makes over the data, and the machine limits each pass needs: a pass moves at
# its slowest limit, passes add up. verify --extract and push verify the whole bundle before they
# write or send a byte (docs/design.md "Verify"), so they make two passes by design; their first pass
# reads the bundle from the disk (it was evicted from the page cache), the second mostly from the page
# cache (not counted: the floor stays the lower one). The build is judged as one pass (issue 13's goal:
# hash while writing the archive).
PASSES: dict[str, tuple[tuple[str, ...], ...]] = {
    "generate": (("registry PUT",),),
    "pull": (("loopback GET", "sha256", "disk write"),),
    "build": (("sha256", "disk write"),),
    "verify": (("sha256", "bundle read"),),
    "extract": (("sha256", "bundle read"), ("sha256", "disk write")),
    "push": (("sha256", "bundle read"), ("loopback GET", "registry PUT")),
}


def floor_seconds(stage: str, nbytes: int, limits: dict[str, float]) -> float:
    return sum(nbytes / MB / min(limits[n] for n in needs) for needs in PASSES[stage])


def floor_text(stage: str) -> str:
    return " + ".join(needs[0] if len(needs) == 1 else f"min({', '.join(needs)})" for needs in PASSES[stage])


def keys(work: Path, spawner: Spawner) -> None:
    if (work / "vendor.key").exists():
        return
    for args in (["--out", "root", "--cert", "--ca"],
                 ["--out", "vendor", "--cert", "--ca-key", "root.key", "--ca-cert", "root.crt"]):
        r = spawner.run([sys.executable, "-m", "bundler", "keys", "generate", *args], work, work / "keys.out",
                        work / "keys.err")
        if r["rc"]:
            sys.exit((work / "keys.err").read_text())
    (work / "policy.yaml").write_text("apiVersion: airgap-bundle.dev/v1\nkind: VerificationPolicy\n"
                                      "authorities:\n  - name: vendor\n    roots: [root.crt]\n")


def write_spec(work: Path, source_host: str, repos: list[str]) -> None:
    """Images named quay.io/... (a colon-free path, as a relocated name needs) served by the source
    registry as a mirror; the lock of an earlier size is removed."""
    spec = {"apiVersion": "airgap-bundle.dev/v1alpha1", "kind": "Bundle",
            "metadata": {"name": "bench-scale", "version": "1.0.0", "sourceDateEpoch": 1767225600},
            "localRegistry": {"host": "registry.airgap.local:5000"}, "platforms": list(PLATFORMS),
            "extraImages": [{"ref": f"{r}:v1", "reason": "benchmark"} for r in repos],
            "registries": [{"host": "quay.io", "mirrors": [f"{source_host}/quay.io"], "skipUpstream": True},
                           {"host": source_host, "insecure": True}]}
    (work / "bundle.yaml").write_text(json.dumps(spec))
    (work / "bundle.lock").unlink(missing_ok=True)


# --- reporting -----------------------------------------------------------------------------------------

STAGE_WORDS = {"pull": "pull into the cache", "build": "build + sign", "verify": "verify",
               "extract": "verify --extract", "push": "push (verify, upload, readback)"}


def table(results: list[SizeResult]) -> str:
    rows = ["| size (images) | stage | wall | throughput | floor from the limits (passes) "
            "| wall / floor (goal <= 2) | peak RSS | peak disk: own files (filesystem) | load 1 min |",
            "|---|---|---|---|---|---|---|---|---|"]
    for res in results:
        for s in res.stages:
            rows.append(f"| {fmt_size(res.unique)} ({res.images}) | {STAGE_WORDS[s.name]} | {s.wall_s:.1f} s "
                        f"| {s.mbps:.0f} MB/s | {s.floor_s:.1f} s ({floor_text(s.name)}) | {s.ratio:.2f} "
                        f"| {s.maxrss_mb:.0f} MB | +{fmt_size(s.disk_own_peak)} (+{fmt_size(s.disk_fs_peak)}) "
                        f"| {s.load[0]:.1f}-{s.load[1]:.1f} |")
    rows += ["", "| size (images) | bundle | cache | disk beyond the bundle during build | generate | "
             "limits, MB/s: sha256 / disk write / disk read (before -> after) / bundle read / loopback GET / registry PUT |",
             "|---|---|---|---|---|---|"]
    for res in results:
        lims = " / ".join(f"{res.limits_before[k]:.0f}->{res.limits_after[k]:.0f}" for k in ("sha256", "disk write",
                                                                                             "disk read"))
        rows.append(f"| {fmt_size(res.unique)} ({res.images}) | {fmt_size(res.bundle_bytes)} "
                    f"| {fmt_size(res.cache_bytes)} | {extra_disk(res, 'build', res.bundle_bytes) / MB:+.0f} MB "
                    f"| {res.generate_s:.0f} s | {lims} / {res.limits['bundle read']:.0f} / {res.limits['loopback GET']:.0f} / "
                    f"{res.limits['registry PUT']:.0f} |")
    return "\n".join(rows)


def extra_disk(res: SizeResult, stage: str, expected: int) -> int:
    found = next((s for s in res.stages if s.name == stage), None)
    return found.disk_own_peak - expected if found else 0


def goals(results: list[SizeResult]) -> list[str]:
    """One line per goal of issue 13 ("Measured at size"), met or not."""
    lines = []
    stages = {s.name for r in results for s in r.stages}
    for name in sorted(stages):
        rss = [s.maxrss_mb for r in results for s in r.stages if s.name == name]
        flat = max(rss) - min(rss) <= max(20.0, 0.2 * min(rss))
        ok = max(rss) < 500 and flat
        lines.append(f"{'ok  ' if ok else 'MISS'} peak RSS of {name}: {min(rss):.0f}-{max(rss):.0f} MB "
                     f"(< 500 MB{', flat' if flat else ', NOT flat'} across sizes)")
    for r in results:
        for stage, expected in (("pull", r.cache_bytes), ("build", r.bundle_bytes)):
            extra = extra_disk(r, stage, expected)
            lines.append(f"{'ok  ' if extra <= 64 * MB else 'MISS'} {fmt_size(r.unique)}: disk during {stage} "
                         f"{extra / MB:+.0f} MB beyond the {'cache' if stage == 'pull' else 'bundle'} it writes "
                         "(<= 64 MB: hard links, no copies)")
        for s in r.stages:
            lines.append(f"{'ok  ' if s.ratio <= 2 else 'MISS'} {fmt_size(r.unique)}: {s.name} {s.wall_s:.1f} s "
                         f"= {s.ratio:.2f}x the floor of {s.floor_s:.1f} s ({floor_text(s.name)}) (<= 2x)")
    return lines


def machine(work: Path) -> dict[str, Any]:
    """Cores, memory and the work folder's file system and block device, from /proc and /sys."""
    mem = next((int(line.split()[1]) * 1024 for line in open("/proc/meminfo") if line.startswith("MemTotal:")), 0)
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                  if line.startswith("model name")), "?")
    mounts = [line.split()[:3] for line in open("/proc/mounts")]
    where = str(work.resolve())
    device, _, fstype = max((m for m in mounts if where == m[1] or where.startswith(m[1].rstrip("/") + "/")),
                            key=lambda m: len(m[1]), default=["?", "/", "?"])
    rotational = Path(f"/sys/block/{Path(device).name}/queue/rotational")
    return {"cpus": os.cpu_count(), "cpu": model, "memory_bytes": mem, "python": sys.version.split()[0],
            "disk": {"device": device, "fstype": fstype, "size_bytes": shutil.disk_usage(work).total,
                     "rotational": rotational.read_text().strip() if rotational.exists() else "?"}}


def expected_seconds(plan: Plan, limits: dict[str, float], calibration: dict[str, float] | None,
                     extract: bool) -> dict[str, float]:
    """Seconds per step: from calibrated MB/s (a previous run), else at the goal (twice the floor)."""
    steps = ["generate", "pull", "build", "verify", *(["extract"] if extract else []), "push"]
    out = {}
    for step in steps:
        rate = (calibration or {}).get(step)
        out[step] = plan.unique / MB / rate if rate else 2 * floor_seconds(step, plan.unique, limits)
    out["limits, twice"] = 2 * (1024 * CHUNK / MB / limits["disk write"] + 1024 * CHUNK / MB / limits["disk read"]
                                + 256 * CHUNK / MB / limits["sha256"])
    return out


def calibration_from(path: Path) -> dict[str, float]:
    """MB/s per step from the largest size in a results file."""
    data = json.loads(path.read_text())
    largest = max(data["results"], key=lambda r: r["unique"])
    rates = {s["name"]: s["bytes"] / s["wall_s"] / MB for s in largest["stages"]}
    rates["generate"] = largest["unique"] / largest["generate_s"] / MB
    return rates


# --- main ----------------------------------------------------------------------------------------------

def main() -> None:
    spawner = Spawner()  # first, while this process is still small (see the module docstring)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="example: .venv/bin/python benchmarks/bench_scale.py --sizes 1G,5G")
    ap.add_argument("--sizes", default="1G,5G", help="comma-separated sizes of unique image bytes (1G = 10^9)")
    ap.add_argument("--images", type=int, default=None,
                    help=f"images per size (default: size / {2 * LAYER_TARGET // MB} MB, layers of ~50 MB)")
    ap.add_argument("--extract", action="store_true", help="also time `verify --extract`")
    ap.add_argument("--online-build", action="store_true",
                    help="keep the source registry up during the build (resolves tags online; needs 3x the size)")
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a new temp folder)")
    ap.add_argument("--json", type=Path, default=Path("bench-scale.json"), help="results file to write")
    ap.add_argument("--dry-run", action="store_true", help="check disk, measure limits briefly, print the plan")
    ap.add_argument("--calibrate", type=Path, default=None,
                    help="a previous results file: expected times use its measured throughput")
    args = ap.parse_args()

    sys.path.insert(0, str(REPO))
    plans = [plan_for(parse_size(s), args.images) for s in args.sizes.split(",") if s.strip()]
    base = args.workdir or Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    free = free_bytes(base)
    floor = spawner.run(["true"], base, Path(os.devnull), Path(os.devnull))["maxrss_kb"] / 1024
    spawner.run([sys.executable, "-m", "compileall", "-q", str(REPO / "bundler")], base, Path(os.devnull),
                Path(os.devnull))  # stages start from bytecode, as installed code does
    print(f"machine: {machine(base)}; free disk at {base}: {fmt_size(free)}; load {os.getloadavg()}; "
          f"RSS floor of a spawned stage {floor:.0f} MB", flush=True)
    fits = []
    for plan in plans:
        phases = plan.disk_needed(args.extract, args.online_build)
        need = max(phases.values()) + MARGIN
        print(f"{fmt_size(plan.size)}: {plan.images} images x {len(PLATFORMS)} platforms, layers of "
              f"{fmt_size(plan.layer)}; peak disk {fmt_size(need)} (" + "; ".join(
                  f"{k} {fmt_size(v)}" for k, v in phases.items()) + f"; + {fmt_size(MARGIN)} margin)")
        if need > free:
            print(f"  refused: needs {fmt_size(need)} free at {base}, {fmt_size(free)} free; free space or pass "
                  "--workdir on a larger filesystem", flush=True)
            continue
        fits.append(plan)
    if args.dry_run:
        # Without a registry here, loopback GET and registry PUT are taken as the disk write figure.
        limits = {"sha256": sha256_limit(), "disk write": disk_limit(base, 1024), "disk read": disk_read_limit(base, 1024)}
        limits |= {"loopback GET": limits["disk write"], "registry PUT": limits["disk write"],
                   "bundle read": limits["disk read"]}
        calibration = calibration_from(args.calibrate) if args.calibrate else None
        print("limits now: " + ", ".join(f"{k} {v:.0f} MB/s" for k, v in limits.items())
              + (f"; calibrated from {args.calibrate}" if calibration else "; no --calibrate: at twice the floor (the goal)"))
        for plan in fits:
            steps = expected_seconds(plan, limits, calibration, args.extract)
            print(f"{fmt_size(plan.size)}: expected {sum(steps.values()) / 60:.1f} min ("
                  + ", ".join(f"{k} {v:.0f} s" for k, v in steps.items()) + ")")
        spawner.close()
        sys.exit(0 if len(fits) == len(plans) else 1)

    results: list[SizeResult] = []
    try:
        for plan in fits:
            work = Path(tempfile.mkdtemp(prefix="bench-scale-", dir=base))
            print(f"{fmt_size(plan.size)} in {work}", flush=True)
            try:
                results.append(Bench(work, spawner, args.jobs).run(plan, args.extract, args.online_build))
            finally:
                shutil.rmtree(work, ignore_errors=True)
    finally:
        spawner.close()
    doc = {"machine": machine(base), "rss_floor_mb": floor, "argv": sys.argv[1:], "goals": goals(results),
           "results": [{**asdict(r), "stages": [{**asdict(s), "mbps": s.mbps, "ratio": s.ratio} for s in r.stages]}
                       for r in results]}
    args.json.write_text(json.dumps(doc, indent=2) + "\n")
    print("\n" + table(results) + "\n\n" + "\n".join(goals(results)))
    print(f"\nresults: {args.json}")
    if len(fits) < len(plans):
        sys.exit(1)


if __name__ == "__main__":
    main()
