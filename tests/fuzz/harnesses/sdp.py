"""SDP offers and answers (sfu/media/sdp_check.py, sdp_attributes.py, sdp_simulcast.py and
what sfu/media/aiortc_bridge.py reads of an SDP the checks accepted).

parse_sdp raises ValueError with a message for the client or accepts; what it accepts, aiortc
must parse (else the client is told only "could not be parsed") and the server's own readers
(offered_m_lines, receivable, the BUNDLE rewrites) must take without any exception. Inputs are
real stacks' SDPs with lines deleted, duplicated, changed and added (rids, simulcast, mids,
m-lines), or raw text.
"""

from __future__ import annotations

from pathlib import Path

from sfu.media import aiortc_bridge as bridge
from sfu.media import sdp_check, sdp_simulcast
from tests.fuzz.reader import Reader
from tests.unit.sdp_samples import AIORTC_ANSWER, AIORTC_OFFER, CHROMIUM_OFFER

_FILES = Path(__file__).parents[2] / "unit" / "sdp"
SAMPLES = [CHROMIUM_OFFER, AIORTC_OFFER, AIORTC_ANSWER] + [
    path.read_text() for path in sorted(_FILES.glob("*.sdp"))
]
LINES = (
    "a=rid:h send", "a=rid:l send pt=96;max-width=320", "a=rid:q recv", "a=rid:f send pt=200",
    "a=rid:h send max-fps=x", "a=rid:-- send", "a=simulcast:send h;l", "a=simulcast:send ~h,l;q",
    "a=simulcast:recv h", "a=simulcast:send h;h", "a=simulcast:send a;b;c;d;e",
    "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
    "a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
    "a=extmap:12/sendonly urn:ietf:params:rtp-hdrext:sdes:mid", "a=extmap:300 x",
    "a=mid:0", "a=mid:1", "a=mid:", "a=mid:x y", "a=bundle-only", "a=group:BUNDLE 0 1 2",
    "a=group:BUNDLE", "a=group:LS 0 1", "a=ssrc-group:FID 1 2", "a=ssrc:1 cname:x",
    "a=ssrc:4294967296 cname:x", "a=rtpmap:96 VP8/90000", "a=rtpmap:96 VP8",
    "a=rtpmap:97 rtx/90000", "a=fmtp:97 apt=96", "a=fmtp:97 apt=", "a=fmtp:96",
    "a=rtcp-fb:96 nack pli", "a=rtcp-fb:* ccm fir",
    "a=sendonly", "a=recvonly", "a=inactive", "a=sendrecv", "a=setup:active", "a=setup:holdconn",
    "a=rtcp-mux", "a=rtcp:9 IN IP4 0.0.0.0", "a=rtcp:x", "c=IN IP4 0.0.0.0", "c=IN IP6 ::1",
    "c=IN IP4 300.1.1.1", "a=candidate:1 1 UDP 2122260223 127.0.0.1 40000 typ host",
    "a=candidate:1 1 UDP 1 ::1 0 typ host raddr ::1 rport 1", "a=end-of-candidates",
    "a=ice-ufrag:abcd", "a=ice-pwd:0123456789012345678901", "a=ice-ufrag:a", "a=ice-lite",
    "a=fingerprint:sha-256 00:11", "a=msid:- x", "a=msid-semantic: WMS", "a=extmap-allow-mixed",
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97", "m=audio 0 UDP/TLS/RTP/SAVPF 111",
    "m=video 9/2 UDP/TLS/RTP/SAVPF 96", "m=video 9 RTP/AVP 96", "m=text 9 UDP/TLS/RTP/SAVPF 96",
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel", "a=sctp-port:5000", "a=sctp-port:x",
    "a=max-message-size:262144", "a=sctpmap:5000 webrtc-datachannel 1024", "b=AS:30", "t=0 0",
    "o=- 1 1 IN IP4 0.0.0.0", "s=-", "v=0", "a=x-google-flag:conference", "a=rtcp-rsize",
)  # fmt: skip


def mutate(text: str, reader: Reader) -> str:
    lines = text.replace("\r\n", "\n").split("\n")
    for _ in range(reader.below(8)):
        op = reader.below(7)
        at = reader.below(len(lines) + 1)
        if op == 0 and lines:
            del lines[min(at, len(lines) - 1)]
        elif op == 1 and lines:
            lines.insert(at, lines[reader.below(len(lines))])
        elif op == 2:
            lines.insert(at, reader.choice(LINES))
        elif op == 3 and lines:
            i = min(at, len(lines) - 1)
            lines[i] = lines[i][: reader.below(len(lines[i]) + 1)] + reader.text(24)
        elif op == 4:
            # copy an m-section (with its mid, or another) several times: many m-lines
            starts = [i for i, line in enumerate(lines) if line.startswith("m=")]
            if starts:
                first = reader.choice(starts)
                end = next((i for i in starts if i > first), len(lines))
                section = lines[first:end]
                for copy in range(reader.below(40)):
                    renamed = [
                        f"a=mid:{copy + 10}"
                        if line.startswith("a=mid:") and reader.flag()
                        else line
                        for line in section
                    ]
                    lines.extend(renamed)
        elif op == 5 and lines:
            i = min(at, len(lines) - 1)
            key, _, _ = lines[i].partition(":")
            lines[i] = key + ":" + reader.text(32)
        elif op == 6:
            lines.insert(at, reader.text(48))
    return ("\r\n" if reader.flag() else "\n").join(lines)


def check_sdp(text: str, kind: sdp_check.Kind) -> None:
    try:
        bridge.parse_sdp(text, kind)
    except ValueError as exc:
        assert str(exc), "an empty error message"
        assert exc.__cause__ is None, (
            f"sdp_check accepted what aiortc cannot parse: {exc.__cause__!r}"
        )
        return
    lines = bridge.offered_m_lines(text)
    described = sdp_simulcast.receivable(text)
    assert {m.mid for m in lines} >= set(described), (lines, described)
    for mline in described.values():
        assert len(mline.layers) <= sdp_simulcast.MAX_LAYERS
    bridge._bundle_setup(text)
    bridge._bundle_candidates(text)
    bridge.ice_credentials(text)
    assert len(sdp_check.mids(text)) == len(lines)


def run(data: bytes) -> None:
    reader = Reader(data)
    mode = reader.uint()
    kind: sdp_check.Kind = "answer" if mode & 1 else "offer"
    if mode < 16:
        check_sdp(reader.rest().decode("utf-8", errors="replace"), kind)
    else:
        check_sdp(mutate(SAMPLES[mode % len(SAMPLES)], reader), kind)


def seeds() -> list[bytes]:
    return [bytes([16 + i]) for i in range(len(SAMPLES) * 2)] + [b"\x00" + AIORTC_OFFER.encode()]
