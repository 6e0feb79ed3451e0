// Remembered choices. Storage can be unavailable (private modes, quotas): then we simply forget.

const PREFIX = "roomrelay.";

function read(store, key) {
  try {
    return store.getItem(PREFIX + key);
  } catch {
    return null;
  }
}

function write(store, key, value) {
  try {
    if (value === null) store.removeItem(PREFIX + key);
    else store.setItem(PREFIX + key, value);
  } catch {
    // Nothing to do: the page works without memory.
  }
}

/** Across visits: room, nickname, devices. */
export const prefs = {
  get: (key) => read(localStorage, key),
  set: (key, value) => write(localStorage, key, value),
};

/** This tab only: the room we are in, so that a reload rejoins it. */
export const activeRoom = {
  get: () => read(sessionStorage, "activeRoom"),
  set: (room) => write(sessionStorage, "activeRoom", room),
  clear: () => write(sessionStorage, "activeRoom", null),
};
