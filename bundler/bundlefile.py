"""The bundle's bytes: one read-only interface over a single file or a set of parts.

`BundleBytes` is what every reader of a bundle (archive, verify, inspect, push) needs: sequential
`read`/`readinto` with `seek`/`tell` (the header scan, the one-pass hash), positioned `pread` that
many threads can use at once without sharing a position (push streams blobs), and `name` for
messages. Two implementations:
- `BundleFile` (`open_file`): one file, Python's own `io.FileIO` plus `pread` (`os.pread`), so a
  single-file bundle reads exactly as fast as before;
- `parts.PartsFile`: the concatenation of a split bundle's parts, never copied (bundler/parts.py).

Does not know what the bytes mean (archive.py does) and never writes.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from .errors import InputError


class BundleBytes(Protocol):
    """A read-only, seekable byte source holding one bundle (a tar)."""

    @property
    def name(self) -> str | int: ...

    def read(self, size: int = -1, /) -> bytes: ...

    def readinto(self, buffer: bytearray | memoryview, /) -> int: ...

    def seek(self, offset: int, whence: int = 0, /) -> int: ...

    def tell(self) -> int: ...

    def pread(self, size: int, position: int, /) -> bytes:
        """Up to `size` bytes at `position`, without moving the file position (thread-safe); b"" at the end."""
        ...

    def close(self) -> None: ...


class BundleFile(io.FileIO):
    """One bundle file, opened read-only and unbuffered."""

    def pread(self, size: int, position: int, /) -> bytes:
        return os.pread(self.fileno(), size, position)


def open_file(path: Path | str) -> BundleFile:
    """Open a bundle file for reading.

    Raises:
        InputError: it cannot be opened (missing, a folder, no permission).
    """
    try:
        return BundleFile(path, "rb")
    except OSError as e:
        raise InputError(f"{path}: cannot open the bundle: {e.strerror}") from e


@contextmanager
def opened(source: Path | str | BundleBytes) -> Iterator[tuple[BundleBytes, str]]:
    """(bytes, name for messages) of a path, opened here and closed on exit, or of a source the caller
    holds open (a split bundle's parts), which stays open."""
    if isinstance(source, (str, Path)):
        with open_file(source) as f:
            yield f, str(source)
    else:
        yield source, str(source.name)
