"""Moving between stores: ``mydns export`` reads the embedded store's data
folder, ``mydns import`` loads the file into etcd, and the etcd store then
serves the names to their owners, with nothing claimed again.

The export on data folders written by file storage directly (the lagging
durable commit index, snapshots, logs that disagree, a torn tail left as
it was, a folder in use) and on a real lab; the import on a fake gateway
(a write whose answer was lost) and on a real three-member etcd.
Replay one: ``pytest tests/test_store_migration.py -k NAME``.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import random
import time
from pathlib import Path
from typing import Any

import pytest

from mydns_lab import codec
from mydns_lab.clients.jsonclient import NoAnswer
from mydns_lab.core.messages import Entry, HardState, Snapshot
from mydns_lab.etcd import importer
from mydns_lab.etcd.gateway import EtcdUnavailable, Gateway, b64, prefix_end, unb64
from mydns_lab.etcd.importer import (ImportFileError, ImportReport, import_records,
                                     read_json_lines)
from mydns_lab.etcd.layout import Layout, record_from
from mydns_lab.etcd.options import EtcdOptions
from mydns_lab.etcd.store import EtcdStore
from mydns_lab.experiments.etcdprocess import MACHINES, EtcdCluster, etcd_binary
from mydns_lab.experiments.labprocess import LabProcess, free_port_range
from mydns_lab.lab import export
from mydns_lab.lab.datalock import DataFolderLock
from mydns_lab.lab.export import ExportError, committed_records, write_json_lines
from mydns_lab.protocol import Command, Outcome, Record, RecordOp, Status
from mydns_lab.raftkv import KVStateMachine
from mydns_lab.records import OPEN_OWNER, json_owner
from mydns_lab.storage.files import FileStorage

TOKENS = {"alice": "tok-alice-1", "bob": "tok-bob-2"}
OWNERS = {who: json_owner(token) for who, token in TOKENS.items()}
_prefixes = itertools.count()


# --- building data folders with file storage --------------------------------------------

def _set(index: int, name: str, owner: str, address: str, seq: int = 1) -> Entry:
    """The log entry of a record_set at ``index`` (term 1)."""
    op = RecordOp("record_set", name, ipv4=(address,), owner=owner, seq=seq)
    return Entry(1, index, codec.encode(Command(7, index, op, 1_000 + index)))


LOG = [Entry(1, 1, b""),                                          # the leader's no-op
       _set(2, "alpha", OWNERS["alice"], "192.0.2.1"),
       _set(3, "beta", OWNERS["bob"], "192.0.2.2"),
       _set(4, "alpha", OWNERS["alice"], "192.0.2.11", seq=2),
       _set(5, "gamma", OPEN_OWNER, "192.0.2.3")]


def _server(data: Path, node: int, entries: list[Entry], commit: int,
            snapshot_at: int = 0) -> None:
    """``data/server-<node>`` holding ``entries`` (from a snapshot of the
    log up to ``snapshot_at``, if any) and ``commit`` as its durable commit
    index (written with the entries, as the lab writes it)."""
    with FileStorage(data / f"server-{node}", fsync=False) as storage:
        if snapshot_at:
            machine = KVStateMachine(codec)
            for entry in LOG[:snapshot_at]:
                if entry.data:
                    machine.apply(entry.index, codec.decode(entry.data))
            storage.save(HardState(1, 1, snapshot_at), [],
                         Snapshot(snapshot_at, 1, machine.snapshot()))
        storage.save(HardState(1, 1, commit), entries, None)


def _cluster_file(data: Path, servers: int) -> None:
    (data / "cluster.json").write_text(json.dumps({"servers": servers}) + "\n")


def _by_name(records: list[Record]) -> dict[str, Record]:
    return {r.name: r for r in records}


def test_export_reaches_what_a_majority_holds_past_the_durable_commit(tmp_path: Path) -> None:
    """No disk says entry 4 is committed (commit indexes 3, 3, 2), but two
    of three servers hold it: a leader counting them committed it, so it
    is exported; entry 5, on one server only, is not. server-2 holds its
    first three entries as a snapshot."""
    data = tmp_path / "data"
    _server(data, 1, LOG[:5], commit=3)
    _server(data, 2, LOG[3:4], commit=3, snapshot_at=3)
    _server(data, 3, LOG[:3], commit=2)
    _cluster_file(data, 3)
    records = committed_records(data)
    assert [r.name for r in records] == ["alpha", "beta"]
    alpha = _by_name(records)["alpha"]
    assert (alpha.ipv4, alpha.seq, alpha.owner) == (("192.0.2.11",), 2, OWNERS["alice"])
    assert alpha.updated_ms == 1_004  # the leader's stamp from the log, not the export's clock


def test_export_leaves_out_entries_the_logs_disagree_on(tmp_path: Path) -> None:
    """Two servers hold different entries at index 4 (terms 2 and 3) and
    the third stops at 3: no majority holds either, so neither is exported."""
    data = tmp_path / "data"
    gamma = Entry(2, 4, LOG[4].data)
    delta = Entry(3, 4, _set(4, "delta", OPEN_OWNER, "192.0.2.4").data)
    _server(data, 1, [*LOG[:3], gamma], commit=3)
    _server(data, 2, [*LOG[:3], delta], commit=3)
    _server(data, 3, LOG[:3], commit=3)
    assert [r.name for r in committed_records(data)] == ["alpha", "beta"]


def test_cluster_file_counts_servers_whose_folder_is_gone(tmp_path: Path) -> None:
    """Two folders of a five-server cluster holding entry 4 are no majority."""
    data = tmp_path / "data"
    _server(data, 1, LOG[:4], commit=3)
    _server(data, 2, LOG[:4], commit=3)
    _cluster_file(data, 5)
    assert _by_name(committed_records(data))["alpha"].seq == 1
    _cluster_file(data, 3)
    assert _by_name(committed_records(data))["alpha"].seq == 2


def _contents(data: Path) -> dict[str, bytes]:
    return {str(p.relative_to(data)): p.read_bytes() for p in sorted(data.rglob("*"))
            if p.is_file() and p.name != "lab.lock"}


def test_export_writes_nothing_in_the_data_folder(tmp_path: Path) -> None:
    """Not even the repair of a torn tail, which opening file storage makes:
    the export reads a copy."""
    data = tmp_path / "data"
    for node in (1, 2, 3):
        _server(data, node, LOG[:4], commit=4)
    with open(data / "server-1" / "log-00000000", "ab") as log:
        log.write(b"\x40\x00\x00\x00torn")  # a save cut short
    before = _contents(data)
    assert len(committed_records(data)) == 2
    assert _contents(data) == before


def test_json_lines_round_trip_sorted(tmp_path: Path) -> None:
    records = [Record("b", ("192.0.2.1",), (), ("v=1",), OWNERS["bob"], 3, 5),
               Record("a", (), ("2001:db8::1",), (), OPEN_OWNER, 0, 0)]
    out = io.StringIO()
    write_json_lines(records, out)
    lines = out.getvalue().splitlines()
    assert [json.loads(line)["name"] for line in lines] == ["a", "b"]
    assert set(json.loads(lines[0])) == {"name", "ipv4", "ipv6", "txt", "owner", "seq",
                                         "updated_ms"}
    assert read_json_lines(lines) == sorted(records, key=lambda r: r.name)


def _run_export(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = export.main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_export_refuses_a_folder_a_lab_holds(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _server(data, 1, LOG[:2], commit=2)
    lock = DataFolderLock.take(data)  # what a running lab holds
    try:
        code, out, err = _run_export("--data-dir", str(data))
        with pytest.raises(ExportError, match="in use by another lab"):
            committed_records(data)
    finally:
        lock.release()
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1 and "stop that lab first" in err
    assert _run_export("--data-dir", str(data))[0] == 0  # the export released its own lock


@pytest.mark.parametrize("make, words", [(False, "no data folder"),
                                         (True, "holds no server folder")])
def test_export_refuses_a_folder_without_servers(tmp_path: Path, make: bool,
                                                 words: str) -> None:
    data = tmp_path / "data"
    if make:
        data.mkdir()
    code, out, err = _run_export("--data-dir", str(data))
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1 and words in err and "--data-dir" in err
    assert not (data / "lab.lock").exists()


def test_export_usage_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        export.main([])
    assert exited.value.code == 2
    assert len(capsys.readouterr().err.splitlines()) == 1


# --- reading an export ------------------------------------------------------------------

GOOD = json.dumps({"name": "Host1.", "ipv4": ["192.0.2.7"], "ipv6": [], "txt": [],
                   "owner": OWNERS["alice"], "seq": 4, "updated_ms": 9})


@pytest.mark.parametrize("line, words", [
    ("not json", "Expecting value"),
    ("[1]", "expected a JSON object"),
    (GOOD.replace('"seq": 4, ', ""), "missing seq"),
    (GOOD.replace('"seq": 4', '"seq": 4, "token": "x"'), "unknown field 'token'"),
    (GOOD.replace("Host1.", "bad_name"), "may hold only"),
    (GOOD.replace('["192.0.2.7"]', '["2001:db8::1"]'), "not an IPv4 address"),
    (GOOD.replace('["192.0.2.7"]', '"192.0.2.7"'), "ipv4 must be a list"),
    (GOOD.replace('["192.0.2.7"]', "[]"), "no address"),
    (GOOD.replace('"txt": []', '"txt": ["' + "x" * 300 + '"]'), "over 255 octets"),
    (GOOD.replace(OWNERS["alice"], TOKENS["alice"]), "a token never goes in an export"),
    (GOOD.replace('"seq": 4', '"seq": -1'), "seq must be"),
    (GOOD.replace('"seq": 4', '"seq": true'), "seq must be"),
    (GOOD.replace('"updated_ms": 9', '"updated_ms": 1.5'), "updated_ms must be"),
    (GOOD, "name 'host1' again (first on line 1)"),
])
def test_a_bad_line_is_named_by_its_number(line: str, words: str) -> None:
    with pytest.raises(ImportFileError) as refused:
        read_json_lines([GOOD, "", line])
    assert str(refused.value).startswith("line 3: ") and words in str(refused.value)


def test_lines_in_stored_form() -> None:
    (record,) = read_json_lines([GOOD + "\n"])
    assert record == Record("host1", ("192.0.2.7",), (), (), OWNERS["alice"], 4, 9)


# --- importing, against a fake gateway ---------------------------------------------------

class FakeGateway:
    """etcd's transactions over a dict, enough for the importer: ranges,
    puts, and comparisons of mod_revision. ``lose_answers`` writes are
    applied but answered as if no member had (EtcdUnavailable)."""

    def __init__(self, lose_answers: int = 0) -> None:
        self.kvs: dict[str, tuple[bytes, int]] = {}
        self.revision = 1
        self.lose_answers = lose_answers

    async def txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]],
                  failure: list[dict[str, Any]] | None = None, *,
                  writes: bool = True) -> dict[str, Any]:
        held = all(str(self.kvs.get(unb64(c["key"]).decode(), (b"", 0))[1]) == c["mod_revision"]
                   for c in compare)
        responses = []
        if held:
            for request in success:
                if "request_range" in request:
                    key = unb64(request["request_range"]["key"]).decode()
                    kvs = ([{"value": b64(self.kvs[key][0]), "mod_revision": str(self.kvs[key][1])}]
                           if key in self.kvs else [])
                    responses.append({"response_range": {"kvs": kvs}})
            puts = [r["request_put"] for r in success if "request_put" in r]
            if puts:
                self.revision += 1
            for put in puts:
                self.kvs[unb64(put["key"]).decode()] = unb64(put["value"]), self.revision
        if writes and self.lose_answers:
            self.lose_answers -= 1
            raise EtcdUnavailable("the answer was lost")
        return {"succeeded": held, "responses": responses}


def test_a_write_whose_answer_was_lost_counts_once() -> None:
    layout = Layout("/mydns/")
    gateway = FakeGateway(lose_answers=1)
    record = Record("lost", ("192.0.2.9",), (), (), OWNERS["alice"], 1, 1)
    report = asyncio.run(import_records(gateway, layout, [record]))  # type: ignore[arg-type]
    assert (report.imported, report.already_there, report.refused) == (1, 0, [])
    assert gateway.kvs[layout.names][0] == b"1"
    assert record_from("lost", gateway.kvs[layout.record_key("lost")][0]) == record


def test_a_cluster_that_never_answers_stops_the_import(monkeypatch: pytest.MonkeyPatch) -> None:
    class Silent:
        async def txn(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            raise EtcdUnavailable("nobody home")

    monkeypatch.setattr(importer, "RETRY_BACKOFF_S", (0.0, 0.0))
    with pytest.raises(EtcdUnavailable, match="nobody home"):
        asyncio.run(import_records(Silent(), Layout("/mydns/"),  # type: ignore[arg-type]
                                   [Record("x", ("192.0.2.1",), owner=OPEN_OWNER)]))


# --- a real lab, exported ----------------------------------------------------------------

def _put(lab: LabProcess, request: dict[str, Any]) -> dict[str, Any]:
    """``request`` through any front end until it is answered (a lost
    answer is retried with the same Seq, so it takes effect once)."""
    deadline = time.monotonic() + 20
    while True:
        assert time.monotonic() < deadline, f"{request} never answered ({lab.replay})"
        try:
            return lab.call(random.randrange(lab.nclerks), request)
        except NoAnswer:
            continue


@pytest.mark.lab
def test_export_a_real_lab(tmp_path: Path) -> None:
    """Names put through the JSON front ends come out with their owners'
    hashes, never a token; the export is refused while the lab runs. The
    last put is exported although no disk marks it committed."""
    data = tmp_path / "data"
    with LabProcess(data, seed=21, nservers=3, nclerks=2) as lab:
        for i, who in enumerate(TOKENS):
            reply = _put(lab, {"Type": "Put", "Key": f"{who}-pc", "Value": f"192.0.2.{i + 1}",
                               "Token": TOKENS[who], "Seq": 1})
            assert reply["Type"] == "PutOk", reply
        assert _put(lab, {"Type": "Put", "Key": "alice-pc", "Value": "192.0.2.9",
                          "Token": TOKENS["alice"], "Seq": 2})["Type"] == "PutOk"
        assert _put(lab, {"Type": "Put", "Key": "shared", "Value": "2001:db8::5",
                          "Seq": 1})["Type"] == "PutOk"
        code, _, err = _run_export("--data-dir", str(data))
        assert code == 2 and "in use by another lab" in err
    code, out, err = _run_export("--data-dir", str(data), "--output", str(tmp_path / "x.jsonl"))
    assert (code, out) == (0, ""), err
    text = (tmp_path / "x.jsonl").read_text()
    assert not any(token in text for token in TOKENS.values())
    assert (tmp_path / "x.jsonl").stat().st_mode & 0o777 == 0o600
    records = _by_name(read_json_lines(text.splitlines()))
    assert {name: (r.ipv4 or r.ipv6, r.owner, r.seq) for name, r in records.items()} == {
        "alice-pc": (("192.0.2.9",), OWNERS["alice"], 2),
        "bob-pc": (("192.0.2.2",), OWNERS["bob"], 1),
        "shared": (("2001:db8::5",), OPEN_OWNER, 1)}


# --- importing into a real etcd ------------------------------------------------------------

@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if etcd_binary() is None:
        pytest.skip("etcd is not installed: install Debian's etcd-server "
                    "(apt-get install etcd-server)")
    port = free_port_range(2, 33000, MACHINES)
    with EtcdCluster(tmp_path_factory.mktemp("etcd"), client_port=port) as cluster:
        yield cluster


def _options(cluster: EtcdCluster) -> EtcdOptions:
    return EtcdOptions(tuple(cluster.endpoints.split(",")), f"/migration{next(_prefixes)}/")


async def _import(options: EtcdOptions, records: list[Record]) -> ImportReport:
    gateway = Gateway(options)
    try:
        return await import_records(gateway, Layout(options.prefix), records)
    finally:
        await gateway.close()


async def _stored(options: EtcdOptions) -> tuple[int, dict[str, Record]]:
    """The zone's name count and every record under the prefix."""
    gateway, layout = Gateway(options), Layout(options.prefix)
    try:
        count = await gateway.range(layout.names)
        records = await gateway.range(layout.records, prefix_end(layout.records))
    finally:
        await gateway.close()
    names = {layout.name_of(unb64(kv["key"]).decode()): record_from(
        layout.name_of(unb64(kv["key"]).decode()), unb64(kv["value"]))
        for kv in records.get("kvs", ())}
    return int(unb64(count["kvs"][0]["value"])), names


