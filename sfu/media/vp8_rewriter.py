"""VP8 payload descriptor rewriting for one outgoing stream (RFC 7741 §4.2).

A subscriber's decoder must see one VP8 stream even though what the SFU forwards on it changes:
a simulcast layer switch (RFC 8853), a new publisher on a reused m-line, temporal layers the
SFU stops or starts forwarding. Each source numbers its own pictures, base-layer frames
(TL0PICIDX) and keyframes (KEYIDX); :class:`Vp8Rewriter` maps them onto one run per field, as
``sfu.media.munger.RtpMunger`` does for sequence numbers and timestamps, and decides which
temporal layers pass.

Picture ids of dropped frames are compacted: a frame the rewriter drops while it is the newest
takes no picture id, the next kept frame gets the id after the last kept one. libwebrtc's VP8
reference finder (modules/video_coding/rtp_vp8_ref_finder.cc) records every picture id it
skips as "not yet received" and holds back (stashes) each frame above the base layer that
references a frame from before such a gap, until the gap fills or falls 100 pictures behind:
with the ids of dropped TL2 frames left as gaps, every kept TL1 frame would wait there. Only the
SFU's own drops are compacted; a frame lost upstream keeps its gap, so the subscriber knows
something is missing and asks for it. TL0PICIDX needs no compaction (base-layer frames are
never dropped) and KEYIDX none (keyframes are base layer).

Switching sources: the new source's first packet is the first of a keyframe; its picture id,
TL0PICIDX and KEYIDX continue at one past the newest ones sent (a keyframe is a new picture, a
new base-layer frame and a new keyframe), whether or not the old source's last frame was
complete: its missing packets never come, and the keyframe replaces it. Within a source each
field is the incoming one plus an offset, so a reordered or retransmitted packet gets the value
it had or would have had. Each outgoing field keeps the width of the incoming one (the
descriptor is rewritten in place): a source with 7-bit picture ids after one with 15-bit ids
continues modulo 128. A keyframe more than PICTURE_HISTORY pictures from the newest one is
taken as a new source too: the publisher's encoder restarted its numbering on the same SSRC.

Temporal layers (TID): a frame above ``max_temporal_layer`` is dropped. Going down takes effect
at the next frame; going up one layer at a time, at a frame of that layer with the layer-sync
bit (Y: it references only the base layer, so the subscriber can start decoding the layer
there) or at once at a keyframe. Frames without TID always pass. Decisions are per picture: a
frame's packets are all kept or all dropped, even when they arrive out of order. A picture first
seen after newer ones (lost upstream, then resent) passes if its layer does; if not, its id
stays a gap, since later pictures already have theirs. Without picture ids nothing is compacted
and the layer moves only at a packet that starts a frame.

Clock-free: the caller feeds the packets of the current source alone (the SSRC tells), calls
:meth:`Vp8Rewriter.switch_source` before the first packet of a new one, and drops from the
munger (``RtpMunger.drop``) what :meth:`Vp8Rewriter.forward` refuses. A retransmission asks
:meth:`Vp8Rewriter.resend` for the values its packet was sent with.
"""

from __future__ import annotations

from bisect import bisect_left

from sfu.rtp.vp8 import Vp8Descriptor

#: TID is two bits: with this as the maximum every temporal layer passes.
MAX_TEMPORAL_LAYER = 3
#: Pictures kept track of behind the newest (a power of two): an older one is refused. More
#: than the receiver's own window (libwebrtc forgets missing pictures 100 behind) and than a
#: second of video, the longest a NACKed packet is kept upstream.
PICTURE_HISTORY = 128

# per picture, in the ring of the last PICTURE_HISTORY
_UNSEEN = 0
_KEPT = 1
_DROPPED = 2


