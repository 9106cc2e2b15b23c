"""The dashboard renders what the LabState knows: the leader marked, crashed
servers shown down, packet counts, loss rates and client operations.

States are built by hand through the same entry points the launcher uses
(``on_report``, ``on_router_stats``, the ``up``/``restarts`` fields it sets
on spawn and kill) and rendered into a string; no terminal, no sleep.
"""

from __future__ import annotations

import io
import re

from rich.console import Console, RenderableType

from mydns_lab.core.messages import NO_NODE
from mydns_lab.lab.dashboard import EVENT_LINES, LiveDashboard, current_leader, render
from mydns_lab.lab.state import LabState
from mydns_lab.reports import ClerkStatus, Event, ServerStatus

WIDTH = 100

ROUTER_STATS = {
    "links": {
        "raft": {"sent": 5000, "delivered": 4500, "dropped": 500, "delayed": 4100},
        "request": {"sent": 300, "delivered": 270, "dropped": 30, "delayed": 250},
        "reply": {"sent": 200, "delivered": 180, "dropped": 20, "delayed": 160},
    },
    "by_type": {"AppendEntries": 2100, "AppendEntriesResponse": 2050, "Heartbeat": 420,
                "HeartbeatResponse": 410, "RequestVote": 17, "RequestVoteResponse": 13,
                "ClientRequest": 300, "ClientReply": 200},
}


# --- helpers ----------------------------------------------------------------------


def text_of(renderable: RenderableType, width: int = WIDTH) -> str:
    console = Console(file=io.StringIO(), width=width, force_terminal=False)
    console.print(renderable)
    return console.file.getvalue()


def row_of(text: str, first_word: str) -> str:
    """The first line of ``text`` whose first word is ``first_word``."""
    for line in text.splitlines():
        words = line.split()
        if words and words[0] == first_word:
            return line
    raise AssertionError(f"no line starts with {first_word!r} in:\n{text}")


def figure(text: str, label: str) -> str:
    """The number after ``label`` (figures beside a table share its lines, so
    they are found by label rather than by a line's first word)."""
    match = re.search(re.escape(label) + r"\s+(\d\S*)", text)
    assert match is not None, f"{label!r} not in:\n{text}"
    return match.group(1)


def server_status(node: int, role: str, term: int, commit: int = 0, applied: int = 0,
                  last_index: int = 0, snapshot_index: int = 0) -> ServerStatus:
    return ServerStatus(node, 1000 + node, role, term, 2, commit, applied, last_index,
                        snapshot_index, 0)


def spawned(state: LabState) -> LabState:
    """Mark every server up, as the launcher does when it spawns them."""
    for view in state.servers.values():
        view.up = True
    return state


def busy_lab() -> LabState:
    """Three servers (s2 leads in term 4, s3 was killed and restarted once,
    s1 still thinks it leads an old term), two clerks, a lossy network."""
    state = spawned(LabState(nservers=3, nclerks=2))
    state.on_report(server_status(1, "leader", 3, commit=880, applied=870, last_index=905,
                                  snapshot_index=800))
    state.on_report(server_status(2, "leader", 4, commit=9123, applied=9120, last_index=9130,
                                  snapshot_index=9000))
    state.on_report(server_status(3, "follower", 4, commit=7777, applied=7770, last_index=7780,
                                  snapshot_index=7000))
    state.servers[3].up = False
    state.servers[3].restarts = 1
    state.crashes_injected = 2
    state.on_report(ClerkStatus(0, 2000, 41, 1, 130, 2, 6, 180, (2.0, 4.0, 6.0)))
    state.on_report(ClerkStatus(1, 2001, 19, 3, 70, 4, 9, 100, (8.0, 10.0, 90.0)))
    state.on_router_stats(ROUTER_STATS)
    state.on_report(Event("s2", "s2 became leader term=4 commit=9100"))
    return state


# --- servers and leader ------------------------------------------------------------


