// A browser client of the aiosfu signaling protocol, version 1 (docs/protocol.md).
//
// One WebSocket and one RTCPeerConnection per participant. No dependencies, no build step:
//
//   import { SfuClient } from "/sfu-client.js";
//   const client = new SfuClient();                      // ws(s)://<this host>/ws
//   client.addEventListener("track", (e) => attach(e.detail));        // a RemoteTrack
//   client.addEventListener("track-ended", (e) => detach(e.detail));
//   await client.join("standup", "Ann");
//   const mic = await client.publish(micTrack, { source: "microphone" });
//   await client.setMuted(mic, true);
//
// Negotiation follows section 8 of the protocol, perfect negotiation with fixed roles: the server
// is polite, this client is impolite. All negotiation steps run one at a time in `#pump()`:
// - a server offer is answered, unless an offer of ours is outstanding: then it is ignored (the
//   server abandons it and offers again after answering ours);
// - local changes (publish, unpublish) are queued and made in one client offer when the
//   connection is stable; changes requested together (in the same task) share one offer;
// - a server offer waiting to be answered goes before queued local changes.
// Received m-lines are mapped to remote tracks with the `tracks` map of the latest server offer,
// by transceiver mid: a mid may carry another participant's track later, so `track` events are
// driven by that map, never by RTCPeerConnection's own `track` event.
//
// Connection quality per track (RTT, loss, bitrate) is in sfu-stats.js; the server's view of
// this client's downlink (its bandwidth estimate) comes as "connection-quality" events every 2 s.
// When the estimate cannot carry even the smallest layer of a received video, the server pauses
// it ("stream-state" paused, reason "bandwidth") and resumes it when it fits again.
//
// Simulcast (`publish(track, {simulcast: true})`): the camera is sent as three encodings (rids
// q, h, f); the server tells which ones somebody receives (`publisherLayers`) and the others
// are set inactive, so the browser stops encoding them. Receiving: `setTrackSettings()` says
// what this client wants of a track (pause, a layer, a size), and adaptive stream (on by
// default; adaptive-stream.js) does it by itself for the <video> elements registered with
// `observeElement()`: a small tile gets a small layer, a hidden one is paused.
//
// Mute (see `setMuted`): the sender's encoding is deactivated (`active: false`), so no RTP is sent
// for a muted track at all, and the track is disabled (`enabled = false`) as well, so that a browser
// that cannot deactivate an encoding sends silence / black frames instead.
//
// Reconnecting (protocol section 1, "Resuming a session"): when the WebSocket closes without
// `bye` or `left` (or the browser says it is `online` again after a network change), the client
// says "reconnecting", keeps the peer connection and its tracks, and sends `resume` on new
// WebSockets with backoff (100 ms doubling to 2 s) for the server's resume window; on `resumed`
// what the server had not read of ours is sent again and the missed messages follow ("reconnected",
// how "resumed": same participant id). Messages the application sends meanwhile go out after the
// resume, and requests wait for their replies. When the session cannot be resumed, the client
// joins the same room again with the same name, on a new peer connection, and publishes the same
// tracks again (the same LocalTrack objects, with new track ids): "reconnected", how "rejoined",
// with a new participant id. If that fails too (`rejoinTimeoutMs`), "closed". With several
// `urls`, a resume whose node cannot be reached while another URL can gives up at once (that
// node is gone) and joins again through the others. A `bye` with reason
// `reconnect` (the server lost the session, not the room: its worker went away) joins again at
// once in the same way, without trying to resume.
//
// ICE restart (protocol section 8, ICE; RFC 8445 §9): `restartIce()` makes a client offer with
// new ICE credentials on the same peer connection (queued as any local change); DTLS, tracks and
// ids stay. The client does it by itself ("ice-restart") when the browser says it is `online`
// again (at once, beside the resume), when `iceConnectionState` stays "disconnected" for 1 s or
// turns "failed", and again with backoff (2 s doubling to 8 s, within the server's 10 s) while the
// connection does not come back. An automatic restart not answered within 3 s means the WebSocket
// is dead unnoticed: the client resumes on a new one. A restart the server offers (its own offer
// with new credentials) needs nothing from here: the browser answers it as any offer.

import { AdaptiveStream } from "./adaptive-stream.js";

export const PROTOCOL_VERSION = 1;

const DEFAULT_REQUEST_TIMEOUT_MS = 10000;
/** How long to keep trying to join again once a session cannot be resumed. */
const DEFAULT_REJOIN_TIMEOUT_MS = 30000;
/** Backoff between reconnection attempts: the first wait, and the longest. */
const RECONNECT_FIRST_WAIT_MS = 100;
const RECONNECT_LONGEST_WAIT_MS = 2000;
/** How long "disconnected" may last before the client restarts ICE (it often recovers alone). */
const ICE_DISCONNECTED_GRACE_MS = 1000;
/** A restart that has not brought the connection back is made again after this, doubling. */
const ICE_RETRY_FIRST_MS = 2000;
const ICE_RETRY_LONGEST_MS = 8000;
/** An automatic restart's answer not here after this long: the WebSocket is presumed dead. */
const ICE_ANSWER_WAIT_MS = 3000;
/**
 * With several `urls`, a resume whose socket closed before opening asks whether another node
 * answers (a WebSocket that opens within this long, closed at once): a browser cannot tell a
 * refused connection from its own network being away, but a node that answers says the network
 * works, so the session's node is gone and the client joins again through the others.
 */
const NODE_PROBE_TIMEOUT_MS = 2000;
/** Messages kept for sending again after a resume (the server keeps as many of its own). */
const KEEP_SENT = 1024;
/** Track ids in one setTrackSettings (the protocol's limit). */
const MAX_TRACK_IDS = 512;

/**
 * The encodings of a simulcast camera, smallest first (a 1280x720 capture gives 320x180,
 * 640x360, 1280x720). The server ranks layers by what it measures, not by rid or order.
 * @type {RTCRtpEncodingParameters[]}
 */
export const SIMULCAST_ENCODINGS = Object.freeze([
  { rid: "q", scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: "h", scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: "f", maxBitrate: 1_500_000 },
]);

/**
 * @typedef {object} TrackInfo            what a participant publishes (from the server's events)
 * @property {string} trackId
 * @property {string} participantId
 * @property {"audio"|"video"} kind
 * @property {string} source              "microphone", "camera", "screen", ... (the publisher's label)
 * @property {boolean} muted
 *
 * @typedef {object} Participant
 * @property {string} participantId
 * @property {string} name
 * @property {Map<string, TrackInfo>} tracks
 *
 * @typedef {object} RemoteTrack          a remote track carried by one of our m-lines now
 * @property {string} participantId
 * @property {string} trackId
 * @property {"audio"|"video"} kind
 * @property {string} source
 * @property {boolean} muted
 * @property {string} mid
 * @property {MediaStreamTrack} track     the receiver's track (the same object when a mid is reused)
 * @property {RTCRtpReceiver} receiver
 *
 * @typedef {object} LocalTrack           a track this client publishes
 * @property {string|null} trackId        the server's id, once the answer has given it
 * @property {"audio"|"video"} kind
 * @property {string} source
 * @property {MediaStreamTrack|null} track
 * @property {RTCRtpTransceiver} transceiver
 * @property {boolean} muted
 * @property {boolean} mutedByOperator    the operator muted it: `setMuted(local, false)` is refused
 * @property {boolean} published          false once unpublished
 * @property {boolean} simulcast          sent as several encodings (rids)
 * @property {Map<string, boolean>} layers  rid -> wanted, as the server last said (publisherLayers)
 *
 * @typedef {object} ConnectionQuality    the server's view of this client's downlink (every 2 s)
 * @property {"excellent"|"good"|"poor"} quality
 * @property {number|null} rttMs
 * @property {number} lossPercent         what this client reports losing on the way from the server
 * @property {number|null} estimateBps    the server's bandwidth estimate (null: none)
 * @property {number} allocatedBps        what the server sends of it (the layers chosen, audio)
 * @property {boolean} probing            the server is probing for more
 *
 * @typedef {object} StreamState          a received video the server paused or resumed
 * @property {string} trackId
 * @property {"paused"|"active"} state
 * @property {string} reason              "bandwidth": even its smallest layer does not fit
 * @property {RemoteTrack|null} remote    the track, if it is carried now
 *
 * @typedef {object} TrackSettings        what this client wants of a received video track
 * @property {boolean} [paused]           forward nothing of it
 * @property {number} [maxLayer]          0 the smallest layer
 * @property {number} [maxWidth]          pixels: the smallest layer at least this large
 * @property {number} [maxHeight]
 * @property {number} [maxTemporalLayer]  0-3
 */

