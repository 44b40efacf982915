/**
 * The viewer: state (cursor, window, layout, tools), the frames from Python, and rendering.
 * Every change only marks what is stale; one requestAnimationFrame paints the latest state, so
 * key presses are all applied (none dropped) while paints coalesce to one per frame.
 */
import css from "./styles.css";
import { BoxLayer, type BoxEvent } from "./boxes";
import { Channel } from "./channel";
import { BoxSaver, HTTP_SEQ_BASE, type Queued, type SaveReply } from "./saver";
import { buildHelp, keyTable } from "./help";
import { attachInput } from "./input";
import { LabelsPanel } from "./labelsPanel";
import { drawMeasurement, lengthMm, type Measurement } from "./measure";
import { imageToVoxelIndex, insideImage, PLANES, planeGeom, voxelToImage, type PlaneGeom } from "./planes";
import { parseFrame, type BoxSpec, type FilmSpec, type PlaneName, type Range, type Vec3, type ViewSpec, type VolumeHeader } from "./protocol";
import { LabelStats, Luts, rasterPlane } from "./raster";
import { Streamer } from "./streaming";
import { Viewport } from "./viewport";
import { VolumeStore } from "./volume";

export type Tool = "nav" | "box" | "measure";
type Setter = (name: string, value: unknown) => void;

const AXIS: Record<PlaneName, 0 | 1 | 2> = { axial: 0, coronal: 1, sagittal: 2 };

interface PyView {
  layout: string;
  plane: PlaneName;
  cursor: Vec3;
  window: [number, number];
  overlay: boolean;
  opacity: number;
  labels: string;
  keymap: string;
  focus: string;
  goTo: number;
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, cls: string, testid?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  e.className = cls;
  if (testid) e.dataset.testid = testid;
  return e;
}

/** Write text only when it changed (no needless style and layout work per frame). */
function setText(e: HTMLElement, text: string): void {
  if (e.textContent !== text) e.textContent = text;
}

export class Workstation {
  readonly root: HTMLDivElement;
  readonly vps: Record<PlaneName, Viewport>;
  readonly channel = new Channel();
  readonly boxes = new BoxLayer();
  /** posts box events to the server's box route when the page passes `box_post` */
  readonly saver: BoxSaver;
  /** box saves the server confirmed (also `data-saved` on the root), for tests and the benchmark */
  savedCount = 0;
  readonly luts = new Luts();
  readonly labels: LabelsPanel;
  private readonly main: HTMLDivElement;
  private readonly bar: Record<string, HTMLSpanElement> = {};
  private readonly helpEl: HTMLDivElement;
  private readonly noteEl: HTMLDivElement;
  private noteTimer = 0;
  vol: VolumeStore | null = null;
  private streamer: Streamer | null = null;
  view: ViewSpec | null = null;
  private py: PyView | null = null;
  keys = new Map<string, string>();
  layout: "single" | "three" = "single";
  /** the frame's film (a radiograph), or null for a volume */
  private film: FilmSpec | null = null;
  plane: PlaneName = "axial";
  active: PlaneName = "axial";
  cursor: Vec3 = [0, 0, 0];
  wl: [number, number] = [1800, 400];
  tool: Tool = "nav";
  measurement: Measurement | null = null;
  hover: { plane: PlaneName; x: number; y: number } | null = null;
  private readonly present = new Uint8Array(256);
  private readonly stats = new LabelStats();
  private readonly dirtyImg = new Set<PlaneName>();
  private readonly dirtyOv = new Set<PlaneName>();
  private raf = 0;
  private readonly detach: () => void;
  private readonly resizeObs: ResizeObserver;
  /** the page around the viewer: what grows above it pushes it down (no rerun tells us when the
   * volume arrives over the route), so the "fill" height is fitted again */
  private readonly pageObs: ResizeObserver;
  /** paints done, for tests and the benchmark */
  paints = 0;

