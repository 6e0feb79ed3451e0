// A short, soft chime when someone joins (rising) or leaves (falling); off with a toggle.

import { prefs } from "./storage.js";

const NOTES = { join: [523.25, 783.99], leave: [783.99, 523.25] };
const NOTE_S = 0.12;

export class Chime {
  #context = null;
  /** How many chimes played, for the tests and diagnostics. */
  played = 0;

  get enabled() {
    return prefs.get("chime") !== "off";
  }

  set enabled(on) {
    prefs.set("chime", on ? "on" : "off");
  }

  /** ``kind``: "join" or "leave". */
  play(kind) {
    if (!this.enabled || !window.AudioContext) return;
    this.#context ??= new AudioContext();
    const context = this.#context;
    context.resume().catch(() => {});
    const start = context.currentTime + 0.02;
    NOTES[kind].forEach((frequency, index) => {
      const oscillator = context.createOscillator();
      const gain = context.createGain();
      oscillator.type = "sine";
      oscillator.frequency.value = frequency;
      const at = start + index * NOTE_S;
      gain.gain.setValueAtTime(0, at);
      gain.gain.linearRampToValueAtTime(0.08, at + 0.015);
      gain.gain.exponentialRampToValueAtTime(0.0001, at + NOTE_S * 1.6);
      oscillator.connect(gain).connect(context.destination);
      oscillator.start(at);
      oscillator.stop(at + NOTE_S * 1.7);
    });
    this.played += 1;
  }
}
