"""`airgap-bundle sweep` end to end: real helm/kubectl, every format, exit codes, and bad input."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from xml.etree import ElementTree as ET

import jsonschema
import pytest

from tests.conftest import RunCli

FIXTURES = Path(__file__).parent / "fixtures"
SARIF_SCHEMA = json.loads((FIXTURES / "sarif" / "sarif-schema-2.1.0.json").read_text())
PLATFORM = "tests/fixtures/charts/platform"
EXPECTED_LOCATION_KEYS = ["file", "line", "chart", "template", "kind", "namespace", "name", "path", "rule", "evidence"]
EXPECTED_IMAGE_KEYS = ["ref", "normalized", "canonical", "confidence", "hook", "vendored", "locations"]


@pytest.fixture
def cli(run_cli: RunCli, repo_root: Path) -> RunCli:
    def run(*args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, cwd=kw.pop("cwd", repo_root), **kw)  # type: ignore[arg-type]

    return run


def _one_clean_line(done: subprocess.CompletedProcess[str]) -> str:
    """Bad input: exactly one `airgap-bundle: error:` line on stderr and no traceback."""
    assert "Traceback" not in done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("airgap-bundle: error: "), done.stderr
    return lines[0]


def test_example_spec_json_shape(cli: RunCli) -> None:
    done = cli("sweep", "examples/bundle.yaml", "--format", "json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert list(report) == ["images", "summary"]
    assert all(list(i) == EXPECTED_IMAGE_KEYS for i in report["images"])
    assert all(list(loc) == EXPECTED_LOCATION_KEYS for i in report["images"] for loc in i["locations"])
    nginx = next(i for i in report["images"] if i["canonical"] == "docker.io/library/nginx:1.27.3")
    assert nginx == {
        "ref": "docker.io/library/nginx:1.27.3",
        "normalized": "docker.io/library/nginx:1.27.3",
        "canonical": "docker.io/library/nginx:1.27.3",
        "confidence": "definite",
        "hook": False,
        "vendored": None,
        "locations": [
            {
                "file": "examples/charts/demo/templates/deployment.yaml",
                "line": 23,
                "chart": "demo",
                "template": "demo/templates/deployment.yaml",
                "kind": "Deployment",
                "namespace": None,
                "name": "demo-web",
                "path": "spec.template.spec.containers[0].image",
                "rule": "container",
                "evidence": None,
            }
        ],
    }
    assert sorted(i["canonical"] for i in report["images"]) == [
        "docker.io/library/busybox:1.36",
        "docker.io/library/nginx:1.27.3",
        "quay.io/prometheus-operator/prometheus-config-reloader:v0.75.0",
        "quay.io/prometheus-operator/prometheus-operator:v0.75.0",
        "quay.io/prometheus/nginx-exporter:1.3.0",
    ]
    summary = report["summary"]
    assert (summary["documents"], summary["images"], summary["check"], summary["passed"]) == (
        4,
        5,
        "none",
        True,
    )
    assert re.fullmatch(r"airgap-bundle sweep: swept 4 documents: 5 images .*\n", done.stderr)
    # the spec alone: every definite image is carried, so the check passes
    assert cli("sweep", "examples/bundle.yaml", "--fail-on-unvendored").returncode == 0


def test_chart_with_local_registry_check_fails_with_exit_1(cli: RunCli) -> None:
    done = cli(
        "sweep",
        "--chart",
        PLATFORM,
        "--namespace",
        "team",
        "--release",
        "rel",
        "--format",
        "json",
        "--fail-on-unvendored",
        "--local-registry",
        "ghcr.io",
    )
    assert done.returncode == 1
    report = json.loads(done.stdout)
    vendored = {i["canonical"]: i["vendored"] for i in report["images"]}
    assert vendored["ghcr.io/example/api:2.0.0"] is True
    assert vendored["docker.io/library/alpine:3.20"] is False
    assert sorted(report["summary"]["unvendored"]) == sorted(k for k, v in vendored.items() if not v)
    curl = next(i for i in report["images"] if i["canonical"] == "docker.io/curlimages/curl:8.10.1")
    assert (
        curl["hook"] is True and curl["locations"][0]["template"] == "platform/templates/tests/test-api.yaml"
    )
    assert _one_clean_line(subprocess.CompletedProcess([], 1, "", done.stderr.splitlines()[-1])).startswith(
        "airgap-bundle: error: 10 image(s) not vendored"
    )
    # the same without --fail-on-unvendored: reported, exit 0
    assert cli("sweep", "--chart", PLATFORM, "--local-registry", "ghcr.io").returncode == 0


def test_sarif_is_valid_and_has_one_result_per_unvendored_image(cli: RunCli) -> None:
    done = cli(
        "sweep",
        "--chart",
        PLATFORM,
        "--manifests",
        "tests/fixtures/manifests/invalid-ref.yaml",
        "--format",
        "sarif",
        "--fail-on-unvendored",
        "--local-registry",
        "ghcr.io",
    )
    assert done.returncode == 1
    log = json.loads(done.stdout)
    jsonschema.Draft4Validator(SARIF_SCHEMA).validate(log)
    results = log["runs"][0]["results"]
    unvendored = [r for r in results if r["ruleId"] == "unvendored-image"]
    invalid = [r for r in results if r["ruleId"] == "invalid-image-reference"]
    assert len(unvendored) == 11 and len(invalid) == 2
    alpine = next(r for r in unvendored if r["properties"]["canonical"] == "docker.io/library/alpine:3.20")
    region = alpine["locations"][0]["physicalLocation"]
    assert region == {
        "artifactLocation": {"uri": f"{PLATFORM}/templates/operator.yaml"},
        "region": {"startLine": 45},
    }
    kubectl = next(r for r in unvendored if r["properties"]["canonical"] == "docker.io/bitnami/kubectl:1.31")
    assert len(kubectl["relatedLocations"]) == 1
    assert invalid[0]["locations"][0]["physicalLocation"]["region"]["startLine"] == 8


def test_junit_one_testcase_per_image(cli: RunCli) -> None:
    done = cli(
        "sweep",
        "--manifests",
        "tests/fixtures/manifests/workloads.yaml",
        "--format",
        "junit",
        "--local-registry",
        "registry.example.com",
    )
    assert done.returncode == 0  # a check without --fail-on-unvendored only reports
    root = ET.fromstring(done.stdout)
    cases = root.findall("./testsuite/testcase")
    assert len(cases) == 8
    failed = sorted(c.get("name") for c in cases if c.find("failure") is not None)
    assert failed == [
        "[2001:db8::1]:5000/apps/rc:1.0",
        "docker.io/library/postgres:16.4",
        "localhost:5000/apps/pt:1.0",
    ]
    assert root.find("testsuite").get("failures") == "3"  # type: ignore[union-attr]


def test_github_annotations(cli: RunCli) -> None:
    done = cli(
        "sweep",
        "--manifests",
        "tests/fixtures/manifests/workloads.yaml",
        "--manifests",
        "tests/fixtures/manifests/invalid-ref.yaml",
        "--format",
        "github",
        "--fail-on-unvendored",
        "--local-registry",
        "registry.example.com",
    )
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert (
        "::error file=tests/fixtures/manifests/workloads.yaml,line=33,title=Unvendored image::"
        "docker.io/library/postgres:16.4 is not vendored (spec.template.spec.containers[0].image in StatefulSet db)"
        in lines
    )
    assert any(
        ln.startswith(
            "::error file=tests/fixtures/manifests/invalid-ref.yaml,line=8,title=Invalid image reference::"
        )
        for ln in lines
    )
    assert len(lines) == 5


def test_candidates_need_confirmation_in_the_spec(cli: RunCli, tmp_path: Path, repo_root: Path) -> None:
    manifests = tmp_path / "cache.yaml"
    manifests.write_text("""apiVersion: example.com/v1
