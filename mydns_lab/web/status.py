"""The status page at ``GET /`` of a front end's HTTP port: what an operator
keeps open in a tab.

One server-rendered HTML page, with no external asset (inline CSS, a few
lines of inline JavaScript, both pinned by hash in the page's
Content-Security-Policy): the zone's names with their addresses and TXT,
when each was last refreshed and how long ago, open names marked; the
cluster as the launcher's ``status.json`` tells it (leader, term, each
server's role, term, commit and applied index, recent leader changes); and
this front end's update and query rates. It refreshes itself every
REFRESH_S: with JavaScript, by fetching the page and swapping its live part
(the filter box keeps what is typed, and a front end that stops answering
is flagged); without, by a ``<meta http-equiv="refresh">`` inside
``<noscript>``.

Bounded: at most MAX_ROWS names, the most recently refreshed, and how many
more; ``?q=`` keeps the names or addresses holding a substring.

Who sees what (``--status-page``, :class:`PageAccess`): ``local`` (the
default) shows the names to loopback and ``--trusted`` sources and the
cluster part alone to everyone else; ``public`` shows all to all; ``off``
answers 404. Registered by :func:`add_routes`, from ``app.build_app``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import heapq
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import StrEnum
from html import escape
from typing import Any, Callable, Iterable, Protocol

from ..admission import TrustedSources
from ..net.recordcopy import RecordCache
from ..protocol import Record
from ..records import OPEN_OWNER, is_key_owner
from .http import App, Request, Response

MAX_ROWS = 500
RECENT_VIEWS = 16  # filtered views kept for the records as they stand (then all dropped)
MAX_QUERY_CHARS = 253             # a filter longer than any name matches nothing new
REFRESH_S = 2
RATE_SAMPLE_INTERVAL_S = 1.0
RATE_WINDOWS_S = (10, 60)         # the rates shown: over the last 10 s and the last minute
MAX_LEADER_CHANGES_SHOWN = 10
CLUSTER_STALE_AFTER_S = 3.0       # the launcher rewrites status.json a few times a second


class PageAccess(StrEnum):
    """``--status-page``: who sees the zone's names."""

    LOCAL = "local"    # loopback and --trusted sources; others see the cluster part only
    PUBLIC = "public"  # everyone
    OFF = "off"        # no page: 404


class StatusSource(Protocol):
    """What the page reads: ``app.WebContext`` is one (a protocol, so that
    this module need not import ``app``, which imports it)."""

    @property
    def index(self) -> int: ...
    @property
    def zone(self) -> str: ...
    @property
    def records(self) -> RecordCache: ...
    @property
    def trusted(self) -> TrustedSources: ...
    @property
    def cluster(self) -> ClusterSource: ...
    @property
    def status_page(self) -> str: ...
    @property
    def operation_totals(self) -> Callable[[], tuple[int, int]] | None: ...
    def ready(self) -> tuple[bool, str]: ...


class ClusterSource(Protocol):
    def read(self) -> dict[str, Any] | None: ...


def add_routes(app: App, context: StatusSource) -> None:
    """``GET /`` (and HEAD) on ``app``, and the rate sampler that runs while
    the app is served; raises ValueError for an unknown ``status_page``."""
    page = StatusPage(context)
    app.add_get("/", page.handle)
    if page.sampler is not None:
        app.run_while_serving(page.sample_rates)


class RateSampler:
    """The (puts, queries) totals sampled every RATE_SAMPLE_INTERVAL_S,
    kept for the longest window; rates are differences between samples."""

    def __init__(self, totals: Callable[[], tuple[int, int]]) -> None:
        self._totals = totals
        self._samples: deque[tuple[float, int, int]] = deque(
            maxlen=int(max(RATE_WINDOWS_S) / RATE_SAMPLE_INTERVAL_S) + 2)

    def sample(self, now_s: float) -> None:
        self._samples.append((now_s, *self._totals()))

    def rates(self, window_s: float) -> tuple[float, float] | None:
        """(updates, queries) a second over the samples of the last
        ``window_s`` (or as many as there are yet); None before two."""
        if len(self._samples) < 2:
            return None
        newest = self._samples[-1]
        oldest = next(s for s in self._samples
                      if s[0] >= newest[0] - window_s - RATE_SAMPLE_INTERVAL_S / 2)
        elapsed_s = newest[0] - oldest[0]
        if elapsed_s <= 0:
            return None
        return (newest[1] - oldest[1]) / elapsed_s, (newest[2] - oldest[2]) / elapsed_s


