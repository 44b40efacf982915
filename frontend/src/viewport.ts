/**
 * One plane on screen: the image canvas at voxel resolution (placed, scaled for the voxel
 * spacing, zoomed and panned by a CSS transform, so zoom and pan never repaint pixels), an overlay
 * canvas at screen resolution (crosshair, boxes, measurement), orientation letters and captions.
 */
import type { PlaneName } from "./protocol";
import type { PlaneGeom } from "./planes";

export class Viewport {
  readonly el: HTMLDivElement;
  readonly img: HTMLCanvasElement;
  readonly ov: HTMLCanvasElement;
  readonly info: HTMLDivElement;
  readonly levels: HTMLDivElement;
  readonly pending: HTMLDivElement;
  private readonly letters: HTMLSpanElement[];
  private readonly ictx: CanvasRenderingContext2D;
  readonly octx: CanvasRenderingContext2D;
  geom: PlaneGeom | null = null;
  imageData: ImageData | null = null;
  pixels: Uint32Array | null = null;
  /** zoom relative to "fit", and pan in CSS px */
  zoom = 1;
  panX = 0;
  panY = 0;
  /** CSS px per image pixel and image origin in viewport CSS px (after layout) */
  sx = 1;
  sy = 1;
  tx = 0;
  ty = 0;
  vw = 0;
  vh = 0;
  dpr = 1;
  /** whether the overlay canvas holds anything */
  overlayDirty = true;
  /** last painted slice index (-1: none) */
  shownIndex = -1;
  /** level names to write beside their vertebra (image px: right edge, centre row) */
  marks: { name: string; x: number; y: number; colour: string }[] = [];
  /** a region [x0, y0, x1, y1] (image px) to zoom to once the viewport has a size */
  private pendingFocus: [number, number, number, number] | null = null;

  constructor(readonly plane: PlaneName) {
    const el = document.createElement("div");
    el.className = "sv-vp";
    el.dataset.plane = plane;
    el.dataset.testid = `sv-vp-${plane}`;
    this.img = document.createElement("canvas");
    this.img.className = "sv-img";
    this.ov = document.createElement("canvas");
    this.ov.className = "sv-ov";
    this.info = document.createElement("div");
    this.info.className = "sv-info";
    this.levels = document.createElement("div");
    this.levels.className = "sv-levels";
    this.pending = document.createElement("div");
    this.pending.className = "sv-pending";
    this.pending.textContent = "loading…";
    this.letters = ["top", "bottom", "left", "right"].map((side) => {
      const s = document.createElement("span");
      s.className = `sv-letter sv-${side}`;
      return s;
    });
    el.append(this.img, this.ov, this.info, this.levels, this.pending, ...this.letters);
    this.el = el;
    this.ictx = this.img.getContext("2d", { alpha: false }) as CanvasRenderingContext2D;
    this.octx = this.ov.getContext("2d") as CanvasRenderingContext2D;
  }

  setGeom(g: PlaneGeom): void {
    this.geom = g;
    this.img.width = g.width;
    this.img.height = g.height;
    this.img.style.width = `${g.width}px`;
    this.img.style.height = `${g.height}px`;
    this.imageData = this.ictx.createImageData(g.width, g.height);
    this.pixels = new Uint32Array(this.imageData.data.buffer);
    g.letters.forEach((t, i) => (this.letters[i].textContent = t));
    this.shownIndex = -1;
    this.layout();
  }

  /** Re-read the viewport size; returns true when it changed. */
  measure(): boolean {
    const w = this.el.clientWidth;
    const h = this.el.clientHeight;
    const dpr = window.devicePixelRatio || 1;
    if (w === this.vw && h === this.vh && dpr === this.dpr) return false;
    this.vw = w;
    this.vh = h;
    this.dpr = dpr;
    this.ov.width = Math.max(1, Math.round(w * dpr));
    this.ov.height = Math.max(1, Math.round(h * dpr));
    return true;
  }

  /**
   * Zoom and pan so the image region [x0, y0, x1, y1] fills about 60 % of the viewport, centred
   * (never below the whole-image fit). Deferred until the viewport has a size.
   */
  focusOn(rect: [number, number, number, number]): void {
    this.pendingFocus = rect;
    this.layout();
  }

  private applyFocus(fit: number): void {
    const g = this.geom!;
    const [x0, y0, x1, y1] = this.pendingFocus!;
    this.pendingFocus = null;
    const rw = Math.max(1, Math.abs(x1 - x0)) * g.spx * fit;
    const rh = Math.max(1, Math.abs(y1 - y0)) * g.spy * fit;
    this.zoom = Math.min(40, Math.max(1, Math.min(0.6 * this.vw / rw, 0.6 * this.vh / rh)));
    const s = fit * this.zoom;
    this.panX = (g.width / 2 - (x0 + x1) / 2) * s * g.spx;
    this.panY = (g.height / 2 - (y0 + y1) / 2) * s * g.spy;
  }

  /** Fit (then zoom and pan) the image into the viewport, keeping the voxel aspect. */
  layout(): void {
    const g = this.geom;
    if (!g || this.vw === 0 || this.vh === 0) return;
    const mmW = g.width * g.spx;
    const mmH = g.height * g.spy;
    const fit = Math.min(this.vw / mmW, this.vh / mmH);
    if (this.pendingFocus) this.applyFocus(fit);
    const s = fit * this.zoom;
    this.sx = s * g.spx;
    this.sy = s * g.spy;
    this.tx = (this.vw - g.width * this.sx) / 2 + this.panX;
    this.ty = (this.vh - g.height * this.sy) / 2 + this.panY;
    this.img.style.transform = `matrix(${this.sx},0,0,${this.sy},${this.tx},${this.ty})`;
  }

  /** Zoom by `factor` keeping the viewport point (px, py) fixed. */
  zoomAt(factor: number, px: number, py: number): void {
    const z = Math.min(40, Math.max(0.25, this.zoom * factor));
    const f = z / this.zoom;
    // image point under (px, py) must stay: new t = p - (p - t) * f
    const cx = (this.vw - (this.geom?.width ?? 0) * this.sx * f) / 2;
    const cy = (this.vh - (this.geom?.height ?? 0) * this.sy * f) / 2;
    this.panX = px - (px - this.tx) * f - cx;
    this.panY = py - (py - this.ty) * f - cy;
    this.zoom = z;
    this.layout();
  }

  reset(): void {
    this.zoom = 1;
    this.panX = 0;
    this.panY = 0;
    this.layout();
  }

  /** Viewport CSS px of a client (mouse) position. */
  local(clientX: number, clientY: number): [number, number] {
    const r = this.el.getBoundingClientRect();
    return [clientX - r.left, clientY - r.top];
  }

  toImage(px: number, py: number): [number, number] {
    return [(px - this.tx) / this.sx, (py - this.ty) / this.sy];
  }

  toScreen(x: number, y: number): [number, number] {
    return [x * this.sx + this.tx, y * this.sy + this.ty];
  }

  paint(index: number): void {
    if (this.imageData) this.ictx.putImageData(this.imageData, 0, 0);
    this.shownIndex = index;
  }

  clearOverlay(): CanvasRenderingContext2D {
    const c = this.octx;
    c.setTransform(1, 0, 0, 1, 0, 0);
    c.clearRect(0, 0, this.ov.width, this.ov.height);
    c.setTransform(this.dpr, 0, 0, this.dpr, 0, 0);
    return c;
  }
}
