// The video grid: one tile per participant (yourself included), sized to fill the stage.
//
// Dispatches "autoplayblocked" when the browser refuses to play sound without a click.

import { byId, paintAvatar } from "./ui.js";

const GAP_PX = 8;
const WIDE = 16 / 9;
const SQUARE = 1;

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
  #template = byId("tile-template");
  #tiles = new Map(); // id → tile record

  constructor(container) {
    super();
    this.#container = container;
    new ResizeObserver(() => this.#layout()).observe(container);
  }

  /** Add or update a participant's tile. ``person``: {nickname, audio, video, self?}. */
  upsert(id, person) {
    let tile = this.#tiles.get(id);
    if (!tile) {
      tile = this.#create(id, Boolean(person.self));
      this.#tiles.set(id, tile);
      this.#container.append(tile.element);
      this.#layout();
    }
    tile.person = person;
    this.#render(tile);
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
      tile.videoTrack?.addEventListener(event, () => this.#render(tile), { signal: tile.listeners.signal });
    }
    if (tracks.length) this.#play(tile);
    this.#render(tile);
  }

  remove(id) {
    const tile = this.#tiles.get(id);
    if (!tile) return;
    tile.listeners?.abort();
    tile.video.srcObject = null;
    tile.element.remove();
    this.#tiles.delete(id);
    this.#layout();
  }

  clear() {
    for (const id of [...this.#tiles.keys()]) this.remove(id);
  }

  setSpeaker(id) {
    for (const [tileId, tile] of this.#tiles) tile.element.toggleAttribute("data-speaking", tileId === id);
  }

  /** After a click: let every tile play its sound. */
  unmuteAll() {
    for (const tile of this.#tiles.values()) {
      if (tile.self) continue;
      tile.video.muted = false;
      tile.video.play().catch(() => {});
    }
  }

  #create(id, self) {
    const element = this.#template.content.firstElementChild.cloneNode(true);
    element.dataset.peerId = id;
    element.toggleAttribute("data-self", self);
    const video = element.querySelector("video");
    video.muted = self; // never play your own microphone back to you
    return {
      id,
      self,
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
    };
  }

  #render(tile) {
    const { nickname, audio, video } = tile.person;
    tile.element.dataset.nickname = nickname;
    tile.name.textContent = tile.self ? `${nickname} (you)` : nickname;
    paintAvatar(tile.element, tile.avatar, nickname);
    tile.micOff.hidden = audio;
    tile.camOff.hidden = video;
    const live = tile.videoTrack && tile.videoTrack.readyState === "live" && !tile.videoTrack.muted;
    tile.placeholder.hidden = Boolean(video && live);
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

  #layout() {
    const { clientWidth, clientHeight } = this.#container;
    if (!clientWidth || !clientHeight) return;
    const { tileWidth, aspect } = bestLayout(this.#tiles.size, clientWidth, clientHeight);
    this.#container.style.setProperty("--tile-width", `${Math.floor(tileWidth)}px`);
    this.#container.style.setProperty("--tile-aspect", String(aspect));
    this.#container.style.setProperty("--gap", `${GAP_PX}px`);
  }
}
