"""Data-driven Raft scenarios: a script of commands, each followed by the
trace it must produce (in the manner of etcd-io/raft's ``testdata/*.txt``).

A script (``tests/scenarios/*.txt``) is a sequence of steps::

    # comments and blank lines between steps are kept as they are
    campaign 1
    ----
    s1 election timeout after 12 ticks
    s1 became candidate term=1
    1->2 RequestVote term=1 last=0/0
    1->3 RequestVote term=1 last=0/0

A step is one command line, a ``----`` line, and the expected output up to
the next blank line (a step with nothing to say prints ``ok``). The nodes are
:class:`tests.rafttest.Member`\\s: the real core on MemoryStorage, every
Ready handled by the one real :func:`~mydns_lab.host.handle_ready` right
after the command that caused it. Messages wait in an explicit network
until a command delivers them. There is no clock and no thread; every rng is
seeded from the ``start`` command's ``seed``, so a script's output is fixed.

Output lines, in the order things happened:

* ``1->2 AppendEntries term=2 prev=1/1 entries=[2/2] commit=1``: a message
  entered the network (``term/index`` pairs throughout, as etcd prints them);
* ``s2 became leader term=2 commit=1``: the core's own trace lines;
* ``s2 applied 2/2:x``: committed entries handed to the state machine
  (``term/index:data``; a no-op has no data);
* ``lost 1->3 ...: partitioned`` / ``: s3 is down``, ``dropped 1->3 ...``;
* ``[tick 3]`` / ``[ticks 4-20, each]``: in the output of ``tick ...
  times=N`` and ``run ticks=N``, what each tick caused, under the number of
  the tick; ticks that caused the same lines share one heading, and ticks
  that caused nothing are left out (twenty rounds of heartbeats read as one).

Commands (node ids are positional; ``all`` means every node):

=================================  ==========================================
``start nodes=N [seed=S] [...]``    a fresh cluster 1..N; options ``pre_vote``,
                                    ``check_quorum``, ``election``,
                                    ``heartbeat``, ``max_msg_bytes``
``tick IDS|all [times=N]``          tick the nodes N times (nothing delivered)
``run ticks=N``                     N rounds of: tick every node, stabilize
``campaign ID``                     tick one node until its timeout fires
``propose ID DATA...``              propose each word on node ID
``compact ID``                      snapshot node ID's applied state
``deliver [from=] [to=] [type=]``   deliver the waiting messages that match
``drop [from=] [to=] [type=]``      lose the waiting messages that match
``stabilize``                       deliver until no message is waiting
``pending``                         list the waiting messages
``partition IDS | IDS ...``         split the network into groups
``isolate IDS`` / ``connect IDS``   cut each off alone / join their groups
``heal``                            one network again
``crash IDS|all``                   the nodes die; their storage remains
``restart IDS|all [wiped=true]``    rebuild from storage (or from nothing)
``status [IDS]`` / ``log [IDS]``    role, term, commit, log / entries, state
=================================  ==========================================

A malformed script (unknown command, bad argument) raises
:class:`ScenarioError` naming the file and line. ``tests/test_scenarios.py``
runs every script and compares; ``--rewrite`` writes the actual output back.
"""

from __future__ import annotations

import difflib
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable, assert_never

from mydns_lab.core.messages import (AppendEntries, AppendEntriesResponse, Entry, Heartbeat,
                                     HeartbeatResponse, InstallSnapshot, RaftMessage, RequestVote,
                                     RequestVoteResponse, Snapshot, TermQuery, TermReport)
from mydns_lab.raft import NotLeader, Ready, Role
from tests.rafttest import Cluster, Member, new_member, restart, tick_until_campaign

SEPARATOR = "----"
NOTHING = "ok"
MAX_STABILIZE_ROUNDS = 1000
MESSAGE_TYPES = {cls.__name__: cls for cls in (
    RequestVote, RequestVoteResponse, AppendEntries, AppendEntriesResponse, Heartbeat,
    HeartbeatResponse, InstallSnapshot, TermQuery, TermReport)}


