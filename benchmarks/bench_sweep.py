"""Sweep benchmark (not a test): documents per second, and the sweep's cost next to `helm template`.

1. 10,000 generated documents (Deployments with args and env, StatefulSets, CronJobs, ConfigMaps,
   Services, custom resources with split image objects) are parsed with libyaml and swept.
2. A generated chart of 120 templates is rendered with `helm template`; the time render.py spends
   splitting and parsing helm's output plus the sweep is compared with helm's own time.

Run: `.venv/bin/python benchmarks/bench_sweep.py` (helm from PATH or .tools/bin).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bundler.documents import Origin, load_stream  # noqa: E402
from bundler.render import _split_helm_output, find_tool  # noqa: E402
from bundler.sweep import sweep  # noqa: E402

DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: app-{n}
  namespace: team-{m}
  annotations: {{tier: backend}}
spec:
  replicas: 3
  selector:
    matchLabels: {{app: app-{n}}}
  template:
    metadata:
      labels: {{app: app-{n}}}
      annotations: {{prometheus.io/scrape: "true", prometheus.io/port: "9090"}}
    spec:
      securityContext: {{runAsUser: 1001, runAsGroup: 1001}}
      initContainers:
        - name: init
          image: registry.example.com/team-{m}/init:1.{n}
          command: ["sh", "-c", "until nc -z db:3306; do sleep 1; done"]
      containers:
        - name: app
          image: registry.example.com/team-{m}/app-{n}:2.{n}
          args: ["--listen=0.0.0.0:8080", "--sidecar-image=quay.io/example/sidecar:{n}.0", "--log-level=info"]
          env:
            - {{name: RELATED_IMAGE_HELPER, value: "quay.io/example/helper:{n}.1"}}
            - {{name: IMAGE_TAG, value: "v1.{n}"}}
            - {{name: DB_ADDR, value: "db:3306"}}
          ports: [{{containerPort: 8080}}]
          resources: {{limits: {{cpu: 500m, memory: 256Mi}}, requests: {{cpu: 100m, memory: 128Mi}}}}
          readinessProbe: {{httpGet: {{path: /readyz, port: 8080}}}}
"""
CONFIGMAP = """apiVersion: v1
kind: ConfigMap
metadata: {{name: cfg-{n}, namespace: team-{m}}}
data:
  owner: "1001:1001"
  probe: db:3306/readyz
  config.yaml: |
    image: quay.io/not/swept:{n}
    rules: [alert.rules:HighCPU]
"""
SERVICE = """apiVersion: v1
kind: Service
metadata: {{name: svc-{n}, namespace: team-{m}}}
spec:
  selector: {{app: app-{n}}}
  ports: [{{port: 80, targetPort: 8080}}]
"""
CRONJOB = """apiVersion: batch/v1
kind: CronJob
metadata: {{name: cron-{n}}}
spec:
  schedule: "0 3 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers:
            - {{name: job, image: "docker.io/bitnami/kubectl:1.{m}"}}
"""
CUSTOM = """apiVersion: example.com/v1
kind: Database
metadata: {{name: db-{n}}}
spec:
  version: "16.{m}"
  image: {{registry: docker.io, repository: bitnami/postgresql, tag: "16.{m}.0"}}
  storage: {{size: 10Gi, class: fast}}
  backup: {{schedule: "0 1 * * *", target: "s3://bucket/db-{n}"}}
"""
KINDS = [DEPLOYMENT, CONFIGMAP, SERVICE, CRONJOB, CUSTOM]


def generate(count: int) -> str:
    return "---\n".join(KINDS[n % len(KINDS)].format(n=n, m=n % 17) for n in range(count))


def best(fn, repeat: int = 3) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_documents(count: int = 10_000) -> None:
    text = generate(count)
    parse_time = best(lambda: load_stream(text, Origin("bench.yaml", 1)))
    docs = load_stream(text, Origin("bench.yaml", 1))
    sweep_time = best(lambda: sweep(docs))
    result = sweep(docs)
    total = parse_time + sweep_time
    print(
        f"{count} documents ({len(text) / 1024:.0f} KiB): parse {parse_time:.3f} s, sweep {sweep_time:.3f} s; "
        f"{count / total:,.0f} documents/s parse+sweep, {count / sweep_time:,.0f} documents/s sweep alone; "
        f"{len(result.images)} images, {len(result.candidates)} candidates"
    )


def write_chart(root: Path, templates: int = 120) -> Path:
    chart = root / "big"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: big\nversion: 1.0.0\n")
    (chart / "values.yaml").write_text(
        'registry: registry.example.com\ntag: "2.0"\nreplicas: 2\n'
        'podAnnotations: {prometheus.io/scrape: "true"}\n'
        "resources: {limits: {cpu: 500m, memory: 256Mi}, requests: {cpu: 100m, memory: 128Mi}}\n"
    )
    # the usual _helpers.tpl: labels and names through `include`, as most public charts do
    (chart / "templates" / "_helpers.tpl").write_text(
        '{{- define "big.name" -}}{{ default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}{{- end }}\n'
        '{{- define "big.labels" -}}\n'
        'helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 }}\n'
        'app.kubernetes.io/name: {{ include "big.name" . }}\n'
        "app.kubernetes.io/instance: {{ .Release.Name }}\n"
        "app.kubernetes.io/managed-by: {{ .Release.Service }}\n"
        "{{- end }}\n"
    )
    for n in range(templates):
        body = KINDS[n % len(KINDS)].format(n=n, m=n % 17)
        body = body.replace("registry.example.com", "{{ .Values.registry }}").replace(
            "replicas: 3", "replicas: {{ .Values.replicas }}"
        )
        body = body.replace(
            "metadata:\n  name: app-",
            'metadata:\n  labels:\n    {{- include "big.labels" . | nindent 4 }}\n'
            '  name: {{ include "big.name" . }}-app-',
        )
        body = body.replace(
            "resources: {limits: {cpu: 500m, memory: 256Mi}, requests: {cpu: 100m, memory: 128Mi}}",
            "resources: {{- toYaml .Values.resources | nindent 12 }}",
        )
        (chart / "templates" / f"t{n:03d}.yaml").write_text(body)
    return chart


def bench_chart() -> None:
    helm = find_tool("helm")
    with tempfile.TemporaryDirectory() as tmp:
        chart = write_chart(Path(tmp))
        run = lambda: subprocess.run([helm, "template", "rel", str(chart)], capture_output=True, check=True)  # noqa: E731
        helm_times = [best(run, 1) for _ in range(5)]
        helm_time = statistics.median(helm_times)
        text = run().stdout.decode()
        parse_time = best(lambda: _split_helm_output(text, chart), 5)
        docs = _split_helm_output(text, chart)
        sweep_time = best(lambda: sweep(docs), 5)
        import yaml

        baseline = best(lambda: list(yaml.load_all(text, Loader=yaml.CSafeLoader)), 5)
        ours = parse_time + sweep_time
        print(
            f"chart of 120 templates ({len(docs)} documents, {len(text) / 1024:.0f} KiB rendered): "
            f"helm template {helm_time:.3f} s (median of 5); parse {parse_time:.4f} s + sweep {sweep_time:.4f} s "
            f"= {ours:.4f} s = {ours / helm_time:.2f}x helm template (sweep alone {sweep_time / helm_time:.2f}x; "
            f"bare yaml.load_all with CSafeLoader {baseline:.4f} s = {baseline / helm_time:.2f}x)"
        )


if __name__ == "__main__":
    bench_documents()
    bench_chart()
