// The demo call page: a join form, a grid of participants, and mic / camera / screen / leave.
// All protocol work is in sfu-client.js; this file only turns its events into tiles.
//
// Query parameters (all optional): room, name; autojoin (join at once, without the form);
// video=WIDTHxHEIGHT and fps (capture size, e.g. video=320x180&fps=15); simulcast=0 (send the
// camera as one encoding; by default a capture at least 640 wide is sent as three); adaptive=0
// (no adaptive stream: receive every video at its best layer, whatever the tile's size).

import { SfuClient } from "./sfu-client.js";
import { QualityMonitor } from "./sfu-stats.js";

const STATS_INTERVAL_MS = 1000;
/** How long "reconnected" stays on screen. */
const RECONNECTED_NOTICE_MS = 4000;
/** Narrower captures are sent as one encoding: their layers would be too small to be of use. */
const SIMULCAST_MIN_WIDTH = 640;
const params = new URLSearchParams(location.search);
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

/** @type {SfuClient|null} */
let client = null;
/** this page's published tracks (LocalTrack from sfu-client.js) */
const local = { mic: null, camera: null, screen: null };
/** @type {Map<string, Tile>} participantId (or "self") → its tile; "screen:<trackId>" → a screen tile */
const tiles = new Map();
let statsTimer = 0;
let connectionTimer = 0;
/** @type {QualityMonitor|null} */
let quality = null;

// the tests (and a curious developer's console) read the state from here
window.sfuApp = { get client() { return client; }, local, tiles };

class Tile {
  /** @param {string} key @param {string} name @param {{self?: boolean, screen?: boolean, participantId?: string}} options */
  constructor(key, name, options = {}) {
    this.key = key;
    const el = (this.el = document.createElement("figure"));
    el.className = "tile";
    el.dataset.key = key;
    el.dataset.name = name;
    el.dataset.source = options.screen ? "screen" : "camera";
    if (options.participantId) el.dataset.participantId = options.participantId;
    if (options.self) el.dataset.self = "true";
    this.video = document.createElement("video");
    this.video.autoplay = true;
    this.video.playsInline = true;
    this.video.muted = true; // sound plays through the <audio> elements
    const avatar = document.createElement("div");
    avatar.className = "avatar";
    avatar.textContent = (name.trim()[0] ?? "?").toUpperCase();
    this.paused = document.createElement("div");
    this.paused.className = "paused";
    const caption = document.createElement("figcaption");
    this.label = document.createElement("span");
    this.label.className = "name";
    this.label.textContent = options.screen ? `${name} (screen)` : options.self ? `${name} (you)` : name;
    this.icons = document.createElement("span");
    this.icons.className = "icons";
    this.quality = document.createElement("span");
    this.quality.className = "quality";
    caption.append(this.label, this.icons, this.quality);
    this.audio = document.createElement("div");
    this.audio.hidden = true;
    el.append(this.video, avatar, this.paused, caption, this.audio);
    /** @type {{rttMs: number|null, lossPercent: number|null}|undefined} this browser's stats */
    this.stats = undefined;
    /** @type {import("./sfu-client.js").ConnectionQuality|null} the server's, for our downlink */
    this.link = null;
    this.setVideo(null);
    this.setState({ mic: options.screen ? "none" : "on", camera: "on" });
  }

  /** @param {MediaStreamTrack|null} track */
  setVideo(track) {
    this.videoTrack = track;
    this.video.srcObject = track ? new MediaStream([track]) : null;
    this.el.dataset.video = track ? "true" : "false";
  }

  /** @param {string} trackId @param {MediaStreamTrack} track */
  addAudio(trackId, track) {
    this.removeAudio(trackId);
    const audio = document.createElement("audio");
    audio.autoplay = true;
    audio.dataset.trackId = trackId;
    audio.srcObject = new MediaStream([track]);
    this.audio.append(audio);
    audio.play().catch(() => setStatus("Click anywhere to hear the others", "call-status", true));
  }

  removeAudio(trackId) {
    for (const audio of this.audio.querySelectorAll("audio")) {
      if (audio.dataset.trackId === trackId) audio.remove();
    }
  }

