"""The `digest:` of a Chart.lock or requirements.lock, computed as helm computes it.

Input: the declared dependencies and the locked ones (mappings, as `declared.declared_dependencies` reads
them). Output: the sha256 digest helm writes (`lock_digest`, helm `resolver.HashReq`) and the one Helm 2
wrote (`helm2_lock_digest`, `resolver.HashV2Req`), each over the bytes Go's encoding/json would produce.
Pure code: does not read the lock or decide what a mismatch means (dependencies refuses a stale lock).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ..oci import sha256_digest


def lock_digest(declared: Sequence[Mapping[str, Any]], locked: Sequence[Mapping[str, Any]]) -> str:
    """helm's `resolver.HashReq`: sha256 of Go's `json.Marshal([2][]*chart.Dependency{req, lock})`.

    Field order and `omitempty` follow helm's chart.Dependency (name, version, repository, condition,
    tags, enabled, import-values, alias); Go sorts map keys and escapes <, >, & in strings. `declared`
    must already have `@name` repositories replaced by their URLs (helm's resolveRepoNames).
    """
    return _go_digest([[_go_dependency(d) for d in declared], [_go_dependency(d) for d in locked]])


def helm2_lock_digest(declared: Sequence[Mapping[str, Any]]) -> str:
    """helm's `resolver.HashV2Req`, the digest Helm 2 wrote into requirements.lock: sha256 of Go's
    `json.Marshal(map[string][]*chart.Dependency{"dependencies": req})`, `req` as requirements.yaml
    writes it (`@name` repositories not replaced)."""
    return _go_digest({"dependencies": [_go_dependency(d) for d in declared] or None})


def _go_dependency(d: Mapping[str, Any]) -> dict[str, Any]:
    """One chart.Dependency as Go's encoding/json writes it: its fields in order, empty ones omitted."""
    def go(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k): go(value[k]) for k in sorted(value, key=str)}
        if isinstance(value, list):
            return [go(v) for v in value]
        return value

    out: dict[str, Any] = {"name": str(d.get("name") or "")}
    if d.get("version"):
        out["version"] = str(d["version"])
    out["repository"] = str(d.get("repository") or "")
    for key in ("condition", "tags", "enabled", "import-values", "alias"):
        if d.get(key):
            out[key] = [str(t) for t in d[key]] if key == "tags" else go(d[key])
    return out


def _go_digest(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"), ("\u2028", "\\u2028"),
                          ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return sha256_digest(text.encode())
