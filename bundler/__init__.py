"""airgap-bundle: signed, multi-architecture deployment bundles for air-gapped Kubernetes clusters."""

from __future__ import annotations

__version__ = "0.1.0"
