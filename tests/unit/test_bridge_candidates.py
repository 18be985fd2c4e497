"""A client's ICE candidates reach the server's one transport, from its SDP and trickled.

Real aiortc peers over 127.0.0.1: the client offers audio and video (max-bundle, as browsers and
sfu_client do), the server applies it with sfu.media.aiortc_bridge.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Iterator

import pytest
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)

from sfu.media import aiortc_bridge as bridge
from sfu.media.params import Codec

CONNECT_TIMEOUT = 10.0


@pytest.fixture(autouse=True)
def loopback_only() -> Iterator[None]:
    bridge.set_ice_host_addresses(["127.0.0.1"])
    yield
    bridge.set_ice_host_addresses([])


@pytest.fixture
async def peers() -> AsyncIterator[tuple[RTCPeerConnection, bridge.ServerPeerConnection]]:
    client = RTCPeerConnection(
        RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
    )
    client.addTransceiver("audio", direction="sendonly")
    client.addTransceiver("video", direction="sendonly")
    server = bridge.ServerPeerConnection()
    try:
        yield client, server
    finally:
        await client.close()
        await server.close()


def edit_sections(sdp: str, keep: Collection[int]) -> str:
    """``sdp`` with a=candidate lines only in the m-lines whose index is in ``keep``."""
    out, index = [], -1
    for line in sdp.split("\r\n"):
        index += line.startswith("m=")
        if line.startswith("a=candidate:") and index not in keep:
            continue
        out.append(line)
    return "\r\n".join(out)


def no_candidates(sdp: str) -> str:
    lines = sdp.split("\r\n")
    return "\r\n".join(
        line for line in lines if not line.startswith(("a=candidate:", "a=end-of-candidates"))
    )


def remote_addresses(server: bridge.ServerPeerConnection) -> list[tuple[str, int, str]]:
    assert server.media_transport is not None
    ice = server.media_transport.dtls.transport
    return [(c.ip, c.port, c.type) for c in ice.getRemoteCandidates()]


async def offer(client: RTCPeerConnection) -> str:
    await client.setLocalDescription(await client.createOffer())
    return str(client.localDescription.sdp)


async def connect(client: RTCPeerConnection, server: bridge.ServerPeerConnection, sdp: str) -> None:
    answer = await bridge.accept_offer(server, sdp)
    await client.setRemoteDescription(RTCSessionDescription(answer, "answer"))


async def wait_connected(*pcs: RTCPeerConnection) -> None:
    for _ in range(int(CONNECT_TIMEOUT / 0.02)):
        if all(pc.connectionState == "connected" for pc in pcs):
            return
        await asyncio.sleep(0.02)
    raise AssertionError([pc.connectionState for pc in pcs])


def host_candidate(sdp: str) -> str:
    """The client's host candidate, as RTCIceCandidate.candidate would hold it."""
    line = next(line for line in sdp.split("\r\n") if line.startswith("a=candidate:"))
    return line.removeprefix("a=")


async def test_candidates_in_the_first_m_line_only_are_used(
    peers: tuple[RTCPeerConnection, bridge.ServerPeerConnection],
) -> None:
    """A non-trickle client that lists its candidates in the BUNDLE-tagged m-line only.

    aiortc read them from the last m-line, found none there but a=end-of-candidates, and the
    connection never came up.
    """
    client, server = peers
    sdp = edit_sections(await offer(client), keep={0})
    assert sdp.count("a=end-of-candidates") == 2 and sdp.count("a=candidate:") == 1
    await connect(client, server, sdp)
    port = int(host_candidate(sdp).split()[5])
    assert ("127.0.0.1", port, "host") in remote_addresses(server)
    await wait_connected(client, server)