  /** @param {{mic: "on"|"muted"|"none", camera: "on"|"off"|"none"}} state */
  setState({ mic, camera }) {
    this.el.dataset.mic = mic;
    this.el.dataset.camera = camera;
    const icons = [];
    if (mic === "muted") icons.push(["mic muted", "🔇"]);
    if (camera === "off") icons.push(["camera off", "📷✕"]);
    this.icons.replaceChildren(
      ...icons.map(([title, text]) => {
        const icon = document.createElement("span");
        icon.title = title;
        icon.setAttribute("aria-label", title);
        icon.textContent = text;
        return icon;
      }),
    );
  }

  /** @param {{rttMs: number|null, lossPercent: number|null}|undefined} stats */
  setQuality(stats) {
    this.stats = stats;
    this.showQuality();
  }

  /** The server's connectionQuality for this page's downlink (shown on the self tile). */
  setLink(report) {
    this.link = report;
    this.el.dataset.quality = report?.quality ?? "";
    this.el.dataset.estimateBps = report?.estimateBps == null ? "" : String(report.estimateBps);
    this.showQuality();
  }

  showQuality() {
    const { stats, link } = this;
    const parts = [];
    if (link) {
      parts.push(link.estimateBps === null ? link.quality : `${link.quality} ↓${formatBps(link.estimateBps)}`);
      this.quality.title =
        `the server's view of your downlink: ${link.quality}, estimate ${formatBps(link.estimateBps)}, ` +
        `sending ${formatBps(link.allocatedBps)}${link.probing ? " (probing for more)" : ""}`;
    }
    if (stats?.rttMs != null) parts.push(`RTT ${Math.round(stats.rttMs)} ms`);
    if (stats?.lossPercent != null) parts.push(`loss ${stats.lossPercent.toFixed(1)}%`);
    this.quality.textContent = parts.join(" · ");
    if (stats) {
      this.el.dataset.rttMs = stats.rttMs === null ? "" : String(Math.round(stats.rttMs));
      this.el.dataset.lossPercent = stats.lossPercent === null ? "" : stats.lossPercent.toFixed(1);
    }
    const bad = link?.quality === "poor" || (stats?.lossPercent ?? 0) > 5 || (stats?.rttMs ?? 0) > 300;
    this.quality.classList.toggle("bad", bad);
  }

  /** @param {string|null} reason why the server paused this tile's video (null: it is not) */
  setPaused(reason) {
    if (reason) this.el.dataset.paused = reason;
    else delete this.el.dataset.paused;
    this.paused.textContent = reason === "bandwidth" ? "paused: low bandwidth" : reason ? `paused: ${reason}` : "";
  }

  remove() {
    this.setVideo(null);
    this.el.remove();
  }
}

// --- joining and leaving ---

function captureConstraints() {
  const [width, height] = (params.get("video") ?? "640x360").split("x").map(Number);
  const frameRate = Number(params.get("fps") ?? 24);
  return { width: { ideal: width }, height: { ideal: height }, frameRate: { ideal: frameRate } };
}

async function join(room, name) {
  setStatus("Starting camera and microphone…", "join-status");
  let stream = null;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: captureConstraints() });
  } catch (error) {
    // no devices or no permission: join anyway, to watch and listen
    setStatus(`No camera/microphone (${error.name}): joining to watch only`, "join-status", true);
  }
  setStatus("Connecting…", "join-status");
  client = new SfuClient(undefined, {
    log: (...args) => console.warn("[sfu]", ...args),
    adaptiveStream: params.get("adaptive") !== "0",
  });
  listen(client);
  try {
    // a server with keys admits only a join with an access token: the page's ?token=
    await client.join(room, name, { token: params.get("token") ?? undefined });
  } catch (error) {
    stream?.getTracks().forEach((t) => t.stop());
    client = null;
    setStatus(`Could not join: ${error.message}`, "join-status", true);
    return;
  }
  showCall(room, name);
  for (const participant of client.participants.values()) addParticipant(participant);
  if (stream) {
    const [audio] = stream.getAudioTracks();
    const [video] = stream.getVideoTracks();
    tiles.get("self").setVideo(video ?? null);
    // both in one offer
    const published = await Promise.allSettled([
      audio ? client.publish(audio, { source: "microphone" }) : null,
      video ? client.publish(video, { source: "camera", simulcast: wantsSimulcast(video) }) : null,
    ]);
    [local.mic, local.camera] = published.map((p) => (p.status === "fulfilled" ? p.value : null));
    published
      .filter((p) => p.status === "rejected")
      .forEach((p) => setStatus(`Publishing failed: ${p.reason.message}`, "call-status", true));
  }
  updateControls();
  quality = new QualityMonitor(client);
  statsTimer = setInterval(updateStats, STATS_INTERVAL_MS);
}

