"""The machine's own limits, measured by the benchmarks in the same run as the tool they judge.

sha256 throughput (OpenSSL through hashlib, 64 MiB buffers), disk write (1 MiB writes, then fsync) and
disk read (1 MiB reads of a file just written, its pages first dropped from the page cache with
posix_fadvise, so the read comes from the disk: what a bundle arriving on media costs to read).
The loopback transfer limit depends on what is served, so each benchmark measures it from its own
registry.
"""

from __future__ import annotations

import compileall
import functools
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


def evict(path: Path) -> None:
    """Drop `path`'s pages from the page cache (written back first), so the next read comes from the disk.
    Only this file's pages: nothing else on the machine is disturbed, and no privilege is needed."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def disk_read_limit(directory: Path, total_mib: int = 1024) -> float:
    """MB/s of reading `total_mib` MiB from the disk (not the page cache) in 1 MiB reads."""
    path = directory / "dd-read.tmp"
    chunk = os.urandom(CHUNK)
    with open(path, "wb") as f:
        for _ in range(total_mib):
            f.write(chunk)
    rate = read_limit(path)
    path.unlink()
    return rate


def read_limit(path: Path) -> float:
    """MB/s of reading `path` whole from the disk in 1 MiB reads (its pages dropped before and after)."""
    evict(path)
    buffer, total = bytearray(CHUNK), 0
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            total += n
    elapsed = time.perf_counter() - start
    evict(path)
    return total / elapsed / MB


@functools.cache
def tool_env(repo: Path) -> dict[str, str]:
    """The environment the tool runs in: bytecode written and reused, as on a user's machine (a CI or
    shell setting of PYTHONDONTWRITEBYTECODE would make every run compile each changed module again:
    15-20 ms of a 0.2 s warm pull), and the checkout first on the path. Made once per checkout (the
    compile runs before the first timed step that asks for it, and is cached from then on)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    compileall.compile_dir(repo / "bundler", quiet=1)  # as pip does when it installs the package
    return {**env, "PYTHONPATH": str(repo)}
