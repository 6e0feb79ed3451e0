// Small DOM helpers shared by the views: avatars, icons, the banner and toasts.

const SVG_NS = "http://www.w3.org/2000/svg";
const TOAST_MS = 2500;

export function byId(id) {
  return document.getElementById(id);
}

/** "Ada Lovelace" → "AL", "grace" → "GR": what a tile shows when there is no video. */
function initials(name) {
  const words = name.trim().split(/\s+/).filter(Boolean);
  if (words.length === 0) return "?";
  const letters = words.length > 1 ? [[...words[0]][0], [...words.at(-1)][0]] : [...words[0]].slice(0, 2);
  return letters.join("").toUpperCase();
}

/** A stable hue per name, so each person keeps their avatar colour everywhere. */
function hueOf(name) {
  let hue = 0;
  for (const char of name) hue = (hue * 31 + char.codePointAt(0)) % 360;
  return hue;
}

/** Colour ``element`` (and the avatars in it) for ``name`` and write the initials. */
export function paintAvatar(element, avatar, name) {
  element.style.setProperty("--hue", String(hueOf(name)));
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
