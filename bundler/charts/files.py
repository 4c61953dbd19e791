"""A chart's files on disk: YAML mappings, the Chart.yaml inside an archive, what `charts/` vendors, unpacking.

Input: paths (a chart directory's files, a chart `.tgz`, a `charts/` folder) and bytes of YAML. Output:
plain mappings (`load_yaml`, `archive_meta`), the charts a `charts/` folder holds by name and version
(`vendored` -> `Vendored`), and a fetched archive unpacked safely (`unpack`: tar `data` filter, one top
directory). Reads local files only: no network, no helm, and no decision on what to fetch (declared).

Raises `InputError` for a file that is not what a chart needs (malformed YAML, not a mapping, an
unreadable archive).
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError


def load_yaml(data: bytes, what: str, *, empty_ok: bool = False) -> dict[str, Any]:
    try:
        obj = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise InputError(f"{what}: malformed YAML ({type(exc).__name__})") from None
    if obj is None and empty_ok:
        return {}
    if not isinstance(obj, dict):
        raise InputError(f"{what}: not a YAML mapping")
    return obj


@dataclass(frozen=True)
class Vendored:
    name: str
    version: str
    path: Path


def vendored(charts_dir: Path) -> list[Vendored]:
    """The charts in `charts/`: archives and directories, by their Chart.yaml name and version."""
    out: list[Vendored] = []
    if not charts_dir.is_dir():
        return out
    for entry in sorted(charts_dir.iterdir()):
        if entry.is_dir() and (entry / "Chart.yaml").is_file():
            meta = load_yaml((entry / "Chart.yaml").read_bytes(), str(entry / "Chart.yaml"))
        elif entry.is_file() and entry.name.endswith(".tgz"):
            meta = archive_meta(entry)
        else:
            continue
        out.append(Vendored(str(meta.get("name")), str(meta.get("version")), entry))
    return out


def archive_meta(path: Path) -> dict[str, Any]:
    try:
        with tarfile.open(path, "r:gz") as archive:
            member = next((m for m in archive.getmembers() if m.isfile() and m.name.count("/") == 1
                           and m.name.endswith("/Chart.yaml")), None)
            handle = archive.extractfile(member) if member else None
            if handle is None:
                raise InputError(f"{path}: a chart archive without <name>/Chart.yaml")
            return load_yaml(handle.read(1 << 20), f"{path}: Chart.yaml")
    except (tarfile.TarError, OSError) as exc:
        raise InputError(f"{path}: not a readable chart archive: {exc}") from None


def unpack(archive: Path, dest: Path) -> Path:
    """A fetched archive unpacked (tar `data` filter: no links out, no absolute paths); its chart directory."""
    try:
        with tarfile.open(archive, "r:gz") as tgz:
            tops = {name.split("/", 1)[0] for name in tgz.getnames()}
            if len(tops) != 1:
                raise InputError(f"{archive}: a chart archive holds one top directory, not {sorted(tops)}")
            tgz.extractall(dest, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise InputError(f"{archive}: not a readable chart archive: {exc}") from None
    root = dest / tops.pop()
    if not (root / "Chart.yaml").is_file():
        raise InputError(f"{archive}: no Chart.yaml in the archive")
    return root