  constructor(readonly host: HTMLElement | ShadowRoot) {
    const style = document.createElement("style");
    style.textContent = css;
    const root = el("div", "sv-root", "sv-root");
    root.tabIndex = 0;
    root.setAttribute("role", "application");
    root.setAttribute("aria-label", "Slice viewer (press ? for the key map)");
    this.main = el("div", "sv-main");
    this.vps = { axial: new Viewport("axial"), sagittal: new Viewport("sagittal"), coronal: new Viewport("coronal") };
    for (const p of PLANES) this.main.append(this.vps[p].el);
    const barEl = el("div", "sv-bar");
    for (const [name, grow] of [["window", false], ["hu", false], ["pos", false],
                                ["measure", false], ["save", false], ["tool", true], ["loading", false]] as [string, boolean][]) {
      const s = el("span", grow ? "sv-grow" : "", `sv-${name}`);
      this.bar[name] = s;
      barEl.append(s);
    }
    const helpBtn = el("button", "", "sv-help-button");
    helpBtn.textContent = "?";
    helpBtn.title = "key map";
    helpBtn.addEventListener("click", () => this.toggleHelp());
    barEl.append(helpBtn);
    this.helpEl = el("div", "sv-help", "sv-help");
    this.noteEl = el("div", "sv-note", "sv-note");
    this.labels = new LabelsPanel(() => this.labelsChanged());
    root.append(this.main, barEl, this.labels.el, this.helpEl, this.noteEl);
    host.append(style, root);
    this.root = root;
    root.dataset.mountAt = performance.now().toFixed(1);
    root.dataset.saved = "0";
    this.saver = new BoxSaver({
      saved: (q, sentId, reply) => this.saved(q, sentId, reply),
      failed: (q, message, dropped) => this.saveFailed(q, message, dropped),
      saving: (text) => this.saveStatus(text),
    });
    (root as unknown as { svWorkstation: Workstation }).svWorkstation = this;
    this.detach = attachInput(this);
    this.resizeObs = new ResizeObserver(() => this.relayout());
    this.resizeObs.observe(this.main);
    this.pageObs = new ResizeObserver(() => this.fitHeight());
    this.pageObs.observe(document.querySelector("[data-testid=stMainBlockContainer]") ?? document.body);
    this.luts.setWindow(...this.wl);
  }

  bind(setState: Setter, setTrigger: Setter): void {
    this.channel.bind(setState, setTrigger);
  }

  // ---- frames from Python -----------------------------------------------------------------

  receive(data: unknown): void {
    let frame;
    try {
      frame = parseFrame(data);
    } catch (e) {
      this.note(`viewer: ${(e as Error).message}`, 10000);
      return;
    }
    const h = frame.header;
    if (!this.vol || this.vol.id !== h.volume.id) this.openVolume(h.volume, h.view);
    else this.streamer?.retarget(h.volume.chunk_url);
    this.fitHeight(); // what is above the viewer may have changed with this run
    this.applyView(h.view);
    this.channel.ack(h.ack.client, h.ack.seq);
    this.boxes.setBoxes(h.view.boxes, h.ack.client === this.channel.client ? h.ack.seq : 0);
    if (h.chunk) this.streamer?.take(h.chunk, frame.payload);
    else this.streamer?.pump();
    this.invalidate(PLANES, true);
  }

  private openVolume(h: VolumeHeader, view: ViewSpec): void {
    this.streamer?.dispose();
    this.vol = new VolumeStore(h);
    this.present.fill(0);
    this.channel.volume = h.id;
    this.channel.need = null;
    this.py = null;
    this.measurement = null;
    this.cursor = [...view.cursor] as Vec3;
    this.film = view.film ?? null;
    for (const p of PLANES) this.vps[p].setGeom(this.geomOf(p, h));
    this.streamer = new Streamer(this.vol, this.channel, (r) => this.loaded(r),
                                 (e) => this.note(`viewer: ${(e as Error).message}`, 10000),
                                 h.chunk_url ?? null);
    this.root.dataset.volume = h.id;
    this.root.dataset.transport = this.streamer.mode;
    (this.root as unknown as { svTimeline: unknown }).svTimeline = this.streamer.timeline;
    this.root.dataset.complete = "0";
  }

