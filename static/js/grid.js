// The video stage: one tile per participant (yourself included), laid out as a grid or as
// a speaker view (one large tile above a strip of the others). In a call of two your own
// tile is a small picture-in-picture you can drag to any corner. A shared screen gets a
// tile of its own, shown large while it lasts.
//
// Dispatches "autoplayblocked" when the browser refuses to play sound without a click,
// and "pinchange" when you pin or unpin a tile.

import { prefs } from "./storage.js";
import { byId, paintAvatar, setIcon } from "./ui.js";

const GAP_PX = 8;
const WIDE = 16 / 9;
const SQUARE = 1;
const STRIP_MAX_WIDTH_PX = 220;
const CORNERS = ["bottom-right", "bottom-left", "top-right", "top-left"];
const SELF = "self";

/**
 * Columns, tile width and tile aspect that make ``count`` tiles as large as possible
 * in width × height. Tall stages (phones) may use square tiles: they waste less screen.
 */
function bestLayout(count, width, height, gap = GAP_PX) {
  let best = { columns: 1, tileWidth: 0, aspect: WIDE, area: 0 };
  for (const aspect of height > width ? [WIDE, SQUARE] : [WIDE]) {
    for (let columns = 1; columns <= Math.max(count, 1); columns += 1) {
      const rows = Math.ceil(count / columns);
      const tileWidth = Math.min(
        (width - gap * (columns - 1)) / columns,
        ((height - gap * (rows - 1)) / rows) * aspect,
      );
      const area = (tileWidth * tileWidth) / aspect;
      if (area > best.area) best = { columns, tileWidth, aspect, area };
    }
  }
  return best;
}

export class Grid extends EventTarget {
  #container;
  #colours;
  #template = byId("tile-template");
  #tiles = new Map(); // id → tile record
  #speaker = null;
  #featured = null; // the large tile of the speaker view
  #pinned = null;
  #mode = prefs.get("layout") === "speaker" ? "speaker" : "grid";
  #hideWithoutVideo = prefs.get("hideWithoutVideo") === "on";
  #sinkId = "";
  #corner = CORNERS.includes(prefs.get("pipCorner")) ? prefs.get("pipCorner") : CORNERS[0];

