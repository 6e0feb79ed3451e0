// The call view: who is here, their tiles, chat and controls, kept in step with the server;
// after a lost connection it rejoins by itself.

import { Captions } from "./captions.js";
import { Chat } from "./chat.js";
import { bindMediaToggle, bindShortcuts, toggleMedia } from "./controls.js";
import { DevicePicker } from "./devices.js";
import { describeError } from "./errors.js";
import { Grid } from "./grid.js";
import { copyRoomLink, showRoomInUrl } from "./links.js";
import { SidePanel } from "./panels.js";
import { ParticipantList } from "./participants.js";
import { MediaLink } from "./peer.js";
import { QualityIndicator } from "./quality.js";
import { activeRoom } from "./storage.js";
import { AvatarColours, byId, showBanner } from "./ui.js";

const SELF = "self"; // your own tile's id: your peer_id changes when you rejoin
// Someone whose connection dropped usually rejoins within seconds: "left" waits this long.
const RETURN_GRACE_MS = 15_000;

export class Call {
  #signaling;
  #media;
  #onExit;
  #room = null;
  #nickname = null;
  #peerId = null;
  #people = new Map(); // peer_id → {nickname, audio, video}
  #remoteTracks = new Map(); // peer_id → {audio, video}, from the media link
  #speaker = null;
  #sentState = null;
  #link;
  #colours = new AvatarColours();
  #grid = new Grid(byId("grid"), this.#colours);
  #list = new ParticipantList(byId("participant-list"), byId("participant-count"), this.#colours);
  #pendingNotes = new Map(); // "left:Ada" / "joined:Ada" → timer of a line held back
  #quality;
  #chat;
  #captions = new Captions({
    region: byId("captions"),
    toggle: byId("toggle-captions"),
    download: byId("download-transcript"),
  });
  #panel;

  /** ``onExit(message | null)``: the call is over (left, or refused on rejoin); show the lobby. */
  constructor({ signaling, media, onExit }) {
    this.#signaling = signaling;
    this.#media = media;
    this.#onExit = onExit;
    this.#link = new MediaLink(signaling);
    this.#quality = new QualityIndicator(byId("quality"), () => this.#link.pc);
    this.#chat = new Chat({
      log: byId("chat-log"),
      form: byId("chat-form"),
      input: byId("chat-input"),
      problem: byId("chat-problem"),
      badge: byId("chat-unread"),
      button: byId("toggle-chat"),
      send: async (text) => (await signaling.request("chat_message", { text })).message,
      nickname: () => this.#nickname,
    });
    this.#panel = new SidePanel(byId("side-panel"), {
      participants: { section: byId("participants-panel"), button: byId("toggle-participants") },
      chat: { section: byId("chat-panel"), button: byId("toggle-chat") },
    });
    this.#panel.addEventListener("change", () => {
      this.#chat.setVisible(this.#panel.current === "chat");
      if (this.#panel.current === "chat") this.#chat.focus();
    });
    this.#bindControls();
    this.#bindServerEvents();
    this.#bindMedia();
  }

  get active() {
    return this.#room !== null;
  }

  /** The current RTCPeerConnection, for diagnostics and tests. */
  get pc() {
    return this.#link.pc;
  }

  /** Join ``room``; throws the server's refusal (room full, invalid name…) for the lobby to show. */
  async enter(room, nickname) {
    await this.#media.ready;
    const reply = await this.#signaling.request("join_room", { room, nickname });
    this.#room = reply.room;
    this.#nickname = reply.nickname;
    activeRoom.set(this.#room);
    showRoomInUrl(this.#room);
    document.title = `${this.#room} · roomrelay`;
    byId("call-room").textContent = this.#room;
    byId("call").hidden = false;
    this.#quality.start();
    this.#joined(reply);
    byId("toggle-mic").focus();
  }

  leave() {
    if (!this.active) return;
    this.#signaling.request("leave_room").catch(() => {}); // the socket may already be gone
    this.#end(null);
    this.#media.release(); // the camera light goes off; the lobby offers to turn it on again
  }

  // -- membership -------------------------------------------------------------------

  /** Apply a join ack, first or after reconnecting: keep the tiles of who is still here. */
  #joined(reply) {
    this.#peerId = reply.peer_id;
    this.#sentState = null;
    const present = new Set(reply.participants.map((person) => person.peer_id));
    for (const id of this.#people.keys()) if (!present.has(id)) this.#forget(id);
    for (const person of reply.participants) this.#remember(person);
    this.#setSpeaker(reply.active_speaker ?? null);
    this.#renderSelf();
    this.#sendMediaState();
    this.#showRecording(Boolean(reply.recording));
    this.#captions.setAvailable(Boolean(reply.captions), this.#room);
    const tracks = { audio: this.#media.track("audio"), video: this.#media.track("video") };
    this.#link.start(tracks, reply.published, reply.ice_servers);
  }

  async #rejoin() {
    try {
      this.#joined(await this.#signaling.request("join_room", { room: this.#room, nickname: this.#nickname }));
    } catch (error) {
      if (error.code !== "offline") this.#end(describeError(error)); // offline: the next "connect" retries
    }
  }

  #end(message) {
    this.#link.stop();
    this.#quality.stop();
    for (const id of [...this.#people.keys()]) this.#forget(id);
    for (const timer of this.#pendingNotes.values()) clearTimeout(timer);
    this.#pendingNotes.clear();
    this.#grid.clear();
    this.#colours.reset();
    this.#chat.clear();
    this.#captions.reset();
    this.#showRecording(false);
    this.#room = this.#peerId = this.#speaker = null;
    activeRoom.clear();
    byId("call").hidden = true;
    showBanner(null);
    this.#onExit(message);
  }

  /** Everyone must be able to see that the server is recording the call's audio. */
  #showRecording(active) {
    byId("recording-indicator").hidden = !active;
  }

  #remember(person) {
    const { peer_id: id, nickname, audio, video } = person;
    this.#people.set(id, { nickname, audio, video });
    this.#grid.upsert(id, { nickname, audio, video });
    this.#grid.setTracks(id, tracksOf(this.#remoteTracks.get(id)));
    this.#renderList();
  }

  #forget(id) {
    this.#people.delete(id);
    this.#grid.remove(id);
    this.#renderList();
  }

  #update(id, changes) {
    const person = this.#people.get(id);
    if (!person) return;
    Object.assign(person, changes);
    this.#grid.upsert(id, person);
    this.#renderList();
  }

  #bindServerEvents() {
    const on = (event, handler) => this.#signaling.on(event, (payload) => this.active && handler(payload));
    on("user_joined", (person) => {
      this.#noteJoined(person.peer_id, person.nickname);
      this.#remember(person);
      this.#link.expectPeers(this.#people.size);
    });
    on("user_left", ({ peer_id: id, nickname, reason }) => {
      if (!this.#people.has(id)) return;
      this.#forget(id);
      if (reason === "disconnect") this.#noteLeft(nickname);
      else this.#chat.note(`${nickname} left`);
    });
    on("user_updated", ({ peer_id: id, nickname }) => this.#update(id, { nickname }));
    on("media_state", ({ peer_id: id, audio, video }) => this.#update(id, { audio, video }));
    on("active_speaker", ({ peer_id: id }) => this.#setSpeaker(id));
    on("chat_message", (message) => this.#chat.receive(message));
    on("recording", ({ active }) => this.#showRecording(active));
    on("transcript", (entry) => this.#captions.receive(entry));
    // The server removed us from the room along with the old connection: rejoin on the new one.
    on("connect", () => this.#rejoin());
    on("disconnect", () => {
      this.#link.stop();
      this.#quality.setPhase("offline");
    });
  }

  // -- media ----------------------------------------------------------------------------

  #bindMedia() {
    this.#link.addEventListener("tracks", ({ detail }) => {
      this.#remoteTracks = detail;
      for (const id of this.#people.keys()) this.#grid.setTracks(id, tracksOf(detail.get(id)));
    });
    this.#link.addEventListener("state", ({ detail: state }) => {
      if (!this.active || !this.#signaling.connected) return;
      this.#quality.setPhase(state);
      showBanner(state === "reconnecting" ? "Media connection lost. Reconnecting…" : null);
    });
    this.#grid.addEventListener("autoplayblocked", () => {
      byId("unmute-audio").hidden = false;
    });
    this.#media.addEventListener("change", () => {
      if (!this.active) return;
      this.#renderSelf();
      this.#sendMediaState();
    });
    this.#media.addEventListener("trackchange", ({ detail: { kind, track } }) => {
      if (this.active) this.#link.replaceTrack(kind, track);
    });
  }

  /** The dominant speaker (a peer_id, or null), from the join ack or an active_speaker event. */
  #setSpeaker(id) {
    this.#speaker = id === this.#peerId ? SELF : id;
    this.#grid.setSpeaker(this.#speaker);
    this.#renderList();
  }

  /**
   * A dropped connection is said as "left" only when the person does not come back soon,
   * so that a flaky network does not fill the chat with "left" and "joined" lines. The new
   * connection may join before the server notices the old one dropped, or after.
   */
  #noteLeft(nickname) {
    if (this.#cancelNote(`joined:${nickname}`)) return; // already back
    this.#noteLater(`left:${nickname}`, `${nickname} left`);
  }

  #noteJoined(id, nickname) {
    if (this.#cancelNote(`left:${nickname}`)) return; // back after a drop
    const twin = [...this.#people].some(([other, person]) => other !== id && person.nickname === nickname);
    // Someone of the same name still here may be this person's dropped connection.
    if (twin) this.#noteLater(`joined:${nickname}`, `${nickname} joined`);
    else this.#chat.note(`${nickname} joined`);
  }

  #noteLater(key, text) {
    this.#cancelNote(key);
    const timer = setTimeout(() => {
      this.#pendingNotes.delete(key);
      if (this.active) this.#chat.note(text);
    }, RETURN_GRACE_MS);
    this.#pendingNotes.set(key, timer);
  }

  #cancelNote(key) {
    const timer = this.#pendingNotes.get(key);
    if (timer === undefined) return false;
    clearTimeout(timer);
    this.#pendingNotes.delete(key);
    return true;
  }

  #renderSelf() {
    const self = { nickname: this.#nickname, audio: this.#media.isOn("audio"), video: this.#media.isOn("video") };
    this.#grid.upsert(SELF, { ...self, self: true });
    // Your own tile shows your camera only; your microphone is for the others.
    this.#grid.setTracks(SELF, tracksOf({ video: this.#media.track("video") }));
    this.#renderList();
  }

  /** Tell the room when your microphone or camera went on or off (or is missing). */
  #sendMediaState() {
    const state = { audio: this.#media.isOn("audio"), video: this.#media.isOn("video") };
    if (this.#sentState?.audio === state.audio && this.#sentState?.video === state.video) return;
    this.#sentState = state;
    this.#signaling.request("media_state", state).catch(() => {
      this.#sentState = null; // try again with the next change or rejoin
    });
  }

  #renderList() {
    const self = {
      id: SELF,
      self: true,
      nickname: this.#nickname ?? "",
      audio: this.#media.isOn("audio"),
      video: this.#media.isOn("video"),
    };
    const others = [...this.#people].map(([id, person]) => ({ id, ...person }));
    this.#list.render(this.active ? [self, ...others] : [], this.#speaker);
  }

  // -- controls ---------------------------------------------------------------------------

  #bindControls() {
    bindMediaToggle(byId("toggle-mic"), this.#media, "audio");
    bindMediaToggle(byId("toggle-cam"), this.#media, "video");
    const dialog = byId("devices-dialog");
    const devices = new DevicePicker(
      this.#media,
      { video: byId("call-camera"), audio: byId("call-microphone") },
      (message) => {
        byId("devices-error").hidden = !message;
        byId("devices-error").textContent = message ?? "";
      },
    );
    byId("open-devices").addEventListener("click", () => {
      devices.refresh();
      dialog.showModal();
    });
    byId("leave").addEventListener("click", () => this.leave());
    byId("call-copy-link").addEventListener("click", () => copyRoomLink(this.#room));
    byId("unmute-audio").addEventListener("click", () => {
      this.#grid.unmuteAll();
      byId("unmute-audio").hidden = true;
    });
    const toggle = (kind) => toggleMedia(this.#media, kind);
    bindShortcuts(
      {
        m: () => toggle("audio"),
        v: () => toggle("video"),
        c: () => this.#panel.toggle("chat"),
        p: () => this.#panel.toggle("participants"),
      },
      () => this.active,
    );
  }
}

function tracksOf(entry) {
  return [entry?.audio, entry?.video].filter(Boolean);
}
