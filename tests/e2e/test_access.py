"""Access tokens with real peers and the real server started with ``--keys-file``
(docs/protocol.md §5 ``join``): grants hold for media, an identity is one participant, and a
refused participant harms no one else's call."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import pytest

from sfu.api import FULL_GRANTS, Grants
from sfu_client import PALETTE, MarkerVideoTrack, SfuClient, ToneAudioTrack
from sfu_client.client import RemoteTrack, ServerError
from signaling.tokens import create_token, new_secret

from .conftest import ClientFactory, SfuServer
from .test_ice_restart import FPS, HEIGHT, WIDTH, fresh_frames

pytestmark = pytest.mark.e2e

KEYS = {"main": new_secret()}
QUIET = 3.0  # seconds in which a track that is not wanted would have been offered


@pytest.fixture(autouse=True)
def _keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "keys"
    path.write_text("".join(f"{kid}: {secret}\n" for kid, secret in KEYS.items()))
    monkeypatch.setenv("SFU_KEYS_FILE", str(path))


def token(room: str, identity: str, grants: Grants = FULL_GRANTS) -> str:
    return create_token(KEYS, "main", room=room, identity=identity, grants=grants, ttl=300)


def camera(index: int = 0) -> MarkerVideoTrack:
    return MarkerVideoTrack(PALETTE[index], WIDTH, HEIGHT, FPS)


async def test_a_join_without_a_token_is_refused(make_client: ClientFactory, room: str) -> None:
    with pytest.raises(ServerError) as refused:
        await make_client(room, "anon")
    assert refused.value.code == "token-required"


async def test_grants_decide_who_publishes_what_and_who_receives(
    make_client: ClientFactory, room: str
) -> None:
    speaker = await make_client(room, "speaker", token=token(room, "speaker"))
    await speaker.publish(camera(0), "camera")
    viewer = await make_client(room, "viewer", token=token(room, "viewer", Grants(publish=False)))
    with pytest.raises(ServerError) as refused:
        await viewer.publish(camera(1), "camera")
    assert refused.value.code == "not-allowed" and "may not publish" in refused.value.message
    # a viewer still receives
    await fresh_frames(viewer, speaker, 0.0)

    voice_only = Grants(sources=("microphone",))
    caller = await make_client(room, "caller", token=token(room, "caller", voice_only))
    with pytest.raises(ServerError) as refused:
        await caller.publish(camera(2), "camera")
    assert refused.value.code == "not-allowed" and "'camera'" in refused.value.message
    caller2 = await make_client(room, "caller2", token=token(room, "caller2", voice_only))
    (voice,) = await caller2.publish_many([(ToneAudioTrack(440.0), "microphone")])
    assert voice.track_id

    deaf = Grants(subscribe=False)
    recorder = await make_client(room, "recorder", token=token(room, "recorder", deaf))
    track_id = next(iter(speaker.local_tracks))
    await recorder.subscribe([track_id])  # no reply on success: a refusal is an error event

    def refused_subscription() -> bool:
        return any(getattr(e, "code", None) == "not-allowed" for e in recorder.errors)

    await recorder.wait_until(refused_subscription, 10.0, "the subscription refused")
    await asyncio.sleep(QUIET)
    assert not recorder.remote_tracks, "a participant without subscribe received a track"
    # the refusals harmed no one: the speaker's video still reaches the viewer
    assert not speaker.closed and not viewer.closed
    await fresh_frames(viewer, speaker, 0.0)


async def test_one_identity_is_one_participant(make_client: ClientFactory, room: str) -> None:
    watcher = await make_client(room, "watcher", token=token(room, "watcher"))
    first = await make_client(room, "ann (phone)", token=token(room, "ann"))
    await first.publish(camera(0), "camera")
    await fresh_frames(watcher, first, 0.0)
    second = await make_client(room, "ann (laptop)", token=token(room, "ann"))
    bye = await first.wait_for_message("bye", 10.0)
    assert bye.data["reason"] == "duplicate-identity"
    left = await watcher.wait_for_message("participant-left", 10.0)
    assert left.data["participantId"] == first.participant_id
    assert left.data["reason"] == "duplicate-identity"
    assert set(watcher.participants) == {second.participant_id}
    await second.publish(camera(1), "camera")
    await fresh_frames(watcher, second, 0.0)
    assert isinstance(second, SfuClient) and not second.closed


async def frames_within(remote: RemoteTrack, seconds: float) -> int:
    """How many frames ``remote`` decodes in the next ``seconds`` (after what was queued)."""
    remote.drain()
    count = 0
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            async with asyncio.timeout(left):
                await remote.track.recv()
        except TimeoutError:
            break
        count += 1
    return count


async def test_the_operator_mutes_a_track_for_everyone(
    make_client: ClientFactory, sfu_server: SfuServer, room: str
) -> None:
    """POST /api/rooms/R/tracks/T/mute: the track reaches no one, whatever its publisher sends
    (a publisher that ignores the mute changes nothing), and again after unmute."""
    speaker = await make_client(room, "speaker", token=token(room, "speaker"))
    voice, video = await speaker.publish_many(
        [(ToneAudioTrack(440.0), "microphone"), (camera(0), "camera")]
    )
    listener = await make_client(room, "listener", token=token(room, "listener"))
    assert speaker.participant_id is not None
    heard = await listener.wait_for_track(speaker.participant_id, "audio", 20.0)
    seen = await listener.wait_for_track(speaker.participant_id, "video", 20.0)
    assert await frames_within(heard, 1.0) > 10 and await frames_within(seen, 1.0) > 5
    admin = create_token(KEYS, "main", room=room, identity="ops", grants=Grants(admin=True))
    headers = {"Authorization": f"Bearer {admin}"}
    async with aiohttp.ClientSession() as http:

        async def mute(track_id: str, muted: bool) -> None:
            url = f"{sfu_server.url}/api/rooms/{room}/tracks/{track_id}/mute"
            async with http.post(url, json={"muted": muted}, headers=headers) as response:
                assert response.status == 200, await response.text()
                assert (await response.json())["muted"] is muted

        for track_id in (voice.track_id, video.track_id):
            await mute(track_id, True)
        told = await speaker.wait_for(
            lambda m: m.type == "track-muted" and m.data["trackId"] == video.track_id, 5.0
        )
        assert told.data["muted"] is True
        assert speaker.local_tracks[video.track_id].muted  # shown as muted to its publisher
        await listener.wait_until(lambda: heard.muted and seen.muted, 5.0, "muted tracks")
        await asyncio.sleep(0.5)  # what was on its way
        muted_audio, muted_video = await frames_within(heard, 2.0), await frames_within(seen, 2.0)
        print(f"frames in 2 s while muted: audio {muted_audio}, video {muted_video}")
        assert muted_audio <= 2 and muted_video <= 1
        with pytest.raises(ServerError) as refused:  # its own unmute does not lift it
            await speaker.request(
                {"type": "mute", "trackId": voice.track_id, "muted": False, "requestId": "u"},
                expect="error",
            )
        assert refused.value.code == "not-allowed"

        for track_id in (voice.track_id, video.track_id):
            await mute(track_id, False)
        await speaker.wait_until(
            lambda: not speaker.local_tracks[voice.track_id].muted, 5.0, "the unmute told"
        )
        await asyncio.sleep(0.5)
        assert await frames_within(heard, 2.0) > 20 and await frames_within(seen, 2.0) > 5
