"""Mutation testing of the trust path with cosmic-ray (docs/testing.md, "Mutation testing"); not run by CI.

    scripts/mutation [MODULE...]      # all of the trust path, or the named modules (e.g. verify keys)
    scripts/mutation --jobs 2 verify  # two mutants at a time, each in its own copy of the checkout

Each module is mutated in place in a throw-away copy of the checkout (the checkout itself is never
touched), and for each mutant only the fast tests that exercise that module run, with -x. Tests that
start `python -m bundler` in a subprocess see the mutant too: the copy is first on their PYTHONPATH.

Mutants are cosmic-ray's core operators, with three cuts that only remove noise:
- annotations, typing.Protocol stubs and the bare `*` of keyword-only parameters are not mutated: every module has `from __future__ import
  annotations`, so annotations are strings that never run, and a Protocol's body is never called;
- a binary or comparison operator becomes one neighbour (`+`->`-`, `<`->`<=`, `==`->`!=`, ...), not
  all eleven or seven others (selective mutation: the other swaps are killed by the same tests);
- in pipeline.py only the gates are mutated (GATES below), not the wiring between stages.

Prints per module and overall the mutants killed and survived and the score (killed among the mutants
that are not documented equivalents), and every survivor; exits 1 when the score is below 90%, a
survivor is not listed as equivalent in docs/testing.md (or docs/testing-mutation.md), or mutants are
left untested.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cosmic_ray.mutating import mutate_and_test
from cosmic_ray.work_db import WorkDB, use_db
from cosmic_ray.work_item import TestOutcome, WorkerOutcome, WorkItem, WorkResult

REPO = Path(__file__).resolve().parent.parent
GOAL = 90.0
GATES = ("_require_clean_sweep", "_require_local", "_require_pinned", "_crossplane_gate")


@dataclass(frozen=True)
class Target:
    path: str
    tests: tuple[str, ...]
    only: tuple[str, ...] = ()  # functions to mutate (and statements that call them); empty = whole module


# The fast tests that exercise each module (no e2e build): a mutant killed only by e2e is not counted.
TRUST_PATH = {
    "verify": Target("bundler/verify.py", ("tests/test_verify.py", "tests/test_verify_edges.py", "tests/test_chains.py",
                                         "tests/test_update_edges.py")),
    "archive": Target("bundler/archive.py", ("tests/test_archive.py", "tests/test_archive_edges.py",
                                           "tests/test_archive_single_pass.py")),
    # edges first: quick tests of exact messages, which most mutants fail (-x stops there)
    "keys": Target("bundler/keys.py", ("tests/test_keys_edges.py", "tests/test_keys.py", "tests/test_chains.py")),
    "sign": Target("bundler/sign.py", ("tests/test_sign.py", "tests/test_chains.py")),
    "layout": Target("bundler/layout.py", ("tests/test_layout.py", "tests/test_layout_edges.py")),
    "oci": Target("bundler/oci.py", ("tests/test_oci.py", "tests/test_layout.py", "tests/test_layout_edges.py")),
    "pipeline": Target("bundler/pipeline.py", ("tests/test_pipeline.py",), GATES),
    "manifests": Target("bundler/relocate/manifests.py", ("tests/test_relocate.py",)),
}

# Selective mutation: one replacement per operator (the family prefix is excluded except these).
KEEP = re.compile(r"core/(ReplaceBinaryOperator_(Add_Sub|Sub_Add|Mul_Div|Div_Mul|FloorDiv_Mul|Mod_FloorDiv|"
                  r"Pow_Mul|LShift_RShift|RShift_LShift|BitOr_BitAnd|BitAnd_BitOr|BitXor_BitOr)|"
                  r"ReplaceComparisonOperator_(Eq_NotEq|NotEq_Eq|Lt_LtE|LtE_Lt|Gt_GtE|GtE_Gt|Is_IsNot|IsNot_Is)|"
                  r"ReplaceUnaryOperator_(Delete_Not|Delete_USub|Delete_Invert|USub_UAdd))$")
FAMILIES = ("core/ReplaceBinaryOperator_", "core/ReplaceComparisonOperator_", "core/ReplaceUnaryOperator_")

Span = tuple[int, int, int, int]  # start line, start col, end line, end col (ast positions)


def _span(node: ast.AST) -> Span:
    return (node.lineno, node.col_offset, node.end_lineno or node.lineno, node.end_col_offset or 0)


def _inside(pos: tuple[int, int], span: Span) -> bool:
    return (span[0], span[1]) <= tuple(pos) < (span[2], span[3])


def _annotations(tree: ast.Module) -> list[Span]:
    """Annotations, and the bare `*` of keyword-only parameters (its `/` twin changes no call here)."""
    spans = []
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and node.annotation is not None:
            spans.append(_span(node.annotation))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if node.returns is not None:
                spans.append(_span(node.returns))
            if node.args.kwonlyargs and node.args.vararg is None:
                before, after = node.args.kwonlyargs[0], [*node.args.posonlyargs, *node.args.args, *node.args.defaults]
                start = max(_span(n)[2:] for n in after) if after else (node.lineno, node.col_offset)
                spans.append((*start, before.lineno, before.col_offset))
        elif isinstance(node, ast.AnnAssign):
            spans.append(_span(node.annotation))
        elif isinstance(node, ast.ClassDef) and any(getattr(base, "id", "") == "Protocol" for base in node.bases):
            spans.append(_span(node))  # a typing.Protocol: stubs that never run
    return spans


def _selected(tree: ast.Module, only: tuple[str, ...]) -> list[Span]:
    """The named functions, and each `if` whose body calls one of them (the gate call in build())."""
    spans = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name in only:
            spans.append(_span(node))
        elif isinstance(node, ast.If) and any(
                isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id in only
                for stmt in node.body for call in ast.walk(stmt)):
            spans.append(_span(node))
    return spans


def _skip_reason(item: WorkItem, annotations: list[Span], selected: list[Span] | None) -> str | None:
    (mutation,) = item.mutations
    name = mutation.operator_name
    if name.startswith(FAMILIES) and not KEEP.match(name):
        return "operator"
    if any(_inside(mutation.start_pos, s) for s in annotations):
        return "annotation"
    if selected is not None and not any(_inside(mutation.start_pos, s) for s in selected):
        return "outside the gates"
    return None


Equivalent = tuple[str, str, str]  # module, operator, the mutated line's code (without its comment)


def _code(line: str) -> str:
    return line.split("  #")[0].strip()


def _equivalents() -> set[Equivalent]:
    """The rows `| module | line | operator | `code` | reason |` of the equivalent-mutant tables in the docs."""
    rows = set()
    for doc in (REPO / "docs" / "testing.md", REPO / "docs" / "testing-mutation.md"):
        if doc.exists():
            for m in re.finditer(r"^\|\s*(\w+)\s*\|\s*\d+\s*\|\s*(\w+)\s*\|\s*`([^`]+)`\s*\|", doc.read_text(), re.M):
                rows.add((m[1], m[2], m[3].replace("\\|", "|").strip()))  # a table cell escapes `|`
    return rows


def _copy_checkout(dest: Path) -> None:
    ignore = shutil.ignore_patterns(".git", ".venv", "__pycache__", ".pytest_cache", ".hypothesis", ".mypy_cache",
                                    ".ruff_cache", "*.egg-info", "out", "build")
    shutil.copytree(REPO, dest, symlinks=True, ignore=ignore)


@dataclass
class Score:
    name: str
    total: int = 0
    killed: int = 0
    timeout: int = 0
    survived: int = 0
    errors: int = 0
    seconds: float = 0.0  # spent testing this module's mutants, over the last full run and its --survivors runs
    pending: int = 0  # not tested yet (an interrupted run)
    equivalent: int = 0  # survivors the docs list as equivalent

    @property
    def percent(self) -> float:
        """The mutation score: killed among the mutants that are not documented equivalents."""
        real = self.total - self.equivalent
        return 100.0 * self.killed / real if real else 100.0


def _command(target: Target) -> str:
    return " ".join([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
                     "--timeout", "120", *target.tests])


def _init(name: str, target: Target, work: Path, session: Path) -> None:
    """A new cosmic-ray session for the module, with the noise (see the module docstring) marked skipped."""
    config = work / f"mutation-{name}.toml"
    config.write_text(f'[cosmic-ray]\nmodule-path = "{target.path}"\ntimeout = 600\nexcluded-modules = []\n'
                      'test-command = "true"\n[cosmic-ray.distributor]\nname = "local"\n')
    session.unlink(missing_ok=True)
    subprocess.run([sys.executable, "-m", "cosmic_ray.cli", "init", str(config), str(session)], check=True,
                   cwd=work, stdout=subprocess.DEVNULL)
    tree = ast.parse((work / target.path).read_text())
    annotations = _annotations(tree)
    selected = _selected(tree, target.only) if target.only else None
    with use_db(str(session), WorkDB.Mode.open) as db:
        for item in list(db.pending_work_items):
            if reason := _skip_reason(item, annotations, selected):
                db.set_result(item.job_id, WorkResult(worker_outcome=WorkerOutcome.SKIPPED, output=reason))


_WORKER_CHECKOUT: tempfile.TemporaryDirectory[str] | None = None


def _start_worker() -> None:
    """A worker of --jobs: its own throw-away copy of the checkout, since a mutant is written in place."""
    global _WORKER_CHECKOUT
    _WORKER_CHECKOUT = tempfile.TemporaryDirectory(prefix="airgap-mutation-worker-")
    work = Path(_WORKER_CHECKOUT.name) / "checkout"
    _copy_checkout(work)
    os.chdir(work)
    os.environ["PYTHONPATH"] = str(work)
    os.nice(19)  # as the lead: the machine stays usable


def _mutate_and_test(item: WorkItem, command: str, timeout: float) -> tuple[str, WorkResult]:
    return item.job_id, mutate_and_test(item.mutations, command, timeout)


def _test(name: str, target: Target, work: Path, session: Path, items: list[WorkItem], jobs: int) -> float:
    """Run the module's tests against each mutant in `items`, `jobs` at a time; returns the seconds it took."""
    command = _command(target)
    started = time.monotonic()
    # The tests unmutated, once: they must pass, and their time sets each mutant's timeout.
    clean = subprocess.run(command.split(), cwd=work, capture_output=True, text=True)
    if clean.returncode != 0:
        sys.exit(f"mutation: {name}: the tests fail without a mutant:\n{clean.stdout[-3000:]}")
    # With jobs > 1 the tests of two mutants share the cores: a slower clean run must not read as a timeout.
    timeout = max(60.0, 5 * jobs * (time.monotonic() - started))
    with use_db(str(session), WorkDB.Mode.open) as db:
        if jobs == 1:
            results = (_mutate_and_test(item, command, timeout) for item in items)
        else:
            pool = concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                                          initializer=_start_worker)
            futures = [pool.submit(_mutate_and_test, item, command, timeout) for item in items]
            results = (future.result() for future in concurrent.futures.as_completed(futures))
        for n, (job_id, result) in enumerate(results, 1):
            db.set_result(job_id, result)  # as each finishes: an interrupted run keeps what it tested
            print(f"\r{name}: {n}/{len(items)} mutants", end="", file=sys.stderr, flush=True)
        if jobs > 1:
            pool.shutdown()
    print(file=sys.stderr)
    return time.monotonic() - started