  /** A plane's geometry; a film's one image is "Film", with the letters of its edges. */
  private geomOf(p: PlaneName, h: { shape: Vec3; spacing: Vec3 }): PlaneGeom {
    const g = planeGeom(p, h.shape, h.spacing);
    return this.film && p === "axial" ? { ...g, title: "Film", letters: this.film.letters } : g;
  }

  /** A radiograph: one image, no other plane or layout to choose. */
  get isFilm(): boolean {
    return this.film !== null;
  }

  private applyView(v: ViewSpec): void {
    const prev = this.py;
    this.view = v;
    if (this.film && v.film && JSON.stringify(v.film) !== JSON.stringify(this.film) && this.vol) {
      this.film = v.film;
      this.vps.axial.setGeom(this.geomOf("axial", this.vol));
    }
    if (this.film) {
      v = { ...v, layout: "single", plane: "axial" };
    }
    this.saver.configure(v.editable ? v.box_post : null);
    const keymapKey = JSON.stringify(v.keymap);
    if (!prev || prev.keymap !== keymapKey) {
      this.keys = keyTable(v.keymap);
      buildHelp(this.helpEl, v.keymap, v.gestures);
    }
    if (!prev || prev.layout !== v.layout) this.setLayout(v.layout);
    if (!prev || prev.plane !== v.plane) this.setPlane(v.plane);
    if (prev) {
      const recent = this.channel.recentCommits;
      const jump = (v.go_to ?? 0) !== prev.goTo; // Back/Forward: take the cursor as it is
      let moved = false;
      for (let i = 0; i < 3; i++) {
        if (jump ? v.cursor[i] !== this.cursor[i]
                 : v.cursor[i] !== prev.cursor[i] && !recent.some((c) => c[i] === v.cursor[i])) {
          this.cursor[i] = Math.min(this.vol!.shape[i] - 1, Math.max(0, v.cursor[i]));
          moved = true;
        }
      }
      if (jump && moved) this.channel.forgetCommits();
    }
    if (!prev || prev.window[0] !== v.window[0] || prev.window[1] !== v.window[1]) this.setWindow(v.window[0], v.window[1]);
    const focusKey = JSON.stringify(v.focus ?? null);
    if (v.focus && (!prev || prev.focus !== focusKey)) {
      this.vps.axial.focusOn(v.focus);
      this.invalidate(["axial"], false);
    }
    this.boxes.largeLabels = !!v.large_labels;
    const labelsKey = JSON.stringify(v.labels);
    if (!prev || prev.overlay !== v.overlay || prev.opacity !== v.opacity || prev.labels !== labelsKey) {
      if (!prev || prev.overlay !== v.overlay) this.labels.enabled = v.overlay;
      if (!prev || prev.opacity !== v.opacity) this.labels.opacity = v.opacity;
      this.labels.el.style.display = this.vol?.mask ? "" : "none";
      this.labelsChanged();
    }
    this.py = { layout: v.layout, plane: v.plane, cursor: [...v.cursor] as Vec3, window: [...v.window] as [number, number],
                overlay: v.overlay, opacity: v.opacity, labels: labelsKey, keymap: keymapKey,
                focus: focusKey, goTo: v.go_to ?? 0 };
  }

  private loaded(range: Range): void {
    const vol = this.vol!;
    if (this.streamer) this.root.dataset.transport = this.streamer.mode;
    this.fitHeight(); // as each frame of the rerun path did: the page may have grown above
    if (vol.mask) {
      const [K, R, C] = vol.shape;
      const m = vol.mask.subarray(range[0] * R * C, range[1] * R * C);
      let changed = false;
      for (let i = 0; i < m.length; i++) {
        const v = m[i];
        if (v && !this.present[v]) {
          this.present[v] = 1;
          changed = true;
        }
      }
      if (changed && this.view) this.labels.setPresent(this.view.labels, this.present);
      void K;
    }
    if (vol.complete && this.root.dataset.complete !== "1") {
      this.root.dataset.complete = "1";
      this.root.dataset.completeAt = performance.now().toFixed(1);
    }
    this.invalidate(PLANES, true);
  }

  // ---- state changes ----------------------------------------------------------------------

  visiblePlanes(): PlaneName[] {
    return this.layout === "three" ? PLANES : [this.plane];
  }

