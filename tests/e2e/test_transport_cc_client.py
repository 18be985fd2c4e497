"""A Python subscriber does transport-cc as a browser does, against the real server.

The server offers the transport-wide sequence number and transport-cc feedback
(draft-holmer-rmcat-transport-wide-cc-extensions-01) on what it sends; ``sfu_client`` answers
both, and reports each numbered packet's arrival every 50 ms. With ``transport_cc=False`` it
answers neither, and the server numbers nothing (its estimate then rests on REMB).
"""

from __future__ import annotations

import pytest

from sfu.rtp.twcc import URI, TransportFeedback, decode, transport_sequence
from sfu_client import PALETTE, MarkerVideoTrack, SfuClient

from . import taps
from .conftest import ClientFactory, SfuServer
from .observe import wait_until

pytestmark = pytest.mark.e2e

TIMEOUT = 20.0


async def publisher(make_client: ClientFactory, room: str) -> SfuClient:
    alice = await make_client(room, "alice")
    await alice.publish(MarkerVideoTrack(PALETTE[0], 160, 120, 15), "camera")
    return alice


async def test_subscriber_reports_every_packet_the_server_numbered(
    make_client: ClientFactory, room: str
) -> None:
    alice = await publisher(make_client, room)
    bob = await make_client(room, "bob")
    assert alice.participant_id is not None
    await bob.wait_for_track(alice.participant_id, "video", TIMEOUT)
    assert URI in bob.pc.localDescription.sdp and "transport-cc" in bob.pc.localDescription.sdp
    feedback = bob.transport_cc_feedback
    assert feedback is not None and feedback.running
    tap = taps.install(bob.pc)

    def sent() -> list[TransportFeedback]:
        return tap.rtcp_of(TransportFeedback, sent=True)

    await wait_until(lambda: len(sent()) >= 10, "ten feedback messages")
    messages = sent()
    reported = [p for m in messages for p in decode(m.fci).packets]
    seqs = [seq for seq, _ in reported]
    # one message after the other, each number once, none skipped
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(len(seqs))]
    arrived = {seq for seq, arrival in reported if arrival is not None}
    numbers = [transport_sequence(r.payload, feedback.ext_id) for r in tap.rtp_in]
    numbered = {n for n in numbers if n is not None}
    assert len(numbered) >= 20, "the server numbered too few packets"
    covered = {n for n in numbered if n in set(seqs)}
    assert covered and covered <= arrived  # what arrived was reported as arrived
    # the arrival times move forward with the packets (loopback: no reordering to speak of)
    times = [arrival for _, arrival in reported if arrival is not None]
    assert times[-1] > times[0]
    assert feedback.sent >= len(messages) and feedback.unsent == 0


async def test_without_transport_cc_nothing_is_numbered_nor_reported(
    sfu_server: SfuServer, make_client: ClientFactory, room: str
) -> None:
    alice = await publisher(make_client, room)
    bob = await SfuClient.connect(sfu_server.ws_url, room, "bob", transport_cc=False)
    try:
        assert alice.participant_id is not None
        await bob.wait_for_track(alice.participant_id, "video", TIMEOUT)
        assert URI not in bob.pc.localDescription.sdp
        assert "transport-cc" not in bob.pc.localDescription.sdp
        assert bob.transport_cc_feedback is None
        tap = taps.install(bob.pc)
        await wait_until(lambda: len(tap.rtp_in) >= 20, "media")
        # no packet carries an element with the id the server offered
        offered = next(
            line.split()[0].removeprefix("a=extmap:")
            for line in bob.pc.remoteDescription.sdp.splitlines()
            if URI in line
        )
        assert all(transport_sequence(r.payload, int(offered)) is None for r in tap.rtp_in)
        assert tap.rtcp_of(TransportFeedback, sent=True) == []
    finally:
        await bob.close()


async def test_feedback_goes_on_after_the_subscriber_offers(
    make_client: ClientFactory, room: str
) -> None:
    """A subscriber's own offer (it publishes) re-offers the m-lines it receives on: they keep
    transport-cc, and the server keeps numbering what it sends on them."""
    alice = await publisher(make_client, room)
    bob = await make_client(room, "bob")
    assert alice.participant_id is not None
    await bob.wait_for_track(alice.participant_id, "video", TIMEOUT)
    feedback = bob.transport_cc_feedback
    assert feedback is not None
    await wait_until(lambda: feedback.builder.recorded >= 20, "numbered packets")
    await bob.publish(MarkerVideoTrack(PALETTE[1], 160, 120, 15), "camera")
    answer = bob.pc.remoteDescription.sdp
    receiving = [s for s in answer.split("m=")[1:] if "a=sendonly" in s]
    assert receiving and all(URI in s for s in receiving), "the server's answer dropped it"
    tap = taps.install(bob.pc)
    await wait_until(lambda: len(tap.rtp_in) >= 40, "media after the offer")
    numbered = [transport_sequence(r.payload, feedback.ext_id) for r in tap.rtp_in]
    assert numbered.count(None) < len(numbered) // 2, "the server stopped numbering"
    before = feedback.sent
    await wait_until(lambda: feedback.sent >= before + 5, "feedback after the offer")
