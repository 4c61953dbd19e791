"""Benchmark: build and verify a ~1 GB bundle; compare with `tar -cf` and `openssl dgst -sha256`.

Run:  .venv/bin/python benchmarks/bench_verify.py [--size-mb 1024] [--files 16] [--dir /tmp]

Measures, in one run on the same files:
- archive build (`archive.write_hashed`: each member hashed for the statement while it is written, as
  `build` does) vs `tar -cf` of the same files;
- `verify` (signature checks + sha256 of every member) vs `openssl dgst -sha256` of the bundle file
  (the yardstick: OpenSSL's SHA-NI code; coreutils sha256sum is several times slower here);
- `verify_and_extract` (hashes twice: verify, then extract while hashing again);
- peak RSS of verify in a fresh subprocess (VmHWM; resource.getrusage where /proc is missing), for the goal "under 200 MB, flat".
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
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bundler import archive, keys  # noqa: E402
from tests.support.bundles import EPOCH, Pki, write_policy  # noqa: E402

CHILD = """
import datetime, json, resource, sys, time
sys.path.insert(0, {repo!r})
from bundler import keys, verify
trust = keys.load_trust({policy!r})
now = datetime.datetime.now(datetime.timezone.utc)
t = time.perf_counter()
if {extract!r}:
    r = verify.verify_and_extract({bundle!r}, trust, {extract!r}, now=now)
else:
    r = verify.require(verify.verify({bundle!r}, trust, now=now))
elapsed = time.perf_counter() - t
# VmHWM: this process image's peak RSS. (ru_maxrss would carry over the parent's RSS at fork time.)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")]
peak_kb = int(hwm[0].split()[1]) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"seconds": elapsed, "members": r.members_checked, "maxrss_mb": peak_kb / 1024}}))
"""


def timed(cmd: list[str], **kw: object) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]
    return time.perf_counter() - t


def warm(path: Path) -> None:
    with open(path, "rb", buffering=0) as f:
        while f.read(1 << 22):
            pass


def child(bundle: Path, policy: Path, extract: str) -> dict[str, float]:
    import json

    code = CHILD.format(repo=str(REPO), policy=str(policy), bundle=str(bundle), extract=extract)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--dir", default=None, help="scratch folder (default: a temp folder, removed afterwards)")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-verify-", dir=args.dir))
    try:
        src = root / "payload"
        (src / "images" / "blobs" / "sha256").mkdir(parents=True)
        per_file = args.size_mb * (1 << 20) // args.files
        members: list[tuple[str, Path | bytes]] = []
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

        # The statement lists every member (size, sha256), hashed while the archive is written, as `build` does.
        from bundler import attest, sign
        from bundler.bom import PREDICATE_TYPE, Bom, ChartEntry, FileEntry

        def statement_of(written: Sequence[archive.Written]) -> bytes:
            bom = Bom("bench", "1.0.0", EPOCH, "0.1.0", "sha256:" + "5" * 64, "registry.local:5000",
                      charts=(ChartEntry("demo", "1.0.0", "charts/demo-1.0.0.tgz",
                                         "sha256:" + hashlib.sha256(b"chart").hexdigest()),),
                      files=tuple(FileEntry(w.name, w.size, w.sha256) for w in written))
            return attest.statement(bom.subjects(), PREDICATE_TYPE, bom.to_dict())

        pki = Pki(root / "pki")
        signer, pub = pki.signer("vendor")
        policy = write_policy(root / "policy.yaml", {"vendor": {"keys": [pub]}})
        keys.load_trust(policy)

        for _, path in members:
            warm(Path(path))
        bundle = root / "bench.bundle.tar"
        sign.sign(b"{}", signer, "vendor")  # the signing libraries' imports are not the writer's time
        t = time.perf_counter()
        archive.write_hashed(members, bundle, EPOCH, statement=statement_of,
                             signatures=lambda s: [(archive.signature_name("vendor"), sign.sign(s, signer, "vendor"))])
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
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
