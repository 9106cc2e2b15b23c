"""The live view `sh run_dns.sh` shows when stdout is a terminal.

:func:`render` turns a :class:`~mydns_lab.lab.state.LabState` into a rich
renderable and does nothing else: no I/O, no state of its own, and no clock
besides ``LabState.elapsed()``. Tests print it into a string.
:class:`LiveDashboard` puts it on screen and redraws it on every update.

Everything shown comes from the LabState, which is fed only by status
reports, router statistics and direct-pipe counts, so the view never
reaches into a process.
The layout fits an 80x40 terminal for 5 servers and 5 clerks; anything
taller is cropped by rich (with an ellipsis) until the run stops, when the
final frame is printed whole.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..core.messages import NO_NODE
from ..reports import ClerkStatus
from ..raft import Role
from .state import RAFT_RPC_TYPES, LabState, ServerView, loss_rate

EVENT_LINES = 8
LEADER_HISTORY_LINES = 5
LINK_KINDS = ("raft", "request", "reply")
LINK_COUNTERS = ("sent", "delivered", "dropped", "delayed")
MISSING = "-"

# Each column of the message table: a message type and the type that answers
# it. InstallSnapshot has no reply type of its own: followers answer it with
# an AppendEntriesResponse, which is therefore counted on that row.
MESSAGE_ROWS: tuple[tuple[str, str | None], ...] = (
    ("AppendEntries", "AppendEntriesResponse"),
    ("Heartbeat", "HeartbeatResponse"),
    ("RequestVote", "RequestVoteResponse"),
    ("InstallSnapshot", None),
    ("ClientRequest", "ClientReply"),
)

# Words of the launcher's log lines (see launcher.py) that deserve colour.
_EVENT_STYLES = (("unexpectedly", "bold red"), ("killed", "yellow"),
                 ("restarted", "cyan"), ("became leader", "green"))


# --- the view ------------------------------------------------------------------------


def render(state: LabState) -> RenderableType:
    """The whole dashboard for ``state``, built from scratch on every call.

    Pure apart from reading ``state`` (and its clock through ``elapsed()``);
    works on a LabState that has received no report at all.
    """
    alarm = state.disk_alarm()
    if not state.nservers:  # --store etcd: no servers, router or links of ours
        return Group(_title(state), _etcd_table(state),
                     _side_by_side(_clerks_table(state), _client_summary(state)), _events(state))
    return Group(
        _title(state),
        *([Text(alarm, style="bold red")] if alarm else []),
        _servers_table(state),
        _side_by_side(_links_table(state), _leader_history(state)),
        _side_by_side(_clerks_table(state), _client_summary(state)),
        _messages_table(state),
        _events(state),
    )


def current_leader(state: LabState) -> int:
    """The node leading now as far as the reports tell, or ``NO_NODE``.

    ``state.leader`` is the newest leader ever reported and stays set after
    that server crashes or steps down, so it counts only while the server is
    up and its latest report still says leader in ``state.leader_term``.
    """
    view = state.servers.get(state.leader)
    if view is None or not view.up or view.status is None:
        return NO_NODE
    status = view.status
    if status.role == Role.LEADER.value and status.term == state.leader_term:
        return state.leader
    return NO_NODE


def _etcd_table(state: LabState) -> Table:
    table = _table("etcd members", ("endpoint", "state", "role", "raft term", "revision",
                                    "db"))
    for member in state.etcd_members:
        role = "leader" if member.leader else ("follower" if member.up else "")
        table.add_row(member.endpoint, "up" if member.up else "down", role, str(member.term),
                      str(member.revision), f"{member.db_bytes / 1e6:.1f} MB" if member.up else "",
                      style="bold green" if member.leader else (None if member.up else "dim"))
    return table


def _title(state: LabState) -> Text:
    if not state.nservers:
        up = sum(1 for member in state.etcd_members if member.up)
        leaders = [m for m in state.etcd_members if m.leader]
        leading = (Text(f"etcd leader {leaders[0].endpoint} term {leaders[0].term}",
                        style="bold green") if leaders else Text("no etcd leader", style="yellow"))
        return Text.assemble(("MyDNS on etcd", "bold"), f"   {state.elapsed():.1f} s   ",
                             leading, f"   members up {up}/{len(state.etcd_members)}")
    leader = current_leader(state)
    if leader != NO_NODE:
        leading = Text(f"leader s{leader} term {state.leader_term}", style="bold green")
    elif state.leader != NO_NODE:
        leading = Text(f"no leader (last s{state.leader} term {state.leader_term})",
                       style="bold yellow")
    else:
        leading = Text("no leader yet", style="yellow")
    up = sum(1 for view in state.servers.values() if view.up)
    return Text.assemble(("MyDNS lab", "bold"), f"   {state.elapsed():.1f} s   ", leading,
                         f"   servers up {up}/{state.nservers}")


def _side_by_side(left: RenderableType, right: RenderableType) -> Table:
    grid = Table.grid(padding=(0, 3))
    grid.add_row(left, right)
    return grid


def _table(title: str, headers: Iterable[str]) -> Table:
    """A borderless table with a bold left-aligned title and right-aligned
    figures (the first column, the row's name, is left-aligned)."""
    table = Table(title=title, title_justify="left", title_style="bold", box=None,
                  padding=(0, 1), pad_edge=False, header_style="dim")
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i == 0 else "right", no_wrap=True)
    return table


