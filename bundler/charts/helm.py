"""The helm binary as the chart stage runs it: one subprocess call, and `helm dependency list` read back.

Input: `render.Tools` (where helm is, its timeout), the arguments, a chart directory. Output: the
finished process (`run`), or nothing when `helm dependency list` (offline) calls every dependency `ok`
(`check_dependencies`). Runs helm and nothing else: no network of its own, no fetching (fetch), and
what a failed `helm verify` or `helm package` means is decided by its caller.

Raises `RenderError`: helm cannot run, or a dependency is not satisfied.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from ..errors import RenderError
from ..render import Tools, condense


def run(tools: Tools, args: list[str], what: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([tools.get("helm"), *args], capture_output=True, text=True, timeout=tools.timeout,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RenderError(f"{what}: cannot run helm: {exc}", hint="run scripts/setup.sh") from None


def check_dependencies(root: Path, tools: Tools, label: str) -> None:
    """`helm dependency list` (offline) must call every dependency `ok` (or `unpacked`) now."""
    done = run(tools, ["dependency", "list", str(root)], "helm dependency list")
    if done.returncode != 0:  # pragma: no cover - helm loads what declared.py already read; kept for helm's own rules
        raise RenderError(f"{label}: helm dependency list failed: {condense(done.stderr)}")
    bad = []
    for row in done.stdout.splitlines()[1:]:
        cells = [c.strip() for c in row.split("\t")]
        if len(cells) >= 4 and cells[-1] not in ("ok", "unpacked"):
            bad.append(f"{cells[0]} {cells[1]} ({cells[-1]})")
    if bad:
        raise RenderError(f"{label}: dependencies not satisfied after fetching: {', '.join(bad)}",
                          hint="a dependency without a repository must be vendored in charts/")