class ScenarioError(Exception):
    """A script that cannot run as written; the message starts ``file:line:``."""


class ScriptError(Exception):
    """Raised by a command on bad input; the runner adds the file and line."""


# --- scripts ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """One command of a script. ``line`` is the command's 1-based line;
    the expected output is ``lines[out_start:out_end]`` of the file (0-based)."""

    line: int
    command: str
    expected: tuple[str, ...]
    out_start: int
    out_end: int


def parse(text: str, where: str) -> list[Step]:
    """Split a script into steps. ``where`` names the file in errors.

    Raises ScenarioError for a command without its ``----`` line or an
    unknown command, so that a typo fails before anything runs.
    """
    lines = text.splitlines()
    steps: list[Step] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.startswith("#"):
            i += 1
            continue
        if i + 1 >= len(lines) or lines[i + 1].strip() != SEPARATOR:
            raise ScenarioError(f"{where}:{i + 1}: expected a '{SEPARATOR}' line after "
                                f"the command {line.strip()!r}")
        name = line.split()[0]
        if name not in COMMANDS:
            raise ScenarioError(f"{where}:{i + 1}: unknown command {name!r}; "
                                f"known: {', '.join(sorted(COMMANDS))}")
        end = i + 2
        while end < len(lines) and lines[end].strip():
            end += 1
        steps.append(Step(i + 1, line.strip(), tuple(lines[i + 2:end]), i + 2, end))
        i = end
    return steps


def rewritten(text: str, steps: list[Step], outputs: list[list[str]]) -> str:
    """``text`` with each step's expected output replaced by ``outputs``;
    comments and spacing stay as they were."""
    lines = text.splitlines()
    for step, output in reversed(list(zip(steps, outputs))):
        lines[step.out_start:step.out_end] = output
    return "\n".join(lines) + "\n"


def run_script(text: str, where: str) -> tuple[list[Step], list[list[str]]]:
    """Parse and run a script; return its steps and each step's actual output.

    Raises ScenarioError (with ``where:line``) for a malformed command, and
    lets anything else a command raises (an assertion in the core) escape
    with a note naming the step.
    """
    steps = parse(text, where)
    scenario = Scenario()
    outputs = []
    for step in steps:
        try:
            outputs.append(scenario.run(step.command))
        except ScriptError as exc:
            raise ScenarioError(f"{where}:{step.line}: {step.command!r}: {exc}") from None
        except Exception as exc:
            exc.add_note(f"while running {where}:{step.line}: {step.command!r}")
            raise
    return steps, outputs


def mismatches(steps: list[Step], outputs: list[list[str]], where: str,
               limit: int = 3) -> str:
    """A report of the steps whose output differs from the expected one
    (a unified diff each, the first ``limit`` of them), or "" if none."""
    wrong = [(s, out) for s, out in zip(steps, outputs) if list(s.expected) != out]
    if not wrong:
        return ""
    parts = [f"{where}: {len(wrong)} of {len(steps)} steps differ from the expected output "
             f"(review, then accept with: .venv/bin/python -m pytest "
             f"tests/test_scenarios.py --rewrite)"]
    for step, out in wrong[:limit]:
        diff = difflib.unified_diff(list(step.expected), out, lineterm="",
                                    fromfile=f"expected ({where}:{step.out_start + 1})",
                                    tofile="actual")
        parts.append(f"\n{where}:{step.line}: {step.command}\n"
                     f"first difference at {where}:{first_difference(step, out)}\n"
                     + "\n".join(diff))
    if len(wrong) > limit:
        parts.append(f"\n... and {len(wrong) - limit} more (later steps often differ "
                     f"only because an earlier one did)")
    return "\n".join(parts)


def first_difference(step: Step, actual: list[str]) -> int:
    """The file's 1-based line where the step's expected output first
    differs from ``actual`` (one past its end if a line is missing)."""
    expected = list(step.expected)
    same = 0
    while same < min(len(expected), len(actual)) and expected[same] == actual[same]:
        same += 1
    return step.out_start + 1 + same


# --- how things are printed ------------------------------------------------------------


def entry_text(entry: Entry, data: bool = False) -> str:
    """``term/index``, with ``:data`` if asked and the entry has data."""
    text = f"{entry.term}/{entry.index}"
    return f"{text}:{data_text(entry.data)}" if data and entry.data else text


def data_text(data: bytes) -> str:
    """Proposal data as written in the script (words of printable ASCII)."""
    text = data.decode("ascii", "backslashreplace")
    return text if text.isprintable() and " " not in text else repr(data)


def entries_text(entries: Iterable[Entry], data: bool = False) -> str:
    return "[" + " ".join(entry_text(e, data) for e in entries) + "]"


def message_text(msg: RaftMessage) -> str:
    """One message as a trace line: ``src->dst Type term=T`` and its fields."""
    head = f"{msg.src}->{msg.dst} {type(msg).__name__} term={msg.term}"
    match msg:
        case RequestVote():
            tail = f" last={msg.last_term}/{msg.last_index}" + (" pre_vote" if msg.pre_vote else "")
        case RequestVoteResponse():
            tail = (" granted" if msg.granted else " rejected") + (
                " pre_vote" if msg.pre_vote else "")
        case AppendEntries():
            tail = (f" prev={msg.prev_term}/{msg.prev_index} entries={entries_text(msg.entries)}"
                    f" commit={msg.commit}" + (" probe" if msg.probe else ""))
        case AppendEntriesResponse():
            tail = (f" match={msg.match_index}" if msg.success else
                    f" reject={msg.rejected_index} hint={msg.conflict_term}/{msg.conflict_index}")
            tail += " recovering" if msg.recovering else ""
        case Heartbeat():
            tail = f" commit={msg.commit}" + (f" read={msg.read_seq}" if msg.read_seq else "")
        case HeartbeatResponse():
            tail = (f" read={msg.read_seq}" if msg.read_seq else "") + (
                " recovering" if msg.recovering else "")
        case InstallSnapshot():
            tail = f" snapshot={msg.snapshot.term}/{msg.snapshot.index}"
        case TermQuery() | TermReport():
            tail = ""  # the survey id is a random number: the type says enough
        case _:
            assert_never(msg)
    return head + tail


def log_text(member: Member, data: bool = False) -> str:
    """The node's log as ``[t/i ...]``, after ``snap=t/i`` if it was compacted."""
    log = member.node.log
    held = log.entries_between(log.first_index, log.last_index)
    snap = log.snapshot
    prefix = f"snap={snap.term}/{snap.index} " if snap.index else ""
    return f"{prefix}log={entries_text(held, data)}"


