"""Benchmark: build and verify a ~1 GB bundle; compare with `tar -cf` and `openssl dgst -sha256`.

Run:  .venv/bin/python benchmarks/bench_verify.py [--size-mb 1024] [--files 16] [--dir /tmp]

Measures, in one run on the same files:
- archive build (`archive.write`) vs `tar -cf` of the same files;
- `verify` (signature checks + sha256 of every member) vs `openssl dgst -sha256` of the bundle file
  (the yardstick: OpenSSL's SHA-NI code; coreutils sha256sum is several times slower here);
- `verify_and_extract` (hashes twice: verify, then extract while hashing again);
- peak RSS of verify in a fresh subprocess (VmHWM; resource.getrusage where /proc is missing), for the goal "under 200 MB, flat".
- with --parts-mib N: `split` into N MiB parts (time, peak RSS, disk beside the bundle), then verify and
  verify + extract of the parts index against the same steps on the single file (docs/performance.md "Parts").
Files are random (incompressible, like image layers). The page cache is warmed before each timing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bundler import archive, keys  # noqa: E402
from tests.support.bundles import EPOCH, Pki, write_policy  # noqa: E402

CHILD = """
import datetime, json, resource, sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
from bundler import keys, parts, verify
trust = keys.load_trust({policy!r})
now = datetime.datetime.now(datetime.timezone.utc)
t = time.perf_counter()
if {split!r}:  # split into parts of this many bytes
    members = len(parts.split(Path({bundle!r}), {split!r}, keys.load_signer({key!r}), out_dir=Path({out!r})).index.parts)
else:
    with parts.open_bundle({bundle!r}, trust, now) as source:  # a bundle file, or a parts index
        if {extract!r}:
            members = verify.verify_and_extract(source, trust, {extract!r}, now=now).members_checked
        else:
            members = verify.require(verify.verify(source, trust, now=now)).members_checked
