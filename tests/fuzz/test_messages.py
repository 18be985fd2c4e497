"""Structured properties of what arrives over signaling: JSON messages with random fields
(signaling/messages.py), access tokens with random claims (signaling/tokens.py), SDP offers with
many m-lines, odd rids and duplicate mids (sfu/media/sdp_*.py), and ICE candidates."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sfu.media import aiortc_bridge as bridge
from tests.fuzz.harnesses.candidate import check_candidate
from tests.fuzz.harnesses.jsonish import KEYS, TYPES
from tests.fuzz.harnesses.sdp import check_sdp
from tests.fuzz.harnesses.signaling import check_text
from tests.fuzz.harnesses.tokens import check_token, signed

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=80),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)
fields = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=10), json_values, max_size=8)


@given(st.sampled_from(TYPES), fields, st.booleans())
def test_messages_with_random_fields(kind: str, extra: dict[str, Any], versioned: bool) -> None:
    message = {"type": kind, **extra} if "type" not in extra else extra
    if versioned:
        message["v"] = 1
    check_text(json.dumps(message))


@given(json_values)
def test_any_json_value(value: Any) -> None:
    check_text(json.dumps(value))


@given(fields, st.one_of(st.none(), st.floats(), st.integers()), st.booleans())
def test_tokens_with_random_claims(claims: dict[str, Any], exp: Any, now_given: bool) -> None:
    claims = {"sub": "alice", "room": "r1", **claims}
    if exp is not None:
        claims["exp"] = exp
    token = signed(b'{"alg":"HS256","kid":"k1"}', json.dumps(claims).encode())
    check_token(token, 1_700_000_000.0 if now_given else None)


SESSION = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
TRANSPORT = (
    "c=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef012345\r\n"
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\na=rtcp-mux\r\n"
)
rid_ids = (
    st.sampled_from(["h", "l", "q", "f"] * 10)
    | st.sampled_from(["h", "l", "q", "f", "0", "a-b", "x_y", "toolong" * 3, "", "~h", "h,l"])
    | st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=20)
)


@st.composite
def offers(draw: st.DrawFn) -> tuple[str, list[str]]:
    """An offer of 1-40 m-lines, mids from a small set (so often twice), rids and simulcast."""
    sections = []
    mids: list[str] = []
    shared = draw(st.booleans())  # mids from a small set: often one twice
    for index in range(draw(st.integers(1, 40))):
        kind = draw(st.sampled_from(["audio", "video"]))
        mid = (
            str(index) if not shared else draw(st.sampled_from(["0", "1", "2", "video", "x" * 70]))
        )
        mids.append(mid)
        if kind == "audio":
            lines = ["m=audio 9 UDP/TLS/RTP/SAVPF 111", "a=rtpmap:111 opus/48000/2"]
        else:
            lines = ["m=video 9 UDP/TLS/RTP/SAVPF 96 97", "a=rtpmap:96 VP8/90000",
                     "a=rtpmap:97 rtx/90000", "a=fmtp:97 apt=96"]  # fmt: skip
            lines.append("a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id")
            rids = draw(st.lists(rid_ids, max_size=6))
            for rid in rids:
                restriction = draw(
                    st.sampled_from(
                        ["", "", "", " pt=96", " pt=97", " pt=1", " max-width=x", " max-fps=30"]
                    )
                )
                direction = draw(st.sampled_from(["send"] * 8 + ["recv", "both"]))
                lines.append(f"a=rid:{rid} {direction}{restriction}")
            if bool(rids) or draw(st.booleans()):
                listed = draw(st.lists(st.sampled_from(rids) if rids else rid_ids, max_size=6))
                direction = draw(st.sampled_from(["send"] * 4 + ["recv"]))
                lines.append(f"a=simulcast:{direction} {';'.join(listed)}")
        lines += [f"a=mid:{mid}", draw(st.sampled_from(["a=sendonly", "a=sendrecv", "a=recvonly"]))]
        sections.append("\r\n".join(lines) + "\r\n" + TRANSPORT)
    group = (
        "a=group:BUNDLE " + " ".join(dict.fromkeys(mids)) + "\r\n"
        if draw(st.integers(0, 9)) < 9
        else ""
    )
    return SESSION + group + "".join(sections), mids


@given(offers())
def test_offers_with_many_m_lines_odd_rids_and_duplicate_mids(offer: tuple[str, list[str]]) -> None:
    sdp, mids = offer
    check_sdp(sdp, "offer")
    if len(set(mids)) < len(mids):
        with pytest.raises(ValueError, match="mid"):
            bridge.parse_sdp(sdp, "offer")


@given(
    st.lists(
        st.sampled_from(
            [
                "candidate:1",
                "1",
                "UDP",
                "2122260223",
                "127.0.0.1",
                "::1",
                "9",
                "typ",
                "host",
                "raddr",
                "rport",
                "tcptype",
                "active",
            ]
        )
        | st.text(max_size=12),
        max_size=14,
    )
)
def test_candidates(words: list[str]) -> None:
    check_candidate(" ".join(words))
