// Entry point: wires the views together, reports the server connection, and on a
// reload of a call's link goes straight back into that call.

import { Call } from "./call.js";
import { describeError } from "./errors.js";
import { roomFromUrl } from "./links.js";
import { MicLevel } from "./level.js";
import { Lobby } from "./lobby.js";
import { LocalMedia } from "./media.js";
import { RequestError, Signaling } from "./signaling.js";
import { activeRoom, prefs } from "./storage.js";
import { showBanner, toast } from "./ui.js";

const RESUME_WAIT_MS = 10_000;

const signaling = new Signaling();
const media = new LocalMedia();
const micLevel = new MicLevel(media, [document.getElementById("lobby-mic-level"), document.getElementById("call-mic-level")]);
const lobby = new Lobby({ signaling, media, onJoin: enterCall });
const call = new Call({
  signaling,
  media,
  micLevel,
  onExit: (message) => {
    lobby.show(message);
    lobby.focus();
  },
});

async function enterCall(room, nickname) {
  await call.enter(room, nickname);
  lobby.hide();
}

media.addEventListener("devicesadded", ({ detail: devices }) => {
  const names = devices.map((device) => device.label || (device.kind === "videoinput" ? "A camera" : "A microphone"));
  toast(`${names.join(", ")} connected. Choose it in ${call.active ? "Settings" : "the lists below the preview"}.`);
});

signaling.on("connect", () => showBanner(null));
signaling.on("disconnect", () => {
  showBanner(call.active ? "Connection lost. Reconnecting…" : "Disconnected from the server. Reconnecting…");
});
signaling.on("connect_error", () => showBanner("Can't reach the server. Retrying…", "error"));
signaling.on("error", (error) => {
  if (error?.event !== "offer" && error?.event !== "ice") console.warn("roomrelay: server refused", error);
});

// For diagnostics and the browser tests.
window.roomrelay = {
  signaling,
  media,
  micLevel,
  call,
  get pc() {
    return call.pc;
  },
};

/** A reload of the page you were in a call on (same tab) rejoins it without the lobby. */
async function start() {
  const room = roomFromUrl();
  const nickname = prefs.get("nickname");
  const resuming = room !== null && room === activeRoom.get() && nickname;
  if (!resuming) {
    lobby.show();
    media.open();
    return;
  }
  await media.open();
  try {
    if (!(await signaling.whenConnected(RESUME_WAIT_MS))) throw new RequestError({ code: "offline" });
    await enterCall(room, nickname);
  } catch (error) {
    activeRoom.clear();
    lobby.show(describeError(error));
  }
}

start();
