// The page's one RTCPeerConnection to the server, negotiated as docs/protocol.md says:
// the page always offers and keeps one offer in flight; the server answers, asks
// for more receive slots (renegotiate) and says whose media each slot carries (tracks).
//
// What we publish is named by source (microphone, camera, screen, screen_audio); each offer
// tells the server which m-line carries which.
//
// Dispatches "tracks" (detail: Map peer_id → {audio, video, screen, screen_audio} of
// MediaStreamTracks; audio and video are the microphone and camera) and "state"
// (detail: "idle" | "connecting" | "connected" | "reconnecting").

const KINDS = ["audio", "video"];
const SOURCE_OF_KIND = { audio: "microphone", video: "camera" };
// How the "tracks" detail names each source (a camera tile has {audio, video}).
const FIELD_OF_SOURCE = { microphone: "audio", camera: "video", screen: "screen", screen_audio: "screen_audio" };
// The server may hold a re-offer until the connection is up (its MEDIA_TIMEOUT, 30 s by default).
const ANSWER_TIMEOUT_MS = 60_000;
// "disconnected" often heals by itself; after this long we start over.
const DISCONNECTED_GRACE_MS = 8_000;
const MAX_RETRY_DELAY_MS = 10_000;

export class MediaLink extends EventTarget {
  #signaling;
  #pc = null;
  #senders = new Map(); // source → RTCRtpTransceiver sending it on the current connection
  #abandon = new WeakMap(); // connection → rejects its "closed" promise (see #whileOpen)
  #tracks = {}; // source → the MediaStreamTrack we publish (or null)
  #iceServers = [];
  #wanted = { audio: 0, video: 0 }; // receive slots per kind
  #owners = new Map(); // mid → {peer_id, source}, from the server's "tracks"
  #answer = null; // the pending offer's answer: {resolve, reject, acked}
  #running = null;
  #again = false;
  #active = false;
  #failures = 0;
  #retryTimer = null;
  #graceTimer = null;