  /** ``colours``: the call's AvatarColours, so that no two people share a colour. */
  constructor(container, colours) {
    super();
    this.#container = container;
    this.#colours = colours;
    new ResizeObserver(() => this.#layout()).observe(container);
  }

  get mode() {
    return this.#mode;
  }

  get hideWithoutVideo() {
    return this.#hideWithoutVideo;
  }

  get pinned() {
    return this.#pinned;
  }

  /** Add or update a tile. ``person``: {nickname, audio, video, self?, screen?}. */
  upsert(id, person) {
    let tile = this.#tiles.get(id);
    if (!tile) {
      tile = this.#create(id, Boolean(person.self), Boolean(person.screen));
      this.#tiles.set(id, tile);
      // Your own tile always comes first; the others in the order they arrived.
      if (tile.self) this.#container.prepend(tile.element);
      else this.#container.append(tile.element);
    }
    tile.person = person;
    this.#render(tile);
    this.#layout();
  }

  /** Show these MediaStreamTracks on a tile (its video, and for others their sound). */
  setTracks(id, tracks) {
    const tile = this.#tiles.get(id);
    if (!tile) return;
    const current = tile.video.srcObject?.getTracks() ?? [];
    if (current.length === tracks.length && tracks.every((track) => current.includes(track))) return;
    tile.video.srcObject = tracks.length ? new MediaStream(tracks) : null;
    // A received track is "muted" while no media flows: show the placeholder meanwhile.
    tile.listeners?.abort();
    tile.listeners = new AbortController();
    tile.videoTrack = tracks.find((track) => track.kind === "video") ?? null;
    for (const event of ["mute", "unmute", "ended"]) {
      tile.videoTrack?.addEventListener(
        event,
        () => {
          this.#render(tile);
          this.#layout();
        },
        { signal: tile.listeners.signal },
      );
    }
    if (tracks.length) this.#play(tile);
    this.#render(tile);
    this.#layout();
  }

  remove(id) {
    const tile = this.#tiles.get(id);
    if (!tile) return;
    tile.listeners?.abort();
    tile.video.srcObject = null;
    tile.element.remove();
    this.#tiles.delete(id);
    if (this.#pinned === id) this.pin(null);
    if (this.#featured === id) this.#featured = null;
    this.#layout();
  }

  clear() {
    for (const id of [...this.#tiles.keys()]) this.remove(id);
    this.#speaker = null;
  }

  /** The dominant speaker: ringed while their microphone is on, and large in speaker view. */
  setSpeaker(id) {
    this.#speaker = id;
    for (const tile of this.#tiles.values()) this.#render(tile);
    this.#layout();
  }

  /** "grid" or "speaker"; remembered on this device. */
  setMode(mode) {
    this.#mode = mode === "speaker" ? "speaker" : "grid";
    prefs.set("layout", this.#mode);
    this.#layout();
  }

  /** Hide the tiles of people whose camera is off (remembered on this device). */
  setHideWithoutVideo(hide) {
    this.#hideWithoutVideo = Boolean(hide);
    prefs.set("hideWithoutVideo", hide ? "on" : "off");
    this.#layout();
  }

  /** Keep ``id`` large for you alone (others' views do not change); null unpins. */
  pin(id) {
    this.#pinned = id !== null && this.#tiles.has(id) ? id : null;
    for (const tile of this.#tiles.values()) this.#renderPin(tile);
    this.#layout();
    this.dispatchEvent(new Event("pinchange"));
  }

  /** Raised hands, first raised first: each tile shows its place in the queue. */
  setHands(order) {
    for (const tile of this.#tiles.values()) {
      const position = order.indexOf(tile.id) + 1;
      tile.handBadge.hidden = position === 0;
      tile.handPosition.textContent = position ? String(position) : "";
      tile.handBadge.title = position ? `Hand raised (${position} in line)` : "";
      tile.element.toggleAttribute("data-hand", position > 0);
    }
  }

  /** Each tile's tracks, for measuring their quality. */
  tracks() {
    return [...this.#tiles.values()].map((tile) => ({
      id: tile.id,
      self: tile.self,
      tracks: tile.video.srcObject?.getTracks() ?? [],
    }));
  }

  /** A tile's connection quality, {level, details} or null (unknown: hidden). */
  setQuality(id, quality) {
    const tile = this.#tiles.get(id);
    if (!tile) return;
    tile.quality.hidden = !quality;
    if (!quality) return;
    tile.quality.dataset.level = quality.level;
    const who = tile.self ? "Your connection" : `Connection to ${tile.person.nickname}`;
    tile.quality.setAttribute("aria-label", `${who}: ${quality.level}. ${quality.details}`);
    tile.qualityDetails.textContent = `${capitalise(quality.level)}: ${quality.details}`;
  }

  /** The tile element of ``id`` (for overlays such as reactions), or null. */
  element(id) {
    return this.#tiles.get(id)?.element ?? null;
  }

  /** Play everyone's sound on this output device ("" for the system default). */
  setSink(deviceId) {
    this.#sinkId = deviceId;
    for (const tile of this.#tiles.values()) if (!tile.self) this.#applySink(tile);
  }

  #applySink(tile) {
    if (typeof tile.video.setSinkId !== "function" || tile.video.sinkId === this.#sinkId) return;
    tile.video.setSinkId(this.#sinkId).catch((error) => console.warn("roomrelay: speaker not used", error));
  }

  /** After a click: let every tile play its sound. */
  unmuteAll() {
    for (const tile of this.#tiles.values()) {
      if (tile.self) continue;
      tile.video.muted = false;
      tile.video.play().catch(() => {});
    }
  }

  #create(id, self, screen) {
    const element = this.#template.content.firstElementChild.cloneNode(true);
    element.dataset.peerId = id;
    element.toggleAttribute("data-self", self);
    element.toggleAttribute("data-screen", screen);
    const video = element.querySelector("video");
    video.muted = self; // never play your own microphone back to you
    const tile = {
      id,
      self,
      screen,
      element,
      video,
      videoTrack: null,
      listeners: null,
      person: null,
      name: element.querySelector(".name"),
      avatar: element.querySelector(".avatar"),
      placeholder: element.querySelector(".placeholder"),
      micOff: element.querySelector(".mic-off"),
      camOff: element.querySelector(".cam-off"),
      pinButton: element.querySelector(".pin-tile"),
      handBadge: element.querySelector(".hand-badge"),
      handPosition: element.querySelector(".hand-position"),
      quality: element.querySelector(".tile-quality"),
      qualityDetails: element.querySelector(".tile-quality-details"),
      fullscreenButton: element.querySelector(".fullscreen-tile"),
    };
    tile.pinButton.addEventListener("click", () => this.pin(this.#pinned === id ? null : id));
    tile.fullscreenButton.addEventListener("click", () => toggleFullscreen(element));
    element.addEventListener("fullscreenchange", () => this.#renderPin(tile));
    if (self) this.#makeDraggable(tile);
    else this.#applySink(tile);
    this.#renderPin(tile);
    return tile;
  }

  #render(tile) {
    const { nickname, audio, video } = tile.person;
    // A screen is named after its presenter, but it is not their tile.
    tile.element.dataset[tile.screen ? "screenOf" : "nickname"] = nickname;
    tile.name.textContent = tile.screen ? `${nickname}'s screen` : tile.self ? `${nickname} (you)` : nickname;
    paintAvatar(tile.element, tile.avatar, nickname, this.#colours.hue(nickname));
    tile.micOff.hidden = audio;
    tile.camOff.hidden = video;
    tile.placeholder.hidden = this.#showsVideo(tile);
    tile.element.toggleAttribute("data-speaking", tile.id === this.#speaker && audio);
    const label = tile.screen ? `${nickname}'s screen` : tile.self ? "You" : nickname;
    tile.pinButton.setAttribute("aria-label", `${this.#pinned === tile.id ? "Unpin" : "Pin"} ${label}`);
    tile.fullscreenButton.setAttribute("aria-label", `Show ${label} full screen`);
  }

  #renderPin(tile) {
    const pinned = this.#pinned === tile.id;
    tile.element.toggleAttribute("data-pinned", pinned);
    tile.pinButton.setAttribute("aria-pressed", String(pinned));
    tile.pinButton.title = pinned ? "Unpin (only for you)" : "Pin (only for you)";
    const full = document.fullscreenElement === tile.element;
    setIcon(tile.fullscreenButton, full ? "exit-fullscreen" : "fullscreen");
    tile.fullscreenButton.title = full ? "Exit full screen" : "Full screen";
    if (tile.person) this.#render(tile);
  }

  #showsVideo(tile) {
    const live = tile.videoTrack && tile.videoTrack.readyState === "live" && !tile.videoTrack.muted;
    return Boolean(tile.person?.video && live);
  }

  #play(tile) {
    tile.video.play().catch((error) => {
      if (error.name !== "NotAllowedError") return; // e.g. interrupted by a newer srcObject
      // Without a click, browsers only allow silent autoplay: keep the video, ask for sound.
      tile.video.muted = true;
      tile.video.play().catch(() => {});
      this.dispatchEvent(new Event("autoplayblocked"));
    });
  }

  /** Which tile is large in speaker view: the pinned one, a shared screen, the (last) speaker. */
  #pickFeatured(visible) {
    const present = (id) => id !== null && visible.some((tile) => tile.id === id);
    if (present(this.#pinned)) return this.#pinned;
    const screen = visible.findLast((tile) => tile.screen);
    if (screen) return screen.id;
    if (present(this.#speaker) && this.#speaker !== SELF) this.#featured = this.#speaker;
    if (!present(this.#featured)) this.#featured = visible.find((tile) => !tile.self)?.id ?? visible[0]?.id ?? null;
    return this.#featured;
  }

  #layout() {
    const { clientWidth: width, clientHeight: height } = this.#container;
    const tiles = [...this.#tiles.values()];
    const remotes = tiles.filter((tile) => !tile.self && !tile.screen);
    // Hidden: others without video (never the pinned tile, never everyone).
    const hideable = (tile) =>
      this.#hideWithoutVideo && !tile.self && !tile.screen && tile.id !== this.#pinned && !this.#showsVideo(tile);
    const hidden = remotes.filter(hideable).length < remotes.length ? new Set(tiles.filter(hideable)) : new Set();
    const visible = tiles.filter((tile) => !hidden.has(tile));
    const visibleRemotes = visible.filter((tile) => !tile.self);
    const sharing = visible.some((tile) => tile.screen);
    const pip =
      this.#mode === "grid" && this.#pinned === null && !sharing && visibleRemotes.length === 1
        ? this.#tiles.get(SELF)
        : null;
    // A shared screen is large for everyone, with the cameras in a strip.
    const speakerView = (this.#mode === "speaker" || this.#pinned !== null || sharing) && visible.length > 1;
    const featured = speakerView ? this.#pickFeatured(visible) : null;
    for (const tile of tiles) {
      tile.element.hidden = hidden.has(tile);
      tile.element.toggleAttribute("data-pip", tile === pip);
      tile.element.toggleAttribute("data-featured", tile.id === featured);
      if (tile === pip) tile.element.dataset.corner = this.#corner;
      else delete tile.element.dataset.corner;
    }
    this.#container.dataset.layout = speakerView ? "speaker" : "grid";
    this.#container.dataset.hiddenTiles = String(hidden.size);
    this.#container.style.setProperty("--gap", `${GAP_PX}px`);
    if (!width || !height) return;
    if (speakerView) {
      const strip = visible.length - 1;
      const stripWidth = Math.max(48, Math.min(STRIP_MAX_WIDTH_PX, (width - GAP_PX * (strip - 1)) / strip));
      // Many people on a narrow screen: the strip takes several rows.
      const perRow = Math.max(1, Math.floor((width + GAP_PX) / (stripWidth + GAP_PX)));
      const stripHeight = Math.ceil(strip / perRow) * (stripWidth / WIDE + GAP_PX);
      const mainHeight = Math.max(0, height - stripHeight - GAP_PX);
      this.#container.style.setProperty("--tile-width", `${Math.floor(stripWidth)}px`);
      this.#container.style.setProperty("--tile-aspect", String(WIDE));
      this.#container.style.setProperty("--featured-width", `${Math.floor(Math.min(width, mainHeight * WIDE))}px`);
      return;
    }
    const count = visible.length - (pip ? 1 : 0);
    const { tileWidth, aspect } = bestLayout(count, width, height);
    this.#container.style.setProperty("--tile-width", `${Math.floor(tileWidth)}px`);
    this.#container.style.setProperty("--tile-aspect", String(aspect));
  }

  /** Drag your picture-in-picture anywhere; it settles in the nearest corner (remembered). */
  #makeDraggable(tile) {
    const element = tile.element;
    let start = null;
    element.addEventListener("pointerdown", (event) => {
      if (!element.hasAttribute("data-pip") || event.button !== 0 || event.target.closest("button")) return;
      start = { x: event.clientX, y: event.clientY };
      element.setPointerCapture(event.pointerId);
      element.toggleAttribute("data-dragging", true);
    });
    element.addEventListener("pointermove", (event) => {
      if (!start) return;
      element.style.translate = `${event.clientX - start.x}px ${event.clientY - start.y}px`;
    });
    const drop = (event) => {
      if (!start) return;
      const stage = this.#container.getBoundingClientRect();
      const box = element.getBoundingClientRect();
      const x = box.left + box.width / 2;
      const y = box.top + box.height / 2;
      const vertical = y < stage.top + stage.height / 2 ? "top" : "bottom";
      const horizontal = x < stage.left + stage.width / 2 ? "left" : "right";
      start = null;
      element.style.translate = "";
      element.removeAttribute("data-dragging");
      this.#corner = `${vertical}-${horizontal}`;
      prefs.set("pipCorner", this.#corner);
      this.#layout();
    };
    element.addEventListener("pointerup", drop);
    element.addEventListener("pointercancel", drop);
  }
}

function capitalise(word) {
  return word[0].toUpperCase() + word.slice(1);
}

function toggleFullscreen(element) {
  if (document.fullscreenElement === element) document.exitFullscreen().catch(() => {});
  else element.requestFullscreen?.().catch(() => {});
}
