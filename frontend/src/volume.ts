/**
 * The volume in the browser: one Int16Array (display order, slice-major) and an optional
 * Uint8Array of labels, filled chunk by chunk as they stream in.
 */
import type { ChunkInfo, Range, Vec3, VolumeHeader } from "./protocol";

/** Inflate a zlib stream (RFC 1950) of known raw size with the browser's DecompressionStream. */
export async function inflate(src: Uint8Array, rawBytes: number): Promise<Uint8Array> {
  const out = new Uint8Array(rawBytes);
  const ds = new DecompressionStream("deflate");
  const writer = ds.writable.getWriter();
  writer.write(src as Uint8Array<ArrayBuffer>).catch(() => undefined);
  writer.close().catch(() => undefined);
  const reader = ds.readable.getReader();
  let off = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    if (off + value.length > rawBytes) throw new Error("chunk inflates past its declared size");
    out.set(value, off);
    off += value.length;
  }
  if (off !== rawBytes) throw new Error(`chunk inflated to ${off} bytes, expected ${rawBytes}`);
  return out;
}

/** Low-byte plane then high-byte plane → int16 values written at `dst[offset…]`. */
export function unshuffle16(raw: Uint8Array, dst: Int16Array, offset: number): void {
  const n = raw.length >> 1;
  const lo = raw.subarray(0, n);
  const hi = raw.subarray(n);
  for (let i = 0; i < n; i++) dst[offset + i] = lo[i] | (hi[i] << 8);
}

export class VolumeStore {
  readonly id: string;
  readonly shape: Vec3;
  readonly spacing: Vec3;
  readonly affine: number[][];
  readonly image: Int16Array;
  readonly mask: Uint8Array | null;
  /** 1 per display axial slice once its voxels (and labels) are in */
  readonly loaded: Uint8Array;
  readonly plan: Range[];
  loadedCount = 0;
  /** slices whose labels are in, per label id: presence is computed lazily per slice */
  private readonly sliceSize: number;

  constructor(h: VolumeHeader) {
    this.id = h.id;
    this.shape = [...h.shape] as Vec3;
    this.spacing = [...h.spacing] as Vec3;
    this.affine = h.affine.map((r) => [...r]);
    this.sliceSize = h.shape[1] * h.shape[2];
    const n = h.shape[0] * this.sliceSize;
    this.image = new Int16Array(n);
    this.mask = h.mask ? new Uint8Array(n) : null;
    this.loaded = new Uint8Array(h.shape[0]);
    this.plan = h.plan.map((r) => [r[0], r[1]] as Range);
  }

  get complete(): boolean {
    return this.loadedCount === this.shape[0];
  }

  isLoaded(range: Range): boolean {
    for (let k = range[0]; k < range[1]; k++) if (!this.loaded[k]) return false;
    return true;
  }

  /** Decode one chunk into place; resolves with its slice range once painted-ready. */
  async ingest(chunk: ChunkInfo, payload: Uint8Array): Promise<Range> {
    const [a, b] = chunk.range;
    if (!(0 <= a && a < b && b <= this.shape[0])) throw new Error(`bad chunk range ${a}..${b}`);
    const base = a * this.sliceSize;
    const count = (b - a) * this.sliceSize;
    const jobs = chunk.parts.map(async (part) => {
      const src = payload.subarray(part.offset, part.offset + part.length);
      if (part.kind === "image") {
        if (part.raw !== 2 * count) throw new Error("image part of the wrong size");
        const raw = await inflate(src, part.raw);
        unshuffle16(raw, this.image, base);
      } else if (part.kind === "mask" && this.mask) {
        if (part.raw !== count) throw new Error("mask part of the wrong size");
        const raw = await inflate(src, part.raw);
        this.mask.set(raw, base);
      }
    });
    await Promise.all(jobs);
    for (let k = a; k < b; k++) {
      if (!this.loaded[k]) {
        this.loaded[k] = 1;
        this.loadedCount++;
      }
    }
    return [a, b];
  }

  /** LPS mm of a display voxel index (fractional allowed). */
  toLps(k: number, r: number, c: number): Vec3 {
    const A = this.affine;
    return [0, 1, 2].map((i) => A[i][0] * k + A[i][1] * r + A[i][2] * c + A[i][3]) as Vec3;
  }

  value(k: number, r: number, c: number): number {
    return this.image[(k * this.shape[1] + r) * this.shape[2] + c];
  }

  label(k: number, r: number, c: number): number {
    return this.mask ? this.mask[(k * this.shape[1] + r) * this.shape[2] + c] : 0;
  }
}
