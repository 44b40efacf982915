/**
 * The three planes cut from the display-ordered volume (shape K slices × R rows × C cols; axes
 * towards Superior, Posterior, patient Left), in radiological view:
 *
 * | plane    | index along | image x (left→right) | image y (top→bottom) |
 * |----------|-------------|----------------------|----------------------|
 * | axial    | k (I→S)     | c (R→L)              | r (A→P)              |
 * | coronal  | r (A→P)     | c (R→L)              | K−k (S→I)            |
 * | sagittal | c (R→L)     | r (A→P)              | K−k (S→I)            |
 *
 * Image coordinates use the edge convention: pixel (x, y) covers [x, x+1) × [y, y+1).
 */
import type { PlaneName, Vec3 } from "./protocol";

export interface PlaneGeom {
  name: PlaneName;
  /** display axis the slice index runs along */
  axis: 0 | 1 | 2;
  count: number;
  width: number;
  height: number;
  /** mm per image pixel, horizontally and vertically */
  spx: number;
  spy: number;
  /** orientation letters: top, bottom, left, right */
  letters: [string, string, string, string];
  title: string;
}

export const PLANES: PlaneName[] = ["axial", "sagittal", "coronal"];

export function planeGeom(name: PlaneName, shape: Vec3, spacing: Vec3): PlaneGeom {
  const [K, R, C] = shape;
  const [sk, sr, sc] = spacing;
  switch (name) {
    case "axial":
      return { name, axis: 0, count: K, width: C, height: R, spx: sc, spy: sr,
               letters: ["A", "P", "R", "L"], title: "Axial" };
    case "coronal":
      return { name, axis: 1, count: R, width: C, height: K, spx: sc, spy: sk,
               letters: ["S", "I", "R", "L"], title: "Coronal" };
    case "sagittal":
      return { name, axis: 2, count: C, width: R, height: K, spx: sr, spy: sk,
               letters: ["S", "I", "A", "P"], title: "Sagittal" };
  }
}

/** Image point (x, y) on a plane → display voxel coordinates (edge convention, fractional). */
export function imageToVoxel(p: PlaneGeom, shape: Vec3, index: number, x: number, y: number): Vec3 {
  const K = shape[0];
  switch (p.name) {
    case "axial":
      return [index + 0.5, y, x];
    case "coronal":
      return [K - y, index + 0.5, x];
    case "sagittal":
      return [K - y, x, index + 0.5];
  }
}

/** Integer voxel (clamped into the volume) under an image point. */
export function imageToVoxelIndex(p: PlaneGeom, shape: Vec3, index: number, x: number, y: number): Vec3 {
  const v = imageToVoxel(p, shape, index, x, y);
  return v.map((e, i) => Math.min(shape[i] - 1, Math.max(0, Math.floor(e)))) as Vec3;
}

/** Is the image point inside the plane image? */
export function insideImage(p: PlaneGeom, x: number, y: number): boolean {
  return x >= 0 && y >= 0 && x < p.width && y < p.height;
}

/** Centre of voxel `v` seen on a plane: [slice index, x, y] of the pixel centre. */
export function voxelToImage(p: PlaneGeom, shape: Vec3, v: Vec3): [number, number, number] {
  const K = shape[0];
  switch (p.name) {
    case "axial":
      return [v[0], v[2] + 0.5, v[1] + 0.5];
    case "coronal":
      return [v[1], v[2] + 0.5, K - v[0] - 0.5];
    case "sagittal":
      return [v[2], v[1] + 0.5, K - v[0] - 0.5];
  }
}