/** @param {MediaStreamTrack} video */
function wantsSimulcast(video) {
  return params.get("simulcast") !== "0" && (video.getSettings().width ?? 0) >= SIMULCAST_MIN_WIDTH;
}

function listen(sfu) {
  sfu.addEventListener("participant-joined", (e) => addParticipant(e.detail));
  sfu.addEventListener("participant-left", (e) => removeParticipant(e.detail.participant.participantId));
  sfu.addEventListener("track-published", (e) => refreshParticipant(e.detail.participantId));
  sfu.addEventListener("track-unpublished", (e) => refreshParticipant(e.detail.participantId));
  sfu.addEventListener("track-muted", (e) => refreshParticipant(e.detail.participantId));
  sfu.addEventListener("local-muted", () => updateControls());
  sfu.addEventListener("track", (e) => attachRemote(e.detail));
  sfu.addEventListener("track-ended", (e) => detachRemote(e.detail));
  sfu.addEventListener("connectionstatechange", (e) => {
    const state = e.detail.state;
    setStatus(state === "connected" ? "" : `Media: ${state}`, "call-status", state === "failed");
  });
  sfu.addEventListener("connection-quality", (e) => tiles.get("self")?.setLink(e.detail));
  sfu.addEventListener("stream-state", () => refreshPaused());
  sfu.addEventListener("error", (e) => console.warn("[sfu]", e.detail.what, e.detail.error));
  // the signaling connection dropped: the call goes on (media too, if the network lets it)
  sfu.addEventListener("reconnecting", () => showConnection("reconnecting", "Reconnecting…"));
  sfu.addEventListener("reconnected", (e) => {
    // a rejoin published our tracks again with new ids: the controls follow the LocalTracks
    if (e.detail.how === "rejoined") updateControls();
    showConnection(e.detail.how, e.detail.how === "resumed" ? "Reconnected" : "Reconnected (joined again)");
    connectionTimer = setTimeout(() => showConnection("", ""), RECONNECTED_NOTICE_MS);
  });
  sfu.addEventListener("closed", (e) => {
    if (sfu !== client) return;
    const reason = e.detail.reason;
    endCall(reason === "left" ? "" : `Disconnected: ${reason}`);
  });
}

async function leave() {
  const sfu = client;
  if (!sfu) return;
  await sfu.leave();
  endCall("");
}

function endCall(message) {
  clearInterval(statsTimer);
  showConnection("", "");
  quality = null;
  for (const tile of tiles.values()) tile.remove();
  tiles.clear();
  for (const key of Object.keys(local)) {
    local[key]?.track?.stop();
    local[key] = null;
  }
  client = null;
  $("call").hidden = true;
  $("join-form").hidden = false;
  setStatus(message, "join-status", Boolean(message));
}

function showCall(room, name) {
  $("join-form").hidden = true;
  $("call").hidden = false;
  $("room-title").textContent = `Room ${room}`;
  setStatus("", "call-status");
  addTile(new Tile("self", name, { self: true }));
}

// --- tiles ---

function addTile(tile) {
  tiles.get(tile.key)?.remove();
  tiles.set(tile.key, tile);
  $("grid").append(tile.el);
  $("grid").dataset.count = String(tiles.size);
}

function removeTile(key) {
  tiles.get(key)?.remove();
  tiles.delete(key);
  $("grid").dataset.count = String(tiles.size);
}

function addParticipant(participant) {
  if (!tiles.has(participant.participantId)) {
    addTile(new Tile(participant.participantId, participant.name, { participantId: participant.participantId }));
  }
  refreshParticipant(participant.participantId);
}

