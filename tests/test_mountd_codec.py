"""The mountd wire codec, without sockets: framing, requests, classic xcatd format."""

from __future__ import annotations

import json
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st
from litefs.mountd import codec, xcatd_codec

from litefs.errors import ProtocolError
from tests import xcatdwire

# rc.statelite's GetSyncInfo pipelines, verbatim (reference §5.2).
LITEFILE_PIPE = (
    "sed -e 's/<[^>]*>//g' | egrep -v '^ *$' | sed -e 's/^ *//' "
    "| awk -F: '{print $2}' | sed -e 's/^ *//'"
)
LITETREE_PIPE = "sed -e 's/<[^>]*>//g' | egrep -v '^ *$' | sed -e 's/^ *//' | awk '{print $2}'"


def _shell(pipe: str, data: bytes) -> list[str]:
    out = subprocess.run(["bash", "-c", pipe], input=data, capture_output=True, check=True)
    return out.stdout.decode().splitlines()


def test_sniff_tells_the_protocols_apart() -> None:
    assert codec.sniff(b'{"op":"plan"}\n') == "json"
    assert codec.sniff(b"  <xcatrequest>") == "classic"
    for bad in (b"GET / HTTP/1.1\r\n", b"\x16\x03\x01", b"   "):
        with pytest.raises(ProtocolError):
            codec.sniff(bad)


@given(
    st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=8),
    st.lists(st.integers(min_value=1, max_value=17), min_size=1, max_size=10),
)
def test_line_buffer_is_independent_of_chunking(lines: list[bytes], cuts: list[int]) -> None:
    data = b"".join(line + b"\n" for line in lines)
    buf = codec.LineBuffer(limit=64)
    got: list[bytes] = []
    pos = 0
    i = 0
    while pos < len(data):
        n = cuts[i % len(cuts)]
        got += buf.feed(data[pos : pos + n])
        pos += n
        i += 1
    assert got == lines
    assert buf.pending == 0


def test_line_buffer_bounds_memory() -> None:
    buf = codec.LineBuffer(limit=100)
    buf.feed(b"x" * 100)
    with pytest.raises(ProtocolError, match="too large"):
        buf.feed(b"x")
    with pytest.raises(ProtocolError, match="too large"):
        codec.LineBuffer(limit=10).feed(b"y" * 20 + b"\n")


@pytest.mark.parametrize(
    "req",
    [
        codec.PlanRequest(),
        codec.PlanRequest(node="n07"),
        codec.AnnounceRequest(target="compute", paths=("/etc/motd", "/opt/")),
        codec.SubscribeRequest(),
        codec.HealthRequest(),
        codec.ReloadRequest(),
    ],
)
def test_json_requests_round_trip(req: codec.Request) -> None:
    line = codec.encode_json_request(req)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert codec.decode_json_request(line[:-1]) == req


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"{not json", "malformed JSON"),
        (b"[1,2]", "expected an object"),
        (b'{"op":"dance"}', "unknown op 'dance'"),
        (b'{"op":"plan","node":7}', "'node' must be a non-empty string"),
        (b'{"op":"announce"}', "needs a 'target'"),
        (b'{"op":"announce","target":"x","paths":["rel"]}', "absolute paths"),
        (b'{"op":"plan","v":9}', "version 9 not supported"),
        (b"\xff\xfe", "malformed JSON"),
    ],
)
def test_bad_json_requests_say_what_is_wrong(line: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        codec.decode_json_request(line)


def test_classic_request_as_rc_statelite_sends_it() -> None:
    raw = b"<xcatrequest><command>litefile</command></xcatrequest>\n"
    assert xcatd_codec.classic_request_complete(raw)
    assert xcatd_codec.decode_classic_request(raw) == xcatd_codec.ClassicRequest("litefile")
    assert xcatdwire.encode_classic_request("litefile") == raw
    full = (
        b"<xcatrequest>\n <command>litetree</command>\n <noderange>n01,n02</noderange>\n"
        b" <arg>-x</arg>\n</xcatrequest>"
    )
    assert xcatd_codec.decode_classic_request(full) == xcatd_codec.ClassicRequest("litetree", "n01,n02", ("-x",))
    assert not xcatd_codec.classic_request_complete(b"<xcatrequest><command>lite")


@pytest.mark.parametrize(
    "raw",
    [
        b"<xcatrequest><command></command></xcatrequest>",
        b"<xcatrequest><command>a b</command></xcatrequest>",
        b"<other><command>litefile</command></other></xcatrequest>",
        b'<!DOCTYPE x [<!ENTITY a "aaaa">]><xcatrequest><command>&a;</command></xcatrequest>',
        b"<xcatrequest><command>litefile</command></xcatrequest",
        b"<xcatrequest><command>litefile</xcatrequest>",
    ],
)
def test_bad_classic_requests_are_refused(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        xcatd_codec.decode_classic_request(raw)


LINES = [
    "n01: tmpfs,rw       /etc/adjtime",
    "n01: persistent     /var/lib/x&y/",
    "n01: ro             /opt/<odd>",
]


def test_classic_response_survives_rc_statelites_pipeline() -> None:
    """The real sed/egrep/awk chain rc.statelite runs yields exactly '<options> <path>'."""
    data = xcatd_codec.encode_classic_info(LINES) + xcatd_codec.CLASSIC_SERVERDONE
    got = _shell(LITEFILE_PIPE, data)
    assert got == ["tmpfs,rw       /etc/adjtime", "persistent     /var/lib/x&amp;y/", "ro             /opt/&lt;odd&gt;"]
    # Our model of the pipeline agrees with the real one.
    assert xcatdwire.rc_statelite_litefile(data) == got
    tree = xcatd_codec.encode_classic_info(["n01: mn:/statelite/n01", "n01: sn1:/x :hard"]) + xcatd_codec.CLASSIC_SERVERDONE
    assert _shell(LITETREE_PIPE, tree) == ["mn:/statelite/n01", "sn1:/x"]
    assert xcatdwire.rc_statelite_litetree(tree) == ["mn:/statelite/n01", "sn1:/x"]


def test_classic_response_parses_back() -> None:
    data = xcatd_codec.encode_classic_info(LINES) + xcatd_codec.encode_classic_error("no\nway") + xcatd_codec.CLASSIC_SERVERDONE
    infos, errors, done = xcatdwire.parse_classic_response(data)
    assert infos == LINES
    assert errors == ["no way"]
    assert done


def test_replies_are_single_json_lines() -> None:
    line = codec.ok_reply(node="n01", paths=["/a\nb"])
    assert line.count(b"\n") == 1
    assert json.loads(line) == {"ok": True, "node": "n01", "paths": ["/a\nb"]}
    err = codec.decode_message(codec.error_reply("nope", "forbidden"))
    assert err == {"ok": False, "error": "nope", "code": "forbidden"}
    with pytest.raises(ProtocolError):
        codec.decode_message(b"[]")


@given(st.lists(st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30), max_size=6))
def test_classic_info_lines_round_trip(lines: list[str]) -> None:
    data = xcatd_codec.encode_classic_info(lines) + xcatd_codec.CLASSIC_SERVERDONE
    infos, errors, done = xcatdwire.parse_classic_response(data)
    assert infos == lines and errors == [] and done


@given(st.text(max_size=40), st.lists(st.text(max_size=20).map(lambda s: "/" + s), max_size=4))
def test_announce_requests_round_trip_any_text(target: str, paths: list[str]) -> None:
    req = codec.AnnounceRequest(target=target or "x", paths=tuple(paths))
    assert codec.decode_json_request(codec.encode_json_request(req)[:-1]) == req
