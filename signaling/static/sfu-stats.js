// Connection quality of an SfuClient's tracks, from RTCPeerConnection.getStats().
//
//   const quality = new QualityMonitor(client);
//   setInterval(async () => show(await quality.sample()), 1000);
//
// For a remote track: loss is what this browser counted on the m-line that carries it (the path
// from the server), RTT that of the connection to the server. For a track we publish: RTT and
// loss come from the server's receiver reports (remote-inbound-rtp).

/**
 * @typedef {object} TrackQuality
 * @property {"audio"|"video"} kind
 * @property {"inbound"|"outbound"} direction
 * @property {number|null} rttMs
 * @property {number|null} lossPercent    over the interval since the previous sample
 * @property {number|null} kbps           over the same interval
 * @property {number|null} framesPerSecond
 * @property {number|null} framesDecoded  inbound video
 * @property {number|null} frameWidth
 * @property {number|null} frameHeight
 * @property {number|null} audioEnergy    inbound audio: totalAudioEnergy
 */

export class QualityMonitor {
  /** @param {import("./sfu-client.js").SfuClient} client */
  constructor(client) {
    this.client = client;
    this._previous = new Map(); // stats id -> {timestamp, packets, lost, bytes}
  }

  /** @returns {Promise<Map<string, TrackQuality>>} by track id, ours and remote ones */
  async sample() {
    const result = new Map();
    const client = this.client;
    if (!client.pc || client.closed) return result;
    const report = await client.pc.getStats();
    const pathRttMs = selectedPairRttMs(report);
    const ownByMid = new Map(client.localTracks.map((l) => [l.transceiver.mid, l]));
    const remoteByMid = new Map([...client.remoteTracks.values()].map((r) => [r.mid, r]));
    report.forEach((stat) => {
      if (stat.type === "inbound-rtp") {
        const remote = remoteByMid.get(stat.mid);
        if (!remote) return;
        const delta = this._delta(stat, stat.packetsReceived, stat.packetsLost, stat.bytesReceived);
        result.set(remote.trackId, {
          kind: stat.kind,
          direction: "inbound",
          rttMs: pathRttMs,
          ...delta,
          ...video(stat),
          framesDecoded: stat.framesDecoded ?? null,
          audioEnergy: stat.totalAudioEnergy ?? null,
        });
      } else if (stat.type === "outbound-rtp") {
        const local = ownByMid.get(stat.mid);
        if (!local?.trackId) return;
        const fromServer = stat.remoteId ? report.get(stat.remoteId) : undefined;
        const { kbps } = this._delta(stat, stat.packetsSent, 0, stat.bytesSent);
        result.set(local.trackId, {
          kind: stat.kind,
          direction: "outbound",
          rttMs: fromServer?.roundTripTime !== undefined ? fromServer.roundTripTime * 1000 : pathRttMs,
          lossPercent: fromServer?.fractionLost !== undefined ? fromServer.fractionLost * 100 : null,
          kbps,
          ...video(stat),
          framesDecoded: null,
          audioEnergy: null,
        });
      }
    });
    return result;
  }

  _delta(stat, packets = 0, lost = 0, bytes = 0) {
    const previous = this._previous.get(stat.id);
    this._previous.set(stat.id, { timestamp: stat.timestamp, packets, lost, bytes });
    const fresh = !previous || stat.timestamp <= previous.timestamp;
    // the first sample has no interval yet: loss since the start
    const got = fresh ? packets : packets - previous.packets;
    const missed = Math.max(0, fresh ? lost : lost - previous.lost);
    return {
      lossPercent: got + missed > 0 ? (100 * missed) / (got + missed) : null,
      kbps: fresh ? null : (8 * (bytes - previous.bytes)) / (stat.timestamp - previous.timestamp),
    };
  }
}

/** RTT of the ICE candidate pair in use, in ms (null before it is known). */
function selectedPairRttMs(report) {
  let rtt = null;
  report.forEach((stat) => {
    if (stat.type !== "transport" || !stat.selectedCandidatePairId) return;
    const pair = report.get(stat.selectedCandidatePairId);
    if (pair?.currentRoundTripTime !== undefined) rtt = pair.currentRoundTripTime * 1000;
  });
  return rtt;
}

function video(stat) {
  return {
    framesPerSecond: stat.framesPerSecond ?? null,
    frameWidth: stat.frameWidth ?? null,
    frameHeight: stat.frameHeight ?? null,
  };
}
