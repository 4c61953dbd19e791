"""The verification record: what it holds, written next to an extraction, appended to a log that is never
truncated, read back; and the one pass over the bundle file that gives its sha256."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path

import pytest

from bundler import archive, audit, keys, verify
from bundler.errors import ArchiveError, ExpiredKeyError, InputError, UnlistedMemberError
from tests.conftest import REPO
from tests.support import shape
from tests.support.bundles import NOW, build_bundle, sha, small_payload
from tests.support.bundles import world as make_world

SCHEMA = json.loads((REPO / "bundler" / "schemas" / "verification-record.schema.json").read_text())


@pytest.fixture
def world(tmp_path: Path) -> dict:
    w = make_world(tmp_path, customer={"required": True})
    w["built"] = build_bundle(tmp_path / "b.tar", {"vendor": w["vendor"], "customer": w["customer"]})
    return w


def accepted(world: dict) -> verify.VerificationResult:
    return verify.require(verify.verify(world["built"].path, world["trust"], now=NOW))


def test_verification_hashes_the_whole_file_in_its_one_pass(world: dict) -> None:
    result = accepted(world)
    assert result.bundle_sha256 == hashlib.sha256(world["built"].path.read_bytes()).hexdigest()
    assert result.to_json()["bundleSha256"] == result.bundle_sha256


def test_record_names_bundle_policy_and_every_accepted_key(world: dict) -> None:
    result = accepted(world)
    rec = audit.record_for(result, policy=world["trust"], action="extract", destination="/srv/app", now=NOW)
    assert rec.bundle_sha256 == result.bundle_sha256 and rec.statement_sha256 == sha(world["built"].statement)
    assert rec.policy_sha256 == sha(world["policy"].read_bytes())
    # The path form hashes the file and agrees with the digest of the bytes load_trust parsed.
    assert audit.record_for(result, policy=world["policy"], action="extract", destination="/srv/app",
                            now=NOW).policy_sha256 == rec.policy_sha256
    by = {a.authority: a for a in rec.authorities}
    assert by["vendor"].keyid == world["vendor"].fingerprint
    assert by["vendor"].serial == format(world["vendor"].certificate.serial_number, "x")
    assert by["vendor"].not_after == world["vendor"].certificate.not_valid_after_utc
    assert by["customer"].keyid == world["customer"].fingerprint and by["customer"].serial is None
    assert rec.image_count == 1 and rec.bundle_name == "demo" and rec.bundle_version == "1.0.0"
    assert rec.images[0].digest.startswith("sha256:") and rec.images[0].local.endswith(rec.images[0].digest)
    assert rec.time.tzinfo is not None and rec.time.microsecond == 0 and rec.tool_version
    shape.check_shape(rec.to_json(), SCHEMA)


def test_record_round_trips_through_json_and_both_file_forms(world: dict) -> None:
    rec = audit.record_for(accepted(world), policy=world["trust"], action="push", destination="reg:5000",
                           now=NOW, image_count=7)
    assert rec.image_count == 7
    assert audit.VerificationRecord.from_json(json.loads(rec.to_bytes())) == rec
    written = audit.write_record(rec, world["tmp"] / "out")
    assert written == world["tmp"] / "out" / ".airgap-bundle" / "verification.json"
    assert audit.read_records(written) == [rec]
    assert not [p for p in written.parent.iterdir() if p.name != "verification.json"], "temp file left"


def test_no_record_for_a_rejected_bundle(world: dict) -> None:
    old, _ = world["pki"].cert_signer("old", world["ca"], not_before=NOW - dt.timedelta(days=9),
                                      not_after=NOW - dt.timedelta(days=1))
    expired = build_bundle(world["tmp"] / "e.tar", {"vendor": old, "customer": world["customer"]})
    result = verify.verify(expired.path, world["trust"], now=NOW)
    with pytest.raises(ExpiredKeyError):
        audit.record_for(result, policy=world["trust"], action="extract", destination="x", now=NOW)


def test_record_needs_a_bundle_digest() -> None:
    ok = verify.AuthorityResult("vendor", True, keyid="SHA256:" + "a" * 64)
    bare = verify.VerificationResult((ok,), frozenset({"vendor"}), statement_sha256="b" * 64)
    with pytest.raises(ValueError, match="bundle_sha256"):
        audit.record_for(bare, policy=keys.TrustPolicy.__new__(keys.TrustPolicy), action="push",
                         destination="x", now=NOW)
    # Given the digest (push hashing the file itself), a result without a statement still makes a record.
    policy = Path(__file__)
    rec = audit.record_for(bare, bundle_sha256="c" * 64, policy=policy, action="push", destination="x", now=NOW)
    assert rec.images == () and rec.image_count == 0 and rec.bundle_name is None
    assert rec.policy_sha256 == sha(policy.read_bytes())
    with pytest.raises(InputError, match="cannot read policy"):
        audit.record_for(bare, bundle_sha256="c" * 64, policy=policy.with_name("absent.yaml"), action="push",
                         destination="x", now=NOW)


def test_audit_log_appended_twice_is_never_truncated(world: dict) -> None:
    log = world["tmp"] / "state" / "deep" / "audit.jsonl"
    first = audit.record_for(accepted(world), policy=world["trust"], action="extract", destination="/a", now=NOW)
    second = audit.record_for(accepted(world), policy=world["trust"], action="push", destination="reg:5000",
                              now=NOW + dt.timedelta(seconds=5))
    audit.append_log(first, log)
    after_one = log.read_bytes()
    audit.append_log(second, log)
    data = log.read_bytes()
    assert data.startswith(after_one) and data.count(b"\n") == 2
    assert audit.read_records(log) == [first, second]
    for line in data.splitlines():
        shape.check_shape(json.loads(line), SCHEMA)


def test_a_torn_last_line_keeps_the_new_record_on_its_own_line(world: dict) -> None:
    log = world["tmp"] / "audit.jsonl"
    log.write_bytes(b'{"cut short by a crash')
    rec = audit.record_for(accepted(world), policy=world["trust"], action="extract", destination="/a", now=NOW)
    audit.append_log(rec, log)
    lines = log.read_bytes().split(b"\n")
    assert lines[0] == b'{"cut short by a crash' and json.loads(lines[1]) == rec.to_json()
    with pytest.raises(InputError, match=r"audit.jsonl:1: not a JSON line"):
        audit.read_records(log)


def test_unwritable_log_and_record_folder_are_clear_errors(world: dict) -> None:
    rec = audit.record_for(accepted(world), policy=world["trust"], action="extract", destination="/a", now=NOW)
    blocker = world["tmp"] / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="cannot open the audit log"):
        audit.check_log(blocker / "audit.jsonl")
    with pytest.raises(InputError, match="cannot open the audit log"):
        audit.append_log(rec, blocker / "audit.jsonl")
    with pytest.raises(ArchiveError, match="cannot write the verification record"):
        audit.write_record(rec, blocker)
    readonly = world["tmp"] / "ro"
    readonly.mkdir()
    (readonly / ".airgap-bundle").mkdir(mode=0o555)
    if os.geteuid() != 0:  # root ignores the mode
        with pytest.raises(ArchiveError, match="cannot write the verification record"):
            audit.write_record(rec, readonly)
        assert list((readonly / ".airgap-bundle").iterdir()) == []


def test_append_failure_after_open_is_an_input_error(world: dict) -> None:
    rec = audit.record_for(accepted(world), policy=world["trust"], action="extract", destination="/a", now=NOW)
    if not Path("/dev/full").exists():  # pragma: no cover - Linux has it
        pytest.skip("no /dev/full")
    with pytest.raises(InputError, match="cannot append to the audit log"):
        audit.append_log(rec, Path("/dev/full"))


def test_read_records_refuses_what_is_not_a_record(world: dict) -> None:
    rec = audit.record_for(accepted(world), policy=world["trust"], action="extract", destination="/a", now=NOW)
    path = world["tmp"] / "r.jsonl"
    path.write_text("\n\n")
    with pytest.raises(InputError, match="holds no verification record"):
        audit.read_records(path)
    path.write_text(json.dumps({"kind": "Something"}) + "\n")
    with pytest.raises(InputError, match=r"r.jsonl:1: not a verification record"):
        audit.read_records(path)
    bad_time = {**rec.to_json(), "time": "2026-13-40T00:00:00Z"}
    path.write_text("\n" + json.dumps(bad_time) + "\n")
    with pytest.raises(InputError, match=r"r.jsonl:2: not a verification record.*does not match"):
        audit.read_records(path)
    path.write_bytes(rec.to_bytes() * 3)
    with pytest.raises(InputError, match="larger than"):
        audit.read_records(path, cap=len(rec.to_bytes()) * 2)
    assert len(audit.read_records(path)) == 3
    with pytest.raises(InputError, match="cannot read"):
        audit.read_records(world["tmp"] / "absent.jsonl")


def test_default_audit_log_follows_xdg_state_home() -> None:
    assert audit.default_audit_log({"XDG_STATE_HOME": "/state"}) == Path("/state/airgap-bundle/audit.jsonl")
    assert audit.default_audit_log({"HOME": "/home/op"}) == Path("/home/op/.local/state/airgap-bundle/audit.jsonl")
    assert audit.default_audit_log().name == "audit.jsonl"


# --- the record inside the extraction, and the CLI ----------------------------------------------------------


def test_extraction_carries_the_record_from_the_start(world: dict) -> None:
    dest = world["tmp"] / "app"

    def extra(result: verify.VerificationResult) -> dict[str, bytes]:
        assert not dest.exists()  # made before the staging folder is renamed into place
        rec = audit.record_for(result, policy=world["trust"], action="extract", destination=str(dest), now=NOW)
        return {audit.RECORD_PATH: rec.to_bytes()}

    result = verify.verify_and_extract(world["built"].path, world["trust"], dest, now=NOW, extra=extra)
    (rec,) = audit.read_records(dest / audit.RECORD_PATH)
    assert rec.bundle_sha256 == result.bundle_sha256 and (dest / audit.RECORD_PATH).stat().st_mode & 0o777 == 0o644


def test_a_member_where_the_record_goes_is_refused_and_nothing_extracted(world: dict) -> None:
    files = small_payload()
    files[audit.RECORD_PATH] = b'{"forged": true}'
    built = build_bundle(world["tmp"] / "forged.tar", {"vendor": world["vendor"], "customer": world["customer"]},
                         files=files)
    dest = world["tmp"] / "app"
    with pytest.raises(UnlistedMemberError, match="extraction writes itself"):
        verify.verify_and_extract(built.path, world["trust"], dest, now=NOW,
                                  extra=lambda r: {audit.RECORD_PATH: b"{}"})
    assert not dest.exists() and not [p for p in world["tmp"].iterdir() if ".staging" in p.name]


def test_digest_pass_notices_a_file_that_changes_under_it(world: dict) -> None:
    path = world["built"].path
    index = archive.read_index(path)
    with open(path, "rb") as f:
        assert archive.digest_all(f, index)[0] == sha(path.read_bytes())
    with open(path, "ab") as f:
        f.write(b"\0" * 512)
    with open(path, "rb") as f, pytest.raises(ArchiveError, match="grew while being read"):
        archive.digest_all(f, index)
    os.truncate(path, index.file_size - 1024 * 10)
    with open(path, "rb") as f, pytest.raises(ArchiveError, match="shorter than when its headers were read"):
        archive.digest_all(f, index)


def test_a_statement_changed_between_signature_check_and_hashing_is_refused(world: dict) -> None:
    # What steps 2-3 read must be what the digest pass hashes: simulate a swap between the two reads.
    path = world["built"].path
    with open(path, "rb") as f:
        parts = verify.read_signed(f, "b.tar")
    listed, _ = verify.check_listing(parts, "b.tar")
    read = [(archive.STATEMENT, len(world["built"].statement), "0" * 64)]
    with open(path, "rb") as f, pytest.raises(UnlistedMemberError, match="changed while the bundle was being verified"):
        verify._check_digests(f, parts.index, listed, read, "b.tar")


def test_cli_verify_extract_writes_record_and_appends_log_each_time(world: dict, run_cli) -> None:
    log = world["tmp"] / "audit.jsonl"
    policy, bundle = str(world["policy"]), str(world["built"].path)
    for n in (1, 2):
        dest = world["tmp"] / f"app{n}"
        res = run_cli("verify", bundle, "--policy", policy, "--extract", str(dest), "--audit-log", str(log))
        assert res.returncode == 0, res.stderr
        assert f"verification record: {dest / audit.RECORD_PATH}, appended to {log}" in res.stdout
        assert audit.read_records(dest / audit.RECORD_PATH)[0].destination == str(dest)
    records = audit.read_records(log)
    assert [r.destination for r in records] == [str(world["tmp"] / "app1"), str(world["tmp"] / "app2")]
    assert {r.bundle_sha256 for r in records} == {sha(world["built"].path.read_bytes())}
    res = run_cli("verify", bundle, "--policy", policy, "--extract", str(world["tmp"] / "app3"), "--json")
    doc = json.loads(res.stdout)
    assert doc["record"]["bundle"]["sha256"] == doc["bundleSha256"] and doc["auditLog"] is None


def test_cli_audit_log_needs_extract_and_a_writable_place(world: dict, run_cli) -> None:
    policy, bundle = str(world["policy"]), str(world["built"].path)
    res = run_cli("verify", bundle, "--policy", policy, "--audit-log", str(world["tmp"] / "a.jsonl"))
    assert res.returncode == 2 and "--extract" in res.stderr
    blocker = world["tmp"] / "file"
    blocker.write_text("x")
    dest = world["tmp"] / "app"
    res = run_cli("verify", bundle, "--policy", policy, "--extract", str(dest), "--audit-log", str(blocker / "a"))
    assert res.returncode == 2 and "cannot open the audit log" in res.stderr and "Traceback" not in res.stderr
    assert not dest.exists()


def test_record_write_failing_at_the_rename_leaves_no_temp_file(world: dict) -> None:
    rec = audit.record_for(accepted(world), policy=world["trust"], action="extract", destination="/a", now=NOW)
    folder = world["tmp"] / "app"
    (folder / audit.RECORD_PATH / "occupied").mkdir(parents=True)  # a folder where the record goes
    with pytest.raises(ArchiveError, match="cannot write the verification record"):
        audit.write_record(rec, folder)
    assert sorted(p.name for p in (folder / audit.RECORD_DIR).iterdir()) == [audit.RECORD_NAME]
