"""The Helm path's edges with real helm: null defaults of subcharts (helm drops them while merging; the
trace reads them back), subcharts packaged as .tgz, and an image composed from values with fixed text
between them (refused, naming the values and the text)."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from bundler import render, sweep
from bundler.errors import UnrelocatedImageError
from bundler.reference import ImageRef
from bundler.relocate import LocalRefs, local_reference
from bundler.relocate import helm as relocate_helm
from bundler.render import materialize_chart
from bundler.spec import ChartSource

TRACE = Path(__file__).parent / "fixtures" / "charts" / "trace"
HOST = "registry.airgap.local:5000"


def _effective(chart: ChartSource, helm: str, work: Path) -> dict:
    """What relocate_chart computes first: the materialized chart with the values dump template."""
    root = materialize_chart(chart, work / "chart")
    (root / relocate_helm.DUMP_TEMPLATE).write_text(
        f"{{{{- if .Values.{relocate_helm.DUMP_FLAG} }}}}\n{{{{ toJson .Values }}}}\n{{{{- end }}}}\n")
    plain = dataclasses.replace(chart, path=root)
    return relocate_helm.effective_values(plain, render.Tools(helm=helm), work, root)


def test_null_defaults_of_a_subchart_are_read_back(helm: str, tmp_path: Path) -> None:
    chart_dir = shutil.copytree(TRACE / "alias", tmp_path / "alias")
    with (chart_dir / "charts" / "cache" / "values.yaml").open("a") as f:
        f.write("resources: null\npersistence:\n  size: 1Gi\n  storageClass: null\n")
    values = _effective(ChartSource(chart_dir, "rel", "team"), helm, tmp_path)
    for alias in ("session-cache", "query-cache"):
        assert values[alias]["resources"] is None and "resources" in values[alias]
        assert values[alias]["persistence"] == {"size": "1Gi", "storageClass": None}


def test_null_defaults_of_a_helm2_subchart_are_read_back(helm: str, tmp_path: Path) -> None:
    # the same chart as Helm 2 wrote it: apiVersion v1, its dependencies (aliases) in requirements.yaml
    chart_dir = shutil.copytree(TRACE / "alias", tmp_path / "alias")
    meta = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    (chart_dir / "requirements.yaml").write_text(yaml.safe_dump({"dependencies": meta.pop("dependencies")}))
    (chart_dir / "Chart.yaml").write_text(yaml.safe_dump({**meta, "apiVersion": "v1"}, sort_keys=False))
    with (chart_dir / "charts" / "cache" / "values.yaml").open("a") as f:
        f.write("resources: null\n")
    values = _effective(ChartSource(chart_dir, "rel", "team"), helm, tmp_path)
    assert values["session-cache"]["resources"] is None and "resources" in values["session-cache"]


def test_a_subchart_packaged_as_tgz_needs_no_read_back(helm: str, tmp_path: Path) -> None:
    chart_dir = shutil.copytree(TRACE / "alias", tmp_path / "alias")
    subprocess.run([helm, "package", str(chart_dir / "charts" / "cache"), "--destination", str(chart_dir / "charts")],
                   check=True, capture_output=True)
    shutil.rmtree(chart_dir / "charts" / "cache")
    values = _effective(ChartSource(chart_dir, "rel", "team"), helm, tmp_path)
    assert values["session-cache"]["image"]["repository"] == "valkey/valkey"


def _chart_from(root: Path, app: str, sidecar: str, values: str) -> ChartSource:
    files = {
        "Chart.yaml": "apiVersion: v2\nname: shared\nversion: 0.1.0\n",
        "values.yaml": values,
        "templates/deploy.yaml": f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: app}}
spec:
  selector: {{matchLabels: {{app: a}}}}
  template:
    metadata: {{labels: {{app: a}}}}
    spec:
      containers:
      - name: app
        image: "{app}"
      - name: sidecar
        image: "{sidecar}"
""",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return ChartSource(root, "rel", "team")


def _local_for(*refs: str) -> LocalRefs:
    parsed = [ImageRef.parse(r) for r in refs]
    return LocalRefs({r.canonical: local_reference(r, "sha256:" + str(n) * 64, host=HOST)
                      for n, r in enumerate(parsed, start=1)})


APP, SIDECAR = "docker.io/example/app:1.0", "docker.io/example/sidecar:1.0"


def test_an_image_composed_with_fixed_text_names_the_values_and_the_text(helm: str, tmp_path: Path) -> None:
    chart = _chart_from(tmp_path / "shared", "{{ .Values.registry }}/example/app:{{ .Values.tag }}",
                        "{{ .Values.registry }}/example/sidecar:{{ .Values.tag }}", "registry: docker.io\ntag: '1.0'\n")
    with pytest.raises(UnrelocatedImageError, match=r"containers\[0\].image: docker.io/example/app:1.0 is composed "
                                                    r"from registry, tag with fixed text '/example/app:'"):
        relocate_helm.relocate_chart(chart, render.Tools(helm=helm), _local_for(APP, SIDECAR), host=HOST,
                                     find=sweep.sweep_document)

