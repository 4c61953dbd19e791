"""What a writer asks of the kernel's write-back: `posix_fadvise` calls recorded, then passed on."""

from __future__ import annotations

import os

import pytest


def record_writeback(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Every (offset, length) a writer hands to write-back from now on (POSIX_FADV_DONTNEED only); the
    advice still reaches the kernel, so the files written are the real ones."""
    advice: list[tuple[int, int]] = []
    real = os.posix_fadvise

    def spy(fd: int, offset: int, length: int, how: int) -> None:
        assert how == os.POSIX_FADV_DONTNEED
        advice.append((offset, length))
        real(fd, offset, length, how)

    monkeypatch.setattr(os, "posix_fadvise", spy)
    return advice
