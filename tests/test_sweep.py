"""sweep.py: exact findings on the fixtures, precision on decoys, confidence, hooks, spec options, checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bundler.documents import Document, Origin, format_path, load_stream
from bundler.reference import ImageRef
from bundler.render import Sources, Tools, chart_images, load_manifests, render
from bundler.report import parse_vendored
from bundler.spec import ChartSource, ExtraImage, ImageOptions
from bundler.sweep import (
    Sweep,
    at_registry,
    carried,
    in_list,
    sweep,
    sweep_document,
    vendored_status,
)

FIXTURES = Path(__file__).parent / "fixtures"
M = "tests/fixtures/manifests"


@pytest.fixture(autouse=True)
def _cwd(repo_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo_root)


def table(result: Sweep) -> dict[str, Any]:
    """canonical -> (confidence, hook, [(file, line, kind, name, path, rule)])."""
    return {
        str(i.ref): (
            i.confidence,
            i.hook,
            [(f.origin.file, f.line, f.kind, f.name, f.field_path, f.rule) for f in i.findings],
        )
        for i in result.images
    }


def swept(name: str, **kw: Any) -> Sweep:
    return sweep(load_manifests(f"{M}/{name}"), **kw)


def doc(text: str) -> Document:
    return load_stream(text, Origin("t.yaml", 1))[0]


def test_every_workload_kind() -> None:
    f = f"{M}/workloads.yaml"
    c = "spec.template.spec.containers[0].image"
    assert table(swept("workloads.yaml")) == {
        "[2001:db8::1]:5000/apps/rc:1.0": (
            "definite",
            False,
            [(f, 59, "ReplicationController", "rc", c, "container")],
        ),
        "docker.io/library/postgres:16.4": (
            "definite",
            False,
            [(f, 33, "StatefulSet", "db", c, "container")],
        ),
        "localhost:5000/apps/pt:1.0": (
            "definite",
            False,
            [(f, 69, "PodTemplate", "pt", "template.spec.containers[0].image", "container")],
        ),
        "registry.example.com/apps/job:1.0": (
            "definite",
            False,
            [(f, 84, "Job", "listed-job", c, "container")],
        ),
        "registry.example.com/apps/pod-init:1.0": (
            "definite",
            False,
            [(f, 13, "Pod", "debug-me", "spec.initContainers[0].image", "container")],
        ),
        "registry.example.com/apps/pod:1.0": (
            "definite",
            False,
            [(f, 10, "Pod", "debug-me", "spec.containers[0].image", "container")],
        ),
        "registry.example.com/apps/rs@sha256:3f1e0c5b1f6d4a0b9d2c8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b": (
            "definite",
            False,
            [(f, 48, "ReplicaSet", "rs", c, "container")],
        ),
        "registry.example.com/tools/debug:1.0": (
            "definite",
            False,
            [(f, 16, "Pod", "debug-me", "spec.ephemeralContainers[0].image", "container")],
        ),
    }
    lines = Path(f).read_text().splitlines()
    assert lines[83].strip() == "image: registry.example.com/apps/job:1.0"  # List items keep their lines


def test_decoys_are_not_reported() -> None:
    result = swept("decoys.yaml")
    assert [str(i.ref) for i in result.images] == ["registry.example.com/apps/decoy:1.0"]
    assert result.candidates == () and result.invalid == ()


@pytest.mark.parametrize(
    "value",
    [
        "1001:1001",
        "db:3306/readyz",
        "alert.rules:HighCPUUsage",
        "latest",
        "v1.2.3",
        "1.27",
        "nginx",
        "https://quay.io/repository/prometheus/prometheus:v2",
        "/var/lib/images/nginx:1.0",
        "0.0.0.0:9090",
        "kube-system/kubelet",
        "IfNotPresent",
        "sha256",
        "example.com/path",
        "db:3306",
        "redis.conf:6379",
        "127.0.0.1:8080",
        "registry.example.com/ui",
        "status.phase==Succeeded",
    ],
)
def test_decoy_strings_in_args_env_and_custom_resources(value: str) -> None:
    text = f"""
