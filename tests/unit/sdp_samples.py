# ruff: noqa: E501 - SDP lines are kept as the stacks wrote them
"""SDPs that real WebRTC stacks produced, for tests of sfu.media.sdp_check.

They are kept verbatim (a test that edits one says what it changed), so that the checks are
held against what clients send rather than against what the checks expect.
"""

#: Chromium 156 (headless): createOffer() with a WebAudio track and a canvas video track.
#: No candidates: it was captured before gathering; Chromium trickles them (CHROMIUM_CANDIDATES).
CHROMIUM_OFFER = """\
v=0
o=- 8871214786794437688 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1
a=extmap-allow-mixed
a=msid-semantic: WMS 63b857d0-4711-443e-a984-339bfa331289
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:87DE
a=ice-pwd:FB2/wBKLkNDcQLOuY4eXKSWE
a=ice-options:trickle
a=fingerprint:sha-256 72:C1:09:CB:89:07:47:91:64:00:1A:03:9B:D3:92:FC:46:08:F5:08:63:85:A8:42:E4:3A:AB:DD:69:C3:27:F9
a=setup:actpass
a=mid:0
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=sendrecv
a=msid:63b857d0-4711-443e-a984-339bfa331289 25a34c59-24b2-41a2-bc5b-1b3418f257f0
a=rtcp-mux
a=rtcp-rsize
a=rtcp-xr:rcvr-rtt=all
a=rtpmap:111 opus/48000/2
a=rtcp-fb:111 transport-cc
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:63 red/48000/2
a=fmtp:63 111/111
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:13 CN/8000
a=rtpmap:110 telephone-event/48000
a=rtpmap:126 telephone-event/8000
a=ssrc:1335049945 cname:bnAjkIskkLqOTGfW
a=ssrc:1335049945 msid:63b857d0-4711-443e-a984-339bfa331289 25a34c59-24b2-41a2-bc5b-1b3418f257f0
m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103 104 107 108 109 114 115 116 117 39 40 45 46 98 99 100 101 118 119 120
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:87DE
a=ice-pwd:FB2/wBKLkNDcQLOuY4eXKSWE
a=ice-options:trickle
a=fingerprint:sha-256 72:C1:09:CB:89:07:47:91:64:00:1A:03:9B:D3:92:FC:46:08:F5:08:63:85:A8:42:E4:3A:AB:DD:69:C3:27:F9
a=setup:actpass
a=mid:1
a=extmap:14 urn:ietf:params:rtp-hdrext:toffset
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:13 urn:3gpp:video-orientation
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:5 http://www.webrtc.org/experiments/rtp-hdrext/playout-delay
a=extmap:6 http://www.webrtc.org/experiments/rtp-hdrext/video-content-type
a=extmap:7 http://www.webrtc.org/experiments/rtp-hdrext/video-timing
a=extmap:8 http://www.webrtc.org/experiments/rtp-hdrext/color-space
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id
a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id
a=sendrecv
a=msid:63b857d0-4711-443e-a984-339bfa331289 eff42c77-1c56-4065-8835-1c1d3e38a171
a=rtcp-mux
a=rtcp-rsize
a=rtcp-xr:rcvr-rtt=all
a=rtpmap:96 VP8/90000
a=rtcp-fb:96 goog-remb
a=rtcp-fb:96 transport-cc
a=rtcp-fb:96 ccm fir
a=rtcp-fb:96 nack
a=rtcp-fb:96 nack pli
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96
a=rtpmap:102 H264/90000
a=rtcp-fb:102 goog-remb
a=rtcp-fb:102 transport-cc
a=rtcp-fb:102 ccm fir
a=rtcp-fb:102 nack
a=rtcp-fb:102 nack pli
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f
a=rtpmap:103 rtx/90000
a=fmtp:103 apt=102
a=rtpmap:104 H264/90000
a=rtcp-fb:104 goog-remb
a=rtcp-fb:104 transport-cc
a=rtcp-fb:104 ccm fir
a=rtcp-fb:104 nack
a=rtcp-fb:104 nack pli
a=fmtp:104 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f
a=rtpmap:107 rtx/90000
a=fmtp:107 apt=104
a=rtpmap:108 H264/90000
a=rtcp-fb:108 goog-remb
a=rtcp-fb:108 transport-cc
a=rtcp-fb:108 ccm fir
a=rtcp-fb:108 nack
a=rtcp-fb:108 nack pli
a=fmtp:108 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f
a=rtpmap:109 rtx/90000
a=fmtp:109 apt=108
a=rtpmap:114 H264/90000
a=rtcp-fb:114 goog-remb
a=rtcp-fb:114 transport-cc
a=rtcp-fb:114 ccm fir
a=rtcp-fb:114 nack
a=rtcp-fb:114 nack pli
a=fmtp:114 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f
a=rtpmap:115 rtx/90000
a=fmtp:115 apt=114
a=rtpmap:116 H264/90000
a=rtcp-fb:116 goog-remb
a=rtcp-fb:116 transport-cc
a=rtcp-fb:116 ccm fir
a=rtcp-fb:116 nack
a=rtcp-fb:116 nack pli
a=fmtp:116 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f
a=rtpmap:117 rtx/90000
a=fmtp:117 apt=116
a=rtpmap:39 H264/90000
a=rtcp-fb:39 goog-remb
a=rtcp-fb:39 transport-cc
a=rtcp-fb:39 ccm fir
a=rtcp-fb:39 nack
a=rtcp-fb:39 nack pli
a=fmtp:39 level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=4d001f
a=rtpmap:40 rtx/90000
a=fmtp:40 apt=39
a=rtpmap:45 AV1/90000
a=rtcp-fb:45 goog-remb
a=rtcp-fb:45 transport-cc
a=rtcp-fb:45 ccm fir
a=rtcp-fb:45 nack
a=rtcp-fb:45 nack pli
a=fmtp:45 level-idx=5;profile=0;tier=0
a=rtpmap:46 rtx/90000
a=fmtp:46 apt=45
a=rtpmap:98 VP9/90000
a=rtcp-fb:98 goog-remb
a=rtcp-fb:98 transport-cc
a=rtcp-fb:98 ccm fir
a=rtcp-fb:98 nack
a=rtcp-fb:98 nack pli
a=fmtp:98 profile-id=0
a=rtpmap:99 rtx/90000
a=fmtp:99 apt=98
a=rtpmap:100 VP9/90000
a=rtcp-fb:100 goog-remb
a=rtcp-fb:100 transport-cc
a=rtcp-fb:100 ccm fir
a=rtcp-fb:100 nack
a=rtcp-fb:100 nack pli
a=fmtp:100 profile-id=2
a=rtpmap:101 rtx/90000
a=fmtp:101 apt=100
a=rtpmap:118 red/90000
a=rtpmap:119 rtx/90000
a=fmtp:119 apt=118
a=rtpmap:120 ulpfec/90000
a=ssrc-group:FID 821060456 2996399431
a=ssrc:821060456 cname:bnAjkIskkLqOTGfW
a=ssrc:821060456 msid:63b857d0-4711-443e-a984-339bfa331289 eff42c77-1c56-4065-8835-1c1d3e38a171
a=ssrc:2996399431 cname:bnAjkIskkLqOTGfW
a=ssrc:2996399431 msid:63b857d0-4711-443e-a984-339bfa331289 eff42c77-1c56-4065-8835-1c1d3e38a171
""".replace("\n", "\r\n")

