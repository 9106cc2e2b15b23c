"""The JSON protocol's bytes (:mod:`mydns_lab.service.jsonfront` documents its
messages): decoding a request, the refusal a client is told, the ``Id`` to
echo and a reply fitted to the size the request allows, so a front end
never sends more than it was sent (no amplification).

Pure: no I/O.
"""

from __future__ import annotations

import json
from typing import Any

MAX_SMALL_REPLY_BYTES = 512
"""A JSON reply may be this long even to a shorter request (a DNS answer
without EDNS is as long); beyond it, no longer than the request."""
MAX_ERROR_CHARS = 200
MAX_ID_CHARS = 64


class RequestError(Exception):
    """A request we refuse; the message goes back to the client (shortened to
    MAX_ERROR_CHARS), with a machine-readable ``code``: ``bad_request``,
    ``invalid`` (a name or address), ``owned`` (another key's name),
    ``stale`` (an older Seq than stored), ``open`` (a token's or signed Put
    of an open name), ``bad_signature`` and ``unknown_name`` (a signed Put's
    Mac is not its owner's; no such name), ``zone_full``, ``reserved``, ``rate_limited`` and
    ``token_required`` (the operator's limits, :mod:`mydns_lab.admission`),
    ``nospace`` (the store's disk is
    full: writes resume once its operator frees space; reads go on),
    ``unavailable`` (the cluster did not answer; try again), ``too_large``
    (see :func:`fitted_reply`). A bug inside the front end answers ``internal``."""

    def __init__(self, message: str, code: str = "bad_request") -> None:
        super().__init__(message)
        self.code = code


def error_reply(reason: str, code: str) -> dict[str, Any]:
    return {"Type": "Error", "Error": shortened(reason, MAX_ERROR_CHARS), "Code": code}


def shortened(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[:max(0, chars - 3)] + "..."


def quoted(value: object) -> str:
    """A client's value in an error: a short string quoted, else its JSON type."""
    if isinstance(value, str):
        return repr(shortened(value, 40))
    kinds = {dict: "an object", list: "an array", bool: "a boolean", int: "a number"}
    return kinds.get(type(value), "a number" if isinstance(value, float) else "null")


def is_text(value: object, max_chars: int) -> bool:
    """A string of at most ``max_chars`` that UTF-8 can carry (JSON's
    ``\\ud800`` escapes make lone surrogates, which it cannot)."""
    if not isinstance(value, str) or len(value) > max_chars:
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def decode_request(data: bytes) -> Any:
    try:
        return json.loads(data)
    except RecursionError:
        raise RequestError("request is not valid JSON: nested too deeply") from None
    except ValueError as exc:  # UnicodeDecodeError included
        raise RequestError(f"request is not valid JSON: {exc}") from None


def echoed_id(request: Any) -> int | str | None:
    """The request's ``Id`` if it is one to echo: an integer of at most 64
    bits, or a string of at most MAX_ID_CHARS characters that JSON writes in
    at most 6 bytes each (a character beyond U+FFFF takes 12: such Ids are
    held to half the length), so that every reply can carry it."""
    request_id = request.get("Id") if isinstance(request, dict) else None
    if isinstance(request_id, int) and -2**63 <= request_id < 2**64:
        return request_id
    if (isinstance(request_id, str) and len(request_id) <= MAX_ID_CHARS
            and len(json.dumps(request_id)) <= 6 * MAX_ID_CHARS + 2):
        return request_id
    return None


def fitted_reply(reply: dict[str, Any], request_id: int | str | None, limit: int) -> bytes:
    """``reply`` with ``request_id`` as bytes of at most ``limit``. The Id
    always stays (clients take only the reply that carries their request's
    Id); what does not fit is left out in this order: a PutOk's echoed Key
    and Value (the upload was taken: its Outcome must come back); an
    Error's text, shortened. A Response that does not fit
    becomes the error ``too_large``, which names the request size needed."""
    if request_id is not None:
        reply["Id"] = request_id
    data = json_bytes(reply)
    if len(data) <= limit:
        return data
    if reply["Type"] == "PutOk":
        reply.pop("Key", None)
        reply.pop("Value", None)
    elif reply["Type"] == "Response":
        reply = error_reply(f"the answer is {len(data)} bytes, longer than this request may draw; "
                       f"pad the request to {len(data)} bytes (any other field, such as "
                       "\"Pad\", is ignored) or ask over DNS", "too_large")
        if request_id is not None:
            reply["Id"] = request_id
    data = json_bytes(reply)
    while len(data) > limit and reply["Type"] == "Error" and reply["Error"]:
        keep = len(reply["Error"]) - (len(data) - limit) - 4  # each char is 1 byte or more
        reply["Error"] = reply["Error"][:keep] + "..." if keep > 0 else ""
        data = json_bytes(reply)
    # Invariant: every reply fits; the smallest (an Error without text, a
    # PutOk without echoes, with an Id of MAX_ID_CHARS) is far below
    # MAX_SMALL_REPLY_BYTES.
    assert len(data) <= limit, data[:100]
    return data


def json_bytes(reply: dict[str, Any]) -> bytes:
    return json.dumps(reply, separators=(",", ":")).encode()
