"""Helm provenance of a fetched chart: `helm verify --keyring` on the archive and its `.prov`.

Input: a `FetchedChart` (its archive copied out of the cache), the cache digest of its provenance file
(the `.prov` published beside a repository's archive, or an OCI artifact's provenance layer; None when
there is none), the spec's `ProvenancePolicy` (keyring, required), the cache and helm. Output: the
`FetchedChart.provenance` text (`verified: <signer>`), or None when there was nothing to verify and the
policy allows that. Fetches nothing (fetch stored the `.prov` in the cache).

Spec: https://helm.sh/docs/topics/provenance/ .
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from ..errors import InputError, ProvenanceError
from ..layout import Layout
from ..render import Tools, condense
from ..spec import ProvenancePolicy
from .fetch import MAX_PROV_BYTES
from .helm import run as helm
from .model import FetchedChart


def verify(chart: FetchedChart, prov: str | None, policy: ProvenancePolicy, *, cache: Layout, tools: Tools,
           label: str) -> str | None:
    """The signer of `chart`, checked against `policy.keyring`.

    Raises:
        ProvenanceError: provenance required and missing, or bad (exit 17).
        InputError: the keyring file is missing.
    """
    if prov is None:
        if policy.required:
            raise ProvenanceError(f"{label}: {chart.name} {chart.version} has no provenance file (.prov), and "
                                  "the spec requires one", hint="ask the publisher to sign the chart (helm "
                                  "package --sign), or set provenance.required: false")
        return None
    if not policy.keyring.is_file():
        raise InputError(f"{policy.keyring}: keyring not found (provenance of {label})",
                         hint="export the publisher's public key: gpg --export KEYID > keyring.gpg")
    with tempfile.TemporaryDirectory(prefix="airgap-prov-") as tmp:
        # helm verify checks the archive's base name against the one the .prov signs.
        archive = Path(tmp) / chart.path.name
        shutil.copyfile(chart.path, archive)
        Path(f"{archive}.prov").write_bytes(cache.read_blob(prov, MAX_PROV_BYTES))
        done = helm(tools, ["verify", "--keyring", str(policy.keyring), str(archive)], "helm verify")
    if done.returncode != 0:
        raise ProvenanceError(f"{label}: the provenance of {chart.name} {chart.version} does not verify "
                              f"against {policy.keyring}: {condense(done.stderr)}",
                              hint="the chart or its .prov was changed, or another key signed it")
    signer = re.search(r"^Signed by: (.*)$", done.stdout, re.M)
    return f"verified: {signer.group(1).strip() if signer else 'a key in ' + str(policy.keyring)}"
