/**
 * The box layer of axial slices: the boxes Python sent, the reader's edits waiting for Python's
 * answer, selection, and the drag that draws, moves or resizes one box. Coordinates are axial image
 * pixels (x = column, y = row, edges; fractions allowed).
 */
import type { BoxSpec } from "./protocol";
import type { Viewport } from "./viewport";

export type Handle = "nw" | "n" | "ne" | "e" | "se" | "s" | "sw" | "w" | "move";

export interface BoxEvent {
  type: "created" | "changed" | "deleted";
  id: string;
  base_version: number | null;
  slice: number;
  x0: number;
  y0: number;
  x1: number;
  y1: number;
  /**
   * `created` only: the new box's key, its temporary "new-…" id (random, so no other tab or page
   * load makes it again). The server keeps one box per key: the same create sent twice (a retry
   * after a lost reply) returns the box the first one made.
   */
  client_key?: string | null;
}

/** 16 random hex digits (crypto.getRandomValues works on plain http too, unlike randomUUID). */
function randomHex(): string {
  const words = new Uint32Array(2);
  crypto.getRandomValues(words);
  return Array.from(words, (w) => w.toString(16).padStart(8, "0")).join("");
}

interface Drag {
  handle: Handle | "draw";
  box: BoxSpec;
  startX: number;
  startY: number;
  orig: BoxSpec;
  moved: boolean;
}

/** Smallest box kept, in voxels along each side (a click makes a zero-size box). */
export const MIN_SIZE = 1;
const HANDLE_PX = 7;

function normalised(b: BoxSpec): BoxSpec {
  return { ...b, x0: Math.min(b.x0, b.x1), x1: Math.max(b.x0, b.x1),
           y0: Math.min(b.y0, b.y1), y1: Math.max(b.y0, b.y1) };
}

/** The box clipped to the image [0, w] × [0, h]. */
export function clipBox(b: BoxSpec, w: number, h: number): BoxSpec {
  const n = normalised(b);
  const cx = (v: number) => Math.min(w, Math.max(0, v));
  const cy = (v: number) => Math.min(h, Math.max(0, v));
  return { ...n, x0: cx(n.x0), x1: cx(n.x1), y0: cy(n.y0), y1: cy(n.y1) };
}

const round2 = (v: number) => Math.round(v * 100) / 100;

export class BoxLayer {
  /** boxes from Python */
  boxes: BoxSpec[] = [];
  /** local edits not yet answered by Python: id → (box or null when deleted, event seq) */
  pending = new Map<string, { box: BoxSpec | null; seq: number }>();
  selected: string | null = null;
  drag: Drag | null = null;
  /** labels drawn large and boxes thicker (the committee's view) */
  largeLabels = false;
  private newCount = 0;

  setBoxes(boxes: BoxSpec[], ackSeq: number): void {
    this.boxes = boxes;
    for (const [id, p] of this.pending) if (p.seq <= ackSeq) this.pending.delete(id);
  }

  /** Boxes shown on axial slice `k` (pending edits applied). */
  onSlice(k: number): BoxSpec[] {
    const out: BoxSpec[] = [];
    for (const b of this.boxes) {
      const p = this.pending.get(b.id);
      if (p && !p.box) continue;
      const box = p?.box ?? b;
      if (box.slice === k && !(this.drag && this.drag.box.id === box.id)) out.push(box);
    }
    for (const [id, p] of this.pending) {
      if (p.box && p.box.slice === k && !this.boxes.some((b) => b.id === id)
          && !(this.drag && this.drag.box.id === id)) out.push(p.box);
    }
    if (this.drag && this.drag.box.slice === k) out.push(this.drag.box);
    return out;
  }

  /** The editable box part under image point (x, y), at `vp`'s scale. */
  hit(k: number, x: number, y: number, vp: Viewport): { box: BoxSpec; handle: Handle } | null {
    const tx = HANDLE_PX / vp.sx;
    const ty = HANDLE_PX / vp.sy;
    const boxes = this.onSlice(k).filter((b) => b.editable).reverse();
    for (const b of boxes) {
      const nearL = Math.abs(x - b.x0) <= tx, nearR = Math.abs(x - b.x1) <= tx;
      const nearT = Math.abs(y - b.y0) <= ty, nearB = Math.abs(y - b.y1) <= ty;
      const inX = x >= b.x0 - tx && x <= b.x1 + tx, inY = y >= b.y0 - ty && y <= b.y1 + ty;
      if (!inX || !inY) continue;
      const v = nearT ? "n" : nearB ? "s" : "";
      const h = nearL ? "w" : nearR ? "e" : "";
      if (v || h) return { box: b, handle: (v + h) as Handle };
      if (x > b.x0 && x < b.x1 && y > b.y0 && y < b.y1) return { box: b, handle: "move" };
    }
    return null;
  }

  beginDraw(k: number, x: number, y: number, colour: string): void {
    const id = `new-${Date.now().toString(36)}-${++this.newCount}-${randomHex()}`;
    const box: BoxSpec = { id, version: 0,
      slice: k, x0: x, y0: y, x1: x, y1: y, kind: "key", level: "", label: "", reader: "",
      colour, editable: true };
    this.drag = { handle: "draw", box, startX: x, startY: y, orig: box, moved: false };
    this.selected = box.id;
  }

