// The chat panel: messages with author and time, and an unread count while it is closed.
//
// Dispatches "unread" when the unread count changes.

import { describeError } from "./errors.js";
import { linkify } from "./linkify.js";

const TIME_FORMAT = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const MAX_MESSAGE_BYTES = 4096; // the server's limit, in UTF-8 bytes (docs/protocol.md)

function formatBytes(bytes) {
  return `${(bytes / 1024).toFixed(1)} KiB`;
}

export class Chat extends EventTarget {
  #log;
  #form;
  #input;
  #badge;
  #button;
  #send;
  #nickname;
  #problem;
  #queue = Promise.resolve();
  #visible = false;
  #unread = 0;

  /**
   * ``send(text)`` delivers a message and resolves to the server's copy of it;
   * ``nickname()`` is your name, shown on messages still on their way.
   */
  constructor({ log, form, input, problem, badge, button, send, nickname }) {
    super();
    this.#log = log;
    this.#problem = problem;
    this.#nickname = nickname;
    this.#form = form;
    this.#input = input;
    this.#badge = badge;
    this.#button = button;
    this.#send = send;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.#submit();
    });
    input.addEventListener("input", () => this.#showProblem(null));
  }

  /** A message from someone else: {nickname, text, ts}. */
  receive(message) {
    this.#append(message, false);
    if (!this.#visible) this.#setUnread(this.#unread + 1);
  }

  /** A line about the call itself ("Ada joined"), not counted as unread. */
  note(text) {
    const item = document.createElement("li");
    item.className = "system";
    item.textContent = text;
    this.#addItem(item);
  }

  setVisible(visible) {
    this.#visible = visible;
    if (visible) {
      this.#setUnread(0);
      this.#log.scrollTop = this.#log.scrollHeight;
    }
  }

  focus() {
    this.#input.focus();
  }

  clear() {
    this.#log.replaceChildren();
    this.#setUnread(0);
  }

  /**
   * Send what is typed. The input is emptied at once, so typing goes on while earlier
   * messages travel; they are sent one after another, in order, each shown as "sending"
   * until the server has it.
   */
  #submit() {
    const text = this.#input.value.trim();
    if (!text) return;
    const size = new TextEncoder().encode(text).length;
    if (size > MAX_MESSAGE_BYTES) {
      this.#showProblem(`Message too long: ${formatBytes(size)} of at most 4 KiB. Shorten it or split it.`);
      return;
    }
    this.#showProblem(null);
    this.#input.value = "";
    const item = this.#append({ nickname: this.#ownName(), text, ts: Date.now() / 1000 }, true);
    item.classList.add("pending");
    this.#queue = this.#queue.then(() => this.#deliver(text, item));
  }

  async #deliver(text, item) {
    try {
      const message = await this.#send(text);
      item.replaceWith(this.#append(message, true, false));
    } catch (error) {
      item.classList.replace("pending", "failed");
      const reason = error?.code === "too_large" ? "message too long" : describeError(error);
      this.note(`Not sent: ${reason}`);
      // Give the words back, unless something new is being typed.
      if (!this.#input.value) this.#input.value = text;
    }
  }

  #ownName() {
    return this.#nickname?.() ?? "";
  }

  #showProblem(message) {
    this.#problem.hidden = !message;
    this.#problem.textContent = message ?? "";
    this.#input.toggleAttribute("aria-invalid", Boolean(message));
  }

  /** Add a message to the log (or only build its item, with ``add`` false) and return it. */
  #append({ nickname, text, ts }, own, add = true) {
    const item = document.createElement("li");
    if (own) item.className = "own";
    const meta = document.createElement("div");
    meta.className = "meta";
    const author = document.createElement("span");
    author.className = "author";
    author.textContent = own ? `${nickname} (you)` : nickname;
    const time = document.createElement("time");
    const date = new Date(ts * 1000);
    time.dateTime = date.toISOString();
    time.textContent = TIME_FORMAT.format(date);
    meta.append(author, time);
    const body = document.createElement("p");
    body.className = "text";
    body.append(...linkify(text));
    item.append(meta, body);
    if (add) this.#addItem(item);
    return item;
  }

  #addItem(item) {
    // Follow new messages only when the reader is already at the bottom.
    const atBottom = this.#log.scrollHeight - this.#log.scrollTop - this.#log.clientHeight < 40;
    this.#log.append(item);
    if (atBottom) this.#log.scrollTop = this.#log.scrollHeight;
  }

  /** Messages that arrived while the panel was closed. */
  get unread() {
    return this.#unread;
  }

  #setUnread(count) {
    const changed = count !== this.#unread;
    this.#unread = count;
    if (changed) this.dispatchEvent(new Event("unread"));
    this.#badge.hidden = count === 0;
    this.#badge.textContent = count > 99 ? "99+" : String(count);
    this.#button.setAttribute("aria-label", count ? `Chat, ${count} unread` : "Chat");
  }
}
