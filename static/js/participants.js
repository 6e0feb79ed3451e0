// The "People" panel: everyone in the call, with their microphone and camera state.

import { icon, paintAvatar } from "./ui.js";

export class ParticipantList {
  #list;
  #count;

  constructor(list, count) {
    this.#list = list;
    this.#count = count;
  }

  /** ``people``: [{id, nickname, audio, video, self}], yourself first. */
  render(people, speakerId) {
    this.#count.textContent = `(${people.length})`;
    this.#list.replaceChildren(...people.map((person) => this.#item(person, person.id === speakerId)));
  }

  #item(person, speaking) {
    const item = document.createElement("li");
    item.dataset.peerId = person.id;
    item.toggleAttribute("data-speaking", speaking);
    const avatar = document.createElement("span");
    avatar.className = "avatar";
    avatar.setAttribute("aria-hidden", "true");
    paintAvatar(item, avatar, person.nickname);
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = person.self ? `${person.nickname} (you)` : person.nickname;
    item.append(avatar, name);
    if (!person.audio) item.append(indicator("mic-off", "Microphone off"));
    if (!person.video) item.append(indicator("cam-off", "Camera off"));
    return item;
  }
}

function indicator(name, label) {
  const span = document.createElement("span");
  span.className = "indicator";
  span.setAttribute("role", "img");
  span.setAttribute("aria-label", label);
  span.append(icon(name));
  return span;
}
