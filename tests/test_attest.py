"""attest.py: a statement's subjects are checked on construction (no empty or duplicate names)."""

from __future__ import annotations

import pytest

from bundler.attest import Subject, statement

HEX = "c" * 64


def test_a_subject_needs_a_name() -> None:
    with pytest.raises(ValueError, match="subject name must not be empty"):
        Subject("", HEX)


def test_two_subjects_with_one_name_are_refused() -> None:
    subjects = [Subject("a", HEX), {"name": "a", "digest": {"sha256": "d" * 64}}]
    with pytest.raises(ValueError, match="duplicate subject names in statement"):
        statement(subjects, "https://example.test/p", {})
    assert b'"name":"a"' in statement(subjects[:1], "https://example.test/p", {})