export class SfuError extends Error {
  /** @param {string} code @param {string} message */
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.name = "SfuError";
    this.code = code;
  }
}

/** The signaling URL of the server that served this page: ws(s)://host/ws. */
export function defaultSignalingUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

/**
 * Events (CustomEvent, payload in `detail`):
 *   "participant-joined"  Participant            "participant-left"   {participant, reason}
 *   "track-published"     TrackInfo              "track-unpublished"  TrackInfo
 *   "track-muted"         TrackInfo (muted changed; also RemoteTrack.muted is updated)
 *   "local-muted"         {local, muted, by: "operator"} (the operator muted or unmuted one of
 *                         our tracks; `local.muted`, `local.mutedByOperator` say how it is now)
 *   "track"               RemoteTrack (its media is now carried; play `detail.track`)
 *   "track-ended"         RemoteTrack (no longer carried: detach it)
 *   "connectionstatechange" {state}              "closed"             {reason}
 *   "publisher-layers"    {local, layers} (LocalTrack; rid -> wanted: the others are turned off)
 *   "connection-quality"  ConnectionQuality (also kept in `connectionQuality`)
 *   "stream-state"        StreamState (paused ones are kept in `pausedTracks` until active again)
 *   "error"               {error} (a server error no call was waiting for, a failed negotiation)
 *   "reconnecting"        {reason} (the WebSocket dropped; media goes on meanwhile if it can)
 *   "reconnected"         {how: "resumed", participantId, replayed} (the same session: nothing
 *                         was missed; `replayed` server messages were delivered late)
 *                         {how: "rejoined", participantId, reason} (a new session, `reason`: why
 *                         the old one could not be resumed; a new participant id,
 *                         remote tracks ended and came again as "track" events, the others
 *                         as "participant-joined"/"participant-left" (reason "absent-after-rejoin")
 *                         and track events where they changed, local tracks published again
 *                         with new track ids; subscribe() again what autoSubscribe does not give)
 * After "reconnecting" comes either "reconnected" or "closed".
 *   "ice-restart"         {reason} (the client restarts ICE by itself: "network changed" (the
 *                         browser's `online`), "disconnected" (for 1 s), "failed", each with
 *                         `attempt` 1, 2, ... until the connection is back)
 */
export class SfuClient extends EventTarget {
  /**
   * @param {string} [url] signaling WebSocket URL; defaults to this page's server
   * @param {{iceServers?: RTCIceServer[], requestTimeoutMs?: number, log?: (...args: any[]) => void,
   *          adaptiveStream?: boolean, adaptiveStreamDebounceMs?: number,
   *          autoReconnect?: boolean, rejoinTimeoutMs?: number, urls?: string[]}} [options]
   *   `iceServers`: the application's own STUN/TURN servers (default none); those the server
   *   gives in `joined`/`resumed` (TURN with this session's credentials) are used after them.
   *   `adaptiveStream: false`: `observeElement()` does nothing (every track at its best layer,
   *   unless `setTrackSettings()` says otherwise).
   *   `autoReconnect: false`: a dropped WebSocket closes the client (as "closed").
   *   `urls`: the signaling URLs of several nodes of one cluster (`url` is then ignored): tried in
   *   order to join, and joining again after a lost session moves on to the next when one cannot
   *   be reached or refuses the join as `server-draining` (it is stopping). A resume stays with
   *   the node that held the session, unless that node cannot be reached while another can: it
   *   is gone, and the client joins again through the others.
   */
  constructor(url = defaultSignalingUrl(), options = {}) {
    super();
    /** the nodes of one cluster this client may join through (options.urls), current first */
    this.urls = Array.isArray(options.urls) && options.urls.length ? [...options.urls] : [url];
    this.url = this.urls[0];
    this.iceServers = options.iceServers ?? [];
    /** @type {RTCIceServer[]} from the last `joined`/`resumed` (docs/protocol.md, `joined`) */
    this.serverIceServers = [];
    this.requestTimeoutMs = options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    this.log = options.log ?? (() => {});
    /** @type {RTCPeerConnection|null} */
    this.pc = null;
    /** @type {WebSocket|null} */
    this.ws = null;
    this.room = null;
    this.name = null;
    this.participantId = null;
    /** @type {Map<string, Participant>} */
    this.participants = new Map();
    /** @type {Map<string, RemoteTrack>} by trackId */
    this.remoteTracks = new Map();
    /** @type {LocalTrack[]} */
    this.localTracks = [];
    this.closeReason = null;
    /** server offers ignored because an offer of ours was outstanding (glare) */
    this.ignoredOffers = 0;
    /** @type {ConnectionQuality|null} the server's latest report */
    this.connectionQuality = null;
    /** @type {Map<string, string>} trackId -> reason, for received tracks the server paused */
    this.pausedTracks = new Map();
    this.autoReconnect = options.autoReconnect ?? true;
    this.rejoinTimeoutMs = options.rejoinTimeoutMs ?? DEFAULT_REJOIN_TIMEOUT_MS;
    /** @type {string|null} what `resume` needs (from the last joined/resumed; a secret) */
    this.resumeToken = null;
    /** seconds the server waits for a resume */
    this.resumeWindow = 0;
    /** between "reconnecting" and "reconnected" */
    this.reconnecting = false;
    this._sessionGone = false; // a bye "reconnect": join again without trying to resume
    /** how many times a new WebSocket resumed the session, and how many times it joined again */
    this.resumes = 0;
    this.rejoins = 0;
    /** ICE restarts this client made (answered by the server), by itself or by `restartIce()` */
    this.iceRestarts = 0;

    this._requestIds = 0;
    /** @type {Map<string, {expect: string, resolve: Function, reject: Function, timer: number}>} */
    this._pending = new Map();
    /** @type {Record<string, {participantId: string, trackId: string, kind: string}>} */
    this._receiving = {}; // mid -> entry of the latest server offer's `tracks`
    this._serverOffer = null; // {message, offersSent}: a server offer waiting to be answered
    /** @type {{apply: () => void, done: (error?: Error) => void}[]} */
    this._changes = [];
    this._pumpingSession = -1; // the session whose #pump() runs
    this._ownOfferOutstanding = false;
    this._offersSent = 0;
    this._descriptionSent = false; // candidates wait for the first offer/answer
    /** @type {(RTCIceCandidate|null)[]} */
    this._queuedCandidates = [];
    /** @type {Set<RTCRtpTransceiver>} the sending transceivers this client added */
    this._ownTransceivers = new Set();
    /** @type {Set<RTCRtpTransceiver>} those of them made with simulcast encodings */
    this._simulcastTransceivers = new Set();
    /** @type {Map<string, Map<string, boolean>>} publisherLayers for a track id not known yet */
    this._pendingLayers = new Map();
    /** @type {WeakMap<RTCRtpSender, Promise<void>>} setParameters calls, one at a time per sender */
    this._encodingUpdates = new WeakMap();
    /** @type {Map<string, TrackSettings>} trackId -> what setTrackSettings() asked */
    this._appSettings = new Map();
    /** @type {Map<string, string>} trackId -> the settings last sent for it (JSON) */
    this._sentSettings = new Map();
    this._settingsRequests = 0;
    /** @type {WeakMap<LocalTrack, readonly RTCRtpEncodingParameters[]|null>} as published */
    this._encodings = new WeakMap();
    this._autoSubscribe = true;
    this._token = null;
    // resume bookkeeping: the highest seq handled, and what was sent since joined
    this._lastSeq = 0;
    /** @type {string[]} */
    this._sent = [];
    this._sentTotal = 0; // as the server counts them (`resumed.received`)
    this._session = 0; // counts rejoins: work of a replaced session must not touch the new one
    this._rejoining = false; // no session: messages are dropped until the new one's joined
    /** @type {WebSocket|null} a reconnection attempt's socket, until its first reply */
    this._candidate = null;
    /** @type {((message: any) => void)|null} */
    this._candidateReply = null;
    /** @type {{apply: () => void, done: (error?: Error) => void}[]|null} in the outstanding offer */
    this._offering = null;
    /** @type {any} the refusal that ended the last reconnection attempt */
    this._refusal = null;
    this._onOnline = () => {
      this._networkChanged("network changed");
      this._autoRestartIce("network changed");
    };
    /** @type {number|null} an automatic ICE restart due (or the check after one) */
    this._iceTimer = null;
    this._iceRetryMs = ICE_RETRY_FIRST_MS;
    this._iceAttempts = 0; // automatic restarts since the connection was last up
    this._iceRestarting = false; // an automatic restart waits for its answer
    /** @type {string|null} the network changed during that restart: another one after it */
    this._iceRestartAgain = null;
    /** @type {AdaptiveStream|null} */
    this.adaptiveStream =
      options.adaptiveStream === false
        ? null
        : new AdaptiveStream((trackIds) => this._sendSettings(trackIds, true), {
            debounceMs: options.adaptiveStreamDebounceMs,
          });
  }