def by_tick(rounds: list[list[str]]) -> list[str]:
    """The output of consecutive ticks, each under a ``[tick N]`` heading;
    a run of ticks that said the same thing shares one heading
    (``[ticks 4-9, each]``) and ticks that said nothing are left out."""
    out: list[str] = []
    first = 0
    while first < len(rounds):
        last = first
        while last + 1 < len(rounds) and rounds[last + 1] == rounds[first]:
            last += 1
        if rounds[first]:
            out.append(f"[tick {first + 1}]" if first == last else
                       f"[ticks {first + 1}-{last + 1}, each]")
            out.extend(rounds[first])
        first = last + 1
    return out


# --- arguments -------------------------------------------------------------------------


class Args:
    """A command line's words: positional ones and ``key=value`` options."""

    def __init__(self, words: list[str]) -> None:
        self.positional = [w for w in words if "=" not in w]
        self.options = dict(w.split("=", 1) for w in words if "=" in w)

    def check(self, allowed: Iterable[str], most: int | None = None) -> None:
        """Raise ScriptError for an option not in ``allowed`` or more than
        ``most`` positional words."""
        unknown = sorted(set(self.options) - set(allowed))
        if unknown:
            known = ", ".join(sorted(allowed)) or "none"
            raise ScriptError(f"unknown option {unknown[0]!r} (options: {known})")
        if most is not None and len(self.positional) > most:
            raise ScriptError(f"unexpected argument {self.positional[most]!r}")

    def number(self, key: str, default: int, least: int = 0) -> int:
        """Option ``key`` as an integer >= ``least``, or ``default``."""
        raw = self.options.get(key)
        if raw is None:
            return default
        if not raw.isdigit() or int(raw) < least:
            raise ScriptError(f"{key}={raw!r}: expected an integer >= {least}")
        return int(raw)

    def flag(self, key: str, default: bool) -> bool:
        """Option ``key`` as ``true`` or ``false``, or ``default``."""
        raw = self.options.get(key)
        if raw is None:
            return default
        if raw not in ("true", "false"):
            raise ScriptError(f"{key}={raw!r}: expected true or false")
        return raw == "true"


