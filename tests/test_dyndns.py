"""The dyndns2 endpoint (``GET /nic/update``, :mod:`mydns_lab.web.dyndns`)
against a real :class:`JsonFrontEnd` over a real state machine (no lab):
every reply word, the host forms, the addresses, HTTP/1.0, and that a
refused update changes nothing. ``tests/test_dyndns_clients.py`` runs the
real ddclient and inadyn against a running lab.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

from mydns_lab.admission import Admission, AdmissionPolicy, TrustedSources
from mydns_lab.clerks import Finished
from mydns_lab.net.cluster_client import ClusterTimeout
from mydns_lab.net.recordcopy import RecordCache
from mydns_lab.protocol import RecordOp, Status
from mydns_lab.records import OPEN_OWNER
from mydns_lab.service.jsonfront import JsonFrontEnd
from mydns_lab.service.settings import FrontEndCounters
from mydns_lab.web.app import WebContext, build_app
from mydns_lab.web.dyndns import MAX_HOSTS, REFRESH_AFTER_S, _addresses, relative_name
from tests.test_admission import MachineClient
from tests.webserve import basic_auth, exchange, fetch, serving

TOKEN = "s3cret-token"


class Backend(MachineClient):
    """The state machine, counting writes, and failing them on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.now_ms = int(time.time() * 1000)
        self.writes = 0
        self.fail: str | Exception | None = None  # a Status to refuse with, or to raise

    async def call(self, op: RecordOp, timeout_s: float) -> Finished:
        if op.kind == "record_set":
            self.writes += 1
            if isinstance(self.fail, Exception):
                raise self.fail
            if self.fail is not None:
                return Finished(op, self.fail, "refused by the test", 1)
        return await super().call(op, timeout_s)


