/** The key map overlay (`?`): one table built from the key map Python sends. */
import type { Binding } from "./protocol";

const pretty = (k: string): string =>
  ({ ArrowUp: "↑", ArrowDown: "↓", PageUp: "PgUp", PageDown: "PgDn", " ": "Space" } as Record<string, string>)[k]
  ?? (k.length === 1 ? k.toUpperCase() : k);

export function buildHelp(el: HTMLElement, keymap: Binding[], gestures: [string, string][]): void {
  const rows = keymap.map((b) => {
    const keys = [...new Set(b.keys.map(pretty))].map((k) => `<kbd>${escape(k)}</kbd>`).join(" ");
    return `<tr><td>${keys}</td><td>${escape(b.help)}</td></tr>`;
  });
  const moves = gestures.map(([g, h]) => `<tr><td>${escape(g)}</td><td>${escape(h)}</td></tr>`);
  el.innerHTML = `<div class="sv-help-box" role="dialog" aria-label="Key map">
    <h3>Key map</h3><table>${rows.join("")}${moves.join("")}</table>
    <p>Press <kbd>?</kbd> or <kbd>Esc</kbd> to close.</p></div>`;
}

function escape(s: string): string {
  return s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" } as Record<string, string>)[c]);
}

/** Map from a KeyboardEvent.key to an action name. */
export function keyTable(keymap: Binding[]): Map<string, string> {
  const m = new Map<string, string>();
  for (const b of keymap) for (const k of b.keys) m.set(k, b.action);
  return m;
}
