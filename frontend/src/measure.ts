/** The length tool: two clicks on one slice of one plane, length in mm from the voxel spacing
 * (in pixels for an image whose spacing is unknown: the caller passes the unit). */
import type { PlaneName } from "./protocol";
import type { Viewport } from "./viewport";

export interface Measurement {
  plane: PlaneName;
  index: number;
  p0: [number, number];
  p1: [number, number] | null;
  /** pointer position while the second point is not set */
  hover: [number, number] | null;
}

export function lengthMm(m: Measurement, spx: number, spy: number): number | null {
  const p1 = m.p1 ?? m.hover;
  if (!p1) return null;
  return Math.hypot((p1[0] - m.p0[0]) * spx, (p1[1] - m.p0[1]) * spy);
}

export function drawMeasurement(ctx: CanvasRenderingContext2D, vp: Viewport, m: Measurement,
                                mm: number | null, unit = "mm"): void {
  const p1 = m.p1 ?? m.hover;
  const [ax, ay] = vp.toScreen(m.p0[0], m.p0[1]);
  ctx.save();
  ctx.strokeStyle = "#4fd1ff";
  ctx.fillStyle = "#4fd1ff";
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  ctx.arc(ax, ay, 3, 0, 2 * Math.PI);
  ctx.fill();
  if (p1) {
    const [bx, by] = vp.toScreen(p1[0], p1[1]);
    ctx.beginPath();
    ctx.moveTo(ax, ay);
    ctx.lineTo(bx, by);
    ctx.stroke();
    ctx.beginPath();
    ctx.arc(bx, by, 3, 0, 2 * Math.PI);
    ctx.fill();
    if (mm !== null) {
      ctx.font = "12px system-ui, sans-serif";
      ctx.fillText(`${mm.toFixed(1)} ${unit}`, bx + 6, by - 6);
    }
  }
  ctx.restore();
}
