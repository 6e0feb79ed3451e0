// Microphone and camera toggle buttons (lobby preview and call bar) and single-key shortcuts.

import { isTyping, setIcon } from "./ui.js";

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

/** Make ``button`` switch ``kind`` on and off, and always show its current state. */
export function bindMediaToggle(button, media, kind) {
  const shortcut = button.getAttribute("aria-keyshortcuts");
  const textLabel = button.querySelector(".control-label");
  const render = () => {
    const present = media.track(kind) !== null;
    const look = TOGGLES[kind][!present ? "missing" : media.enabled[kind] ? "on" : "off"];
    setIcon(button, look.icon);
    button.disabled = !present;
    button.toggleAttribute("data-off", !media.isOn(kind));
    button.title = shortcut ? `${look.title} (${shortcut})` : look.title;
    // Buttons with a visible label keep it as their name; icon-only ones get one.
    if (textLabel) textLabel.textContent = look.label;
    else button.setAttribute("aria-label", look.title);
  };
  button.addEventListener("click", () => media.setEnabled(kind, !media.enabled[kind]));
  media.addEventListener("change", render);
  render();
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
