// The lobby's list of open rooms, with participant counts, refreshed whenever any room changes.

export class RoomList {
  #signaling;
  #list;
  #empty;
  #onPick;
  #active = false;
  #loading = null;
  #stale = false;

  /** ``onPick(name)`` joins the room the user chose. */
  constructor(signaling, list, empty, onPick) {
    this.#signaling = signaling;
    this.#list = list;
    this.#empty = empty;
    this.#onPick = onPick;
    signaling.on("connect", () => this.refresh());
    signaling.on("room_change", () => this.refresh());
  }

  /** Only the visible lobby keeps its list fresh (and has the server send room_change). */
  setActive(active) {
    this.#active = active;
    if (active) this.refresh();
    else if (this.#signaling.connected) {
      this.#signaling.request("list_rooms", { follow: false }).catch(() => {});
    }
  }

  refresh() {
    if (!this.#active || !this.#signaling.connected) return;
    // A burst of room_change events needs one more request, not one each.
    if (this.#loading) {
      this.#stale = true;
      return;
    }
    this.#loading = this.#signaling
      .request("list_rooms", { follow: true })
      .then(({ rooms }) => this.#render(rooms))
      .catch(() => {}) // the next room_change or reconnection tries again
      .finally(() => {
        this.#loading = null;
        if (this.#stale) {
          this.#stale = false;
          this.refresh();
        }
      });
  }

  #render(rooms) {
    this.#empty.hidden = rooms.length > 0;
    this.#list.replaceChildren(...rooms.map((room) => this.#item(room)));
  }

  #item({ name, participants }) {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.room = name;
    const hidden = document.createElement("span");
    hidden.className = "visually-hidden";
    hidden.textContent = "Join ";
    const label = document.createElement("span");
    label.className = "room-name";
    label.textContent = name;
    const count = document.createElement("span");
    count.className = "room-count";
    count.textContent = participants === 1 ? "1 person" : `${participants} people`;
    button.append(hidden, label, count);
    button.addEventListener("click", () => this.#onPick(name));
    const item = document.createElement("li");
    item.append(button);
    return item;
  }
}
