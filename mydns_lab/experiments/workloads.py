"""The original's two client tests, done right, against a running service.

``correctness``: each client uploads its own names through its own front
end, then every name is read back through a randomly chosen *other* front
end, with the JSON protocol and with DNS; rounds repeat until the duration
is spent. ``flood``: concurrent clients send random puts (of their own
names) and queries (of anyone's) as fast as they are answered.

Both count packets at the client (sent, replies received) and read the
front ends' own counters (``{"Type":"Stats"}``), so loss is measured at
both ends; both record every JSON operation (call time, return time or
unknown, result) and check the history with the linearizability checker.
A violation fails the run and names the HTML timeline written.

    python -m mydns_lab.experiments.workloads correctness [--clients 5] [--names 20] [--server HOST:PORT ...]
    python -m mydns_lab.experiments.workloads flood [--clients 10] [--duration 10] [--put-ratio 0.3]

Every request has a timeout and bounded retries: a lost reply is counted,
never waited for forever.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.asyncquery
import dns.exception
import dns.message
import dns.rdatatype

from ..clients.jsonclient import AsyncJsonClient, parse_server
from ..cmdline import UsageParser
from ..lab.state import p50_p99
from ..linearizability.models import KvModel, Operation
from ..linearizability.search import LINEARIZABLE, check
from ..linearizability.timeline import write_html_timeline
from .labprocess import front_ends_answer

REQUEST_TIMEOUT_S = 1.0
PUT_ATTEMPTS = 5
DNS_VISIBLE_WITHIN_S = 1.0
READ_PATIENCE_S = 10.0
"""How long a read-back keeps retrying: under crashes and loss an answer
can take several clerk time-outs, but never forever."""
CHECK_TIMEOUT_S = 60.0


@dataclass
class Report:
    """What a workload measured; ``ok`` is the verdict."""

    workload: str
    ok: bool = True
    problems: list[str] = field(default_factory=list)
    client_sent: int = 0
    client_received: int = 0
    server_received: int = 0
    server_replied: int = 0
    operations: int = 0
    elapsed_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    linearizability: str = ""
    timeline: str = ""

    def fail(self, problem: str) -> None:
        self.ok = False
        if len(self.problems) < 20:
            self.problems.append(problem)

    @property
    def client_lost(self) -> int:
        return max(0, self.client_sent - self.client_received)

    def summary(self) -> dict[str, Any]:
        p50, p99 = p50_p99(self.latencies_ms)
        sent = self.client_sent
        return {
            "workload": self.workload, "ok": self.ok, "operations": self.operations,
            "ops_per_s": round(self.operations / self.elapsed_s, 1) if self.elapsed_s else 0.0,
            "client_sent": sent, "client_received": self.client_received,
            "client_lost": self.client_lost,
            "client_loss_rate": round(self.client_lost / sent, 4) if sent else 0.0,
            "server_received": self.server_received, "server_replied": self.server_replied,
            "server_loss_rate": round(max(0, sent - self.server_received) / sent, 4)
            if sent else 0.0,
            "latency_ms_p50": round(p50, 2),
            "latency_ms_p99": round(p99, 2),
            "linearizability": self.linearizability, "timeline": self.timeline,
            "problems": self.problems,
        }

    def verdict_line(self) -> str:
        s = self.summary()
        status = "PASS" if self.ok else "FAIL"
        return (f"{self.workload}: {status} ops={s['operations']} ops/s={s['ops_per_s']} "
                f"client sent={s['client_sent']} received={s['client_received']} "
                f"lost={s['client_lost']} loss={s['client_loss_rate']:.2%} | "
                f"server received={s['server_received']} replied={s['server_replied']} "
                f"loss={s['server_loss_rate']:.2%} | p50={s['latency_ms_p50']}ms "
                f"p99={s['latency_ms_p99']}ms | {self.linearizability or 'not checked'}")


class _History:
    """JSON operations as clients saw them, in seconds since the start."""

    def __init__(self) -> None:
        self.ops: list[Operation] = []
        self._t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self._t0

    def add(self, client: int, call: float, ret: float | None, input: tuple,
            output: Any) -> None:
        self.ops.append(Operation(client, call, ret, input, output))


class _Client:
    """A workload client: a JSON connection to one front end, the names it
    owns with their tokens and sequence numbers."""

    def __init__(self, ident: int, conn: AsyncJsonClient, history: _History,
                 report: Report) -> None:
        self.ident = ident
        self.conn = conn
        self.history = history
        self.report = report
        self.tokens: dict[str, str] = {}
        self.seqs: dict[str, int] = {}

    async def put(self, name: str, address: str, attempts: int = PUT_ATTEMPTS) -> bool:
        """Upload until acknowledged (same token and Seq on every retry, so
        retries are idempotent). True when acknowledged."""
        token = self.tokens.setdefault(name, secrets.token_urlsafe(18))
        seq = self.seqs[name] = self.seqs.get(name, 0) + 1
        request = {"Type": "Put", "Key": name, "Value": address, "Token": token, "Seq": seq}
        call = self.history.now()
        for _ in range(attempts):
            started = time.monotonic()
            reply = await self.conn.call(request, REQUEST_TIMEOUT_S)
            if reply is None:
                continue
            if reply.get("Type") == "PutOk":
                self.report.latencies_ms.append((time.monotonic() - started) * 1000)
                self.history.add(self.ident, call, self.history.now(),
                                  ("put", name, address), None)
                return True
            error = reply.get("Error", "")
            if "did not answer" not in error:  # refused: it took no effect
                self.report.fail(f"put {name}={address} refused: {error}")
                return False
        self.history.add(self.ident, call, None, ("put", name, address), None)
        return False

    async def query(self, name: str) -> str | None:
        """The value a linearizable JSON query returns; None if unanswered."""
        call = self.history.now()
        started = time.monotonic()
        reply = await self.conn.call({"Type": "Query", "Key": name}, REQUEST_TIMEOUT_S)
        if reply is None or reply.get("Type") != "Response":
            return None
        self.report.latencies_ms.append((time.monotonic() - started) * 1000)
        value = reply.get("Value", "")
        value = value if isinstance(value, str) else ",".join(value)
        self.history.add(self.ident, call, self.history.now(), ("get", name), value)
        return value


async def _dns_a(server: tuple[str, int], name: str, zone: str) -> str | None:
    query = dns.message.make_query(f"{name}.{zone}", dns.rdatatype.A)
    try:
        answer = await dns.asyncquery.udp(query, server[0], port=server[1],
                                          timeout=REQUEST_TIMEOUT_S)
    except (dns.exception.DNSException, OSError):
        return None
    for rrset in answer.answer:
        for rdata in rrset:
            return rdata.address
    return ""


async def _server_counters(servers: list[tuple[str, int]]) -> tuple[int, int]:
    received = replied = 0
    for server in servers:
        conn = await AsyncJsonClient(server).open()
        reply = await conn.call({"Type": "Stats"}, REQUEST_TIMEOUT_S)
        conn.close()
        if reply and reply.get("Type") == "Stats":
            received += reply.get("RequestsReceived", 0)
            replied += reply.get("RepliesSent", 0)
    return received, replied


async def _measured(report: Report, servers: list[tuple[str, int]], body,
                    history_sink: list[Operation] | None = None) -> None:
    """Run ``body``, then fill in the packet counts of both ends (less the
    Stats requests themselves) and check the history (also appended to
    ``history_sink`` when given)."""
    before = await _server_counters(servers)
    history = _History()
    clients: list[_Client] = []
    started = time.monotonic()
    try:
        await body(history, clients)
    finally:
        report.elapsed_s = time.monotonic() - started
        for client in clients:
            client.conn.close()
    after = await _server_counters(servers)
    report.client_sent += sum(c.conn.sent for c in clients)
    report.client_received += sum(c.conn.received for c in clients)
    report.server_received = after[0] - before[0] - len(servers)
    report.server_replied = after[1] - before[1] - len(servers)
    report.operations = len(history.ops)
    _check_history(report, history)
    if history_sink is not None:
        history_sink.extend(history.ops)


def _check_history(report: Report, history: _History) -> None:
    result = check(history.ops, KvModel(), CHECK_TIMEOUT_S)
    report.linearizability = f"{result.verdict} ({len(history.ops)} ops, {result.elapsed_s:.2f} s)"
    if result.verdict != LINEARIZABLE:
        path = Path(f"linearizability-{report.workload}-{int(time.time())}.html").resolve()
        write_html_timeline(result, path)
        report.timeline = str(path)
        report.fail(f"history {result.verdict}; timeline written to {path}\n{result.explain()}")


async def correctness(servers: list[tuple[str, int]], clients: int = 5, names: int = 20,
                      duration_s: float = 0.0, zone: str = "mydns.", seed: int = 0,
                      history_sink: list[Operation] | None = None) -> Report:
    """Rounds of: every client uploads its names through its own front end;
    every name is read back through another front end (JSON and DNS)."""
    report = Report("correctness")
    rng = random.Random(seed)
    run = secrets.token_hex(3)

    async def body(history: _History, workers: list[_Client]) -> None:
        for i in range(clients):
            conn = await AsyncJsonClient(servers[i % len(servers)]).open()
            workers.append(_Client(i, conn, history, report))
        owned = {i: [f"c{i}-n{j}-{run}" for j in range(names) if j % clients == i]
                 for i in range(clients)}
        deadline = time.monotonic() + duration_s
        round_no = 0
        while round_no == 0 or time.monotonic() < deadline:
            round_no += 1
            expected: dict[str, str] = {}

            async def upload(worker: _Client) -> None:
                for name in owned[worker.ident]:
                    address = f"10.{round_no % 250}.{worker.ident}.{rng.randrange(1, 255)}"
                    if await worker.put(name, address):
                        expected[name] = address

            await asyncio.gather(*(upload(w) for w in workers))
            await _read_back(expected, workers, servers, zone, rng, report)

    await _measured(report, servers, body, history_sink)
    return report


async def _read_back(expected: dict[str, str], workers: list[_Client],
                     servers: list[tuple[str, int]], zone: str, rng: random.Random,
                     report: Report) -> None:
    """Read every acknowledged name through a front end other than its
    uploader's: JSON must show it at once, DNS within DNS_VISIBLE_WITHIN_S."""
    for name, address in expected.items():
        owner = int(name[1:name.index("-")])
        others = [w for w in workers if w.conn.server != workers[owner].conn.server] or workers
        reader = rng.choice(others)
        value = None
        deadline = time.monotonic() + READ_PATIENCE_S
        while value is None and time.monotonic() < deadline:
            value = await reader.query(name)
        if value != address:
            report.fail(f"JSON query of {name} via {reader.conn.server} gave {value!r}, "
                        f"expected {address}")
        deadline = time.monotonic() + DNS_VISIBLE_WITHIN_S
        seen = None
        while time.monotonic() < deadline:
            seen = await _dns_a(reader.conn.server, name, zone)
            report.client_sent += 1
            report.client_received += seen is not None
            if seen == address:
                break
            await asyncio.sleep(0.01)  # poll interval while the change propagates
        if seen != address:
            report.fail(f"DNS A {name} via {reader.conn.server} gave {seen!r} after "
                        f"{DNS_VISIBLE_WITHIN_S:g} s, expected {address}")