def _percent(rate: float) -> str:
    return f"{rate:.1%}"


# --- servers ---------------------------------------------------------------------------


def _servers_table(state: LabState) -> Table:
    table = _table("servers", ("node", "state", "role", "term", "commit", "applied", "log",
                               "snap", "restarts"))
    leader = current_leader(state)
    for node in sorted(state.servers):
        view = state.servers[node]
        is_leader = node == leader
        table.add_row(*_server_cells(view, is_leader),
                      style="bold green" if is_leader else ("dim" if not view.up else None))
    return table


def _server_cells(view: ServerView, is_leader: bool) -> list[str | Text]:
    """One server's row. A down server keeps its last reported figures (what
    it had when it died) but no role: that report's role is no longer true."""
    state_cell = Text("up", style="green") if view.up else Text("DOWN", style="bold red")
    status = view.status
    if status is None:
        role = "starting" if view.up else MISSING
        return [f"s{view.node}", state_cell, role, *[MISSING] * 5, str(view.restarts)]
    if is_leader:
        role = "LEADER"
    else:
        role = status.role if view.up else MISSING
    return [f"s{view.node}", state_cell, role, str(status.term), str(status.commit),
            str(status.applied), str(status.last_index - status.snapshot_index),
            str(status.snapshot_index), str(view.restarts)]


def _leader_history(state: LabState) -> Table:
    table = _table(f"leader changes: {len(state.leader_changes)}", ("at", "term", "node"))
    for at_s, term, node in state.leader_changes[-LEADER_HISTORY_LINES:]:
        table.add_row(f"{at_s:.1f} s", str(term), f"s{node}")
    if not state.leader_changes:
        table.add_row(Text("none yet", style="dim"), "", "")
    return table


# --- network ---------------------------------------------------------------------------


def _links_table(state: LabState) -> Table:
    """Packets per link kind as the router and the direct pipes counted
    them, with each kind's loss rate; the total row's loss is the network
    loss rate."""
    table = _table("packets by link", ("link", *LINK_COUNTERS, "loss"))
    links = state.traffic()["links"]
    extra = sorted(kind for kind in links if kind not in LINK_KINDS)
    for kind in (*LINK_KINDS, *extra):
        counters = links.get(kind, {})
        table.add_row(kind, *_counter_cells(counters))
    table.add_row("total", *_counter_cells(state.packets()), style="bold")
    return table


def _counter_cells(counters: dict[str, int]) -> list[str]:
    return [*(str(counters.get(name, 0)) for name in LINK_COUNTERS),
            _percent(loss_rate(counters))]


