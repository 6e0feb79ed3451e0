// Camera and microphone <select>s, listing the devices present and showing the one in use.

import { describeMediaError } from "./errors.js";

const NOUNS = { audio: "microphone", video: "camera" };

export class DevicePicker {
  #media;
  #selects;
  #onError;

  /** ``selects``: {audio, video}; ``onError(message | null)`` reports a failed switch. */
  constructor(media, selects, onError) {
    this.#media = media;
    this.#selects = selects;
    this.#onError = onError;
    for (const [kind, select] of Object.entries(selects)) {
      select.addEventListener("change", () => this.#switch(kind, select.value));
    }
    media.addEventListener("change", () => this.refresh());
    navigator.mediaDevices?.addEventListener("devicechange", () => this.refresh());
  }

  async refresh() {
    const devices = await this.#media.devices();
    for (const [kind, select] of Object.entries(this.#selects)) {
      const current = this.#media.deviceId(kind);
      const options = devices[kind].map((device, index) => {
        const label = device.label || `${NOUNS[kind]} ${index + 1}`;
        return new Option(label, device.deviceId, false, device.deviceId === current);
      });
      if (current === null) {
        // Not in use: picking a device turns it on (devices plugged in later show up here too).
        const usable = options.length > 0 && !this.#media.blocked;
        options.unshift(new Option(usable ? `${capitalised(NOUNS[kind])} off` : `No ${NOUNS[kind]}`, "", true, true));
        select.disabled = !usable;
      } else {
        select.disabled = false;
      }
      select.replaceChildren(...options);
    }
  }

  async #switch(kind, deviceId) {
    this.#onError(null);
    if (!deviceId) return;
    try {
      await this.#media.switchDevice(kind, deviceId);
    } catch (error) {
      this.#onError(describeMediaError(error, `chosen ${NOUNS[kind]}`));
      await this.refresh();
    }
  }
}

function capitalised(word) {
  return word[0].toUpperCase() + word.slice(1);
}
