"""The status page (``GET /`` of a front end's HTTP port, web/status.py):
its HTML (escaping, the row cap, the filter), who sees the names under
``--status-page local|public|off``, the flag's way to the front end, and
the page as a real headless browser renders it from a running lab (with
scripts and without), the name of an update showing within a second.

The browser test needs Debian's ``chromium`` (run_tests.sh installs it when
it can) and skips, saying so, when it is missing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest

from mydns_lab.__main__ import options_from
from mydns_lab.admission import TrustedSources
from mydns_lab.experiments.browser import dump_dom, find_chromium, screenshot
from mydns_lab.experiments.labprocess import LabProcess, wait_for
from mydns_lab.lab.launcher import Lab
from mydns_lab.net.recordcopy import RecordCache
from mydns_lab.protocol import Record
from mydns_lab.records import OPEN_OWNER
from mydns_lab.web.app import WebContext, build_app
from mydns_lab.web import status
from mydns_lab.web.status import (MAX_ROWS, PageAccess, RateSampler, StatusPage, recent_records,
                                  render_page, sees_names)
from tests.webserve import fetch, make_request, serving

NOW_MS = int(time.time() * 1000)
OWNER = "ab" * 32
SEED = 1313
BROWSER_ALLOWANCE_S = 30.0  # a browser's start-up on a busy machine, beyond the 1 s promised


class _Tables(HTMLParser):
    """The cell texts of every ``<table>``, by its class: rows of cells."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: list[list[str]] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._table = self.tables.setdefault(dict(attrs).get("class") or "", [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table:
            self._table[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def tables(html: str) -> dict[str, list[list[str]]]:
    parser = _Tables()
    parser.feed(html)
    return parser.tables


def name_rows(html: str) -> dict[str, list[str]]:
    """The names table's rows by name (the first cell's first word)."""
    return {row[0].split()[0]: row for row in tables(html).get("names", [])[1:] if row}


def cache_of(*records: Record) -> RecordCache:
    cache = RecordCache()
    cache.apply(records, serial=1, full=True)
    return cache


async def _no_json(data: bytes, source: str | None) -> bytes | None:
    return None


def context_of(records: RecordCache, status_page: str = "local",
               trusted: tuple[str, ...] = ("127.0.0.0/8",)) -> WebContext:
    return WebContext(0, "mydns.", records, TrustedSources(trusted), _no_json,
                      status_page=status_page, operation_totals=lambda: (0, 0))


CLUSTER = {"leader": 2, "term": 7, "leader_changes": 3,
           "servers": {"1": {"up": True, "role": "follower", "term": 7, "commit": 41,
                             "applied": 41, "disk_full": ""},
                       "2": {"up": True, "role": "leader", "term": 7, "commit": 41,
                             "applied": 41, "disk_full": ""},
                       "3": {"up": False, "role": "down", "term": 6, "commit": 30,
                             "applied": 30, "disk_full": ""}},
           "recent_leader_changes": [{"at_s": 0.8, "term": 1, "leader": 1},
                                     {"at_s": 9.2, "term": 7, "leader": 2}],
           "written_at": NOW_MS / 1000}


# --- the HTML -------------------------------------------------------------

def test_values_from_outside_are_escaped() -> None:
    """TXT is free text, and the cluster file and the filter come from
    outside too: nothing of them becomes markup."""
    hostile = '<script>alert(1)</script>"\'&'
    record = Record("gpu1", ("10.1.2.3",), ("2001:db8::1",), (hostile,), OWNER, 1, NOW_MS)
    cluster = dict(CLUSTER, servers={"1": {"up": True, "role": "<img src=x onerror=alert(2)>",
                                           "term": 1, "commit": 1, "applied": 1,
                                           "disk_full": '"><b>full'}})
    page = StatusPage(context_of(cache_of(record)))
    html = render_page(dataclasses.replace(page.view("127.0.0.1", ""), cluster=cluster))
    assert html.count("<script") == 1, "only the page's own script"
    assert "<img" not in html and "<b>full" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#x27;&amp;" in html
    assert name_rows(html)["gpu1"][-1] == hostile, "shown as text, whole"
    assert tables(html)["servers"][1][2] == "<img src=x onerror=alert(2)>"
    searched = render_page(page.view("127.0.0.1", '"><script>alert(3)</script>'))
    assert searched.count("<script") == 1
    assert 'value="&quot;&gt;&lt;script&gt;alert(3)&lt;/script&gt;"' in searched
    assert "no names matching &quot;&quot;&gt;&lt;script&gt;" in searched


def test_the_page_shows_names_addresses_refresh_times_and_the_cluster() -> None:
    records = cache_of(
        Record("gpu1", ("10.1.2.3",), ("2001:db8::1",), (), OWNER, 1, NOW_MS - 5_000),
        Record("printer", ("10.1.2.9",), (), (), OPEN_OWNER, 1, NOW_MS - 3 * 3600_000))
    # The view as of NOW_MS, whenever this test runs in the suite.
    view = dataclasses.replace(StatusPage(context_of(records)).view("127.0.0.1", ""),
                               cluster=CLUSTER, now_ms=NOW_MS)
    html = render_page(view)
    rows = name_rows(html)
    assert list(rows) == ["gpu1", "printer"], "most recently refreshed first"
    assert rows["gpu1"][1:3] == ["10.1.2.3", "2001:db8::1"]
    assert rows["gpu1"][4] in ("5 s", "4 s")
    assert rows["printer"][0] == "printer open" and rows["printer"][4] == "3 h"
    assert '<tr class="open">' in html
    servers = tables(html)["servers"]
    assert servers[2][:7] == ["s2", "up", "leader", "7", "41", "41", "ok"]
    assert servers[3][1] == "down"
    changes = tables(html)["changes"]
    assert changes[1] == ["9.2 s", "7", "s2"], "newest first"
    assert '<noscript><meta http-equiv="refresh" content="2"></noscript>' in html


def test_on_etcd_the_page_shows_its_members_in_place_of_servers() -> None:
    """--store etcd: status.json lists etcd's members, and the page shows
    them (leader, term, revision) instead of an empty, alarming servers table."""
    members = [{"endpoint": "http://10.0.0.1:2379", "up": True, "leader": False, "term": 4,
                "revision": 90},
               {"endpoint": "http://10.0.0.2:2379", "up": True, "leader": True, "term": 4,
                "revision": 90},
               {"endpoint": "<b>x", "up": False, "leader": False, "term": 0, "revision": 0}]
    cluster = {"leader": 0, "term": 0, "servers": {}, "etcd_members": members,
               "written_at": NOW_MS / 1000}
    view = dataclasses.replace(StatusPage(context_of(cache_of())).view("127.0.0.1", ""),
                               cluster=cluster, now_ms=NOW_MS)
    html = render_page(view)
    rows = tables(html)["servers"]
    assert rows[2][:5] == ["http://10.0.0.2:2379", "up", "leader", "4", "90"]
    assert rows[3][:2] == ["<b>x", "down"], "shown as text"
    assert "members up" in html and "2/3" in html and "servers up" not in html
    assert "changes" not in tables(html)


def test_at_most_max_rows_names_the_most_recent_and_how_many_more() -> None:
    total = MAX_ROWS + 734
    records = cache_of(*(Record(f"h{i}", (f"10.0.{i // 250}.{i % 250}",), (), (), OWNER, 1,
                                NOW_MS - i * 1000) for i in range(total)))
    html = render_page(StatusPage(context_of(records)).view("127.0.0.1", ""))
    rows = name_rows(html)
    assert len(rows) == MAX_ROWS
    assert "h0" in rows and f"h{MAX_ROWS - 1}" in rows and f"h{MAX_ROWS}" not in rows
    assert f"the {MAX_ROWS} most recently refreshed of {total:,} names; 734 more" in html
    # ?q= narrows, by name or by address
    filtered = render_page(StatusPage(context_of(records)).view("127.0.0.1", "h100"))
    assert sorted(name_rows(filtered)) == ["h100"] + [f"h{n}" for n in range(1000, 1010)]
    by_address = name_rows(render_page(
        StatusPage(context_of(records)).view("127.0.0.1", "10.0.3.24")))
    assert set(by_address) == {"h774"} | {f"h{990 + n}" for n in range(10)}


def test_recent_records_bounds_its_work_to_the_limit() -> None:
    records = [Record(f"n{i}", updated_ms=i) for i in range(10)]
    rows, matched = recent_records(records, "", 3)
    assert [r.name for r in rows] == ["n9", "n8", "n7"] and matched == 10
    assert recent_records(records, "zzz", 3) == ([], 0)


def test_rates_are_differences_between_samples() -> None:
    totals = [(0, 0)]
    sampler = RateSampler(lambda: totals[-1])
    assert sampler.rates(10) is None
    for second in range(1, 71):
        totals.append((second * 2, second * 30))
        sampler.sample(float(second))
    assert sampler.rates(10) == pytest.approx((2.0, 30.0))
    totals.append((140 + 50, 70 * 30))  # 50 updates in the last second
    sampler.sample(71.0)
    assert sampler.rates(10) == pytest.approx(((190 - 122) / 10, (2100 - 1830) / 10))
    assert sampler.rates(60)[0] == pytest.approx((190 - 22) / 60)


# --- who sees what --------------------------------------------------------

def _get(page: StatusPage, source: str, path: str = "/") -> tuple[int, str]:
    response = asyncio.run(page.handle(make_request(path, remote=source)))
    return response.status, response.body.decode()


@pytest.mark.parametrize("mode, source, sees", [
    ("local", "127.0.0.1", True), ("local", "::1", True), ("local", "::ffff:127.0.0.1", True),
    ("local", "192.168.1.20", True),         # in --trusted
    ("local", "192.0.2.7", False), ("local", "2001:db8::7", False),
    ("public", "192.0.2.7", True), ("public", "127.0.0.1", True)])
def test_names_by_source_address(mode: str, source: str, sees: bool) -> None:
    records = cache_of(Record("gpu1", ("10.1.2.3",), (), (), OWNER, 1, NOW_MS))
    page = StatusPage(context_of(records, mode, trusted=("192.168.1.0/24",)))
    status, html = _get(page, source, "/?q=gpu")
    assert status == 200
    assert ("gpu1" in name_rows(html)) is sees
    assert ("10.1.2.3" in html) is sees
    assert ('name="q"' in html) is sees, "no filter box for a page without names"
    assert "<h2>Servers</h2>" in html, "the cluster part is for everyone"
    if not sees:
        assert "shown to loopback and trusted" in html


def test_loopback_sees_names_whatever_trusted_says() -> None:
    assert sees_names("127.0.0.5", TrustedSources(("10.0.0.0/8",)))
    assert not sees_names("192.0.2.1", TrustedSources(("10.0.0.0/8",)))
    assert not sees_names(None, TrustedSources(("0.0.0.0/0",)))


def test_off_answers_404_and_bad_modes_fail_at_start() -> None:
    page = StatusPage(context_of(cache_of(), "off"))
    status, text = _get(page, "127.0.0.1")
    assert status == 404 and "--status-page off" in text
    with pytest.raises(ValueError):
        StatusPage(context_of(cache_of(), "everyone"))


def test_build_app_serves_the_page_over_http() -> None:
    """Through the real app and a socket on loopback: the route, the
    headers, and the sampler started and stopped with the app."""
    records = cache_of(Record("gpu1", ("10.1.2.3",), (), (), OWNER, 1, NOW_MS))

    async def get() -> tuple[int, dict[str, str], str]:
        async with serving(build_app(context_of(records))) as server:
            reply = await fetch(server.port, "/")
            return reply.status, dict(reply.headers), reply.text

    status, headers, html = asyncio.run(get())
    assert status == 200 and "gpu1" in name_rows(html)
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Cache-Control"] == "no-store"
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert "http" not in re.sub(r'http-equiv="refresh"', "", html), "no external asset"


def test_the_flag_reaches_the_front_ends() -> None:
    assert options_from([]).status_page == PageAccess.LOCAL
    for mode in ("public", "off"):
        options = options_from(["--status-page", mode])
        assert Lab(options)._front_end_settings().status_page == mode
    with pytest.raises(SystemExit):
        options_from(["--status-page", "everyone"])


# --- in a real browser ----------------------------------------------------

@pytest.mark.lab
def test_a_headless_browser_shows_an_update_within_a_second(tmp_path: Path) -> None:
    """A Put at front end 0; front end 1's page (its copy fed by the watch)
    in headless chromium: any page rendered a second or more after the Put
    was acknowledged must hold the name and its address."""
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("chromium is not installed: apt-get install chromium "
                    "(run_tests.sh installs it when it runs as root with apt-get)")
    with LabProcess(tmp_path / "data", nservers=3, nclerks=2, seed=SEED) as lab:
        url = f"http://127.0.0.1:{lab.http_port + 1}/"
        before = dump_dom(url, binary=chromium)
        assert "gpu1" not in name_rows(before)
        assert len(tables(before)["servers"]) == 1 + 3
        reply = lab.call(0, {"Type": "Put", "Key": "gpu1", "Value": "10.1.2.3", "Token": "t"})
        assert reply.get("Type") == "PutOk", f"{reply} ({lab.replay})"
        acked_ms = time.time() * 1000
        seen: dict[str, str] = {}

        def shows_the_name() -> bool:
            dom = dump_dom(url, binary=chromium)
            found = re.search(r'data-generated-ms="(\d+)"', dom)
            assert found, f"no live part in the page:\n{dom[:2000]}"
            row = name_rows(dom).get("gpu1")
            if row is None and int(found.group(1)) > acked_ms + 1000:
                raise AssertionError("a page rendered over 1 s after the Put lacks gpu1 "
                                     f"(seed {SEED}; {lab.replay})")
            seen["dom"] = dom
            return row is not None and row[1] == "10.1.2.3"

        wait_for(shows_the_name, 1 + BROWSER_ALLOWANCE_S, "the page to show gpu1 10.1.2.3")
        servers = tables(seen["dom"])["servers"]
        assert sum(row[2] == "leader" for row in servers[1:]) == 1, servers
        # Readable without scripts: the table is in the HTML served (no script
        # builds it), and the refresh is then a meta tag's job.
        with urllib.request.urlopen(url, timeout=5) as response:
            plain = response.read().decode()
        assert name_rows(plain)["gpu1"][1] == "10.1.2.3"
        assert '<noscript><meta http-equiv="refresh" content="2"></noscript>' in plain
        shot = screenshot(url, tmp_path / "status.png", binary=chromium)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_unchanged_records_are_not_scanned_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """The names' scan is kept for the records as they stand and the same
    filter: a tab refreshing every 2 s costs one scan per change."""
    records = cache_of(Record("gpu1", ("10.1.2.3",), (), (), OWNER, 1, NOW_MS))
    page = StatusPage(context_of(records))
    scans = []
    real = status.recent_records
    monkeypatch.setattr(status, "recent_records",
                        lambda *args: scans.append(args[1]) or real(*args))
    for _ in range(3):
        page.view("127.0.0.1", "")
    page.view("127.0.0.1", "gpu")
    records.apply((Record("nas", ("10.1.2.4",), (), (), OWNER, 1, NOW_MS + 1),), 2, full=False)
    assert [r.name for r in page.view("127.0.0.1", "").names.rows] == ["nas", "gpu1"]
    assert scans == ["", "gpu", ""]
