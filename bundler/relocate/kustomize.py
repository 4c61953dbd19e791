"""The Kustomize delivery path: an overlay over the source tree that points every image at the local registry."""

from __future__ import annotations

import io
from collections.abc import Iterable
from importlib import resources

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from ..reference import ImageRef
from .manifests import LocalRefs, yaml_rt


def kustomize_overlay(written_refs: Iterable[str], local: LocalRefs, *, base: str = "../base") -> str:
    """`kustomization.yaml` for an overlay over `base`: one `images:` entry per image name as written.

    Kustomize matches `images[].name` against the name part of each image string, so the entry uses
    the name exactly as the base writes it (`nginx`, `docker.io/library/nginx`), with `newName` and
    `digest` from the local reference.
    """
    y = yaml_rt()
    doc = y.load(resources.files("bundler").joinpath("templates/kustomize/kustomization.yaml.tmpl").read_text())
    doc["resources"] = CommentedSeq([base])
    entries: dict[str, CommentedMap] = {}
    for written in sorted(set(written_refs)):
        ref = ImageRef.try_parse(written)
        target = local.local_for(ref) if ref is not None else None
        if ref is None or target is None:
            continue
        name = written.split("@", 1)[0]
        if ":" in name.rsplit("/", 1)[-1]:
            name = name.rsplit(":", 1)[0]
        local_ref = ImageRef.parse(target)
        entry = CommentedMap()
        entry["name"] = name
        entry["newName"] = local_ref.name
        if local_ref.digest:
            entry["digest"] = local_ref.digest
        entries[name] = entry
    doc["images"] = CommentedSeq(entries[k] for k in sorted(entries))
    buf = io.StringIO()
    y.dump(doc, buf)
    return buf.getvalue()
