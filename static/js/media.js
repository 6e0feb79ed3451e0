// The local camera and microphone: opening them, choosing devices, muting.
//
// Dispatches "change" whenever tracks or their on/off state change,
// "trackchange" {kind, track} when the track to send changed: a device switch (peers
// swap it in with replaceTrack), a device turned on mid-call, background blur turned on
// or off; and "devicesadded" (detail: [MediaDeviceInfo]) when a camera or microphone is
// plugged in.

import { BlurredCamera } from "./blur.js";
import { prefs } from "./storage.js";

const KINDS = ["audio", "video"];
// Moderate capture size: the server re-encodes video for every viewer.
const VIDEO_CONSTRAINTS = { width: { ideal: 640 }, height: { ideal: 360 }, frameRate: { ideal: 24 } };
const AUDIO_CONSTRAINTS = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
const BASE = { audio: AUDIO_CONSTRAINTS, video: VIDEO_CONSTRAINTS };
const DEVICE_PREF = { audio: "microphone", video: "camera" };
const BLOCKED = new Set(["NotAllowedError", "SecurityError", "InsecureContext"]);

export class LocalMedia extends EventTarget {
  stream = new MediaStream();
  /** What the user asked for; survives device switches and reconnections. */
  enabled = { audio: true, video: true };
  /** The getUserMedia error that left us without some device, or null. */
  problem = null;
  /** True while asking for the devices (the browser may be showing its permission prompt). */
  opening = false;
  /** True after release(): the devices were given back (leaving a call) until open(). */
  released = false;
  /** Whether the user wants the background blurred (remembered on this device). */
  blurWanted = prefs.get("blur") === "on";
  /** Why blurring failed last time (an Error), or null. */
  blurProblem = null;
  #blur = null; // the BlurredCamera of the current camera track

  get supported() {
    return Boolean(navigator.mediaDevices?.getUserMedia);
  }

  /** The live track of ``kind``; an unplugged device's track has ended and no longer counts. */
  track(kind) {
    return this.stream.getTracks().find((t) => t.kind === kind && t.readyState === "live") ?? null;
  }

  isOn(kind) {
    return this.track(kind) !== null && this.enabled[kind];
  }

  /** The track others get (and your own tile shows): the camera blurred when asked. */
  sent(kind) {
    const track = this.track(kind);
    return kind === "video" && track && this.#blur ? this.#blur.track : track;
  }

  get blurred() {
    return this.#blur !== null;
  }

  /** Turn background blur on or off; the call swaps the sent video track. */
  async setBlur(on) {
    this.blurWanted = on;
    prefs.set("blur", on ? "on" : null);
    const before = this.sent("video");
    await this.#applyBlur();
    if (this.sent("video") !== before) this.#announce("video");
    this.#changed();
  }

  /** Blur the current camera track, or stop blurring, as wanted. */
  async #applyBlur() {
    const camera = this.track("video");
    if (this.#blur && (!this.blurWanted || this.#blur.camera !== camera)) {
      this.#blur.stop();
      this.#blur = null;
    }
    if (!this.blurWanted || !camera || this.#blur) return;
    try {
      const blur = await BlurredCamera.start(camera);
      if (this.blurWanted && this.track("video") === camera && !this.#blur) {
        this.#blur = blur;
        this.blurProblem = null;
      } else {
        blur.stop(); // changed meanwhile
      }
    } catch (error) {
      this.blurProblem = error;
    }
  }

