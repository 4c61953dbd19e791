"""render.py and documents.py on the inputs the main tests do not reach: the tool found only in
`.tools/bin` (or nowhere), folders that are not charts or kustomizations, stamped charts, subcharts
packaged as .tgz, broken Chart.yaml files, tools that cannot run or print non-UTF-8, and YAML streams
that are too big, alias-heavy, null, or unreadable. Every refusal is checked for its exact message."""

from __future__ import annotations

import gc
import gzip
import io
import shutil
import tarfile
from pathlib import Path

import pytest
import yaml

from bundler import render
from bundler.documents import MAX_ALIASES, MAX_STREAM_BYTES, Origin, load_stream
from bundler.errors import InputError, ToolMissingError
from bundler.render import Sources, Tools, chart_images, find_tool, materialize_chart, read_text
from bundler.spec import ChartSource

FIXTURES = Path(__file__).parent / "fixtures"
PLATFORM = FIXTURES / "charts" / "platform"


@pytest.fixture(autouse=True)
def _cwd(repo_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo_root)  # origins are shown relative to the working directory


def _script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_find_tool_falls_back_to_the_tools_folder_then_fails(helm: str, tmp_path: Path) -> None:
    root = tmp_path / "repo"  # a checkout: scripts/setup.sh beside the package, tools in .tools/bin
    (root / ".tools" / "bin").mkdir(parents=True)
    (root / "scripts").mkdir()
    (root / "scripts" / "setup.sh").write_text("")
    env = {"PATH": str(tmp_path / "empty")}
    with pytest.raises(ToolMissingError, match=r"helm not found \(looked at \$AIRGAP_BUNDLE_HELM, PATH or .*repo/.tools/bin\)"):
        find_tool("helm", root=root, environ=env)
    shutil.copy(helm, root / ".tools" / "bin" / "helm")
    assert find_tool("helm", root=root, environ=env) == str(root / ".tools" / "bin" / "helm")


def test_a_folder_without_chart_yaml_is_not_a_chart(tmp_path: Path, helm: str) -> None:
    with pytest.raises(InputError, match=r"not a chart \(no Chart.yaml\)"):
        render.render(Sources(charts=(ChartSource(path=tmp_path, release="r"),)), Tools(helm=helm))
    with pytest.raises(InputError, match=r"not a chart \(no Chart.yaml\)"):
        chart_images(tmp_path)
    with pytest.raises(InputError, match="nope: chart not found"):
        chart_images(tmp_path / "nope")


@pytest.mark.parametrize(("version", "app_version"), [("9.9.9", None), (None, "2.0")])
def test_materialize_stamps_only_what_the_spec_gives(tmp_path: Path, version: str | None,
                                                     app_version: str | None) -> None:
    original = yaml.safe_load((PLATFORM / "Chart.yaml").read_text())
    root = materialize_chart(ChartSource(path=PLATFORM, release="r", stamp_version=version,
                                         stamp_app_version=app_version), tmp_path)
    meta = yaml.safe_load((root / "Chart.yaml").read_text())
    assert meta["version"] == (version or original["version"])
    assert meta.get("appVersion") == (app_version or original.get("appVersion"))


