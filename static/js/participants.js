// The "People" panel: everyone in the call, with their microphone and camera state; raised
// hands first, in the order they were raised. A host also gets buttons to mute or remove
// each of the others.

import { icon, paintAvatar } from "./ui.js";

export class ParticipantList extends EventTarget {
  #list;
  #count;
  #colours;
  #host = false;

  /** ``colours``: the call's AvatarColours, shared with the tiles. */
  constructor(list, count, colours) {
    super();
    this.#list = list;
    this.#count = count;
    this.#colours = colours;
    // One listener for every button: "moderate" events carry {action, id}.
    this.#list.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-action]");
      if (!button) return;
      const { action } = button.dataset;
      const id = button.closest("li").dataset.peerId;
      this.dispatchEvent(new CustomEvent("moderate", { detail: { action, id } }));
    });
  }

  /** Show (or hide) the host's buttons from the next render on. */
  set host(isHost) {
    this.#host = Boolean(isHost);
  }

  /**
   * ``people``: [{id, nickname, audio, video, self}], yourself first; ``hands``: the ids of
   * raised hands, first raised first.
   */
  render(people, speakerId, hands = []) {
    this.#count.textContent = `(${people.length})`;
    const queued = (person) => hands.indexOf(person.id);
    const raised = people.filter((person) => queued(person) >= 0).sort((a, b) => queued(a) - queued(b));
    const others = people.filter((person) => queued(person) < 0);
    this.#list.replaceChildren(
      ...raised.map((person) => this.#item(person, person.id === speakerId, queued(person) + 1)),
      ...others.map((person) => this.#item(person, person.id === speakerId, 0)),
    );
  }

  #item(person, speaking, handPosition) {
    const item = document.createElement("li");
    item.dataset.peerId = person.id;
    // A muted speaker is not speaking any more.
    item.toggleAttribute("data-speaking", speaking && person.audio);
    const avatar = document.createElement("span");
    avatar.className = "avatar";
    avatar.setAttribute("aria-hidden", "true");
    paintAvatar(item, avatar, person.nickname, this.#colours.hue(person.nickname));
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = person.self ? `${person.nickname} (you)` : person.nickname;
    item.append(avatar, name);
    if (handPosition) {
      item.dataset.hand = String(handPosition);
      const hand = indicator("hand", `Hand raised, ${ordinal(handPosition)} in line`);
      hand.classList.add("hand");
      hand.append(String(handPosition));
      item.append(hand);
    }
    if (!person.audio) item.append(indicator("mic-off", "Microphone off"));
    if (!person.video) item.append(indicator("cam-off", "Camera off"));
    if (this.#host && !person.self) item.append(hostButtons(person));
    return item;
  }
}

function ordinal(position) {
  const suffix = { one: "st", two: "nd", few: "rd", other: "th" }[new Intl.PluralRules("en", { type: "ordinal" }).select(position)];
  return `${position}${suffix}`;
}

function indicator(name, label) {
  const span = document.createElement("span");
  span.className = "indicator";
  span.setAttribute("role", "img");
  span.setAttribute("aria-label", label);
  span.append(icon(name));
  return span;
}

function hostButtons(person) {
  const group = document.createElement("span");
  group.className = "host-controls";
  const button = (action, iconName, label) => {
    const element = document.createElement("button");
    element.type = "button";
    element.className = "icon-button small";
    element.dataset.action = action;
    element.setAttribute("aria-label", `${label} ${person.nickname}`);
    element.title = label;
    element.append(icon(iconName));
    return element;
  };
  if (person.audio) group.append(button("mute-audio", "mic-off", "Mute"));
  if (person.video) group.append(button("mute-video", "cam-off", "Stop the camera of"));
  group.append(button("remove", "close", "Remove"));
  return group;
}
