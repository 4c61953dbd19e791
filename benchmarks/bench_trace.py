"""Trace benchmark (not a test): what the Helm values trace costs on a chart the size of kube-prometheus-stack.

The generated chart has what makes kube-prometheus-stack expensive to trace: ~130 templates rendering
~200 documents, ~1,500 value leaves (about 300 of them plausible image parts), 24 images composed from
`global.imageRegistry` / `registry` / `repository` / `tag` / `sha` objects (tags defaulting to
appVersion, some shared with a CR `spec.version` and with labels), operator flags that carry images,
two aliased subcharts, and a template that validates a tag. It reports the renders and seconds the
relocation takes (trace, solve, both invariants) next to one plain `helm template` of the same chart.

Run: `.venv/bin/python benchmarks/bench_trace.py [--rounds N]` (helm from PATH or .tools/bin).
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bundler import render, sweep  # noqa: E402
from bundler.relocate import LocalRefs, local_reference  # noqa: E402
from bundler.relocate.helm import relocate_chart  # noqa: E402
from bundler.spec import ChartSource  # noqa: E402

COMPONENTS = 24
FILLER_TEMPLATES = 100
HOST = "registry.airgap.local:5000"

IMAGE_HELPER = """{{- define "big.image" -}}
{{- $registry := .root.Values.global.imageRegistry | default .image.registry -}}
{{- $tag := .image.tag | default .root.Chart.AppVersion -}}
{{- if .image.sha -}}{{ printf "%s/%s:%s@sha256:%s" $registry .image.repository $tag .image.sha }}
{{- else -}}{{ printf "%s/%s:%s" $registry .image.repository $tag }}{{- end -}}
{{- end -}}
{{- define "big.labels" -}}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
"""

DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{{{ .Release.Name }}}}-c{n}
  labels:
    {{{{- include "big.labels" . | nindent 4 }}}}
    component-version: {{{{ .Values.c{n}.image.tag | default .Chart.AppVersion | quote }}}}
spec:
  replicas: {{{{ .Values.c{n}.replicas }}}}
  selector: {{matchLabels: {{app: c{n}}}}}
  template:
    metadata: {{labels: {{app: c{n}}}}}
    spec:
      containers:
        - name: main
          image: {{{{ include "big.image" (dict "root" $ "image" .Values.c{n}.image) | quote }}}}
          args:
            - --log-level={{{{ .Values.c{n}.logLevel }}}}
            - --sidecar-image={{{{ include "big.image" (dict "root" $ "image" .Values.c{n}.sidecar) }}}}
          resources: {{{{ toYaml .Values.c{n}.resources | nindent 12 }}}}
"""

CR = """apiVersion: monitoring.coreos.com/v1
kind: Prometheus
metadata: {{name: {{{{ .Release.Name }}}}-p{n}}}
spec:
  image: {{{{ include "big.image" (dict "root" $ "image" .Values.c{n}.image) | quote }}}}
  version: {{{{ .Values.c{n}.image.tag | default .Chart.AppVersion }}}}
  replicas: {{{{ .Values.c{n}.replicas }}}}
"""

VALIDATE = """{{- if not (regexMatch "^v?[0-9]+\\\\.[0-9]+" (.Values.c0.image.tag | default .Chart.AppVersion)) -}}
{{- fail "c0.image.tag must be a version" -}}
{{- end -}}
"""

FILLER = """apiVersion: v1
kind: ConfigMap
metadata:
  name: {{{{ .Release.Name }}}}-f{n}
  labels:
    {{{{- include "big.labels" . | nindent 4 }}}}
data:
  rules.yaml: |
    {{{{- range $k, $v := .Values.f{n} }}}}
    {{{{ $k }}}}: {{{{ $v | quote }}}}
    {{{{- end }}}}
"""