# --- the interpreter -------------------------------------------------------------------


class Scenario:
    """A cluster of members, a network of waiting messages and the output
    of the current step. :meth:`run` runs one command line."""

    def __init__(self) -> None:
        self.cluster: Cluster | None = None
        self.ids: tuple[int, ...] = ()
        self.down: dict[int, Member] = {}
        self.pending: list[RaftMessage] = []
        self.group: dict[int, int] = {}       # node -> its side of the network
        self.state: dict[int, list[str]] = {}  # node -> data its state machine holds
        self.boots: Counter[int] = Counter()
        self.seed = 0
        self.out: list[str] = []

    def run(self, command: str) -> list[str]:
        """Run one command line; return its output lines (``ok`` if none)."""
        name, *words = command.split()
        self.out = []
        args = Args(words)
        if name not in COMMANDS:
            raise ScriptError(f"unknown command {name!r}")
        if name != "start" and self.cluster is None:
            raise ScriptError("no cluster yet: the first command must be 'start'")
        COMMANDS[name](self, args)
        return self.out or [NOTHING]

    def in_rounds(self, times: int, one_round: Callable[[], None]) -> None:
        """Run ``one_round`` ``times`` times; with more than one, group the
        output by tick (see :func:`by_tick`)."""
        start = len(self.out)
        rounds = []
        for _ in range(times):
            mark = len(self.out)
            one_round()
            rounds.append(self.out[mark:])
        if times > 1:
            self.out[start:] = by_tick(rounds)

    def say(self, line: str) -> None:
        """Add a line to the step's output; also the nodes' trace callback."""
        self.out.append(line)

    # --- nodes -------------------------------------------------------------------------

    def live(self) -> Cluster:
        assert self.cluster is not None
        return self.cluster

    def node_ids(self, words: list[str], *, alive: bool = True, least: int = 1) -> list[int]:
        """Node ids from positional words (``all``: every node), each known
        and, if ``alive``, running."""
        if words == ["all"]:
            ids = list(self.ids)
        else:
            ids = []
            for word in words:
                if not word.isdigit() or int(word) not in self.ids:
                    raise ScriptError(f"{word!r} is not a node id (nodes: "
                                      f"{' '.join(map(str, self.ids))})")
                ids.append(int(word))
        if len(ids) < least:
            raise ScriptError(f"expected at least {least} node id(s)")
        if alive:
            down = [i for i in ids if i in self.down and words != ["all"]]
            if down:
                raise ScriptError(f"s{down[0]} is down; restart it first")
            ids = [i for i in ids if i not in self.down]
        return ids

    def one_node(self, args: Args) -> Member:
        """The single running node named by the first positional word."""
        if not args.positional:
            raise ScriptError("expected a node id")
        [node_id] = self.node_ids(args.positional[:1])
        return self.live()[node_id]

    def process(self) -> None:
        """Every running node's host handles its Ready batches (persist ->
        send -> apply -> advance), in id order, reporting what it sent and
        applied. Called after every input, as a host would."""
        cluster = self.live()
        for node_id in sorted(cluster.members):
            member = cluster[node_id]
            while True:
                before = len(member.sent)
                rd = member.handle()
                if rd is None:
                    break
                for msg in member.sent[before:]:
                    self.send(msg)
                self.report_apply(member, rd)

    def report_apply(self, member: Member, rd: Ready) -> None:
        """Say what the state machine received; keep its data for ``log``."""
        state = self.state.setdefault(member.id, [])
        if rd.install_snapshot:
            assert rd.snapshot is not None
            state[:] = rd.snapshot.data.decode().split()
            self.say(f"s{member.id} installed snapshot {rd.snapshot.term}/{rd.snapshot.index} "
                     f"state=[{' '.join(state)}]")
        if rd.committed_entries:
            state.extend(data_text(e.data) for e in rd.committed_entries if e.data)
            self.say(f"s{member.id} applied "
                     + " ".join(entry_text(e, data=True) for e in rd.committed_entries))

    # --- the network -------------------------------------------------------------------

    def lost_why(self, msg: RaftMessage) -> str:
        """Why ``msg`` cannot reach its receiver now, or "" if it can."""
        if msg.dst not in self.live().members:
            return f"s{msg.dst} is down"
        if self.group[msg.src] != self.group[msg.dst]:
            return "partitioned"
        return ""

    def send(self, msg: RaftMessage) -> None:
        """A message enters the network, or is lost at once."""
        why = self.lost_why(msg)
        if why:
            self.say(f"lost {message_text(msg)}: {why}")
        else:
            self.pending.append(msg)
            self.say(message_text(msg))

    def deliver(self, chosen: list[RaftMessage]) -> None:
        """Take ``chosen`` out of the network and step each into its receiver
        (unless the receiver went down or was cut off since), then let the
        hosts handle what that produced."""
        picked = set(map(id, chosen))
        self.pending = [m for m in self.pending if id(m) not in picked]
        arriving = []
        for msg in chosen:
            why = self.lost_why(msg)
            if why:
                self.say(f"lost {message_text(msg)}: {why}")
            else:
                arriving.append(msg)
        self.live().deliver(arriving)
        self.process()

    def stabilize(self) -> None:
        """Deliver everything, again and again, until nothing is waiting."""
        for _ in range(MAX_STABILIZE_ROUNDS):
            if not self.pending:
                return
            self.deliver(list(self.pending))
        raise ScriptError(f"no quiet point after {MAX_STABILIZE_ROUNDS} rounds")

    def matching(self, args: Args) -> list[RaftMessage]:
        """Waiting messages that pass the ``from=``/``to=``/``type=`` filters."""
        args.check(("from", "to", "type"), most=0)
        src = set(self.node_ids(args.options["from"].split(","), alive=False)
                  if "from" in args.options else self.ids)
        dst = set(self.node_ids(args.options["to"].split(","), alive=False)
                  if "to" in args.options else self.ids)
        kinds = args.options.get("type", ",".join(MESSAGE_TYPES)).split(",")
        unknown = [k for k in kinds if k not in MESSAGE_TYPES]
        if unknown:
            raise ScriptError(f"type={unknown[0]!r}: not one of {', '.join(MESSAGE_TYPES)}")
        classes = tuple(MESSAGE_TYPES[k] for k in kinds)
        return [m for m in self.pending
                if m.src in src and m.dst in dst and isinstance(m, classes)]

    def say_network(self) -> None:
        sides: dict[int, list[int]] = {}
        for node_id in self.ids:
            sides.setdefault(self.group[node_id], []).append(node_id)
        groups = sorted(sides.values())
        self.say("network: " + " | ".join(" ".join(map(str, g)) for g in groups))


