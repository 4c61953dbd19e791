"""The Kustomize delivery path: the kustomization's closure, the overlay over it, and the overlay built
with real kubectl from a copy of only the bundle's kustomize folder (as a customer extracts it).

The fixture `tests/fixtures/kustomize/shop` is shaped like public projects (kubernetes-sigs/kustomize's
components guide, argocd-example-apps' kustomize-guestbook, flux2-kustomize-helm-example): a shared base
two levels up, components, patches in files, generators with files, an overlay with namePrefix and
namespace, a custom resource with image fields and an operator flag and env value carrying images.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest

from bundler import sweep
from bundler.documents import Origin, load_stream
from bundler.errors import InputError, SpecError
from bundler.reference import ImageRef
from bundler.relocate import LocalRefs, closure, copy_closure, local_reference, overlay

SHOP = Path(__file__).parent / "fixtures" / "kustomize" / "shop"
D = "sha256:" + "1" * 64
HOST = "reg.local:5000"
SOURCES = ["nginx:1.27.3", "quay.io/prometheus-operator/prometheus-operator:v0.75.0",
           "quay.io/prometheus-operator/prometheus-config-reloader:v0.75.0", "quay.io/prometheus/nginx-exporter:1.3.0"]
LOCAL = LocalRefs({ImageRef.parse(s).canonical: local_reference(ImageRef.parse(s), D, host=HOST) for s in SOURCES})


def kustomize(kubectl: str, directory: Path) -> str:
    return subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=True).stdout


def bundle_folder(kubectl: str, source: Path, dest: Path) -> Path:
    """What the pipeline writes as `kustomize/<name>/`: the tree and the overlay over it."""
    tree = closure(source)
    copy_closure(tree, dest / "tree")
    out = overlay(kustomize(kubectl, source), sweep.find_images, LOCAL, tree=f"../tree/{tree.entry}")
    for name, text in out.files.items():
        (dest / "overlay" / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / "overlay" / name).write_text(text)
    return dest


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_closure_holds_exactly_what_the_overlay_reaches() -> None:
    tree = closure(SHOP / "overlays" / "prod")
    assert tree.root == SHOP and tree.entry == PurePosixPath("overlays/prod")
    assert [str(f) for f in tree.files] == [
        "base/config/app.properties", "base/config/default.conf", "base/deployment.yaml",
        "base/kustomization.yaml", "base/service.yaml",
        "components/monitoring/exporter.yaml", "components/monitoring/kustomization.yaml",
        "components/monitoring/operator.yaml", "components/monitoring/scrape-annotations.yaml",
        "overlays/prod/config/app.properties", "overlays/prod/config/prod.env", "overlays/prod/kustomization.yaml",
        "overlays/prod/replacements.yaml", "overlays/prod/replicas.yaml", "overlays/prod/resources.yaml",
    ]  # not overlays/staging, components/debug or docs/: siblings prod never reaches


def test_a_base_alone_roots_the_tree_at_itself(tmp_path: Path) -> None:
    tree = closure(SHOP / "base")
    assert tree.root == SHOP / "base" and str(tree.entry) == "."
    copy_closure(tree, tmp_path / "tree")
    assert sorted(snapshot(tmp_path / "tree")) == ["config/app.properties", "config/default.conf",
                                                    "deployment.yaml", "kustomization.yaml", "service.yaml"]


def test_the_overlay_builds_from_the_extracted_folder_alone_with_only_local_pinned_images(
        tmp_path: Path, kubectl: str) -> None:
    folder = bundle_folder(kubectl, SHOP / "overlays" / "prod", tmp_path / "bundle" / "prod")
    # Extract: only the bundle's kustomize/<name> folder, somewhere else, away from the sources.
    extracted = tmp_path / "customer" / "kustomize" / "prod"
    shutil.copytree(folder, extracted)
    shutil.rmtree(tmp_path / "bundle")
    built = kustomize(kubectl, extracted / "overlay")
    found = sweep.sweep(load_stream(built, Origin("overlay", 1)))
    refs = sorted(str(i.ref) for i in found.images)
    assert refs and all(r.startswith(f"{HOST}/") for r in refs), refs
    # digest-pinned, except the Exporter's `{registry, repository, tag}` split object: an operator's
    # split fields with no digest form are pinned by tag (the rewrite says so in a note)
    unpinned = [r for r in refs if not r.endswith(f"@{D}")]
    assert unpinned == [f"{HOST}/quay.io/prometheus-operator/prometheus-config-reloader:v0.75.0"], refs
    # every image the source renders is there: containers, the operator flag and env, the CR field and
    # the split object, each on the local registry
    source = sweep.sweep(load_stream(kustomize(kubectl, SHOP / "overlays" / "prod"), Origin("source", 1)))
    def places(s: sweep.Sweep) -> set[tuple[str, str]]:
        return {(f.name, f.field_path) for i in s.images for f in i.findings}

    assert len(places(found)) == 6 and places(found) == places(source)
    assert f"--prometheus-config-reloader={HOST}/quay.io/prometheus-operator/prometheus-config-reloader:v0.75.0@{D}" \
        in built
    assert f"registry: {HOST}\n    repository: quay.io/prometheus-operator/prometheus-config-reloader" in built
    # and nothing else changed: the tree's own settings survive (prefix, namespace, generator, replacement)
    assert built.replace(f"{HOST}/", "").count("prod-web-config-") == 2 and "scrapeUri: http://prod-web/stub_status" \
        in built and "replicas: 3" in built and "namespace: shop-prod" in built


def test_container_images_use_the_images_transformer_and_the_rest_json_patches(tmp_path: Path, kubectl: str) -> None:
    out = overlay(kustomize(kubectl, SHOP / "overlays" / "prod"), sweep.find_images, LOCAL, tree="../tree/overlays/prod")
    assert out.images == 2 and out.patched == 5 and not out.unmapped  # the split object's tag stays
    assert sorted(out.files) == ["kustomization.yaml", "patches/01-deployment-prod-monitoring-operator.yaml",
                                 "patches/02-exporter-prod-web-exporter.yaml"]
    kustomization = out.files["kustomization.yaml"]
    assert "- name: nginx\n    newName: reg.local:5000/docker.io/library/nginx\n    digest: " + D in kustomization
    assert "name: prod-web-exporter\n      namespace: shop-prod" in kustomization  # the rendered name, as targeted
    exporter = out.files["patches/02-exporter-prod-web-exporter.yaml"]
    assert '{"op": "test", "path": "/spec/image", "value": "quay.io/prometheus/nginx-exporter:1.3.0"}' in exporter


def test_two_tags_of_one_name_are_patched_one_by_one(tmp_path: Path, kubectl: str) -> None:
    # One `images:` entry per name cannot pin two tags, and an image the map does not know must not be
    # repointed by an entry for its name: both go through patches, the unknown one is reported.
    base = tmp_path / "src"
    base.mkdir()
    (base / "kustomization.yaml").write_text("resources: [pods.yaml]\n")
    (base / "pods.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec:\n  containers:\n"
        "    - {name: a, image: 'nginx:1.27.3'}\n    - {name: b, image: 'quay.io/prometheus/nginx-exporter:1.3.0'}\n"
        "  ephemeralContainers:\n    - {name: debug, image: 'quay.io/prometheus/nginx-exporter:1.3.0'}\n"
        "---\napiVersion: v1\nkind: Pod\nmetadata: {name: b}\nspec:\n  containers:\n    - {name: a, image: 'nginx:1.26'}\n")
    out = overlay(kustomize(kubectl, base), sweep.find_images, LOCAL, tree="../src")
    assert out.unmapped == ("nginx:1.26",)
    assert "name: nginx\n" not in out.files["kustomization.yaml"]
    assert "name: quay.io/prometheus/nginx-exporter\n" in out.files["kustomization.yaml"]
    for name, text in out.files.items():
        (tmp_path / "overlay" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "overlay" / name).write_text(text)
    built = kustomize(kubectl, tmp_path / "overlay")
    assert f"image: {HOST}/docker.io/library/nginx:1.27.3@{D}" in built
    assert "image: nginx:1.26" in built  # left for the closed loop to refuse, not silently repointed
    assert built.count(f"{HOST}/quay.io/prometheus/nginx-exporter") == 2  # container and ephemeral container


def test_a_changed_tree_fails_the_overlay_instead_of_overwriting(tmp_path: Path, kubectl: str) -> None:
    folder = bundle_folder(kubectl, SHOP / "overlays" / "prod", tmp_path / "prod")
    exporter = folder / "tree" / "components" / "monitoring" / "exporter.yaml"
    exporter.write_text(exporter.read_text().replace("nginx-exporter:1.3.0", "nginx-exporter:9.9.9"))
    result = subprocess.run([kubectl, "kustomize", str(folder / "overlay")], capture_output=True, text=True)
    assert result.returncode != 0 and "test" in result.stderr.lower()


REMOTES = [
    "https://github.com/kubernetes-sigs/kustomize//examples/multibases?ref=v5.0.0",
    "github.com/example/platform//deploy/base?ref=v1.2.0",
    "git@github.com:example/platform.git//deploy/base",
    "git::https://gitlab.example.com/team/base.git",
    "https://raw.githubusercontent.com/example/platform/v1/deploy.yaml",
    "example.com/team/base",
]


@pytest.mark.parametrize("remote", REMOTES)
def test_a_remote_resource_fails_closed_naming_file_and_line(tmp_path: Path, remote: str) -> None:
    tree = make_tree(tmp_path, {"overlays/prod/kustomization.yaml":
                                f"namespace: x\nresources:\n  - ../../base\n  - {remote}\n"})
    with pytest.raises(SpecError) as err:
        closure(tree / "overlays" / "prod")
    assert err.value.exit_code == 2
    assert f"kustomization.yaml:4: resources entry {remote!r}" in str(err.value)
    assert "remote" in str(err.value) and "vendor the remote base into the tree" in str(err.value)


def test_a_remote_component_deep_in_the_tree_names_its_own_file(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, {
        "overlays/prod/kustomization.yaml": "resources: [../../base]\ncomponents: [../../components/x]\n",
        "components/x/kustomization.yaml": "kind: Component\nresources:\n  - github.com/org/repo//x?ref=v1\n"})
    with pytest.raises(SpecError, match=r"components/x/kustomization\.yaml:3: resources entry"):
        closure(tree / "overlays" / "prod")


@pytest.mark.parametrize(("overlay_text", "missing", "line"), [
    ("resources: [../../base]\npatches:\n  - path: gone.yaml\n", "gone.yaml", 3),
    ("resources: [../../base]\nconfigMapGenerator:\n  - name: c\n    files: [key=conf/gone.txt]\n", "gone.txt", 4),
    ("resources:\n  - ../../base\n  - ../../gone\n", "gone", 3),
])
def test_a_missing_referenced_file_fails_clearly(tmp_path: Path, overlay_text: str, missing: str, line: int) -> None:
    tree = make_tree(tmp_path, {"overlays/prod/kustomization.yaml": overlay_text})
    with pytest.raises(InputError) as err:
        closure(tree / "overlays" / "prod")
    assert f"kustomization.yaml:{line}:" in str(err.value) and missing in str(err.value)
    assert "does not exist" in str(err.value)


def test_helm_charts_fail_closed(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, {"overlays/prod/kustomization.yaml":
                                "resources: [../../base]\nhelmCharts:\n  - name: redis\n    repo: https://x\n"})
    with pytest.raises(SpecError, match=r"kustomization\.yaml:3: helmCharts: .*sources\.charts"):
        closure(tree / "overlays" / "prod")


def test_symlinks_are_copied_inside_the_tree_and_refused_outside(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "src", {"overlays/prod/kustomization.yaml":
                                        "resources: [../../base]\npatches:\n  - path: shared.yaml\n"})
    shared = tree / "base" / "deploy.yaml"
    (tree / "overlays" / "prod" / "shared.yaml").symlink_to(shared)
    copy_closure(closure(tree / "overlays" / "prod"), tmp_path / "copy")
    copied = tmp_path / "copy" / "overlays" / "prod" / "shared.yaml"
    assert not copied.is_symlink() and copied.read_bytes() == shared.read_bytes()

    outside = tmp_path / "secret.yaml"
    outside.write_text(shared.read_text())
    (tree / "overlays" / "prod" / "shared.yaml").unlink()
    (tree / "overlays" / "prod" / "shared.yaml").symlink_to(outside)
    with pytest.raises(SpecError, match=r"kustomization\.yaml:3: patches\[\]\.path entry 'shared\.yaml'.*outside"):
        closure(tree / "overlays" / "prod")


def test_a_directory_without_a_kustomization_fails(tmp_path: Path) -> None:
    tree = make_tree(tmp_path, {"overlays/prod/kustomization.yaml": "resources: [../../base, ../../empty]\n"})
    (tree / "empty").mkdir()
    with pytest.raises(InputError, match=r"kustomization\.yaml:1: resources entry '\.\./\.\./empty'.*no kustomization"):
        closure(tree / "overlays" / "prod")


def test_a_missing_source_directory_says_so(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nowhere: kustomization directory not found"):
        closure(tmp_path / "nowhere")


def make_tree(root: Path, files: dict[str, str]) -> Path:
    """A minimal base/overlays tree, with `files` added or replaced."""
    base = {
        "base/kustomization.yaml": "resources: [deploy.yaml]\n",
        "base/deploy.yaml": "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n"
                            "    spec:\n      containers:\n        - {name: web, image: 'nginx:1.27.3'}\n",
    }
    for name, text in {**base, **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_sweep_refuses_a_remote_base_before_kubectl_could_fetch_it(tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    tree = make_tree(tmp_path, {"overlays/prod/kustomization.yaml":
                                "resources:\n  - github.com/example/platform//deploy/base?ref=v1.2.0\n"})
    result = run_cli("sweep", "--kustomize", str(tree / "overlays" / "prod"))
    assert result.returncode == 2, result.stderr
    assert "kustomization.yaml:2: resources entry" in result.stderr and "remote" in result.stderr
    assert "git" not in result.stderr.lower().split("remote", 1)[0]  # refused by us, not a failed fetch