def test_leader_row_is_marked_and_only_it() -> None:
    text = text_of(render(busy_lab()))
    assert "LEADER" in row_of(text, "s2")
    assert text.count("LEADER") == 1
    assert "leader s2 term 4" in text
    # s1's report of leading term 3 is shown as it is, not as the leader.
    assert "leader" in row_of(text, "s1").split()


def test_server_figures_and_log_length() -> None:
    s2 = row_of(text_of(render(busy_lab())), "s2").split()
    # node, state, role, term, commit, applied, log (last - snapshot), snapshot, restarts
    assert s2 == ["s2", "up", "LEADER", "4", "9123", "9120", "130", "9000", "0"]


def test_crashed_server_is_shown_down_without_a_role() -> None:
    state = busy_lab()
    text = text_of(render(state))
    s3 = row_of(text, "s3").split()
    assert s3[1:3] == ["DOWN", "-"]
    assert s3[-1] == "1"  # restarts
    assert "servers up 2/3" in text


def test_leader_that_crashed_is_no_longer_current() -> None:
    state = busy_lab()
    state.servers[2].up = False
    assert current_leader(state) == NO_NODE
    text = text_of(render(state))
    assert "no leader (last s2 term 4)" in text
    assert "LEADER" not in text
    assert row_of(text, "s2").split()[1] == "DOWN"


def test_leader_changes_show_count_and_last_few() -> None:
    state = busy_lab()
    state.leader_changes[:] = [(float(i), i, 1 + i % 3) for i in range(1, 9)]
    text = text_of(render(state))
    assert "leader changes: 8" in text
    assert "8.0 s" in text and "4.0 s" in text
    assert "3.0 s" not in text


# --- network ------------------------------------------------------------------------


def test_packet_counts_per_link_and_network_loss() -> None:
    text = text_of(render(busy_lab()))
    assert row_of(text, "raft").split()[:6] == ["raft", "5000", "4500", "500", "4100", "10.0%"]
    assert row_of(text, "request").split()[:6] == ["request", "300", "270", "30", "250",
                                                  "10.0%"]
    assert row_of(text, "total").split()[:6] == ["total", "5500", "4950", "550", "4510",
                                                "10.0%"]
    assert figure(text, "network loss") == "10.0%"


def test_messages_by_type_with_answers() -> None:
    text = text_of(render(busy_lab()))
    # Raft RPCs as the final statistics count them: requests only.
    assert "raft RPCs 2537" in text
    assert row_of(text, "sent").split() == ["sent", "2100", "420", "17", "0", "300"]
    assert row_of(text, "answers").split() == ["answers", "2050", "410", "13", "-", "200"]


# --- clients ----------------------------------------------------------------------------


def test_clerk_operations_per_clerk_and_totals() -> None:
    text = text_of(render(busy_lab()))
    assert row_of(text, "c0").split()[:6] == ["c0", "41", "1", "130", "2", "6"]
    assert row_of(text, "c1").split()[:6] == ["c1", "19", "3", "70", "4", "9"]
    # The first "total" row is the packets'; the clerks' is the one after.
    clerk_total = [line for line in text.splitlines() if line.split()[:1] == ["total"]][1]
    assert clerk_total.split()[:6] == ["total", "60", "4", "200", "6", "15"]


def test_client_figures() -> None:
    state = busy_lab()
    # ops_per_second() reads the clock the reports arrived at; pin the window.
    state.ops_history.clear()
    state.ops_history.extend([(100.0, 0), (104.0, 260)])
    text = text_of(render(state))
    assert figure(text, "operations") == "260"
    assert figure(text, "ops/s") == "65.0"
    assert figure(text, "latency p50") == "7.0"  # median of 2, 4, 6, 8, 10, 90
    assert figure(text, "latency p99") == "90.0"
    assert figure(text, "client loss") == "3.7%"  # 10 failed of 270


# --- events and faults -----------------------------------------------------------------