#: sfu_client (aiortc 1.16) publishing audio and video: the offer, candidates included.
AIORTC_OFFER = """\
v=0
o=- 4005002780 4005002780 IN IP4 0.0.0.0
s=-
t=0 0
a=group:BUNDLE 0 1
a=msid-semantic:WMS *
m=audio 59140 UDP/TLS/RTP/SAVPF 96 9 0 8
c=IN IP4 127.0.0.1
a=sendonly
a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:2 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=mid:0
a=msid:191c87f2-1635-410a-ad3c-7465e688c347 3c4a85f4-1157-48ec-a6d7-4d9b922799fe
a=rtcp:9 IN IP4 0.0.0.0
a=rtcp-mux
a=ssrc:1572530840 cname:ae870da0-6628-46e8-83ee-e9fa200802cb
a=rtpmap:96 opus/48000/2
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=candidate:16572de626da4e5384a0ce2d0d93678a 1 udp 2130706431 127.0.0.1 59140 typ host
a=end-of-candidates
a=ice-ufrag:b5Uf
a=ice-pwd:JQLug4SKVDuxZJaNo1ijdF
a=fingerprint:sha-256 7E:64:62:C8:87:88:AA:FA:67:79:78:21:7F:6B:0E:C5:EE:96:92:08:35:28:61:F2:21:DE:AE:F7:79:52:45:3D
a=fingerprint:sha-384 DE:99:9E:38:12:56:D1:72:DE:23:B8:19:80:01:11:25:7F:50:F3:42:E5:E9:8E:63:AA:4E:50:12:F1:1E:A5:17:29:F2:92:D2:6E:CA:F9:00:75:12:52:82:C7:03:B2:4F
a=fingerprint:sha-512 19:C9:35:A2:6E:19:B4:36:14:11:76:31:BD:2B:09:0A:2A:CF:48:26:53:12:03:FE:3C:64:BF:98:39:71:39:06:C5:37:C5:24:DA:BC:BF:15:B2:11:5C:C8:25:F5:62:E0:19:70:B8:24:32:68:C3:E3:0E:F9:53:AF:CD:69:A5:F1
a=setup:actpass
m=video 59140 UDP/TLS/RTP/SAVPF 97 98 99 100 101 102
c=IN IP4 127.0.0.1
a=sendonly
a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=mid:1
a=msid:191c87f2-1635-410a-ad3c-7465e688c347 1f7be911-ae09-4fb6-acac-8156846e6919
a=rtcp:9 IN IP4 0.0.0.0
a=rtcp-mux
a=ssrc-group:FID 1584250838 74999777
a=ssrc:1584250838 cname:ae870da0-6628-46e8-83ee-e9fa200802cb
a=ssrc:74999777 cname:ae870da0-6628-46e8-83ee-e9fa200802cb
a=rtpmap:97 VP8/90000
a=rtcp-fb:97 nack
a=rtcp-fb:97 nack pli
a=rtcp-fb:97 goog-remb
a=rtpmap:98 rtx/90000
a=fmtp:98 apt=97
a=rtpmap:99 H264/90000
a=rtcp-fb:99 nack
a=rtcp-fb:99 nack pli
a=rtcp-fb:99 goog-remb
a=fmtp:99 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f
a=rtpmap:100 rtx/90000
a=fmtp:100 apt=99
a=rtpmap:101 H264/90000
a=rtcp-fb:101 nack
a=rtcp-fb:101 nack pli
a=rtcp-fb:101 goog-remb
a=fmtp:101 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f
a=rtpmap:102 rtx/90000
a=fmtp:102 apt=101
a=candidate:16572de626da4e5384a0ce2d0d93678a 1 udp 2130706431 127.0.0.1 59140 typ host
a=end-of-candidates
a=ice-ufrag:b5Uf
a=ice-pwd:JQLug4SKVDuxZJaNo1ijdF
a=fingerprint:sha-256 7E:64:62:C8:87:88:AA:FA:67:79:78:21:7F:6B:0E:C5:EE:96:92:08:35:28:61:F2:21:DE:AE:F7:79:52:45:3D
a=fingerprint:sha-384 DE:99:9E:38:12:56:D1:72:DE:23:B8:19:80:01:11:25:7F:50:F3:42:E5:E9:8E:63:AA:4E:50:12:F1:1E:A5:17:29:F2:92:D2:6E:CA:F9:00:75:12:52:82:C7:03:B2:4F
a=fingerprint:sha-512 19:C9:35:A2:6E:19:B4:36:14:11:76:31:BD:2B:09:0A:2A:CF:48:26:53:12:03:FE:3C:64:BF:98:39:71:39:06:C5:37:C5:24:DA:BC:BF:15:B2:11:5C:C8:25:F5:62:E0:19:70:B8:24:32:68:C3:E3:0E:F9:53:AF:CD:69:A5:F1
a=setup:actpass
""".replace("\n", "\r\n")