@dataclass(frozen=True, slots=True)
class NamesView:
    """The names part of one page: the rows shown and how many matched."""

    rows: list[Record]
    matched: int
    total: int
    query: str


@dataclass(frozen=True, slots=True)
class PageView:
    """Everything one rendering shows, gathered by :class:`StatusPage`."""

    index: int
    zone: str
    now_ms: int
    ready: tuple[bool, str]
    names: NamesView | None          # None: hidden from this source
    cluster: dict[str, Any] | None   # the launcher's status.json, None when there is none
    rates: dict[int, tuple[float, float] | None] | None  # window -> rates; None: not counted


class StatusPage:
    """The route's state: the context read and the rate samples."""

    def __init__(self, context: StatusSource) -> None:
        self._context = context
        self._recent: dict[tuple[int, str], tuple[list[Record], int]] = {}
        self.access = PageAccess(context.status_page)
        totals = context.operation_totals
        self.sampler = RateSampler(totals) if totals is not None else None

    async def sample_rates(self) -> None:
        """Sample until cancelled (the server runs it while it serves)."""
        assert self.sampler is not None
        while True:
            self.sampler.sample(time.monotonic())
            await asyncio.sleep(RATE_SAMPLE_INTERVAL_S)  # the sampling period, not a wait

    async def handle(self, request: Request) -> Response:
        if self.access is PageAccess.OFF:
            return Response.text("the status page is off (--status-page off)\n", status=404)
        # request.remote is the socket's peer: no header a client could set is read
        query = request.query.get("q", "")[:MAX_QUERY_CHARS].strip().lower()
        view = self.view(request.remote, query)
        return Response.text(render_page(view), content_type="text/html", headers=PAGE_HEADERS)

    def view(self, source: str | None, query: str) -> PageView:
        """What a request from ``source`` with filter ``query`` sees, now."""
        context = self._context
        names = None
        if self.access is PageAccess.PUBLIC or sees_names(source, context.trusted):
            # A scan of every record per request would stall the loop that
            # answers DNS (100,000 names: tens of ms); unchanged records and
            # the same filter reuse it.
            key = (context.records.serial, query)
            if key not in self._recent:
                if len(self._recent) >= RECENT_VIEWS:
                    self._recent.clear()
                self._recent[key] = recent_records(context.records, query, MAX_ROWS)
            rows, matched = self._recent[key]
            names = NamesView(rows, matched, len(context.records), query)
        rates = None
        if self.sampler is not None:
            rates = {w: self.sampler.rates(w) for w in RATE_WINDOWS_S}
        return PageView(context.index, context.zone, int(time.time() * 1000), context.ready(),
                        names, context.cluster.read(), rates)


def sees_names(source: str | None, trusted: TrustedSources) -> bool:
    """Whether ``source`` sees the names under ``--status-page local``:
    loopback (also as a dual-stack socket sees it) or a ``--trusted``
    network."""
    return source in trusted or source in _LOOPBACK


_LOOPBACK = TrustedSources(("127.0.0.0/8", "::1/128"))


def recent_records(records: Iterable[Record], query: str, limit: int) -> tuple[list[Record], int]:
    """The ``limit`` most recently refreshed records whose name or an
    address holds ``query`` (every record when it is empty), newest first,
    and how many matched."""
    if query:
        matching = [r for r in records  # one join beats a generator per address, 5x
                    if query in r.name or query in " ".join(r.ipv4 + r.ipv6)]
    else:
        matching = list(records)
    return heapq.nlargest(limit, matching, key=lambda r: (r.updated_ms, r.name)), len(matching)


# --- rendering -------------------------------------------------------------

