// The status pill in the call bar: connection phase first, then quality measured with getStats().

const POLL_MS = 2000;
const LABELS = {
  offline: "Offline",
  connecting: "Connecting…",
  reconnecting: "Reconnecting…",
  idle: "Connected",
  good: "Good connection",
  fair: "Fair connection",
  poor: "Poor connection",
};

/** "good" | "fair" | "poor" from a round trip (seconds) and a packet loss ratio. */
export function qualityLevel(rtt, loss) {
  return rtt > 0.5 || loss > 0.08 ? "poor" : rtt > 0.25 || loss > 0.02 ? "fair" : "good";
}

export class QualityIndicator {
  #element;
  #label;
  #getPc;
  #phase = "connecting";
  #timer = null;
  #previous = null; // packet counters at the last sample, for loss over one interval

  constructor(element, getPc) {
    this.#element = element;
    this.#label = element.querySelector(".quality-label");
    this.#getPc = getPc;
  }

  /** "offline" | "connecting" | "reconnecting" | "connected" | "idle" */
  setPhase(phase) {
    this.#phase = phase;
    this.#previous = null;
    if (phase !== "connected") this.#show(phase, "");
    else this.#sample();
  }

  start() {
    clearInterval(this.#timer);
    this.#timer = setInterval(() => this.#sample(), POLL_MS);
  }

  stop() {
    clearInterval(this.#timer);
    this.setPhase("connecting");
  }

  async #sample() {
    const pc = this.#getPc();
    if (!pc || this.#phase !== "connected") return;
    const now = { rtt: null, lost: 0, received: 0 };
    const report = await pc.getStats();
    report.forEach((stat) => {
      if (stat.type === "candidate-pair" && stat.nominated && stat.currentRoundTripTime !== undefined) {
        now.rtt = stat.currentRoundTripTime;
      } else if (stat.type === "inbound-rtp") {
        now.lost += stat.packetsLost ?? 0;
        now.received += stat.packetsReceived ?? 0;
      }
    });
    if (this.#phase !== "connected") return; // the phase changed while we waited
    const lost = now.lost - (this.#previous?.lost ?? 0);
    const total = lost + now.received - (this.#previous?.received ?? 0);
    this.#previous = now;
    const loss = total > 0 ? Math.max(0, lost) / total : 0;
    const rtt = now.rtt ?? 0;
    const level = qualityLevel(rtt, loss);
    this.#show(level, `Round trip ${Math.round(rtt * 1000)} ms, packet loss ${(loss * 100).toFixed(1)}%`);
  }

  #show(level, details) {
    this.#element.dataset.level = level;
    this.#element.title = details;
    if (this.#label.textContent !== LABELS[level]) this.#label.textContent = LABELS[level];
  }
}
