"""A participant: its peer connection, the tracks it publishes and the m-lines it receives on.

Negotiation runs both ways on the one connection. The client offers to publish or unpublish; the
server offers when the tracks this participant should receive change. The server is the polite
peer (RFC 8829 / perfect negotiation): a client offer that crosses a server offer wins — the server
rolls its offer back, answers, and offers again afterwards.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

import structlog
from aiortc.exceptions import InternalError, InvalidAccessError, InvalidStateError, OperationError

from sfu.api import (
    FULL_GRANTS,
    Answer,
    ConnectionQualityReport,
    Event,
    EventListener,
    Grants,
    InvalidSdp,
    InvalidState,
    LayerActivity,
    NotAllowed,
    OfferedTrack,
    PublishedTrack,
    PublisherLayers,
    ServerOffer,
    SessionClosed,
    SfuError,
    StreamState,
    TrackInfo,
    TrackSettings,
    UnknownTrack,
)
from sfu.config import MAX_CLIENT_MLINES, MediaConfig, sdp_limit
from sfu.counters import MediaTotals
from sfu.media import aiortc_bridge as bridge
from sfu.media.connection import MediaConnection
from sfu.media.downtrack import DownTrack, OutgoingStream
from sfu.media.params import Codec
from sfu.media.receiver import TrackReceiver
from sfu.media.vp8_downtrack import Vp8DownTrack

if TYPE_CHECKING:
    from sfu.room import Room

_NEGOTIATION_ERRORS = (
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    InternalError,
    InvalidAccessError,
    OperationError,
    InvalidStateError,
)


#: After a rejected answer the server offers again after this delay, doubled for each answer
#: rejected in a row; the session ends once this many answers in a row were rejected.
REOFFER_DELAY = 0.5
MAX_REJECTED_ANSWERS = 5


DEFAULT_SETTINGS = TrackSettings()


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(5)}"


class Subscription:
    """One m-line this participant receives on; reused for another track once freed."""

    __slots__ = ("codec", "down_track", "pending", "stream", "track", "transceiver")

    def __init__(self, transceiver: Any, codec: Codec) -> None:
        self.transceiver = transceiver
        #: the format the m-line was offered with: it can carry only tracks of this format
        self.codec = codec
        self.track: TrackReceiver | None = None  # what the m-line carries (or is offered to)
        self.pending = False  # in an offer not answered yet
        self.stream: OutgoingStream | None = None
        self.down_track: DownTrack | None = None


def _default_source(kind: str) -> str:
    return "microphone" if kind == "audio" else "camera"


class Participant:
    def __init__(
        self,
        room: Room,
        name: str,
        listener: EventListener,
        config: MediaConfig,
        auto_subscribe: bool = True,
        identity: str | None = None,
        grants: Grants = FULL_GRANTS,
    ) -> None:
        self.participant_id = new_id("PA")
        self.name = name
        self.identity = identity
        self.grants = grants
        self.room = room
        self.closed = False
        #: receive every track of the others unless unsubscribed (else only those subscribed to)
        self.auto_subscribe = auto_subscribe and grants.subscribe
        self._choices: dict[str, bool] = {}  # track id -> subscribed, as the client chose
        self.track_settings: dict[str, TrackSettings] = {}  # track id -> what the client wants
        self.published: dict[str, TrackReceiver] = {}  # by mid of this connection
        self.subscriptions: list[Subscription] = []
        #: counters of the tracks this participant stopped publishing (see sfu.counters)
        self.unpublished_totals = MediaTotals()
        self._listener = listener
        self._config = config
        self._lock = asyncio.Lock()
        self._offer_outstanding = False
        self._negotiation: asyncio.Task[None] | None = None
        self._negotiate_again = False
        self._ice_restart_wanted = False  # the next server offer restarts ICE
        #: the outstanding server offer stops tracks; rolled back (glare), the client's answer
        #: sets their m-lines inactive, but the client still needs an offer's ``tracks`` map
        self._offer_removes = False
        self._tracks_unsent = False
        self._removal: asyncio.Future[None] | None = None
        self._declined: set[TrackReceiver] = set()
        self._rejected_answers = 0  # in a row
        self._retry: asyncio.TimerHandle | None = None  # a re-offer backing off
        self._answer_timer: asyncio.TimerHandle | None = None  # our offer's negotiation timeout
        self.log = structlog.get_logger("sfu").bind(
            room=room.room_id, participant=self.participant_id
        )
        self.connection = MediaConnection(
            config, self._on_failed, self._on_connected, self.log, self._settings_of
        )
        self.connection.on_layer_activity = self._on_layer_activity
        self.connection.on_silent = self.restart_ice
        self.connection.on_stream_state = self._on_stream_state
        self.connection.on_connection_quality = self._on_connection_quality

    # --- the ParticipantSession interface ---

    async def offer(self, sdp: str, sources: Mapping[str, str]) -> Answer:
        ours = {s.transceiver.mid for s in self.subscriptions}
        limit = sdp_limit(len(ours) + MAX_CLIENT_MLINES)
        if len(sdp) > limit:
            raise InvalidSdp(
                f"the offer is {len(sdp)} characters; this connection allows {limit} "
                f"({len(ours)} receiving m-lines and at most {MAX_CLIENT_MLINES} of the client's)"
            )
        self._check_sdp(sdp)
        async with self._lock:
            self._ensure_open()
            pc = self.connection.pc
            if pc.signalingState == "have-local-offer":
                self.log.info("glare: rolling back our offer")
                self._rollback()
            try:
                # after the rollback: the m-lines of our offer no longer hide the client's
                self._check_offer_limits(sdp, sources)
            except SfuError:
                self._schedule_negotiation()  # ours was rolled back for nothing
                raise
            self.log.debug("client offer", sdp=sdp)
            try:
                answer = await bridge.accept_offer(pc, sdp)
            except _NEGOTIATION_ERRORS as exc:
                raise InvalidSdp(f"offer rejected: {self._reason(exc)}") from exc
            self.connection.negotiated()
            published = self._reconcile_published(sources)
            self._refresh_subscriptions()
        self._schedule_negotiation()
        return Answer(sdp=answer, published=published)

    async def answer(self, sdp: str) -> None:
        self._check_sdp(sdp, "answer")
        async with self._lock:
            self._ensure_open()
            if not self._offer_outstanding:
                raise InvalidState("no server offer is waiting for an answer")
            self.log.debug("client answer", sdp=sdp)
            try:
                await bridge.accept_answer(self.connection.pc, sdp)
            except _NEGOTIATION_ERRORS as exc:
                # drop our offer; the next one is made from scratch, later each time
                self._rollback()
                self._answer_rejected()
                raise InvalidSdp(f"answer rejected: {self._reason(exc)}") from exc
            self._offer_outstanding = False
            self._rejected_answers = 0
            self.connection.negotiated()
            self._refresh_subscriptions()
            self._activate_subscriptions()
        self._schedule_negotiation()

    async def add_ice_candidate(
        self, candidate: str | None, sdp_mid: str | None, sdp_mline_index: int | None
    ) -> None:
        self._ensure_open()
        try:
            await bridge.add_remote_candidate(
                self.connection.pc, candidate, sdp_mid, sdp_mline_index
            )
        except _NEGOTIATION_ERRORS as exc:
            raise InvalidSdp(f"bad ICE candidate: {self._reason(exc)}") from exc

    async def set_muted(self, track_id: str, muted: bool) -> None:
        self._ensure_open()
        for receiver in self.published.values():
            if receiver.info.track_id == track_id:
                if receiver.blocked and not muted:
                    raise NotAllowed(
                        f"the operator muted {track_id!r}; only the operator unmutes it"
                    )
                receiver.info = replace(receiver.info, muted=muted)
                self.room.track_muted(self, receiver.info)
                return
        raise UnknownTrack(f"you publish no track {track_id!r}")

    async def leave(self, reason: str = "left") -> None:
        await self.room.remove(self, reason)

    def _others_tracks(self, track_ids: Sequence[str]) -> dict[str, TrackReceiver]:
        """Others' tracks in the room by id; UnknownTrack if any of ``track_ids`` is not one."""
        self._ensure_open()
        tracks = self.room.others_tracks(self)
        unknown = [t for t in track_ids if t not in tracks]
        if unknown:
            shown = ", ".join(repr(t) for t in unknown[:5])
            raise UnknownTrack(f"no other participant in the room publishes {shown}")
        return tracks

    async def subscribe(self, track_ids: Sequence[str], subscribed: bool) -> None:
        tracks = self._others_tracks(track_ids)
        if subscribed and not self.grants.subscribe:
            raise NotAllowed("this participant may not subscribe (its token does not grant it)")
        changed = False
        for track_id in track_ids:
            track = tracks[track_id]
            if subscribed:
                self._declined.discard(track)  # asked for again: offer it again
            changed = changed or self.wants(track) != subscribed
            self._choices[track_id] = subscribed
        if changed:
            self.log.info("subscriptions changed", tracks=list(track_ids), subscribed=subscribed)
            self._schedule_negotiation()

    async def set_track_settings(self, track_ids: Sequence[str], settings: TrackSettings) -> None:
        self._others_tracks(track_ids)
        for track_id in track_ids:
            self.track_settings[track_id] = settings
        self.log.debug("track settings", tracks=list(track_ids), settings=settings)
        self.connection.choose_layers(time.monotonic())  # at once, not at the next tick

    # --- events ---

    def emit(self, event: Event) -> None:
        try:
            self._listener(event)
        except Exception:
            self.log.exception("event listener failed", event=type(event).__name__)

    def info_tracks(self) -> tuple[TrackInfo, ...]:
        return tuple(r.info for r in self.published.values())

    def wants(self, track: TrackReceiver) -> bool:
        """Whether this participant subscribes to another participant's ``track``."""
        return self._choices.get(track.info.track_id, self.auto_subscribe) and self.grants.subscribe

    def forget_track(self, track_id: str) -> None:
        """A track of another participant ended: its subscription choice goes with it."""
        self._choices.pop(track_id, None)
        self.track_settings.pop(track_id, None)

    # --- publishing ---

    def _check_offer_limits(self, sdp: str, sources: Mapping[str, str]) -> None:
        """Refuse an offer that would publish or create more than a participant may."""
        ours = {s.transceiver.mid for s in self.subscriptions}
        m_lines = bridge.offered_m_lines(sdp)
        self._check_grants([m for m in m_lines if m.mid not in ours and m.sending], sources)
        created = [m for m in m_lines if m.mid not in ours]
        if len(created) > MAX_CLIENT_MLINES:
            raise InvalidSdp(
                f"the offer has {len(created)} m-lines of the client's own; at most "
                f"{MAX_CLIENT_MLINES} are allowed (reuse or stop() transceivers)"
            )
        sending = [m for m in created if m.sending]
        cap = self._config.max_tracks_per_participant
        if len(sending) > cap:
            raise InvalidSdp(
                f"the offer sends {len(sending)} tracks; a participant may publish at most {cap}"
            )

    def _check_grants(
        self, sending: Sequence[bridge.OfferedMLine], sources: Mapping[str, str]
    ) -> None:
        grants = self.grants
        if sending and not grants.publish:
            raise NotAllowed("this participant may not publish (its token does not grant it)")
        if grants.sources is None:
            return
        for m_line in sending:
            published = self.published.get(m_line.mid)
            source = (
                published.info.source
                if published is not None
                else sources.get(m_line.mid) or _default_source(m_line.kind)
            )
            if source not in grants.sources:
                allowed = ", ".join(grants.sources) or "none"
                raise NotAllowed(
                    f"mid {m_line.mid!r} publishes source {source!r}; this participant may "
                    f"publish only: {allowed}"
                )

    def _reconcile_published(self, sources: Mapping[str, str]) -> tuple[PublishedTrack, ...]:
        """Publish what the client now sends, unpublish what it stopped sending."""
        pc = self.connection.pc
        ours = {s.transceiver for s in self.subscriptions}
        for transceiver in pc.getTransceivers():
            mid = transceiver.mid
            if transceiver in ours or mid is None:
                continue
            existing = self.published.get(mid)
            receiving = transceiver.currentDirection in ("recvonly", "sendrecv")
            params = bridge.media_params(pc, transceiver) if receiving else None
            if existing is not None and (
                params is None
                or params.msid != existing.params.msid
                or params.remote_ssrcs != existing.params.remote_ssrcs
            ):
                self._unpublish(existing)
                existing = None
            if existing is not None and params is not None:
                existing.update(params)
            if params is not None and existing is None and params.primary is not None:
                source = sources.get(mid) or _default_source(params.kind)
                info = TrackInfo(new_id("TR"), self.participant_id, params.kind, source)
                receiver = TrackReceiver(
                    info,
                    params,
                    self.connection,
                    self._config.keyframe_min_interval,
                    self.connection.publisher_clock,
                    self._config.retransmission_window,
                )
                self.published[mid] = receiver
                self.connection.add_receiver(receiver)
                self.log.info("track published", track=info.track_id, kind=info.kind, mid=mid)
                self.room.publish(self, receiver)
        return tuple(
            PublishedTrack(mid, r.info.track_id, r.info.kind) for mid, r in self.published.items()
        )

    def _unpublish(self, receiver: TrackReceiver) -> None:
        self.published.pop(receiver.params.mid, None)
        self.connection.remove_receiver(receiver)
        receiver.close()
        self.unpublished_totals.add_receiver(receiver)
        self.log.info("track unpublished", track=receiver.info.track_id)
        self.room.unpublish(self, receiver)

    # --- subscribing (server-initiated negotiation) ---

    def subscriptions_changed(self) -> None:
        self._schedule_negotiation()

    def _answer_rejected(self) -> None:
        self._rejected_answers += 1
        if self._rejected_answers >= MAX_REJECTED_ANSWERS:
            self.log.warning("answers rejected in a row; ending", count=self._rejected_answers)
            self._on_failed("negotiation-failed")
            return
        delay = REOFFER_DELAY * 2 ** (self._rejected_answers - 1)
        self.log.info("answer rejected; offering again later", delay=delay)
        self._retry = asyncio.get_running_loop().call_later(delay, self._retry_offer)

    def _await_answer(self) -> None:
        """A client that leaves our offer unanswered (a stuck or hostile client) would hold its
        place, and its subscriptions' m-lines, for ever: it gets negotiation_timeout."""
        if self._answer_timer is not None:
            self._answer_timer.cancel()
        self._answer_timer = asyncio.get_running_loop().call_later(
            self._config.negotiation_timeout, self._answer_overdue
        )

    def _answer_overdue(self) -> None:
        self._answer_timer = None
        if self._offer_outstanding and not self.closed:
            self.log.warning("offer not answered", seconds=self._config.negotiation_timeout)
            self._on_failed("negotiation-timeout")

    def _retry_offer(self) -> None:
        self._retry = None
        self._schedule_negotiation()

    def restart_ice(self) -> None:
        """Offer the client an ICE restart (RFC 8445 §9): new credentials from the server, new
        checks; for a path that went silent while the client may still be there. The offer
        waits in the session if the client's WebSocket is down too, for it to resume."""
        if self.closed:
            return
        self.log.info("offering an ICE restart")
        self._ice_restart_wanted = True
        self._schedule_negotiation()

    def _schedule_negotiation(self) -> None:
        if self.closed or self._retry is not None:
            return  # backing off: the timer offers
        if self._negotiation is None or self._negotiation.done():
            self._negotiation = asyncio.ensure_future(self._negotiate())
        else:
            self._negotiate_again = True

    async def _negotiate(self) -> None:
        try:
            async with self._lock:
                if self.closed or self.connection.pc.signalingState != "stable":
                    return
                offer = await self._make_offer()
            if offer is not None:
                self.emit(offer)
        except _NEGOTIATION_ERRORS:
            self.log.exception("server offer failed")
        finally:
            if self._negotiate_again and not self.closed:
                self._negotiate_again = False
                asyncio.get_running_loop().call_soon(self._schedule_negotiation)

    async def _make_offer(self) -> ServerOffer | None:
        self._declined = {t for t in self._declined if not t.closed}
        wanted = [
            t
            for t in self.room.tracks_for(self)
            if not t.closed and t not in self._declined and self.wants(t)
        ]
        carried = {s.track for s in self.subscriptions if s.track is not None}
        removed = [s for s in self.subscriptions if s.track is not None and s.track not in wanted]
        added = [t for t in wanted if t not in carried]
        restart, self._ice_restart_wanted = self._ice_restart_wanted, False
        stale, self._tracks_unsent = self._tracks_unsent, False
        if not removed and not added and not restart and not stale:
            return None
        self._offer_removes = bool(removed) or stale
        if restart:
            bridge.begin_ice_restart(self.connection.pc, controlling=True)
        for subscription in removed:
            self._detach(subscription)
            subscription.track = None
            subscription.transceiver.direction = "inactive"
        new_codecs: dict[Any, Codec] = {}
        for track in added:
            reusable = self._free_subscription(track)
            if reusable is None:
                transceiver = bridge.add_send_transceiver(self.connection.pc, track.info.kind)
                reusable = Subscription(transceiver, track.codec)
                self.subscriptions.append(reusable)
                new_codecs[transceiver] = track.codec
            subscription = reusable
            transceiver = subscription.transceiver
            transceiver.direction = "sendonly"
            bridge.set_sender_identity(transceiver, track.info.participant_id, track.info.track_id)
            subscription.track = track
            subscription.pending = True
        sdp = await bridge.create_offer(self.connection.pc, new_codecs)
        self.log.debug("server offer", sdp=sdp)
        self._offer_outstanding = True
        self._await_answer()
        tracks = {
            s.transceiver.mid: OfferedTrack(
                s.track.info.participant_id, s.track.info.track_id, s.track.info.kind
            )
            for s in self.subscriptions
            if s.track is not None
        }
        return ServerOffer(sdp=sdp, tracks=tracks)

    def _free_subscription(self, track: TrackReceiver) -> Subscription | None:
        """A negotiated m-line of the same kind and codec that carries nothing now.

        Any such m-line: also one whose track ended before it was answered, or that the client
        declined, so the m-lines of a connection never outnumber the tracks it received at once.
        """
        for subscription in self.subscriptions:
            if (
                subscription.track is None
                and not subscription.pending
                and subscription.transceiver.kind == track.info.kind
                and subscription.codec.same_format(track.codec)
            ):
                return subscription
        return None

    def _refresh_subscriptions(self) -> None:
        """Follow payload-type or extension-id changes a client made while renegotiating."""
        pc = self.connection.pc
        for subscription in self.subscriptions:
            down_track = subscription.down_track
            if down_track is None or subscription.pending:
                continue
            try:
                down_track.update(bridge.media_params(pc, subscription.transceiver))
            except ValueError:
                mid = subscription.transceiver.mid
                self.log.warning("subscriber renegotiated an unusable codec", mid=mid)
                self._detach(subscription)

    def _activate_subscriptions(self) -> None:
        pc = self.connection.pc
        transport = self.connection.transport
        for subscription in self.subscriptions:
            if not subscription.pending:
                continue
            subscription.pending = False
            track = subscription.track
            transceiver = subscription.transceiver
            if track is None or transport is None:
                continue
            if track.closed or transceiver.currentDirection not in ("sendonly", "sendrecv"):
                if not track.closed:
                    self.log.info("client declined a track", track=track.info.track_id)
                    self._declined.add(track)  # never offered again to this participant
                subscription.track = None
                transceiver.direction = "inactive"
                self._schedule_negotiation()
                continue
            params = bridge.media_params(pc, transceiver)
            if subscription.stream is None:
                subscription.stream = OutgoingStream(
                    params, random.getrandbits(15), random.getrandbits(32)
                )
            else:
                subscription.stream.params = params
            kind = (
                Vp8DownTrack if track.simulcast and track.codec.name.upper() == "VP8" else DownTrack
            )
            try:
                down_track = kind(track, subscription.stream, transport)
            except ValueError:
                self.log.warning("codec mismatch, not forwarding", track=track.info.track_id)
                continue
            subscription.down_track = down_track
            self.connection.add_down_track(down_track)
            # it waits for a keyframe, asked for once connected (_on_connected if not yet)
            track.add_down_track(down_track)

    def _rollback(self) -> None:
        added = set(bridge.rollback_local_offer(self.connection.pc))
        self._tracks_unsent = self._tracks_unsent or self._offer_removes
        self._offer_removes = False
        for subscription in list(self.subscriptions):
            if not subscription.pending:
                continue
            subscription.pending = False
            subscription.track = None
            if subscription.transceiver in added:
                self.subscriptions.remove(subscription)
            else:
                subscription.transceiver.direction = "inactive"
        self._offer_outstanding = False

    # --- connection events ---

    def _settings_of(self, track_id: str) -> TrackSettings:
        return self.track_settings.get(track_id) or DEFAULT_SETTINGS

    def _on_layer_activity(self, track_id: str, layers: tuple[LayerActivity, ...]) -> None:
        self.log.info(
            "publisher layers",
            track=track_id,
            active=[a.rid for a in layers if a.active],
            inactive=[a.rid for a in layers if not a.active],
        )
        self.emit(PublisherLayers(track_id, layers))

    def _on_stream_state(self, track_id: str, active: bool) -> None:
        bandwidth = self.connection.bandwidth.stats()
        self.log.info(
            "stream resumed" if active else "stream paused for bandwidth",
            track=track_id,
            estimate=round(bandwidth.estimate),
            source=bandwidth.source,
        )
        self.emit(StreamState(track_id, active))

    def _on_connection_quality(self, quality: ConnectionQualityReport) -> None:
        self.emit(quality)

    def _on_connected(self) -> None:
        self.log.info("connected")
        now = time.monotonic()
        for subscription in self.subscriptions:
            if subscription.down_track is not None:
                subscription.down_track.source.request_keyframe(now)

    def _on_failed(self, reason: str) -> None:
        if self.closed:
            return
        self.log.info("connection lost", reason=reason)
        self.emit(SessionClosed(reason))
        self._removal = asyncio.ensure_future(self.room.remove(self, reason))

    # --- helpers ---

    def _detach(self, subscription: Subscription) -> None:
        down_track = subscription.down_track
        if down_track is not None:
            self.connection.remove_down_track(down_track)
            down_track.close()
            subscription.down_track = None

    def _check_sdp(self, sdp: str, kind: Literal["offer", "answer"] = "offer") -> None:
        try:
            bridge.parse_sdp(sdp, kind)
        except ValueError as exc:
            raise InvalidSdp(str(exc)) from exc

    def _reason(self, exc: Exception) -> str:
        """ValueError and aiortc's errors say what is wrong; Python's others are a server bug."""
        if isinstance(exc, KeyError | IndexError | TypeError | AttributeError):
            self.log.warning("negotiation failed", exc_info=exc)
            return "the server could not apply it"
        return str(exc)

    def _ensure_open(self) -> None:
        if self.closed:
            raise InvalidState("this participant has left")

    async def close(self) -> None:
        """Stop everything: the room has already forgotten this participant."""
        if self.closed:
            return
        self.closed = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._answer_timer is not None:
            self._answer_timer.cancel()
            self._answer_timer = None
        if self._negotiation is not None and not self._negotiation.done():
            self._negotiation.cancel()
        for subscription in self.subscriptions:
            self._detach(subscription)
        for receiver in list(self.published.values()):
            self._unpublish(receiver)
        await self.connection.close()
