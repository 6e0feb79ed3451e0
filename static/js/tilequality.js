// Connection quality per tile, from the page's getStats(): packet loss, round trip and frame
// rate of each participant's media as it reaches you (for your own tile: what you send).

import { qualityLevel } from "./quality.js";

const POLL_MS = 2000;

export class TileQuality {
  #getPc;
  #getTiles;
  #show;
  #timer = null;
  #previous = new Map(); // tile id → {lost, received} at the last sample
  #uplinks = new Map(); // tile id → the server's view of that participant's uplink

  /**
   * ``getTiles()`` → [{id, tracks: [MediaStreamTrack], self}]; ``show(id, quality)`` with
   * quality {level, details} (or null when nothing is known yet).
   */
  constructor(getPc, getTiles, show) {
    this.#getPc = getPc;
    this.#getTiles = getTiles;
    this.#show = show;
  }

  start() {
    clearInterval(this.#timer);
    this.#previous.clear();
    this.#timer = setInterval(() => this.#sample().catch(() => {}), POLL_MS);
  }

  stop() {
    clearInterval(this.#timer);
    this.#previous.clear();
    this.#uplinks.clear();
  }

  /**
   * The server's ``quality`` event: each publisher's uplink as it reaches the server, so a
   * poor tile says whether the sender's connection or yours is the cause. ``tileOf(peer_id)``
   * gives the tile id.
   */
  setUplinks(reports, tileOf) {
    this.#uplinks = new Map(reports.map((report) => [tileOf(report.peer_id), report]));
  }

  async #sample() {
    const pc = this.#getPc();
    if (!pc || pc.connectionState !== "connected") return;
    const report = await pc.getStats();
    const byTrack = new Map();
    const outbound = [];
    const remoteInbound = new Map();
    let rtt = null;
    report.forEach((stat) => {
      if (stat.type === "inbound-rtp") byTrack.set(stat.trackIdentifier, stat);
      else if (stat.type === "outbound-rtp") outbound.push(stat);
      else if (stat.type === "remote-inbound-rtp") remoteInbound.set(stat.localId, stat);
      else if (stat.type === "candidate-pair" && stat.nominated && stat.currentRoundTripTime !== undefined) {
        rtt = stat.currentRoundTripTime;
      }
    });
    for (const tile of this.#getTiles()) {
      const quality = tile.self
        ? sendingQuality(outbound, remoteInbound, rtt)
        : this.#receivingQuality(tile, byTrack, rtt);
      this.#show(tile.id, withUplink(quality, this.#uplinks.get(tile.id), tile.self));
    }
  }

  #receivingQuality(tile, byTrack, rtt) {
    const stats = tile.tracks.map((track) => byTrack.get(track.id)).filter(Boolean);
    if (!stats.length) return null;
    const now = { lost: 0, received: 0 };
    let video = null;
    for (const stat of stats) {
      now.lost += Math.max(0, stat.packetsLost ?? 0);
      now.received += stat.packetsReceived ?? 0;
      if (stat.kind === "video") video = stat;
    }
    const before = this.#previous.get(tile.id) ?? { lost: 0, received: 0 };
    this.#previous.set(tile.id, now);
    const lost = Math.max(0, now.lost - before.lost);
    const total = lost + Math.max(0, now.received - before.received);
    const loss = total ? lost / total : 0;
    const parts = [`Packet loss ${(loss * 100).toFixed(1)}%`, `round trip ${Math.round((rtt ?? 0) * 1000)} ms`];
    if (video?.framesPerSecond !== undefined) parts.push(`${Math.round(video.framesPerSecond)} fps`);
    if (video?.frameWidth) parts.push(`${video.frameWidth}×${video.frameHeight}`);
    return { level: qualityLevel(rtt ?? 0, loss), details: parts.join(", ") };
  }
}

const LEVELS = ["good", "fair", "poor"];

/** The page's own view of a tile, completed with the server's view of the sender's uplink. */
function withUplink(quality, uplink, self) {
  if (!uplink) return quality;
  const parts = [`packet loss ${(uplink.loss * 100).toFixed(1)}%`, `${Math.round(uplink.kbps)} kbps`];
  if (uplink.fps !== null && uplink.fps !== undefined) parts.push(`${Math.round(uplink.fps)} fps`);
  const said = `${self ? "The server receives you" : "Their uplink to the server"}: ${parts.join(", ")}`;
  if (!quality) return { level: uplink.level, details: said };
  const level = LEVELS[Math.max(LEVELS.indexOf(quality.level), LEVELS.indexOf(uplink.level))];
  return { level, details: `${quality.details}. ${said}` };
}

/** Your own tile: how your camera and microphone reach the server. */
function sendingQuality(outbound, remoteInbound, rtt) {
  if (!outbound.length) return null;
  let loss = 0;
  let roundTrip = rtt ?? 0;
  let video = null;
  for (const stat of outbound) {
    const remote = remoteInbound.get(stat.id);
    if (remote?.fractionLost !== undefined) loss = Math.max(loss, remote.fractionLost);
    if (remote?.roundTripTime !== undefined) roundTrip = Math.max(roundTrip, remote.roundTripTime);
    if (stat.kind === "video") video = stat;
  }
  const parts = [`Sending: packet loss ${(loss * 100).toFixed(1)}%`, `round trip ${Math.round(roundTrip * 1000)} ms`];
  if (video?.framesPerSecond !== undefined) parts.push(`${Math.round(video.framesPerSecond)} fps`);
  if (video?.frameWidth) parts.push(`${video.frameWidth}×${video.frameHeight}`);
  if (video?.qualityLimitationReason && video.qualityLimitationReason !== "none") {
    parts.push(`limited by ${video.qualityLimitationReason}`);
  }
  return { level: qualityLevel(roundTrip, loss), details: parts.join(", ") };
}