EXPORTED = [Record("alice-pc", ("192.0.2.1",), (), (), OWNERS["alice"], 5, 1_000),
            Record("bob-pc", (), ("2001:db8::2",), ("v=1",), OWNERS["bob"], 3, 2_000),
            Record("shared", ("192.0.2.3",), (), (), OPEN_OWNER, 1, 3_000)]


def test_import_twice_refuse_another_owner_then_serve(etcd: EtcdCluster) -> None:
    options = _options(etcd)
    mallory = "c" * 64

    async def main() -> None:
        report = await _import(options, EXPORTED)
        assert (report.imported, report.already_there, report.refused) == (3, 0, [])
        assert await _stored(options) == (3, _by_name(EXPORTED))
        again = await _import(options, EXPORTED)
        assert (again.imported, again.already_there, again.refused) == (0, 3, [])
        taken = Record("alice-pc", ("203.0.113.6",), (), (), mallory, 99, 4_000)
        newer = Record("bob-pc", ("192.0.2.22",), (), (), OWNERS["bob"], 4, 5_000)
        mixed = await _import(options, [taken, newer, Record("new", ("192.0.2.4",),
                                                             owner=mallory)])
        assert (mixed.imported, mixed.updated, mixed.already_there, mixed.refused) == (
            2, 1, 0, ["alice-pc"])
        count, stored = await _stored(options)
        assert count == len(stored) == 4
        assert stored["alice-pc"] == EXPORTED[0] and stored["bob-pc"] == newer

        store = EtcdStore(options)
        try:
            found = await store.call(RecordOp("record_get", "alice-pc"), 2.0)
            assert (found.status, found.records) == (Status.OK, (EXPORTED[0],))
            update = RecordOp("record_set", "alice-pc", ipv4=("192.0.2.50",),
                              owner=OWNERS["alice"], seq=6)
            done = await store.call(update, 2.0)
            assert (done.status, done.outcome) == (Status.OK, Outcome.UPDATED)
            stale = await store.call(RecordOp("record_set", "alice-pc", ipv4=("192.0.2.51",),
                                              owner=OWNERS["alice"], seq=5), 2.0)
            assert stale.status == Status.STALE
            stolen = await store.call(RecordOp("record_set", "alice-pc", ipv4=("192.0.2.66",),
                                               owner=mallory, seq=100), 2.0)
            assert stolen.status == Status.OWNED
            claimed = await store.call(RecordOp("record_set", "fresh", ipv4=("192.0.2.70",),
                                                owner=mallory, seq=1), 2.0)
            assert claimed.outcome == Outcome.CLAIMED
        finally:
            await store.close()
        count, stored = await _stored(options)
        assert count == len(stored) == 5  # the store's claim counted on the import's count
        assert stored["alice-pc"].ipv4 == ("192.0.2.50",)
    asyncio.run(main())