# --- commands --------------------------------------------------------------------------
#
# Each takes the scenario and the command's arguments, acts, and says what
# happened; bad arguments raise ScriptError.


def cmd_start(sc: Scenario, args: Args) -> None:
    """``start nodes=N [seed=S] [pre_vote=B] [check_quorum=B] [election=T]
    [heartbeat=T] [max_msg_bytes=B]``: fresh nodes 1..N on empty storage.
    Defaults are Config's; node i's rng is seeded ``seed * 100 + i``."""
    args.check(("nodes", "seed", "pre_vote", "check_quorum", "election", "heartbeat",
                "max_msg_bytes"), most=0)
    if sc.cluster is not None:
        raise ScriptError("the cluster was started already")
    n = args.number("nodes", 3, least=1)
    sc.seed = args.number("seed", 0)
    options = dict(pre_vote=args.flag("pre_vote", True),
                   check_quorum=args.flag("check_quorum", True),
                   election_ticks=args.number("election", 10, least=2),
                   heartbeat_ticks=args.number("heartbeat", 1, least=1),
                   max_msg_bytes=args.number("max_msg_bytes", 1 << 20, least=1))
    if options["heartbeat_ticks"] >= options["election_ticks"]:
        raise ScriptError("need heartbeat < election")
    sc.ids = tuple(range(1, n + 1))
    sc.cluster = Cluster(new_member(i, sc.ids, seed=sc.seed * 100 + i, trace=sc.say, **options)
                         for i in sc.ids)
    sc.group = {i: 0 for i in sc.ids}
    sc.state = {i: [] for i in sc.ids}