STYLE = """
:root{color-scheme:light dark;--bg:#fff;--fg:#1b1f24;--mute:#667085;--line:#e4e7ec;
--head:#f5f6f8;--ok:#157f3c;--bad:#b42318;--warn:#9a6700;--acc:#1f5fbf;--open:#fff4d6}
@media (prefers-color-scheme:dark){:root{--bg:#111418;--fg:#e6e8eb;--mute:#98a2b3;
--line:#2a2f36;--head:#1a1e24;--ok:#4ac26b;--bad:#f97066;--warn:#e3b341;--acc:#6ea8fe;
--open:#3a3016}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:13px/1.35 system-ui,-apple-system,
"Segoe UI",Roboto,sans-serif}
header{display:flex;flex-wrap:wrap;gap:6px 16px;align-items:center;padding:8px 14px;
border-bottom:1px solid var(--line);background:var(--head);position:sticky;top:0}
h1{font-size:15px;margin:0}h1 small{font-weight:400;color:var(--mute)}
h2{font-size:13px;margin:14px 0 4px;text-transform:uppercase;letter-spacing:.04em;
color:var(--mute)}
main{padding:4px 14px 20px}
form{display:flex;gap:6px;margin-left:auto}
input{font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;width:18em;
padding:3px 6px;border:1px solid var(--line);border-radius:3px;background:var(--bg);
color:var(--fg)}
button{font:inherit;padding:2px 10px}
.summary{display:flex;flex-wrap:wrap;gap:4px 22px;margin:10px 0 2px}
.summary div{display:flex;flex-direction:column}
.summary span{color:var(--mute);font-size:11px;text-transform:uppercase;letter-spacing:.04em}
.summary b{font-size:15px;font-variant-numeric:tabular-nums}
.cols{display:flex;flex-wrap:wrap;gap:0 28px}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{padding:2px 10px 2px 0;text-align:left;border-bottom:1px solid var(--line);
vertical-align:top;white-space:nowrap}
th{font-weight:600;color:var(--mute);font-size:11px;text-transform:uppercase}
td.n{text-align:right}
table.names{width:100%}table.names td.txt{white-space:normal;word-break:break-all;width:40%}
th .zone{text-transform:none;font-weight:400}
.mono,td.addr,td.txt,td.name{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
font-size:12px}
tr.open td{background:var(--open)}
.tag{display:inline-block;padding:0 5px;border-radius:3px;font-size:11px;
border:1px solid currentColor}
.ok{color:var(--ok)}.bad{color:var(--bad)}.warn{color:var(--warn)}.mute{color:var(--mute)}
.leader td{font-weight:600}
p.note{margin:4px 0;color:var(--mute)}
#conn{font-size:12px}
"""

SCRIPT = """
(function () {
  var live = document.getElementById("live"), conn = document.getElementById("conn");
  if (!live || !window.fetch || !window.DOMParser) return;
  setInterval(function () {
    fetch(location.href, {cache: "no-store"}).then(function (r) {
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.text();
    }).then(function (text) {
      var fresh = new DOMParser().parseFromString(text, "text/html").getElementById("live");
      if (fresh) { live.replaceWith(fresh); live = fresh; }
      conn.textContent = ""; conn.className = "";
    }).catch(function (e) {
      conn.textContent = "not answering since " + new Date().toLocaleTimeString() +
        " (" + e.message + "); showing the last page";
      conn.className = "bad";
    });
  }, REFRESH_MS);
})();
""".replace("REFRESH_MS", str(REFRESH_S * 1000))


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Nothing from elsewhere, no inline code but the page's own (pinned by hash).
    "Content-Security-Policy": (f"default-src 'none'; style-src {_csp_hash(STYLE)}; "
                                f"script-src {_csp_hash(SCRIPT)}; connect-src 'self'; "
                                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
}


def render_page(view: PageView) -> str:
    """The whole page; every value from outside goes through ``escape``."""
    ready, why = view.ready
    title = f"MyDNS c{view.index} · {view.zone}"
    form = ""
    if view.names is not None:
        form = ('<form method="get" action="/" role="search">'
                f'<input name="q" value="{escape(view.names.query)}" '
                'placeholder="filter: name or address" aria-label="filter names">'
                '<button>Filter</button></form>')
    parts = [
        '<!doctype html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>",
        f'<noscript><meta http-equiv="refresh" content="{REFRESH_S}"></noscript>',
        f"<style>{STYLE}</style></head><body>",
        f"<header><h1>MyDNS <small>zone <span class=mono>{escape(view.zone)}</span> · "
        f"front end c{view.index}</small></h1>",
        f'<span class="tag {"ok" if ready else "bad"}" title="{escape(why)}">'
        f'{"ready" if ready else "not ready"}</span>',
        f'<span id="conn"></span>{form}</header>',
        f'<main id="live" data-generated-ms="{view.now_ms}">',
        *_summary(view),
        '<div class="cols">', *_servers(view.cluster, view.now_ms),
        *_leader_changes(view.cluster), "</div>",
        *_names(view.names, view.zone, view.now_ms),
        f"</main><script>{SCRIPT}</script></body></html>",
    ]
    return "\n".join(parts)


