/**
 * The vertebra label controls inside the viewer (no rerun): overlay on/off, one toggle per level
 * present in the mask, and the opacity.
 */
import type { LabelSpec } from "./protocol";

export class LabelsPanel {
  readonly el: HTMLDivElement;
  private readonly list: HTMLDivElement;
  private readonly opacityInput: HTMLInputElement;
  private readonly onInput: HTMLInputElement;
  private shownIds = "";

  constructor(private readonly onChange: () => void) {
    const el = document.createElement("div");
    el.className = "sv-labels-panel";
    el.dataset.testid = "sv-labels-panel";
    el.innerHTML = `<details><summary>Labels</summary>
      <label class="sv-row"><input type="checkbox" class="sv-lab-on" checked> overlay</label>
      <label class="sv-row">opacity <input type="range" class="sv-lab-opacity" min="0" max="100" step="5"></label>
      <div class="sv-lab-list"></div></details>`;
    this.el = el;
    this.list = el.querySelector(".sv-lab-list") as HTMLDivElement;
    this.opacityInput = el.querySelector(".sv-lab-opacity") as HTMLInputElement;
    this.onInput = el.querySelector(".sv-lab-on") as HTMLInputElement;
    this.opacityInput.addEventListener("input", () => onChange());
    this.onInput.addEventListener("change", () => onChange());
    this.list.addEventListener("change", () => onChange());
    // keys typed in the panel are the panel's, not the viewer's
    el.addEventListener("keydown", (e) => e.stopPropagation());
  }

  get enabled(): boolean {
    return this.onInput.checked;
  }

  set enabled(v: boolean) {
    this.onInput.checked = v;
  }

  get opacity(): number {
    return Number(this.opacityInput.value) / 100;
  }

  set opacity(v: number) {
    this.opacityInput.value = String(Math.round(v * 100));
  }

  /** visible[id] = 1 for every label shown */
  visible(labels: LabelSpec[]): Uint8Array {
    const out = new Uint8Array(256);
    if (!this.enabled) return out;
    for (const l of labels) out[l.id] = 1;
    this.list.querySelectorAll<HTMLInputElement>("input[data-id]").forEach((i) => {
      out[Number(i.dataset.id)] = i.checked ? 1 : 0;
    });
    return out;
  }

  /** List one toggle per label present in the mask (keeps the reader's choices). */
  setPresent(labels: LabelSpec[], present: Uint8Array): void {
    const ids = labels.filter((l) => present[l.id]).map((l) => l.id);
    const key = ids.join(",");
    if (key === this.shownIds) return;
    const old = new Map<string, boolean>();
    this.list.querySelectorAll<HTMLInputElement>("input[data-id]").forEach((i) => old.set(i.dataset.id ?? "", i.checked));
    this.shownIds = key;
    this.list.innerHTML = "";
    for (const l of labels) {
      if (!present[l.id]) continue;
      const row = document.createElement("label");
      row.className = "sv-row";
      const sw = `rgb(${l.colour.join(",")})`;
      const input = document.createElement("input");
      input.type = "checkbox";
      input.dataset.id = String(l.id);
      const swatch = document.createElement("i");
      swatch.style.background = sw;
      row.append(input, swatch, document.createTextNode(l.name));
      input.checked = old.get(String(l.id)) ?? true;
      this.list.append(row);
    }
  }
}
