"""`python -m mydns_lab` (what `sh run_dns.sh` runs): the lab on this host.
Also the ``mydns`` console script, whose subcommands (``lab``, ``put``,
``query``, ``keygen``, ``resolver``; see :func:`main`) reach the clients.

Flags mirror the original Go program's (``--nservers --nclerks
--dnsDuration --crash --unreliable``, with one or two dashes); a boolean
flag is accepted as ``--crash``, ``--crash true``, ``--crash=true`` and
``--crash false``.
"""

from __future__ import annotations

import argparse
import ipaddress
import signal
import sys
import time
from pathlib import Path
from typing import Any

from .admission import AdmissionPolicy
from .cmdline import EXIT_USAGE, UsageParser, add_boolean_flag, non_negative_seconds, positive_int
from .lab.flags import add_front_end_flags, add_store_flags, etcd_options
from .lab.launcher import MAX_SERVERS, Lab, LabFailure, LabOptions, StartFailure, print_final_table
from .lab.preflight import host_address, published_name_servers, tls_problem
from .lab.state import LabState
from .net.procs import StopRequested, set_role_title, stop_on_sigterm

PLAIN_STATUS_INTERVAL_S = 3.0


def build_parser() -> argparse.ArgumentParser:
    p = UsageParser(prog="sh run_dns.sh", description="Run MyDNS: Raft servers, clerks with DNS "
                "front ends, and the network between them, on this host.")
    flag = p.add_argument

    def boolean(name: str, help_text: str) -> None:
        add_boolean_flag(p, f"--{name}", f"-{name}", help=help_text)

    flag("--nservers", "-nservers", type=positive_int, default=5, help="Raft servers (5)")
    flag("--nclerks", "-nclerks", type=positive_int, default=5, help="clerks / front ends (5)")
    flag("--dnsDuration", "-dnsDuration", dest="dns_duration", type=non_negative_seconds, default=0.0,
         metavar="SECONDS", help="run this long, then stop (0: until Ctrl-C)")
    boolean("crash", "kill servers at random moments and restart them")
    boolean("unreliable", "drop 10%% of messages and delay them 0-26 ms")
    boolean("long-reordering", "with --unreliable: hold 2/3 of replies 200-2,200 ms")
    flag("--seed", type=int, default=None, help="seed for every random choice (default: random)")
    flag("--data-dir", type=Path, default=Path("mydns-data"), help="data folder (./mydns-data)")
    flag("--fresh", action="store_true", help="delete the data folder first: start empty")
    add_front_end_flags(p)
    add_store_flags(p)
    flag("--no-dashboard", dest="dashboard", action="store_false",
         help="print a plain status line every few seconds instead of the live view")
    boolean("no-fsync", "do not fsync (faster, loses data on power failure)")
    flag("--workload", choices=["correctness", "flood"], default=None,
         help="start the cluster, run this client workload for --dnsDuration seconds "
              "(10 if 0), print its summary and exit non-zero if it failed")
    return p


def options_from(argv: list[str] | None) -> LabOptions:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.port + args.nclerks - 1 > 65535:
        parser.error(f"--port {args.port} leaves no room for {args.nclerks} front ends")
    if args.nservers > MAX_SERVERS:
        parser.error(f"--nservers {args.nservers} is too many; at most {MAX_SERVERS}")
    if (args.http_cert is None) != (args.http_key is None):
        parser.error("--http-cert and --http-key go together: give both for HTTPS, or neither")
    if args.http_cert and (problem := tls_problem(args.http_cert, args.http_key)):
        parser.error(problem)
    if args.http_port and args.http_port + args.nclerks - 1 > 65535:
        parser.error(f"--http-port {args.http_port} leaves no room for {args.nclerks} front ends")
    try:
        name_servers = published_name_servers(args.zone, args.ns, args.bind, args.nclerks)
        etcd = etcd_options(args)
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    if etcd is not None and (args.crash or args.unreliable):
        parser.error("--crash and --unreliable act on our own Raft servers; with --store etcd "
                     "there are none (stop etcd members to try failures)")
    seed = args.seed if args.seed is not None else int(time.time() * 1000) % 1_000_000
    return LabOptions(nservers=args.nservers, nclerks=args.nclerks,
                      dns_duration=args.dns_duration, crash=args.crash,
                      unreliable=args.unreliable, long_reordering=args.long_reordering,
                      seed=seed, data_dir=args.data_dir, fresh=args.fresh, port=args.port,
                      bind=args.bind, zone=args.zone, ttl=args.ttl, dashboard=args.dashboard,
                      fsync=not args.no_fsync, dns_reads=args.dns_reads, keys_file=args.keys,
                      workload=args.workload, trusted=args.trusted, rrl=args.rrl,
                      name_servers=name_servers, http_port=args.http_port,
                      http_bind=args.http_bind, http_cert=args.http_cert, http_key=args.http_key,
                      status_page=args.status_page, etcd=etcd,
                      admission=AdmissionPolicy(args.expire, args.claims_per_minute,
                                                args.max_names, args.open_names))


