// Live captions: the server's `transcript` events under the video, a toggle, and the room's
// whole transcript as a download.

import { prefs } from "./storage.js";

const SHOWN_LINES = 3;
const LINE_LIFETIME_MS = 8000; // a caption fades away once it is this old

export class Captions {
  #region;
  #toggle;
  #download;
  #available = false;
  #expiry = new Map(); // line -> its removal timer
  #live = new Map(); // peer_id -> the line showing that speaker's speech in progress

  constructor({ region, toggle, download }) {
    this.#region = region;
    this.#toggle = toggle;
    this.#download = download;
    toggle.addEventListener("click", () => this.#setOn(!this.#on));
  }

  get #on() {
    return prefs.get("captions") !== "off";
  }

  /** Show the controls when the server transcribes this room (join ack ``captions``). */
  setAvailable(available, room) {
    this.#available = available;
    this.#toggle.hidden = !available;
    this.#download.hidden = !available;
    this.#download.href = `/rooms/${encodeURIComponent(room ?? "")}/transcript?format=text`;
    this.#setOn(this.#on);
  }

  /**
   * A `transcript` event: {peer_id, nickname, text, final}. A speaker's partial captions
   * (final: false) update one line in place, hidden from screen readers; the final caption
   * replaces that line and is announced.
   */
  receive({ peer_id: peerId, nickname, text, final = true }) {
    if (!this.#available || !text) return;
    const live = this.#live.get(peerId);
    if (!final && live) {
      live.lastChild.textContent = text;
      this.#expireLater(live);
      return;
    }
    if (live) this.#remove(live);
    const line = document.createElement("p");
    const who = document.createElement("strong");
    who.textContent = `${nickname}: `;
    line.append(who, document.createElement("span"));
    line.lastChild.textContent = text;
    if (!final) {
      line.classList.add("partial");
      line.setAttribute("aria-hidden", "true");
      this.#live.set(peerId, line);
    }
    this.#region.append(line);
    while (this.#region.childElementCount > SHOWN_LINES) {
      this.#remove(this.#region.firstElementChild);
    }
    this.#expireLater(line);
    this.#render();
  }

  reset() {
    for (const line of [...this.#expiry.keys()]) this.#remove(line);
    this.#region.replaceChildren();
    this.setAvailable(false, null);
  }

  #expireLater(line) {
    clearTimeout(this.#expiry.get(line));
    this.#expiry.set(
      line,
      setTimeout(() => {
        this.#remove(line);
        this.#render();
      }, LINE_LIFETIME_MS),
    );
  }

  #remove(line) {
    clearTimeout(this.#expiry.get(line));
    this.#expiry.delete(line);
    for (const [peerId, live] of this.#live) if (live === line) this.#live.delete(peerId);
    line.remove();
  }

  #setOn(on) {
    prefs.set("captions", on ? "on" : "off");
    this.#toggle.setAttribute("aria-pressed", String(on));
    this.#render();
  }

  #render() {
    this.#region.hidden = !(this.#available && this.#on && this.#region.childElementCount);
  }
}
