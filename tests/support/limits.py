"""A real I/O failure on demand: a file-size limit (RLIMIT_FSIZE) makes the kernel refuse writes past it
with EFBIG, as a full disk would, without mocking any call. Only writes of this process are limited."""

from __future__ import annotations

import resource
import signal
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def file_size_limit(max_bytes: int) -> Iterator[None]:
    """Writes that would grow any file past `max_bytes` fail with OSError(EFBIG) inside the block."""
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an OSError, not a killed process
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, old_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