def _report(name: str, target: Target, session: Path, seconds: float,
            equivalents: set[Equivalent]) -> tuple[Score, list[str], int]:
    """The module's score from its session; survivors as `module:line operator (function): source`."""
    source = session.with_suffix(".py").read_text()  # the module as it was mutated
    lines, tree = source.splitlines(), ast.parse(source)
    annotations = _annotations(tree)
    selected = _selected(tree, target.only) if target.only else None
    score, survivors, unexplained = Score(name, seconds=seconds), [], 0
    with use_db(str(session), WorkDB.Mode.open) as db:
        score.pending = sum(1 for item in db.pending_work_items if not _skip_reason(item, annotations, selected))
        for item, result in db.completed_work_items:
            if result.worker_outcome in (WorkerOutcome.SKIPPED, WorkerOutcome.NO_TEST) \
                    or _skip_reason(item, annotations, selected):
                continue
            (mutation,) = item.mutations
            line, operator = mutation.start_pos[0], mutation.operator_name.removeprefix("core/")
            if result.worker_outcome == WorkerOutcome.EXCEPTION and "has no attribute 'value'" in (result.output or ""):
                continue  # cosmic-ray 8.7 cannot replace a dotted exception name (x509.ExtensionNotFound): no mutant
            score.total += 1
            if result.worker_outcome != WorkerOutcome.NORMAL or result.test_outcome == TestOutcome.INCOMPETENT:
                score.errors += 1
                survivors.append(f"error {name}:{line} {operator}: {result.worker_outcome} {result.output}")
            elif result.test_outcome == TestOutcome.SURVIVED:
                score.survived += 1
                known = (name, operator, _code(lines[line - 1])) in equivalents
                unexplained += not known
                score.equivalent += known
                survivors.append(f"{'equivalent (docs)' if known else 'survived'} {name}:{line} {operator} "
                                 f"({mutation.definition_name}): {lines[line - 1].strip()}")
            else:
                score.killed += 1
                score.timeout += result.output == "timeout"
    return score, sorted(survivors, key=lambda s: int(re.search(r":(\d+) ", s)[1])), unexplained  # type: ignore[index]


