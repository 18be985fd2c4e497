"""Keyframe detection from the first bytes of an RTP payload, per codec.

- VP8: RFC 7741 §4.2 (payload descriptor) and §4.3 (payload header, P bit = inverse key frame).
- H.264: RFC 6184 §5.6-5.8 (single NAL unit, STAP-A, FU-A); IDR slice (5) or SPS (7) starts a
  keyframe, since browsers send SPS/PPS right before the IDR.
- VP9: RFC 9628 (draft-ietf-payload-vp9) §4.2: B (start of frame) set, P (inter-picture
  predicted) clear. This holds for every spatial layer of a key picture, not only layer 0.

Truncated payloads are never keyframes; nothing here raises.
"""

from __future__ import annotations

_H264_KEY_NALS = frozenset((5, 7))
_H264_STAP_A = 24
_H264_FU_A = 28


def _vp8_keyframe(p: bytes | memoryview) -> bool:
    size = len(p)
    if size < 1:
        return False
    b0 = p[0]
    # S=1 and PID=0: the first packet of a frame's first partition (R, 0x08, is ignored: RFC
    # 7741 §4.2, and sfu.rtp.vp8.parse_descriptor ignores it too)
    if b0 & 0x17 != 0x10:
        return False
    pos = 1
    if b0 & 0x80:  # X: extension byte with I/L/T/K
        if size < 2:
            return False
        x = p[1]
        pos = 2
        if x & 0x80:  # I: picture id, 15 bits when M is set
            if size <= pos:
                return False
            pos += 2 if p[pos] & 0x80 else 1
        if x & 0x40:  # L: TL0PICIDX
            pos += 1
        if x & 0x30:  # T or K: TID/Y/KEYIDX byte
            pos += 1
    return size > pos and not p[pos] & 0x01


def _h264_keyframe(p: bytes | memoryview) -> bool:
    size = len(p)
    if size < 1:
        return False
    nal_type = p[0] & 0x1F
    if nal_type == _H264_STAP_A:
        pos = 1
        while pos + 2 < size:
            if p[pos + 2] & 0x1F in _H264_KEY_NALS:
                return True
            pos += 2 + ((p[pos] << 8) | p[pos + 1])
        return False
    if nal_type == _H264_FU_A:
        # FU header: S E R type
        return size >= 2 and bool(p[1] & 0x80) and p[1] & 0x1F in _H264_KEY_NALS
    return nal_type in _H264_KEY_NALS


def _vp9_keyframe(p: bytes | memoryview) -> bool:
    size = len(p)
    if size < 1:
        return False
    b0 = p[0]  # I P L F B E V Z
    if b0 & 0x48 != 0x08:
        return False
    pos = 1
    if b0 & 0x80:  # I: picture id, 15 bits when M is set
        if size <= pos:
            return False
        pos += 2 if p[pos] & 0x80 else 1
    if b0 & 0x20:  # L: layer indices, plus TL0PICIDX in non-flexible mode
        pos += 1 if b0 & 0x10 else 2
    # with P=0 there are no P_DIFF bytes (flexible mode); the scalability structure (V) follows
    return size > pos


_DETECTORS = {"VP8": _vp8_keyframe, "H264": _h264_keyframe, "VP9": _vp9_keyframe}


def is_keyframe(codec: str, payload: bytes | memoryview) -> bool:
    """Whether ``payload`` (of a packet of ``codec``, e.g. "VP8") is the start of a keyframe."""
    detect = _DETECTORS.get(codec) or _DETECTORS.get(codec.upper())
    return detect is not None and detect(payload)