  setLayout(layout: "single" | "three"): void {
    this.layout = layout;
    this.main.classList.toggle("three", layout === "three");
    this.updateVisibility();
  }

  setPlane(plane: PlaneName): void {
    this.plane = plane;
    this.active = plane;
    this.updateVisibility();
  }

  private updateVisibility(): void {
    const vis = this.visiblePlanes();
    for (const p of PLANES) {
      this.vps[p].el.classList.toggle("hidden", !vis.includes(p));
      this.vps[p].el.classList.toggle("active", p === this.active && this.layout === "three");
    }
    this.relayout();
    this.invalidate(PLANES, true);
  }

  relayout(): void {
    this.fitHeight();
    for (const p of this.visiblePlanes()) {
      const vp = this.vps[p];
      vp.measure();
      vp.layout();
    }
    this.invalidate(PLANES, false);
  }

  fitHeight(): void {
    const h = this.view?.height ?? "fill";
    if (document.fullscreenElement === this.root) {
      this.root.style.height = "";
      return;
    }
    if (h === "fill") {
      const top = this.root.getBoundingClientRect().top + window.scrollY;
      const want = Math.max(320, Math.floor(window.innerHeight - top - 24));
      if (this.root.style.height !== `${want}px`) this.root.style.height = `${want}px`;
    } else {
      this.root.style.height = `${h}px`;
    }
  }

  setActive(plane: PlaneName): void {
    if (this.active === plane) return;
    this.active = plane;
    for (const p of PLANES) this.vps[p].el.classList.toggle("active", p === plane && this.layout === "three");
  }

  /** Move `plane` by `delta` slices (clamped); every call counts, paints coalesce. */
  step(plane: PlaneName, delta: number): void {
    if (!this.vol) return;
    const a = AXIS[plane];
    this.setIndex(plane, this.cursor[a] + delta);
  }

  setIndex(plane: PlaneName, index: number): void {
    if (!this.vol) return;
    const a = AXIS[plane];
    const v = Math.min(this.vol.shape[a] - 1, Math.max(0, Math.round(index)));
    if (v === this.cursor[a]) return;
    this.cursor[a] = v;
    this.cursorChanged(plane);
  }

  /** Crosshair to the voxel under image point (x, y) of `plane` (its slice stays). */
  setCursorAt(plane: PlaneName, x: number, y: number): void {
    const vp = this.vps[plane];
    if (!this.vol || !vp.geom) return;
    const v = imageToVoxelIndex(vp.geom, this.vol.shape, this.cursor[AXIS[plane]], x, y);
    this.cursor = v;
    this.cursorChanged(null);
  }

  private cursorChanged(plane: PlaneName | null): void {
    if (plane) this.dirtyImg.add(plane);
    else for (const p of PLANES) this.dirtyImg.add(p);
    for (const p of PLANES) this.dirtyOv.add(p);
    this.schedule();
    const p = plane ?? this.active;
    this.channel.commitSlice(p, this.cursor[AXIS[p]], [...this.cursor] as Vec3);
  }

  setWindow(width: number, level: number): void {
    this.wl = [Math.max(1, Math.round(width)), Math.round(level)];
    this.luts.setWindow(this.wl[0], this.wl[1]);
    this.invalidate(PLANES, true);
  }

  /** window preset ``n`` (0-based) of the frame's presets (a radiograph sends its own) */
  preset(n: number): void {
    const p = this.view?.presets[n];
    if (p) this.setWindow(p[0], p[1]);
  }

  reset(): void {
    if (this.view) this.setWindow(this.view.window[0], this.view.window[1]);
    for (const p of PLANES) this.vps[p].reset();
    this.measurement = null;
    this.invalidate(PLANES, false);
  }

  zoom(plane: PlaneName, factor: number, px?: number, py?: number): void {
    const vp = this.vps[plane];
    vp.zoomAt(factor, px ?? vp.vw / 2, py ?? vp.vh / 2);
    this.invalidate([plane], false);
  }

  pan(plane: PlaneName, panX: number, panY: number): void {
    const vp = this.vps[plane];
    vp.panX = panX;
    vp.panY = panY;
    vp.layout();
    this.invalidate([plane], false);
  }