class Service:
    """A front end's HTTP app over JsonFrontEnd over :class:`Backend`; the
    front end's copy of the records follows the store after every request,
    as the watch would."""

    def __init__(self, policy: AdmissionPolicy = AdmissionPolicy(),
                 trusted: tuple[str, ...] = ("127.0.0.0/8",)) -> None:
        self.backend = Backend()
        self.records = self.backend.store.machine.records
        admission = Admission(policy, TrustedSources(trusted), lambda name: None,
                              lambda name: name in self.records, frozenset({"ns1"}))
        self.front = JsonFrontEnd(self.backend, FrontEndCounters(),  # type: ignore[arg-type]
                                  admission=admission)
        self.copy = RecordCache()
        self.copy.apply((), 0, full=True)
        self.context = WebContext(0, "mydns.", self.copy, TrustedSources(()), self._handle)

    async def _handle(self, data: bytes, source: str | None) -> bytes | None:
        reply = await self.front.handle(data, source)
        self.copy.apply(tuple(self.records.values()), self.backend.store.index, full=True)
        return reply

    def json_put(self, **fields: Any) -> dict[str, Any]:
        request = json.dumps({"Type": "Put", **fields}).encode()
        return json.loads(asyncio.run(self._handle(request, "127.0.0.1")) or b"{}")

    def addresses(self, name: str) -> tuple[str, ...] | None:
        record = self.records.get(name)
        return record.ipv4 + record.ipv6 if record else None

    def get(self, query: str, password: str | None = TOKEN, user: str = "router",
            headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
        """GET /nic/update?query with Basic credentials (None: none, or ``headers``)."""
        async def run() -> tuple[int, str, dict[str, str]]:
            async with serving(build_app(self.context)) as server:
                sent = ({"Authorization": basic_auth(user, password)}
                        if password is not None else headers or {})
                reply = await fetch(server.port, "/nic/update?" + query, headers=sent)
                return reply.status, reply.text, dict(reply.headers)
        return asyncio.run(run())

    def update(self, query: str, password: str | None = TOKEN) -> str:
        """The body of a 200 text/plain reply."""
        status, body, headers = self.get(query, password)
        assert status == 200, (status, body)
        assert headers["Content-Type"].startswith("text/plain"), headers
        return body


def test_a_claim_is_good_the_same_address_nochg_without_a_write_a_new_one_good() -> None:
    service = Service()
    assert service.update("hostname=laptop.mydns&myip=192.0.2.7") == "good 192.0.2.7\n"
    assert service.addresses("laptop") == ("192.0.2.7",)
    writes = service.backend.writes
    assert service.update("hostname=laptop.mydns&myip=192.0.2.7") == "nochg 192.0.2.7\n"
    assert service.backend.writes == writes
    assert service.update("hostname=laptop.mydns&myip=192.0.2.8") == "good 192.0.2.8\n"
    assert service.addresses("laptop") == ("192.0.2.8",)


def test_an_unchanged_name_not_written_for_a_while_is_written_again_and_still_nochg() -> None:
    """So a client that re-sends the same address keeps its name from --expire."""
    service = Service()
    service.backend.now_ms -= int(REFRESH_AFTER_S * 1000) + 60_000
    assert service.update("hostname=laptop&myip=192.0.2.7") == "good 192.0.2.7\n"
    service.backend.now_ms = int(time.time() * 1000)
    writes = service.backend.writes
    assert service.update("hostname=laptop&myip=192.0.2.7") == "nochg 192.0.2.7\n"
    assert service.backend.writes == writes + 1
    assert service.records["laptop"].updated_ms == service.backend.now_ms


def test_hosts_are_names_of_the_zone_fully_qualified_or_bare_labels() -> None:
    for host in ("laptop", "laptop.mydns", "laptop.mydns.", "LapTop.MyDNS."):
        assert relative_name(host, "mydns.") == "laptop", host
    assert relative_name("gpu.lab.mydns", "mydns.") == "gpu.lab"
    assert relative_name("laptop.dyn.example.org", "dyn.example.org.") == "laptop"
    for host in ("laptop.example.com", "gpu.lab", "mydns", "mydns.", "bad_name", "-x.mydns",
                 "a..mydns", "x" * 64):
        assert relative_name(host, "mydns.") is None, host
    service = Service()
    assert service.update("hostname=LapTop.MyDNS.&myip=192.0.2.7") == "good 192.0.2.7\n"
    assert service.update("hostname=gpu.lab.mydns&myip=192.0.2.9") == "good 192.0.2.9\n"
    assert service.update("hostname=laptop.example.com&myip=192.0.2.7") == "nohost\n"
    assert service.update("hostname=bad_name&myip=192.0.2.7") == "nohost\n"
    assert set(service.records) == {"laptop", "gpu.lab"}


def test_several_hosts_get_one_line_each_in_order() -> None:
    service = Service()
    service.update("hostname=b&myip=192.0.2.1")
    body = service.update("hostname=a.mydns,outside.example,b.mydns.,ns1,c&myip=192.0.2.1")
    assert body.splitlines() == ["good 192.0.2.1", "nohost", "nochg 192.0.2.1", "badauth",
                                 "good 192.0.2.1"]
    assert set(service.records) == {"a", "b", "c"}


def test_no_hostname_is_notfqdn_and_too_many_numhost_and_nothing_changes() -> None:
    service = Service()
    assert service.update("myip=192.0.2.1") == "notfqdn\n"
    assert service.update("hostname=&myip=192.0.2.1") == "notfqdn\n"
    assert service.update("hostname=,,&myip=192.0.2.1") == "notfqdn\n"
    hosts = ",".join(f"h{i}" for i in range(MAX_HOSTS + 1))
    assert service.update(f"hostname={hosts}&myip=192.0.2.1") == "numhost\n"
    assert service.backend.writes == 0
    hosts = ",".join(f"h{i}" for i in range(MAX_HOSTS))
    assert service.update(f"hostname={hosts}&myip=192.0.2.1").count("good") == MAX_HOSTS


def test_no_credentials_get_a_challenge_empty_or_unreadable_ones_badauth() -> None:
    service = Service()
    status, body, headers = service.get("hostname=laptop&myip=192.0.2.7", password=None)
    assert status == 401 and body == "badauth\n"
    assert headers["WWW-Authenticate"] == 'Basic realm="MyDNS"'
    # An empty password would claim an *open* name: refused, never sent on.
    assert service.update("hostname=laptop&myip=192.0.2.7", password="") == "badauth\n"
    for header in ("Bearer abc", "Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode()):
        status, body, _ = service.get("hostname=laptop&myip=192.0.2.7", password=None,
                                      headers={"Authorization": header})
        assert (status, body) == (200, "badauth\n"), header
    assert service.backend.writes == 0 and service.records == {}


def test_a_wrong_password_is_badauth_and_changes_nothing() -> None:
    service = Service()
    service.update("hostname=laptop&myip=192.0.2.7")
    before = service.records["laptop"]
    for myip in ("192.0.2.66", "192.0.2.7"):  # the same address is no nochg for a stranger
        assert service.update(f"hostname=laptop&myip={myip}", password="guess") == "badauth\n"
    assert service.records["laptop"] == before
    # A password over the JSON protocol's 256 characters is just as wrong.
    assert service.update("hostname=laptop&myip=192.0.2.66", password="x" * 300) == "badauth\n"
    assert service.records["laptop"] == before


def test_names_no_token_may_take_are_badauth() -> None:
    """An open name (the original's clients), a zone name server."""
    service = Service()
    assert service.json_put(Key="gpu", Value="192.0.2.5")["Outcome"] == "claimed"
    assert service.records["gpu"].owner == OPEN_OWNER
    assert service.update("hostname=gpu&myip=192.0.2.6") == "badauth\n"
    assert service.update("hostname=ns1&myip=192.0.2.6") == "badauth\n"
    assert service.addresses("gpu") == ("192.0.2.5",) and "ns1" not in service.records


def test_a_missing_empty_or_invalid_myip_means_the_clients_own_address() -> None:
    service = Service()
    for i, query in enumerate(("", "&myip=", "&myip=bogus", "&myip=192.0.2.1,bogus")):
        assert service.update(f"hostname=h{i}{query}") == "good 127.0.0.1\n", query
        assert service.addresses(f"h{i}") == ("127.0.0.1",)
    # An IPv4 client of a dual-stack socket is an IPv4 client.
    assert _addresses("", "", "::ffff:192.0.2.9") == (("192.0.2.9",), ())


def test_ipv6_in_myip_or_myipv6() -> None:
    service = Service()
    assert service.update("hostname=a&myip=2001:DB8::1") == "good 2001:db8::1\n"
    assert service.addresses("a") == ("2001:db8::1",)
    assert (service.update("hostname=b&myip=192.0.2.7&myipv6=2001:db8::2")
            == "good 192.0.2.7,2001:db8::2\n")
    assert service.addresses("b") == ("192.0.2.7", "2001:db8::2")
    assert (service.update("hostname=c&myip=192.0.2.7,2001:db8::3")
            == "good 192.0.2.7,2001:db8::3\n")
    # Without myip the client's own address stands in for IPv4, beside myipv6.
    assert service.update("hostname=d&myipv6=2001:db8::4") == "good 127.0.0.1,2001:db8::4\n"
    assert service.update("hostname=d&myipv6=2001:db8::4") == "nochg 127.0.0.1,2001:db8::4\n"


def test_the_other_dyndns2_parameters_are_accepted_and_ignored() -> None:
    service = Service()
    query = ("system=dyndns&hostname=laptop&myip=192.0.2.7&wildcard=ON&mx=mail.example.com"
             "&backmx=NO&offline=NO")
    assert service.update(query) == "good 192.0.2.7\n"
    assert service.records["laptop"].txt == ()


def test_the_operators_limits_are_abuse() -> None:
    service = Service(AdmissionPolicy(claims_per_minute=1), trusted=())
    assert service.update("hostname=a&myip=192.0.2.1") == "good 192.0.2.1\n"
    assert service.update("hostname=b&myip=192.0.2.1") == "abuse\n"
    assert service.update("hostname=a&myip=192.0.2.2") == "good 192.0.2.2\n"  # no claim
    full = Service(AdmissionPolicy(max_names=1))
    assert full.update("hostname=a,b&myip=192.0.2.1") == "good 192.0.2.1\nabuse\n"
    assert set(full.records) == {"a"}


def test_a_full_disk_is_dnserr_and_no_answer_or_a_bug_911() -> None:
    service = Service()
    for fail, word in ((Status.NO_SPACE, "dnserr"), (ClusterTimeout("no answer"), "911"),
                       (RuntimeError("a bug"), "911")):
        service.backend.fail = fail
        assert service.update("hostname=laptop&myip=192.0.2.7") == f"{word}\n", fail
    assert service.records == {}


def test_a_newer_upload_stored_is_911_not_a_change() -> None:
    service = Service()
    future = int(time.time() * 1000) + 3_600_000
    assert service.json_put(Key="laptop", Value="192.0.2.5", Token=TOKEN,
                            Seq=future)["Outcome"] == "claimed"
    assert service.update("hostname=laptop&myip=192.0.2.6") == "911\n"
    assert service.addresses("laptop") == ("192.0.2.5",)


def test_http_1_0_without_host_and_1_1_with_host_and_port() -> None:
    """As inadyn (HTTP/1.0) and ddclient (HTTP/1.1, ``Host: server:port``)
    send it: credentials on the first request, no challenge first. A reply
    names HTTP/1.1, the server's version, as RFC 9110 has it, also to an
    HTTP/1.0 request (whose connection then closes)."""
    service = Service()
    credentials = base64.b64encode(f"router:{TOKEN}".encode()).decode()

    async def raw(request: str) -> bytes:
        async with serving(build_app(service.context)) as server:
            # the server closes after the reply
            return await exchange(server.port, request.replace("PORT", str(server.port)).encode())

    # A HEAD (a link checker) updates nothing.
    reply = asyncio.run(raw("HEAD /nic/update?hostname=a.mydns&myip=192.0.2.7 HTTP/1.0\r\n"
                            f"Authorization: Basic {credentials}\r\n\r\n"))
    assert reply.startswith(b"HTTP/1.1 405") and service.records == {}, reply
    assert b"\r\nAllow: GET\r\n" in reply
    reply = asyncio.run(raw("GET /nic/update?hostname=a.mydns&myip=192.0.2.7 HTTP/1.0\r\n"
                            f"Authorization: Basic {credentials}\r\n\r\n"))
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == b"good 192.0.2.7\n", reply
    assert b"Content-Type: text/plain" in head
    reply = asyncio.run(raw("GET /nic/update?system=dyndns&hostname=b.mydns&myip=192.0.2.8 "
                            "HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\n"
                            f"Authorization: Basic {credentials}\r\n"
                            "User-Agent: ddclient/3.10.0\r\nConnection: close\r\n\r\n"))
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == b"good 192.0.2.8\n", reply
    assert service.addresses("a") == ("192.0.2.7",) and service.addresses("b") == ("192.0.2.8",)