def _run_import(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = importer.main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_import_command(etcd: EtcdCluster, tmp_path: Path) -> None:
    options = _options(etcd)
    flags = ("--etcd-endpoints", etcd.endpoints, "--etcd-prefix", options.prefix)
    path = tmp_path / "records.jsonl"
    with open(path, "w") as f:
        write_json_lines(EXPORTED, f)
    assert _run_import(*flags, str(path)) == (
        0, "imported=3 updated=0 already_there=0 refused=0\n", "")
    theirs = Record("shared", ("192.0.2.3",), (), (), OWNERS["bob"], 7, 1)
    with open(path, "w") as f:
        write_json_lines([*EXPORTED[:2], theirs], f)
    code, out, err = _run_import(*flags, str(path))
    assert (code, err) == (1, "")
    assert out.splitlines()[0] == "imported=0 updated=0 already_there=2 refused=1"
    assert out.splitlines()[1].startswith("refused shared: another owner holds it")
    path.write_text(path.read_text() + "{oops\n")
    code, out, err = _run_import(*flags, str(path))
    assert (code, out) == (2, "") and "line 4:" in err and "nothing was imported" in err
    assert asyncio.run(_stored(options))[0] == 3


def test_import_into_no_etcd_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importer, "RETRY_BACKOFF_S", (0.0, 0.0))
    path = tmp_path / "records.jsonl"
    path.write_text(record_line(EXPORTED[0]))
    port = free_port_range(1, 35000)
    code, out, err = _run_import("--etcd-endpoints", f"http://127.0.0.1:{port}", str(path))
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1 and "no etcd member answered" in err