  setTool(tool: Tool): void {
    if (tool === "box" && !this.view?.editable) {
      this.note("Boxes are read-only here");
      tool = "nav";
    }
    this.tool = this.tool === tool ? "nav" : tool;
    if (this.tool !== "measure" && this.measurement && !this.measurement.p1) this.measurement = null;
    this.root.dataset.tool = this.tool;
    this.invalidate(PLANES, false);
  }

  toggleHelp(open?: boolean): void {
    this.helpEl.classList.toggle("open", open);
  }

  get helpOpen(): boolean {
    return this.helpEl.classList.contains("open");
  }

  toggleFullscreen(): void {
    if (document.fullscreenElement) void document.exitFullscreen().catch(() => undefined);
    else void this.root.requestFullscreen().catch((e) => this.note(`full screen refused: ${e.message}`));
  }

  toggleLabels(): void {
    this.labels.enabled = !this.labels.enabled;
    this.labelsChanged();
  }

  labelsChanged(): void {
    if (!this.view) return;
    this.luts.setLabels(this.view.labels, this.labels.visible(this.view.labels), this.labels.opacity);
    this.invalidate(PLANES, true);
  }

  note(text: string, ms = 2500): void {
    this.noteEl.textContent = text;
    this.noteEl.classList.add("open");
    window.clearTimeout(this.noteTimer);
    this.noteTimer = window.setTimeout(() => this.noteEl.classList.remove("open"), ms);
  }

  // ---- box events ---------------------------------------------------------------------------

  /** The seq a local box edit is recorded under (see BoxLayer.pending). */
  boxSeq(): number {
    return this.saver.post ? this.saver.nextSeq() : this.channel.nextSeq();
  }

  /** Send one box event: to the box route (no rerun), else to Python as a component value. */
  boxEvent(ev: BoxEvent): void {
    if (this.saver.post) this.saver.send(ev);
    else this.channel.event(ev);
  }

  private saveStatus(text: string): void {
    const s = this.bar.save;
    setText(s, text);
    s.title = text;
  }

  private saved(q: Queued, sentId: string, reply: SaveReply): void {
    const layer = this.boxes;
    const own = (b: BoxSpec) => b.kind === "key" || b.kind === "interpolated";
    layer.boxes = [...layer.boxes.filter((b) => !own(b)), ...reply.boxes];
    const local = q.ev.id;
    const newId = reply.box_id !== null ? String(reply.box_id) : sentId;
    for (const key of new Set([local, sentId])) {
      const p = layer.pending.get(key);
      if (p && p.seq <= q.seq) layer.pending.delete(key);
      else if (p && key !== newId) { // edited again meanwhile: keep that edit under the saved id
        layer.pending.delete(key);
        layer.pending.set(newId, { box: p.box ? { ...p.box, id: newId } : null, seq: p.seq });
      }
    }
    if (layer.selected === local) layer.selected = newId;
    this.savedCount += 1;
    this.root.dataset.savedAt = performance.now().toFixed(1);
    this.root.dataset.saved = String(this.savedCount);
    this.saveStatus(reply.message);
    if (reply.refresh) {
      // a toast: a warning above the viewer would shift it and have Streamlit mount it anew
      this.channel.refresh({ message: reply.message, kind: "toast", ask_levels: reply.ask_levels });
    }
    this.invalidate(["axial"], false);
  }

  private saveFailed(q: Queued, message: string, dropped: Queued[]): void {
    void q;
    void dropped;
    for (const [id, p] of this.boxes.pending) if (p.seq >= HTTP_SEQ_BASE) this.boxes.pending.delete(id);
    this.root.dataset.saveFailed = String(Number(this.root.dataset.saveFailed ?? "0") + 1);
    this.saveStatus(message);
    this.note(message, 6000);
    this.channel.refresh({ message, kind: "warning", ask_levels: [] });
    this.invalidate(["axial"], false);
  }

  // ---- painting ---------------------------------------------------------------------------

  invalidate(planes: PlaneName[], image: boolean): void {
    for (const p of planes) {
      if (image) this.dirtyImg.add(p);
      this.dirtyOv.add(p);
    }
    this.schedule();
  }