def cmd_tick(sc: Scenario, args: Args) -> None:
    """``tick IDS|all [times=N]``: tick each node N times (default 1); the
    hosts handle the Readies after each round of ticks. Nothing is delivered."""
    args.check(("times",))
    ids = sc.node_ids(args.positional)

    def one_round() -> None:
        for node_id in ids:
            sc.live()[node_id].tick()
        sc.process()

    sc.in_rounds(args.number("times", 1, least=1), one_round)


def cmd_run(sc: Scenario, args: Args) -> None:
    """``run ticks=N``: time passes on a working network: N rounds of one
    tick on every running node, then stabilize."""
    args.check(("ticks",), most=0)

    def one_round() -> None:
        for member in list(sc.live().members.values()):
            member.tick()
        sc.process()
        sc.stabilize()

    sc.in_rounds(args.number("ticks", 1, least=1), one_round)


def cmd_campaign(sc: Scenario, args: Args) -> None:
    """``campaign ID``: tick one node alone until its (randomized) election
    timeout fires and it campaigns: a follower, or a (pre-)candidate whose
    election is undecided and starts another."""
    args.check((), most=1)
    member = sc.one_node(args)
    mark = len(sc.out)
    if member.node.role is Role.FOLLOWER:
        ticks = tick_until_campaign(member)
    elif member.node.role is Role.LEADER:
        raise ScriptError(f"s{member.id} is the leader; it does not campaign")
    else:
        ticks = retry_campaign(sc, member)
    sc.out.insert(mark, f"s{member.id} election timeout after {ticks} ticks")
    sc.process()


def retry_campaign(sc: Scenario, member: Member) -> int:
    """Tick a (pre-)candidate until it starts a new election, which its
    trace says (its term alone does not: a pre-candidate keeps it)."""
    started = (f"s{member.id} became candidate ", f"s{member.id} became pre-candidate ")
    for ticks in range(1, 2 * member.config.election_ticks + 1):
        mark = len(sc.out)
        member.tick()
        if any(line.startswith(started) for line in sc.out[mark:]):
            return ticks
    raise AssertionError(f"s{member.id} did not campaign again within 2*election_ticks")


