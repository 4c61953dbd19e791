"""render.py with the real helm and kubectl: origins, chart annotations, manifests, and bad input."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bundler.documents import MAX_STREAM_BYTES
from bundler.errors import InputError, RenderError, ToolMissingError
from bundler.render import Sources, Tools, chart_images, condense, find_tool, load_manifests, render
from bundler.spec import ChartSource

FIXTURES = Path(__file__).parent / "fixtures"
PLATFORM = FIXTURES / "charts" / "platform"


@pytest.fixture
def tools(helm: str, kubectl: str) -> Tools:
    return Tools(helm=helm, kubectl=kubectl, timeout=120)


@pytest.fixture(autouse=True)
def _cwd(repo_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo_root)  # origins are shown relative to the working directory


def _chart(**kw: object) -> ChartSource:
    return ChartSource(**{"path": PLATFORM, "release": "rel", "namespace": "team", **kw})  # type: ignore[arg-type]


def test_chart_origins_name_chart_template_and_line(tools: Tools) -> None:
    docs = render(Sources(charts=(_chart(),)), tools)
    got = [(d.kind, d.name, d.origin.file, d.origin.line, d.origin.chart, d.origin.template) for d in docs]
    base = "tests/fixtures/charts/platform"
    assert got == [
        (
            "DaemonSet",
            "rel-worker",
            f"{base}/charts/worker/templates/daemonset.yaml",
            1,
            "platform/charts/worker",
            "platform/charts/worker/templates/daemonset.yaml",
        ),
        ("Deployment", "rel-api", f"{base}/templates/api.yaml", 1, "platform", "platform/templates/api.yaml"),
        # the template starts with a comment line: the document starts on line 2, as in the template
        (
            "Deployment",
            "rel-operator",
            f"{base}/templates/operator.yaml",
            2,
            "platform",
            "platform/templates/operator.yaml",
        ),
        (
            "CronJob",
            "rel-cleanup",
            f"{base}/templates/cronjob.yaml",
            1,
            "platform",
            "platform/templates/cronjob.yaml",
        ),
        (
            "Pod",
            "rel-test-api",
            f"{base}/templates/tests/test-api.yaml",
            1,
            "platform",
            "platform/templates/tests/test-api.yaml",
        ),
        # the hook is printed last, after its own `# Source:`; its line counts on within operator.yaml
        (
            "Job",
            "rel-preinstall",
            f"{base}/templates/operator.yaml",
            32,
            "platform",
            "platform/templates/operator.yaml",
        ),
    ]
    api = docs[1]
    assert api.namespace == "team"
    # a field's line is the line in the rendered template, here the same as in the template source
    template_lines = (PLATFORM / "templates" / "api.yaml").read_text().splitlines()
    line = api.line_of(("spec", "template", "spec", "containers", 0, "image"))
    assert line == 21 and template_lines[line - 1].strip().startswith('image: "{{ .Values.image.registry }}')
    # below a whitespace-trimming `{{- if }}` the rendered output is one line shorter (documented)
    assert api.line_of(("spec", "template", "spec", "containers", 1, "image")) == 25
    assert template_lines[25].strip() == "image: envoyproxy/envoy:v1.31.2"
    job = docs[-1]
    job_line = job.line_of(("spec", "template", "spec", "containers", 0, "image"))
    assert (PLATFORM / "templates" / "operator.yaml").read_text().splitlines()[
        job_line - 1
    ].strip() == "image: docker.io/library/alpine:3.20"


def test_chart_values_set_kube_version_and_skip_tests(tools: Tools, tmp_path: Path) -> None:
    values = tmp_path / "prod.yaml"
    values.write_text("sidecar:\n  enabled: false\n")
    docs = render(
        Sources(
            charts=(
                _chart(
                    values=(values,),
                    set=("operator.image=quay.io/x/op:9.9",),
                    kube_version="1.31.0",
                    include_tests=False,
                ),
            )
        ),
        tools,
    )
    kinds = [(d.kind, d.name) for d in docs]
    assert ("Pod", "rel-test-api") not in kinds  # --skip-tests
    api = next(d for d in docs if d.name == "rel-api")
    assert [c["name"] for c in api.obj["spec"]["template"]["spec"]["containers"]] == ["api"]
    operator = next(d for d in docs if d.name == "rel-operator")
    assert operator.obj["spec"]["template"]["spec"]["containers"][0]["image"] == "quay.io/x/op:9.9"


def test_kustomize_applies_images_transformer(tools: Tools) -> None:
    docs = render(Sources(kustomize=(FIXTURES / "kustomize" / "base",)), tools)
    assert len(docs) == 1
    doc = docs[0]
    assert (doc.origin.file, doc.origin.source, doc.namespace) == (
        "tests/fixtures/kustomize/base",
        "kustomize",
        "shop",
    )
    images = [c["image"] for c in doc.obj["spec"]["template"]["spec"]["containers"]]
    assert images == ["registry.example.com/shop/frontend:4.2.0", "redis@sha256:" + "c" * 64]
    assert doc.line_of(("spec", "template", "spec", "containers", 0, "image")) == 16


def test_manifests_dir_glob_file_and_stdin() -> None:
    by_dir = load_manifests(str(FIXTURES / "manifests"))
    files = sorted({d.origin.file for d in by_dir})
    assert files == [
        f"tests/fixtures/manifests/{n}.yaml"
        for n in ("crossplane", "custom-resources", "decoys", "invalid-ref", "olm-csv", "workloads")
    ]
    by_glob = load_manifests(str(FIXTURES / "manifests" / "work*.yaml"))
    assert [(d.kind, d.origin.line) for d in by_glob] == [
        ("Pod", 2),
        ("StatefulSet", 18),
        ("ReplicaSet", 35),
        ("ReplicationController", 50),
        ("PodTemplate", 61),
        ("List", 71),
    ]
    stdin = load_manifests("-", stdin_text="---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\n")
    assert [(d.origin.file, d.origin.line, d.name) for d in stdin] == [("<stdin>", 2, "p")]
    relative = load_manifests("tests/fixtures/manifests/olm-csv.yaml")
    assert relative[0].origin.file == "tests/fixtures/manifests/olm-csv.yaml"


def test_chart_images_from_dir_and_packaged_chart(helm: str, tmp_path: Path) -> None:
    got = [(c.image, c.name, c.chart, c.file, c.line, c.index) for c in chart_images(PLATFORM)]
    assert got == [
        (
            "quay.io/prometheus-operator/prometheus-config-reloader:v0.75.0",
            "reloader",
            "platform",
            "tests/fixtures/charts/platform/Chart.yaml",
            14,
            0,
        ),
        (
            "registry.k8s.io/pause:3.10",
            "pause",
            "platform",
            "tests/fixtures/charts/platform/Chart.yaml",
            16,
            1,
        ),
        (
            "docker.io/example/helper:0.1",
            "helper",
            "platform/charts/worker",
            "tests/fixtures/charts/platform/charts/worker/Chart.yaml",
            7,
            0,
        ),
    ]
    lines = (PLATFORM / "Chart.yaml").read_text().splitlines()
    assert lines[13].strip() == "image: quay.io/prometheus-operator/prometheus-config-reloader:v0.75.0"
    subprocess.run(
        [helm, "package", str(PLATFORM), "--destination", str(tmp_path)], check=True, capture_output=True
    )
    packaged = chart_images(tmp_path / "platform-1.2.0.tgz")
    # helm package re-serialises Chart.yaml, so only images and chart paths are compared
    assert [(c.image, c.name, c.chart) for c in packaged] == [g[:3] for g in got]
    assert all(c.line > 1 for c in packaged)
    assert packaged[0].file.endswith("platform-1.2.0.tgz/platform/Chart.yaml")


def test_find_tool_env_path_and_missing(helm: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AIRGAP_BUNDLE_HELM", helm)
    assert find_tool("helm") == helm
    monkeypatch.delenv("AIRGAP_BUNDLE_HELM")
    link = tmp_path / "bin" / "helm"
    link.parent.mkdir()
    link.symlink_to(helm)
    monkeypatch.setenv("PATH", str(link.parent))
    assert find_tool("helm") == str(link)  # PATH first
    not_exec = tmp_path / "helm-notexec"
    not_exec.write_text("")
    monkeypatch.setenv("AIRGAP_BUNDLE_HELM", str(not_exec))
    with pytest.raises(ToolMissingError, match="not an executable"):
        find_tool("helm")


def test_missing_tool_hint_fits_how_the_tool_was_installed(tmp_path: Path) -> None:
    """A checkout points at scripts/setup.sh; a pip-installed copy (no scripts/ beside the package)
    says to install the tool, and never names a .tools folder inside site-packages."""
    empty = {"PATH": str(tmp_path)}
    checkout_root = tmp_path / "clone"
    (checkout_root / "scripts").mkdir(parents=True)
    (checkout_root / "scripts" / "setup.sh").write_text("")
    with pytest.raises(ToolMissingError) as checkout:
        find_tool("helm", root=checkout_root, environ=empty)
    assert "run scripts/setup.sh" in str(checkout.value) and ".tools/bin" in str(checkout.value)
    with pytest.raises(ToolMissingError) as installed:
        find_tool("kubectl", root=tmp_path, environ=empty)
    assert str(installed.value) == ("kubectl not found (looked at $AIRGAP_BUNDLE_KUBECTL or PATH) (install kubectl "
                                    "(https://kubernetes.io/docs/tasks/tools/) and put it on PATH, "
                                    "or set AIRGAP_BUNDLE_KUBECTL to its path)")
    assert installed.value.exit_code == 15


def test_tool_that_cannot_run_is_a_missing_tool(tmp_path: Path) -> None:
    """A binary for another machine (what a wrong-architecture image gets) fails with exit 15, not 3."""
    alien = tmp_path / "helm"
    alien.write_bytes(b"\x7fELF" + bytes(60))  # an ELF header no kernel here executes
    alien.chmod(0o755)
    with pytest.raises(ToolMissingError, match=r"cannot run .*helm: Exec format error"):
        render(Sources(charts=(_chart(),)), Tools(helm=str(alien)))


# --- bad input: one clear error naming the file -----------------------------------------------------


def test_missing_chart_and_values_file(tools: Tools, tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"^tests/fixtures/charts/nope: chart not found"):
        render(Sources(charts=(_chart(path=FIXTURES / "charts" / "nope"),)), tools)
    with pytest.raises(InputError, match=r"missing\.yaml: values file not found"):
        render(Sources(charts=(_chart(values=(tmp_path / "missing.yaml",)),)), tools)


def test_failing_template_is_one_line_with_helms_message(tools: Tools) -> None:
    with pytest.raises(RenderError) as info:
        render(Sources(charts=(_chart(path=FIXTURES / "bad" / "failing-chart"),)), tools)
    message = str(info.value)
    assert "\n" not in message
    assert "failing/templates/broken.yaml:6:12" in message and "values.mustSet is required" in message
    assert "--debug" not in message


def test_kustomize_failure_is_render_error(tools: Tools, tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    with pytest.raises(RenderError) as info:
        render(Sources(kustomize=(tmp_path,)), tools)
    assert "missing.yaml" in str(info.value) and "\n" not in str(info.value)


def test_malformed_yaml_names_file_and_line() -> None:
    with pytest.raises(InputError, match=r"^tests/fixtures/bad/malformed\.yaml:\d+: malformed YAML"):
        load_manifests("tests/fixtures/bad/malformed.yaml")


def test_alias_bomb_is_refused_quickly() -> None:
    with pytest.raises(InputError, match="alias bomb"):
        load_manifests("tests/fixtures/bad/alias-bomb.yaml")


def test_huge_file_is_refused_before_reading(tmp_path: Path) -> None:
    huge = tmp_path / "huge.yaml"
    with huge.open("wb") as handle:  # sparse: costs no disk
        handle.truncate(MAX_STREAM_BYTES + 1)
    with pytest.raises(InputError, match="larger than"):
        load_manifests(str(huge))


def test_non_utf8_names_file_and_line() -> None:
    with pytest.raises(InputError, match=r"^tests/fixtures/bad/non-utf8\.yaml:6: not UTF-8"):
        load_manifests("tests/fixtures/bad/non-utf8.yaml")


def test_missing_manifest_and_empty_glob(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="manifest file not found"):
        load_manifests(str(tmp_path / "absent.yaml"))
    with pytest.raises(InputError, match="no manifest files"):
        load_manifests(str(tmp_path / "*.yaml"))


def test_timeout_is_render_error(tmp_path: Path) -> None:
    slow = tmp_path / "helm"
    slow.write_text("#!/bin/sh\nsleep 5\n")
    slow.chmod(0o755)
    with pytest.raises(RenderError, match="timed out"):
        render(Sources(charts=(_chart(),)), Tools(helm=str(slow), timeout=0.3))


def test_condense_keeps_one_line() -> None:
    assert condense("WARNING: x\nError: boom\n\nUse --debug flag to render out invalid YAML\n") == "boom"
    assert condense("") == "no message"
    # several errors stay on one line; kubectl's `error: ` prefix goes; klog lines are noise
    assert condense("W0101 12:00 warn.go:1] x\nerror: accumulating resources\nError: second\n") == \
        "accumulating resources | second"
    assert condense("WARNING: only a warning\n") == "WARNING: only a warning"  # nothing else to show
    long = condense("Error: " + "x" * 1000, limit=50)
    assert len(long) == 50 and long.endswith("...")
