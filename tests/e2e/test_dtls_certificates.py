"""Peers whose DTLS certificate is RSA, in both DTLS roles, through the real server.

Browsers use ECDSA certificates; GStreamer's webrtcbin (and so Debian's simple-whip-client)
generates a 2048-bit RSA one and sets OpenSSL's broad cipher list. In TLS 1.2 the DTLS *server*'s
certificate decides which suites can be chosen (RFC 5246 §7.4.2), so:

- the peer offers (``a=setup:actpass``) and the server answers ``a=setup:active``: the server is
  the DTLS client, and must offer ECDHE-RSA suites to a peer whose certificate is RSA;
- the server offers first (a participant that only receives) and the peer answers
  ``a=setup:active`` (RFC 5763 §5): the server is the DTLS server with its ECDSA certificate,
  and must accept the peer's RSA client certificate.

The foreign peer is an aiortc client whose certificate and cipher list are replaced with
GStreamer's (its gstdtlsagent.c and gstdtlscertificate.c), which is test code touching aiortc's
internals on purpose.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from typing import Any, cast

import pytest
from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsTransport, SRTPProtectionProfile
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from OpenSSL import SSL

from sfu_client import SfuClient

from .conftest import ClientFactory
from .test_call import assert_no_client_errors, assert_received, publish_markers, receive

pytestmark = pytest.mark.e2e

DTLS_TIMEOUT = 20.0
#: GStreamer's DTLS cipher list (OpenSSL's ALL minus anonymous, weak and export suites)
GSTREAMER_CIPHERS = b"ALL:!ADH:!LOW:!EXP:!MD5:@STRENGTH"


class RsaCertificate(RTCCertificate):
    """A self-signed RSA-2048 certificate with GStreamer's cipher list."""

    @classmethod
    def create(cls) -> RsaCertificate:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "rsa-peer")])
        now = datetime.datetime.now(tz=datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .sign(key, hashes.SHA256())
        )
        return cls(key=cast(Any, key), cert=cert)

    def _create_ssl_context(self, srtp_profiles: list[SRTPProtectionProfile]) -> SSL.Context:
        context = super()._create_ssl_context(srtp_profiles)
        context.set_cipher_list(GSTREAMER_CIPHERS)
        return context


async def rsa_client(make_client: ClientFactory, room: str, name: str) -> SfuClient:
    """A joined client whose peer connection presents an RSA certificate."""
    client = await make_client(room, name, join=False)
    pc: Any = client.pc
    pc._RTCPeerConnection__certificates = [RsaCertificate.create()]  # before any transport
    await client.join(room, name)
    return client


async def dtls_connected(client: SfuClient) -> RTCDtlsTransport:
    """The client's (bundled) DTLS transport once connected; fails when it fails."""
    deadline = time.monotonic() + DTLS_TIMEOUT
    while True:
        transports = [t.receiver.transport for t in client.pc.getTransceivers()]
        state = transports[0].state if transports else "none"
        if state == "connected":
            return transports[0]
        if state in ("failed", "closed") or time.monotonic() > deadline:
            raise AssertionError(f"{client.name}: DTLS {state}, never connected")
        await asyncio.sleep(0.05)


def cipher_of(transport: RTCDtlsTransport) -> str:
    ssl: Any = cast(Any, transport)._ssl
    return str(ssl.get_cipher_name())


async def test_rsa_peer_as_dtls_server_publishes(make_client: ClientFactory, room: str) -> None:
    """The peer offers actpass, the server answers active: the server is the DTLS client."""
    subscriber = await make_client(room, "subscriber")
    peer = await rsa_client(make_client, room, "rsa-publisher")

    await publish_markers(peer, 0)

    assert "a=setup:actpass" in peer.pc.localDescription.sdp
    assert "a=setup:active" in peer.pc.remoteDescription.sdp
    transport = await dtls_connected(peer)
    assert cast(Any, transport)._role == "server"
    assert cipher_of(transport).startswith("ECDHE-RSA-"), cipher_of(transport)
    assert_received(
        [
            await receive(subscriber, peer, "video", 0),
            await receive(subscriber, peer, "audio", 0),
        ]
    )
    assert_no_client_errors(subscriber, peer)


async def test_rsa_peer_as_dtls_client_subscribes(make_client: ClientFactory, room: str) -> None:
    """The server offers first (actpass), the peer answers active: the server is the DTLS
    server, with its ECDSA certificate, and the peer's certificate is RSA."""
    publisher = await make_client(room, "publisher")
    await publish_markers(publisher, 1)
    peer = await rsa_client(make_client, room, "rsa-subscriber")

    receptions = [
        await receive(peer, publisher, "video", 1),
        await receive(peer, publisher, "audio", 1),
    ]

    assert "a=setup:actpass" in peer.pc.remoteDescription.sdp
    assert "a=setup:active" in peer.pc.localDescription.sdp
    transport = await dtls_connected(peer)
    assert cast(Any, transport)._role == "client"
    assert cipher_of(transport).startswith("ECDHE-ECDSA-"), cipher_of(transport)
    assert_received(receptions)
    assert_no_client_errors(publisher, peer)