def _run(names: list[str], survivors_only: bool, report_only: bool, state: Path, jobs: int) -> int:
    equivalents = _equivalents()
    state.mkdir(exist_ok=True)
    scores: list[Score] = []
    unexplained = 0
    with tempfile.TemporaryDirectory(prefix="airgap-mutation-") as tmp:
        work = Path(tmp) / "checkout"
        _copy_checkout(work)
        os.chdir(work)  # cosmic-ray resolves module paths against the working directory
        os.environ["PYTHONPATH"] = str(work)  # the copy first, for subprocesses too
        os.environ["PYTHONDONTWRITEBYTECODE"] = "1"  # no .pyc of one mutant may serve the next
        for name in names:
            target = TRUST_PATH[name]
            session, meta = state / f"{name}.sqlite", state / f"{name}.json"
            digest = hashlib.sha256((work / target.path).read_bytes()).hexdigest()
            if report_only:
                if not meta.exists():
                    sys.exit(f"mutation: no run of {name} yet: run scripts/mutation {name}")
                seconds = json.loads(meta.read_text())["seconds"]
            elif survivors_only:
                if not meta.exists() or json.loads(meta.read_text())["sha256"] != digest:
                    sys.exit(f"mutation: {target.path} changed since the last full run (or none ran): "
                             f"run scripts/mutation {name}")
                tree = ast.parse((work / target.path).read_text())
                annotations, selected = _annotations(tree), _selected(tree, target.only) if target.only else None
                with use_db(str(session), WorkDB.Mode.open) as db:  # survivors, and what an interrupted run left
                    items = [item for item, result in db.completed_work_items
                             if result.test_outcome == TestOutcome.SURVIVED]
                    items += [item for item in db.pending_work_items if not _skip_reason(item, annotations, selected)]
                seconds = json.loads(meta.read_text())["seconds"] + _test(name, target, work, session, items, jobs)
            else:
                _init(name, target, work, session)
                session.with_suffix(".py").write_bytes((work / target.path).read_bytes())
                meta.write_text(json.dumps({"sha256": digest, "seconds": 0}))
                with use_db(str(session), WorkDB.Mode.open) as db:
                    items = list(db.pending_work_items)
                seconds = _test(name, target, work, session, items, jobs)
            if not report_only:
                meta.write_text(json.dumps({"sha256": digest, "seconds": round(seconds)}))
            score, lines, unknown = _report(name, target, session, seconds, equivalents)
            scores.append(score)
            unexplained += unknown
            print(f"{name}: {score.killed}/{score.total} killed ({score.timeout} by timeout), {score.survived} "
                  f"survived ({score.equivalent} equivalent), {score.errors} errors: score {score.percent:.1f}% "
                  f"({score.seconds / 60:.1f} min)"
                  + (f"; {score.pending} not tested yet: scripts/mutation --survivors {name}" if score.pending else ""))
            for line in lines:
                print(f"  {line}")
    total = Score("overall", *(sum(getattr(s, f) for s in scores)
                               for f in ("total", "killed", "timeout", "survived", "errors", "seconds", "pending",
                                         "equivalent")))
    print(f"overall: {total.killed}/{total.total} killed, {total.survived} survived ({total.equivalent} equivalent), "
          f"{total.errors} errors: score "
          f"{total.percent:.1f}% ({total.seconds / 60:.1f} min); {unexplained} survivors not listed as equivalent"
          + (f"; {total.pending} mutants not tested yet" if total.pending else ""))
    return 0 if total.percent >= GOAL and not unexplained and not total.errors and not total.pending else 1


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/mutation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", metavar="MODULE", help=f"any of {', '.join(TRUST_PATH)} (default: all)")
    parser.add_argument("--survivors", action="store_true",
                        help="test again only the survivors of the last run, and what an interrupted run left")
    parser.add_argument("--report", action="store_true", help="print the scores of the last run; test nothing")
    parser.add_argument("--state", type=Path, default=REPO / ".mutation", metavar="DIR",
                        help="where the sessions of the last run are kept (default: .mutation, gitignored)")
    parser.add_argument("--jobs", type=int, default=1, metavar="N",
                        help="test N mutants at a time, each in its own copy of the checkout (default: 1)")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    names = args.modules or list(TRUST_PATH)
    if unknown := [name for name in names if name not in TRUST_PATH]:
        parser.error(f"not on the trust path: {', '.join(unknown)} (choose from {', '.join(TRUST_PATH)})")
    return _run(names, args.survivors, args.report, args.state.resolve(), args.jobs)


if __name__ == "__main__":
    sys.exit(main())