#: sfu_client (aiortc 1.16) answering the server's offer of one audio and one video track.
AIORTC_ANSWER = """\
v=0
o=- 4005002780 4005002780 IN IP4 0.0.0.0
s=-
t=0 0
a=group:BUNDLE 0 1
a=msid-semantic:WMS *
m=audio 53043 UDP/TLS/RTP/SAVPF 96
c=IN IP4 127.0.0.1
a=recvonly
a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:2 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=mid:0
a=msid:bb513a09-a11a-46ff-a6fa-869559d02f2a f664fbec-7e46-4ee6-8e10-a8a0708e8fce
a=rtcp:9 IN IP4 0.0.0.0
a=rtcp-mux
a=ssrc:472719621 cname:e9211f1f-2a01-453c-bc12-78b263456e8d
a=rtpmap:96 opus/48000/2
a=candidate:16572de626da4e5384a0ce2d0d93678a 1 udp 2130706431 127.0.0.1 53043 typ host
a=end-of-candidates
a=ice-ufrag:AUXs
a=ice-pwd:j05DnvLTPW25yLGhW39d9A
a=fingerprint:sha-256 51:49:D1:14:6A:47:7A:9E:58:2E:35:1A:63:7B:A8:0F:E9:12:9A:A2:7C:9B:21:D0:47:00:22:62:0C:4A:C9:A3
a=fingerprint:sha-384 BF:78:BF:4B:5A:19:DA:E7:5B:8A:A1:3F:06:C9:37:07:A3:B4:53:39:20:56:D8:C3:3E:34:3F:95:31:8A:8B:6C:FC:68:18:21:B2:97:E2:CF:6C:64:9A:12:DF:2E:E2:86
a=fingerprint:sha-512 3D:18:89:66:C9:24:78:FE:F2:82:42:20:44:04:7F:A6:90:6D:1D:A4:E8:F3:F5:7A:10:62:EB:D0:92:36:89:F4:6A:35:90:D1:1A:43:01:3A:A8:2C:99:0D:4E:D3:08:7D:60:2A:2E:F6:97:33:5E:09:E3:2A:DA:C8:57:81:8D:CC
a=setup:active
m=video 53043 UDP/TLS/RTP/SAVPF 97 98
c=IN IP4 127.0.0.1
a=recvonly
a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=mid:1
a=msid:bb513a09-a11a-46ff-a6fa-869559d02f2a 75dcd335-98ac-4d00-ae1e-73452ce6fb1d
a=rtcp:9 IN IP4 0.0.0.0
a=rtcp-mux
a=ssrc-group:FID 3191581535 2323970025
a=ssrc:3191581535 cname:e9211f1f-2a01-453c-bc12-78b263456e8d
a=ssrc:2323970025 cname:e9211f1f-2a01-453c-bc12-78b263456e8d
a=rtpmap:97 VP8/90000
a=rtcp-fb:97 nack
a=rtcp-fb:97 nack pli
a=rtcp-fb:97 goog-remb
a=rtpmap:98 rtx/90000
a=fmtp:98 apt=97
a=candidate:16572de626da4e5384a0ce2d0d93678a 1 udp 2130706431 127.0.0.1 53043 typ host
a=end-of-candidates
a=ice-ufrag:AUXs
a=ice-pwd:j05DnvLTPW25yLGhW39d9A
a=fingerprint:sha-256 51:49:D1:14:6A:47:7A:9E:58:2E:35:1A:63:7B:A8:0F:E9:12:9A:A2:7C:9B:21:D0:47:00:22:62:0C:4A:C9:A3
a=fingerprint:sha-384 BF:78:BF:4B:5A:19:DA:E7:5B:8A:A1:3F:06:C9:37:07:A3:B4:53:39:20:56:D8:C3:3E:34:3F:95:31:8A:8B:6C:FC:68:18:21:B2:97:E2:CF:6C:64:9A:12:DF:2E:E2:86
a=fingerprint:sha-512 3D:18:89:66:C9:24:78:FE:F2:82:42:20:44:04:7F:A6:90:6D:1D:A4:E8:F3:F5:7A:10:62:EB:D0:92:36:89:F4:6A:35:90:D1:1A:43:01:3A:A8:2C:99:0D:4E:D3:08:7D:60:2A:2E:F6:97:33:5E:09:E3:2A:DA:C8:57:81:8D:CC
a=setup:active
""".replace("\n", "\r\n")

