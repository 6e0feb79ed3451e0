// Turning error codes and browser exceptions into sentences people understand.

const SERVER_MESSAGES = {
  room_full: "This room is full. Try another room, or wait until someone leaves.",
  invalid_room_name: "That room name can't be used. Pick one without special control characters.",
  invalid_nickname: "That name can't be used. Pick one without special control characters.",
  too_large: "That's too long: room names can have up to 128 characters, names up to 64.",
  rate_limited: "That was a lot at once. Wait a moment and try again.",
  offline: "Can't reach the server. Check your connection; we keep trying.",
  timeout: "The server didn't answer in time. Please try again.",
  room_locked: "This room is locked by its host. Ask them to unlock it.",
  too_many_rooms: "The server can't open more rooms right now. Join an existing room or try later.",
  server_full: "The server is full right now. Please try again in a few minutes.",
  forbidden: "You are not allowed to do that here.",
};

export function describeError(error) {
  return SERVER_MESSAGES[error?.code] ?? `Something went wrong: ${error?.message || "unknown error"}.`;
}

/** Why ``missing`` ("camera", "microphone"…) could not be opened, from a getUserMedia exception. */
export function describeMediaError(error, missing) {
  switch (error?.name) {
    case "NotAllowedError":
    case "SecurityError":
      return `Access to your ${missing} is blocked. To use it, allow it in your browser's site settings and try again.`;
    case "NotFoundError":
    case "OverconstrainedError":
      return `No ${missing} was found.`;
    case "NotReadableError":
    case "AbortError":
      return `Your ${missing} is busy in another app.`;
    case "InsecureContext":
      return "Camera and microphone only work on a secure page (https:// or localhost).";
    default:
      return `Your ${missing} could not be started (${error?.message || error?.name || "unknown error"}).`;
  }
}