async def flood(servers: list[tuple[str, int]], clients: int = 10, duration_s: float = 10.0,
                put_ratio: float = 0.3, seed: int = 0,
                history_sink: list[Operation] | None = None) -> Report:
    """Random puts of each client's own names and queries of anyone's, as
    fast as they are answered, for ``duration_s``."""
    report = Report("flood")
    rng = random.Random(seed)
    run = secrets.token_hex(3)

    async def body(history: _History, workers: list[_Client]) -> None:
        for i in range(clients):
            conn = await AsyncJsonClient(servers[rng.randrange(len(servers))]).open()
            workers.append(_Client(i, conn, history, report))
        names = {w.ident: [f"f{w.ident}-{k}-{run}" for k in range(2)] for w in workers}
        everyone = [n for group in names.values() for n in group]
        deadline = time.monotonic() + duration_s

        async def loop(worker: _Client, wrng: random.Random) -> None:
            for name in names[worker.ident]:
                await worker.put(name, "192.0.2.1", attempts=3)
            count = 0
            while time.monotonic() < deadline:
                count += 1
                if wrng.random() < put_ratio:
                    name = wrng.choice(names[worker.ident])
                    await worker.put(name, f"10.{worker.ident % 250}.{count >> 8 & 255}."
                                           f"{count & 255}", attempts=1)
                else:
                    await worker.query(wrng.choice(everyone))

        await asyncio.gather(*(loop(w, random.Random(rng.getrandbits(32))) for w in workers))

    await _measured(report, servers, body, history_sink)
    # Refusals under flood come only from lost answers; they are loss, not failure.
    report.problems = [p for p in report.problems if "refused" not in p]
    report.ok = not report.problems
    return report


