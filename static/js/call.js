// The call view: who is here, their tiles, chat and controls, kept in step with the server;
// after a lost connection it rejoins by itself.

import { Captions } from "./captions.js";
import { Chat } from "./chat.js";
import { Chime } from "./chime.js";
import { bindMediaToggle, bindShortcuts, toggleMedia } from "./controls.js";
import { describeError } from "./errors.js";
import { Grid } from "./grid.js";
import { RaisedHands } from "./hands.js";
import { copyRoomLink, showRoomInUrl } from "./links.js";
import { SidePanel } from "./panels.js";
import { ParticipantList } from "./participants.js";
import { MediaLink } from "./peer.js";
import { QualityIndicator } from "./quality.js";
import { ReactionBar, floatReaction } from "./reactions.js";
import { ScreenShare } from "./screenshare.js";
import { SettingsDialog } from "./settings.js";
import { activeRoom } from "./storage.js";
import { TileQuality } from "./tilequality.js";
import { AvatarColours, byId, showBanner, toast } from "./ui.js";

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
  #resumeToken = null; // from the join ack: a reconnect takes our place back (same peer_id)
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
  #hands;
  #reactions;
  #tileQuality;
  #micLevel;
  #screen = new ScreenShare();
  chime = new Chime();

  /** ``onExit(message | null)``: the call is over (left, or refused on rejoin); show the lobby. */
  constructor({ signaling, media, micLevel, onExit }) {
    this.#signaling = signaling;
    this.#media = media;
    this.#micLevel = micLevel;
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
    this.#chat.addEventListener("unread", () => this.#renderTitle());
    this.#hands = new RaisedHands(
      byId("raise-hand"),
      async (raised) => (await signaling.request("raise_hand", { raised })).hands,
    );
    this.#hands.addEventListener("change", () => {
      this.#grid.setHands(this.#hands.raised.map((id) => (id === this.#peerId ? SELF : id)));
      this.#renderList();
    });
    this.#reactions = new ReactionBar(byId("open-reactions"), byId("reaction-bar"), async (emoji) => {
      await signaling.request("reaction", { emoji });
      floatReaction(this.#grid.element(SELF), emoji);
    });
    this.#tileQuality = new TileQuality(
      () => this.#link.pc,
      () => this.#grid.tracks(),
      (id, quality) => this.#grid.setQuality(id, quality),
    );
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
    this.#bindHostControls();
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
    this.#renderTitle();
    byId("call-room").textContent = this.#room;
    byId("call").hidden = false;
    this.#quality.start();
    this.#tileQuality.start();
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
    this.#resumeToken = reply.resume_token ?? null;
    this.#sentState = null;
    const present = new Set(reply.participants.map((person) => person.peer_id));
    for (const id of this.#people.keys()) if (!present.has(id)) this.#forget(id);
    for (const person of reply.participants) this.#remember(person);
    this.#setSpeaker(reply.active_speaker ?? null);
    this.#hands.reset(this.#peerId, reply.hands ?? []);
    this.#renderSelf();
    this.#renderAlone();
    this.#sendMediaState();
    this.#showRecording(Boolean(reply.recording));
    this.#setHost(Boolean(reply.host));
    this.#captions.setAvailable(Boolean(reply.captions), this.#room);
    const tracks = { audio: this.#media.sent("audio"), video: this.#media.sent("video") };
    this.#link.start(tracks, reply.published, reply.ice_servers);
  }

  async #rejoin() {
    const handWasUp = this.#hands.mine;
    try {
      const request = { room: this.#room, nickname: this.#nickname };
      if (this.#resumeToken) request.resume = this.#resumeToken;
      const reply = await this.#signaling.request("join_room", request);
      this.#joined(reply);
      // A new participant to the server (not resumed): carry your hand and screen over.
      if (handWasUp && !reply.resumed) this.#hands.toggle();
      this.#presentingChanged();
    } catch (error) {
      if (error.code !== "offline") this.#end(describeError(error)); // offline: the next "connect" retries
    }
  }

  #end(message) {
    this.#link.stop();
    this.#quality.stop();
    this.#tileQuality.stop();
    this.#reactions.close();
    this.#screen.stop();
    this.#hands.reset(null);
    for (const id of [...this.#people.keys()]) this.#forget(id);
    for (const timer of this.#pendingNotes.values()) clearTimeout(timer);
    this.#pendingNotes.clear();
    this.#grid.clear();
    this.#colours.reset();
    this.#chat.clear();
    this.#captions.reset();
    this.#showRecording(false);
    this.#setHost(false);
    this.#room = this.#peerId = this.#speaker = this.#resumeToken = null;
    activeRoom.clear();
    byId("call").hidden = true;
    byId("muted-hint").hidden = true;
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
    this.#renderAlone();
  }

  #forget(id) {
    this.#people.delete(id);
    this.#grid.remove(id);
    this.#grid.remove(screenTile(id));
    this.#hands.drop(id);
    this.#renderList();
    this.#renderAlone();
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
      else this.#said(`${nickname} left`, "leave");
    });
    on("user_updated", ({ peer_id: id, nickname }) => {
      this.#update(id, { nickname });
      this.#renderScreen(id);
    });
    on("media_state", ({ peer_id: id, audio, video }) => this.#update(id, { audio, video }));
    on("active_speaker", ({ peer_id: id }) => this.#setSpeaker(id));
    on("quality", ({ peers }) => {
      if (Array.isArray(peers)) this.#tileQuality.setUplinks(peers, (id) => (id === this.#peerId ? SELF : id));
    });
    on("chat_message", (message) => this.#chat.receive(message));
    on("hands", ({ hands }) => {
      const before = this.#hands.raised;
      this.#hands.set(hands);
      for (const id of hands) {
        if (!before.includes(id) && this.#people.has(id)) toast(`${this.#people.get(id).nickname} raised their hand`);
      }
    });
    on("reaction", ({ peer_id: id, emoji }) => floatReaction(this.#grid.element(id), emoji));
    on("recording", ({ active }) => this.#showRecording(active));
    on("muted", ({ kind, muted, by }) => {
      if (muted) this.#media.setEnabled(kind, false);
      toast(`${by} ${muted ? "turned off" : "allowed again"} your ${kind === "audio" ? "microphone" : "camera"}`);
    });
    on("removed", ({ by }) => this.#end(`${by} removed you from the room.`));
    on("room_ended", ({ by }) => this.#end(`${by} ended the meeting.`));
    on("room_locked", ({ locked, by }) => {
      byId("lock-room").setAttribute("aria-pressed", String(locked));
      toast(`${by} ${locked ? "locked" : "unlocked"} the room`);
    });
    on("transcript", (entry) => this.#captions.receive(entry));
    // The server removed us from the room along with the old connection: rejoin on the new one.
    on("connect", () => this.#rejoin());
    on("disconnect", () => {
      this.#link.stop();
      this.#quality.setPhase("offline");
    });
  }

  // -- host controls ----------------------------------------------------------------------

  #setHost(isHost) {
    this.#list.host = isHost;
    byId("lock-room").hidden = !isHost;
    this.#renderList();
  }

  #bindHostControls() {
    const ask = (event, request) =>
      this.#signaling.request(event, request).catch((error) => toast(describeError(error)));
    this.#list.addEventListener("moderate", ({ detail: { action, id } }) => {
      if (action === "mute-audio") ask("mute_participant", { peer_id: id, kind: "audio" });
      if (action === "mute-video") ask("mute_participant", { peer_id: id, kind: "video" });
      if (action === "remove") ask("remove_participant", { peer_id: id });
    });
    byId("lock-room").addEventListener("click", () => {
      const locked = byId("lock-room").getAttribute("aria-pressed") !== "true";
      ask("lock_room", { locked }).then((reply) => {
        if (reply?.ok) byId("lock-room").setAttribute("aria-pressed", String(reply.locked));
      });
    });
  }

  // -- media ----------------------------------------------------------------------------

  #bindMedia() {
    this.#link.addEventListener("tracks", ({ detail }) => {
      this.#remoteTracks = detail;
      for (const id of this.#people.keys()) {
        this.#grid.setTracks(id, tracksOf(detail.get(id)));
        this.#renderScreen(id);
      }
    });
    this.#screen.addEventListener("change", () => this.#presentingChanged());
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
      this.#renderMutedHint();
    });
    this.#micLevel.addEventListener("speaking", () => this.#renderMutedHint());
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
    this.#noteLater(`left:${nickname}`, `${nickname} left`, "leave");
  }

  #noteJoined(id, nickname) {
    if (this.#cancelNote(`left:${nickname}`)) return; // back after a drop
    const twin = [...this.#people].some(([other, person]) => other !== id && person.nickname === nickname);
    // Someone of the same name still here may be this person's dropped connection.
    if (twin) this.#noteLater(`joined:${nickname}`, `${nickname} joined`, "join");
    else this.#said(`${nickname} joined`, "join");
  }

  #noteLater(key, text, chime) {
    this.#cancelNote(key);
    const timer = setTimeout(() => {
      this.#pendingNotes.delete(key);
      if (this.active) this.#said(text, chime);
    }, RETURN_GRACE_MS);
    this.#pendingNotes.set(key, timer);
  }

  /** A line about the call in the chat, with its chime ("join" or "leave"). */
  #said(text, chime) {
    this.#chat.note(text);
    this.chime.play(chime);
  }

  /** Alone in the room: say so, and offer the link that brings the others in. */
  #renderAlone() {
    byId("alone").hidden = !this.active || this.#people.size > 0;
  }

  /** "(2) standup · roomrelay": unread messages show on the tab while you look elsewhere. */
  #renderTitle() {
    if (!this.active) return;
    const unread = this.#chat.unread;
    document.title = `${unread ? `(${unread}) ` : ""}${this.#room} · roomrelay`;
  }

  /** Talking while muted: a hint, until you unmute or stop talking. */
  #renderMutedHint() {
    const muted = this.#media.track("audio") !== null && !this.#media.enabled.audio;
    byId("muted-hint").hidden = !(this.active && muted && this.#micLevel.speaking);
  }

  #cancelNote(key) {
    const timer = this.#pendingNotes.get(key);
    if (timer === undefined) return false;
    clearTimeout(timer);
    this.#pendingNotes.delete(key);
    return true;
  }

  /** A participant's shared screen: a tile of its own while the server relays it to us. */
  #renderScreen(id) {
    const tracks = this.#remoteTracks.get(id);
    const person = this.#people.get(id);
    if (!tracks?.screen || !person) {
      this.#grid.remove(screenTile(id));
      return;
    }
    this.#grid.upsert(screenTile(id), { nickname: person.nickname, audio: true, video: true, screen: true });
    this.#grid.setTracks(screenTile(id), [tracks.screen, tracks.screen_audio].filter(Boolean));
  }

  /** Your screen share started or stopped: publish it (or stop), and say so on the stage. */
  #presentingChanged() {
    const { active, video, audio } = this.#screen;
    if (this.active) {
      this.#link.publish("screen", video);
      this.#link.publish("screen_audio", audio);
    }
    byId("presenting").hidden = !(this.active && active);
    const button = byId("share-screen");
    button.setAttribute("aria-pressed", String(active));
    button.querySelector(".control-label").textContent = active ? "Stop presenting" : "Present";
    button.title = active ? "Stop presenting your screen" : "Present your screen";
  }

  #renderSelf() {
    const self = { nickname: this.#nickname, audio: this.#media.isOn("audio"), video: this.#media.isOn("video") };
    this.#grid.upsert(SELF, { ...self, self: true });
    // Your own tile shows your camera only; your microphone is for the others.
    this.#grid.setTracks(SELF, tracksOf({ video: this.#media.sent("video") }));
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
    const hands = this.#hands.raised.map((id) => (id === this.#peerId ? SELF : id));
    this.#list.render(this.active ? [self, ...others] : [], this.#speaker, hands);
  }

  // -- controls ---------------------------------------------------------------------------

  #bindControls() {
    bindMediaToggle(byId("toggle-mic"), this.#media, "audio");
    bindMediaToggle(byId("toggle-cam"), this.#media, "video");
    new SettingsDialog({ media: this.#media, grid: this.#grid, chime: this.chime });
    byId("leave").addEventListener("click", () => this.leave());
    byId("call-copy-link").addEventListener("click", () => copyRoomLink(this.#room));
    byId("alone-copy-link").addEventListener("click", () => copyRoomLink(this.#room));
    byId("share-screen").hidden = !this.#screen.supported;
    byId("share-screen").addEventListener("click", () => (this.#screen.active ? this.#screen.stop() : this.#screen.start()));
    byId("stop-presenting").addEventListener("click", () => this.#screen.stop());
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
        h: () => this.#hands.toggle(),
      },
      () => this.active,
    );
  }
}

function screenTile(peerId) {
  return `${peerId}/screen`;
}

function tracksOf(entry) {
  return [entry?.audio, entry?.video].filter(Boolean);
}