kind: Cache
metadata: {name: c}
spec:
  image: {name: quay.io/example/cache, ver: "2.0"}   # a split object of no known shape
  helperImage: quay.io/example/helper:1.0            # an image-named field no catalogue entry names
""")
    spec = tmp_path / "bundle.yaml"
    spec.write_text(f"""apiVersion: airgap-bundle.dev/v1alpha1
kind: Bundle
metadata: {{name: t, version: 1.0.0}}
localRegistry: {{host: registry.local:5000}}
sources:
  manifests:
    - path: {manifests}
""")
    done = cli("sweep", str(spec), "--fail-on-unvendored", "--format", "json")
    assert done.returncode == 1
    assert sorted(json.loads(done.stdout)["summary"]["unvendored"]) == [
        "quay.io/example/cache:2.0",
        "quay.io/example/helper:1.0",
    ]
    spec.write_text(
        spec.read_text()
        + """images:
  - ref: quay.io/example/cache
    confirm: true
  - ref: quay.io/example/helper:1.0
    exclude: the operator pulls the version pinned in its own release
"""
    )
    done = cli("sweep", str(spec), "--fail-on-unvendored", "--format", "json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)["summary"]
    assert summary["excluded"][0]["reason"] == "the operator pulls the version pinned in its own release"
    assert summary["confirmed"] == 1 and summary["passed"] is True


CACHE_CR = """apiVersion: example.com/v1
kind: Cache
metadata: {name: c}
spec:
  image: {name: quay.io/example/cache, ver: "2.0"}   # a split object of no known shape
  helperImage: quay.io/example/helper:1.0            # an image-named field no catalogue entry names
