"""Chart versions as helm picks them: a constraint against the versions a repository or registry offers.

Input: a version -> entry mapping (an index.yaml's entries for one chart, or an OCI repository's tags)
and the version or constraint the spec or a Chart.yaml writes. Output: the version picked
(`pick_version`, helm `repo.IndexFile.Get`), a helm (Masterminds/semver v3) constraint rewritten in the
syntax `semver.py` reads (`helm_constraint`), and whether a version is exact (`is_exact`).
Pure code: does not fetch the versions (fetch) or decide which dependencies need one (declared).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..errors import NotFoundError, UsageError
from ..semver import Constraint, SemverError, Version


def pick_version(entries: Mapping[str, Any], constraint: str, what: str) -> tuple[str, Any]:
    """helm `IndexFile.Get`: an exact string match first, else the newest version satisfying the
    constraint (prereleases only when the constraint names one). `entries`: version -> entry.

    Raises:
        NotFoundError: nothing matches. UsageError: the constraint does not parse.
    """
    if constraint in entries:
        return constraint, entries[constraint]
    try:
        wanted = Constraint.parse(helm_constraint(constraint))
    except SemverError as exc:
        raise UsageError(f"{what}: version {constraint!r}: {exc.message}",
                         hint="write an exact version or a constraint such as ^1.2.0 or >=1.0 <2.0") from None
    versions = sorted(((v, k) for k in entries if (v := Version.try_parse(k)) is not None),
                      key=lambda pair: _SortKey(pair[0]), reverse=True)
    for version, key in versions:
        if wanted.check(version):
            return key, entries[key]
    offered = ", ".join(k for _, k in versions[:8]) or "none"
    raise NotFoundError(f"{what}: no version satisfies {constraint!r} (newest: {offered})",
                        hint="check the chart name and version in the spec")


class _SortKey:
    def __init__(self, version: Version) -> None:
        self.version = version

    def __lt__(self, other: _SortKey) -> bool:
        return self.version.compare(other.version) < 0


def helm_constraint(text: str) -> str:
    """A Masterminds/semver v3 (helm) constraint in the syntax semver.py (v1) reads: a space also means
    AND (`>=1.0 <2.0`), and a caret below 1.0 stays within the minor (`^0.2.3` is `>=0.2.3 <0.3.0`) or,
    below 0.1, the patch (`^0.0.3` is `>=0.0.3 <0.0.4`)."""
    def caret(m: re.Match[str]) -> str:
        minor, patch, rest = m.group(1), m.group(3), m.group(4) or ""
        low = f">=0.{minor}.{patch or 0}{rest}"
        if minor != "0":
            return f"{low}, <0.{int(minor) + 1}.0"
        return f"{low}, <0.0.{int(patch) + 1}" if patch is not None else f"{low}, <0.1.0"
    text = re.sub(r"\^\s*v?0\.(\d+)(\.(\d+))?(-[0-9A-Za-z.-]+)?(?![\d.])", caret, text.strip())
    return re.sub(r"(?<=[0-9A-Za-z*])\s+(?=[<>=!~^])", ", ", text)


def is_exact(version: str) -> bool:
    """An exact version (an OCI tag to fetch as is), not a constraint to resolve against the tags."""
    return Version.try_parse(version) is not None and not version.strip().startswith(("v", "="))
