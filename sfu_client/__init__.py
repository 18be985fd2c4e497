"""A Python client of aiosfu (docs/protocol.md) and synthetic media, for tests and load tests."""

from sfu_client.client import (
    ConnectionClosed,
    LocalTrack,
    RemoteParticipant,
    RemoteTrack,
    ServerError,
    ServerMessage,
    SfuClient,
    SfuClientError,
    pin_ice_to_loopback,
    ws_url,
)
from sfu_client.media import (
    PALETTE,
    TONES,
    FileTracks,
    FrameProbe,
    FrameRecord,
    MarkerVideoTrack,
    ToneAudioTrack,
    audio_samples,
    closest_color,
    collect,
    dominant_frequency,
    file_tracks,
    frame_color,
)
from sfu_client.simulcast import DEFAULT_LAYERS, SimulcastPublisher
from sfu_client.simulcast_layer import OutboundLayer
from sfu_client.simulcast_media import LayerSize, PreEncodedLayers

__all__ = [
    "DEFAULT_LAYERS",
    "PALETTE",
    "TONES",
    "ConnectionClosed",
    "FileTracks",
    "FrameProbe",
    "FrameRecord",
    "LayerSize",
    "LocalTrack",
    "MarkerVideoTrack",
    "OutboundLayer",
    "PreEncodedLayers",
    "RemoteParticipant",
    "RemoteTrack",
    "ServerError",
    "ServerMessage",
    "SfuClient",
    "SfuClientError",
    "SimulcastPublisher",
    "ToneAudioTrack",
    "audio_samples",
    "closest_color",
    "collect",
    "dominant_frequency",
    "file_tracks",
    "frame_color",
    "pin_ice_to_loopback",
    "ws_url",
]