  #announce(kind) {
    this.dispatchEvent(new CustomEvent("trackchange", { detail: { kind, track: this.sent(kind) } }));
  }

  /** The browser refuses camera and microphone until the user allows them in site settings. */
  get blocked() {
    return BLOCKED.has(this.problem?.name) && !this.track("audio") && !this.track("video");
  }

  /** Settles when the last open() has: joining waits for it, so it publishes what we got. */
  ready = Promise.resolve();
  #known = null; // ids of the devices present, to tell which ones were just plugged in

  constructor() {
    super();
    navigator.mediaDevices?.addEventListener("devicechange", () => this.#noticeDevices());
  }

  /**
   * Open camera and microphone, settling for whichever of them works
   * (audio-only, video-only, or nothing: the caller then joins as a viewer).
   */
  open() {
    this.ready = this.#openDevices();
    return this.ready;
  }

  async #openDevices() {
    this.stop();
    this.released = false;
    this.problem = null;
    if (!this.supported) {
      this.problem = { name: "InsecureContext" };
      this.#changed();
      return;
    }
    this.opening = true;
    this.#changed();
    for (const kinds of [KINDS, ["audio"], ["video"]]) {
      try {
        const stream = await navigator.mediaDevices.getUserMedia(constraints(kinds));
        stream.getTracks().forEach((track) => this.#adopt(track));
        break;
      } catch (error) {
        this.problem ??= error;
      }
    }
    this.opening = false;
    await this.#applyBlur();
    this.#known = await this.#deviceIds().catch(() => null); // only for telling new devices apart
    this.#changed();
  }

  async #deviceIds() {
    const { audio, video } = await this.devices();
    return new Set([...audio, ...video].map((device) => device.deviceId));
  }

  /** Hot-plug: announce new devices; the pickers list them by themselves. */
  async #noticeDevices() {
    const { audio, video } = await this.devices();
    const before = this.#known;
    this.#known = new Set([...audio, ...video].map((device) => device.deviceId));
    const added = before ? [...audio, ...video].filter((device) => !before.has(device.deviceId)) : [];
    if (added.length) this.dispatchEvent(new CustomEvent("devicesadded", { detail: added }));
  }

  /** Move ``kind`` to another device; the new track keeps the on/off state. */
  async switchDevice(kind, deviceId) {
    const old = this.stream.getTracks().find((t) => t.kind === kind) ?? null;
    // Stop first: many phones cannot open two cameras at once.
    old?.stop();
    let fresh;
    try {
      const stream = await navigator.mediaDevices.getUserMedia({
        [kind]: { ...BASE[kind], deviceId: { exact: deviceId } },
      });
      [fresh] = stream.getTracks();
    } catch (error) {
      if (old) await this.#reopen(kind, old);
      throw error;
    }
    if (old) this.stream.removeTrack(old);
    this.#adopt(fresh);
    if (this.track("audio") && this.track("video")) this.problem = null;
    prefs.set(DEVICE_PREF[kind], deviceId);
    await this.#applyBlur();
    this.#announce(kind);
    this.#changed();
    return fresh;
  }

  /**
   * Open a device of ``kind`` that is missing (the call started without it, or it was
   * unplugged): the new track is announced with "trackchange", and the call publishes it.
   * ``on``: turn it on (a click on "Start video"), or keep the current on/off choice.
   * Throws getUserMedia's error.
   */
  async acquire(kind, { on = true } = {}) {
    if (this.track(kind)) return this.track(kind);
    let track;
    try {
      const stream = await navigator.mediaDevices.getUserMedia(constraints([kind]));
      [track] = stream.getTracks();
    } catch (error) {
      this.problem = error;
      this.#changed();
      throw error;
    }
    if (on) this.enabled[kind] = true;
    for (const old of this.stream.getTracks()) if (old.kind === kind) this.stream.removeTrack(old);
    this.#adopt(track);
    if (this.track("audio") && this.track("video")) this.problem = null;
    await this.#applyBlur();
    this.#announce(kind);
    this.#changed();
    return track;
  }

  /** Give the camera and microphone back (the camera light goes off) until open(). */
  release() {
    this.stop();
    this.released = true;
    this.problem = null;
    this.#changed();
  }

  setEnabled(kind, on) {
    this.enabled[kind] = on;
    for (const track of new Set([this.track(kind), this.sent(kind)])) if (track) track.enabled = on;
    this.#changed();
  }

  /** Current device id of ``kind``, if any. */
  deviceId(kind) {
    return this.track(kind)?.getSettings().deviceId ?? null;
  }

  async devices() {
    if (!navigator.mediaDevices?.enumerateDevices) return { audio: [], video: [] };
    const all = await navigator.mediaDevices.enumerateDevices();
    return {
      audio: all.filter((device) => device.kind === "audioinput" && device.deviceId),
      video: all.filter((device) => device.kind === "videoinput" && device.deviceId),
    };
  }

  stop() {
    this.#blur?.stop();
    this.#blur = null;
    for (const track of this.stream.getTracks()) {
      track.stop();
      this.stream.removeTrack(track);
    }
  }

  async #reopen(kind, old) {
    const stream = await navigator.mediaDevices
      .getUserMedia({ [kind]: { ...BASE[kind], deviceId: { ideal: old.getSettings().deviceId } } })
      .catch(() => null);
    this.stream.removeTrack(old);
    const track = stream?.getTracks()[0];
    if (track) {
      this.#adopt(track);
      await this.#applyBlur();
      this.#announce(kind);
    }
    this.#changed();
  }

  #adopt(track) {
    track.enabled = this.enabled[track.kind];
    // A device unplugged mid-call ends its track: carry on with another one of its kind, if any.
    track.addEventListener("ended", () => this.#replaceEnded(track));
    this.stream.addTrack(track);
  }

  async #replaceEnded(track) {
    if (!this.stream.getTracks().includes(track)) return;
    this.#changed();
    const { [track.kind]: others } = await this.devices();
    if (others.length && !this.released) await this.acquire(track.kind, { on: false }).catch(() => {});
  }

  #changed() {
    this.dispatchEvent(new Event("change"));
  }
}

/** getUserMedia constraints for ``kinds``, preferring the devices chosen last time. */
function constraints(kinds) {
  const result = {};
  for (const kind of kinds) {
    const saved = prefs.get(DEVICE_PREF[kind]);
    result[kind] = saved ? { ...BASE[kind], deviceId: { ideal: saved } } : BASE[kind];
  }
  return result;
}
