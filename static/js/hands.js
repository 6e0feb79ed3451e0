// Raised hands: your own hand's button, and the room's queue (first raised first) from the
// server, which the tiles and the People panel show.
//
// Dispatches "change" when the queue changes; ``raised`` is the list of peer ids.

import { describeError } from "./errors.js";
import { toast } from "./ui.js";

export class RaisedHands extends EventTarget {
  #button;
  #request;
  #ownId = null;
  raised = [];

  /** ``request(raised)`` asks the server and resolves to the queue it answers with. */
  constructor(button, request) {
    super();
    this.#button = button;
    this.#request = request;
    button.addEventListener("click", () => this.toggle());
  }

  get mine() {
    return this.#ownId !== null && this.raised.includes(this.#ownId);
  }

  /** A fresh join: our peer id and the queue from the ack. */
  reset(ownId, queue = []) {
    this.#ownId = ownId;
    this.set(queue);
  }

  /** The server's queue (a ``hands`` event or an ack). */
  set(queue) {
    this.raised = [...queue];
    const label = this.#button.querySelector(".control-label");
    this.#button.setAttribute("aria-pressed", String(this.mine));
    label.textContent = this.mine ? "Lower hand" : "Raise hand";
    this.#button.title = `${this.mine ? "Lower" : "Raise"} hand (H)`;
    this.dispatchEvent(new Event("change"));
  }

  /** Someone left: their hand goes with them. */
  drop(peerId) {
    if (this.raised.includes(peerId)) this.set(this.raised.filter((id) => id !== peerId));
  }

  async toggle() {
    try {
      this.set(await this.#request(!this.mine));
    } catch (error) {
      toast(`Hand not ${this.mine ? "lowered" : "raised"}: ${describeError(error)}`);
    }
  }
}