apiVersion: example.com/v1
kind: Thing
metadata: {{name: t}}
spec:
  field: "{value}"
  list: ["{value}"]
  podTemplate:
    spec:
      containers:
        - name: c
          image: registry.example.com/c:1
          args: ["--x={value}", "{value}", "--flag", "{value}"]
          env:
            - {{name: SOMETHING, value: "{value}"}}
            - {{name: IMAGE_TAG, value: "{value}"}}
            - {{name: IMAGE_NAME, value: "{value}"}}
            - {{name: IMAGE_PULL_POLICY, value: "{value}"}}
"""
    found = [f for f in sweep_document(doc(text)) if f.written != "registry.example.com/c:1"]
    assert found == []


@pytest.mark.parametrize(
    ("arg", "written", "span"),
    [
        ("--config-reloader-image=quay.io/p/reloader:v1", "quay.io/p/reloader:v1", (24, 45)),
        ("--prometheus-config-reloader=quay.io/p/reloader:v1", "quay.io/p/reloader:v1", (29, 50)),
        (
            "--sidecar-image=busybox:1.36",
            "busybox:1.36",
            (16, 28),
        ),  # the flag name says image: a tag suffices
        ("--images=quay.io/a/one:1,quay.io/a/two:2", "quay.io/a/one:1", (9, 24)),
        ("run --base registry.k8s.io/pause:3.10 now", "registry.k8s.io/pause:3.10", (11, 37)),
        ("app@sha256:" + "d" * 64, "app@sha256:" + "d" * 64, (0, 75)),
    ],
)
def test_operator_arg_forms_and_spans(arg: str, written: str, span: tuple[int, int]) -> None:
    text = f"""
apiVersion: v1
kind: Pod
metadata: {{name: p}}
spec:
  containers:
    - name: c
      image: registry.example.com/c:1
      args: ['{arg}']
