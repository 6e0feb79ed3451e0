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
      // Without a working device of this kind there is nothing to switch (its track is not sent).
      if (current === null) options.splice(0, options.length, new Option(`No ${NOUNS[kind]}`, ""));
      select.replaceChildren(...options);
      select.disabled = current === null;
    }
  }

  async #switch(kind, deviceId) {
    this.#onError(null);
    try {
      await this.#media.switchDevice(kind, deviceId);
    } catch (error) {
      this.#onError(describeMediaError(error, `chosen ${NOUNS[kind]}`));
      await this.refresh();
    }
  }
}