class Vp8Rewriter:
    """Maps each packet's (picture id, TL0PICIDX, KEYIDX) to the outgoing ones, or drops it."""

    __slots__ = (
        "_cached",
        "_cached_for",
        "_decisions",
        "_drops",
        "_key_last",
        "_key_newest",
        "_key_offset",
        "_layer",
        "_pid_last",
        "_pid_newest",
        "_pid_offset",
        "_pid_start",
        "_started",
        "_tl0_last",
        "_tl0_newest",
        "_tl0_offset",
        "max_temporal_layer",
    )

    def __init__(self, max_temporal_layer: int = MAX_TEMPORAL_LAYER) -> None:
        #: the highest temporal layer the subscriber wants
        self.max_temporal_layer = max_temporal_layer
        self._layer = max_temporal_layer  # the highest one forwarded now
        self._started = False
        # the newest outgoing value of each field sent for earlier sources (extended), or None
        self._pid_last: int | None = None
        self._tl0_last: int | None = None
        self._key_last: int | None = None
        # current source: newest incoming value (extended, None before the first), offset
        self._pid_newest: int | None = None
        self._pid_offset = 0
        self._pid_start = 0
        self._tl0_newest: int | None = None
        self._tl0_offset = 0
        self._key_newest: int | None = None
        self._key_offset = 0
        self._drops: list[int] = []  # extended picture ids dropped while newest, ascending
        self._decisions = bytearray(PICTURE_HISTORY)  # _UNSEEN/_KEPT/_DROPPED by picture id
        # a kept picture's values never change within a source, and most packets are more of a
        # picture just seen: the last result, by the descriptor fields it came from
        self._cached_for: tuple[object, ...] | None = None
        self._cached: tuple[int, int, int] = (-1, -1, -1)

    def snapshot(self) -> Vp8Rewriter:
        """A copy of this state, for :meth:`resend` of the current source's packets after a
        switch to another one (a layer switch: NACKs of the layer left still come in)."""
        copy = Vp8Rewriter.__new__(Vp8Rewriter)
        for name in self.__slots__:
            setattr(copy, name, getattr(self, name))
        copy._drops = list(self._drops)
        copy._decisions = bytearray(self._decisions)
        return copy

    @property
    def temporal_layer(self) -> int:
        """The highest temporal layer forwarded now."""
        return self._layer

    def switch_source(self) -> None:
        """The next packet is the first of a keyframe of a new source."""
        if self._pid_newest is not None:
            self._pid_last = self._pid_newest + self._pid_offset
        if self._tl0_newest is not None:
            self._tl0_last = self._tl0_newest + self._tl0_offset
        if self._key_newest is not None:
            self._key_last = self._key_newest + self._key_offset
        self._pid_newest = self._tl0_newest = self._key_newest = None
        self._drops.clear()
        self._layer = self.max_temporal_layer
        self._started = True
        self._cached_for = None

    def forward(self, d: Vp8Descriptor) -> tuple[int, int, int] | None:
        """(picture id, TL0PICIDX, KEYIDX) to write into a packet to send, or None to drop it.

        -1 for a field the packet does not carry; each value in the packet's own width. For a
        retransmission, :meth:`resend`.
        """
        key = d[:6]  # picture id, its width, TL0PICIDX, TID, Y, KEYIDX
        if key == self._cached_for and not d.keyframe:
            return self._cached
        if not self._started:
            self.switch_source()  # the very first packet starts the first source
        pid = d.picture_id
        if pid < 0:
            out_pid = -1
            if d.start_of_partition and d.partition_index == 0:
                self._next_frame(d)
            if d.tid > self._layer:
                return None
        else:
            newest = self._pid_newest
            if newest is None:
                ext = self._first_picture(pid)
                diff = 1
            else:
                mask = 0x7FFF if d.long_picture_id else 0x7F
                diff = (pid - newest) & mask
                if diff > mask >> 1:
                    diff -= mask + 1
                ext = newest + diff
            decisions = self._decisions
            slot = ext & (PICTURE_HISTORY - 1)
            if diff == 0:  # another packet of the newest picture: most packets
                if decisions[slot] != _KEPT:
                    return None
                if d.keyframe:  # its first packet came late: a keyframe syncs every layer
                    self._layer = self.max_temporal_layer
                out_pid = ext + self._pid_offset
            elif diff > 0:
                if diff >= PICTURE_HISTORY and d.keyframe:
                    return self._restart(d)
                keep = self._next_frame(d)
                if diff > 1 and newest is not None:
                    self._skip_to(ext, newest)
                self._pid_newest = ext
                if not keep:
                    decisions[slot] = _DROPPED
                    self._dropped(ext)
                    return None
                decisions[slot] = _KEPT
                out_pid = ext + self._pid_offset
            else:
                assert newest is not None
                if newest - ext >= PICTURE_HISTORY:
                    return self._restart(d) if d.keyframe else None
                if ext < self._pid_start:
                    return None
                decision = decisions[slot]
                if decision == _UNSEEN:  # first seen after newer ones: cannot be compacted
                    decision = _KEPT if d.tid <= self._layer else _DROPPED
                    decisions[slot] = decision
                if decision != _KEPT:
                    return None
                drops = self._drops
                # later drops shrank the offset after this picture's turn: add them back
                out_pid = ext + self._pid_offset + len(drops) - bisect_left(drops, ext)
            out_pid &= 0x7FFF if d.long_picture_id else 0x7F
        tl0 = d.tl0picidx
        if tl0 >= 0:
            tl0 = self._map_tl0(tl0)
        keyidx = d.keyidx
        if keyidx >= 0:
            keyidx = self._map_keyidx(keyidx)
        result = out_pid, tl0, keyidx
        if pid >= 0:
            self._cached_for, self._cached = key, result
        return result

    def resend(self, d: Vp8Descriptor) -> tuple[int, int, int] | None:
        """The values a packet already forwarded was sent with, for a retransmission; None if
        it was not forwarded (or is too old to tell). Changes nothing."""
        if not self._started:
            return None
        pid = d.picture_id
        out_pid = -1
        if pid >= 0:
            newest = self._pid_newest
            if newest is None:
                return None
            mask = 0x7FFF if d.long_picture_id else 0x7F
            diff = (pid - newest) & mask
            if diff > mask >> 1:
                diff -= mask + 1
            ext = newest + diff
            if (
                diff > 0
                or -diff >= PICTURE_HISTORY
                or ext < self._pid_start
                or self._decisions[ext & (PICTURE_HISTORY - 1)] != _KEPT
            ):
                return None
            drops = self._drops
            out_pid = (ext + self._pid_offset + len(drops) - bisect_left(drops, ext)) & mask
        tl0 = d.tl0picidx
        if tl0 >= 0:
            tl0 = (tl0 + self._tl0_offset) & 0xFF
        keyidx = d.keyidx
        if keyidx >= 0:
            keyidx = (keyidx + self._key_offset) & 0x1F
        return out_pid, tl0, keyidx

    def drop(self, d: Vp8Descriptor) -> None:
        """The caller will not send the picture ``d`` belongs to; later ones close the gap.

        Only a picture newer than any seen can be taken back this way (once a packet of a
        picture is sent, its id is used).
        """
        if not self._started or d.picture_id < 0 or self._pid_newest is None:
            return
        newest = self._pid_newest
        mask = 0x7FFF if d.long_picture_id else 0x7F
        diff = (d.picture_id - newest) & mask
        if diff == 0 or diff > mask >> 1:
            return
        ext = newest + diff
        if diff > 1:
            self._skip_to(ext, newest)
        self._pid_newest = ext
        self._decisions[ext & (PICTURE_HISTORY - 1)] = _DROPPED
        self._dropped(ext)

    # --- helpers ---

    def _restart(self, d: Vp8Descriptor) -> tuple[int, int, int] | None:
        """A keyframe whose picture id is far from the newest: the publisher's encoder
        restarted (same SSRC, new numbering). Taken as a new source, so ids stay continuous
        (else every later picture would look too old and be refused)."""
        self.switch_source()
        return self.forward(d)

    def _next_frame(self, d: Vp8Descriptor) -> bool:
        """Move the forwarded temporal layer at a new frame; whether that frame is kept."""
        tid = d.tid
        wanted = self.max_temporal_layer
        layer = self._layer
        if d.keyframe or wanted < layer:  # a keyframe syncs every layer; down at once
            layer = wanted
        elif tid == layer + 1 and tid <= wanted and d.layer_sync:
            layer = tid
        self._layer = layer
        return tid <= layer

    def _first_picture(self, pid: int) -> int:
        """Start the current source's picture ids at ``pid`` (extended: ``pid`` itself)."""
        last = self._pid_last
        self._pid_offset = 0 if last is None else last + 1 - pid
        self._pid_start = pid
        return pid

    def _skip_to(self, ext: int, newest: int) -> None:
        """Forget what the ring knew of the pictures between ``newest`` and ``ext``."""
        decisions = self._decisions
        if ext - newest > PICTURE_HISTORY:
            decisions[:] = bytes(PICTURE_HISTORY)
            return
        for skipped in range(newest + 1, ext):
            decisions[skipped & (PICTURE_HISTORY - 1)] = _UNSEEN

    def _dropped(self, ext: int) -> None:
        self._pid_offset -= 1
        drops = self._drops
        drops.append(ext)
        oldest = ext - PICTURE_HISTORY
        if drops[0] <= oldest:
            del drops[: bisect_left(drops, oldest + 1)]

    def _map_tl0(self, tl0: int) -> int:
        newest = self._tl0_newest
        if newest is None:
            last = self._tl0_last
            self._tl0_offset = 0 if last is None else last + 1 - tl0
            self._tl0_newest = tl0
        else:
            diff = (tl0 - newest) & 0xFF
            if 0 < diff < 0x80:
                self._tl0_newest = newest + diff
        return (tl0 + self._tl0_offset) & 0xFF

    def _map_keyidx(self, keyidx: int) -> int:
        newest = self._key_newest
        if newest is None:
            last = self._key_last
            self._key_offset = 0 if last is None else last + 1 - keyidx
            self._key_newest = keyidx
        else:
            diff = (keyidx - newest) & 0x1F
            if 0 < diff < 0x10:
                self._key_newest = newest + diff
        return (keyidx + self._key_offset) & 0x1F
