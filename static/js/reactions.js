// Reactions: a few emoji you send to the room, floating up over the sender's tile for a moment.

import { describeError } from "./errors.js";
import { toast } from "./ui.js";

export const REACTIONS = ["👍", "👏", "❤️", "😂", "😮", "🎉"]; // the server accepts these only
const NAMES = { "👍": "Thumbs up", "👏": "Applause", "❤️": "Heart", "😂": "Laughing", "😮": "Surprised", "🎉": "Celebrate" };
const FLOAT_MS = 3000;
const MAX_FLOATING = 6; // per tile: a burst of reactions stays readable

export class ReactionBar {
  #button;
  #bar;
  #send;

  /** ``send(emoji)`` delivers a reaction (resolves once the server has it). */
  constructor(button, bar, send) {
    this.#button = button;
    this.#bar = bar;
    this.#send = send;
    for (const emoji of REACTIONS) {
      const choice = document.createElement("button");
      choice.type = "button";
      choice.className = "reaction-choice";
      choice.dataset.emoji = emoji;
      choice.textContent = emoji;
      choice.setAttribute("aria-label", NAMES[emoji]);
      choice.title = NAMES[emoji];
      choice.addEventListener("click", () => this.#react(emoji));
      bar.append(choice);
    }
    button.addEventListener("click", () => this.#setOpen(bar.hidden));
    bar.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.preventDefault();
        this.#setOpen(false);
        button.focus();
      }
    });
    document.addEventListener("pointerdown", (event) => {
      if (!bar.hidden && !bar.contains(event.target) && !button.contains(event.target)) this.#setOpen(false);
    });
  }

  close() {
    this.#setOpen(false);
  }

  #setOpen(open) {
    this.#bar.hidden = !open;
    this.#button.setAttribute("aria-expanded", String(open));
    if (open) this.#bar.querySelector("button").focus();
  }

  async #react(emoji) {
    try {
      await this.#send(emoji);
    } catch (error) {
      toast(`Reaction not sent: ${describeError(error)}`);
    }
  }
}

/** Let ``emoji`` float up over ``tile`` (a tile element) and fade away. */
export function floatReaction(tile, emoji) {
  const layer = tile?.querySelector(".reactions");
  if (!layer) return;
  while (layer.childElementCount >= MAX_FLOATING) layer.firstElementChild.remove();
  const item = document.createElement("span");
  item.className = "reaction";
  item.textContent = emoji;
  item.style.setProperty("--drift", `${Math.round(Math.random() * 40 - 20)}px`);
  layer.append(item);
  setTimeout(() => item.remove(), FLOAT_MS);
}
