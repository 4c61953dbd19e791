"""The Kustomize closure on trees the shop fixture does not have: a base two overlays share, crds and
configurations, inline and file patches, transformer configs that name further files, and each kind of
unreadable kustomization, refused with file (and line) named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bundler import sweep
from bundler.errors import InputError
from bundler.reference import ImageRef
from bundler.relocate import LocalRefs, closure, kustomize_overlay, overlay

CM = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"


def _tree(root: Path, files: dict[str, str | bytes]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode() if isinstance(text, str) else text)
    return root


def _files(root: Path, entry: str) -> list[str]:
    return [str(f) for f in closure(root / entry).files]


def test_a_base_two_branches_share_is_visited_once(tmp_path: Path) -> None:
    _tree(tmp_path, {
        "base/kustomization.yaml": "resources: [cm.yaml]\n", "base/cm.yaml": CM,
        "a/kustomization.yaml": "resources: [../base]\n", "b/kustomization.yaml": "resources: [../base]\n",
        "top/kustomization.yaml": "resources: [../a, ../b]\n",
    })
    assert _files(tmp_path, "top") == ["a/kustomization.yaml", "b/kustomization.yaml", "base/cm.yaml",
                                       "base/kustomization.yaml", "top/kustomization.yaml"]


def test_a_cycle_of_kustomizations_ends(tmp_path: Path) -> None:
    # kubectl refuses the cycle itself; the closure, which runs before kubectl, must still end
    _tree(tmp_path, {"a/kustomization.yaml": "resources: [../b]\n", "b/kustomization.yaml": "resources: [../a]\n"})
    assert _files(tmp_path, "a") == ["a/kustomization.yaml", "b/kustomization.yaml"]


def test_crds_configurations_patches_and_transformer_configs_are_followed(tmp_path: Path) -> None:
    _tree(tmp_path, {
        "app/kustomization.yaml": (
            "resources: [cm.yaml]\ncrds: [crd.yaml]\nconfigurations: [conf.yaml]\n"
            "patchesStrategicMerge:\n- patch.yaml\n- |\n  apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: c}\n"
            "transformers:\n- replacer.yaml\n"
            "- apiVersion: builtin\n  kind: PatchTransformer\n  metadata: {name: inline}\n  path: inline-patch.yaml\n"
            "generators:\n- gen\n"),
        "app/cm.yaml": CM, "app/crd.yaml": CM, "app/conf.yaml": "images: []\n", "app/patch.yaml": CM,
        "app/inline-patch.yaml": CM,
        "app/replacer.yaml": ("apiVersion: builtin\nkind: ReplacementTransformer\nmetadata: {name: r}\n"
                              "replacements:\n- path: replacements.yaml\n"),
        "app/replacements.yaml": "[]\n",
        "app/gen/kustomization.yaml": "resources: [g.yaml]\n", "app/gen/g.yaml": CM,
        "app/unreached.yaml": CM,
    })
    assert _files(tmp_path, "app") == [
        "cm.yaml", "conf.yaml", "crd.yaml", "gen/g.yaml", "gen/kustomization.yaml", "inline-patch.yaml",
        "kustomization.yaml", "patch.yaml", "replacements.yaml", "replacer.yaml"]


def test_a_directory_where_a_file_belongs(tmp_path: Path) -> None:
    _tree(tmp_path, {"app/kustomization.yaml": "resources: []\ncrds:\n- crds\n", "app/crds/x.yaml": CM})
    with pytest.raises(InputError, match=r"app/kustomization.yaml:3: crds entry 'crds': .*app/crds is a directory, "
                                         "where kustomize expects a file"):
        closure(tmp_path / "app")


@pytest.mark.parametrize(("text", "message"), [
    ("resources: []\n---\nresources: []\n", "a kustomization holds one YAML document, not 2"),
    ("- resources\n", r"kustomization.yaml:1: a kustomization is a mapping"),
    (b"resources: [\xff]\n", "kustomization.yaml: cannot read: 'utf-8' codec"),
    ("resources: [a, b\n", r"kustomization.yaml:2: not valid YAML"),
])
def test_unreadable_kustomizations(tmp_path: Path, text: str | bytes, message: str) -> None:
    _tree(tmp_path, {"app/kustomization.yaml": text})
    with pytest.raises(InputError, match=message):
        closure(tmp_path / "app")


# --- the overlay's kustomization and patches -----------------------------------------------------------

D = "sha256:" + "2" * 64
LOCAL = LocalRefs({
    ImageRef.parse("nginx:1.27.3").canonical: f"reg.local:5000/docker.io/library/nginx:1.27.3@{D}",
    ImageRef.parse("quay.io/x/tagged:1").canonical: "reg.local:5000/quay.io/x/tagged:1",  # a tag-only target
    ImageRef.parse(f"quay.io/x/pinned@{D}").canonical: f"reg.local:5000/quay.io/x/pinned@{D}",
})


def test_overlay_images_entries_skip_what_the_map_does_not_know() -> None:
    text = kustomize_overlay(["nginx:1.27.3", "quay.io/x/tagged:1", f"quay.io/x/pinned@{D}", "unknown.io/y:2",
                              "Not::A::Ref"], LOCAL, base="../tree")
    assert yaml.safe_load(text)["images"] == [
        {"name": "nginx", "newName": "reg.local:5000/docker.io/library/nginx", "digest": D},
        {"name": "quay.io/x/pinned", "newName": "reg.local:5000/quay.io/x/pinned", "digest": D},
        {"name": "quay.io/x/tagged", "newName": "reg.local:5000/quay.io/x/tagged"},
    ]


def test_a_nameless_resource_whose_image_needs_a_patch_is_refused() -> None:
    rendered = ("apiVersion: v1\nkind: Pod\nmetadata: {namespace: a}\nspec:\n  containers:\n  - name: c\n"
                "    image: busybox:1\n    env:\n    - {name: RELATED_IMAGE_WEB, value: 'nginx:1.27.3'}\n")
    with pytest.raises(InputError, match="overlays/x: a rendered resource with an image to relocate has no "
                                         "apiVersion, kind or name"):
        overlay(rendered, sweep.find_images, LOCAL, tree="../tree", source="overlays/x")