#: Trickled candidates as Chromium and Firefox write them (RTCIceCandidate.candidate), with
#: documentation addresses (RFC 5737): they are parsed, never contacted.
CHROMIUM_CANDIDATES = (
    "candidate:2999745851 1 udp 2122260223 192.0.2.1 63021 typ host generation 0 ufrag vWHf "
    "network-id 1",
    "candidate:854413036 1 udp 1685987071 203.0.113.7 63022 typ srflx raddr 192.0.2.1 rport "
    "63022 generation 0 ufrag vWHf network-id 2 network-cost 10",
    "candidate:4233069003 1 tcp 1518280447 192.0.2.1 9 typ host tcptype active generation 0 "
    "ufrag vWHf network-id 1",
    "candidate:1840965416 1 udp 2113937151 5d3d9a1c-0a4e-4f5b-9a55-1f2e3d4c5b6a.local 54400 "
    "typ host generation 0 ufrag vWHf network-cost 999",
    "candidate:3 1 udp 41885695 198.51.100.4 3478 typ relay raddr 203.0.113.7 rport 63022 "
    "generation 0 ufrag vWHf network-id 2",
)
FIREFOX_CANDIDATES = (
    "candidate:0 1 UDP 2122252543 192.0.2.36 62453 typ host",
    "candidate:1 1 TCP 2105524479 192.0.2.36 9 typ host tcptype active",
    "candidate:2 1 UDP 1686052863 203.0.113.4 62453 typ srflx raddr 192.0.2.36 rport 62453",
    "candidate:3 1 UDP 2122187007 2001:db8::1 52013 typ host",
)