def _summary(view: PageView) -> list[str]:
    cluster = view.cluster or {}
    members = _etcd_members(cluster)
    if members is not None:  # --store etcd: etcd's members stand where our servers would
        up = sum(1 for m in members if m.get("up"))
        leaders = [m for m in members if m.get("leader")]
        items = [("etcd leader", str(leaders[0].get("endpoint")) if leaders else "none",
                  "" if leaders else "bad"),
                 ("raft term", str(leaders[0].get("term")) if leaders else "?", ""),
                 ("members up", f"{up}/{len(members)}", "" if up > len(members) // 2 else "bad")]
    else:
        servers = cluster.get("servers") or {}
        up = sum(1 for s in servers.values() if isinstance(s, dict) and s.get("up"))
        leader = cluster.get("leader")
        items = [("leader", f"s{leader}" if leader else "none", "" if leader else "bad"),
                 ("term", str(cluster.get("term", "?")), ""),
                 ("servers up", f"{up}/{len(servers)}" if servers else "?",
                  "" if servers and up > len(servers) // 2 else "bad")]
    if view.names is not None:
        items.append(("names", f"{view.names.total:,}", ""))
    for window_s, rates in (view.rates or {}).items():
        shown = ("…", "…") if rates is None else (f"{rates[0]:.1f}", f"{rates[1]:.1f}")
        items.append((f"updates/s ({_window(window_s)})", shown[0], ""))
        items.append((f"queries/s ({_window(window_s)})", shown[1], ""))
    items.append(("as of (UTC)", _clock(view.now_ms), "mute"))
    out = ['<section class="summary" aria-label="summary">']
    out += [f'<div><span>{escape(label)}</span><b class="{cls}">{escape(value)}</b></div>'
            for label, value, cls in items]
    out.append("</section>")
    if not view.ready[0]:
        out.append(f'<p class="note bad">{escape(view.ready[1])}</p>')
    if view.rates is not None:
        out.append(f'<p class="note">rates: updates and queries answered by this front end '
                   f'(c{view.index}) alone</p>')
    return out


def _servers(cluster: dict[str, Any] | None, now_ms: int) -> list[str]:
    out = ["<section><h2>Servers</h2>"]
    if cluster is None:
        return out + ['<p class="note">no cluster status: the launcher\'s status.json '
                      "is not there (yet)</p></section>"]
    age_s = now_ms / 1000 - float(cluster.get("written_at") or 0)
    if age_s > CLUSTER_STALE_AFTER_S:
        out.append(f'<p class="note warn">the launcher\'s status is {age_s:,.0f} s old</p>')
    members = _etcd_members(cluster)
    if members is not None:
        return ["<section><h2>etcd members</h2>", *out[1:], *_members_table(members)]
    out.append('<table class="servers"><thead><tr><th>server</th><th>state</th><th>role</th>'
               '<th class=n>term</th><th class=n>commit</th><th class=n>applied</th>'
               "<th>disk</th></tr></thead><tbody>")
    servers = cluster.get("servers") or {}
    for node in sorted(servers, key=_numeric):
        s = servers[node] if isinstance(servers[node], dict) else {}
        role = str(s.get("role", "?"))
        disk = str(s.get("disk_full") or "")
        out.append(
            f'<tr class="{"leader" if role == "leader" else ""}"><td>s{escape(str(node))}</td>'
            f'<td class="{"ok" if s.get("up") else "bad"}">{"up" if s.get("up") else "down"}</td>'
            f"<td>{escape(role)}</td><td class=n>{_int(s.get('term'))}</td>"
            f"<td class=n>{_int(s.get('commit'))}</td><td class=n>{_int(s.get('applied'))}</td>"
            f'<td class="{"bad" if disk else "mute"}">{escape(disk) if disk else "ok"}</td></tr>')
    out.append("</tbody></table></section>")
    return out


def _etcd_members(cluster: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The etcd members status.json lists (--store etcd), else None."""
    members = cluster.get("etcd_members")
    if not isinstance(members, list):
        return None
    return [m for m in members if isinstance(m, dict)]


def _members_table(members: list[dict[str, Any]]) -> list[str]:
    out = ['<table class="servers"><thead><tr><th>etcd member</th><th>state</th><th>role</th>'
           "<th class=n>raft term</th><th class=n>revision</th></tr></thead><tbody>"]
    for m in members:
        role = "leader" if m.get("leader") else ("follower" if m.get("up") else "")
        out.append(
            f'<tr class="{"leader" if m.get("leader") else ""}">'
            f"<td>{escape(str(m.get('endpoint', '?')))}</td>"
            f'<td class="{"ok" if m.get("up") else "bad"}">{"up" if m.get("up") else "down"}</td>'
            f"<td>{role}</td><td class=n>{_int(m.get('term'))}</td>"
            f"<td class=n>{_int(m.get('revision'))}</td></tr>")
    out.append("</tbody></table></section>")
    return out


def _leader_changes(cluster: dict[str, Any] | None) -> list[str]:
    if cluster is None or _etcd_members(cluster) is not None:
        return []
    changes = [c for c in cluster.get("recent_leader_changes") or [] if isinstance(c, dict)]
    out = [f"<section><h2>Leader changes ({_int(cluster.get('leader_changes', len(changes)))}"
           " since the lab started)</h2>"]
    if not changes:
        return out + ['<p class="note">none yet</p></section>']
    out.append('<table class="changes"><thead><tr><th class=n>at (lab time)</th>'
               "<th class=n>term</th><th>leader</th></tr></thead><tbody>")
    for change in reversed(changes[-MAX_LEADER_CHANGES_SHOWN:]):
        leader = change.get("leader")
        out.append(f"<tr><td class=n>{escape(_seconds(change.get('at_s')))}</td>"
                   f"<td class=n>{_int(change.get('term'))}</td>"
                   f"<td>{'s' + escape(str(leader)) if leader else 'none'}</td></tr>")
    out.append("</tbody></table></section>")
    return out


def _names(names: NamesView | None, zone: str, now_ms: int) -> list[str]:
    out = ["<section><h2>Names</h2>"]
    if names is None:
        return out + ['<p class="note">The names are shown to loopback and trusted '
                      "(<code>--trusted</code>) sources only (<code>--status-page local</code>)."
                      "</p></section>"]
    out.append(f'<p class="note">{escape(_names_note(names))}</p>')
    if not names.rows:
        return out + ["</section>"]
    out.append(f'<table class="names"><thead><tr><th>name <span class=zone>.{escape(zone)}'
               "</span></th><th>IPv4</th><th>IPv6</th><th>refreshed (UTC)</th>"
               "<th class=n>ago</th><th>TXT</th></tr></thead><tbody>")
    for r in names.rows:
        is_open = r.owner == OPEN_OWNER
        kind = (' <span class="tag warn" title="any Put without a token may change it">open'
                "</span>" if is_open else
                ' <span class="tag mute" title="written with a TSIG key">key</span>'
                if is_key_owner(r.owner) else "")
        out.append(
            f'<tr class="{"open" if is_open else ""}"><td class="name">{escape(r.name)}{kind}</td>'
            f'<td class="addr">{"<br>".join(escape(a) for a in r.ipv4)}</td>'
            f'<td class="addr">{"<br>".join(escape(a) for a in r.ipv6)}</td>'
            f"<td>{_clock(r.updated_ms, date=True)}</td>"
            f"<td class=n>{_ago(now_ms - r.updated_ms)}</td>"
            f'<td class="txt">{"<br>".join(escape(t) for t in r.txt)}</td></tr>')
    out.append("</tbody></table></section>")
    return out


def _names_note(names: NamesView) -> str:
    matching = f' matching "{names.query}"' if names.query else ""
    if names.matched == 0:
        return f"no names{matching}" + (f" (of {names.total:,})" if names.query else "")
    shown = len(names.rows)
    if shown == names.matched:
        return f"{names.matched:,} names{matching}, most recently refreshed first"
    return (f"the {shown:,} most recently refreshed of {names.matched:,} names{matching}; "
            f"{names.matched - shown:,} more not shown: filter to narrow")


def _window(seconds: int) -> str:
    return f"{seconds // 60} min" if seconds % 60 == 0 else f"{seconds} s"


def _clock(ms: int, date: bool = False) -> str:
    moment = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S")


def _ago(ms: int) -> str:
    """How long ago, coarsely; a refresh stamped by a leader whose clock is
    ahead of this front end's is "now", not the future."""
    seconds = max(ms, 0) // 1000
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 90 * 60:
        return f"{seconds // 60} min"
    if seconds < 36 * 3600:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def _int(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else "?"


def _seconds(value: Any) -> str:
    return f"{value:,.1f} s" if isinstance(value, (int, float)) else "?"


def _numeric(node: str) -> tuple[int, str]:
    return (int(node), "") if node.isdigit() else (1 << 30, node)
