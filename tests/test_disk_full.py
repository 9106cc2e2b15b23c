"""A full disk: writes are refused with their Code, reads go on, nothing
acknowledged is lost, and writes resume once space is freed.

The alarm's rules without a lab (a faked free-space figure) and the real
lab on a small tmpfs (needs root to mount one; skipped, saying why,
otherwise). The store's refusal on the simulator is in test_kvraft.py.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Iterator

import dns.message
import dns.query
import dns.rcode
import pytest

from mydns_lab.clients.jsonclient import AsyncJsonClient
from mydns_lab.experiments.labprocess import LabProcess, wait_for
from mydns_lab.lab import diskspace
from mydns_lab.lab.diskspace import MIN_FREE_BYTES, DiskAlarm, out_of_space
from mydns_lab.storage.files import StorageError

MIB = 1 << 20


# --- the alarm ------------------------------------------------------------------------------

def test_alarm_raises_under_the_reserve_and_clears_with_a_margin(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    free = [100 * MIB]
    monkeypatch.setattr(diskspace.shutil, "disk_usage",
                        lambda _path: shutil._ntuple_diskusage(0, 0, free[0]))  # type: ignore[attr-defined]
    alarm = DiskAlarm(tmp_path, servers_on_disk=3)
    reserve = alarm.reserve_bytes(snapshot_bytes=MIB, log_bound_bytes=MIB)
    assert reserve == 3 * 3 * MIB + MIN_FREE_BYTES
    assert not alarm.check(MIB, MIB) and alarm.reason == ""
    free[0] = reserve - 1
    assert alarm.check(MIB, MIB) and "full" in alarm.reason and str(tmp_path) in alarm.reason
    free[0] = reserve + 1   # inside the margin: still refusing, no flapping
    assert not alarm.check(MIB, MIB) and alarm.reason
    free[0] = int(reserve * diskspace.RESUME_MARGIN)
    assert alarm.check(MIB, MIB) and alarm.reason == ""


def test_out_of_space_looks_through_the_storage_error() -> None:
    def storage_error(code: int) -> StorageError:
        try:
            raise StorageError("cannot write log") from OSError(code, os.strerror(code))
        except StorageError as exc:
            return exc
    assert out_of_space(storage_error(errno.ENOSPC))
    assert out_of_space(storage_error(errno.EDQUOT))
    assert not out_of_space(storage_error(errno.EACCES))
    assert not out_of_space(ValueError("no"))


# --- the lab on a small disk ------------------------------------------------------------------

DISK_MIB = 24
LEFT_FREE_BYTES = 6 * MIB          # above the alarm's reserve for a small store, barely
LONG_LABEL = "x" * 60              # long names fill the log fast
CLAIMS_LIMIT = 60_000              # bounded in count ...
CLAIM_SECONDS = 90.0               # ... and in time


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of DISK_MIB mounted at tmp_path/disk (unmounted after)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; run the suite as root (CI does)")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MIB}m", "tmpfs",
                              str(disk)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}): no small disk to fill")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def claim(i: int) -> dict:
    return {"Type": "Put", "Key": f"n{i}.{LONG_LABEL}.{LONG_LABEL}", "Value": "10.0.0.1",
            "Token": "disk-test", "Seq": 1}


async def claim_until_refused(servers: list[tuple[str, int]]) -> tuple[list[int], Counter]:
    """Claim names, 16 in flight, until the service answers nospace a while
    (or the bounds run out); returns the acknowledged ones and every Code."""
    acknowledged: list[int] = []
    codes: Counter = Counter()
    next_name = iter(range(CLAIMS_LIMIT))
    deadline = asyncio.get_running_loop().time() + CLAIM_SECONDS

    async def worker(index: int) -> None:
        conn = AsyncJsonClient(servers[index % len(servers)])
        await conn.open()
        try:
            for i in next_name:
                if codes["nospace"] >= 50 or asyncio.get_running_loop().time() > deadline:
                    return
                reply = await conn.call(claim(i), 3.0)
                if reply is None:
                    codes["no answer"] += 1
                elif reply.get("Type") == "PutOk":
                    acknowledged.append(i)
                else:
                    codes[str(reply.get("Code"))] += 1
        finally:
            conn.close()

    await asyncio.gather(*(worker(k) for k in range(16)))
    return acknowledged, codes


def dns_rcode(server: tuple[str, int], name: str) -> int:
    reply = dns.query.udp(dns.message.make_query(name, "A"), server[0], port=server[1], timeout=2)
    return reply.rcode()


@pytest.mark.lab
def test_lab_on_a_full_disk_refuses_writes_keeps_reads_and_recovers(small_disk: Path) -> None:
    data_dir = small_disk / "data"
    with LabProcess(data_dir, nservers=3, nclerks=2) as lab:
        filler = small_disk / "filler"
        filler.write_bytes(b"\0" * max(0, shutil.disk_usage(small_disk).free - LEFT_FREE_BYTES))
        acknowledged, codes = asyncio.run(claim_until_refused(lab.servers()))
        assert codes["nospace"] >= 50, f"never refused for space: {codes}; {lab.replay}"
        assert acknowledged, codes
        # Reads go on: JSON (through the cluster) and DNS (from the front end's copy).
        last = max(acknowledged)
        assert lab.call(0, {"Type": "Query", "Key": claim(last)["Key"]})["Value"] == "10.0.0.1"
        assert dns_rcode(lab.servers()[1], f"{claim(last)['Key']}.mydns.") == dns.rcode.NOERROR
        status = (data_dir / "status.json")
        # Space back: writes resume by themselves.
        filler.unlink()

        def writes_again() -> bool:
            reply = lab.call(0, claim(CLAIMS_LIMIT))
            return reply.get("Type") == "PutOk"
        wait_for(writes_again, 30, "writes to be taken again after space was freed")
        # Nothing acknowledged was lost.
        lost = [i for i in acknowledged
                if lab.call(i, {"Type": "Query", "Key": claim(i)["Key"]}).get("Value") != "10.0.0.1"]
        assert not lost, f"{len(lost)} acknowledged names lost, e.g. {lost[:5]}"
        assert status.exists()
    log = lab.output()
    assert "Traceback" not in log, log[-3000:]
    assert "disk" in log and "full" in log, "the operator was never told"
