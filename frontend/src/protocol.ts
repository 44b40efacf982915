/**
 * The frames Python sends as the component's `data` (see spine_viewer/transport.py):
 * `"SPV1" | uint32 LE header length | UTF-8 JSON header | payload`.
 */

import type { BoxPost } from "./saver";

export type Vec3 = [number, number, number];
export type PlaneName = "axial" | "sagittal" | "coronal";
export type Range = [number, number];

export interface VolumeHeader {
  format: number;
  id: string;
  /** display shape (slices Inferior→Superior, rows Anterior→Posterior, cols Right→Left) */
  shape: Vec3;
  dtype: "int16";
  spacing: Vec3;
  /** 4×4, display index (slice, row, col) → LPS mm */
  affine: number[][];
  mask: boolean;
  bytes: number;
  plan: Range[];
  /** the volume route's grant (`spine-volume/{grant}/`, relative to the page): fetch the plan's
   * chunks from `{chunk_url}{a}-{b}`; absent or null: they come in frames, one rerun each */
  chunk_url?: string | null;
}

export interface PartInfo {
  kind: "image" | "mask";
  codec: "deflate-shuffle16" | "deflate";
  offset: number;
  length: number;
  raw: number;
}

export interface ChunkInfo {
  range: Range;
  parts: PartInfo[];
}

export type BoxKind = "key" | "interpolated" | "union" | "model" | "other reader" | "other";

export interface BoxSpec {
  id: string;
  version: number;
  /** display axial slice */
  slice: number;
  x0: number;
  y0: number;
  x1: number;
  y1: number;
  kind: BoxKind;
  level: string;
  label: string;
  reader: string;
  colour: string;
  editable: boolean;
}

export interface LabelSpec {
  id: number;
  name: string;
  colour: [number, number, number];
}

export interface Binding {
  action: string;
  keys: string[];
  help: string;
}

export interface ViewSpec {
  layout: "single" | "three";
  plane: PlaneName;
  cursor: Vec3;
  window: [number, number];
  editable: boolean;
  boxes: BoxSpec[];
  labels: LabelSpec[];
  overlay: boolean;
  opacity: number;
  /** display axial region [col0, row0, col1, row1] to zoom to, or null */
  focus: [number, number, number, number] | null;
  /** box labels drawn large */
  large_labels: boolean;
  /** a counter: a new value means "take the cursor", even if it looks like an echo of a commit */
  go_to: number;
  height: number | "fill";
  keymap: Binding[];
  gestures: [string, string][];
  /** unit of lengths and positions: "mm", or "px" for an image whose spacing is unknown */
  length_unit?: string;
  /** unit of the voxel value read-out ("HU" for CT, "" for a radiograph's detector values) */
  value_unit?: string;
  /** the windows keys 1, 2, 3 choose, (width, level) each (CT's or a film's own) */
  presets: [number, number][];
  /** a radiograph: one image shown as "Film", with the letters of its top, bottom, left and
   * right edges ("" where the header gives none); no planes or layouts to choose */
  film?: FilmSpec | null;
  /** where box events go without a rerun (saver.ts); absent: to Python as component values */
  box_post?: BoxPost | null;
}

export interface FilmSpec {
  letters: [string, string, string, string];
}

export interface FrameHeader {
  volume: VolumeHeader;
  view: ViewSpec;
  ack: { client: string; seq: number };
  chunk: ChunkInfo | null;
}

export interface Frame {
  header: FrameHeader;
  payload: Uint8Array;
}

const MAGIC = [0x53, 0x50, 0x56, 0x31]; // "SPV1"

/** Parse a frame; throws on anything that is not one. */
export function parseFrame(data: unknown): Frame {
  if (!(data instanceof Uint8Array)) throw new Error("viewer data is not bytes");
  for (let i = 0; i < 4; i++) if (data[i] !== MAGIC[i]) throw new Error("viewer data: bad magic");
  const n = new DataView(data.buffer, data.byteOffset, data.byteLength).getUint32(4, true);
  const header = JSON.parse(new TextDecoder().decode(data.subarray(8, 8 + n))) as FrameHeader;
  return { header, payload: data.subarray(8 + n) };
}
