"""How stages report progress: the `Progress` protocol, a no-op default, and a thread-safe byte meter.

The core calls a `Progress`; only cli.py draws it (a live line on a terminal, plain log lines
otherwise), as pip-audit's AuditState. `step()` reports counted work (images, blobs); `transferred()`
reports bytes as they stream so a drawer can show a rate. Calls may come from worker threads.

No I/O here.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def step(self, stage: str, done: int, total: int | None, detail: str = "") -> None:
        """`done` of `total` units of `stage` are finished; `detail` names the last one."""

    def transferred(self, nbytes: int) -> None:
        """`nbytes` more bytes were received (called often, from any thread; keep it cheap)."""


class NullProgress:
    """Reports nothing."""

    def step(self, stage: str, done: int, total: int | None, detail: str = "") -> None:
        pass

    def transferred(self, nbytes: int) -> None:
        pass
