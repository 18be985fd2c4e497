"""sfu.media.sdp_check (and sdp_attributes): real stacks pass, broken SDP gets one sentence."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from sfu.media.aiortc_bridge import SUPPORTED_CODECS
from sfu.media.sdp_check import InvalidSdp, Kind, check_description, mids
from tests.unit.sdp_samples import AIORTC_ANSWER, AIORTC_OFFER, CHROMIUM_OFFER

Edit = Callable[[str], str]


def sub(pattern: str, replacement: str, count: int = 0) -> Edit:
    """An edit of one sample: ``re.sub`` with ^ and $ at line ends, lines ending in \\n."""

    def edit(sdp: str) -> str:
        lines = sdp.replace("\r\n", "\n")
        changed = re.sub(pattern, replacement, lines, count=count, flags=re.MULTILINE)
        assert changed != lines, f"{pattern} changed nothing"
        return changed.replace("\n", "\r\n")

    return edit


def drop(prefix: str) -> Edit:
    return sub(rf"^{re.escape(prefix)}.*\n", "")


def session_level(sdp: str) -> str:
    """The ICE and DTLS attributes said once at session level instead of in each m-line."""
    moved = [
        line
        for line in dict.fromkeys(sdp.split("\r\n"))
        if line.startswith(("a=ice-ufrag", "a=ice-pwd", "a=fingerprint", "a=setup"))
    ]
    kept = [line for line in sdp.split("\r\n") if line not in moved]
    first = next(i for i, line in enumerate(kept) if line.startswith("m="))
    return "\r\n".join(kept[:first] + moved + kept[first:])


#: a transceiver Chromium stopped: port 0, left out of BUNDLE, everything else kept
STOPPED_SECTION = (
    "m=audio 0 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:87DE\r\n"
    "a=ice-pwd:FB2/wBKLkNDcQLOuY4eXKSWE\r\n"
    "a=fingerprint:sha-256 72:C1:09:CB:89:07:47:91:64:00:1A:03:9B:D3:92:FC:46:08:F5:08:63:85:"
    "A8:42:E4:3A:AB:DD:69:C3:27:F9\r\na=setup:actpass\r\na=mid:2\r\na=inactive\r\n"
    "a=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n"
)
DATA_CHANNEL = (
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n"
    "a=ice-ufrag:87DE\r\na=ice-pwd:FB2/wBKLkNDcQLOuY4eXKSWE\r\n"
    "a=fingerprint:sha-256 72:C1:09:CB:89:07:47:91:64:00:1A:03:9B:D3:92:FC:46:08:F5:08:63:85:"
    "A8:42:E4:3A:AB:DD:69:C3:27:F9\r\na=setup:actpass\r\na=mid:2\r\na=sctp-port:5000\r\n"
    "a=max-message-size:262144\r\n"
)
GOOD: list[tuple[str, str, Kind]] = [
    ("chromium-offer", CHROMIUM_OFFER, "offer"),
    ("aiortc-offer", AIORTC_OFFER, "offer"),
    ("aiortc-answer", AIORTC_ANSWER, "answer"),
    ("lf-line-ends", CHROMIUM_OFFER.replace("\r\n", "\n"), "offer"),
    ("trailing-blank-line", AIORTC_OFFER + "\r\n", "offer"),
    ("session-level-transport", session_level(AIORTC_OFFER), "offer"),
    ("stopped-transceiver", CHROMIUM_OFFER + STOPPED_SECTION, "offer"),
    ("data-channel", sub("BUNDLE 0 1", "BUNDLE 0 1 2")(CHROMIUM_OFFER) + DATA_CHANNEL, "offer"),
    ("offer-setup-active", AIORTC_OFFER.replace("a=setup:actpass", "a=setup:active"), "offer"),
    (
        "tcp-candidate",
        AIORTC_OFFER.replace(
            "a=end-of-candidates",
            "a=candidate:2 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active\r\n"
            "a=end-of-candidates",
        ),
        "offer",
    ),
]


@pytest.mark.parametrize(("sdp", "kind"), [g[1:] for g in GOOD], ids=[g[0] for g in GOOD])
def test_what_real_stacks_send_passes(sdp: str, kind: Kind) -> None:
    check_description(sdp, kind, SUPPORTED_CODECS)


A, C = AIORTC_OFFER, CHROMIUM_OFFER
BAD: list[tuple[str, str, Edit, str]] = [
    # the defects reported in issue 8, item 5
    ("no-fingerprint", A, drop("a=fingerprint:"), "m=audio section 1 (mid 0): no a=fingerprint"),
    (
        "huge-port",
        C,
        sub("^m=video 9 ", "m=video 99999999999 "),
        "m=video section 2 (mid 1): port 99999999999 is out of range 0-65535",
    ),
    (
        "transport-foo-bar",
        C,
        sub("UDP/TLS/RTP/SAVPF", "FOO/BAR", 1),
        "m=audio section 1 (mid 0): transport 'FOO/BAR' is not supported",
    ),
    # lines
    ("v=1", A, sub("^v=0", "v=1"), "an SDP must start with the line v=0"),
    ("v-not-first", A, sub("^v=0\n(o=[^\n]*)", r"\1\nv=0"), "must start with the line v=0"),
    ("v-twice", A, sub("^s=-", "s=-\nv=0"), "the SDP has more than one v= line"),
    ("no-o-line", A, drop("o="), "the SDP has no o= line"),
    ("unknown-line-type", A, sub("^s=-", "s=-\nx=foo"), "x= is not an SDP line type"),
    (
        "t-in-media",
        A,
        sub("^a=rtcp-mux", "a=rtcp-mux\nt=0 0", 1),
        "m=audio section 1 (mid 0): t= is not allowed in an m= section",
    ),
    ("no-equals", A, sub("^s=-", "s=-\nhello"), "line 4 'hello' is not <letter>=<value>"),
    ("control-char", A, sub("^s=-", "s=-\x0b"), "line 3 contains the control character U+000B"),
    ("no-media", A, lambda s: s[: s.index("m=")], "the SDP has no m= section"),
    (
        "bad-c-line",
        A,
        sub("^c=IN IP4 127.0.0.1", "c=IN IP4", 1),
        "m=audio section 1 (mid 0): c=IN IP4: expected IN IP4|IP6 <address>",
    ),
    # m= lines
    ("port-word", C, sub("^m=audio 9 ", "m=audio nine "), "port 'nine' is not a number"),
    ("port-count", C, sub("^m=audio 9 ", "m=audio 9/2 "), "a port count (9/2) is not supported"),
    ("port-5000-digits", C, sub("^m=audio 9 ", "m=audio " + "9" * 5000 + " "), "is out of range"),
    ("double-space", C, sub("^m=audio 9 ", "m=audio  9 "), "separated by single spaces"),
    (
        "no-formats",
        A,
        sub("^m=audio ([0-9]+) UDP/TLS/RTP/SAVPF .*$", r"m=audio \1 RTP/SAVPF"),
        "must be <media> <port> <transport> <format>",
    ),
    ("plain-rtp", C, sub("UDP/TLS/RTP/SAVPF", "RTP/AVP", 1), "'RTP/AVP' is not encrypted"),
    ("media-text", C, sub("^m=video", "m=text"), "media type 'text' is not supported"),
    ("pt-300", A, sub("^(m=audio .*) 8$", r"\1 300"), "payload type 300 is out of range 0-127"),
    ("pt-72", A, sub("^(m=audio .*) 8$", r"\1 72"), "payload type 72 collides with RTCP"),
    ("pt-word", A, sub("^(m=audio .*) 8$", r"\1 eight"), "payload type 'eight' is not a number"),
    (
        "sctp-transport",
        C,
        lambda s: s + DATA_CHANNEL.replace("UDP/DTLS/SCTP", "SCTP"),
        "m=application section 3 (mid 2): transport 'SCTP' is not one of",
    ),
    # ICE and DTLS
    ("no-ice-ufrag", A, drop("a=ice-ufrag:"), "m=audio section 1 (mid 0): no a=ice-ufrag"),
    ("no-ice-pwd", C, drop("a=ice-pwd:"), "no a=ice-pwd (RFC 8839 §5.4)"),
    (
        "short-ice-pwd",
        A,
        sub("^a=ice-pwd:.*$", "a=ice-pwd:short"),
        "a=ice-pwd:short: must be 22-256 characters",
    ),
    ("ufrag-space", A, sub("^a=ice-ufrag:.*$", "a=ice-ufrag:ab cd"), "must be 4-256 characters"),
    (
        "sha-1-only",
        C,
        sub("^a=fingerprint:sha-256", "a=fingerprint:sha-1"),
        "no a=fingerprint with sha-256, sha-384, sha-512",
    ),
    (
        "short-fingerprint",
        C,
        sub("^(a=fingerprint:sha-256 ..:..):.*$", r"\1"),
        "a sha-256 fingerprint has 32 bytes",
    ),
    (
        "fingerprint-not-hex",
        C,
        sub("^a=fingerprint:.*$", "a=fingerprint:sha-256 zz"),
        "expected <hash function> <hex bytes separated by colons>",
    ),
    (
        "fingerprint-no-value",
        C,
        sub("^a=fingerprint:.*$", "a=fingerprint"),
        "a=fingerprint needs a value",
    ),
    ("no-setup", A, drop("a=setup:"), "m=audio section 1 (mid 0): no a=setup"),
    (
        "setup-holdconn",
        C,
        sub("^a=setup:actpass", "a=setup:holdconn"),
        "a=setup:holdconn: the DTLS role must be actpass, active or passive",
    ),
    (
        "answer-actpass",
        AIORTC_ANSWER,
        sub("^a=setup:active", "a=setup:actpass"),
        "a=setup:actpass in an answer must be active or passive",
    ),
    (
        "session-setup-bad",
        A,
        sub("^t=0 0", "t=0 0\na=setup:later"),
        "session level: a=setup:later: the DTLS role",
    ),
    # BUNDLE, mids, rtcp-mux
    (
        "no-bundle",
        C,
        drop("a=group:BUNDLE"),
        "m=audio section 1 (mid 0): not in a=group:BUNDLE; the server has one transport",
    ),
    ("half-bundle", C, sub("BUNDLE 0 1", "BUNDLE 0"), "m=video section 2 (mid 1): not in"),
    (
        "bundle-unknown-mid",
        C,
        sub("BUNDLE 0 1", "BUNDLE 0 1 7"),
        "a=group:BUNDLE names mid '7', which no m-line has",
    ),
    (
        "two-bundles",
        C,
        sub("^a=group:BUNDLE 0 1", "a=group:BUNDLE 0\na=group:BUNDLE 1"),
        "more than one a=group:BUNDLE",
    ),
    ("bundle-tag-port-0", C, sub("^m=audio 9 ", "m=audio 0 "), "its first mid '0' has port 0"),
    ("no-mid", A, drop("a=mid:0"), "m=audio section 1: no a=mid"),
    (
        "duplicate-mid",
        A,
        sub("^a=mid:1", "a=mid:0"),
        "m=video section 2 (mid 0): mid '0' is also used by section 1",
    ),
    ("mid-space", A, sub("^a=mid:1", "a=mid:1 2"), "mid '1 2' must be 1-64 token characters"),
    ("no-rtcp-mux", C, drop("a=rtcp-mux"), "m=audio section 1 (mid 0): no a=rtcp-mux"),
    # codecs and RTP attributes
    (
        "no-usable-codec",
        A,
        sub("(VP8|H264)/90000", "H265/90000"),
        "m=video section 2 (mid 1): no a=rtpmap for a codec the server supports (H264/90000, VP8/9",
    ),
    (
        "rtpmap-huge-clock",
        A,
        sub("opus/48000/2", "opus/480000000000/2"),
        "a=rtpmap:96 opus/480000000000/2: clock rate 480000000000 is out of range",
    ),
    (
        "rtpmap-unlisted",
        A,
        sub("^a=rtpmap:8 ", "a=rtpmap:18 "),
        "payload type '18' is not listed on the m= line",
    ),
    (
        "rtpmap-no-clock",
        A,
        sub("^a=rtpmap:8 PCMA/8000", "a=rtpmap:8 PCMA"),
        "expected <payload type> <encoding>/<clock rate>[/<channels>]",
    ),
    ("fmtp-no-rtpmap", A, sub("^a=fmtp:98 ", "a=fmtp:9 ", 1), "payload type '9' has no"),
    ("fmtp-bad-int", C, sub("minptime=10", "minptime=ten"), "minptime 'ten' is not a number"),
    ("fmtp-no-params", A, sub("^a=fmtp:98 apt=97", "a=fmtp:98"), "expected <payload type> <par"),
    ("rtcp-fb-short", A, sub("^a=rtcp-fb:97 nack$", "a=rtcp-fb:97", 1), "<feedback type>"),
    (
        "extmap-attributes",
        A,
        sub("sdes:mid$", "sdes:mid foo", 1),
        "extension attributes are not supported",
    ),
    ("extmap-id-300", A, sub("^a=extmap:2 ", "a=extmap:300 "), "extension id 300 is out of"),
    (
        "ssrc-huge",
        A,
        sub("^a=ssrc:1572530840 ", "a=ssrc:99999999999 "),
        "SSRC 99999999999 is out of range 0-4294967295",
    ),
    (
        "ssrc-no-value",
        A,
        sub("^a=ssrc:1572530840 cname:.*$", "a=ssrc:1572530840 cname"),
        "expected <ssrc> <attribute>:<value>",
    ),
    (
        "ssrc-group-word",
        A,
        sub("^a=ssrc-group:FID .*$", "a=ssrc-group:FID one two"),
        "SSRC 'one' is not a number",
    ),
    ("rtcp-port", A, sub("^a=rtcp:9 ", "a=rtcp:70000 ", 1), "port 70000 is out of range"),
    (
        "candidate-garbage",
        A,
        sub("^a=candidate:.*$", "a=candidate:garbage", 1),
        "m=audio section 1 (mid 0): a=candidate:garbage: candidate 'garbage' has 1 field",
    ),
    (
        "candidate-port",
        A,
        sub("127.0.0.1 ([0-9]+) typ", r"127.0.0.1 123456 typ", 1),
        "port 123456 is out of range",
    ),
    (
        "msid-semantic-empty",
        A,
        sub("^a=msid-semantic:.*$", "a=msid-semantic:"),
        "expected <semantics>",
    ),
]


@pytest.mark.parametrize(
    ("sample", "edit", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_broken_sdp_gets_one_precise_sentence(sample: str, edit: Edit, message: str) -> None:
    kind: Kind = "answer" if sample is AIORTC_ANSWER else "offer"
    with pytest.raises(InvalidSdp) as raised:
        check_description(edit(sample), kind, SUPPORTED_CODECS)
    text = str(raised.value)
    assert message in text
    for python in ("Error(", "NoneType", "Traceback", "\\x", "\n"):
        assert python not in text
    assert len(text) < 400


def test_codecs_are_checked_only_when_given() -> None:
    edited = sub("(VP8|H264)/90000", "H265/90000")(AIORTC_OFFER)
    check_description(edited, "offer")
    with pytest.raises(InvalidSdp):
        check_description(edited, "offer", SUPPORTED_CODECS)


def test_mids() -> None:
    assert mids(AIORTC_OFFER) == ["0", "1"]
    assert mids(CHROMIUM_OFFER + STOPPED_SECTION) == ["0", "1", "2"]
    assert mids("v=0\r\nm=audio 9 RTP/SAVPF 0\r\n") == [None]
