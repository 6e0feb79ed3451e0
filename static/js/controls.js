// Microphone and camera toggle buttons (lobby preview and call bar) and single-key shortcuts.

import { describeMediaError } from "./errors.js";
import { isTyping, setIcon, toast } from "./ui.js";

const NOUNS = { audio: "microphone", video: "camera" };

const TOGGLES = {
  audio: {
    on: { icon: "mic", label: "Mute", title: "Mute microphone" },
    off: { icon: "mic-off", label: "Unmute", title: "Unmute microphone" },
    missing: { icon: "mic-off", label: "No mic", title: "No microphone available" },
  },
  video: {
    on: { icon: "cam", label: "Stop video", title: "Turn camera off" },
    off: { icon: "cam-off", label: "Start video", title: "Turn camera on" },
    missing: { icon: "cam-off", label: "No camera", title: "No camera available" },
  },
};

/**
 * Make ``button`` switch ``kind`` on and off, and always show its current state. Without a
 * device of that kind it opens one (a viewer starting their camera mid-call), unless the
 * browser blocks devices altogether; ``onError(message)`` reports a device that failed.
 */
export function bindMediaToggle(button, media, kind, onError = toast) {
  const shortcut = button.getAttribute("aria-keyshortcuts");
  const textLabel = button.querySelector(".control-label");
  const render = () => {
    const present = media.track(kind) !== null;
    const look = TOGGLES[kind][present ? (media.enabled[kind] ? "on" : "off") : media.blocked ? "missing" : "off"];
    setIcon(button, look.icon);
    button.disabled = !present && (media.blocked || media.opening || !media.supported);
    button.toggleAttribute("data-off", !media.isOn(kind));
    button.title = shortcut ? `${look.title} (${shortcut})` : look.title;
    // Buttons with a visible label keep it as their name; icon-only ones get one.
    if (textLabel) textLabel.textContent = look.label;
    else button.setAttribute("aria-label", look.title);
  };
  button.addEventListener("click", () => toggleMedia(media, kind, onError));
  media.addEventListener("change", render);
  render();
}

/** Turn ``kind`` on or off; turning on a device we do not have yet opens it. */
export function toggleMedia(media, kind, onError = toast) {
  if (media.track(kind)) {
    media.setEnabled(kind, !media.enabled[kind]);
    return;
  }
  if (media.blocked || media.opening) return;
  media.acquire(kind).catch((error) => onError(describeMediaError(error, NOUNS[kind])));
}

/** Call ``actions[key]`` for unmodified key presses while ``isActive()`` and not typing. */
export function bindShortcuts(actions, isActive) {
  document.addEventListener("keydown", (event) => {
    if (!isActive() || event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    if (isTyping(event.target) || document.querySelector("dialog[open]")) return;
    const action = actions[event.key.toLowerCase()];
    if (!action) return;
    event.preventDefault();
    action();
  });
}