"""
    found = [f for f in sweep_document(doc(text)) if f.rule in ("arg", "catalogue")]
    # A flag the operator catalogue names (prometheus-operator's config reloader) is definite.
    known = "prometheus-config-reloader" in arg
    assert found[0].written == written and found[0].span == span
    assert (found[0].confidence, found[0].evidence) == (("definite", "prometheus-operator") if known else ("candidate", None))
    assert arg[span[0] : span[1]] == written
    assert found[0].field_path == "spec.containers[0].args[0]"
    assert found[0].form == ("value" if span == (0, len(arg)) else "substring")


def test_chart_rendered_with_annotations_hooks_and_heuristics(helm: str, kubectl: str) -> None:
    chart = ChartSource(FIXTURES / "charts" / "platform", "rel", "team")
    docs = render(Sources(charts=(chart,)), Tools(helm=helm, kubectl=kubectl))
    result = sweep(docs, chart_images=chart_images(chart.path))
    t = "tests/fixtures/charts/platform"
    op = f"{t}/templates/operator.yaml"
    c0 = "spec.template.spec.containers[0]"
    assert table(result) == {
        "docker.io/bitnami/kubectl:1.31": (
            "definite",
            False,
            [
                (op, 26, "Deployment", "rel-operator", f"{c0}.env[1].value", "env"),
                (
                    f"{t}/templates/cronjob.yaml",
                    14,
                    "CronJob",
                    "rel-cleanup",
                    "spec.jobTemplate.spec.template.spec.containers[0].image",
                    "container",
                ),
            ],
        ),
        "docker.io/curlimages/curl:8.10.1": (
            "definite",
            True,
            [
                (
                    f"{t}/templates/tests/test-api.yaml",
                    11,
                    "Pod",
                    "rel-test-api",
                    "spec.containers[0].image",
                    "container",
                )
            ],
        ),
        "docker.io/envoyproxy/envoy:v1.31.2": (
            "definite",
            False,
            [
                (
                    f"{t}/templates/api.yaml",
                    25,
                    "Deployment",
                    "rel-api",
                    "spec.template.spec.containers[1].image",
                    "container",
                )
            ],
        ),
        "docker.io/example/helper:0.1": (
            "definite",
            False,
            [
                (
                    f"{t}/charts/worker/Chart.yaml",
                    7,
                    "Chart",
                    "worker",
                    'annotations["helm.sh/images"][0].image',
                    "chart-annotation",
                )
            ],
        ),
        "docker.io/example/worker:0.9": (
            "definite",
            False,
            [
                (
                    f"{t}/charts/worker/templates/daemonset.yaml",
                    14,
                    "DaemonSet",
                    "rel-worker",
                    f"spec.template.{c0}.image".replace("spec.template.spec.template", "spec.template"),
                    "container",
                )
            ],
        ),
        "docker.io/library/alpine:3.20": (
            "definite",
            False,
            [(op, 45, "Job", "rel-preinstall", "spec.template.spec.containers[0].image", "container")],
        ),
        "ghcr.io/example/api:2.0.0": (
            "definite",
            False,
            [
                (
                    f"{t}/templates/api.yaml",
                    17,
                    "Deployment",
                    "rel-api",
                    "spec.template.spec.initContainers[0].image",
                    "container",
                ),
                (
                    f"{t}/templates/api.yaml",
                    21,
                    "Deployment",
                    "rel-api",
                    "spec.template.spec.containers[0].image",
                    "container",
                ),
            ],
        ),
        "ghcr.io/example/sidecar:1.0.0@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef": (
            "candidate",
            False,
            [(op, 20, "Deployment", "rel-operator", f"{c0}.args[3]", "arg")],
        ),
        "quay.io/example/agent:2.1.0": (
            "candidate",
            False,
            [(op, 24, "Deployment", "rel-operator", f"{c0}.env[0].value", "env")],
        ),
        "quay.io/example/operator:v1.4.0": (
            "definite",
            False,
            [(op, 15, "Deployment", "rel-operator", f"{c0}.image", "container")],
        ),
        "quay.io/prometheus-operator/prometheus-config-reloader:v0.75.0": (
            "definite",
            False,
            [
                (op, 18, "Deployment", "rel-operator", f"{c0}.args[1]", "arg"),
                (
                    f"{t}/Chart.yaml",
                    14,
                    "Chart",
                    "platform",
                    'annotations["helm.sh/images"][0].image',
                    "chart-annotation",
                ),
            ],
        ),
        "registry.k8s.io/pause:3.10": (
            "definite",
            False,
            [
                (
                    f"{t}/Chart.yaml",
                    16,
                    "Chart",
                    "platform",
                    'annotations["helm.sh/images"][1].image',
                    "chart-annotation",
                )
            ],
        ),
    }
    assert [str(i.ref) for i in result.test_hooks] == ["docker.io/curlimages/curl:8.10.1"]
    assert {str(i.ref) for i in result.candidates} == {
        "ghcr.io/example/sidecar:1.0.0@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        "quay.io/example/agent:2.1.0",
    }
    reloader = next(i for i in result.images if i.ref.path.endswith("config-reloader"))
    arg = reloader.findings[0]
    assert (arg.form, arg.span, arg.origin.chart, arg.origin.template) == (
        "substring",
        (24, 86),
        "platform",
        "platform/templates/operator.yaml",
    )
    assert arg.path == ("spec", "template", "spec", "containers", 0, "args", 1)


def test_custom_resources_crossplane_and_olm() -> None:
    cr = table(swept("custom-resources.yaml"))
    f = f"{M}/custom-resources.yaml"
    assert cr == {
        # split objects of a common shape under an image-named key: definite
        "docker.io/bitnami/postgresql:16.4.0-debian-12-r0": (
            "definite",
            False,
            [(f, 41, "Database", "orders", "spec.image", "split-shape")],
        ),
        "quay.io/example/backup@sha256:" + "a" * 64: (
            "definite",
            False,
            [(f, 47, "Database", "orders", "spec.backup.image", "split-shape")],
        ),
        # the operator catalogue knows Prometheus.spec.image
        "quay.io/prometheus/prometheus:v2.54.1": (
            "definite",
            False,
            [(f, 28, "Prometheus", "main", "spec.image", "catalogue")],
        ),
        "registry.example.com/ci/builder:3.1": (
            "definite",
            False,
            [
                (
                    f,
                    14,
                    "Workflow",
                    "nightly",
                    "spec.steps[0].podTemplate.spec.containers[0].image",
                    "container",
                )
            ],
        ),
        "registry.example.com/ci/fetch:3.1": (
            "definite",
            False,
            [
                (
                    f,
                    20,
                    "Workflow",
                    "nightly",
                    "spec.runner.template.spec.initContainers[0].image",
                    "container",
                )
            ],
        ),
    }
    xp = table(swept("crossplane.yaml"))
    f = f"{M}/crossplane.yaml"
    assert {k: [loc[4:] for loc in v[2]] for k, v in xp.items()} == {
        "xpkg.upbound.io/crossplane-contrib/function-patch-and-transform:v0.7.0": [
            ("spec.package", "crossplane-package")
        ],
        "xpkg.upbound.io/upbound/platform-ref-aws:v1.3.0": [("spec.package", "crossplane-package")],
        "xpkg.upbound.io/upbound/provider-aws-s3:v1.14.0": [
            ("spec.package", "crossplane-package"),
            ("spec.deploymentTemplate.spec.template.spec.containers[0].image", "container"),
        ],
    }
    assert all(v[0] == "definite" for v in xp.values())
    olm = table(swept("olm-csv.yaml"))
    f = f"{M}/olm-csv.yaml"
    deployment = "spec.install.spec.deployments[0].spec.template.spec.containers[0]"
    assert olm == {
        "quay.io/coreos/etcd@sha256:" + "b" * 64: (
            "definite",
            False,
            [
                (
                    f,
                    13,
                    "ClusterServiceVersion",
                    "etcd-operator.v0.9.4",
                    "spec.relatedImages[0].image",
                    "olm-related-image",
                ),
                (f, 33, "ClusterServiceVersion", "etcd-operator.v0.9.4", f"{deployment}.env[0].value", "env"),
            ],
        ),
        "quay.io/example/etcd-operator:v0.9.4": (
            "definite",
            False,
            [
                (
                    f,
                    15,
                    "ClusterServiceVersion",
                    "etcd-operator.v0.9.4",
                    "spec.relatedImages[1].image",
                    "olm-related-image",
                ),
                (f, 30, "ClusterServiceVersion", "etcd-operator.v0.9.4", f"{deployment}.image", "container"),
            ],
        ),
    }


def test_crossplane_outside_pkg_group_is_not_a_package() -> None:
    d = doc("apiVersion: example.com/v1\nkind: Provider\nmetadata: {name: x}\nspec:\n  package: some-name\n")
    assert sweep_document(d) == []


def test_invalid_reference_is_reported_and_sweep_goes_on() -> None:
    result = swept("invalid-ref.yaml")
    assert [str(i.ref) for i in result.images] == ["registry.example.com/team/app:1.0"]
    got = [(i.written, i.line, i.field_path, i.origin.file) for i in result.invalid]
    assert got == [
        ("Registry.Example.com/Team/App:1.0", 8, "spec.containers[0].image", f"{M}/invalid-ref.yaml"),
        ("", 12, "spec.containers[2].image", f"{M}/invalid-ref.yaml"),
    ]
    assert "lowercase" in result.invalid[0].error


def test_grouping_by_canonical_reference() -> None:
    text = """
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: ns}
spec:
  containers:
    - {name: a, image: nginx}
    - {name: b, image: "docker.io/library/nginx:latest"}
    - {name: c, image: index.docker.io/library/nginx}
    - {name: d, image: "nginx:1.27"}
