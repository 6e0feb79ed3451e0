// Small DOM helpers shared by the views: avatars, icons, the banner and toasts.

const SVG_NS = "http://www.w3.org/2000/svg";
const TOAST_MS = 2500;

export function byId(id) {
  return document.getElementById(id);
}

/**
 * "Ada Lovelace" → "AL", "grace" → "GR", "<Olga>" → "OL": what a tile shows when there is no
 * video. Only letters count, so punctuation and emoji never end up in an avatar.
 */
function initials(name) {
  const words = name
    .split(/\s+/)
    .map((word) => word.match(/\p{L}/gu) ?? [])
    .filter((letters) => letters.length);
  if (words.length === 0) return "?";
  const letters = words.length > 1 ? [words[0][0], words.at(-1)[0]] : words[0].slice(0, 2);
  return letters.join("").toUpperCase();
}

const HUE_SLOTS = 18; // 20° apart: neighbours on the wheel are still told apart at a glance

/** FNV-1a: names that differ by one character ("Ada 1", "Ada 2") land far apart. */
function hashOf(name) {
  let hash = 0x811c9dc5;
  for (const char of name) {
    hash ^= char.codePointAt(0);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash;
}

/** A stable hue per name, the same on every page (the lobby preview uses it). */
function hueOf(name) {
  return (hashOf(name) % HUE_SLOTS) * (360 / HUE_SLOTS);
}

/**
 * Avatar colours for the people of one call: each name keeps its own hue unless someone else
 * in the call already has it, then it takes the next free one, so no two people look alike.
 */
export class AvatarColours {
  #hues = new Map(); // name → hue

  hue(name) {
    let hue = this.#hues.get(name);
    if (hue !== undefined) return hue;
    const taken = new Set(this.#hues.values());
    const preferred = hashOf(name) % HUE_SLOTS;
    hue = hueOf(name);
    for (let step = 0; step < HUE_SLOTS; step += 1) {
      const candidate = ((preferred + step * 7) % HUE_SLOTS) * (360 / HUE_SLOTS);
      if (!taken.has(candidate)) {
        hue = candidate;
        break;
      }
    }
    this.#hues.set(name, hue);
    return hue;
  }

  /** A new call: colours are handed out afresh. */
  reset() {
    this.#hues.clear();
  }
}

/** Colour ``element`` (and the avatars in it) for ``name`` and write the initials. */
export function paintAvatar(element, avatar, name, hue = hueOf(name)) {
  element.style.setProperty("--hue", String(hue));
  avatar.textContent = initials(name);
}

export function icon(name) {
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("class", "icon");
  svg.setAttribute("aria-hidden", "true");
  const use = document.createElementNS(SVG_NS, "use");
  use.setAttribute("href", `#i-${name}`);
  svg.append(use);
  return svg;
}

/** Point a button's existing icon at another symbol of the sprite. */
export function setIcon(element, name) {
  element.querySelector("use").setAttribute("href", `#i-${name}`);
}

/** Page-wide status (connection lost, server unreachable); ``null`` hides it. */
export function showBanner(text, tone = "warning") {
  const banner = byId("banner");
  banner.hidden = !text;
  banner.textContent = text ?? "";
  banner.dataset.tone = tone;
}

let toastTimer = null;

/** A short confirmation that disappears by itself. */
export function toast(text) {
  const element = byId("toast");
  element.textContent = text;
  element.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    element.hidden = true;
  }, TOAST_MS);
}

/** True while the user is typing, so single-key shortcuts must not fire. */
export function isTyping(target) {
  return target instanceof HTMLElement && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));
}