def cmd_propose(sc: Scenario, args: Args) -> None:
    """``propose ID DATA...``: propose each word, in order, on node ID; the
    proposals leave in one Ready. A node that is not the leader refuses."""
    args.check((), most=None)
    member = sc.one_node(args)
    if len(args.positional) < 2:
        raise ScriptError("expected the data to propose after the node id")
    for word in args.positional[1:]:
        try:
            index, term = member.node.propose(word.encode())
        except NotLeader as exc:
            sc.say(f"s{member.id} refused {word}: {exc}")
            break
        sc.say(f"s{member.id} proposed {term}/{index}:{word}")
    sc.process()


def cmd_compact(sc: Scenario, args: Args) -> None:
    """``compact ID``: the application on node ID snapshots its state as of
    its applied index; the log before it is dropped."""
    args.check((), most=1)
    member = sc.one_node(args)
    index = member.node.log.applied
    data = " ".join(sc.state[member.id])
    member.node.compact(index, data.encode())
    snap = member.node.log.snapshot
    sc.say(f"s{member.id} compacted to snapshot {snap.term}/{snap.index} state=[{data}]")
    sc.process()


def cmd_deliver(sc: Scenario, args: Args) -> None:
    """``deliver [from=IDS] [to=IDS] [type=TYPES]``: deliver the waiting
    messages that match, in the order sent; what the receivers answer waits."""
    sc.deliver(sc.matching(args))


def cmd_drop(sc: Scenario, args: Args) -> None:
    """``drop [from=IDS] [to=IDS] [type=TYPES]``: the matching waiting
    messages are lost."""
    for msg in sc.matching(args):
        sc.pending.remove(msg)
        sc.say(f"dropped {message_text(msg)}")


def cmd_stabilize(sc: Scenario, args: Args) -> None:
    """``stabilize``: deliver until no message is waiting (no ticks)."""
    args.check((), most=0)
    sc.stabilize()


def cmd_pending(sc: Scenario, args: Args) -> None:
    """``pending``: the messages waiting in the network, in order."""
    args.check((), most=0)
    for msg in sc.pending:
        sc.say(message_text(msg))


def cmd_partition(sc: Scenario, args: Args) -> None:
    """``partition 1 2 | 3 4 5``: only nodes of the same group reach each
    other. Every node must be in exactly one group."""
    args.check((), most=None)
    groups = " ".join(args.positional).split("|")
    members = [sc.node_ids(g.split(), alive=False) for g in groups]
    flat = [i for g in members for i in g]
    if sorted(flat) != list(sc.ids):
        raise ScriptError("each node must be in exactly one group")
    sc.group = {i: side for side, g in enumerate(members) for i in g}
    sc.say_network()


def cmd_isolate(sc: Scenario, args: Args) -> None:
    """``isolate IDS``: each node is cut off from every other (the lab's
    ``disconnect``)."""
    args.check(())
    for node_id in sc.node_ids(args.positional, alive=False):
        sc.group[node_id] = max(sc.group.values()) + 1
    sc.say_network()


def cmd_connect(sc: Scenario, args: Args) -> None:
    """``connect IDS``: the groups of these nodes become one."""
    args.check(())
    ids = sc.node_ids(args.positional, alive=False, least=2)
    joined = {sc.group[i] for i in ids}
    target = sc.group[ids[0]]
    sc.group = {i: target if side in joined else side for i, side in sc.group.items()}
    sc.say_network()


def cmd_heal(sc: Scenario, args: Args) -> None:
    """``heal``: every node reaches every other again."""
    args.check((), most=0)
    sc.group = {i: 0 for i in sc.ids}
    sc.say_network()