  get closed() {
    return this.closeReason !== null;
  }

  // --- lifecycle ---

  /**
   * Open the WebSocket, join `room` as `name` and create the peer connection.
   * `autoSubscribe: false`: receive only the tracks `subscribe()` asks for (default: every track
   * the others publish, except those `unsubscribe()`d). `token`: the access token a server with
   * keys asks for (docs/protocol.md, `join`); a rejoin uses it again.
   * @param {string} room @param {string} name
   * @param {{autoSubscribe?: boolean, token?: string}} [options]
   * @returns {Promise<{participantId: string, participants: Participant[]}>}
   */
  async join(room, name, options = {}) {
    if (this.ws) throw new Error("join: this client has joined already (make a new one)");
    const join = { type: "join", v: PROTOCOL_VERSION, room, name };
    if (options.autoSubscribe === false) join.autoSubscribe = false;
    if (options.token) join.token = options.token;
    let reply;
    for (let tried = 1; ; tried++) {
      const ws = (this.ws = new WebSocket(this.url));
      this._watch(ws);
      const opened = await new Promise((resolve) => {
        ws.addEventListener("open", () => resolve(true), { once: true });
        ws.addEventListener("close", () => resolve(false), { once: true });
      });
      if (!opened) {
        if (tried >= this.urls.length) throw new Error(`cannot connect to ${this.urls.join(", ")}`);
        this._nextUrl(); // that node cannot be reached: the next one
        continue;
      }
      try {
        reply = await this._request(join, "joined");
        break;
      } catch (error) {
        if (error instanceof SfuError && error.code === "server-draining" && tried < this.urls.length) {
          this.ws = null; // that node is stopping: the next one (its socket's close is not ours)
          ws.close(1000, "server-draining");
          this._nextUrl();
          continue;
        }
        this.close("join failed");
        throw error;
      }
    }
    this.room = room;
    this.name = name;
    this._autoSubscribe = options.autoSubscribe !== false;
    this._token = options.token || null;
    this.participantId = reply.participantId;
    this._grant(reply);
    for (const data of reply.participants ?? []) {
      const participant = participantFrom(data);
      this.participants.set(participant.participantId, participant);
    }
    this._createPeerConnection();
    globalThis.addEventListener?.("online", this._onOnline);
    return { participantId: this.participantId, participants: [...this.participants.values()] };
  }

  /**
   * Receive these tracks of others (ids from `track-published` / `participants`); a server offer
   * then delivers them as "track" events. No reply: an unknown id comes back as an "error" event.
   * @param {string[]} trackIds
   */
  subscribe(trackIds) {
    this._send({ type: "subscribe", trackIds });
  }

  /** Stop receiving these tracks: they end with "track-ended". @param {string[]} trackIds */
  unsubscribe(trackIds) {
    this._send({ type: "unsubscribe", trackIds });
  }

  /**
   * Say what this client wants of these received video tracks; replaces what was set before
   * for them (`{}`: the best layer). Adaptive stream adds to it: a size limit is the smaller of
   * the two, and a track is paused if either says so. No reply: an unknown id comes back as an
   * "error" event.
   * @param {string[]} trackIds @param {TrackSettings} [settings]
   */
  setTrackSettings(trackIds, settings = {}) {
    for (const trackId of trackIds) this._appSettings.set(trackId, { ...settings });
    this._sendSettings(trackIds, false);
  }

  /**
   * Adaptive stream: report the rendered size of `element` (a <video> playing the remote
   * video track `trackId`) and whether it is visible, so that the server sends a layer that
   * fits it and nothing while it is hidden. Call it on each "track" event you render; it lasts
   * until the returned function is called or the track ends. Nothing is asked before the
   * element is first measured.
   * @param {string} trackId @param {Element} element @returns {() => void} stops observing it
   */
  observeElement(trackId, element) {
    if (!this.adaptiveStream || this.closed) return () => {};
    return this.adaptiveStream.observe(trackId, element);
  }

  /** Send `leave`, wait for `left` (briefly), and close everything. While reconnecting: at once. */
  async leave() {
    if (this.closed) return;
    if (!this.reconnecting) {
      try {
        await this._request({ type: "leave" }, "left", 2000);
      } catch (error) {
        this.log("leave:", error);
      }
    }
    this._closeSocket("left");
  }

  /**
   * Close the WebSocket and the peer connection now. Idempotent. The server removes us at once
   * if the socket is open (`leave` goes first: a socket closed without it waits for a resume).
   */
  close(reason = "closed") {
    const ws = this.ws;
    if (ws && ws.readyState === WebSocket.OPEN && this.participantId && !this.closed && !this.reconnecting) {
      ws.send(JSON.stringify({ type: "leave" }));
    }
    this._closeSocket(reason);
  }