@pytest.mark.parametrize("argv, words", [
    (["x.jsonl"], "--etcd-endpoints"),
    (["--etcd-endpoints", "10.0.0.1:2379", "x.jsonl"], "expected client URLs"),
    (["--etcd-endpoints", "http://a:1", "--etcd-prefix", "mydns", "x.jsonl"], "prefix"),
])
def test_import_usage_errors_are_one_line(argv: list[str], words: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        importer.main(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and len(err.splitlines()) == 1 and words in err


def record_line(record: Record) -> str:
    out = io.StringIO()
    write_json_lines([record], out)
    return out.getvalue()


# --- the whole move -------------------------------------------------------------------------

@pytest.mark.lab
def test_move_a_lab_to_etcd(tmp_path: Path, etcd: EtcdCluster) -> None:
    """Export a lab's folder, import it, and its owner updates a name
    through the etcd store without claiming it again."""
    data = tmp_path / "data"
    with LabProcess(data, seed=22, nservers=3, nclerks=2) as lab:
        assert _put(lab, {"Type": "Put", "Key": "moved", "Value": "192.0.2.60",
                          "Token": TOKENS["alice"], "Seq": 10})["Type"] == "PutOk"
    path = tmp_path / "records.jsonl"
    assert _run_export("--data-dir", str(data), "--output", str(path))[0] == 0
    options = _options(etcd)
    assert _run_import("--etcd-endpoints", etcd.endpoints, "--etcd-prefix", options.prefix,
                       str(path))[:2] == (0, "imported=1 updated=0 already_there=0 refused=0\n")

    async def main() -> None:
        store = EtcdStore(options)
        try:
            update = RecordOp("record_set", "moved", ipv4=("192.0.2.61",),
                              owner=OWNERS["alice"], seq=11)
            done = await store.call(update, 2.0)
            assert (done.status, done.outcome) == (Status.OK, Outcome.UPDATED)
        finally:
            await store.close()
    asyncio.run(main())
