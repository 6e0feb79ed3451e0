// How loud your microphone is: drives the level meters (lobby, Settings) and tells the call
// when you are talking while muted. It listens to a copy of the microphone track, so it still
// hears you while the track sent to the room is muted.
//
// Dispatches "speaking" (detail: boolean) when you start or stop talking.

const POLL_MS = 80;
const FLOOR_DB = -60; // quieter than this reads as silence
const SPEAKING_LEVEL = 0.35;
const SPEAKING_HOLD_MS = 400; // talk this long to count as speaking (a cough does not)
const SILENCE_HOLD_MS = 1500;

export class MicLevel extends EventTarget {
  #media;
  #meters;
  #context = null;
  #source = null;
  #copy = null;
  #analyser = null;
  #samples = null;
  #timer = null;
  #speaking = false;
  #since = 0;
  level = 0;

  /** ``meters``: <meter> elements showing the level while they are on screen. */
  constructor(media, meters) {
    super();
    this.#media = media;
    this.#meters = meters;
    media.addEventListener("change", () => this.#follow());
    // Browsers start audio only after a user gesture: resume on the first one.
    for (const event of ["pointerdown", "keydown"]) {
      document.addEventListener(event, () => this.#context?.resume().catch(() => {}), { capture: true });
    }
    this.#follow();
  }

  get speaking() {
    return this.#speaking;
  }

  /** Listen to the current microphone (or stop, without one). */
  #follow() {
    const track = this.#media.track("audio");
    for (const meter of this.#meters) meter.hidden = !track; // no microphone, no meter
    if (track && this.#copy?.sourceId === track.id) return;
    this.#detach();
    if (!track || !window.AudioContext) return;
    this.#context ??= new AudioContext();
    this.#copy = track.clone();
    this.#copy.enabled = true;
    this.#copy.sourceId = track.id;
    this.#source = this.#context.createMediaStreamSource(new MediaStream([this.#copy]));
    this.#analyser = this.#context.createAnalyser();
    this.#analyser.fftSize = 1024;
    this.#samples = new Float32Array(this.#analyser.fftSize);
    this.#source.connect(this.#analyser);
    this.#context.resume().catch(() => {});
    this.#timer = setInterval(() => this.#measure(), POLL_MS);
  }

  #detach() {
    clearInterval(this.#timer);
    this.#source?.disconnect();
    this.#copy?.stop();
    this.#copy = this.#source = this.#analyser = null;
    this.#update(0);
  }

  #measure() {
    this.#analyser.getFloatTimeDomainData(this.#samples);
    let sum = 0;
    for (const sample of this.#samples) sum += sample * sample;
    const rms = Math.sqrt(sum / this.#samples.length);
    const db = rms > 0 ? 20 * Math.log10(rms) : FLOOR_DB;
    this.#update(Math.min(1, Math.max(0, (db - FLOOR_DB) / -FLOOR_DB)));
  }

  #update(level) {
    this.level = level;
    for (const meter of this.#meters) if (meter.offsetParent !== null) meter.value = level;
    const now = performance.now();
    const loud = level >= SPEAKING_LEVEL;
    if (loud === this.#speaking) {
      this.#since = now;
      return;
    }
    if (now - this.#since < (loud ? SPEAKING_HOLD_MS : SILENCE_HOLD_MS)) return;
    this.#speaking = loud;
    this.#since = now;
    this.dispatchEvent(new CustomEvent("speaking", { detail: loud }));
  }
}
