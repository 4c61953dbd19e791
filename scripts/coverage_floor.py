"""Enforce the coverage floor on bundler/: lines and branches each on their own (`coverage report
--fail-under` only knows one combined figure). Reads the combined data `scripts/test --cov` leaves and
the floor from pyproject.toml `[tool.coverage-floor]`; prints both figures, exits 1 below either."""

from __future__ import annotations

import json
import sys
import tempfile
import tomllib
from pathlib import Path

import coverage

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    floor = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["coverage-floor"]
    cov = coverage.Coverage(config_file=str(ROOT / "pyproject.toml"))
    cov.load()
    with tempfile.TemporaryDirectory() as tmp:
        cov.json_report(outfile=str(Path(tmp) / "coverage.json"))
        totals = json.loads((Path(tmp) / "coverage.json").read_text())["totals"]
    # floor on the exact ratio, so 96.96 % never prints as "97.0" and passes
    lines = 100 * totals["covered_lines"] / max(totals["num_statements"], 1)
    branches = 100 * totals["covered_branches"] / max(totals["num_branches"], 1)
    ok = True
    for name, value, covered, total in (
        ("lines", lines, totals["covered_lines"], totals["num_statements"]),
        ("branches", branches, totals["covered_branches"], totals["num_branches"]),
    ):
        passed = value >= float(floor[name])
        ok = ok and passed
        print(f"coverage {name}: {value:.2f}% ({covered}/{total}), floor {floor[name]}%"
              f"{'' if passed else ' - BELOW THE FLOOR'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
