"""The shared UDP port of the server's peer connections (issue 13 S2), with real aiortc peers
over 127.0.0.1: several server connections on one socket connect, carry media both ways,
restart ICE, and the port drops what no connection authenticated.

The aioice internals the port relies on are pinned in test_aiortc_bridge.py.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any, cast

import aioice.ice
import aioice.stun
import pytest
from aiortc import AudioStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from sfu.media import aiortc_bridge as bridge
from sfu.media.aiortc_udp_port import UdpPort, _MuxedStunProtocol
from sfu.rtp.header import build_extension_block

MID_BLOCK = build_extension_block([(1, b"0")])


@pytest.fixture(autouse=True)
def loopback_only() -> object:
    bridge.set_ice_host_addresses(["127.0.0.1"])
    yield
    bridge.set_ice_host_addresses([])


@pytest.fixture
async def port() -> AsyncIterator[UdpPort]:
    shared = await bridge.use_udp_port(["127.0.0.1"])
    try:
        yield shared
    finally:
        bridge.stop_udp_port()


def _connection(pc: RTCPeerConnection) -> Any:
    return cast(Any, pc.getTransceivers()[0].receiver.transport).transport._connection


async def _client_offers(client: RTCPeerConnection, server: bridge.ServerPeerConnection) -> None:
    await client.setLocalDescription(await client.createOffer())
    answer = await bridge.accept_offer(server, client.localDescription.sdp)
    await client.setRemoteDescription(RTCSessionDescription(answer, "answer"))


async def _wait(condition: Any, what: str, seconds: float = 10.0) -> None:
    for _ in range(int(seconds / 0.025)):
        if condition():
            return
        await asyncio.sleep(0.025)
    raise AssertionError(what)


async def _wait_connected(*pcs: RTCPeerConnection) -> None:
    await _wait(
        lambda: all(pc.connectionState == "connected" for pc in pcs),
        str([pc.connectionState for pc in pcs]),
    )


def _tap_client_rtp(client: RTCPeerConnection) -> list[bytes]:
    received: list[bytes] = []
    dtls: Any = client.getTransceivers()[0].receiver.transport
    handle_rtp = dtls._handle_rtp_data

    async def tap(data: bytes, arrival_time_ms: int) -> None:
        received.append(data)
        await handle_rtp(data, arrival_time_ms)

    dtls._handle_rtp_data = tap
    return received


def _rtp(sequence: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0x80 | 111, sequence, 9000, 0x1111) + b"\x55" * 100


async def test_three_server_connections_share_one_socket_and_carry_media_both_ways(
    port: UdpPort,
) -> None:
    fds_before = len(os.listdir("/proc/self/fd"))
    servers = [bridge.ServerPeerConnection() for _ in range(3)]
    clients = [RTCPeerConnection(RTCConfiguration(iceServers=[])) for _ in range(3)]
    received: list[list[bytes]] = [[] for _ in servers]
    for server, inbox in zip(servers, received, strict=True):
        server.on_media_transport = lambda t, inbox=inbox: setattr(
            t, "on_rtp", lambda data, now: inbox.append(data)
        )
    try:
        for server, client in zip(servers, clients, strict=True):
            client.addTrack(AudioStreamTrack())
            await _client_offers(client, server)
        await _wait_connected(*servers, *clients)
        # client -> server: each server decrypts its own client's audio
        await _wait(lambda: all(len(inbox) >= 5 for inbox in received), "no RTP at a server")
        # server -> client: through the C egress on a dup of the shared socket
        tapped = [_tap_client_rtp(client) for client in clients]
        for i, server in enumerate(servers):
            transport = server.media_transport
            assert transport is not None
            transport.send_rewritten(_rtp(i), 12, 111, 100 + i, 500, 0xBEEF, MID_BLOCK, -1, b"")
        await _wait(lambda: all(tapped), "a client got nothing")
        for i, inbox in enumerate(tapped):  # each client got its own server's packet only
            assert {struct.unpack_from("!H", p, 2)[0] for p in inbox if p[1] & 0x7F == 111} == {
                100 + i
            }
        (sockname,) = port.socknames
        for server in servers:
            connection = _connection(server)
            assert [type(p) for p in connection._protocols] == [_MuxedStunProtocol]
            assert connection._protocols[0].transport.get_extra_info("sockname") == sockname
            assert connection._nominated[1].local_candidate.port == sockname[1]
            assert len(connection.local_username) == 8
            assert port.routes.by_ufrag(connection.local_username + ":x") is connection
        # every client's address was learned by an authenticated check, by its own server
        for server, client in zip(servers, clients, strict=True):
            client_pair = _connection(client)._nominated[1]
            client_address = (client_pair.local_candidate.host, client_pair.local_candidate.port)
            assert port.routes.by_address(client_address) is _connection(server)
        assert port.unroutable["media"] == 0
    finally:
        for pc in [*clients, *servers]:
            await pc.close()
    assert port.routes.sizes() == (0, 0, 0), "a closed connection left routes behind"
    assert all(not shared.members for shared in port.sockets)
    # the shared socket outlived the connections
    assert not port.sockets[0].closed
    # each egress's duplicate of the shared socket was closed, and no socket of their own made
    assert len(os.listdir("/proc/self/fd")) <= fds_before


async def test_client_peer_connections_keep_their_own_sockets(port: UdpPort) -> None:
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        client.addTransceiver("audio", direction="recvonly")
        await client.setLocalDescription(await client.createOffer())
        protocols = _connection(client)._protocols
        assert [type(p) for p in protocols] == [aioice.ice.StunProtocol]
        assert protocols[0].transport.get_extra_info("sockname") not in port.socknames
    finally:
        await client.close()


async def test_ice_restart_on_the_shared_port(port: UdpPort) -> None:
    """RFC 8445 §9: the client restarts; the server's new ufrag is reserved on the port, the
    old one no longer routes, and the new session's pair is on the same socket."""
    server = bridge.ServerPeerConnection()
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    outcomes: list[bool] = []
    server.on_ice_restart = outcomes.append
    try:
        client.addTransceiver("audio", direction="recvonly")
        await _client_offers(client, server)
        await _wait_connected(client, server)
        connection = _connection(server)
        old = connection.local_username

        bridge.begin_ice_restart(client, controlling=True)
        await client.setLocalDescription(await client.createOffer())
        answer = await bridge.accept_offer(server, client.localDescription.sdp)
        remote = bridge.ice_credentials(answer)
        assert remote is not None and remote[0] != old and len(remote[0]) == 8
        assert port.routes.by_ufrag(old) is None
        assert port.routes.by_ufrag(remote[0]) == connection  # (`is` would narrow the Any)
        await client.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await bridge.complete_ice_restart(client, remote)
        await _wait(lambda: outcomes, "the server's restart did not end")
        assert outcomes == [True]
        assert (client.connectionState, server.connectionState) == ("connected", "connected")
        assert connection._nominated[1].local_candidate.port == port.socknames[0][1]
        transport = server.media_transport
        assert transport is not None
        sent = transport.packets_sent
        transport.send_rtcp(bytes([0x80, 201, 0, 1, 0, 0, 0, 1]))
        assert transport.packets_sent == sent + 1 and transport.send_errors == 0
    finally:
        await client.close()
        await server.close()
    assert port.routes.sizes() == (0, 0, 0)


