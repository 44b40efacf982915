/**
 * Window/level and label colours as lookup tables, and the loops that turn one plane of the
 * int16 volume into RGBA pixels (a Uint32Array view of an ImageData, little-endian ABGR).
 */
import type { LabelSpec } from "./protocol";
import type { PlaneGeom } from "./planes";
import type { VolumeStore } from "./volume";

const OFFSET = 32768;
const OPAQUE = 0xff000000;
/** colour of slices not streamed in yet */
export const PENDING = 0xff2a2420;

function rgba(r: number, g: number, b: number): number {
  return (OPAQUE | (b << 16) | (g << 8) | r) >>> 0;
}

export class Luts {
  /** gray level (0..255) of each int16 value + 32768 */
  readonly gray = new Uint8Array(65536);
  /** opaque gray RGBA of each int16 value + 32768 */
  readonly rgba = new Uint32Array(65536);
  /** (label << 8 | gray) → RGBA; gray for hidden labels */
  readonly blend = new Uint32Array(65536);
  width = 0;
  level = 0;

  setWindow(width: number, level: number): void {
    this.width = width;
    this.level = level;
    const lo = level - width / 2;
    const scale = 255 / Math.max(1, width);
    for (let i = 0; i < 65536; i++) {
      let g = Math.round((i - OFFSET - lo) * scale);
      g = g < 0 ? 0 : g > 255 ? 255 : g;
      this.gray[i] = g;
      this.rgba[i] = rgba(g, g, g);
    }
  }

  /** Colour table of the labels: `visible[id]` and one opacity for all. */
  setLabels(labels: LabelSpec[], visible: Uint8Array, opacity: number): void {
    const colour = new Map(labels.map((l) => [l.id, l.colour]));
    for (let m = 0; m < 256; m++) {
      const c = m > 0 && visible[m] ? colour.get(m) ?? [255, 255, 0] : null;
      for (let g = 0; g < 256; g++) {
        this.blend[(m << 8) | g] = c
          ? rgba(
              Math.round(g + (c[0] - g) * opacity),
              Math.round(g + (c[1] - g) * opacity),
              Math.round(g + (c[2] - g) * opacity),
            )
          : rgba(g, g, g);
      }
    }
  }
}

/** Where each label lies in a sagittal or coronal image: row sum, pixel count, last column. */
export class LabelStats {
  readonly sumY = new Float64Array(256);
  readonly count = new Uint32Array(256);
  readonly maxX = new Int32Array(256);

  reset(): this {
    this.sumY.fill(0);
    this.count.fill(0);
    this.maxX.fill(-1);
    return this;
  }
}

/**
 * Paint slice `index` of plane `p` into `out` (width × height pixels). Labels seen are flagged
 * in `seen` (when given) so the viewer can name the levels in view; `stats` (sagittal and coronal
 * planes) gathers where each label lies, to write its name beside it.
 */
export function rasterPlane(
  vol: VolumeStore, p: PlaneGeom, index: number, luts: Luts, out: Uint32Array,
  withLabels: boolean, seen: Uint8Array | null, stats: LabelStats | null = null,
): void {
  const [K, R, C] = vol.shape;
  const img = vol.image;
  const mask = withLabels ? vol.mask : null;
  const { gray, rgba: lut, blend } = luts;
  const loaded = vol.loaded;
  if (p.name === "axial") {
    const n = R * C;
    if (!loaded[index]) {
      out.fill(PENDING, 0, n);
      return;
    }
    const base = index * n;
    if (!mask) {
      for (let i = 0; i < n; i++) out[i] = lut[img[base + i] + OFFSET];
    } else {
      for (let i = 0; i < n; i++) {
        const m = mask[base + i];
        const v = img[base + i] + OFFSET;
        if (m === 0) out[i] = lut[v];
        else {
          out[i] = blend[(m << 8) | gray[v]];
          if (seen) seen[m] = 1;
        }
      }
    }
    return;
  }
  // coronal: row y is slice k = K-1-y, pixels along c; sagittal: pixels along r (stride C)
  const w = p.width;
  const stride = p.name === "coronal" ? 1 : C;
  for (let y = 0; y < K; y++) {
    const k = K - 1 - y;
    const o = y * w;
    if (!loaded[k]) {
      out.fill(PENDING, o, o + w);
      continue;
    }
    let src: number = p.name === "coronal" ? (k * R + index) * C : k * R * C + index;
    if (!mask) {
      for (let x = 0; x < w; x++, src += stride) out[o + x] = lut[img[src] + OFFSET];
    } else {
      for (let x = 0; x < w; x++, src += stride) {
        const m = mask[src];
        const v = img[src] + OFFSET;
        if (m === 0) {
          out[o + x] = lut[v];
          continue;
        }
        out[o + x] = blend[(m << 8) | gray[v]];
        if (seen) seen[m] = 1;
        if (stats) {
          stats.sumY[m] += y;
          stats.count[m]++;
          if (x > stats.maxX[m]) stats.maxX[m] = x;
        }
      }
    }
  }
}