"""
    result = sweep([doc(text)])
    assert [(str(i.ref), i.written, len(i.findings)) for i in result.images] == [
        ("docker.io/library/nginx:1.27", "nginx:1.27", 1),
        ("docker.io/library/nginx:latest", "nginx", 3),
    ]
    assert result.images[1].findings[0].namespace == "ns"


def test_spec_confirm_exclude_and_extra_images() -> None:
    options = [
        ImageOptions(ImageRef.parse("quay.io/example/agent"), confirm=True),
        ImageOptions(
            ImageRef.parse("quay.io/prometheus/prometheus:v2.54.1"), exclude="the operator's default"
        ),
    ]
    extra = [ExtraImage("quay.io/example/extra:1.0", "pulled by the operator at run time", line=31)]
    docs = load_manifests(f"{M}/custom-resources.yaml") + [
        doc("""
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers:
    - name: c
      image: registry.example.com/c:1
      env: [{name: RELATED_IMAGE_AGENT, value: "quay.io/example/agent:2.1.0"}]
""")
    ]
    result = sweep(docs, extra_images=extra, options=options, spec_file="bundle.yaml")
    agent = next(i for i in result.images if i.ref.path == "example/agent")
    assert (agent.confidence, agent.confirmed, agent.carried) == ("candidate", True, True)
    assert agent in result.found
    assert [(str(s.image.ref), s.reason) for s in result.skipped] == [
        ("quay.io/prometheus/prometheus:v2.54.1", "the operator's default")
    ]
    assert "quay.io/prometheus/prometheus:v2.54.1" not in {str(i.ref) for i in result.images}
    extra_image = next(i for i in result.found if i.ref.path == "example/extra")
    f = extra_image.findings[0]
    assert (f.origin.file, f.line, f.kind, f.field_path, f.confidence, f.rule) == (
        "bundle.yaml",
        31,
        "Bundle",
        "extraImages[0].ref",
        "definite",
        "extra-image",
    )
    assert [str(r.ref) for r in result.why(ImageRef.parse("quay.io/prometheus/prometheus"))] == [
        "quay.io/prometheus/prometheus:v2.54.1"
    ]


def test_vendored_checks() -> None:
    result = swept("workloads.yaml")
    by_host = vendored_status(result, at_registry("registry.example.com"))
    assert sorted(str(r) for r, ok in by_host.items() if not ok) == [
        "[2001:db8::1]:5000/apps/rc:1.0",
        "docker.io/library/postgres:16.4",
        "localhost:5000/apps/pt:1.0",
    ]
    refs, digests = parse_vendored("# bundle\npostgres:16.4\nlocalhost:5000/apps/pt:1.0  # pinned\n", "v.txt")
    by_list = vendored_status(
        result, in_list(refs, ["sha256:3f1e0c5b1f6d4a0b9d2c8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b"])
    )
    assert sorted(str(r) for r, ok in by_list.items() if ok) == [
        "docker.io/library/postgres:16.4",
        "localhost:5000/apps/pt:1.0",
        "registry.example.com/apps/rs@sha256:3f1e0c5b1f6d4a0b9d2c8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b",
    ]
    assert all(v is None for v in vendored_status(result, None).values())
    cr = swept("custom-resources.yaml")
    # every image of the custom resources is recognised now (catalogue, split shapes): all carried
    assert sorted(str(r) for r, ok in vendored_status(cr, carried).items() if not ok) == []


def test_parse_vendored_formats() -> None:
    refs, digests = parse_vendored('["nginx:1.27", {"canonical": "quay.io/a/b:1"}]', "v.json")
    assert [str(r) for r in refs] == ["docker.io/library/nginx:1.27", "quay.io/a/b:1"] and digests == []
    index = (
        '{"schemaVersion": 2, "manifests": [{"digest": "sha256:' + "e" * 64 + '", "annotations": '
        '{"org.opencontainers.image.ref.name": "1.0", "io.containerd.image.name": "quay.io/a/b:1"}}]}'
    )
    refs, digests = parse_vendored(index, "index.json")
    assert [str(r) for r in refs] == ["quay.io/a/b:1"] and digests == ["sha256:" + "e" * 64]
    report = '{"images": [{"ref": "nginx", "canonical": "docker.io/library/nginx:latest"}], "summary": {}}'
    assert [str(r) for r in parse_vendored(report, "r.json")[0]] == ["docker.io/library/nginx:latest"]
    from bundler.errors import InputError

    with pytest.raises(InputError, match=r"^v\.txt:2: 'Not/A/Ref' is not a valid image reference"):
        parse_vendored("nginx\nNot/A/Ref\n", "v.txt")
    with pytest.raises(InputError, match=r"^v\.json:1: malformed JSON"):
        parse_vendored("[nginx", "v.json")


def test_field_path_format() -> None:
    assert format_path(("spec", "containers", 0, "image")) == "spec.containers[0].image"
    assert (
        format_path(("metadata", "annotations", "helm.sh/images", 1))
        == 'metadata.annotations["helm.sh/images"][1]'
    )
    assert format_path((0, "image")) == "[0].image"


@pytest.mark.parametrize(
    ("name", "value", "found"),
    [
        ("RELATED_IMAGE_AGENT", "nginx:1.27", "docker.io/library/nginx:1.27"),
        ("BACKUP_IMAGE", "bitnami/kubectl:1.31", "docker.io/bitnami/kubectl:1.31"),
        ("OPERATOR_IMAGE_REF_V2", "quay.io/a/b@sha256:" + "f" * 64, "quay.io/a/b@sha256:" + "f" * 64),
        ("SIDECAR_IMAGES", "quay.io/a/one:1, quay.io/a/two:2", "quay.io/a/one:1"),
        (
            "EXTRA",
            "registry.example.com/team/x:2.0",
            "registry.example.com/team/x:2.0",
        ),  # strong without a name
        ("IMAGE_TAG", "nginx:1.27", None),  # a tag variable holding a ref-looking value: not evidence
        ("EXTRA", "nginx:1.27", None),  # no image name, no registry host: not enough
    ],
)
def test_env_forms(name: str, value: str, found: str | None) -> None:
    d = doc(f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: d}}
spec:
  template:
    spec:
      containers:
        - name: c
          image: registry.example.com/c:1
          env: [{{name: {name}, value: "{value}"}}]
""")
    got = [str(f.ref) for f in sweep_document(d) if f.rule == "env"]
    assert got[:1] == ([found] if found else [])


