"""What negotiation settled for one m-line, in our own terms (no aiortc types beyond this point)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sfu.api import Kind

URI_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
URI_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
URI_RID = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
URI_REPAIRED_RID = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
#: the transport-wide sequence number (draft-holmer-rmcat-transport-wide-cc-extensions-01 §2)
URI_TRANSPORT_CC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
#: the RTCP feedback that goes with it (a=rtcp-fb:PT transport-cc)
TRANSPORT_CC = "transport-cc"


@dataclass(frozen=True, slots=True)
class Codec:
    payload_type: int
    name: str  # "VP8", "opus", "H264" as in the SDP rtpmap
    clock_rate: int
    channels: int | None = None
    fmtp: Mapping[str, str] = field(default_factory=dict)
    rtx_payload_type: int | None = None
    feedback: tuple[str, ...] = ()  # "nack", "nack pli", "ccm fir", "goog-remb", ...

    def same_format(self, other: Codec) -> bool:
        """Whether packets of ``other`` can be forwarded as this codec (RFC 6184 §8.1 for H264)."""
        if self.name.lower() != other.name.lower() or self.clock_rate != other.clock_rate:
            return False
        if self.name.lower() == "h264":
            return _h264_key(self.fmtp) == _h264_key(other.fmtp)
        return True


def _h264_key(fmtp: Mapping[str, str]) -> tuple[str, str]:
    profile = fmtp.get("profile-level-id", "42001f").lower()
    # the level (last byte) may differ: a decoder at a higher level decodes lower levels
    return profile[:4], fmtp.get("packetization-mode", "0")


@dataclass(frozen=True, slots=True)
class MediaParams:
    """One negotiated m-line of a connection."""

    mid: str
    kind: Kind
    codecs: tuple[Codec, ...]
    extensions: Mapping[str, int]  # header-extension URI -> id
    local_ssrc: int  # the SSRC we send with on this m-line
    local_rtx_ssrc: int
    remote_ssrcs: tuple[int, ...] = ()  # a=ssrc of the remote side (media first)
    remote_rtx: Mapping[int, int] = field(default_factory=dict)  # rtx ssrc -> media ssrc (FID)
    msid: str | None = None  # the remote "stream track" ids
    #: simulcast layers the remote sends on this m-line and we agreed to receive, by rid, in
    #: the order of its a=simulcast line (RFC 8853 §5.1); empty: one stream, no simulcast.
    #: The order says nothing about the layers' sizes: they are measured (sfu.media.layer_meter).
    rids: tuple[str, ...] = ()

    @property
    def primary(self) -> Codec | None:
        return self.codecs[0] if self.codecs else None