  constructor(signaling) {
    super();
    this.#signaling = signaling;
    signaling.on("answer", (answer) => this.#answer?.resolve(answer));
    signaling.on("error", (error) => {
      // Before the ack, an offer error is the ack's own refusal; after it, the server's verdict.
      if (error?.event === "offer" && this.#answer?.acked) this.#answer.reject(new Error(error.message));
    });
    signaling.on("tracks", ({ tracks }) => {
      this.#owners = new Map(tracks.map((entry) => [entry.mid, entry]));
      this.#publishTracks();
    });
    signaling.on("renegotiate", ({ audio, video }) => {
      this.#wanted = { audio, video };
      this.#negotiate();
    });
    signaling.on("media_closed", ({ reason }) => this.restart(`server closed the media connection: ${reason}`));
  }

  /** The current RTCPeerConnection (tests read its stats), or null. */
  get pc() {
    return this.#pc;
  }

  /**
   * Begin media for a fresh room membership; ``published`` counts the room's tracks by kind,
   * ``iceServers`` come from the server (the page's meta tag is the fallback).
   */
  start(tracks, published, iceServers = []) {
    this.stop();
    this.#active = true;
    this.#iceServers = iceServers.length ? iceServers : configuredIceServers();
    this.#tracks = { microphone: tracks.audio ?? null, camera: tracks.video ?? null };
    this.#wanted = { audio: published.audio, video: published.video };
    this.#negotiate();
  }

  /** Someone joined. A viewer alone has no connection yet: make one with room for them. */
  expectPeers(count) {
    // Otherwise there is a connection (or a restart on its way) and the server asks for slots.
    if (!this.#active || this.#hasMedia()) return;
    this.#wanted = { audio: Math.max(this.#wanted.audio, count), video: Math.max(this.#wanted.video, count) };
    this.#negotiate();
  }

  /**
   * A device switch swaps the outgoing track in place, with no renegotiation; a device turned
   * on mid-call (nothing of its kind was published) gets a new sendonly transceiver, offered
   * to the server like any renegotiation.
   */
  async replaceTrack(kind, track) {
    const source = SOURCE_OF_KIND[kind];
    this.#tracks[source] = track;
    const transceiver = this.#senders.get(source);
    if (transceiver) await transceiver.sender.replaceTrack(track);
    else if (track && this.#active) this.#negotiate();
  }

  /**
   * Start or stop publishing ``source`` ("screen", "screen_audio"). Stopping sets the
   * m-line inactive (the server refuses stopped ones); the next share reuses it.
   */
  publish(source, track) {
    this.#tracks[source] = track;
    const transceiver = this.#senders.get(source);
    if (transceiver) {
      transceiver.direction = track ? "sendonly" : "inactive";
      transceiver.sender.replaceTrack(track).catch(() => {});
    }
    if (this.#active && (track || transceiver)) this.#negotiate();
  }

  /** Close the connection and start over with a new one (new ICE credentials). */
  restart(reason) {
    if (!this.#active) return;
    console.info(`roomrelay: restarting media (${reason})`);
    this.#close();
    this.#emitState("reconnecting");
    this.#failures += 1;
    // Back off when restarts keep failing, so a broken network is not hammered.
    const delay = Math.min(1000 * 2 ** (this.#failures - 2), MAX_RETRY_DELAY_MS);
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => this.#negotiate(), this.#failures > 1 ? delay : 0);
  }

  stop() {
    this.#active = false;
    this.#failures = 0;
    clearTimeout(this.#retryTimer);
    this.#answer?.reject(new Error("stopped"));
    this.#close();
    this.#emitState("idle");
  }

  #negotiate() {
    if (!this.#active) return;
    this.#again = true;
    if (this.#running) return; // the running loop will offer again
    this.#running = this.#offerLoop().finally(() => {
      this.#running = null;
      if (this.#again) this.#negotiate(); // asked for while the loop was winding down
    });
  }

  async #offerLoop() {
    while (this.#active && this.#again) {
      this.#again = false;
      if (!this.#hasMedia()) {
        this.#emitState("idle");
        continue;
      }
      const pc = this.#ensureConnection();
      try {
        await this.#offer(pc);
      } catch (error) {
        // A connection replaced meanwhile needs no recovery: the loop goes on with the new one.
        if (pc === this.#pc) this.restart(error.message);
      }
    }
  }

  async #offer(pc) {
    this.#addSenders(pc);
    this.#addReceiveSlots(pc);
    const offer = await this.#whileOpen(pc, pc.createOffer());
    await this.#whileOpen(pc, pc.setLocalDescription(offer));
    const answer = this.#expectAnswer();
    answer.catch(() => {}); // awaited below; this only keeps an early rejection from being "unhandled"
    try {
      await this.#signaling.request("offer", { type: "offer", sdp: pc.localDescription.sdp, sources: this.#sources() });
    } catch (error) {
      this.#answer?.reject(error);
      throw error;
    }
    if (this.#answer) this.#answer.acked = true;
    const description = await answer;
    // Wait for the answer even to a stale offer: that keeps one offer in flight.
    if (pc !== this.#pc) return;
    await this.#whileOpen(pc, pc.setRemoteDescription(description));
    this.#publishTracks();
  }

  /** ``operation``, or a rejection once we close ``pc``: calls on a closed connection never settle. */
  #whileOpen(pc, operation) {
    const closed = new Promise((_, reject) => this.#abandon.set(pc, reject));
    return Promise.race([operation, closed]);
  }

  #expectAnswer() {
    return new Promise((resolve, reject) => {
      const settle = (finish, value) => {
        clearTimeout(timer);
        this.#answer = null;
        finish(value);
      };
      const timer = setTimeout(() => settle(reject, new Error("the server did not answer")), ANSWER_TIMEOUT_MS);
      this.#answer = {
        acked: false,
        resolve: (value) => settle(resolve, value),
        reject: (error) => settle(reject, error),
      };
    });
  }

  #hasMedia() {
    return Boolean(Object.values(this.#tracks).some(Boolean) || this.#wanted.audio || this.#wanted.video);
  }

  #ensureConnection() {
    if (this.#pc) return this.#pc;
    const pc = new RTCPeerConnection({ iceServers: this.#iceServers, bundlePolicy: "max-bundle" });
    this.#pc = pc;
    this.#senders = new Map();
    this.#addSenders(pc);
    pc.addEventListener("icecandidate", ({ candidate }) => {
      if (pc !== this.#pc) return;
      // An empty candidate or null both mean "gathering finished".
      const payload = candidate?.candidate ? candidate.toJSON() : null;
      this.#signaling.request("ice", payload).catch(() => {}); // a refused candidate is not fatal
    });
    pc.addEventListener("connectionstatechange", () => this.#onConnectionState(pc));
    this.#emitState("connecting");
    return pc;
  }

  /** A sendonly transceiver for each track we publish that has none yet. */
  #addSenders(pc) {
    for (const [source, track] of Object.entries(this.#tracks)) {
      if (track && !this.#senders.has(source)) {
        this.#senders.set(source, pc.addTransceiver(track, { direction: "sendonly" }));
      }
    }
  }

  /** {mid: source} of our sending m-lines, for the offer. */
  #sources() {
    const sources = {};
    for (const [source, transceiver] of this.#senders) if (transceiver.mid !== null) sources[transceiver.mid] = source;
    return sources;
  }

  #addReceiveSlots(pc) {
    const have = { audio: 0, video: 0 };
    for (const transceiver of pc.getTransceivers()) {
      if (transceiver.direction === "recvonly") have[transceiver.receiver.track.kind] += 1;
    }
    for (const kind of KINDS) {
      for (let n = have[kind]; n < this.#wanted[kind]; n += 1) pc.addTransceiver(kind, { direction: "recvonly" });
    }
  }

  #onConnectionState(pc) {
    if (pc !== this.#pc) return;
    clearTimeout(this.#graceTimer);
    const state = pc.connectionState;
    if (state === "connected") {
      this.#failures = 0;
      this.#emitState("connected");
    } else if (state === "failed") {
      this.restart("connection failed");
    } else if (state === "disconnected") {
      this.#emitState("reconnecting");
      this.#graceTimer = setTimeout(() => this.restart("connection lost"), DISCONNECTED_GRACE_MS);
    }
  }

  #close() {
    clearTimeout(this.#graceTimer);
    const pc = this.#pc;
    this.#pc = null;
    this.#senders = new Map();
    this.#owners.clear();
    pc?.close();
    this.#abandon.get(pc)?.(new Error("connection closed"));
    this.#publishTracks();
  }

  /** Group the receive slots the server named by participant. */
  #publishTracks() {
    const byPeer = new Map();
    for (const transceiver of this.#pc?.getTransceivers() ?? []) {
      const owner = transceiver.mid === null ? null : this.#owners.get(transceiver.mid);
      if (!owner?.peer_id || transceiver.direction !== "recvonly") continue;
      const track = transceiver.receiver.track;
      const field = FIELD_OF_SOURCE[owner.source] ?? track.kind;
      byPeer.set(owner.peer_id, { ...byPeer.get(owner.peer_id), [field]: track });
    }
    this.dispatchEvent(new CustomEvent("tracks", { detail: byPeer }));
  }

  #emitState(state) {
    this.dispatchEvent(new CustomEvent("state", { detail: state }));
  }
}

/** ICE servers from the page's <meta name="roomrelay-ice-servers">; none by default. */
function configuredIceServers() {
  const text = document.querySelector('meta[name="roomrelay-ice-servers"]')?.content;
  try {
    return text ? JSON.parse(text) : [];
  } catch {
    console.warn("roomrelay: ignoring malformed roomrelay-ice-servers", text);
    return [];
  }
}
