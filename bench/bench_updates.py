"""RFC 2136 updates signed with TSIG, one in flight: the lab against BIND 9,
in the same run.

Starts the real service (3 servers, 1 front end, fsync on) with a keys file
that grants one name to one HMAC-SHA256 key, and BIND 9 (Debian's bind9,
``named -g`` in the foreground on another loopback port) with the same zone
as a dynamic primary zone that the same key may update. Then, ``--rounds``
times, the lab and BIND in turn: ``--count`` updates of that name, each
replacing its A record with a new address, sent by dnspython over UDP one
at a time, each waiting for its NOERROR. Prints each run (updates/s, p50,
p99), each round's ratio lab / BIND and their median, and stops every
process it started, on errors too.

    .venv/bin/python bench/bench_updates.py [--rounds 3] [--count 500]

Needs named (Debian: ``apt-get install -y bind9``); installs nothing itself.
Target (issue 15): the lab at least BIND 9's rate with the same client.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.tsig
import dns.tsigkeyring
import dns.update

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_dns import stop_process  # noqa: E402  (a sibling script, not a package)
from machine import host_line  # noqa: E402

from mydns_lab.experiments.labprocess import LabProcess, free_port_range, wait_for  # noqa: E402
from mydns_lab.lab.state import p50_p99  # noqa: E402

ZONE = "mydns."
NAME = "upd.bench"
KEY = "bench"
SECRET = base64.b64encode(hashlib.sha256(b"mydns-bench-updates").digest()).decode()
TIMEOUT_S = 2.0
INSTALL_HINT = "apt-get install -y bind9"


def keys_file(folder: Path) -> Path:
    """The lab's keys file: the one key, granted the one name."""
    path = folder / "keys.txt"
    path.write_text(f"{KEY} {SECRET} {NAME}\n")
    path.chmod(0o600)  # the launcher refuses a keys file others can read
    return path


def start_named(binary: str, folder: Path) -> tuple[subprocess.Popen, int]:
    """BIND 9 in the foreground on a free loopback port: ``ZONE`` as a
    dynamic primary zone that the key may update, nothing else."""
    port = free_port_range(1, start=45000)
    (folder / "zone.db").write_text(
        f"$TTL 60\n@ IN SOA ns.{ZONE} hostmaster.{ZONE} 1 3600 600 86400 60\n"
        f"@ IN NS ns.{ZONE}\nns IN A 127.0.0.1\n")
    (folder / "named.conf").write_text(f"""\
options {{
    directory "{folder}";
    pid-file "{folder}/named.pid";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
}};
controls {{ }};
key "{KEY}" {{ algorithm hmac-sha256; secret "{SECRET}"; }};
zone "{ZONE}" {{ type primary; file "{folder}/zone.db"; allow-update {{ key "{KEY}"; }}; }};
""")
    log = open(folder / "named.out", "wb")
    proc = subprocess.Popen([binary, "-g", "-n", "1", "-c", str(folder / "named.conf")],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    return proc, port


def answers_soa(port: int) -> bool:
    try:
        reply = dns.query.udp(dns.message.make_query(ZONE, "SOA"), "127.0.0.1",
                              timeout=0.5, port=port)
    except (dns.exception.Timeout, OSError):
        return False
    return reply.rcode() == dns.rcode.NOERROR and bool(reply.answer)


def updates(port: int, count: int, first: int) -> dict:
    """``count`` signed updates of NAME, one in flight; updates/s and
    latency percentiles. Raises RuntimeError on a refusal or a timeout."""
    keyring = dns.tsigkeyring.from_text({KEY: SECRET})
    samples = []
    started = time.monotonic()
    for i in range(first, first + count):
        update = dns.update.UpdateMessage(ZONE, keyring=keyring,
                                          keyalgorithm=dns.tsig.HMAC_SHA256)
        update.replace(NAME, 60, "A", f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}")
        t = time.perf_counter()
        try:
            reply = dns.query.udp(update, "127.0.0.1", timeout=TIMEOUT_S, port=port)
        except dns.exception.Timeout:
            raise RuntimeError(f"update {i} to port {port}: no answer in {TIMEOUT_S:g} s") from None
        samples.append((time.perf_counter() - t) * 1000)
        if reply.rcode() != dns.rcode.NOERROR:
            raise RuntimeError(f"update {i} to port {port}: {dns.rcode.to_text(reply.rcode())}")
    elapsed = time.monotonic() - started
    p50, p99 = p50_p99(samples)
    return {"updates": count, "per_s": count / elapsed, "p50_ms": p50, "p99_ms": p99}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=500, help="updates per run (500)")
    args = parser.parse_args()
    named = shutil.which("named") or (Path("/usr/sbin/named").exists() and "/usr/sbin/named")
    if not named:
        sys.exit(f"named (BIND 9) is needed: {INSTALL_HINT}")
    version = subprocess.run([named, "-v"], capture_output=True, text=True).stdout.strip()
    print(f"{version}; dnspython {dns.version.version}; {args.count} updates per run, "
          "one in flight, over UDP", flush=True)
    print(host_line(), flush=True)
    ratios = []
    with (tempfile.TemporaryDirectory(prefix="mydns-bench-updates-") as tmp,
          contextlib.ExitStack() as cleanup):
        folder = Path(tmp)
        lab = LabProcess(folder / "data", "--fresh", "--keys", str(keys_file(folder)),
                         nservers=3, nclerks=1, seed=1)
        cleanup.push(lab)  # stopped (SIGKILL if it will not stop) on errors too
        lab.start()
        bind_folder = folder / "bind"
        bind_folder.mkdir()
        proc, bind_port = start_named(named, bind_folder)
        cleanup.callback(stop_process, proc)
        wait_for(lambda: proc.poll() is None and answers_soa(bind_port), 30,
                 f"named to answer (see {bind_folder / 'named.out'})")
        print(f"lab: {lab.replay}\nBIND 9 on 127.0.0.1:{bind_port}", flush=True)
        for r in range(1, args.rounds + 1):
            first = r * args.count * 2
            ours = updates(lab.port, args.count, first)
            theirs = updates(bind_port, args.count, first + args.count)
            ratios.append(ours["per_s"] / theirs["per_s"])
            for who, result in (("lab", ours), ("BIND 9", theirs)):
                print(f"round {r} {who:6s}: {result['per_s']:,.0f} updates/s, "
                      f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms", flush=True)
            print(f"round {r} ratio lab / BIND 9: {ratios[-1]:.2f}", flush=True)
    ratio = statistics.median(ratios)
    print(f"\nupdates/s lab / BIND 9: {ratio:.2f}, median of "
          f"{', '.join(f'{r:.2f}' for r in ratios)} "
          f"({'meets' if ratio >= 1 else 'misses'} the target of 1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