  _closeSocket(reason) {
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000, reason.slice(0, 120));
    this._shutdown(reason);
  }

  _shutdown(reason) {
    if (this.closed) return;
    this.closeReason = reason;
    this.reconnecting = false;
    this._rejoining = false;
    this._candidate?.close(); // its attempt ends; the reconnection loop sees `closed`
    globalThis.removeEventListener?.("online", this._onOnline);
    this._stopIceTimer();
    for (const pending of this._pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(new Error(`connection closed: ${reason}`));
    }
    this._pending.clear();
    for (const change of this._changes.splice(0)) change.done(new Error(`connection closed: ${reason}`));
    for (const remote of [...this.remoteTracks.values()]) this._endRemote(remote);
    this.adaptiveStream?.close();
    if (this.pc) this.pc.close();
    this._emit("closed", { reason });
  }

  _createPeerConnection() {
    const pc = (this.pc = new RTCPeerConnection({
      iceServers: [...this.iceServers, ...this.serverIceServers],
      bundlePolicy: "max-bundle",
      rtcpMuxPolicy: "require",
    }));
    pc.addEventListener("icecandidate", (event) => {
      if (pc === this.pc) this._onLocalCandidate(event.candidate);
    });
    pc.addEventListener("connectionstatechange", () => {
      if (pc === this.pc) this._emit("connectionstatechange", { state: pc.connectionState });
    });
    pc.addEventListener("iceconnectionstatechange", () => {
      if (pc === this.pc) this._onIceState();
    });
  }

  // --- reconnecting (protocol section 1, "Resuming a session") ---

  /** Route a socket's messages and close: to the session if it is `ws`, else to its attempt. */
  _watch(ws) {
    ws.addEventListener("message", (event) => {
      if (ws === this.ws) {
        if (!this._rejoining) this._onMessage(event.data);
      } else if (ws === this._candidate && this._candidateReply) {
        let message = null;
        try {
          message = JSON.parse(event.data);
        } catch {
          this.log("bad JSON from the server:", event.data);
        }
        this._candidateReply(message);
      }
    });
    ws.addEventListener("close", (event) => {
      if (ws === this.ws) this._onClose(event);
    });
  }

  _onClose(event) {
    if (this.closed || this.reconnecting) return;
    const reason = event.reason || `websocket closed (${event.code})`;
    // not joined (yet), or someone else resumed our session, or a message of ours was too
    // large (it would be sent again): nothing to reconnect
    if (!this.participantId || !this.autoReconnect || event.reason === "resumed" || event.code === 1009) {
      this._shutdown(event.reason === "resumed" ? "resumed elsewhere" : reason);
      return;
    }
    this._reconnect(reason);
  }

  /**
   * The browser is online again (e.g. Wi-Fi to mobile), or an ICE restart got no answer: the old
   * socket may be dead unnoticed. @param {string} reason
   */
  _networkChanged(reason) {
    if (this.closed || this.reconnecting || !this.participantId || !this.resumeToken || !this.autoReconnect) {
      return;
    }
    const old = this.ws;
    this._reconnect(reason);
    old?.close(4000, reason);
  }

  /** From `joined` or `resumed`: the token for the next resume (none: the server does not resume). */
  _grant(reply) {
    this.resumeToken = typeof reply.resumeToken === "string" && reply.resumeToken ? reply.resumeToken : null;
    this.resumeWindow = typeof reply.resumeWindow === "number" ? reply.resumeWindow : 0;
    // TURN servers with this session's credentials; a resume brings fresh ones, which the peer
    // connection uses from its next ICE restart on (its TURN allocation keeps the old ones)
    this.serverIceServers = Array.isArray(reply.iceServers) ? reply.iceServers : [];
    if (this.pc && this.pc.signalingState !== "closed") {
      try {
        this.pc.setConfiguration({ ...this.pc.getConfiguration(), iceServers: [...this.iceServers, ...this.serverIceServers] });
      } catch (error) {
        this.log("setConfiguration failed", error);
      }
    }
  }

  /** Resume within the window, else join again; "closed" if neither works. */
  async _reconnect(reason) {
    this.reconnecting = true;
    this._emit("reconnecting", { reason });
    let notResumed = "the server does not resume sessions";
    const gone = this._sessionGone;
    this._sessionGone = false;
    if (gone) notResumed = "the server lost the session";
    else if (this.resumeToken && this.resumeWindow > 0) {
      const outcome = await this._retry(performance.now() + this.resumeWindow * 1000, (timeoutMs) => {
        const resume = { type: "resume", v: PROTOCOL_VERSION, token: this.resumeToken, lastSeq: this._lastSeq };
        return this._attempt(resume, (ws, reply) => this._onResumeReply(ws, reply), timeoutMs);
      });
      if (outcome === "adopted" || this.closed) return;
      notResumed = this._refusal ? describeRefusal(this._refusal) : "the resume window is over";
    }
    await this._rejoin(reason, notResumed);
  }

  /**
   * Call `attempt` with backoff until it says "adopted" or "refused", or `deadline`
   * (performance.now()) passes. @returns {Promise<"adopted"|"refused"|"retry">}
   */
  async _retry(deadline, attempt) {
    let wait = RECONNECT_FIRST_WAIT_MS;
    this._refusal = null;
    while (!this.closed && performance.now() < deadline) {
      const outcome = await attempt(Math.min(this.requestTimeoutMs, deadline - performance.now()));
      if (outcome !== "retry" || this.closed) return outcome;
      await new Promise((resolve) => setTimeout(resolve, Math.min(wait, Math.max(0, deadline - performance.now()))));
      wait = Math.min(wait * 2, RECONNECT_LONGEST_WAIT_MS);
    }
    return "retry";
  }

  /**
   * Open a WebSocket and send `first` on it. `onReply(ws, message)` gets the first message back
   * and says what came of it: "adopted" (it made `ws` the session's socket, synchronously, so
   * that the messages after it are handled as usual), "refused" or "retry".
   * @returns {Promise<"adopted"|"refused"|"retry">}
   */
  /** Whether a node other than the current one accepts a WebSocket (closed unused at once). */
  async _anotherNodeAnswers() {
    for (const url of this.urls.slice(1)) {
      const opened = await new Promise((resolve) => {
        let probe;
        try {
          probe = new WebSocket(url);
        } catch {
          resolve(false);
          return;
        }
        const timer = setTimeout(() => {
          probe.close();
          resolve(false);
        }, NODE_PROBE_TIMEOUT_MS);
        probe.addEventListener("open", () => {
          clearTimeout(timer);
          probe.close();
          resolve(true);
        }, { once: true });
        probe.addEventListener("close", () => {
          clearTimeout(timer);
          resolve(false);
        }, { once: true });
      });
      if (opened) return true;
    }
    return false;
  }

  /** Move on to the next of `urls` (a node that cannot be reached). */
  _nextUrl() {
    this.urls.push(this.urls.shift());
    this.url = this.urls[0];
  }

  _attempt(first, onReply, timeoutMs) {
    return new Promise((resolve) => {
      let ws;
      let opened = false;
      try {
        ws = new WebSocket(this.url);
      } catch (error) {
        this.log("reconnect:", error);
        resolve("retry");
        return;
      }
      const finish = (outcome) => {
        if (this._candidate !== ws) return; // settled already
        this._candidate = null;
        this._candidateReply = null;
        clearTimeout(timer);
        if (outcome !== "adopted") ws.close();
        resolve(outcome);
      };
      const timer = setTimeout(() => finish("retry"), Math.max(0, timeoutMs));
      this._candidate = ws;
      this._candidateReply = (message) => finish(onReply(ws, message));
      this._watch(ws);
      ws.addEventListener("open", () => {
        opened = true;
        ws.send(JSON.stringify(first));
      }, { once: true });
      ws.addEventListener("close", () => {
        if (opened || this._candidate !== ws || this.urls.length < 2) {
          finish("retry");
        } else if (first.type === "join") {
          this._nextUrl(); // joining again, and that node cannot be reached: the next one
          finish("retry");
        } else {
          // a resume stays with the node that holds the session, unless that node is gone
          this._anotherNodeAnswers().then((gone) => {
            if (!gone) return finish("retry");
            this._refusal = "the session's node cannot be reached";
            this._nextUrl();
            finish("refused");
          });
        }
      }, { once: true });
    });
  }

  _onResumeReply(ws, reply) {
    if (reply?.type !== "resumed") {
      this._refusal = reply;
      // resume-failed: the session is gone; another error (a limit, a busy server): try again
      return reply?.type === "error" && reply.code !== "resume-failed" ? "retry" : "refused";
    }
    const missing = this._sentTotal - reply.received;
    if (!(missing >= 0 && missing <= this._sent.length)) {
      // what the server did not read of ours is no longer kept: end that session, join anew
      this._refusal = `the server read ${reply.received} of ${this._sentTotal} messages; the rest is not kept`;
      ws.send(JSON.stringify({ type: "leave" }));
      return "refused";
    }
    const again = this._sent.splice(this._sent.length - missing);
    this._sentTotal = reply.received;
    this.ws = ws;
    this._grant(reply);
    this.reconnecting = false;
    this.resumes += 1;
    for (const text of again) this._sendText(text);
    this._emit("reconnected", { how: "resumed", participantId: this.participantId, replayed: reply.replayed ?? 0 });
    return "adopted";
  }

  /**
   * The session is lost: end it here (remote tracks, the peer connection), join the same room
   * again and publish the same local tracks on a new peer connection.
   */
  async _rejoin(reason, notResumed) {
    const locals = this.localTracks.filter((local) => local.published);
    const carried = this._offering ?? []; // changes of the offer the old session did not answer
    this._endSession(reason);
    const join = { type: "join", v: PROTOCOL_VERSION, room: this.room, name: this.name };
    if (!this._autoSubscribe) join.autoSubscribe = false;
    if (this._token) join.token = this._token;
    const outcome = await this._retry(performance.now() + this.rejoinTimeoutMs, (timeoutMs) =>
      this._attempt(join, (ws, reply) => this._onRejoinReply(ws, reply), timeoutMs),
    );
    if (this.closed) return;
    if (outcome !== "adopted") {
      const refusal = this._refusal ? ` (${describeRefusal(this._refusal)})` : "";
      for (const change of carried) change.done(new Error(`connection closed: ${reason}`));
      this._shutdown(`${reason}; could not resume (${notResumed}) nor join again${refusal}`);
      return;
    }
    await new Promise((resolve) => {
      this._changes.unshift({
        apply: () => {
          for (const local of locals) {
            if (!local.published) continue; // unpublished meanwhile
            local.trackId = null;
            local.layers = new Map();
            local.transceiver = this._sendingTransceiver(local, this._encodings.get(local) ?? null);
          }
        },
        done: (error) => {
          for (const change of carried) change.done(error);
          resolve(undefined);
        },
      });
      this._pump();
    });
    if (!this.closed) {
      this._emit("reconnected", { how: "rejoined", participantId: this.participantId, reason: notResumed });
    }
  }

  /** Forget the lost session; remote tracks end. Local tracks and settings are kept. */
  _endSession(reason) {
    this._session += 1;
    this._rejoining = true;
    this.resumeToken = null;
    this.resumeWindow = 0;
    this._lastSeq = 0;
    this._sent = [];
    this._sentTotal = 0;
    for (const pending of this._pending.values()) {
      clearTimeout(pending.timer);
      pending.reject(new Error(`the session was lost (${reason}); joining again`));
    }
    this._pending.clear();
    this._offering = null;
    for (const remote of [...this.remoteTracks.values()]) this._endRemote(remote);
    this._receiving = {};
    this._serverOffer = null;
    this._ownOfferOutstanding = false;
    this._descriptionSent = false;
    this._queuedCandidates = [];
    this._ownTransceivers = new Set();
    this._simulcastTransceivers = new Set();
    this._pendingLayers.clear();
    this._sentSettings.clear();
    this.pausedTracks.clear();
    this.connectionQuality = null;
    this._stopIceTimer();
    this._iceRetryMs = ICE_RETRY_FIRST_MS;
    this._iceAttempts = 0;
    this.pc?.close();
  }

  _onRejoinReply(ws, reply) {
    if (reply?.type !== "joined") {
      this._refusal = reply;
      if (reply?.type === "error" && reply.code === "server-draining") {
        if (this.urls.length > 1) this._nextUrl(); // that node is stopping: the next one
        return "retry";
      }
      return "refused";
    }
    this.ws = ws;
    this.participantId = reply.participantId;
    this._grant(reply);
    this._replaceParticipants(reply.participants ?? []);
    this._createPeerConnection();
    this._rejoining = false;
    this.reconnecting = false;
    this.rejoins += 1;
    // the server forgot what we asked of the tracks we receive: ask again for those still there
    for (const trackId of [...this._appSettings.keys()]) {
      if (!this._isPublished(trackId)) this._appSettings.delete(trackId);
    }
    if (this._appSettings.size > 0) this._sendSettings([...this._appSettings.keys()], false);
    return "adopted";
  }

  /** The room as `joined` says it is now: events for what changed while we were away. */
  _replaceParticipants(list) {
    const fresh = new Map(list.map((data) => [data.participantId, participantFrom(data)]));
    for (const [participantId, participant] of [...this.participants]) {
      if (fresh.has(participantId)) continue;
      this.participants.delete(participantId);
      this._emit("participant-left", { participant, reason: "absent-after-rejoin" });
    }
    for (const [participantId, participant] of fresh) {
      const old = this.participants.get(participantId);
      this.participants.set(participantId, participant);
      if (!old) {
        this._emit("participant-joined", participant);
        continue;
      }
      for (const [trackId, info] of old.tracks) {
        if (!participant.tracks.has(trackId)) this._emit("track-unpublished", info);
      }
      for (const [trackId, info] of participant.tracks) {
        const was = old.tracks.get(trackId);
        if (!was) this._emit("track-published", info);
        else if (was.muted !== info.muted) this._emit("track-muted", info);
      }
    }
  }

  // --- publishing ---

  /**
   * Publish `track` on an m-line of its own (one offer for the calls made in the same task).
   * `simulcast: true` (video only) sends it as SIMULCAST_ENCODINGS, or give the encodings
   * (each with a `rid`); the server must negotiate simulcast (protocol section 8).
   * @param {MediaStreamTrack} track
   * @param {{source?: string, simulcast?: boolean|RTCRtpEncodingParameters[]}} [options]
   *   `source`: the label the others see (default: microphone / camera)
   * @returns {Promise<LocalTrack>} once the server's answer has given it a track id
   */
  publish(track, options = {}) {
    const source = options.source ?? (track.kind === "audio" ? "microphone" : "camera");
    const encodings = options.simulcast === true ? SIMULCAST_ENCODINGS : options.simulcast || null;
    if (encodings && track.kind !== "video") {
      return Promise.reject(new TypeError("publish: simulcast is for video tracks"));
    }
    /** @type {LocalTrack} */
    const local = {
      trackId: null,
      kind: /** @type {"audio"|"video"} */ (track.kind),
      source,
      track,
      transceiver: /** @type {any} */ (null),
      muted: false,
      mutedByOperator: false,
      published: true,
      simulcast: Boolean(encodings),
      layers: new Map(),
    };
    this._encodings.set(local, encodings);
    return this._change(() => {
      local.transceiver = this._sendingTransceiver(local, encodings);
      this.localTracks.push(local);
    }).then(
      () => {
        if (!local.trackId) throw new Error(`the server gave no track id to mid ${local.transceiver.mid}`);
        return local;
      },
      (error) => {
        this._retire(local);
        throw error;
      },
    );
  }

  /**
   * Stop publishing: the m-line turns inactive (a later publish of the same kind reuses it).
   * @param {LocalTrack} local
   */
  unpublish(local) {
    if (!local.published) return Promise.resolve();
    return this._change(() => this._retire(local));
  }

  /**
   * Send `track` instead of the current one on the same m-line and track id, without
   * renegotiating (e.g. the camera turned back on). A muted track stays muted.
   * @param {LocalTrack} local @param {MediaStreamTrack|null} track
   */
  async replaceTrack(local, track) {
    if (track) track.enabled = !local.muted;
    await local.transceiver.sender.replaceTrack(track);
    local.track = track;
  }

  /**
   * Mute or unmute a published track: the others are told (`track-muted`) and nothing is sent
   * meanwhile (the encoding is deactivated; the track is disabled too, for browsers that cannot).
   * @param {LocalTrack} local @param {boolean} muted
   */
  async setMuted(local, muted) {
    local.muted = muted;
    if (local.track) local.track.enabled = !muted;
    try {
      await this._updateEncodings(local);
    } catch (error) {
      this.log("setParameters failed; the disabled track sends silence/black instead:", error);
    }
    if (local.trackId && !this.closed) this._send({ type: "mute", trackId: local.trackId, muted });
  }

  /**
   * The operator muted or unmuted one of our tracks (protocol section 6, `track-muted`). Muted:
   * nothing is sent, as `setMuted` does. Unmuted: the track stays muted here (nobody's mic comes
   * on by itself) and the others are told so; the user unmutes it with `setMuted`.
   * @param {LocalTrack} local @param {boolean} muted
   */
  async _mutedByOperator(local, muted) {
    local.mutedByOperator = muted;
    if (muted) {
      local.muted = true;
      if (local.track) local.track.enabled = false;
      try {
        await this._updateEncodings(local);
      } catch (error) {
        this.log("setParameters failed; the disabled track sends silence/black instead:", error);
      }
    } else if (local.muted && local.trackId && !this.closed) {
      this._send({ type: "mute", trackId: local.trackId, muted: true });
    }
    this._emit("local-muted", { local, muted: local.muted, by: "operator" });
  }

  /**
   * A sendonly transceiver for `local`: an inactive one of ours of the same kind (and made with
   * simulcast or not, as asked: encodings are fixed when a transceiver is made), or a new one.
   * @param {LocalTrack} local @param {readonly RTCRtpEncodingParameters[]|null} encodings
   */
  _sendingTransceiver(local, encodings) {
    const track = local.track; // null: replaced by nothing (published again after a rejoin)
    const reusable = this.pc
      .getTransceivers()
      .find(
        (t) =>
          !t.stopped &&
          t.direction === "inactive" &&
          t.receiver.track.kind === local.kind &&
          this._ownTransceivers.has(t) &&
          this._simulcastTransceivers.has(t) === Boolean(encodings) &&
          !this.localTracks.some((l) => l.transceiver === t),
      );
    if (reusable) {
      reusable.direction = "sendonly";
      reusable.sender.replaceTrack(track);
      local.transceiver = reusable;
      this._updateEncodings(local).catch((error) => this.log("setParameters:", error));
      return reusable;
    }
    const init = { direction: /** @type {RTCRtpTransceiverDirection} */ ("sendonly") };
    if (encodings) init.sendEncodings = encodings.map((encoding) => ({ ...encoding }));
    const transceiver = this.pc.addTransceiver(track ?? local.kind, init);
    this._ownTransceivers.add(transceiver);
    if (encodings) this._simulcastTransceivers.add(transceiver);
    return transceiver;
  }

  /**
   * Set each encoding of `local`'s sender active unless the track is muted or the server said
   * nobody receives that layer (publisherLayers); one setParameters at a time per sender.
   * @param {LocalTrack} local
   */
  _updateEncodings(local) {
    const sender = local.transceiver.sender;
    const previous = this._encodingUpdates.get(sender) ?? Promise.resolve();
    const next = previous.catch(() => {}).then(() => applyEncodings(sender, local));
    this._encodingUpdates.set(sender, next);
    return next;
  }

  /** @param {LocalTrack} local @param {Map<string, boolean>} layers */
  _setLayers(local, layers) {
    local.layers = layers;
    this._updateEncodings(local).catch((error) => this.log("setParameters (publisherLayers):", error));
    this._emit("publisher-layers", { local, layers });
  }

  /** @param {LocalTrack} local */
  _retire(local) {
    local.published = false;
    this.localTracks = this.localTracks.filter((l) => l !== local);
    const transceiver = local.transceiver;
    if (transceiver && !transceiver.stopped) {
      transceiver.sender.replaceTrack(null);
      transceiver.direction = "inactive";
    }
  }

  /** Queue a local change for the next client offer. */
  _change(apply) {
    if (!this.pc || this.closed) return Promise.reject(new Error("not joined"));
    return new Promise((resolve, reject) => {
      this._changes.push({ apply, done: (error) => (error ? reject(error) : resolve()) });
      // after the current task: changes requested together share one offer
      setTimeout(() => this._pump(), 0);
    });
  }

  // --- negotiation ---

  async _pump() {
    const session = this._session;
    if (this._pumpingSession === session || this._rejoining) return;
    this._pumpingSession = session;
    try {
      while (!this.closed && session === this._session) {
        if (this._serverOffer) {
          const { message, offersSent } = this._serverOffer;
          this._serverOffer = null;
          // an offer of ours sent after it arrived crossed it: the server abandoned it
          if (offersSent === this._offersSent) await this._answer(message);
        } else if (this._changes.length > 0 && this.pc.signalingState === "stable") {
          await this._offer(this._changes.splice(0));
        } else {
          break;
        }
      }
    } finally {
      if (this._pumpingSession === session) this._pumpingSession = -1;
    }
  }

  async _answer(message) {
    const pc = this.pc;
    const session = this._session;
    try {
      await pc.setRemoteDescription({ type: "offer", sdp: message.sdp });
    } catch (error) {
      if (session !== this._session) return; // its peer connection was closed by a rejoin
      this._fail("the server's offer could not be applied", error, message.sdp);
      return;
    }
    if (session !== this._session) return;
    this._receiving = { ...(message.tracks ?? {}) };
    try {
      await pc.setLocalDescription(await pc.createAnswer());
    } catch (error) {
      if (session !== this._session) return;
      this._fail("could not answer the server's offer", error, message.sdp);
      await pc.setRemoteDescription({ type: "rollback" }).catch(() => {});
      return;
    }
    if (session !== this._session) return;
    this._send({ type: "answer", sdp: pc.localDescription.sdp });
    this._descriptionWasSent();
    this._syncRemoteTracks();
  }

  async _offer(changes) {
    const pc = this.pc;
    const session = this._session;
    const stale = () => session !== this._session; // a rejoin took these changes over
    this._ownOfferOutstanding = true; // from now on a server offer crosses ours: ignore it
    this._offering = changes;
    try {
      for (const change of changes) change.apply();
      await pc.setLocalDescription(await pc.createOffer());
      if (stale()) return;
      /** @type {Record<string, {source: string}>} */
      const tracks = {};
      for (const local of this.localTracks) tracks[local.transceiver.mid] = { source: local.source };
      this._offersSent += 1;
      const answerPromise = this._request({ type: "offer", sdp: pc.localDescription.sdp, tracks }, "answer");
      this._descriptionWasSent();
      const answer = await answerPromise;
      await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
      if (stale()) return;
      const ids = new Map((answer.tracks ?? []).map((t) => [t.mid, t.trackId]));
      for (const local of this.localTracks) {
        const trackId = ids.get(local.transceiver.mid) ?? null;
        const renamed = trackId !== local.trackId;
        local.trackId = trackId;
        // muted before it was negotiated: the others learn it only through `mute`, and the
        // encoding could not be turned off before
        if (renamed && trackId && local.muted) {
          this._send({ type: "mute", trackId, muted: true });
          this._updateEncodings(local).catch((error) => this.log("setParameters:", error));
        }
        const layers = trackId ? this._pendingLayers.get(trackId) : undefined;
        if (layers) this._setLayers(local, layers);
      }
      // raised while our offer was handled, before the answer named the track: applied above
      this._pendingLayers.clear();
      for (const change of changes) change.done();
    } catch (error) {
      if (stale()) return;
      this._ownOfferOutstanding = false;
      this._offering = null;
      if (pc.signalingState === "have-local-offer") {
        await pc.setLocalDescription({ type: "rollback" }).catch(() => {});
      }
      this._fail("a client offer failed", error, pc.localDescription?.sdp);
      for (const change of changes) change.done(error);
    } finally {
      if (!stale()) {
        this._ownOfferOutstanding = false;
        this._offering = null;
      }
    }
  }

  _fail(what, error, sdp) {
    this.log(what, error, sdp);
    this._emit("error", { error, what });
  }

  // --- ICE ---

  /**
   * Restart ICE (RFC 8445 §9): a client offer with new credentials and candidates on the same
   * peer connection, made as any other local change (after a server offer being answered, one
   * offer at a time); the server answers with new credentials of its own. Resolves once that
   * answer is applied (the new path comes up after it). The client restarts by itself when the
   * network changes or the connection fails ("ice-restart"); call it when the application knows
   * of a network change the browser does not report.
   * @returns {Promise<void>}
   */
  restartIce() {
    return this._change(() => this.pc.restartIce()).then(() => {
      this.iceRestarts += 1;
    });
  }

  _onIceState() {
    const state = this.pc.iceConnectionState;
    if (state === "connected" || state === "completed") {
      this._stopIceTimer();
      this._iceRetryMs = ICE_RETRY_FIRST_MS;
      this._iceAttempts = 0;
    } else if (state === "disconnected") {
      this._scheduleIceRestart("disconnected", ICE_DISCONNECTED_GRACE_MS);
    } else if (state === "failed") {
      this._scheduleIceRestart("failed", 0);
    }
  }

  /** Restart ICE after `delayMs` unless the connection is up by then (or a restart is due). */
  _scheduleIceRestart(reason, delayMs) {
    if (this._iceTimer !== null || this.closed) return;
    const pc = this.pc;
    this._iceTimer = setTimeout(() => {
      this._iceTimer = null;
      const state = pc.iceConnectionState;
      if (pc === this.pc && state !== "connected" && state !== "completed") this._autoRestartIce(reason);
    }, delayMs);
  }

  _stopIceTimer() {
    if (this._iceTimer !== null) clearTimeout(this._iceTimer);
    this._iceTimer = null;
  }

  /** Restart ICE by itself; while it has not brought the connection back, again with backoff. */
  _autoRestartIce(reason) {
    // nothing to restart before the first answer, nor while joining again (a new connection)
    if (this.closed || this._rejoining || !this.pc?.remoteDescription) return;
    if (this._iceRestarting) {
      // its candidates may be those of the network that is gone
      if (reason === "network changed") this._iceRestartAgain = reason;
      return;
    }
    this._stopIceTimer();
    this._iceRestarting = true;
    this._iceAttempts += 1;
    const pc = this.pc;
    this._emit("ice-restart", { reason, attempt: this._iceAttempts });
    // the offer goes out on the WebSocket: no answer in time means that is dead too
    const unanswered = setTimeout(() => this._networkChanged("no answer to an ICE restart"), ICE_ANSWER_WAIT_MS);
    this.restartIce()
      .catch((error) => {
        if (!this.closed) this.log("ICE restart:", error);
      })
      .finally(() => {
        clearTimeout(unanswered);
        this._iceRestarting = false;
        if (pc !== this.pc || this.closed) return;
        const again = this._iceRestartAgain;
        this._iceRestartAgain = null;
        if (again) {
          this._autoRestartIce(again);
          return;
        }
        const wait = this._iceRetryMs;
        this._iceRetryMs = Math.min(wait * 2, ICE_RETRY_LONGEST_MS);
        const state = pc.iceConnectionState;
        if (state !== "connected" && state !== "completed") this._scheduleIceRestart(reason, wait);
      });
  }

  _onLocalCandidate(candidate) {
    // the server is UDP only (protocol section 8): TCP candidates are of no use to it
    if (candidate && candidate.candidate && / tcp /i.test(candidate.candidate)) return;
    const end = !candidate || !candidate.candidate;
    if (!this._descriptionSent) this._queuedCandidates.push(end ? null : candidate);
    else this._sendCandidate(end ? null : candidate);
  }

  _descriptionWasSent() {
    this._descriptionSent = true;
    for (const candidate of this._queuedCandidates.splice(0)) this._sendCandidate(candidate);
  }

  _sendCandidate(candidate) {
    if (this.closed) return;
    if (!candidate) {
      this._send({ type: "candidate", candidate: null });
      return;
    }
    this._send({
      type: "candidate",
      candidate: candidate.candidate,
      sdpMid: candidate.sdpMid,
      sdpMLineIndex: candidate.sdpMLineIndex,
    });
  }

  // --- messages ---

  _send(message) {
    if (this._rejoining) return; // the session it was meant for is gone
    this._sendText(JSON.stringify(message));
  }

  /** Once joined, every message is kept until a resume says it arrived (and held while reconnecting). */
  _sendText(text) {
    if (this.participantId && !this.closed) {
      if (this.resumeToken) {
        this._sent.push(text);
        this._sentTotal += 1;
        if (this._sent.length > KEEP_SENT) this._sent.shift();
      }
      if (this.reconnecting) return;
    }
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(text);
  }

  /**
   * Send `message` with a requestId; resolves with the reply, rejects with an SfuError. The
   * time limit does not run out while reconnecting: the reply may come after a resume.
   */
  _request(message, expect, timeoutMs = this.requestTimeoutMs) {
    const requestId = `r${++this._requestIds}`;
    return new Promise((resolve, reject) => {
      const expire = () => {
        const pending = this._pending.get(requestId);
        if (!pending) return;
        if (this.reconnecting) {
          pending.timer = setTimeout(expire, timeoutMs);
          return;
        }
        this._pending.delete(requestId);
        reject(new Error(`no ${expect} to ${message.type} within ${timeoutMs} ms`));
      };
      this._pending.set(requestId, { expect, resolve, reject, timer: setTimeout(expire, timeoutMs) });
      this._send({ ...message, requestId });
    });
  }

  _onMessage(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      this.log("bad JSON from the server:", text);
      return;
    }
    if (typeof message?.seq === "number") {
      if (message.seq <= this._lastSeq) return; // handled before the socket dropped
      this._lastSeq = message.seq;
    }
    if (this._resolvePending(message)) return;
    switch (message.type) {
      case "offer":
        if (this._ownOfferOutstanding) {
          this.ignoredOffers += 1; // impolite: the server answers ours, then offers again
        } else {
          this._serverOffer = { message, offersSent: this._offersSent };
          this._pump();
        }
        break;
      case "candidate":
        if (message.candidate && this.pc) this.pc.addIceCandidate(message).catch((e) => this.log(e));
        break;
      case "participant-joined": {
        const participant = participantFrom(message.participant);
        this.participants.set(participant.participantId, participant);
        this._emit("participant-joined", participant);
        break;
      }
      case "participant-left": {
        const participant = this.participants.get(message.participantId);
        this.participants.delete(message.participantId);
        for (const trackId of participant?.tracks.keys() ?? []) this.pausedTracks.delete(trackId);
        this._dropReceiving((entry) => entry.participantId === message.participantId);
        if (participant) this._emit("participant-left", { participant, reason: message.reason });
        break;
      }
      case "track-published": {
        const info = trackFrom(message.track);
        const participant = this.participants.get(info.participantId);
        if (participant) participant.tracks.set(info.trackId, info);
        this._emit("track-published", info);
        break;
      }
      case "track-unpublished": {
        const participant = this.participants.get(message.participantId);
        const info = participant?.tracks.get(message.trackId);
        participant?.tracks.delete(message.trackId);
        this._dropReceiving((entry) => entry.trackId === message.trackId);
        // the server forgets a track's settings with it
        this._appSettings.delete(message.trackId);
        this._sentSettings.delete(message.trackId);
        this.pausedTracks.delete(message.trackId);
        if (info) this._emit("track-unpublished", info);
        break;
      }
      case "track-muted": {
        if (message.participantId === this.participantId) {
          const local = this.localTracks.find((l) => l.trackId === message.trackId);
          if (local) this._mutedByOperator(local, Boolean(message.muted));
          break;
        }
        const info = this.participants.get(message.participantId)?.tracks.get(message.trackId);
        if (info) info.muted = message.muted;
        const remote = this.remoteTracks.get(message.trackId);
        if (remote) remote.muted = message.muted;
        if (info) this._emit("track-muted", info);
        break;
      }
      case "publisherLayers": {
        const layers = new Map((message.layers ?? []).map((layer) => [String(layer.rid), Boolean(layer.active)]));
        const local = this.localTracks.find((l) => l.trackId === message.trackId);
        if (local) this._setLayers(local, layers);
        else this._pendingLayers.set(message.trackId, layers);
        break;
      }
      case "connectionQuality": {
        /** @type {ConnectionQuality} */
        const report = {
          quality: message.quality,
          rttMs: message.rttMs ?? null,
          lossPercent: message.lossPercent ?? 0,
          estimateBps: message.estimateBps ?? null,
          allocatedBps: message.allocatedBps ?? 0,
          probing: Boolean(message.probing),
        };
        this.connectionQuality = report;
        this._emit("connection-quality", report);
        break;
      }
      case "streamState": {
        const { trackId } = message;
        const state = message.state === "paused" ? "paused" : "active";
        const reason = String(message.reason ?? "");
        if (state === "paused") this.pausedTracks.set(trackId, reason);
        else this.pausedTracks.delete(trackId);
        this._emit("stream-state", { trackId, state, reason, remote: this.remoteTracks.get(trackId) ?? null });
        break;
      }
      case "bye":
        if (message.reason === "reconnect" && this.participantId && this.autoReconnect && !this.reconnecting) {
          // the server lost this session (its worker went away), not the room: join it again
          // now, on a new peer connection; there is nothing to resume
          const old = this.ws;
          this._sessionGone = true;
          this._reconnect("reconnect");
          old?.close(1000, "reconnect");
          break;
        }
        this._closeSocket(message.reason || "bye");
        break;
      case "error":
        // adaptive stream's report for a track that ended while it was on its way: no matter
        if (message.code === "unknown-track" && String(message.requestId).startsWith("adaptive-")) break;
        this._fail(`server error ${message.code}`, new SfuError(message.code, message.message));
        break;
      default: // later servers may add message types: ignore them
        break;
    }
  }

  _resolvePending(message) {
    const requestId = message.requestId;
    const pending = requestId !== undefined ? this._pending.get(requestId) : undefined;
    if (!pending) return false;
    this._pending.delete(requestId);
    clearTimeout(pending.timer);
    // the reply ends our offer's glare window: a server offer after it must be answered
    if (pending.expect === "answer") this._ownOfferOutstanding = false;
    if (message.type === "error") pending.reject(new SfuError(message.code, message.message));
    else pending.resolve(message);
    return true;
  }

  // --- remote tracks ---

  /** Forget m-lines whose entry matches until the next server offer (the media is gone). */
  _dropReceiving(predicate) {
    for (const [mid, entry] of Object.entries(this._receiving)) {
      if (predicate(entry)) delete this._receiving[mid];
    }
    this._syncRemoteTracks();
  }

  /** Bring `remoteTracks` in line with the latest server offer's map; emit what changed. */
  _syncRemoteTracks() {
    if (!this.pc || this.closed) return;
    const transceivers = new Map(this.pc.getTransceivers().map((t) => [t.mid, t]));
    const wanted = new Map();
    for (const [mid, entry] of Object.entries(this._receiving)) {
      const transceiver = transceivers.get(mid);
      if (transceiver) wanted.set(entry.trackId, { mid, entry, transceiver });
    }
    for (const remote of [...this.remoteTracks.values()]) {
      const keep = wanted.get(remote.trackId);
      if (!keep || keep.mid !== remote.mid) this._endRemote(remote);
    }
    for (const [trackId, { mid, entry, transceiver }] of wanted) {
      if (this.remoteTracks.has(trackId)) continue;
      const info = this.participants.get(entry.participantId)?.tracks.get(trackId);
      const kind = entry.kind ?? transceiver.receiver.track.kind;
      /** @type {RemoteTrack} */
      const remote = {
        participantId: entry.participantId,
        trackId,
        kind,
        source: info?.source ?? (kind === "audio" ? "microphone" : "camera"),
        muted: info?.muted ?? false,
        mid,
        track: transceiver.receiver.track,
        receiver: transceiver.receiver,
      };
      this.remoteTracks.set(trackId, remote);
      this._emit("track", remote);
    }
  }

  _endRemote(remote) {
    if (this.remoteTracks.get(remote.trackId) !== remote) return;
    this.remoteTracks.delete(remote.trackId);
    if (this.adaptiveStream) {
      // what adaptive stream asked (a pause, say) must not outlive its elements if the track
      // is received again: back to what the application asked
      this.adaptiveStream.forget(remote.trackId);
      this._sendSettings([remote.trackId], true);
    }
    this._emit("track-ended", remote);
  }

  // --- track settings ---

  /**
   * Send the settings of these tracks: what the application asked, narrowed by what adaptive
   * stream sees. `adaptive`: only those that changed since last sent, and only for tracks still
   * published (the others need nothing more).
   * @param {string[]} trackIds @param {boolean} adaptive
   */
  _sendSettings(trackIds, adaptive) {
    if (this.closed) return;
    /** @type {Map<string, {settings: TrackSettings, trackIds: string[]}>} */
    const groups = new Map();
    for (const trackId of trackIds) {
      if (adaptive && !this._isPublished(trackId)) continue;
      const settings = this._effectiveSettings(trackId);
      const key = JSON.stringify(settings);
      if (adaptive && (this._sentSettings.get(trackId) ?? "{}") === key) continue;
      this._sentSettings.set(trackId, key);
      const group = groups.get(key) ?? { settings, trackIds: [] };
      group.trackIds.push(trackId);
      groups.set(key, group);
    }
    for (const { settings, trackIds: ids } of groups.values()) {
      for (let i = 0; i < ids.length; i += MAX_TRACK_IDS) {
        const message = { type: "setTrackSettings", trackIds: ids.slice(i, i + MAX_TRACK_IDS), ...settings };
        if (adaptive) message.requestId = `adaptive-${++this._settingsRequests}`;
        this._send(message);
      }
    }
  }

  /** @param {string} trackId @returns {TrackSettings} */
  _effectiveSettings(trackId) {
    const app = this._appSettings.get(trackId) ?? {};
    const view = this.adaptiveStream?.view(trackId) ?? null;
    /** @type {TrackSettings} */
    const settings = {};
    if (app.paused || view?.paused) settings.paused = true;
    if (app.maxLayer != null) settings.maxLayer = app.maxLayer;
    if (!settings.paused) {
      const width = Math.min(app.maxWidth ?? Infinity, view?.width ?? Infinity);
      const height = Math.min(app.maxHeight ?? Infinity, view?.height ?? Infinity);
      if (width !== Infinity) settings.maxWidth = width;
      if (height !== Infinity) settings.maxHeight = height;
    }
    if (app.maxTemporalLayer != null) settings.maxTemporalLayer = app.maxTemporalLayer;
    return settings;
  }

  /** @param {string} trackId */
  _isPublished(trackId) {
    for (const participant of this.participants.values()) if (participant.tracks.has(trackId)) return true;
    return false;
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/**
 * Turn a sender's encodings on or off (off: no RTP at all, without renegotiating): all off
 * while muted, else those the server wants (an encoding without rid, or a rid it did not name,
 * stays on).
 * @param {RTCRtpSender} sender @param {LocalTrack} local
 */
async function applyEncodings(sender, local) {
  const parameters = sender.getParameters();
  if (!parameters.encodings || parameters.encodings.length === 0) return; // not negotiated yet
  let changed = false;
  for (const encoding of parameters.encodings) {
    const active = !local.muted && (encoding.rid === undefined || local.layers.get(encoding.rid) !== false);
    if (encoding.active !== active) {
      encoding.active = active;
      changed = true;
    }
  }
  if (changed) await sender.setParameters(parameters);
}

/** What a refused resume or join said, for a message. */
function describeRefusal(reply) {
  if (typeof reply === "string") return reply;
  if (reply?.type === "error") return `${reply.code}: ${reply.message}`;
  return `the server replied ${reply ? String(reply.type) : "nothing readable"}`;
}

/** @returns {Participant} */
function participantFrom(data) {
  const tracks = new Map();
  for (const t of data.tracks ?? []) {
    const info = trackFrom({ participantId: data.participantId, ...t });
    tracks.set(info.trackId, info);
  }
  return { participantId: data.participantId, name: data.name, tracks };
}

/** @returns {TrackInfo} */
function trackFrom(data) {
  return {
    trackId: data.trackId,
    participantId: data.participantId,
    kind: data.kind,
    source: data.source ?? "unknown",
    muted: Boolean(data.muted),
  };
}