async def test_candidates_in_the_first_m_line_of_an_answer_only_are_used() -> None:
    """The same for a receive-only client answering the server's offer of two tracks."""
    server = bridge.ServerPeerConnection()
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        opus = Codec(payload_type=111, name="opus", clock_rate=48000, channels=2)
        vp8 = Codec(payload_type=96, name="VP8", clock_rate=90000, rtx_payload_type=97)
        audio = bridge.add_send_transceiver(server, "audio")
        video = bridge.add_send_transceiver(server, "video")
        offer = await bridge.create_offer(server, {audio: opus, video: vp8})
        await client.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        await client.setLocalDescription(await client.createAnswer())
        sdp = edit_sections(client.localDescription.sdp, keep={0})
        assert sdp.count("a=end-of-candidates") == 2 and sdp.count("a=candidate:") == 1
        await bridge.accept_answer(server, sdp)
        port = int(host_candidate(sdp).split()[5])
        assert ("127.0.0.1", port, "host") in remote_addresses(server)
        await wait_connected(client, server)
    finally:
        await client.close()
        await server.close()


async def test_a_candidate_for_a_bundled_m_line_reaches_the_transport(
    peers: tuple[RTCPeerConnection, bridge.ServerPeerConnection],
) -> None:
    """aiortc's addIceCandidate dropped a candidate whose sdpMid named m-line 1, bundled on 0."""
    client, server = peers
    sdp = await offer(client)
    await connect(client, server, no_candidates(sdp))
    assert remote_addresses(server) == []
    await bridge.add_remote_candidate(server, host_candidate(sdp), "1", None)
    port = int(host_candidate(sdp).split()[5])
    assert remote_addresses(server) == [("127.0.0.1", port, "host")]
    await wait_connected(client, server)


async def test_sdp_mline_index_alone_is_enough(
    peers: tuple[RTCPeerConnection, bridge.ServerPeerConnection],
) -> None:
    client, server = peers
    sdp = await offer(client)
    await connect(client, server, no_candidates(sdp))
    await bridge.add_remote_candidate(server, host_candidate(sdp), None, 1)
    assert len(remote_addresses(server)) == 1


async def test_tcp_candidates_are_ignored(
    peers: tuple[RTCPeerConnection, bridge.ServerPeerConnection],
) -> None:
    """The server is UDP-only: a TCP candidate is dropped, without an error."""
    client, server = peers
    await connect(client, server, no_candidates(await offer(client)))
    tcp = "candidate:2 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active generation 0"
    await bridge.add_remote_candidate(server, tcp, "0", 0)
    assert remote_addresses(server) == []


@pytest.mark.parametrize(
    ("candidate", "mid", "index", "message"),
    [
        ("garbage", "0", None, "candidate 'garbage' has 1 field, RFC 8839 §5.1 needs at least 8"),
        ("candidate:1 1 udp", "0", None, "has 3 fields"),
        ("candidate:1 1 udp 1 127.0.0.1 70000 typ host", "0", None, "port 70000 is out of range"),
        (None, "7", None, "sdpMid '7' names no m-line of your current description"),
        (None, None, 2, "sdpMLineIndex 2 is past your description's 2 m-lines"),
    ],
)
async def test_unusable_candidates_are_refused(
    peers: tuple[RTCPeerConnection, bridge.ServerPeerConnection],
    candidate: str | None,
    mid: str | None,
    index: int | None,
    message: str,
) -> None:
    client, server = peers
    sdp = await offer(client)
    await connect(client, server, no_candidates(sdp))
    with pytest.raises(ValueError) as raised:
        await bridge.add_remote_candidate(server, candidate or host_candidate(sdp), mid, index)
    assert message in str(raised.value)
    assert remote_addresses(server) == []


async def test_a_candidate_before_any_description_is_refused() -> None:
    server = bridge.ServerPeerConnection()
    try:
        with pytest.raises(ValueError, match="none of your offers or answers is in effect"):
            await bridge.add_remote_candidate(
                server, "candidate:1 1 udp 1 127.0.0.1 9 typ host", "0", None
            )
    finally:
        await server.close()