def test_split_objects_need_evidence() -> None:
    d = doc("""
apiVersion: example.com/v1
kind: Thing
metadata: {name: t}
spec:
  source: {repository: org/config, tag: v1}        # a git source, not an image: no image key, no registry
  image: {repository: org/app}                     # no tag or digest: ambiguous
  mirror: {registry: ghcr.io, repository: org/app, tag: "2.1"}
  runner: {image: {registry: "not a host", repository: org/app, tag: "1"}}
""")
    got = [(f.field_path, f.written, f.form, f.span) for f in sweep_document(d)]
    assert got == [("spec.mirror", "ghcr.io/org/app:2.1", "split", None)]


def test_builtin_kinds_strings_are_not_searched() -> None:
    d = doc("""
apiVersion: v1
kind: ConfigMap
metadata:
  name: c
  annotations: {x: "quay.io/a/b:1"}
data:
  image: quay.io/a/b:1
  deploy.yaml: "image: quay.io/a/c:1"
""")
    assert sweep_document(d) == []


def test_find_images_for_rewrite() -> None:
    from bundler.sweep import find_images

    obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {
            "containers": [
                {"name": "a", "image": "nginx:1.27", "args": ["--helper-image=quay.io/x/helper:1 --v=2"]},
                {"name": "b", "image": "Bad/Ref"},
            ]
        },
    }
    hits = [(f.path, f.written, f.span, str(f.ref)) for f in find_images(obj)]
    assert hits == [
        (("spec", "containers", 0, "image"), "nginx:1.27", (0, 10), "docker.io/library/nginx:1.27"),
        (("spec", "containers", 0, "args", 0), "quay.io/x/helper:1", (15, 33), "quay.io/x/helper:1"),
    ]
