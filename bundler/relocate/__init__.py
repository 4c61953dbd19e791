"""Relocation: point every image reference at the cluster-local registry, on each delivery path.

- `manifests`: the rewritten manifests (a ruamel round trip of every rendered stream);
- `kustomize`: the kustomization's whole tree (its closure) and an overlay over it;
- `helm`: a values override per chart.

The pipeline runs the closed loop on each output (render again, sweep, refuse anything outside
the local registry).
"""

from .kustomize import Closure, Overlay, closure, copy_closure, kustomize_overlay, overlay
from .manifests import Change, LocalRefs, Rewritten, Stream, local_reference, rewrite_streams

__all__ = ["Change", "Closure", "LocalRefs", "Overlay", "Rewritten", "Stream", "closure", "copy_closure", "kustomize_overlay",
           "local_reference", "overlay", "rewrite_streams"]