def _messages_table(state: LabState) -> Table:
    """Messages sent between processes by type, each with its answers, one
    column per type (one row per type would not fit beside anything). The
    title counts Raft requests the way the final statistics do, and any
    type this table does not name, so the columns' width stays known."""
    by_type: dict[str, int] = state.traffic()["by_type"]
    rpcs = sum(by_type.get(kind, 0) for kind in RAFT_RPC_TYPES)
    named = {name for row in MESSAGE_ROWS for name in row if name}
    other = sum(count for kind, count in by_type.items() if kind not in named)
    title = f"messages by type (raft RPCs {rpcs}" + (f", other {other})" if other else ")")
    table = _table(title, ("", *(kind for kind, _ in MESSAGE_ROWS)))
    table.add_row("sent", *(str(by_type.get(kind, 0)) for kind, _ in MESSAGE_ROWS))
    table.add_row("answers", *(str(by_type.get(answer, 0)) if answer else MISSING
                               for _, answer in MESSAGE_ROWS))
    return table


# --- clients -------------------------------------------------------------------------


def _clerks_table(state: LabState) -> Table:
    """One row per clerk (silent ones too, so a clerk that never reported
    shows up as a row of dashes) and a total row."""
    table = _table("clerk operations", ("clerk", "puts", "failed", "queries", "failed",
                                        "retries"))
    for clerk in sorted(set(range(state.nclerks)) | set(state.clerks)):
        status = state.clerks.get(clerk)
        if status is None:
            table.add_row(f"c{clerk}", *[MISSING] * 5, style="dim")
        else:
            table.add_row(f"c{clerk}", *_clerk_cells([status]))
    table.add_row("total", *_clerk_cells(state.clerks.values()), style="bold")
    return table


def _clerk_cells(statuses: Iterable[ClerkStatus]) -> list[str]:
    sums = [0] * 5
    for s in statuses:
        for i, value in enumerate((s.puts_ok, s.puts_failed, s.queries_ok, s.queries_failed,
                                   s.retries)):
            sums[i] += value
    return [str(value) for value in sums]


def _client_summary(state: LabState) -> Table:
    p50_ms, p99_ms = state.latency_percentiles()
    table = _table("clients", ("", ""))
    table.show_header = False
    table.add_row("operations", str(state.total_ops()))
    table.add_row("ops/s", f"{state.ops_per_second():.1f}")
    table.add_row("latency p50", f"{p50_ms:.1f} ms")
    table.add_row("latency p99", f"{p99_ms:.1f} ms")
    table.add_row("client loss", _percent(state.client_loss_rate()))
    table.add_row("network loss", _percent(loss_rate(state.packets())))
    return table


# --- events ---------------------------------------------------------------------------


def _events(state: LabState) -> Group:
    exits = len(state.unexpected_exits)
    heading = Text.assemble(
        "\n", ("events", "bold"), f"   crashes injected {state.crashes_injected}   ",
        (f"unexpected exits {exits}", "bold red" if exits else ""))
    lines = list(state.events)[-EVENT_LINES:]
    body = [_event_line(line) for line in lines] or [Text("nothing yet", style="dim")]
    return Group(heading, *body)


def _event_line(line: str) -> Text:
    """One event on one line: long lines end in an ellipsis rather than wrap,
    so the view's height does not depend on what the processes said."""
    style = next((s for word, s in _EVENT_STYLES if word in line), "")
    return Text(line, style=style, no_wrap=True, overflow="ellipsis")


# --- on screen ----------------------------------------------------------------------------


class LiveDashboard:
    """Shows :func:`render` in place on the terminal.

    The caller (``__main__``) owns the order: :meth:`start` once,
    :meth:`update` from the lab's loop, :meth:`stop` once before the final
    table is printed. ``update`` before ``start`` only keeps the view for
    the first draw; after ``stop`` it does nothing visible. The last frame
    stays on screen after ``stop`` (not transient, not the alternate
    screen), so the final statistics print below it.
    """

    def __init__(self, console: Console | None = None) -> None:
        # No auto refresh: rich's refresh thread would draw while the lab's
        # loop mutates the LabState; here the screen changes only in
        # update(), on the caller's thread, from a renderable built there.
        self._live = Live(Text("MyDNS lab: starting"), console=console, auto_refresh=False,
                          screen=False, transient=False)

    def start(self) -> None:
        self._live.start(refresh=True)

    def update(self, state: LabState) -> None:
        self._live.update(render(state), refresh=self._live.is_started)

    def stop(self) -> None:
        self._live.stop()
