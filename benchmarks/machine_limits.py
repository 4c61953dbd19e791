"""The machine's own limits, measured by the benchmarks in the same run as the tool they judge.

sha256 throughput (OpenSSL through hashlib, 64 MiB buffers) and disk write (1 MiB writes, then fsync).
The loopback transfer limit depends on what is served, so each benchmark measures it from its own
registry.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

MB = 1_000_000
CHUNK = 1 << 20


def sha256_limit() -> float:
    """MB/s of sha256 on one core."""
    buf = os.urandom(64 << 20)
    start = time.perf_counter()
    for _ in range(4):
        hashlib.sha256(buf).digest()
    return 4 * len(buf) / (time.perf_counter() - start) / MB


def disk_limit(directory: Path, total_mib: int = 512) -> float:
    """MB/s of writing `total_mib` MiB into `directory` in 1 MiB writes, fsync included."""
    chunk = os.urandom(CHUNK)
    path = directory / "dd.tmp"
    start = time.perf_counter()
    with open(path, "wb") as f:
        for _ in range(total_mib):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    elapsed = time.perf_counter() - start
    path.unlink()
    return total_mib * CHUNK / elapsed / MB