elapsed = time.perf_counter() - t
# VmHWM: this process image's peak RSS. (ru_maxrss would carry over the parent's RSS at fork time.)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")]
peak_kb = int(hwm[0].split()[1]) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"seconds": elapsed, "members": members, "maxrss_mb": peak_kb / 1024}}))
"""


def timed(cmd: list[str], **kw: object) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]
    return time.perf_counter() - t


def warm(path: Path) -> None:
    with open(path, "rb", buffering=0) as f:
        while f.read(1 << 22):
            pass


def child(bundle: Path, policy: Path, extract: str = "", *, split: int = 0, key: Path | None = None,
          out: Path | None = None) -> dict[str, float]:
    import json

    code = CHILD.format(repo=str(REPO), policy=str(policy), bundle=str(bundle), extract=extract, split=split,
                        key=str(key), out=str(out))
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def disk_used(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def bench_parts(root: Path, bundle: Path, policy: Path, key: Path, part_mib: int) -> None:
    """Split, then verify the parts against the single file; every step a fresh process, warm cache."""
    out = root / "parts"
    out.mkdir()
    warm(bundle)
    before = disk_used(root)
    split = child(bundle, policy, split=part_mib << 20, key=key, out=out)
    (root / "gnu").mkdir()
    warm(bundle)
    gnu_s = timed(["split", "-b", f"{part_mib}M", str(bundle), str(root / "gnu" / "x.")])
    shutil.rmtree(root / "gnu")
    index = out / (bundle.name + ".parts.json")
    for p in out.iterdir():
        warm(p)
    single = min((child(bundle, policy) for _ in range(2)), key=lambda r: r["seconds"])
    joined = min((child(index, policy) for _ in range(2)), key=lambda r: r["seconds"])
    extract_single = child(bundle, policy, str(root / "out-single"))
    shutil.rmtree(root / "out-single")
    extract_joined = child(index, policy, str(root / "out-parts"))
    shutil.rmtree(root / "out-parts")
    mib = 1 << 20
    print(f"\nparts: {int(split['members'])} parts of {part_mib} MiB; disk: bundle {bundle.stat().st_size / mib:.0f} MiB, "
          f"bundle + parts {(bundle.stat().st_size + disk_used(out)) / mib:.0f} MiB (the rest of the folder: "
          f"{(before - bundle.stat().st_size) / mib:.0f} MiB of payload)")
    print("| step | parts | single file | ratio |")
    print("|---|---|---|---|")
    print(f"| split (read once, hash twice, write + fsync parts, sign the index) | {split['seconds']:.2f} s, peak RSS "
          f"{split['maxrss_mb']:.0f} MB | GNU `split -b` (no hash, no fsync) {gnu_s:.2f} s | "
          f"{split['seconds'] / gnu_s:.2f}x |")
    print(f"| verify | {joined['seconds']:.2f} s | {single['seconds']:.2f} s | {joined['seconds'] / single['seconds']:.2f}x |")
    print(f"| verify + extract | {extract_joined['seconds']:.2f} s | {extract_single['seconds']:.2f} s | "
          f"{extract_joined['seconds'] / extract_single['seconds']:.2f}x |")
    print(f"| peak RSS, verify | {joined['maxrss_mb']:.0f} MB | {single['maxrss_mb']:.0f} MB | |")
    print(f"| peak RSS, verify + extract | {extract_joined['maxrss_mb']:.0f} MB | {extract_single['maxrss_mb']:.0f} MB | |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--dir", default=None, help="scratch folder (default: a temp folder, removed afterwards)")
    ap.add_argument("--parts-mib", type=int, default=0, help="also split into parts of this many MiB and verify them")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-verify-", dir=args.dir))
    try:
        src = root / "payload"
        (src / "images" / "blobs" / "sha256").mkdir(parents=True)
        per_file = args.size_mb * (1 << 20) // args.files
        members: list[tuple[str, archive.Source]] = []
        import hashlib

        print(f"generating {args.files} x {per_file >> 20} MiB of random data in {root} ...", flush=True)
        for _i in range(args.files):
            data = os.urandom(per_file)
            digest = hashlib.sha256(data).hexdigest()
            path = src / "images" / "blobs" / "sha256" / digest
            path.write_bytes(data)
            members.append((f"images/blobs/sha256/{digest}", path))
            del data
        chart = src / "charts" / "demo-1.0.0.tgz"
        chart.parent.mkdir()
        chart.write_bytes(b"chart")
        members.append(("charts/demo-1.0.0.tgz", chart))

        # The statement lists every member (size, sha256), hashed from disk as the pipeline would.
        from bundler import attest, sign
        from bundler.bom import PREDICATE_TYPE, Bom, ChartEntry, FileEntry

        entries = []
        for name, path in members:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            entries.append(FileEntry(name, Path(path).stat().st_size, h.hexdigest()))
        bom = Bom("bench", "1.0.0", EPOCH, "0.1.0", "sha256:" + "5" * 64, "registry.local:5000",
                  charts=(ChartEntry("demo", "1.0.0", "charts/demo-1.0.0.tgz",
                                     "sha256:" + hashlib.sha256(b"chart").hexdigest()),),
                  files=tuple(entries))
        statement = attest.statement(bom.subjects(), PREDICATE_TYPE, bom.to_dict())
        pki = Pki(root / "pki")
        signer, pub = pki.signer("vendor")
        policy = write_policy(root / "policy.yaml", {"vendor": {"keys": [pub]}})
        keys.load_trust(policy)

        for _, path in members:
            warm(Path(path))
        bundle = root / "bench.bundle.tar"
        t = time.perf_counter()
        archive.write([(archive.STATEMENT, statement), *members,
                       (archive.signature_name("vendor"), sign.sign(statement, signer, "vendor"))], bundle, EPOCH)
        build_s = time.perf_counter() - t
        tar_s = timed(["tar", "-cf", str(root / "plain.tar"), "-C", str(src), "."])
        (root / "plain.tar").unlink()
        size_mb = bundle.stat().st_size / (1 << 20)

        warm(bundle)
        openssl_s = min(timed(["openssl", "dgst", "-sha256", str(bundle)]) for _ in range(2))
        verify = min((child(bundle, policy, "") for _ in range(2)), key=lambda r: r["seconds"])
        shutil.rmtree(root / "out", ignore_errors=True)
        extract = child(bundle, policy, str(root / "out"))
        shutil.rmtree(root / "out", ignore_errors=True)

        print(f"\nbundle: {size_mb:.0f} MiB, {verify['members']} payload members, {os.cpu_count()} CPUs")
        print("| step | airgap-bundle | yardstick | ratio |")
        print("|---|---|---|---|")
        print(f"| build archive | {build_s:.2f} s | `tar -cf` {tar_s:.2f} s | {build_s / tar_s:.2f}x |")
        print(f"| verify | {verify['seconds']:.2f} s | `openssl dgst -sha256` {openssl_s:.2f} s | "
              f"{verify['seconds'] / openssl_s:.2f}x |")
        print(f"| verify + extract | {extract['seconds']:.2f} s | `openssl dgst -sha256` {openssl_s:.2f} s | "
              f"{extract['seconds'] / openssl_s:.2f}x |")
        print(f"| peak RSS, verify (whole process) | {verify['maxrss_mb']:.0f} MB | goal < 200 MB | |")
        print(f"| peak RSS, verify + extract | {extract['maxrss_mb']:.0f} MB | goal < 200 MB | |")
        if args.parts_mib:
            bench_parts(root, bundle, policy, root / "pki" / "vendor.key", args.parts_mib)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
