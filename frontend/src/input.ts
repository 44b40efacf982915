/**
 * Keyboard, wheel and pointer input of the viewer. Every keydown is applied at once (the state
 * changes synchronously; painting waits for the next animation frame), so held keys and fast
 * presses never lose a slice. Keys handled here never reach Streamlit's own shortcuts.
 */
import { insideImage, PLANES } from "./planes";
import type { PlaneName } from "./protocol";
import type { Workstation } from "./workstation";

type DragKind = "wl" | "slice" | "pan" | "box" | "cursor";

interface Drag {
  kind: DragKind;
  plane: PlaneName;
  pointerId: number;
  x0: number;
  y0: number;
  w0: number;
  l0: number;
  panX0: number;
  panY0: number;
  acc: number;
}

const WHEEL_NOTCH_PX = 50;
const SLICE_DRAG_PX = 4;

export function attachInput(ws: Workstation): () => void {
  const root = ws.root;
  let drag: Drag | null = null;
  let space = false;
  let wheelAcc = 0;
  const off: (() => void)[] = [];
  const on = <T extends Event>(t: EventTarget, type: string, fn: (e: T) => void,
                               opts?: AddEventListenerOptions) => {
    t.addEventListener(type, fn as EventListener, opts);
    off.push(() => t.removeEventListener(type, fn as EventListener, opts));
  };

  // ---- keyboard -------------------------------------------------------------------------
  on<KeyboardEvent>(root, "keydown", (e) => {
    if (e.key === " ") {
      space = true;
      e.preventDefault();
      e.stopPropagation();
      return;
    }
    const action = ws.keys.get(e.key);
    if (e.ctrlKey || e.metaKey || e.altKey) return; // browser shortcuts stay the browser's
    e.stopPropagation(); // never Streamlit's "r" (rerun) or "c" (clear cache)
    if (!action) return;
    e.preventDefault();
    runAction(ws, action);
  });
  on<KeyboardEvent>(root, "keyup", (e) => {
    if (e.key === " ") space = false;
    e.stopPropagation();
  });

  // ---- wheel, pointer (per viewport) ---------------------------------------------------------
  for (const plane of PLANES) {
    const vp = ws.vps[plane];
    on<WheelEvent>(vp.el, "wheel", (e) => {
      e.preventDefault();
      ws.setActive(plane);
      const scale = e.deltaMode === 1 ? 40 : e.deltaMode === 2 ? 800 : 1;
      const dy = e.deltaY * scale;
      if (e.ctrlKey || e.metaKey) {
        const [px, py] = vp.local(e.clientX, e.clientY);
        ws.zoom(plane, dy < 0 ? 1.1 : 1 / 1.1, px, py);
        return;
      }
      if (Math.abs(dy) >= WHEEL_NOTCH_PX) {
        wheelAcc = 0;
        ws.step(plane, dy > 0 ? -1 : 1); // one slice per notch; down = inferior/back
        return;
      }
      wheelAcc += dy; // trackpads: small deltas add up to a notch
      if (Math.abs(wheelAcc) >= WHEEL_NOTCH_PX) {
        ws.step(plane, wheelAcc > 0 ? -1 : 1);
        wheelAcc = 0;
      }
    }, { passive: false });

    on<MouseEvent>(vp.el, "contextmenu", (e) => e.preventDefault());

    on<PointerEvent>(vp.el, "pointerdown", (e) => {
      root.focus({ preventScroll: true });
      ws.setActive(plane);
      const [px, py] = vp.local(e.clientX, e.clientY);
      const [x, y] = vp.toImage(px, py);
      const base = { plane, pointerId: e.pointerId, x0: e.clientX, y0: e.clientY, w0: ws.wl[0], l0: ws.wl[1],
                     panX0: vp.panX, panY0: vp.panY, acc: 0 };
      let kind: DragKind | null = null;
      if (e.button === 2) kind = "wl";
      else if (e.button === 1 || (e.button === 0 && e.ctrlKey)) kind = "slice";
      else if (e.button === 0 && (e.shiftKey || space)) kind = "pan";
      else if (e.button === 0 && ws.tool === "measure") {
        measureClick(ws, plane, x, y);
      } else if (e.button === 0 && ws.tool === "box" && plane === "axial" && vp.geom) {
        const k = ws.cursor[0];
        const hit = ws.boxes.hit(k, x, y, vp);
        if (hit) ws.boxes.beginEdit(hit.box, hit.handle, x, y);
        else if (insideImage(vp.geom, x, y)) ws.boxes.beginDraw(k, x, y, "#ffcc00");
        else ws.boxes.selected = null;
        kind = ws.boxes.drag ? "box" : null;
        ws.overlayOnly("axial");
      } else if (e.button === 0 && vp.geom && insideImage(vp.geom, x, y)) {
        kind = "cursor";
        ws.setCursorAt(plane, x, y);
      }
      if (kind) {
        drag = { kind, ...base };
        vp.el.setPointerCapture(e.pointerId);
      }
      e.preventDefault();
    });

    on<PointerEvent>(vp.el, "pointermove", (e) => {
      const [px, py] = vp.local(e.clientX, e.clientY);
      const [x, y] = vp.toImage(px, py);
      ws.hover = { plane, x, y };
      if (ws.measurement && !ws.measurement.p1 && ws.measurement.plane === plane) ws.measurement.hover = [x, y];
      const d = drag;
      if (d && d.plane === plane && d.pointerId === e.pointerId) {
        const dx = e.clientX - d.x0;
        const dy = e.clientY - d.y0;
        switch (d.kind) {
          case "wl": {
            const k = Math.max(1, d.w0 / 200);
            ws.setWindow(Math.max(1, d.w0 + dx * k), d.l0 + dy * k * 0.5);
            break;
          }
          case "slice": {
            const steps = Math.trunc((dy - d.acc) / SLICE_DRAG_PX);
            if (steps) {
              d.acc += steps * SLICE_DRAG_PX;
              ws.step(plane, -steps);
            }
            break;
          }
          case "pan":
            ws.pan(plane, d.panX0 + dx, d.panY0 + dy);
            break;
          case "box":
            ws.boxes.moveTo(x, y);
            ws.overlayOnly("axial");
            break;
          case "cursor":
            if (vp.geom && insideImage(vp.geom, x, y)) ws.setCursorAt(plane, x, y);
            break;
        }
      }
      ws.overlayOnly(plane);
    });

    const finish = (e: PointerEvent) => {
      const d = drag;
      if (!d || d.pointerId !== e.pointerId || d.plane !== plane) return;
      drag = null;
      if (vp.el.hasPointerCapture(e.pointerId)) vp.el.releasePointerCapture(e.pointerId);
      if (d.kind === "box" && vp.geom) {
        const drawing = ws.boxes.drag?.handle === "draw";
        const ev = ws.boxes.end(vp.geom.width, vp.geom.height, ws.boxSeq());
        if (ev === "refused" || (ev === null && drawing)) {
          ws.note("Box refused: it has no size. Drag to draw a box.");
          ws.boxes.selected = null;
        } else if (ev) ws.boxEvent(ev); // once per change, on mouse-up
        ws.overlayOnly("axial");
      }
    };
    on<PointerEvent>(vp.el, "pointerup", finish);
    on<PointerEvent>(vp.el, "pointercancel", finish);
    on<PointerEvent>(vp.el, "pointerleave", () => {
      if (!drag) {
        ws.hover = null;
        ws.overlayOnly(plane);
      }
    });
  }

  // ---- window and fullscreen changes -------------------------------------------------------
  const relayout = () => ws.relayout();
  on(window, "resize", relayout);
  on(document, "fullscreenchange", relayout);
  return () => off.forEach((f) => f());
}

