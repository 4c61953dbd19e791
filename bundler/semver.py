"""Masterminds/semver v1.5.0 versions and constraints, as Crossplane's package manager checks them.

Input: a version string (`v1.20.0`, `2.0.0-rc.1`) and a constraint string (`>=v1.12.1-0`, `^1.2`,
`~1.2.x`, `1.2 - 1.4.5`, `>=1.0, <2.0 || 3.x`). Output: `Version`, `Constraint`, `satisfies()`.

Crossplane resolves `dependsOn[].version` and meta `crossplane.version` with
github.com/Masterminds/semver **v1.5.0** (crossplane/crossplane `internal/controller/pkg/revision/dependency.go`).
The rules below are that release's `version.go` and `constraints.go`, transcribed:

- versions: `v?MAJOR(.MINOR)?(.PATCH)?(-PRERELEASE)?(+METADATA)?`; missing parts are 0; build metadata
  is ignored when comparing; prerelease precedence follows semver 2.0.0 section 11;
- constraints: `||` separates alternatives and `,` separates conjuncts (v1 does NOT treat a space as
  "and": `>=1.0 <2.0` is a parse error); `A - B` means `>= A, <= B`; operators `=` (or none), `!=`,
  `>`, `<`, `>=`, `=>`, `<=`, `=<`, `~`, `~>`, `^`; `x`, `X` or `*` in a part (or a missing minor)
  makes the constraint "dirty" (`1.2.x` behaves as `~1.2`, `<=1.x` admits every 1.y.z);
- prereleases: a version with a prerelease satisfies a constraint part only if that part's own version
  has a prerelease too (Masterminds issue 21, release v1.2.0). That is why upstream packages write
  `>=v1.12.1-0`: without the `-0`, `v2.0.0-rc.1` would not satisfy `>=v1.12.1`.

Pure code: no I/O. Does not handle OCI digests (callers compare those exactly).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import UsageError

# Masterminds v1.5.0 version.go SemVerRegex, anchored.
_VERSION_RE = re.compile(
    r"^v?([0-9]+)(\.[0-9]+)?(\.[0-9]+)?"
    r"(-([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?"
    r"(\+([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?$"
)
# constraints.go cvRegex (the `|` inside the classes is in the original too).
_CV = (
    r"v?([0-9|x|X|\*]+)(\.[0-9|x|X|\*]+)?(\.[0-9|x|X|\*]+)?"
    r"(-([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?"
    r"(\+([0-9A-Za-z\-]+(\.[0-9A-Za-z\-]+)*))?"
)
# Longest operators first: Go's regexp alternation is leftmost-first, and Go ranges a map in random
# order, so upstream relies on the backtracking `\s*` plus full-match anchors; ordering makes it stable.
_OPS = ("!=", ">=", "=>", "<=", "=<", "~>", "=", ">", "<", "~", "^", "")
_CONSTRAINT_RE = re.compile(r"^\s*(" + "|".join(re.escape(o) for o in _OPS) + r")\s*(" + _CV + r")\s*$")
_RANGE_RE = re.compile(r"\s*(" + _CV + r")\s+-\s+(" + _CV + r")\s*")


class SemverError(UsageError):
    """A version or constraint string does not parse under Masterminds/semver v1.5.0 rules."""


@dataclass(frozen=True)
class Version:
    major: int
    minor: int
    patch: int
    prerelease: str = ""
    metadata: str = ""

    @classmethod
    def parse(cls, text: str) -> Version:
        """Raises: SemverError: not a (loose) semantic version."""
        m = _VERSION_RE.match(text.strip()) if isinstance(text, str) else None
        if m is None:
            raise SemverError(f"invalid semantic version {text!r}", hint="use MAJOR.MINOR.PATCH, e.g. v1.20.0")
        return cls(
            int(m.group(1)),
            int(m.group(2)[1:]) if m.group(2) else 0,
            int(m.group(3)[1:]) if m.group(3) else 0,
            m.group(5) or "",
            m.group(8) or "",
        )

    @classmethod
    def try_parse(cls, text: str) -> Version | None:
        try:
            return cls.parse(text)
        except SemverError:
            return None

    def compare(self, other: Version) -> int:
        """-1, 0 or 1 by semver precedence (build metadata ignored)."""
        for a, b in ((self.major, other.major), (self.minor, other.minor), (self.patch, other.patch)):
            if a != b:
                return 1 if a > b else -1
        if self.prerelease == other.prerelease:
            return 0
        if not self.prerelease:
            return 1
        if not other.prerelease:
            return -1
        return _compare_prerelease(self.prerelease, other.prerelease)

    def __str__(self) -> str:
        out = f"{self.major}.{self.minor}.{self.patch}"
        if self.prerelease:
            out += f"-{self.prerelease}"
        return out + (f"+{self.metadata}" if self.metadata else "")


def _compare_prerelease(a: str, b: str) -> int:
    """version.go comparePrerelease/comparePrePart: dot-separated, numeric < alphanumeric, shorter < longer."""
    pa, pb = a.split("."), b.split(".")
    for i in range(max(len(pa), len(pb))):
        s = pa[i] if i < len(pa) else ""
        o = pb[i] if i < len(pb) else ""
        if s == o:
            continue
        if s == "":
            return -1
        if o == "":
            return 1
        s_num, o_num = s.isdigit(), o.isdigit()
        if s_num and o_num:
            return 1 if int(s) > int(o) else -1
        if s_num:
            return -1
        if o_num:
            return 1
        return 1 if s > o else -1
    return 0  # pragma: no cover - parse() admits no empty identifier: two different strings differ in a part


@dataclass(frozen=True)
class _Part:
    op: str
    con: Version
    orig: str
    dirty: bool
    minor_dirty: bool
    patch_dirty: bool

    def check(self, v: Version) -> bool:
        # Every v1.5.0 operator except a clean `!=` starts with the prerelease rule (issue 21).
        if v.prerelease and not self.con.prerelease and not (self.op == "!=" and not self.dirty):
            return False
        c = self.con
        cmp = v.compare(c)
        match self.op:
            case "" | "=":
                return self._tilde(v) if self.dirty else cmp == 0
            case "!=":
                if not self.dirty:
                    return cmp != 0
                if c.major != v.major:
                    return True
                return c.minor != v.minor and not self.minor_dirty
            case ">":
                return cmp > 0
            case ">=" | "=>":
                return cmp >= 0
            case "<" | "<=" | "=<":
                if not self.dirty:
                    return cmp < 0 if self.op == "<" else cmp <= 0
                if v.major > c.major:
                    return False
                return not (v.minor > c.minor and not self.minor_dirty)
            case "~" | "~>":
                return self._tilde(v)
            case "^":
                return cmp >= 0 and v.major == c.major
        raise AssertionError(self.op)  # pragma: no cover - parse() admits only the operators above

    def _tilde(self, v: Version) -> bool:
        c = self.con
        if v.compare(c) < 0:
            return False
        if (c.major, c.minor, c.patch) == (0, 0, 0) and not self.minor_dirty and not self.patch_dirty:
            return True  # ~0.0.0 is >= 0.0.0
        if v.major != c.major:
            return False
        return not (v.minor != c.minor and not self.minor_dirty)


def _is_x(part: str) -> bool:
    return part in ("x", "X", "*")


def _parse_part(text: str, whole: str) -> _Part:
    m = _CONSTRAINT_RE.match(text)
    if m is None:
        raise SemverError(f"improper constraint {text.strip()!r} in {whole!r}",
                          hint="Masterminds/semver v1 syntax: '>=v1.2.0', '^1.2', '>=1.0, <2.0'")
    op, ver = m.group(1), m.group(2)
    major, minor, patch, pre = m.group(3), m.group(4) or "", m.group(5) or "", m.group(6) or ""
    dirty = minor_dirty = patch_dirty = False
    if _is_x(major):
        ver, dirty = "0.0.0", True
    elif _is_x(minor[1:]) or minor == "":
        minor_dirty = dirty = True
        ver = f"{major}.0.0{pre}"
    elif _is_x(patch[1:]):
        dirty = patch_dirty = True
        ver = f"{major}{minor}.0{pre}"
    con = Version.try_parse(ver)
    if con is None:  # e.g. "1|2": the class admits '|', NewVersion then fails
        raise SemverError(f"improper constraint {text.strip()!r} in {whole!r}")
    return _Part(op, con, m.group(2), dirty, minor_dirty, patch_dirty)


@dataclass(frozen=True)
class Constraint:
    text: str
    alternatives: tuple[tuple[_Part, ...], ...]

    @classmethod
    def parse(cls, text: str) -> Constraint:
        """Raises: SemverError: the constraint does not parse (callers fail closed on it)."""
        if not isinstance(text, str) or not text.strip():
            raise SemverError(f"empty version constraint {text!r}")
        rewritten = text
        for m in _RANGE_RE.finditer(text):  # rewriteRange: "A - B" -> ">= A, <= B"
            rewritten = rewritten.replace(m.group(0), f">= {m.group(1)}, <= {m.group(11)}", 1)
        alternatives = tuple(
            tuple(_parse_part(part, text) for part in alt.split(",")) for alt in rewritten.split("||")
        )
        return cls(text, alternatives)

    def check(self, version: Version) -> bool:
        return any(all(p.check(version) for p in alt) for alt in self.alternatives)

    def __str__(self) -> str:
        return self.text


def satisfies(version: str, constraint: str) -> bool:
    """`Constraint.parse(constraint).check(Version.parse(version))`.

    Raises:
        SemverError: either string does not parse.
    """
    return Constraint.parse(constraint).check(Version.parse(version))

