"""report.py on a sweep with an excluded image, an invalid reference and an unconfirmed candidate:
each format says what it is (text, JUnit, GitHub annotations), and --vendored lists that are not lists
are refused with the file named."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from bundler import report, sweep
from bundler.documents import Origin, load_stream
from bundler.errors import InputError
from bundler.reference import ImageRef
from bundler.spec import ImageOptions

MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    spec:
      containers:
      - {name: web, image: "nginx:1.27"}
      - {name: debug, image: "busybox:1.36"}
      - {name: broken, image: "Not A Ref"}
      - name: op
        image: quay.io/org/operator:1.0
        env:
        - {name: HELPER, value: "ghcr.io/org/helper:2.0"}
"""


@pytest.fixture(scope="module")
def result() -> sweep.Sweep:
    docs = load_stream(MANIFEST, Origin("m.yaml", 1))
    options = (ImageOptions(ImageRef.parse("busybox"), exclude="debug only, never deployed"),)
    return sweep.sweep(docs, options=options)


def test_text_lists_exclusions_and_invalid_references(result: sweep.Sweep) -> None:
    text = report.to_text(result, {}, "none")
    assert "docker.io/library/busybox:1.36  [excluded: debug only, never deployed]\n    m.yaml:9" in text
    assert "INVALID 'Not A Ref': " in text


def test_junit_counts_invalid_as_failures_and_exclusions_as_skipped(result: sweep.Sweep) -> None:
    suite = ET.fromstring(report.to_junit(result, {}, "none")).find("testsuite")
    assert suite is not None
    assert (suite.get("failures"), suite.get("skipped")) == ("1", "1")
    invalid = suite.find("testcase[@classname='images.invalid']")
    assert invalid is not None and invalid.get("name") == "Not A Ref"
    assert invalid.find("failure").get("type") == "invalid-image-reference"  # type: ignore[union-attr]
    excluded = suite.find("testcase[@classname='images.excluded']")
    assert excluded is not None and excluded.find("skipped").get("message") == "debug only, never deployed"  # type: ignore[union-attr]


def test_github_warns_about_candidates_nobody_checked(result: sweep.Sweep) -> None:
    lines = report.to_github(result, {}, "none").splitlines()
    candidates = [ln for ln in lines if ln.startswith("::warning") and "Candidate image" in ln]
    assert candidates and all("confirm or exclude it in the bundle spec" in ln for ln in candidates)
    assert any(ln.startswith("::error") and "Invalid image reference" in ln for ln in lines)


def test_an_unknown_format_is_a_programming_error(result: sweep.Sweep) -> None:
    with pytest.raises(ValueError, match="unknown format 'yaml'"):
        report.render_report("yaml", result, {}, "none")


def test_vendored_json_shapes() -> None:
    refs, digests = report.parse_vendored('{"manifests": ["junk", {"digest": "sha256:' + "a" * 64 + '"}]}', "v.json")
    assert refs == [] and digests == ["sha256:" + "a" * 64]
    with pytest.raises(InputError, match="v.json: 'Not A Ref' is not a valid image reference"):
        report.parse_vendored('["nginx:1.27", "Not A Ref"]', "v.json")
    with pytest.raises(InputError, match="v.json: expected a JSON list of references"):
        report.parse_vendored('{"images": "nginx"}', "v.json")