function removeParticipant(participantId) {
  for (const [key, tile] of [...tiles]) {
    if (tile.el.dataset.participantId === participantId) removeTile(key);
  }
}

/** Show what a participant publishes and whether it is muted (from the client's track infos). */
function refreshParticipant(participantId) {
  const participant = client?.participants.get(participantId);
  const tile = tiles.get(participantId);
  if (!participant || !tile) return;
  const tracks = [...participant.tracks.values()];
  const mic = tracks.find((t) => t.source === "microphone");
  const camera = tracks.find((t) => t.source === "camera");
  tile.setState({
    mic: !mic ? "none" : mic.muted ? "muted" : "on",
    camera: !camera ? "none" : camera.muted ? "off" : "on",
  });
  for (const track of tracks) {
    const screen = tiles.get(`screen:${track.trackId}`);
    if (screen) screen.setState({ mic: "none", camera: track.muted ? "off" : "on" });
  }
  refreshPaused();
}

/** Say on each tile whether the server paused its video (for bandwidth) until it resumes it. */
function refreshPaused() {
  if (!client) return;
  for (const tile of tiles.values()) {
    let trackId = tile.el.dataset.trackId;
    if (!trackId && tile.el.dataset.participantId) {
      const tracks = client.participants.get(tile.el.dataset.participantId)?.tracks.values() ?? [];
      trackId = [...tracks].find((t) => t.source === "camera")?.trackId;
    }
    tile.setPaused((trackId && client.pausedTracks.get(trackId)) || null);
  }
}

function attachRemote(remote) {
  const participant = client?.participants.get(remote.participantId);
  if (!participant) return;
  if (remote.kind === "audio") {
    tiles.get(remote.participantId)?.addAudio(remote.trackId, remote.track);
  } else if (remote.source === "camera") {
    const tile = tiles.get(remote.participantId);
    tile?.setVideo(remote.track);
    // adaptive stream: the tile's size and visibility choose the layer (until the track ends)
    if (tile) client.observeElement(remote.trackId, tile.video);
  } else {
    const tile = new Tile(`screen:${remote.trackId}`, participant.name, {
      screen: true,
      participantId: remote.participantId,
    });
    tile.el.dataset.source = remote.source;
    tile.el.dataset.trackId = remote.trackId;
    addTile(tile);
    tile.setVideo(remote.track);
    client.observeElement(remote.trackId, tile.video);
  }
  refreshParticipant(remote.participantId);
}

function detachRemote(remote) {
  const tile = tiles.get(remote.participantId);
  if (remote.kind === "audio") {
    tile?.removeAudio(remote.trackId);
  } else if (remote.source === "camera") {
    if (tile?.videoTrack === remote.track) tile.setVideo(null);
  } else {
    removeTile(`screen:${remote.trackId}`);
  }
}

async function updateStats() {
  const sfu = client;
  if (!sfu || !quality) return;
  const stats = await quality.sample();
  for (const tile of tiles.values()) {
    let trackIds = [];
    if (tile.key === "self") {
      trackIds = [local.camera?.trackId, local.mic?.trackId];
    } else if (tile.el.dataset.trackId) {
      trackIds = [tile.el.dataset.trackId];
    } else {
      const remote = [...sfu.remoteTracks.values()].filter((r) => r.participantId === tile.key);
      trackIds = remote.sort((a, b) => (a.kind === "video" ? -1 : 1) - (b.kind === "video" ? -1 : 1)).map((r) => r.trackId);
    }
    const found = trackIds.map((id) => id && stats.get(id)).find(Boolean);
    tile.setQuality(found);
  }
}

// --- controls ---

