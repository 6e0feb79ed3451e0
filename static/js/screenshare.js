// Sharing your screen (getDisplayMedia): a window, a tab or the whole screen, with its sound
// when the browser offers it.
//
// Dispatches "change" when sharing starts or stops (also when the browser's own
// "Stop sharing" ends it).

import { toast } from "./ui.js";

// Text and slides stay sharp at a modest frame rate; the server forwards it to everyone.
const CONSTRAINTS = { video: { frameRate: { ideal: 15, max: 30 } }, audio: true };

export class ScreenShare extends EventTarget {
  video = null;
  audio = null;

  get supported() {
    return Boolean(navigator.mediaDevices?.getDisplayMedia);
  }

  get active() {
    return this.video !== null;
  }

  async start() {
    if (this.active || !this.supported) return;
    let stream;
    try {
      stream = await navigator.mediaDevices.getDisplayMedia(CONSTRAINTS);
    } catch (error) {
      // Cancelling the browser's picker is a choice, not a failure.
      if (error?.name !== "NotAllowedError" && error?.name !== "AbortError") {
        toast(`Your screen could not be shared (${error?.message || error?.name}).`);
      }
      return;
    }
    this.video = stream.getVideoTracks()[0] ?? null;
    this.audio = stream.getAudioTracks()[0] ?? null;
    if (!this.video) {
      this.stop();
      return;
    }
    this.video.contentHint = "detail";
    this.video.addEventListener("ended", () => this.stop());
    this.dispatchEvent(new Event("change"));
  }

  stop() {
    if (!this.video && !this.audio) return;
    this.video?.stop();
    this.audio?.stop();
    this.video = this.audio = null;
    this.dispatchEvent(new Event("change"));
  }
}
