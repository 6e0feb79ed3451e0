// The lobby's self view: camera preview, mic and camera toggles, and what to do if devices fail.

import { bindMediaToggle } from "./controls.js";
import { describeMediaError } from "./errors.js";
import { byId, paintAvatar } from "./ui.js";

export class Preview extends EventTarget {
  #media;
  #nickname;
  #shown = null; // the video track the preview plays

  /** Dispatches "change" when what joining would publish changes (see joinLabel). */
  constructor(media, nicknameInput) {
    super();
    this.#media = media;
    this.#nickname = nicknameInput;
    bindMediaToggle(byId("preview-mic"), media, "audio");
    bindMediaToggle(byId("preview-cam"), media, "video");
    byId("media-retry").addEventListener("click", () => media.open());
    byId("media-resume").addEventListener("click", () => media.open());
    media.addEventListener("change", () => this.#render());
    nicknameInput.addEventListener("input", () => this.#render());
    this.#render();
  }

  /** The join button's words, which say how you will take part. */
  joinLabel() {
    const audio = this.#media.track("audio") !== null;
    const video = this.#media.track("video") !== null;
    if (this.#media.opening || this.#media.released || (audio && video)) return "Join room";
    if (audio) return "Join with audio only";
    if (video) return "Join with video only";
    return "Join as viewer";
  }

  #render() {
    const media = this.#media;
    const video = byId("preview-video");
    // What the others will see (blurred, if chosen). An empty stream would keep the
    // <video> (and so the page's load event) waiting forever.
    const sent = media.sent("video");
    if (this.#shown !== sent) {
      this.#shown = sent;
      video.srcObject = sent ? new MediaStream([sent]) : null;
    }
    byId("preview-placeholder").hidden = media.isOn("video");
    paintAvatar(byId("preview-placeholder"), byId("preview-initials"), this.#nickname.value || "?");
    byId("media-released").hidden = !media.released;
    const missing = [media.track("video") ? null : "camera", media.track("audio") ? null : "microphone"];
    // "No camera or microphone was found", but "Access to your camera and microphone is blocked".
    const joiner = media.problem?.name === "NotFoundError" ? " or " : " and ";
    const what = missing.filter(Boolean).join(joiner);
    byId("media-problem").hidden = !media.problem || !what;
    if (media.problem && what) {
      byId("media-problem-text").textContent = `${describeMediaError(media.problem, what)} ${consequence(media)}`;
    }
    this.dispatchEvent(new Event("change"));
  }
}

function consequence(media) {
  if (media.track("audio")) return "You can still join with audio only.";
  if (media.track("video")) return "You can still join with video only; others won't hear you.";
  return "You can still join as a viewer: you will see and hear everyone, but they won't see or hear you.";
}
