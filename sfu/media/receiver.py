"""A published track as the media plane holds it: its incoming streams and its down-tracks.

Without simulcast a track is one stream (:class:`~sfu.media.layer.LayerReceiver`); with simulcast
(RFC 8853) one per layer, each on its own SSRC, routed here by rid (RFC 8852). Every down-track
forwards one layer at a time: which one is the subscriber's layer selection's business; where it
waits and when it moves is the down-track's (:mod:`sfu.media.downtrack`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from sfu.api import TrackInfo
from sfu.media.layer import LayerReceiver, Upstream
from sfu.media.params import Codec, MediaParams
from sfu.media.reports import PublisherClock

if TYPE_CHECKING:
    from sfu.media.allocation import PublisherSide
    from sfu.media.downtrack import DownTrack


class TrackReceiver:
    """One published track: one stream in, or one per simulcast layer; down-tracks out."""

    def __init__(
        self,
        info: TrackInfo,
        params: MediaParams,
        upstream: Upstream,
        keyframe_min_interval: float,
        publisher_clock: PublisherClock,
        retransmission_window: float = 1.0,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        codec = params.primary
        if codec is None:
            raise ValueError(f"m-line {params.mid} negotiated no codec")
        self.info = info
        self.params = params
        self.codec: Codec = codec
        self.is_video = info.kind == "video"
        self.down_tracks: list[DownTrack] = []  # every subscriber's, whatever layer it forwards
        self.closed = False
        #: muted by the operator: forwarded to no one, whatever the publisher sends
        self.blocked = False
        #: measurements and wanted layers (video; set by the publisher's connection)
        self.publisher_side: PublisherSide | None = None
        self._clock = clock

        def layer(rid: str | None, ssrc: int | None) -> LayerReceiver:
            return LayerReceiver(
                self,
                params,
                upstream,
                keyframe_min_interval,
                publisher_clock,
                retransmission_window,
                wall_clock,
                clock,
                rid=rid,
                ssrc=ssrc,
            )

        #: the incoming streams, in the order of the publisher's a=simulcast line (not by size)
        self.layers: tuple[LayerReceiver, ...]
        if params.rids:
            # each layer's SSRC is learned from the rid extension (a declared SSRC names no rid)
            self.layers = tuple(layer(rid, None) for rid in params.rids)
        else:
            self.layers = (layer(None, params.remote_ssrcs[0] if params.remote_ssrcs else None),)

    @property
    def simulcast(self) -> bool:
        return bool(self.params.rids)

    def layer(self, rid: str) -> LayerReceiver | None:
        for layer in self.layers:
            if layer.rid == rid:
                return layer
        return None

    def update(self, params: MediaParams) -> None:
        """Take what the latest negotiation settled (a peer may renumber payload types)."""
        codec = params.primary
        if codec is None or not codec.same_format(self.codec):
            return  # a codec change on a published m-line: keep forwarding what we know
        self.params = params
        self.codec = codec
        for layer in self.layers:
            layer.update(params)

    # --- subscribers ---

    def add_down_track(self, down_track: DownTrack) -> None:
        """A new subscriber: it waits for the first layer that can start it (see
        :meth:`default_layer`), until its layer selection says otherwise."""
        self.down_tracks.append(down_track)
        down_track.set_layer(None if self.blocked else self.default_layer(), self._clock())

    def block(self, blocked: bool) -> None:
        """Forward nothing of this track (or again): audio here; video through each subscriber's
        layer allocation, which pauses a blocked track (its caller runs them)."""
        self.blocked = blocked
        if self.publisher_side is None:
            now = self._clock()
            for down_track in self.down_tracks:
                down_track.set_layer(None if blocked else self.default_layer(), now)

    def remove_down_track(self, down_track: DownTrack) -> None:
        if down_track in self.down_tracks:
            self.down_tracks.remove(down_track)
        for layer in self.layers:
            layer.detach(down_track)

    def default_layer(self) -> LayerReceiver:
        """The layer a subscriber starts on: the largest one that sends, as far as we know."""
        if len(self.layers) == 1:
            return self.layers[0]
        return max(self.layers, key=_size)

    def request_keyframe(self, now: float) -> None:
        """Every subscriber of this track needs a keyframe: asked of the layers they use
        (a subscriber connected: its down-track waits to start)."""
        for layer in self.layers:
            if layer.down_tracks or layer.waiting:
                layer.request_keyframe(now, "start")

    def close(self) -> None:
        self.closed = True
        for down_track in list(self.down_tracks):
            down_track.close()
        self.down_tracks.clear()
        for layer in self.layers:
            layer.close()


def _size(layer: LayerReceiver) -> tuple[int, int]:
    width, height = layer.frame_size or (0, 0)
    return width * height, layer.bytes_received