async def test_regather_on_the_shared_port_then_a_server_restart_connects(
    port: UdpPort,
) -> None:
    """A server-side restart with regather_ice: the muxed protocols are made again on the same
    socket (the old ones only unregister), and the restart the server offers connects."""
    server = bridge.ServerPeerConnection()
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    outcomes: list[bool] = []
    server.on_ice_restart = outcomes.append
    try:
        client.addTransceiver("audio", direction="sendrecv")
        await _client_offers(client, server)
        await _wait_connected(client, server)
        connection = _connection(server)
        (old,) = connection._protocols

        bridge.begin_ice_restart(server, controlling=True)
        await bridge.regather_ice(server)
        (new,) = connection._protocols
        assert new is not old and type(new) is _MuxedStunProtocol
        assert old.transport.is_closing() and not new.transport.is_closing()
        assert port.sockets[0].members[connection] is new
        assert new.local_candidate.port == port.socknames[0][1]
        assert not port.sockets[0].closed

        offer = await bridge.create_offer(server, {})
        bridge.begin_ice_restart(client, controlling=False)
        await client.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        await client.setLocalDescription(await client.createAnswer())
        await bridge.accept_answer(server, client.localDescription.sdp)
        remote = bridge.ice_credentials(offer)
        assert remote is not None
        await bridge.complete_ice_restart(client, remote)
        await _wait(lambda: outcomes, "the server's restart did not end")
        assert outcomes == [True]
        assert connection._nominated[1].protocol is new
    finally:
        await client.close()
        await server.close()
    assert port.routes.sizes() == (0, 0, 0)