function updateControls() {
  const mic = $("mic");
  mic.disabled = !local.mic;
  mic.textContent = local.mic?.muted ? "Unmute mic" : "Mute mic";
  mic.setAttribute("aria-pressed", String(Boolean(local.mic?.muted)));
  const camera = $("camera");
  camera.disabled = !local.camera;
  camera.textContent = local.camera?.muted ? "Camera on" : "Camera off";
  camera.setAttribute("aria-pressed", String(Boolean(local.camera?.muted)));
  const screen = $("screen");
  screen.disabled = !navigator.mediaDevices?.getDisplayMedia;
  screen.textContent = local.screen ? "Stop sharing" : "Share screen";
  screen.setAttribute("aria-pressed", String(Boolean(local.screen)));
  tiles.get("self")?.setState({
    mic: !local.mic ? "none" : local.mic.muted ? "muted" : "on",
    camera: !local.camera ? "none" : local.camera.muted ? "off" : "on",
  });
}

async function toggleMic() {
  if (!client || !local.mic) return;
  await client.setMuted(local.mic, !local.mic.muted);
  updateControls();
}

// camera off releases the camera (its light goes off); camera on captures anew and sends the new
// track on the same m-line (the same track id), without renegotiating
async function toggleCamera() {
  const camera = local.camera;
  if (!client || !camera) return;
  if (!camera.muted) {
    await client.setMuted(camera, true);
    camera.track?.stop();
    tiles.get("self")?.setVideo(null);
  } else {
    const stream = await navigator.mediaDevices.getUserMedia({ video: captureConstraints() });
    const [track] = stream.getVideoTracks();
    await client.replaceTrack(camera, track);
    await client.setMuted(camera, false);
    tiles.get("self")?.setVideo(track);
  }
  updateControls();
}

async function toggleScreen() {
  if (!client) return;
  if (local.screen) {
    await stopScreen();
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
  } catch (error) {
    setStatus(`Screen sharing: ${error.name}`, "call-status", true);
    return;
  }
  const [track] = stream.getVideoTracks();
  track.addEventListener("ended", () => stopScreen()); // the browser's own "stop sharing"
  const preview = new Tile("screen:self", client.name ?? "", { self: true, screen: true });
  addTile(preview);
  preview.setVideo(track);
  try {
    local.screen = await client.publish(track, { source: "screen" });
  } catch (error) {
    track.stop();
    removeTile("screen:self");
    setStatus(`Screen sharing failed: ${error.message}`, "call-status", true);
  }
  updateControls();
}

async function stopScreen() {
  const screen = local.screen;
  if (!screen) return;
  local.screen = null;
  screen.track?.stop();
  removeTile("screen:self");
  updateControls();
  await client?.unpublish(screen);
}

/** @param {number|null} bps */
function formatBps(bps) {
  if (bps === null) return "?";
  return bps >= 1e6 ? `${(bps / 1e6).toFixed(1)} Mbit/s` : `${Math.round(bps / 1e3)} kbit/s`;
}

/** @param {""|"reconnecting"|"resumed"|"rejoined"} state @param {string} text */
function showConnection(state, text) {
  clearTimeout(connectionTimer);
  const el = $("connection-status");
  el.dataset.state = state;
  el.textContent = text;
}

function setStatus(text, id, isError = false) {
  const el = $(id);
  el.textContent = text;
  el.classList.toggle("error", isError);
}

// --- wiring ---

$("join-form").addEventListener("submit", (event) => {
  event.preventDefault();
  $("join").disabled = true;
  const room = /** @type {HTMLInputElement} */ ($("room")).value.trim();
  const name = /** @type {HTMLInputElement} */ ($("name")).value.trim();
  join(room, name).finally(() => ($("join").disabled = false));
});
$("mic").addEventListener("click", () => toggleMic());
$("camera").addEventListener("click", () => toggleCamera());
$("screen").addEventListener("click", () => toggleScreen());
$("leave").addEventListener("click", () => leave());
document.addEventListener("click", () => {
  for (const audio of document.querySelectorAll("audio")) if (audio.paused) audio.play().catch(() => {});
});
// closing the tab: close the socket at once, so the others see us leave without waiting for a timeout
window.addEventListener("pagehide", () => client?.close("page closed"));

if (params.has("room")) /** @type {HTMLInputElement} */ ($("room")).value = params.get("room");
if (params.has("name")) /** @type {HTMLInputElement} */ ($("name")).value = params.get("name");
if (params.has("autojoin") && params.get("room") && params.get("name")) {
  join(params.get("room"), params.get("name"));
}
