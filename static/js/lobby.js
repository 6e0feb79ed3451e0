// The lobby: room and name (remembered), open rooms, device choice and preview, then join.

import { DevicePicker } from "./devices.js";
import { describeError } from "./errors.js";
import { copyRoomLink, roomFromUrl } from "./links.js";
import { Preview } from "./preview.js";
import { RoomList } from "./rooms.js";
import { prefs } from "./storage.js";
import { byId } from "./ui.js";

// The server's limits (docs/protocol.md), checked here to explain mistakes before sending.
const LIMITS = { room: 128, nickname: 64 };
const CONTROL_CHARACTERS = /[\p{Cc}\p{Cf}]/u;

/** An error message for a room name or nickname, or null when it is fine. */
function checkName(value, what, limit) {
  const name = value.trim();
  if (!name) return `Enter a ${what}.`;
  if ([...name].length > limit) return `The ${what} is too long (at most ${limit} characters).`;
  if (CONTROL_CHARACTERS.test(name)) return `The ${what} contains characters that can't be used.`;
  return null;
}

export class Lobby {
  #element = byId("lobby");
  #form = byId("join-form");
  #room = byId("room-input");
  #nickname = byId("nickname-input");
  #button = byId("join-button");
  #error = byId("join-error");
  #onJoin;
  #preview;
  #rooms;
  #devices;
  #busy = false;
  #media;

  /** ``onJoin(room, nickname)`` enters the call; it throws (a RequestError) when refused. */
  constructor({ signaling, media, onJoin }) {
    this.#onJoin = onJoin;
    this.#media = media;
    this.#room.value = roomFromUrl() ?? prefs.get("room") ?? "";
    this.#nickname.value = prefs.get("nickname") ?? "";
    this.#preview = new Preview(media, this.#nickname);
    this.#preview.addEventListener("change", () => this.#renderButton());
    this.#rooms = new RoomList(signaling, byId("room-list"), byId("room-list-empty"), (name) => {
      this.#room.value = name;
      this.#join();
    });
    this.#devices = new DevicePicker(
      media,
      { video: byId("lobby-camera"), audio: byId("lobby-microphone") },
      (message) => this.showError(message),
    );
    this.#form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.#join();
    });
    byId("lobby-copy-link").addEventListener("click", () => {
      const problem = checkName(this.#room.value, "room name", LIMITS.room);
      if (problem) this.#invalid(this.#room, problem);
      else copyRoomLink(this.#room.value.trim());
    });
    for (const input of [this.#room, this.#nickname]) {
      input.addEventListener("input", () => input.removeAttribute("aria-invalid"));
    }
    this.#renderButton();
  }

  show(error = null) {
    this.#element.hidden = false;
    document.title = "roomrelay";
    this.#rooms.setActive(true);
    this.#devices.refresh();
    this.showError(error);
  }

  /** Give the keyboard a sensible place to continue, e.g. after leaving a call. */
  focus() {
    (this.#nickname.value ? this.#button : this.#nickname).focus();
  }

  hide() {
    this.#element.hidden = true;
    this.#rooms.setActive(false);
  }

  showError(message) {
    this.#error.hidden = !message;
    this.#error.textContent = message ?? "";
  }

  async #join() {
    if (this.#busy) return;
    const roomProblem = checkName(this.#room.value, "room name", LIMITS.room);
    const nameProblem = checkName(this.#nickname.value, "name", LIMITS.nickname);
    if (roomProblem) return this.#invalid(this.#room, roomProblem);
    if (nameProblem) return this.#invalid(this.#nickname, nameProblem);
    const room = this.#room.value.trim();
    const nickname = this.#nickname.value.trim();
    prefs.set("room", room);
    prefs.set("nickname", nickname);
    this.showError(null);
    this.#busy = true;
    this.#renderButton();
    try {
      // Devices given back when leaving the last call come back for the next one.
      if (this.#media.released) await this.#media.open();
      await this.#onJoin(room, nickname);
    } catch (error) {
      this.showError(describeError(error));
    } finally {
      this.#busy = false;
      this.#renderButton();
    }
  }

  #invalid(input, message) {
    input.setAttribute("aria-invalid", "true");
    input.focus();
    this.showError(message);
  }

  #renderButton() {
    this.#button.disabled = this.#busy;
    this.#button.textContent = this.#busy ? "Joining…" : this.#preview.joinLabel();
  }
}
