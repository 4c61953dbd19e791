"""bundler/lock.py: the lock file's bytes, its checks, and the comparisons, on real files (no registry here;
tests/e2e/test_lock.py and test_lock_charts.py run the whole story against real servers)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from bundler import lock
from bundler.charts import FetchedChart, Localized
from bundler.errors import InputError, LockMismatchError
from bundler.oci import Platform
from bundler.pull import PulledImage
from bundler.reference import ImageRef
from bundler.spec import ChartSource, RemoteChart

D = {c: f"sha256:{c * 64}" for c in "abcdef0123"}


def pulled(ref: str, upstream: str, bundled: str | None = None, keep: bool = False) -> PulledImage:
    return PulledImage(ref, ImageRef.parse(ref).with_default_tag(), ref, upstream, bundled or upstream, "x", 1,
                       (), keep_upstream_index=keep)


def chart(source: str = "charts/demo", version: str = "1.0.0", digest: str = D["c"],
          deps: tuple[lock.LockedChart, ...] = ()) -> lock.LockedChart:
    return lock.LockedChart(source, "demo", version, digest, deps)


def sample() -> lock.Lock:
    return lock.make(Path("/x/bundle.yaml"), D["0"], ["linux/amd64", "linux/arm64"],
                     [pulled("nginx:1.27", D["a"], D["b"]), pulled("quay.io/x/y:1", D["c"], keep=True),
                      pulled("docker.io/library/nginx:1.27", D["a"], D["b"])],
                     [chart(deps=(chart("https://repo", "2.0.0", D["d"]),))])


def test_the_file_is_sorted_deduplicated_and_reads_back(tmp_path: Path) -> None:
    data = lock.dumps(sample())
    text = data.decode()
    assert text.startswith("# Written by airgap-bundle") and "lock bundle.yaml --update" in text
    doc = yaml.safe_load(text)
    assert [i["ref"] for i in doc["images"]] == ["docker.io/library/nginx:1.27", "quay.io/x/y:1"]  # once, sorted
    assert doc["images"][0] == {"ref": "docker.io/library/nginx:1.27", "upstreamDigest": D["a"], "bundledDigest": D["b"]}
    assert doc["images"][1] == {"ref": "quay.io/x/y:1", "upstreamDigest": D["c"], "keepUpstreamIndex": True}
    assert doc["charts"][0]["dependencies"][0]["source"] == "https://repo"
    path = tmp_path / "bundle.lock"
    lock.write(path, data)
    assert [p.name for p in tmp_path.iterdir()] == ["bundle.lock"]  # no temporary file left behind
    back = lock.load(path)
    assert back == sample() and back.file_digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert back.images[1].line == text.splitlines().index("- ref: quay.io/x/y:1") + 1
    assert back.entry(back.images[1]) == f"{path}:{back.images[1].line} images[1]"
    assert lock.dumps(back) == data  # stable: reading and writing again gives the same bytes
    assert sample().entry(sample().images[0]) == "bundle.lock images[0]"  # not read from a file: no line
    assert lock.path_for(Path("a/prod.yaml")) == Path("a/prod.lock")


@pytest.mark.parametrize(("content", "expected"), [
    (b"images: [\n", r"bundle\.lock:2: malformed YAML"),
    (b"\xff\xfe", r"bundle\.lock: not UTF-8 \(byte 0\)"),
    (None, r"bundle\.lock:7: images\[0\]\.upstreamDigest: 'sha256:nope' does not match"),
    (b"- a list\n", r"bundle\.lock:1: \(top level\): \['a list'\] is not of type 'object'"),
])
def test_a_bad_lock_is_one_line_naming_file_line_and_field(tmp_path: Path, content: bytes | None,
                                                           expected: str) -> None:
    path = tmp_path / "bundle.lock"
    path.write_bytes(content if content is not None else (
        b"apiVersion: airgap-bundle.dev/v1alpha1\nkind: BundleLock\nspec: {file: b.yaml, digest: %s}\n"
        b"platforms: [linux/amd64]\nimages:\n- ref: nginx\n  upstreamDigest: sha256:nope\ncharts: []\n"
        % D["a"].encode()))
    with pytest.raises(InputError, match=expected) as caught:
        lock.load(path)
    assert caught.value.exit_code == 2 and "airgap-bundle lock SPEC" in str(caught.value)


def test_unreadable_or_huge_locks_and_a_lock_that_would_break_its_schema(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read the lock"):
        lock.load(tmp_path)  # a directory
    huge = tmp_path / "huge.lock"
    huge.write_bytes(b"#" * (lock.MAX_LOCK_BYTES + 1))
    with pytest.raises(InputError, match="larger than"):
        lock.load(huge)
    broken = lock.Lock("b.yaml", "sha256:short", ("linux/amd64",))
    with pytest.raises(InputError, match=r"^b\.lock: spec\.digest: 'sha256:short' does not match"):
        lock.dumps(broken)  # never written: the schema is checked before the bytes exist


def test_pins_keep_every_digest_unless_asked_to_update() -> None:
    locked = sample()
    assert set(lock.pins(locked)) == {"docker.io/library/nginx:1.27", "quay.io/x/y:1"}
    assert lock.pins(locked)["docker.io/library/nginx:1.27"].digest == D["a"]
    assert lock.pins(locked, update=()) == {}
    assert set(lock.pins(locked, update=(ImageRef.parse("nginx"),))) == {"quay.io/x/y:1"}
    assert set(lock.pins(locked, update=(ImageRef.parse("nginx:1.26"),))) == set(lock.pins(locked))
    assert not lock.matches(ImageRef.parse(f"nginx@{D['a']}"), "docker.io/library/nginx:1.27")


def wanted(**changes: object) -> lock.Wanted:
    base: dict[str, object] = {
        "spec_digest": D["1"], "platforms": ("linux/amd64", "linux/arm64"),
        "images": {"docker.io/library/nginx:1.27": (False, "a.yaml:3"), "quay.io/x/y:1": (True, "b.yaml:4")},
        "charts": (lock.WantedChart("charts/demo", "demo", chart()),),
    }
    return lock.Wanted(**{**base, **changes})  # type: ignore[arg-type]


def test_compare_says_exactly_what_differs_and_ignores_what_the_lock_does_not_pin() -> None:
    locked = sample()
    assert lock.compare(locked, wanted()) == ()  # another spec digest alone is no disagreement
    lock.require_agrees(locked, wanted())
    differences = lock.compare(locked, wanted(
        platforms=("linux/amd64",),
        images={"docker.io/library/nginx:1.27": (True, "a.yaml:3"), "docker.io/library/redis:7": (False, "c.yaml:9")},
        charts=(lock.WantedChart("charts/demo", "demo", chart(digest=D["e"])),
                lock.WantedChart("https://repo", "app", constraint="^1.0"))))
    assert [(d.kind, d.subject) for d in differences] == [
        ("platforms", "platforms"),
        ("image-added", "docker.io/library/redis:7"),
        ("image-removed", "quay.io/x/y:1"),
        ("keep-upstream-index", "docker.io/library/nginx:1.27"),
        ("chart-added", "https://repo"),
        ("chart-changed", "charts/demo"),
    ]
    messages = [d.message for d in differences]
    assert "docker.io/library/redis:7: carried by the spec (c.yaml:9) but not in bundle.lock" in messages
    assert "quay.io/x/y:1: bundle.lock images[1] pins it, but the spec no longer carries it" in messages
    assert f"1.0.0 {D['c']} -> 1.0.0 {D['e']}" in messages[-1]
    with pytest.raises(LockMismatchError, match=r"platforms: .* \(and 2 more; `airgap-bundle lock SPEC --check`"):
        lock.require_agrees(locked, wanted(platforms=("linux/amd64",), images={}))
    with pytest.raises(LockMismatchError) as caught:
        lock.require_agrees(locked, wanted(platforms=("linux/amd64",)))
    assert caught.value.exit_code == 16 and "more" not in caught.value.message


def test_remote_charts_compare_by_constraint_and_a_removed_chart_is_named() -> None:
    remote = lock.Lock("b.yaml", D["0"], ("linux/amd64",), (), (chart("https://repo", "1.4.2"),))
    ok = wanted(platforms=("linux/amd64",), images={}, charts=(lock.WantedChart("https://repo", "demo",
                                                                                 constraint="^1.2"),))
    assert lock.compare(remote, ok) == ()
    for constraint in ("1.4.2", ">=1.0 <2.0"):
        assert lock.compare(remote, wanted(platforms=("linux/amd64",), images={},
                                           charts=(lock.WantedChart("https://repo", "demo", constraint=constraint),))) == ()
    (moved,) = lock.compare(remote, wanted(platforms=("linux/amd64",), images={},
                                           charts=(lock.WantedChart("https://repo", "demo", constraint="~2.0"),)))
    assert "the spec asks for version ~2.0, b.lock:0 pins 1.4.2" in moved.message
    assert not lock.satisfies("1.4.2", "not a constraint")
    (gone,) = lock.compare(remote, wanted(platforms=("linux/amd64",), images={}, charts=()))
    assert gone.kind == "chart-removed" and "no longer has it" in gone.message


def test_changes_report_old_and_new_digests_of_images_charts_and_dependencies() -> None:
    old = sample()
    new = lock.make(Path("bundle.yaml"), D["1"], ["linux/amd64", "linux/arm64"],
                    [pulled("nginx:1.27", D["a"], D["e"]), pulled("redis:7", D["f"])],
                    [chart(version="1.1.0", digest=D["e"], deps=(chart("https://repo/dep", "1.0.0", D["f"]),)),
                     chart("https://other", "0.1.0", D["f"])])
    changes = lock.changes(old, new)
    assert [str(c) for c in changes] == [
        f"changed docker.io/library/nginx:1.27 (bundled): {D['b']} -> {D['e']}",
        f"added docker.io/library/redis:7: - -> {D['f']}",
        f"removed quay.io/x/y:1: {D['c']} -> -",
        f"changed charts/demo (demo) (1.0.0 -> 1.1.0): {D['c']} -> {D['e']}",
        f"removed https://repo (demo) (2.0.0): {D['d']} -> -",
        f"added https://repo/dep (demo) (1.0.0): - -> {D['f']}",
        f"added https://other (demo) (0.1.0): - -> {D['f']}",
    ]
    assert changes[0].to_json() == {"kind": "changed", "subject": "docker.io/library/nginx:1.27", "old": D["b"],
                                    "new": D["e"], "detail": "bundled"}
    assert lock.changes(old, old) == ()
    assert [c.kind for c in lock.changes(None, old)] == ["added"] * 3


def _tgz(files: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        tar.addfile(tarfile.TarInfo("toplevel-file"))  # not in a chart folder: ignored
    return raw.getvalue()


def test_local_charts_are_locked_by_their_files_with_vendored_subcharts(tmp_path: Path) -> None:
    root = tmp_path / "charts" / "app"
    (root / "templates").mkdir(parents=True)
    (root / "Chart.yaml").write_text("apiVersion: v2\nname: app\nversion: 0.1.0\n")
    (root / "templates" / "a.yaml").write_text("kind: ConfigMap\n")
    sub = root / "charts" / "db"
    sub.mkdir(parents=True)
    (sub / "Chart.yaml").write_text("name: db\nversion: 2.0.0\n")
    (root / "charts" / "notachart").mkdir()
    (root / "charts" / "notachart" / "README").write_text("x")
    (root / "charts" / "cache-1.0.0.tgz").write_bytes(_tgz({"cache/Chart.yaml": b"name: cache\nversion: 1.0.0\n",
                                                            "cache/charts/x/Chart.yaml": b"name: x\nversion: 3\n"}))
    spec_dir = tmp_path
    got = lock.local_chart(ChartSource(root, "app"), spec_dir)
    assert (got.source, got.name, got.version) == ("charts/app", "app", "0.1.0")
    # the tree digest is the one the shell gives (docs/lock.md)
    shell = subprocess.run("find . -type f | LC_ALL=C sort | sed 's|^\\./||' | xargs -d '\\n' sha256sum | sha256sum",
                           shell=True, cwd=root, capture_output=True, text=True, check=True).stdout.split()[0]
    assert got.digest == f"sha256:{shell}"
    assert [(d.source, d.name, d.version) for d in got.dependencies] == [
        ("charts/app/charts/cache-1.0.0.tgz", "cache", "1.0.0"), ("charts/app/charts/db", "db", "2.0.0")]
    cache = got.dependencies[0]
    assert cache.digest == lock.digest_of((root / "charts" / "cache-1.0.0.tgz").read_bytes())
    assert [d.name for d in cache.dependencies] == ["x"]
    # an archive chart, stamped: the archive's own digest, the spec's version
    archive = tmp_path / "app-0.1.0.tgz"
    archive.write_bytes(_tgz({"app/Chart.yaml": b"name: app\nversion: 0.0.0-dev\n"}))
    stamped = lock.local_chart(ChartSource(archive, "app", stamp_version="0.2.0"), spec_dir)
    assert (stamped.source, stamped.version, stamped.digest) == ("app-0.1.0.tgz", "0.2.0",
                                                                 lock.digest_of(archive.read_bytes()))
    # a change anywhere in the tree changes the digest
    (root / "templates" / "a.yaml").write_text("kind: Secret\n")
    assert lock.local_chart(ChartSource(root, "app"), spec_dir).digest != got.digest


def test_unreadable_local_charts_fail_with_the_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read the chart"):
        lock.local_chart(ChartSource(tmp_path / "missing.tgz", "x"), tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty: not a chart \(no Chart.yaml\)"):
        lock.local_chart(ChartSource(tmp_path / "empty", "x"), tmp_path)
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "Chart.yaml").write_text("- a list\n")
    with pytest.raises(InputError, match="odd/Chart.yaml: not a mapping"):
        lock.local_chart(ChartSource(tmp_path / "odd", "x"), tmp_path)
    (tmp_path / "bad.tgz").write_bytes(b"not gzip")
    with pytest.raises(InputError, match="bad.tgz: cannot read the chart"):
        lock.local_chart(ChartSource(tmp_path / "bad.tgz", "x"), tmp_path)


def test_fetched_charts_and_their_dependencies_become_entries_and_pins(tmp_path: Path) -> None:
    dep = FetchedChart("oci://r/charts/common", "common", "1.1.0", D["d"], Path())
    top = FetchedChart("https://repo", "web", "2.0.0", D["e"], Path(), "^2", dependencies=(dep,))
    remote = ChartSource(Path("<web>"), "web", remote=RemoteChart("https://repo", "web", "^2"))
    entry = lock.chart_entry(remote, Localized(remote, top, (dep,)), tmp_path)
    assert entry == lock.LockedChart("https://repo", "web", "2.0.0", D["e"],
                                     (lock.LockedChart("oci://r/charts/common", "common", "1.1.0", D["d"]),))
    assert lock.wanted_chart(remote, tmp_path) == lock.WantedChart("https://repo", "web", constraint="^2")
    oci = ChartSource(Path("<x>"), "x", remote=RemoteChart("oci://r/charts", "x", "1.0.0"))
    assert lock.wanted_chart(oci, tmp_path).source == "oci://r/charts/x"
    # a local chart whose missing dependency was fetched into it
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "Chart.yaml").write_text("name: local\nversion: 1.0.0\n")
    local = ChartSource(tmp_path / "local", "local")
    made = lock.chart_entry(local, Localized(local, None, (dep,)), tmp_path)
    assert made.source == "local" and [d.source for d in made.dependencies] == ["oci://r/charts/common"]
    assert lock.wanted_chart(local, tmp_path).local == lock.local_chart(local, tmp_path)
    locked = lock.Lock("b.yaml", D["0"], ("linux/amd64",), (), (entry, made), Path("b.lock"))
    pins = lock.chart_pins(locked)
    assert set(pins) == {("https://repo", "web"), ("oci://r/charts/common", "common")}  # the local chart is not
    assert pins[("https://repo", "web")].version == "2.0.0" and pins[("https://repo", "web")].entry == "b.lock:0"


def test_tree_digest_is_order_independent_and_names_matter() -> None:
    assert lock.tree_digest({"a": b"1", "b": b"2"}) == lock.tree_digest({"b": b"2", "a": b"1"})
    assert lock.tree_digest({"a": b"1"}) != lock.tree_digest({"c": b"1"})
    assert os.sep == "/"  # the listing uses posix paths, as the shell recipe does
    assert Platform.parse("linux/arm/v7")  # platforms in the schema: os/arch/variant


def test_a_failed_write_leaves_no_temporary_file_and_the_old_lock(tmp_path: Path) -> None:
    target = tmp_path / "bundle.lock"
    target.mkdir()
    (target / "inside").write_text("x")  # os.replace cannot put a file over a non-empty folder
    with pytest.raises(OSError):
        lock.write(target, b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle.lock"]


def test_line_numbers_fall_back_to_the_nearest_known_node() -> None:
    node = yaml.compose("images:\n- ref: a\n- ref: b\nplatforms: x\n")
    assert lock._line(node, ["images", 1, "ref"]) == 3
    assert lock._line(node, ["images", 7]) == 2      # past the end: the list itself
    assert lock._line(node, ["platforms", 0]) == 4   # a scalar has no children
    assert lock._line(None, ["images"]) == 0


def test_the_provenance_names_the_lock_only_when_there_is_one() -> None:
    import json as json_

    from bundler import attest

    def parameters(**kw: object) -> dict[str, object]:
        data = attest.provenance(subjects=[attest.Subject("a", "a" * 64)], spec={}, spec_digest=D["0"],
                                 dependencies=[], builder_version="0", epoch=0, **kw)  # type: ignore[arg-type]
        return dict(json_.loads(data)["predicate"]["buildDefinition"]["externalParameters"])

    assert "lock" not in parameters()
    assert parameters(lock=("bundle.lock", D["a"]))["lock"] == {"file": "bundle.lock", "digest": D["a"]}