  overlayOnly(plane: PlaneName): void {
    this.dirtyOv.add(plane);
    this.schedule();
  }

  schedule(): void {
    if (!this.raf) this.raf = requestAnimationFrame(() => this.render());
  }

  private render(): void {
    this.raf = 0;
    const vol = this.vol;
    if (!vol) return;
    const withLabels = !!vol.mask && this.labels.enabled;
    for (const p of this.visiblePlanes()) {
      const vp = this.vps[p];
      const g = vp.geom;
      if (!g) continue;
      if (vp.vw === 0) {
        vp.measure();
        vp.layout();
      }
      const index = this.cursor[g.axis];
      if (this.dirtyImg.has(p) || vp.shownIndex !== index) {
        const seen = withLabels ? new Uint8Array(256) : null;
        const stats = withLabels && p !== "axial" ? this.stats.reset() : null;
        rasterPlane(vol, g, index, this.luts, vp.pixels!, withLabels, seen, stats);
        vp.paint(index);
        vp.marks = stats && this.view ? this.levelMarks(stats) : [];
        this.dirtyOv.add(p);
        this.paints++;
        const pending = p === "axial" ? !vol.loaded[index] : vol.loadedCount === 0;
        vp.el.classList.toggle("pending", pending);
        setText(vp.info, this.film ? g.title : `${g.title} ${index + 1} / ${g.count}`);
        if (vp.info.dataset.index !== String(index)) vp.info.dataset.index = String(index);
        // axial: the levels in view as one line; sagittal and coronal: each name beside its level
        setText(vp.levels, seen && this.view && p === "axial"
          ? this.view.labels.filter((l) => seen[l.id]).map((l) => l.name).join(" ") : "");
        if (p === "axial" && !pending && !this.root.dataset.firstPaint) {
          this.root.dataset.firstPaint = performance.now().toFixed(1);
        }
      }
      if (this.dirtyOv.has(p)) this.drawOverlay(p);
    }
    this.dirtyImg.clear();
    this.dirtyOv.clear();
    this.updateBar();
  }

  /** Each visible label's name at its centre row, just right of its last column. */
  private levelMarks(stats: LabelStats): { name: string; x: number; y: number; colour: string }[] {
    const out = [];
    for (const l of this.view!.labels) {
      const n = stats.count[l.id];
      if (n < 8) continue; // a sliver at the plane's edge: no name
      out.push({ name: l.name, x: stats.maxX[l.id] + 1, y: stats.sumY[l.id] / n + 0.5,
                 colour: `rgb(${l.colour[0]},${l.colour[1]},${l.colour[2]})` });
    }
    return out;
  }

  private drawMarks(ctx: CanvasRenderingContext2D, vp: Viewport): void {
    ctx.save();
    ctx.font = "600 12px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    ctx.lineWidth = 3;
    ctx.strokeStyle = "rgba(0, 0, 0, 0.8)";
    let lastY = -Infinity;
    for (const m of [...vp.marks].sort((a, b) => a.y - b.y)) {
      const [sx, sy] = vp.toScreen(m.x, m.y);
      if (sy < 14 || sy > vp.vh - 14 || sy - lastY < 12) continue; // off screen, or on the last name
      lastY = sy;
      const x = Math.min(sx + 6, vp.vw - ctx.measureText(m.name).width - 18);
      ctx.strokeText(m.name, x, sy);
      ctx.fillStyle = m.colour;
      ctx.fillText(m.name, x, sy);
    }
    ctx.restore();
  }