def notes(options: LabOptions) -> list[str]:
    """Flags that are allowed but probably not what was meant, one line each."""
    found = []
    if options.nservers % 2 == 0:
        tolerated = (options.nservers - 1) // 2
        found.append(f"--nservers {options.nservers} tolerates {tolerated} failed "
                     f"server{'' if tolerated == 1 else 's'}, "
                     f"no more than --nservers {options.nservers - 1} does")
    if options.long_reordering and not options.unreliable:
        found.append("--long-reordering does nothing without --unreliable")
    http_bind = options.http_bind or options.bind
    clear_off_loopback = not options.http_cert and not ipaddress.ip_address(http_bind).is_loopback
    if options.http_port and clear_off_loopback:
        found.append(f"HTTP on {http_bind} without --http-cert: dyndns2 passwords (the names' "
                     "tokens) cross the network in clear; give --http-cert and --http-key, or "
                     "--http-bind 127.0.0.1")
    if options.bind in ("0.0.0.0", "::") and options.name_servers:
        published = options.name_servers[0].ipv4 + options.name_servers[0].ipv6
        if published == (host_address(6 if ":" in options.bind else 4),):
            found.append(f"--bind {options.bind}: the zone's name servers are published at "
                         f"{published[0]} (this host's first address); pass --ns ns1=ADDR "
                         "to choose")
    return found


def plain_status(state: LabState) -> str:
    if not state.nservers:  # --store etcd
        members = " ".join(f"{m.endpoint}={'leader' if m.leader else 'up' if m.up else 'down'}"
                           for m in state.etcd_members)
        p50, p99 = state.latency_percentiles()
        return (f"t={state.elapsed():.0f}s etcd: {members} ops={state.total_ops()} "
                f"ops/s={state.ops_per_second():.0f} p50={p50:.1f}ms p99={p99:.1f}ms")
    up = sum(1 for v in state.servers.values() if v.up)
    commit = max((v.status.commit for v in state.servers.values() if v.status), default=0)
    p50, p99 = state.latency_percentiles()
    packets = state.packets()
    return (f"t={state.elapsed():.0f}s leader=s{state.leader} term={state.leader_term} "
            f"up={up}/{state.nservers} commit={commit} ops={state.total_ops()} "
            f"ops/s={state.ops_per_second():.0f} p50={p50:.1f}ms p99={p99:.1f}ms "
            f"packets={packets['sent']} dropped={packets['dropped']} "
            f"crashes={state.crashes_injected}"
            + (f"\n{alarm}" if (alarm := state.disk_alarm()) else ""))


COMMANDS = {
    "lab": "run the lab on this host, as sh run_dns.sh does (the default: flags alone run it)",
    "frontend": "run one front end with its records in etcd (a machine of a deployment)",
    "export": "write every record of the embedded store (owners as hashes) as JSON lines",
    "import": "load exported records into etcd, refusing names another owner holds",
    "put": "keep a name pointed at this machine's addresses (put.py)",
    "query": "look a name up over DNS (query.py)",
    "keygen": "print a new TSIG key for the --keys file",
    "resolver": "route the zone to the service through this machine's resolver",
}