"""


def _candidate_spec(tmp_path: Path, tail: str = "") -> Path:
    (tmp_path / "cache.yaml").write_text(CACHE_CR)
    spec = tmp_path / "bundle.yaml"
    spec.write_text("apiVersion: airgap-bundle.dev/v1alpha1\nkind: Bundle\nmetadata: {name: t, version: 1.0.0}\n"
                    "localRegistry: {host: registry.local:5000}\nsources:\n  manifests:\n    - path: cache.yaml\n"
                    + tail)
    return spec


def test_spec_alone_fails_while_candidates_are_unresolved(cli: RunCli, tmp_path: Path) -> None:
    """`sweep SPEC` without --fail-on-unvendored used to say passed: true over two unreviewed candidates."""
    spec = _candidate_spec(tmp_path)
    done = cli("sweep", str(spec), "--format", "json")
    assert done.returncode == 1, done.stderr
    summary = json.loads(done.stdout)["summary"]
    assert summary["passed"] is False and summary["unvendored"] == []
    assert summary["unresolved"] == ["quay.io/example/cache:2.0", "quay.io/example/helper:1.0"]
    line = done.stderr.splitlines()[-1]  # after the summary line
    assert line == (f"airgap-bundle: error: {tmp_path / 'cache.yaml'}:5: quay.io/example/cache:2.0 looks like an "
                    "image (split-unknown) but the spec neither confirms nor excludes it (2 unresolved candidate(s)) "
                    f"(review: `airgap-bundle sweep {spec} --emit-images` prints the images: entries to paste "
                    "(confirm: true, or exclude: <reason>))")
    text = cli("sweep", str(spec))
    assert text.returncode == 1 and "[candidate, UNRESOLVED: confirm or exclude it in the spec]" in text.stdout
    assert ", 2 unresolved" in text.stderr
    sarif = json.loads(cli("sweep", str(spec), "--format", "sarif").stdout)
    jsonschema.validate(sarif, SARIF_SCHEMA)
    assert [r["ruleId"] for r in sarif["runs"][0]["results"]] == ["unresolved-candidate"] * 2
    github = cli("sweep", str(spec), "--format", "github").stdout.splitlines()
    assert len(github) == 2 and all(ln.startswith("::error ") for ln in github)
    junit = ET.fromstring(cli("sweep", str(spec), "--format", "junit").stdout)
    assert [f.get("type") for f in junit.iter("failure")] == ["unresolved-candidate"] * 2
    # without a spec there is nowhere to review them: reported as candidates (warnings), not failures
    bare = cli("sweep", "--manifests", str(tmp_path / "cache.yaml"), "--format", "json")
    assert bare.returncode == 0 and json.loads(bare.stdout)["summary"]["passed"] is True
    bare_github = cli("sweep", "--manifests", str(tmp_path / "cache.yaml"), "--format", "github").stdout.splitlines()
    assert len(bare_github) == 2 and all(ln.startswith("::warning ") for ln in bare_github)


def test_emitted_images_entries_pasted_into_the_spec_make_the_sweep_pass(cli: RunCli, tmp_path: Path) -> None:
    spec = _candidate_spec(tmp_path)
    emitted = cli("sweep", str(spec), "--emit-images")
    assert emitted.returncode == 0, emitted.stderr
    out = emitted.stdout
    assert "\nimages:\n" in out and out.count("    confirm: true\n") == 2
    assert (f"  # candidate quay.io/example/cache:2.0, found at:\n  #   {tmp_path / 'cache.yaml'}:5 Cache c spec.image "
            "[rule split-unknown, unknown shape {name, ver}]\n  - ref: quay.io/example/cache:2.0\n") in out, out
    spec.write_text(spec.read_text() + out)  # pasted at the end, as the header says
    done = cli("sweep", str(spec), "--format", "json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)["summary"]
    assert summary["passed"] is True and summary["confirmed"] == 2 and summary["unresolved"] == []
    assert "nothing to add" in cli("sweep", str(spec), "--emit-images").stdout

    # a spec that has images: already gets entries for under that key (no second `images:`)
    (tmp_path / "b").mkdir()
    reviewed = _candidate_spec(tmp_path / "b", "images:\n  - ref: quay.io/example/helper:1.0\n"
                                               "    exclude: not pulled by this release\n")
    emitted = cli("sweep", str(reviewed), "--emit-images").stdout
    assert "\nimages:" not in emitted and "under the spec's `images:` key" in emitted
    assert emitted.count("  - ref: ") == 1 and "  - ref: quay.io/example/cache:2.0\n" in emitted
    text = reviewed.read_text()
    reviewed.write_text(text.replace("images:\n", "images:\n" + emitted, 1))
    assert cli("sweep", str(reviewed)).returncode == 0


def test_emit_images_needs_a_spec_and_no_report_options(cli: RunCli, tmp_path: Path) -> None:
    done = cli("sweep", "--manifests", "tests/fixtures/manifests", "--emit-images")
    assert done.returncode == 2 and "--emit-images needs a SPEC" in _one_clean_line(done)
    done = cli("sweep", str(_candidate_spec(tmp_path)), "--emit-images", "--format", "json")
    assert done.returncode == 2


def test_vendored_list_files(cli: RunCli, tmp_path: Path) -> None:
    listed = tmp_path / "images.txt"
    listed.write_text("registry.example.com/shop/frontend:4.2.0\n")
    args = (
        "sweep",
        "--kustomize",
        "tests/fixtures/kustomize/base",
        "--fail-on-unvendored",
        "--format",
        "json",
    )
    done = cli(*args, "--vendored", str(listed))
    assert done.returncode == 1
    assert json.loads(done.stdout)["summary"]["unvendored"] == ["docker.io/library/redis@sha256:" + "c" * 64]
    index = tmp_path / "index.json"
    index.write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "mediaType": "application/vnd.oci.image.index.v1+json",
                        "digest": "sha256:" + "c" * 64,
                        "size": 1,
                    },
                    {
                        "mediaType": "application/vnd.oci.image.index.v1+json",
                        "digest": "sha256:" + "9" * 64,
                        "size": 1,
                        "annotations": {
                            "io.containerd.image.name": "registry.example.com/shop/frontend:4.2.0"
                        },
                    },
                ],
            }
        )
    )
    assert cli(*args, "--vendored", str(index)).returncode == 0


def test_why_lists_every_place(cli: RunCli) -> None:
    done = cli("sweep", "--chart", PLATFORM, "--why", "docker.io/bitnami/kubectl")
    assert done.returncode == 0
    assert done.stdout.splitlines() == [
        "docker.io/bitnami/kubectl:1.31  [definite]",
        f"    {PLATFORM}/templates/operator.yaml:26  Deployment platform-operator  "
        "spec.template.spec.containers[0].env[1].value  (chart platform)",
        f"    {PLATFORM}/templates/cronjob.yaml:14  CronJob platform-cleanup  "
        "spec.jobTemplate.spec.template.spec.containers[0].image  (chart platform)",
    ]
    missing = cli("sweep", "--chart", PLATFORM, "--why", "nginx")
    assert missing.returncode == 1 and "nginx: no document" in _one_clean_line(missing)


def test_stdin_manifests(cli: RunCli, helm: str, repo_root: Path) -> None:
    rendered = subprocess.run(
        [helm, "template", "x", PLATFORM], cwd=repo_root, capture_output=True, text=True, check=True
    ).stdout
    done = cli("sweep", "--manifests", "-", "--format", "json", input=rendered)
    assert done.returncode == 0, done.stderr
    images = json.loads(done.stdout)["images"]
    assert len(images) == 10  # 12 with the chart, minus the two only the helm.sh/images annotation names
    assert {loc["file"] for i in images for loc in i["locations"]} == {"<stdin>"}


# --- bad input: one line, no traceback, the documented exit code -------------------------------------


@pytest.mark.parametrize(
    ("args", "code", "pattern"),
    [
        (
            ("--manifests", "tests/fixtures/bad/malformed.yaml"),
            2,
            r"tests/fixtures/bad/malformed\.yaml:\d+: malformed YAML",
        ),
        (("--manifests", "tests/fixtures/bad/alias-bomb.yaml"), 2, r"alias-bomb\.yaml.*alias bomb"),
        (("--manifests", "tests/fixtures/bad/non-utf8.yaml"), 2, r"non-utf8\.yaml:6: not UTF-8"),
        (("--chart", "tests/fixtures/charts/missing"), 2, r"tests/fixtures/charts/missing: chart not found"),
        (("--chart", PLATFORM, "--values", "nope.yaml"), 2, r"nope\.yaml: values file not found"),
        (
            ("--chart", "tests/fixtures/bad/failing-chart"),
            3,
            r"failed: execution error at \(failing/templates/broken",
        ),
        (
            ("--kustomize", "tests/fixtures/manifests"),
            2,  # refused before kubectl runs: the closure check reads the kustomization first
            r"tests/fixtures/manifests holds no kustomization",
        ),
        ((), 2, r"nothing to sweep"),
        (("--manifests", "x.yaml", "--fail-on-unvendored"), 2, r"x\.yaml: manifest file not found"),
        (
            ("--manifests", "tests/fixtures/manifests/decoys.yaml", "--fail-on-unvendored"),
            2,
            r"needs something to check",
        ),
        (("--values", "v.yaml"), 2, r"need --chart"),
        (
            ("--manifests", "tests/fixtures/manifests/invalid-ref.yaml"),
            1,
            r"invalid-ref\.yaml:8: 2 invalid image reference\(s\), first 'Registry\.Example\.com/Team/App:1\.0'",
        ),
    ],
)
def test_bad_input(cli: RunCli, args: tuple[str, ...], code: int, pattern: str) -> None:
    done = cli("sweep", *args)
    assert done.returncode == code, done.stderr
    stderr = done.stderr
    if code == 1:  # a check that ran: the report and summary line come first, then the one error line
        stderr = stderr.splitlines()[-1]
    assert re.search(pattern, _one_clean_line(subprocess.CompletedProcess([], code, "", stderr)))


def test_huge_manifest_is_refused(cli: RunCli, tmp_path: Path) -> None:
    huge = tmp_path / "huge.yaml"
    with huge.open("wb") as handle:
        handle.truncate(64 * 1024 * 1024 + 1)
    done = cli("sweep", "--manifests", str(huge))
    assert done.returncode == 2 and "larger than" in _one_clean_line(done)


def test_installed_copy_without_helm_exits_15_with_an_install_hint(run_cli: RunCli, repo_root: Path,
                                                                   tmp_path: Path) -> None:
    """What a pip-installed tool prints without helm: the package alone (as a wheel lays it out, with no
    scripts/ beside it), an empty PATH: exit 15 "missing tool" and how to install helm, not scripts/setup.sh."""
    import shutil

    site = tmp_path / "site-packages"
    shutil.copytree(repo_root / "bundler", site / "bundler", ignore=shutil.ignore_patterns("__pycache__"))
    done = run_cli("sweep", "--chart", str(repo_root / PLATFORM), cwd=tmp_path,
                   env={"PYTHONPATH": str(site), "PATH": str(tmp_path)})
    assert done.returncode == 15, done.stderr
    line = _one_clean_line(done)
    assert "helm not found (looked at $AIRGAP_BUNDLE_HELM or PATH)" in line and "install helm v4" in line
    assert "setup.sh" not in line and ".tools" not in line