function measureClick(ws: Workstation, plane: PlaneName, x: number, y: number): void {
  const vp = ws.vps[plane];
  if (!vp.geom || !insideImage(vp.geom, x, y)) return;
  const index = ws.cursor[vp.geom.axis];
  const m = ws.measurement;
  if (m && !m.p1 && m.plane === plane && m.index === index) {
    m.p1 = [x, y];
    m.hover = null;
    ws.tool = "nav";
    ws.root.dataset.tool = "nav";
  } else {
    ws.measurement = { plane, index, p0: [x, y], p1: null, hover: null };
  }
  ws.overlayOnly(plane);
}

export function runAction(ws: Workstation, action: string): void {
  const p = ws.active;
  switch (action) {
    case "next": ws.step(p, 1); break;
    case "prev": ws.step(p, -1); break;
    case "next10": ws.step(p, 10); break;
    case "prev10": ws.step(p, -10); break;
    case "first": ws.setIndex(p, 0); break;
    case "last": ws.setIndex(p, 1e9); break;
    case "window1": ws.preset(0); break;
    case "window2": ws.preset(1); break;
    case "window3": ws.preset(2); break;
    case "reset": ws.reset(); break;
    case "zoom_in": ws.zoom(p, 1.25); break;
    case "zoom_out": ws.zoom(p, 1 / 1.25); break;
    case "fullscreen": ws.toggleFullscreen(); break;
    case "measure": ws.setTool("measure"); break;
    case "box": ws.setTool("box"); break;
    case "delete": {
      const ev = ws.boxes.deleteSelected(ws.boxSeq());
      if (ev) ws.boxEvent(ev);
      ws.overlayOnly("axial");
      break;
    }
    case "labels": ws.toggleLabels(); break;
    case "layout": case "plane_axial": case "plane_sagittal": case "plane_coronal":
      if (ws.isFilm) ws.note("a radiograph is one image: no other plane to show", 2500);
      else if (action === "layout") ws.setLayout(ws.layout === "three" ? "single" : "three");
      else ws.setPlane(action.slice("plane_".length) as PlaneName);
      break;
    case "escape":
      ws.toggleHelp(false);
      if (ws.tool !== "nav") ws.setTool(ws.tool);
      ws.measurement = null;
      ws.boxes.selected = null;
      ws.invalidate(PLANES, false);
      break;
    case "help": ws.toggleHelp(); break;
  }
}