def main(argv: list[str] | None = None) -> int:
    """``mydns COMMAND ...`` (the console script) and ``python -m mydns_lab``:
    the first word picks a command from COMMANDS and the rest goes to that
    command's own ``main``. Without one (no arguments, or flags only) the lab
    runs exactly as it always has, which is what ``sh run_dns.sh`` does."""
    args = sys.argv[1:] if argv is None else list(argv)
    if not args or args[0].startswith("-"):
        if "-h" in args or "--help" in args:
            print(commands_help())
        return run_lab(args)
    command, rest = args[0], args[1:]
    if command == "lab":
        return run_lab(rest)
    if command == "frontend":
        from .lab import frontend
        return frontend.main(rest)
    if command == "export":
        from .lab import export
        return export.main(rest)
    if command == "import":
        from .etcd import importer
        return importer.main(rest)
    if command == "put":
        from .clients import put
        return put.main(rest, prog="mydns put")
    if command == "query":
        from .clients import query
        return query.main(rest, prog="mydns query")
    if command == "keygen":
        from .clients import keygen
        return keygen.main(rest)
    if command == "resolver":
        from .clients import resolver
        return resolver.main(rest)
    print(f"mydns: error: unknown command {command!r}; choose one of {', '.join(COMMANDS)}, "
          "or give the lab's flags alone (see mydns --help)", file=sys.stderr)
    return EXIT_USAGE


def commands_help() -> str:
    """What ``mydns --help`` prints above the lab's flags."""
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()]
    return "\n".join(["usage: mydns [COMMAND] [ARGS ...]   (or: python -m mydns_lab ...)", "",
                      "commands (each has its own --help):", *lines, "",
                      "Without a command, the flags below run the lab.", ""])


def run_lab(argv: list[str] | None = None) -> int:
    """The lab: ``mydns lab``, ``python -m mydns_lab`` and ``sh run_dns.sh``."""
    options = options_from(argv)
    set_role_title("lab")
    stop_on_sigterm()
    # A lab started in the background by a shell (`sh run_dns.sh ... &`)
    # inherits SIGINT ignored, and Python then leaves it so: `kill -INT`
    # would do nothing. Ctrl-C and kill -INT stop the lab however it began.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    live = None
    if options.dashboard and sys.stdout.isatty():
        from .lab.dashboard import LiveDashboard
        live = LiveDashboard()
        show = live.update
    else:
        last = [0.0]

        def show(state: LabState) -> None:
            if state.elapsed() - last[0] >= PLAIN_STATUS_INTERVAL_S:
                last[0] = state.elapsed()
                print(plain_status(state), flush=True)

    lab = Lab(options, show)
    failure = start_failure = ""
    try:
        lab.prepare()
    except LabFailure as exc:
        print(f"mydns: error: {exc}", file=sys.stderr)  # alone: the one line to act on
        return 2
    for note in notes(options):
        print(f"mydns: note: {note}", file=sys.stderr)
    workload = None
    try:
        lab.start()
        print(f"MyDNS lab: seed={options.seed} (replay with --seed {options.seed})", flush=True)
        print(lab.serving_summary(), flush=True)
        if live is not None:
            live.start()
        if options.workload:
            workload = _start_workload(options)
            lab.run(until=lambda: not workload.is_alive(), duration_s=float("inf"))
        else:
            lab.run()
    except (KeyboardInterrupt, StopRequested):
        pass
    except StartFailure as exc:
        start_failure = str(exc)
    except LabFailure as exc:
        failure = str(exc)
    finally:
        # Stopping now: a second SIGTERM must not break off the stop half-way
        # (children signalled but not reaped, no final table).
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if live is not None:
            live.stop()
        stats = lab.stop()
        if not start_failure:  # nothing ran: the error line says all
            print_final_table(stats)
            print(f"statistics written to {options.data_dir / 'last-run.json'}")
    if start_failure:
        print(f"mydns: error: {start_failure}", file=sys.stderr)
        return 2
    if failure:
        print(f"mydns: error: {failure}", file=sys.stderr)
        return 1
    if workload is not None:
        workload.join(5)
        if workload.exitcode != 0:
            print(f"mydns: the {options.workload} workload failed "
                  f"(see {options.data_dir / 'workload.json'})", file=sys.stderr)
            return 1
    return 0


def _start_workload(options: LabOptions) -> Any:
    """The workload runs in its own process, so the launcher keeps serving
    status and faults while it runs."""
    import multiprocessing

    from .experiments.workloads import run_in_lab
    servers = [(options.bind, options.port + i) for i in range(options.nclerks)]
    duration = options.dns_duration or 10.0
    process = multiprocessing.get_context("spawn").Process(
        target=run_in_lab, name="mydns-workload",
        args=(options.workload, servers, duration, options.zone, options.seed,
              str(options.data_dir / "workload.json")))
    process.start()
    return process


if __name__ == "__main__":
    sys.exit(main())