def _binding(username: str, key: bytes) -> aioice.stun.Message:
    request = aioice.stun.Message(
        message_method=aioice.stun.Method.BINDING, message_class=aioice.stun.Class.REQUEST
    )
    request.attributes["USERNAME"] = username
    request.attributes["ICE-CONTROLLING"] = 1
    request.attributes["PRIORITY"] = 1
    request.add_message_integrity(key)
    request.add_fingerprint()
    return request


async def _answer(sock: socket.socket, wait: float = 1.0) -> aioice.stun.Message | None:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(wait):
            data = await loop.sock_recv(sock, 2048)
    except TimeoutError:
        return None
    return aioice.stun.parse_message(data)


async def test_what_no_connection_authenticated_is_dropped_and_teaches_nothing(
    port: UdpPort,
) -> None:
    """A datagram from an unlearned address is dropped and counted; a Binding request with a
    wrong password gets 401 (RFC 8489 §9.1.3) and teaches the routes nothing; with the right
    one it is answered and its address learned (RFC 8445 §7.3)."""
    server = bridge.ServerPeerConnection()
    client = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind(("127.0.0.1", 0))
    stranger.setblocking(False)
    here = cast(tuple[str, int], stranger.getsockname())
    target = port.socknames[0]
    loop = asyncio.get_running_loop()
    try:
        client.addTransceiver("audio", direction="recvonly")
        await client.setLocalDescription(await client.createOffer())
        answer = await bridge.accept_offer(server, client.localDescription.sdp)
        ufrag, password = bridge.ice_credentials(answer) or ("", "")
        theirs = (bridge.ice_credentials(client.localDescription.sdp) or ("", ""))[0]
        connection = _connection(server)
        received: list[bytes] = []
        queue = connection.data_received

        def data_received(data: bytes, component: int) -> None:
            received.append(data)
            queue(data, component)

        connection.data_received = data_received

        await loop.sock_sendto(stranger, _rtp(1), target)
        await loop.sock_sendto(stranger, bytes([22, 0xFE, 0xFD]) + b"\x00" * 10, target)
        await loop.sock_sendto(stranger, bytes(_binding("nobody00:x", b"k" * 22)), target)
        await loop.sock_sendto(stranger, b"\xff" * 20, target)
        assert await _answer(stranger, 0.3) is None, "the port answered a stranger"
        assert port.unroutable == {"media": 2, "stun": 1, "other": 1}
        assert received == []

        await loop.sock_sendto(stranger, bytes(_binding(f"{ufrag}:{theirs}", b"wrong" * 5)), target)
        refused = await _answer(stranger)
        assert refused is not None and refused.message_class == aioice.stun.Class.ERROR
        assert refused.attributes["ERROR-CODE"][0] == 401
        # (the server's own checks may have learned the client's address meanwhile)
        assert port.routes.by_address(here) is None
        assert here not in port.routes.addresses(connection)
        await loop.sock_sendto(stranger, _rtp(2), target)
        await asyncio.sleep(0.1)
        assert port.unroutable["media"] == 3 and received == []

        await loop.sock_sendto(
            stranger, bytes(_binding(f"{ufrag}:{theirs}", password.encode())), target
        )
        accepted = await _answer(stranger)
        assert accepted is not None and accepted.message_class == aioice.stun.Class.RESPONSE
        assert accepted.attributes["XOR-MAPPED-ADDRESS"] == here
        assert port.routes.by_address(here) is connection
        await loop.sock_sendto(stranger, _rtp(3), target)
        await _wait(lambda: received, "a learned address's datagram was not routed", 2.0)
        assert received == [_rtp(3)] and port.unroutable["media"] == 3
    finally:
        stranger.close()
        await client.close()
        await server.close()


async def test_stop_restores_sockets_of_their_own() -> None:
    shared = await bridge.use_udp_port(["127.0.0.1"])
    with pytest.raises(RuntimeError):
        await bridge.use_udp_port(["127.0.0.1"])
    bridge.stop_udp_port()
    assert shared.closed and shared.sockets[0].closed
    server = bridge.ServerPeerConnection()
    try:
        server.addTransceiver("audio", direction="recvonly")
        await server.setLocalDescription(await server.createOffer())
        assert server.udp_port is None
        assert [type(p) for p in _connection(server)._protocols] == [aioice.ice.StunProtocol]
    finally:
        await server.close()