def cmd_crash(sc: Scenario, args: Args) -> None:
    """``crash IDS|all``: the nodes stop; their storage (all they saved,
    since every Ready was handled) survives. Messages to them are lost."""
    args.check(())
    for node_id in sc.node_ids(args.positional, least=1):
        sc.down[node_id] = sc.live().members.pop(node_id)
        sc.say(f"s{node_id} crashed")


def cmd_restart(sc: Scenario, args: Args) -> None:
    """``restart IDS|all [wiped=true]``: rebuild crashed nodes from their
    storage alone, or, ``wiped``, from empty storage and recovering, as if
    the disk was lost. ``all`` restarts every crashed node."""
    args.check(("wiped",))
    ids = sc.node_ids(args.positional, alive=False, least=1)
    if args.positional == ["all"]:
        ids = [i for i in ids if i in sc.down]
    running = [i for i in ids if i not in sc.down]
    if running:
        raise ScriptError(f"s{running[0]} is running; crash it first")
    wiped = args.flag("wiped", False)
    for node_id in ids:
        restart_one(sc, node_id, wiped)
    sc.process()


def restart_one(sc: Scenario, node_id: int, wiped: bool) -> None:
    """Rebuild one crashed node with a fresh rng and say what it found."""
    sc.boots[node_id] += 1
    seed = sc.seed * 100 + node_id + 1000 * sc.boots[node_id]
    member = restart(sc.down.pop(node_id), seed, wiped=wiped, trace=sc.say)
    sc.live().members[node_id] = member
    snapshot: Snapshot = member.storage.load().snapshot  # the node keeps no bytes
    sc.state[node_id] = snapshot.data.decode().split()
    if wiped:
        sc.say(f"s{node_id} restarted on empty storage, recovering")
    else:
        node = member.node
        sc.say(f"s{node_id} restarted from storage: term={node.term} vote={node.vote} "
               f"commit={node.log.committed} {log_text(member)}")


def cmd_status(sc: Scenario, args: Args) -> None:
    """``status [IDS]``: one line per node: role, term, vote, leader,
    commit, applied and log; a crashed node shows what its storage holds."""
    args.check(())
    for node_id in sc.node_ids(args.positional or ["all"], alive=False):
        if node_id in sc.down:
            stored = sc.down[node_id].storage.load()
            hard = stored.hard_state
            snap = stored.snapshot
            prefix = f"snap={snap.term}/{snap.index} " if snap.index else ""
            sc.say(f"s{node_id} down; stored term={hard.term} vote={hard.vote} "
                   f"commit={hard.commit} {prefix}log={entries_text(stored.entries)}")
            continue
        member = sc.live()[node_id]
        node = member.node
        flags = " recovering" if node.recovering else ""
        sc.say(f"s{node_id} {node.role.value:<13} term={node.term} vote={node.vote} "
               f"leader={node.leader} commit={node.log.committed} applied={node.log.applied} "
               f"{log_text(member)}{flags}")


def cmd_log(sc: Scenario, args: Args) -> None:
    """``log [IDS]``: each running node's log with data, and the data its
    state machine holds (from a snapshot, then applied entries)."""
    args.check(())
    for node_id in sc.node_ids(args.positional or ["all"]):
        member = sc.live()[node_id]
        sc.say(f"s{node_id} {log_text(member, data=True)} "
               f"state=[{' '.join(sc.state[node_id])}]")


Command = Callable[[Scenario, Args], None]
COMMANDS: dict[str, Command] = {
    "start": cmd_start, "tick": cmd_tick, "run": cmd_run, "campaign": cmd_campaign,
    "propose": cmd_propose, "compact": cmd_compact, "deliver": cmd_deliver, "drop": cmd_drop,
    "stabilize": cmd_stabilize, "pending": cmd_pending, "partition": cmd_partition,
    "isolate": cmd_isolate, "connect": cmd_connect, "heal": cmd_heal, "crash": cmd_crash,
    "restart": cmd_restart, "status": cmd_status, "log": cmd_log,
}
