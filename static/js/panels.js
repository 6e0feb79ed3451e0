// The side panel: "People" or "Chat", one at a time (on phones it covers the stage).
//
// Dispatches "change" after opening, switching or closing.

export class SidePanel extends EventTarget {
  #aside;
  #panels;
  #current = null;

  /** ``panels``: {name: {section, button}}; each section has a .close-panel button. */
  constructor(aside, panels) {
    super();
    this.#aside = aside;
    this.#panels = panels;
    for (const [name, { section, button }] of Object.entries(panels)) {
      button.addEventListener("click", () => this.toggle(name));
      section.querySelector(".close-panel").addEventListener("click", () => this.close());
    }
    // Esc closes the open panel wherever the focus is (an open dialog handles Esc itself).
    document.addEventListener("keydown", (event) => {
      if (event.key !== "Escape" || !this.#current || event.defaultPrevented) return;
      if (document.querySelector("dialog[open]") || document.fullscreenElement) return;
      event.preventDefault();
      this.close();
    });
  }

  get current() {
    return this.#current;
  }

  toggle(name) {
    if (this.#current === name) this.close();
    else this.#show(name);
  }

  close() {
    const previous = this.#current;
    if (!previous) return;
    this.#show(null);
    this.#panels[previous].button.focus(); // back where the keyboard user came from
  }

  #show(name) {
    this.#current = name;
    this.#aside.hidden = name === null;
    for (const [panelName, { section, button }] of Object.entries(this.#panels)) {
      section.hidden = panelName !== name;
      button.setAttribute("aria-expanded", String(panelName === name));
    }
    this.dispatchEvent(new Event("change"));
  }
}