def test_last_events_crashes_and_unexpected_exits() -> None:
    state = busy_lab()
    for i in range(20):
        state.on_report(Event("s1", f"line-{i:02d}"))
    state.unexpected_exits.append("clerk1 (pid 7) exited unexpectedly with code 1")
    text = text_of(render(state))
    shown = [i for i in range(20) if f"line-{i:02d}" in text]
    assert shown == list(range(20 - EVENT_LINES, 20))
    assert "crashes injected 2" in text
    assert "unexpected exits 1" in text


def test_long_event_lines_do_not_wrap() -> None:
    state = busy_lab()
    state.on_report(Event("s1", "x" * 500))
    text = text_of(render(state))
    assert all(len(line) <= WIDTH for line in text.splitlines())
    assert text.count("xxxxx\n") == 0 and "x…" in text


# --- edge cases and the live view ---------------------------------------------------


def test_fresh_state_without_any_report_renders() -> None:
    text = text_of(render(LabState(nservers=3, nclerks=2)))
    assert "MyDNS lab" in text
    assert "no leader yet" in text
    assert "leader changes: 0" in text
    assert "servers up 0/3" in text
    assert row_of(text, "s1").split()[1] == "DOWN"
    assert row_of(text, "c1").split()[1:6] == ["-"] * 5
    assert figure(text, "network loss") == "0.0%"
    assert figure(text, "ops/s") == "0.0"


def test_spawned_servers_without_status_are_starting() -> None:
    text = text_of(render(spawned(LabState(nservers=2, nclerks=1))))
    assert row_of(text, "s2").split()[:3] == ["s2", "up", "starting"]


def test_fits_80_columns_and_40_lines_with_five_servers_and_clerks() -> None:
    state = spawned(LabState(nservers=5, nclerks=5))
    for node in range(1, 6):
        state.on_report(server_status(node, "follower", 12, 1_234_567, 1_234_560, 1_234_999,
                                      1_230_000))
    for clerk in range(5):
        state.on_report(ClerkStatus(clerk, 1, 123_456, 1234, 1_234_567, 1234, 12_345,
                                    1_234_567, (1.0,)))
    big = {k: {c: v * 1000 for c, v in counters.items()}
           for k, counters in ROUTER_STATS["links"].items()}
    state.on_router_stats({"links": big, "by_type": {k: v * 1000 for k, v in
                                                     ROUTER_STATS["by_type"].items()}})
    for i in range(20):
        state.on_report(Event("s1", f"event {i} " * 20))
    lines = text_of(render(state), width=80).splitlines()
    assert len(lines) <= 40
    assert "…" not in "".join(lines[:-EVENT_LINES])  # only event lines are cut


def test_live_dashboard_prints_its_last_frame_when_stopped() -> None:
    console = Console(file=io.StringIO(), width=WIDTH, force_terminal=False)
    live = LiveDashboard(console=console)
    live.update(busy_lab())  # before start: kept for the first draw, no error
    live.start()
    live.update(busy_lab())
    live.stop()
    text = console.file.getvalue()
    assert "LEADER" in row_of(text, "s2")
    live.stop()  # a second stop is harmless


def test_on_etcd_the_members_stand_where_the_servers_would() -> None:
    """--store etcd: no servers, router or links of ours; the title names
    etcd's leader and the table shows each member's role, term and revision."""
    from mydns_lab.lab.etcdmembers import MemberView
    state = LabState(nservers=0, nclerks=2)
    state.etcd_members = (MemberView("http://127.0.0.2:2379", True, False, 5, 120),
                          MemberView("http://127.0.0.3:2379", True, True, 5, 120),
                          MemberView("http://127.0.0.4:2379", False))
    text = text_of(render(state))
    assert "etcd leader http://127.0.0.3:2379 term 5" in text and "members up 2/3" in text
    assert row_of(text, "http://127.0.0.3:2379").split()[1:5] == ["up", "leader", "5", "120"]
    assert row_of(text, "http://127.0.0.4:2379").split()[1] == "down"
    assert "servers up" not in text and "links" not in text