def _values() -> str:
    lines = ["global:", "  imageRegistry: \"\"", "sub1:", "  image: {registry: quay.io, repository: s/one, tag: v1.0.0}",
             "sub2:", "  image: {registry: quay.io, repository: s/two, tag: v2.0.0}"]
    for n in range(COMPONENTS):
        tag = '""' if n % 3 == 0 else f"v0.{n}.1"
        lines += [f"c{n}:", "  replicas: 1", "  logLevel: info",
                  f"  image: {{registry: quay.io, repository: org/component-{n}, tag: {tag}, sha: \"\"}}",
                  f"  sidecar: {{registry: docker.io, repository: org/sidecar-{n}, tag: \"1.{n}\", sha: \"\"}}",
                  "  resources: {limits: {cpu: 100m, memory: 64Mi}}"]
    for n in range(FILLER_TEMPLATES):
        lines.append(f"f{n}:")
        lines += [f"  rule{k}: value-{n}-{k}" for k in range(12)]
    return "\n".join(lines) + "\n"


def make_chart(root: Path, *, validate: bool = True) -> Path:
    chart = root / ("big" if validate else "big-plain")
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: big\nversion: 70.0.0\nappVersion: v0.80.0\n"
                                      "dependencies:\n  - {name: sub, version: 0.1.0, alias: sub1}\n"
                                      "  - {name: sub, version: 0.1.0, alias: sub2}\n")
    (chart / "values.yaml").write_text(_values())
    (chart / "templates" / "_helpers.tpl").write_text(IMAGE_HELPER)
    if validate:
        (chart / "templates" / "validate.yaml").write_text(VALIDATE)
    for n in range(COMPONENTS):
        (chart / "templates" / f"c{n}.yaml").write_text(DEPLOYMENT.format(n=n))
        if n % 4 == 0:
            (chart / "templates" / f"p{n}.yaml").write_text(CR.format(n=n))
    for n in range(FILLER_TEMPLATES):
        (chart / "templates" / f"f{n}.yaml").write_text(FILLER.format(n=n))
    sub = chart / "charts" / "sub"
    (sub / "templates").mkdir(parents=True)
    (sub / "Chart.yaml").write_text("apiVersion: v2\nname: sub\nversion: 0.1.0\n")
    (sub / "values.yaml").write_text("image: {registry: quay.io, repository: s/default, tag: v0.0.1}\n")
    (sub / "templates" / "d.yaml").write_text(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: {{ .Release.Name }}-{{ .Chart.Name }}}\n"
        "spec:\n  template:\n    spec:\n      containers:\n        - name: agent\n"
        "          image: \"{{ .Values.global.imageRegistry | default .Values.image.registry }}/"
        "{{ .Values.image.repository }}:{{ .Values.image.tag }}\"\n")
    return chart


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tools = render.Tools()
    for validate in (False, True):
        with tempfile.TemporaryDirectory() as tmp:
            print("with a template that validates a tag:" if validate else "no template validates a value:")
            _measure(ChartSource(make_chart(Path(tmp), validate=validate), "bench", "monitoring"), tools, args.rounds)


def _measure(chart: ChartSource, tools: render.Tools, rounds: int) -> None:
    text = render.helm_template(chart, tools)
    docs = render.split_helm_output(text, chart.path)
    found = sweep.sweep(docs)
    local = LocalRefs({i.ref.canonical: local_reference(
        i.ref, "sha256:" + hashlib.sha256(str(i.ref).encode()).hexdigest(), host=HOST) for i in found.images})
    helm_times, trace_times = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        subprocess.run([tools.get("helm"), "template", "bench", str(chart.path)], capture_output=True, check=True)
        helm_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        result = relocate_chart(chart, tools, local, host=HOST, find=sweep.sweep_document)
        trace_times.append(time.perf_counter() - started)
    helm_s, trace_s = statistics.median(helm_times), statistics.median(trace_times)
    print(f"  chart: {len(docs)} documents, {len(text) // 1024} KiB rendered, {len(found.images)} images")
    print(f"  helm template: {helm_s:.2f} s (median of {rounds})")
    print(f"  relocation (trace + solve + both invariants): {trace_s:.2f} s, {result.renders} renders, "
          f"{trace_s / helm_s:.1f}x one helm template")
    print(f"  result: {result.summary()}")

if __name__ == "__main__":
    main()