  beginEdit(box: BoxSpec, handle: Handle, x: number, y: number): void {
    this.drag = { handle, box: { ...box }, startX: x, startY: y, orig: box, moved: false };
    this.selected = box.id;
  }

  moveTo(x: number, y: number): void {
    const d = this.drag;
    if (!d) return;
    const dx = x - d.startX, dy = y - d.startY;
    if (dx !== 0 || dy !== 0) d.moved = true;
    const o = d.orig;
    const b = { ...d.box };
    if (d.handle === "draw") {
      b.x0 = d.startX; b.y0 = d.startY; b.x1 = x; b.y1 = y;
    } else if (d.handle === "move") {
      b.x0 = o.x0 + dx; b.x1 = o.x1 + dx; b.y0 = o.y0 + dy; b.y1 = o.y1 + dy;
    } else {
      if (d.handle.includes("w")) b.x0 = o.x0 + dx;
      if (d.handle.includes("e")) b.x1 = o.x1 + dx;
      if (d.handle.includes("n")) b.y0 = o.y0 + dy;
      if (d.handle.includes("s")) b.y1 = o.y1 + dy;
    }
    d.box = b;
  }

  /**
   * End the drag inside a `w` × `h` image: the event to send, "refused" for a box too small, or
   * null when nothing changed.
   */
  end(w: number, h: number, seq: number): BoxEvent | "refused" | null {
    const d = this.drag;
    this.drag = null;
    if (!d || !d.moved) return null;
    const b = clipBox(d.box, w, h);
    const box = { ...b, x0: round2(b.x0), y0: round2(b.y0), x1: round2(b.x1), y1: round2(b.y1) };
    if (box.x1 - box.x0 < MIN_SIZE || box.y1 - box.y0 < MIN_SIZE) {
      if (d.handle === "draw") this.selected = null;
      return "refused";
    }
    const created = d.handle === "draw";
    this.pending.set(box.id, { box, seq });
    return { type: created ? "created" : "changed", id: box.id,
             base_version: created ? null : d.orig.version, slice: box.slice,
             x0: box.x0, y0: box.y0, x1: box.x1, y1: box.y1,
             client_key: created ? box.id : null };
  }

  /** Delete the selected editable box: the event, or null. */
  deleteSelected(seq: number): BoxEvent | null {
    const id = this.selected;
    if (!id) return null;
    const b = this.pending.get(id)?.box ?? this.boxes.find((x) => x.id === id);
    if (!b || !b.editable) return null;
    this.pending.set(id, { box: null, seq });
    this.selected = null;
    return { type: "deleted", id, base_version: b.version, slice: b.slice,
             x0: b.x0, y0: b.y0, x1: b.x1, y1: b.y1 };
  }

  /** Draw the boxes of slice `k` on the overlay of `vp`. */
  draw(ctx: CanvasRenderingContext2D, vp: Viewport, k: number): void {
    for (const b of this.onSlice(k)) {
      const n = normalised(b);
      const big = this.largeLabels;
      // a union is framed just outside its edges, so it never hides a reader's box
      const out = b.kind === "union" ? (big ? 4 : 2) : 0;
      const [sx0, sy0] = vp.toScreen(n.x0, n.y0);
      const [sx1, sy1] = vp.toScreen(n.x1, n.y1);
      const x0 = sx0 - out, y0 = sy0 - out, x1 = sx1 + out, y1 = sy1 + out;
      const interpolated = b.kind === "interpolated";
      ctx.save();
      ctx.globalAlpha = interpolated ? 0.55 : 1;
      ctx.setLineDash(interpolated ? [6, 4] : b.kind === "other reader" && !big ? [2, 3] : []);
      ctx.lineWidth = (b.id === this.selected ? 2.5 : 1.5) * (big ? 1.6 : 1);
      ctx.strokeStyle = b.colour || "#ffcc00";
      ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
      const text = [b.level, b.reader || b.label].filter(Boolean).join(" · ");
      if (text) {
        ctx.font = big ? "bold 16px system-ui, sans-serif" : "11px system-ui, sans-serif";
        ctx.fillStyle = b.colour || "#ffcc00";
        // the union's label goes below it, so it never covers the readers' labels above
        const ty = b.kind === "union" ? y1 + (big ? 18 : 13) : y0 - (big ? 5 : 4);
        if (big) {  // a dark halo keeps large labels legible on bone
          ctx.lineWidth = 3;
          ctx.strokeStyle = "rgba(0, 0, 0, 0.75)";
          ctx.setLineDash([]);
          ctx.strokeText(text, x0 + 2, ty);
        }
        ctx.fillText(text, x0 + 2, ty);
      }
      if (b.id === this.selected && b.editable) {
        ctx.setLineDash([]);
        ctx.fillStyle = "#fff";
        const xs = [x0, (x0 + x1) / 2, x1], ys = [y0, (y0 + y1) / 2, y1];
        for (const hx of xs) for (const hy of ys) {
          if (hx === xs[1] && hy === ys[1]) continue;
          ctx.fillRect(hx - 3, hy - 3, 6, 6);
        }
      }
      ctx.restore();
    }
  }
}