def main(argv: list[str] | None = None) -> int:
    parser = UsageParser(prog="python -m mydns_lab.experiments.workloads",
                         description=__doc__.split("\n\n")[0])
    parser.add_argument("workload", choices=["correctness", "flood"])
    parser.add_argument("--clients", type=int, default=None)
    parser.add_argument("--names", type=int, default=20)
    parser.add_argument("--duration", type=float, default=None, metavar="SECONDS")
    parser.add_argument("--put-ratio", type=float, default=0.3)
    parser.add_argument("--server", action="append", default=[], metavar="HOST:PORT",
                        help="front ends (default: 127.0.0.1:9876..9880)")
    parser.add_argument("--zone", default="mydns.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        servers = [parse_server(s) for s in args.server] or \
            [("127.0.0.1", 9876 + i) for i in range(5)]
    except ValueError as exc:
        parser.error(str(exc))
    report = run_workload(args.workload, servers, clients=args.clients, names=args.names,
                          duration_s=args.duration, put_ratio=args.put_ratio, zone=args.zone,
                          seed=args.seed)
    print(report.verdict_line())
    for problem in report.problems:
        print(f"  ! {problem}")
    return 0 if report.ok else 1


def wait_until_serving(servers: list[tuple[str, int]], timeout_s: float = 30.0) -> bool:
    """Whether every front end answered a JSON query before the deadline
    (the cluster has elected a leader and serves reads)."""
    deadline = time.monotonic() + timeout_s
    while not front_ends_answer(servers):
        if time.monotonic() > deadline:
            return False
    return True


def run_in_lab(name: str, servers: list[tuple[str, int]], duration_s: float, zone: str,
               seed: int, report_path: str) -> None:
    """Process entry point for ``run_dns.sh --workload``: wait for the
    cluster, run the workload, print its summary, save it as JSON, and exit
    0 only if it passed."""
    import json
    if not wait_until_serving(servers):
        print(f"{name}: FAIL the cluster did not serve within 30 s", flush=True)
        sys.exit(1)
    report = run_workload(name, servers, duration_s=duration_s, zone=zone, seed=seed)
    print(report.verdict_line(), flush=True)
    for problem in report.problems:
        print(f"  ! {problem}", flush=True)
    Path(report_path).write_text(json.dumps(report.summary(), indent=2) + "\n")
    sys.exit(0 if report.ok else 1)


def run_workload(name: str, servers: list[tuple[str, int]], *, clients: int | None = None,
                 names: int = 20, duration_s: float | None = None, put_ratio: float = 0.3,
                 zone: str = "mydns.", seed: int = 0) -> Report:
    """Run a workload to completion on a fresh event loop."""
    if name == "correctness":
        return asyncio.run(correctness(servers, clients or 5, names, duration_s or 0.0, zone,
                                       seed))
    return asyncio.run(flood(servers, clients or 10, duration_s or 10.0, put_ratio, seed))


if __name__ == "__main__":
    sys.exit(main())
