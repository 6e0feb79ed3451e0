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
  #timers = new Set();

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

  /** A `transcript` event: {nickname, text, final}. */
  receive({ nickname, text }) {
    if (!this.#available || !text) return;
    const line = document.createElement("p");
    const who = document.createElement("strong");
    who.textContent = `${nickname}: `;
    line.append(who, text);
    this.#region.append(line);
    while (this.#region.childElementCount > SHOWN_LINES) this.#region.firstElementChild.remove();
    const timer = setTimeout(() => {
      line.remove();
      this.#timers.delete(timer);
      this.#render();
    }, LINE_LIFETIME_MS);
    this.#timers.add(timer);
    this.#render();
  }

  reset() {
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    this.#region.replaceChildren();
    this.setAvailable(false, null);
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
