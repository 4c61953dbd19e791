"""Masterminds/semver v1.5.0 behaviour (cases from its constraints_test.go and Crossplane's own packages)."""

from __future__ import annotations

import pytest

from bundler.semver import Constraint, SemverError, Version, satisfies


@pytest.mark.parametrize("text,expected", [
    ("v1.20.0", (1, 20, 0, "")), ("2", (2, 0, 0, "")), ("1.2", (1, 2, 0, "")),
    ("1.2.3-beta.1+build.5", (1, 2, 3, "beta.1")), ("v2.0.0-rc.1", (2, 0, 0, "rc.1")),
])
def test_version_parse(text: str, expected: tuple[int, int, int, str]) -> None:
    v = Version.parse(text)
    assert (v.major, v.minor, v.patch, v.prerelease) == expected


@pytest.mark.parametrize("text", ["", "1.2.3.4", "latest", "v", "1.2.3-", "=1.2"])
def test_version_rejects(text: str) -> None:
    with pytest.raises(SemverError):
        Version.parse(text)


@pytest.mark.parametrize("a,b,expected", [
    ("1.2.3", "1.2.3+meta", 0), ("1.2.3", "1.2.4", -1), ("2.0.0", "1.99.99", 1),
    ("1.0.0-alpha", "1.0.0", -1), ("1.0.0-alpha", "1.0.0-alpha.1", -1), ("1.0.0-alpha.1", "1.0.0-alpha.beta", -1),
    ("1.0.0-beta.2", "1.0.0-beta.11", -1), ("1.0.0-rc.1", "1.0.0-beta.11", 1), ("1.0.0-0", "1.0.0-alpha", -1),
])
def test_precedence(a: str, b: str, expected: int) -> None:
    assert Version.parse(a).compare(Version.parse(b)) == expected
    assert Version.parse(b).compare(Version.parse(a)) == -expected


@pytest.mark.parametrize("constraint,version,ok", [
    # plain operators
    ("1.2.3", "1.2.3", True), ("=1.2.3", "1.2.4", False), ("!=4.1", "4.1.0", False), ("!=4.1", "5.1.0", True),
    (">1.1", "1.1.1", True), (">1.1", "1.1.0", False), ("<1.1", "1.0.9", True), ("<1.1", "1.1.0", False),
    (">=1.1", "1.1.0", True), ("=>1.1", "1.0.0", False), ("<=1.1", "1.1.0", True), ("=<1.1", "1.1.1", False),
    ("> 1.1", "1.2.0", True), (">= v1.1.0", "v1.1.0", True),
    # dirty (x / * / missing minor)
    ("1.x", "1.9.0", True), ("1.x", "2.0.0", False), ("1.2.x", "1.2.9", True), ("1.2.x", "1.3.0", False),
    ("*", "9.9.9", True), ("<=1.x", "1.9.9", True), ("<=1.x", "2.0.0", False), ("<1.x", "1.5.0", True),
    ("!=4.x", "5.0.0", True), ("!=4.x", "4.2.0", False), ("2", "2.5.0", True), ("2", "3.0.0", False),
    # tilde and caret
    ("~1.2.3", "1.2.4", True), ("~1.2.3", "1.3.0", False), ("~1", "1.9.0", True), ("~1", "2.0.0", False),
    ("~>1.2", "1.2.9", True), ("~0.0.0", "5.0.0", True), ("~1.2.3", "1.2.2", False),
    ("^1.2.3", "1.9.0", True), ("^1.2.3", "2.0.0", False), ("^0.2.3", "0.9.0", True), ("^1.2.3", "1.2.2", False),
    # ranges, and, or
    ("1.1 - 2", "1.5.0", True), ("1.1 - 2", "2.9.0", True), ("1.1 - 2", "3.0.0", False), ("1.1 - 2", "1.0.0", False),
    (">=1.1, <2", "1.9.0", True), (">=1.1, <2.0.0", "2.0.0", False),
    # v1.5.0 quirk, kept on purpose: a dirty "<2" compares major/minor only, so it admits 2.x
    (">=1.1, <2", "2.0.0", True), ("<2", "3.0.0", False), (">=1.1,<2 || >=3", "3.5.0", True),
    ("1.x || 3.x", "2.0.0", False),
    # prereleases: only admitted by constraint parts that carry a prerelease themselves
    (">=1.2.3", "1.3.0-beta", False), (">=1.2.3-0", "1.3.0-beta", True), (">=v1.12.1-0", "v2.0.0-rc.1", True),
    (">=v1.12.1", "v2.0.0-rc.1", False), ("^1.2.0", "1.3.0-rc", False), ("!=1.2.3", "1.2.3-rc", True),
    (">=1.2.3-beta.2", "1.2.3-beta.1", False), ("=1.2.3-rc.1", "1.2.3-rc.1", True),
    # Crossplane's own: family members depend on the family at ">= 0.0.0", core at ">=v1.12.1-0"
    (">= 0.0.0", "v1.23.0", True), (">=v1.12.1-0", "2.0.0", True), (">=v1.12.1-0", "1.11.0", False),
    (">=v2.0.0-0", "1.20.0", False), ("<2.0.0", "1.20.0", True), ("<2.0.0", "2.0.0", False),
])
def test_constraints(constraint: str, version: str, ok: bool) -> None:
    assert satisfies(version, constraint) is ok


@pytest.mark.parametrize("text", ["", ">=1.0 <2.0", "~>", "latest", ">=1.0,", "1.2.3.4", ">> 1", "1|2"])
def test_constraint_rejects(text: str) -> None:
    # v1.5.0 has no space-as-AND: upstream fails on ">=1.0 <2.0", and so do we (fail closed)
    with pytest.raises(SemverError):
        Constraint.parse(text)


def test_constraint_keeps_text() -> None:
    assert str(Constraint.parse(">= 1.0, <2")) == ">= 1.0, <2"