def test_render_kustomize_and_a_missing_kustomization(kubectl: str, tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: [cm.yaml]\n")
    (tmp_path / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n")
    docs = render.render_kustomize(tmp_path, Tools(kubectl=kubectl))
    assert [(d.kind, d.name, d.origin.source) for d in docs] == [("ConfigMap", "c", "kustomize")]
    with pytest.raises(InputError, match="gone: kustomization directory not found"):
        render.render_kustomize(tmp_path / "gone", Tools(kubectl=kubectl))


def test_read_text_of_a_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read: Is a directory"):
        read_text(tmp_path)


def _tgz(path: Path, files: dict[str, bytes]) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    path.write_bytes(gzip.compress(buf.getvalue(), mtime=0))
    return path


SUB = (b"apiVersion: v2\nname: sub\nversion: 0.1.0\nannotations:\n  helm.sh/images: |\n"
       b"    - name: s\n      image: docker.io/example/sub:1\n")


def test_chart_images_reads_a_subchart_packaged_in_charts(tmp_path: Path) -> None:
    chart = tmp_path / "top"
    (chart / "charts").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: top\nversion: 1.0.0\n")
    _tgz(chart / "charts" / "sub-0.1.0.tgz", {"sub/Chart.yaml": SUB})
    (chart / "charts" / "README").write_text("not a chart\n")
    got = [(c.image, c.chart, c.line) for c in chart_images(chart)]
    assert got == [("docker.io/example/sub:1", "top/charts/sub", 7)]


def test_broken_chart_archives_and_chart_yaml_files(tmp_path: Path) -> None:
    bad_utf8 = _tgz(tmp_path / "a.tgz", {"a/Chart.yaml": b"name: \xff\n"})
    with pytest.raises(InputError, match="a.tgz/a/Chart.yaml: not UTF-8"):
        chart_images(bad_utf8)
    (tmp_path / "b.tgz").write_bytes(b"not gzip")
    with pytest.raises(InputError, match="b.tgz: not a readable chart archive"):
        chart_images(tmp_path / "b.tgz")
    nameless = _tgz(tmp_path / "c.tgz", {"c/Chart.yaml": b"version: 1.0.0\n"})
    with pytest.raises(InputError, match="c.tgz/c/Chart.yaml: Chart.yaml has no name"):
        chart_images(nameless)
    not_a_list = _tgz(tmp_path / "d.tgz", {"d/Chart.yaml": b"name: d\nannotations:\n  helm.sh/images: one\n"})
    with pytest.raises(InputError, match=r"d.tgz/d/Chart.yaml:3: helm.sh/images must be a YAML list"):
        chart_images(not_a_list)


def test_a_tool_that_cannot_run_or_prints_non_utf8(tmp_path: Path) -> None:
    chart = ChartSource(path=PLATFORM, release="r")
    with pytest.raises(ToolMissingError, match="cannot run .*/missing-helm: No such file or directory") as info:
        render.render(Sources(charts=(chart,)), Tools(helm=str(tmp_path / "missing-helm")))
    assert info.value.exit_code == 15
    odd = _script(tmp_path / "helm", r"printf 'kind: ConfigMap\nname: \377\n'")
    with pytest.raises(InputError, match=r"helm template tests/fixtures/charts/platform: output is not UTF-8 \(byte 22\)"):
        render.render(Sources(charts=(chart,)), Tools(helm=odd))


def test_a_document_before_any_source_comment_is_kept(tmp_path: Path) -> None:
    fake = _script(tmp_path / "helm", "cat <<'EOF'\n"
                   "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: early}\n---\n"
                   "# Source: platform/templates/cm.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: late}\n"
                   "EOF\n")
    docs = render.render(Sources(charts=(ChartSource(path=PLATFORM, release="r"),)), Tools(helm=fake))
    assert [(d.name, d.origin.template) for d in docs] == [("early", None), ("late", "platform/templates/cm.yaml")]


# --- documents.py -------------------------------------------------------------------------------------

ORIGIN = Origin("in.yaml", 1)


def test_a_stream_over_the_limit_is_refused_before_parsing() -> None:
    with pytest.raises(InputError, match=f"in.yaml: {MAX_STREAM_BYTES + 1} bytes is larger than the"):
        load_stream("#" * (MAX_STREAM_BYTES + 1), ORIGIN)


def test_many_aliases_of_one_small_anchor_are_refused() -> None:
    text = "a: &x 1\nb: [" + ", ".join(["*x"] * (MAX_ALIASES + 1)) + "]\n"
    with pytest.raises(InputError, match=f"in.yaml: more than {MAX_ALIASES} YAML aliases"):
        load_stream(text, ORIGIN)
    assert len(load_stream("a: &x 1\nb: [" + ", ".join(["*x"] * 10) + ", '*'] # " + "*" * MAX_ALIASES + "\n",
                           ORIGIN)) == 1  # many '*' characters but few aliases: parsed


def test_null_documents_are_skipped_and_unreadable_characters_refused() -> None:
    docs = load_stream("---\nnull\n---\n~\n---\nkind: A\n", ORIGIN)
    assert [(d.kind, d.origin.line) for d in docs] == [("A", 6)]
    with pytest.raises(InputError, match="in.yaml: malformed YAML: .*unacceptable character"):
        load_stream("kind: \x07\n", ORIGIN)


def test_parsing_leaves_a_disabled_collector_disabled() -> None:
    gc.disable()
    try:
        load_stream("kind: A\n", ORIGIN)
        assert not gc.isenabled()
    finally:
        gc.enable()
