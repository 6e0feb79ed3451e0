// Shareable room links: /?room=NAME.

import { toast } from "./ui.js";

function roomLink(room) {
  const url = new URL("/", location.href);
  url.searchParams.set("room", room);
  return url.href;
}

export function roomFromUrl() {
  return new URL(location.href).searchParams.get("room")?.trim() || null;
}

/** Show the room in the address bar, so copying or reloading it comes back here. */
export function showRoomInUrl(room) {
  history.replaceState(null, "", roomLink(room));
}

export async function copyRoomLink(room) {
  const link = roomLink(room);
  try {
    await navigator.clipboard.writeText(link);
    toast("Link copied");
  } catch {
    // The clipboard API needs a secure page and permission: fall back to a prompt the user can copy from.
    window.prompt("Copy this link:", link);
  }
}
