// The chat panel: messages with author and time, and an unread count while it is closed.

import { describeError } from "./errors.js";

const TIME_FORMAT = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

export class Chat {
  #log;
  #form;
  #input;
  #badge;
  #button;
  #send;
  #visible = false;
  #unread = 0;

  /** ``send(text)`` delivers a message and resolves to the server's copy of it. */
  constructor({ log, form, input, badge, button, send }) {
    this.#log = log;
    this.#form = form;
    this.#input = input;
    this.#badge = badge;
    this.#button = button;
    this.#send = send;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.#submit();
    });
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

  async #submit() {
    const text = this.#input.value.trim();
    if (!text) return;
    const button = this.#form.querySelector("button");
    button.disabled = true;
    try {
      const message = await this.#send(text);
      this.#input.value = "";
      this.#append(message, true);
    } catch (error) {
      this.note(`Not sent: ${describeError(error)}`);
    } finally {
      button.disabled = false;
      this.#input.focus();
    }
  }

  #append({ nickname, text, ts }, own) {
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
    body.textContent = text;
    item.append(meta, body);
    this.#addItem(item);
  }

  #addItem(item) {
    // Follow new messages only when the reader is already at the bottom.
    const atBottom = this.#log.scrollHeight - this.#log.scrollTop - this.#log.clientHeight < 40;
    this.#log.append(item);
    if (atBottom) this.#log.scrollTop = this.#log.scrollHeight;
  }

  #setUnread(count) {
    this.#unread = count;
    this.#badge.hidden = count === 0;
    this.#badge.textContent = count > 99 ? "99+" : String(count);
    this.#button.setAttribute("aria-label", count ? `Chat, ${count} unread` : "Chat");
  }
}
