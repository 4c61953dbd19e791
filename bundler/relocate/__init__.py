"""Relocation: point every image reference at the cluster-local registry, on each delivery path.

- `manifests`: the rewritten manifests (a ruamel round trip of every rendered stream);
- `kustomize`: an overlay over the Kustomize source tree;
- `helm`: a values override per chart.

The pipeline runs the closed loop on each output (render again, sweep, refuse anything outside
the local registry).
"""

from .kustomize import kustomize_overlay
from .manifests import Change, LocalRefs, Rewritten, Stream, local_reference, rewrite_streams

__all__ = ["Change", "LocalRefs", "Rewritten", "Stream", "kustomize_overlay", "local_reference", "rewrite_streams"]
