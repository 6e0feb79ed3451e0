// The call's Settings dialog: camera, background blur, microphone (with its level), speaker,
// layout and sounds. Choices are remembered on this device.

import { blurAvailable } from "./blur.js";
import { DevicePicker } from "./devices.js";
import { prefs } from "./storage.js";
import { byId } from "./ui.js";

export class SettingsDialog {
  #dialog = byId("devices-dialog");
  #devices;
  #media;
  #grid;
  #chime;

  constructor({ media, grid, chime }) {
    this.#media = media;
    this.#grid = grid;
    this.#chime = chime;
    const showError = (message) => {
      byId("devices-error").hidden = !message;
      byId("devices-error").textContent = message ?? "";
    };
    this.#devices = new DevicePicker(
      media,
      { video: byId("call-camera"), audio: byId("call-microphone") },
      showError,
    );
    new SpeakerPicker(byId("call-speaker"), byId("call-speaker-field"), (deviceId) => grid.setSink(deviceId));
    for (const radio of this.#dialog.querySelectorAll('input[name="layout"]')) {
      radio.addEventListener("change", () => grid.setMode(radio.value));
    }
    const hide = byId("hide-without-video");
    hide.addEventListener("change", () => grid.setHideWithoutVideo(hide.checked));
    const chimeToggle = byId("chime-toggle");
    chimeToggle.addEventListener("change", () => {
      chime.enabled = chimeToggle.checked;
    });
    byId("open-devices").addEventListener("click", () => this.open());
    const blur = byId("blur-toggle");
    blurAvailable().then((available) => {
      byId("blur-field").hidden = !available;
    });
    blur.addEventListener("change", async () => {
      blur.disabled = true;
      await media.setBlur(blur.checked);
      blur.disabled = false;
      blur.checked = media.blurred;
      showError(media.blurProblem?.message ?? null);
    });
  }

  open() {
    this.#devices.refresh();
    byId(`layout-${this.#grid.mode}`).checked = true;
    byId("hide-without-video").checked = this.#grid.hideWithoutVideo;
    byId("chime-toggle").checked = this.#chime.enabled;
    byId("blur-toggle").checked = this.#media.blurWanted;
    this.#dialog.showModal();
  }
}

/** Where the others' voices play, on browsers that let a page choose (setSinkId). */
class SpeakerPicker {
  #select;
  #field;
  #onChange;

  constructor(select, field, onChange) {
    this.#select = select;
    this.#field = field;
    this.#onChange = onChange;
    select.addEventListener("change", () => {
      prefs.set("speaker", select.value || null);
      onChange(select.value);
    });
    navigator.mediaDevices?.addEventListener("devicechange", () => this.refresh());
    this.refresh();
  }

  async refresh() {
    const supported = typeof HTMLMediaElement.prototype.setSinkId === "function";
    const all = supported ? await navigator.mediaDevices.enumerateDevices().catch(() => []) : [];
    const outputs = all.filter((device) => device.kind === "audiooutput" && device.deviceId && device.deviceId !== "default");
    this.#field.hidden = outputs.length === 0;
    const saved = prefs.get("speaker") ?? "";
    const chosen = outputs.some((device) => device.deviceId === saved) ? saved : "";
    const options = [new Option("System default", "", false, chosen === "")];
    outputs.forEach((device, index) => {
      options.push(new Option(device.label || `Speaker ${index + 1}`, device.deviceId, false, device.deviceId === chosen));
    });
    this.#select.replaceChildren(...options);
    this.#onChange(chosen);
  }
}