  private drawOverlay(plane: PlaneName): void {
    const vp = this.vps[plane];
    const g = vp.geom!;
    const vol = this.vol!;
    const index = this.cursor[g.axis];
    const m = this.measurement;
    const hasMeasure = !!m && m.plane === plane && m.index === index;
    const hasBoxes = plane === "axial" && this.boxes.onSlice(index).length > 0;
    const hasMarks = plane !== "axial" && vp.marks.length > 0;
    const hasContent = this.layout === "three" || hasMeasure || hasBoxes || hasMarks;
    // an empty overlay stays untouched: clearing a viewport-sized layer costs a texture upload
    if (!hasContent && !vp.overlayDirty) return;
    vp.overlayDirty = hasContent;
    const ctx = vp.clearOverlay();
    if (this.layout === "three") {
      const [, cx, cy] = voxelToImage(g, vol.shape, this.cursor);
      const [sx, sy] = vp.toScreen(cx, cy);
      ctx.save();
      ctx.strokeStyle = "rgba(80, 220, 120, 0.75)";
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.moveTo(Math.round(sx) + 0.5, 0);
      ctx.lineTo(Math.round(sx) + 0.5, vp.vh);
      ctx.moveTo(0, Math.round(sy) + 0.5);
      ctx.lineTo(vp.vw, Math.round(sy) + 0.5);
      ctx.stroke();
      ctx.restore();
    }
    if (hasMarks) this.drawMarks(ctx, vp);
    if (hasBoxes) this.boxes.draw(ctx, vp, index);
    if (hasMeasure && m) drawMeasurement(ctx, vp, m, lengthMm(m, g.spx, g.spy), this.lengthUnit);
  }

  /** "mm", or "px" when the image's spacing is unknown (a radiograph without one) */
  private get lengthUnit(): string {
    return this.view?.length_unit ?? "mm";
  }

  /** " HU" for CT; "" for values without a unit (a radiograph's detector values) */
  private get valueUnit(): string {
    const unit = this.view?.value_unit ?? "HU";
    return unit ? ` ${unit}` : "";
  }

  private updateBar(): void {
    const vol = this.vol!;
    const b = this.bar;
    setText(b.window, `W ${this.wl[0]} L ${this.wl[1]}`);
    b.window.dataset.width = String(this.wl[0]);
    b.window.dataset.level = String(this.wl[1]);
    const h = this.hover;
    const hvp = h ? this.vps[h.plane] : null;
    if (h && hvp?.geom && insideImage(hvp.geom, h.x, h.y)) {
      const v = imageToVoxelIndex(hvp.geom, vol.shape, this.cursor[hvp.geom.axis], h.x, h.y);
      const lps = vol.toLps(v[0], v[1], v[2]);
      if (vol.loaded[v[0]]) {
        const hu = vol.value(v[0], v[1], v[2]);
        b.hu.dataset.hu = String(hu);
        const lab = vol.label(v[0], v[1], v[2]);
        const name = lab ? this.view?.labels.find((l) => l.id === lab)?.name : "";
        setText(b.hu, `${hu}${this.valueUnit}${name ? ` · ${name}` : ""}`);
      } else {
        setText(b.hu, `…${this.valueUnit}`);
        delete b.hu.dataset.hu;
      }
      setText(b.pos, `L ${lps[0].toFixed(1)} P ${lps[1].toFixed(1)} S ${lps[2].toFixed(1)} ${this.lengthUnit}`);
      b.pos.dataset.voxel = v.join(",");
    } else {
      setText(b.hu, "");
      setText(b.pos, "");
      delete b.hu.dataset.hu;
    }
    const m = this.measurement;
    const mg = m ? this.vps[m.plane].geom : null;
    const mm = m && mg ? lengthMm(m, mg.spx, mg.spy) : null;
    setText(b.measure, mm !== null ? `length ${mm.toFixed(1)} ${this.lengthUnit}` : "");
    b.measure.dataset.mm = mm !== null && m?.p1 ? mm.toFixed(2) : "";
    setText(b.tool, this.tool === "box" ? "box tool (B)" : this.tool === "measure" ? "measure (M)" : "");
    const pct = Math.floor(100 * vol.loadedCount / vol.shape[0]);
    setText(b.loading, vol.complete ? "" : `loading ${pct} %`);
    b.loading.dataset.pct = String(pct);
  }

  destroy(): void {
    cancelAnimationFrame(this.raf);
    this.detach();
    this.resizeObs.disconnect();
    this.pageObs.disconnect();
    this.streamer?.dispose();
    this.channel.dispose();
    window.clearTimeout(this.noteTimer);
    this.root.remove();
    this.vol = null;
  }
}
