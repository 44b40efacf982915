/**
 * Drives the volume's arrival: takes each chunk Python sends, asks for the next range of the plan
 * as soon as one arrives (so Python compresses the next while this one is decoded), says when it
 * has everything, and re-asks if an answer never comes.
 */
import type { ChunkInfo, Range } from "./protocol";
import type { Channel } from "./channel";
import type { VolumeStore } from "./volume";

const RETRY_MS = 8000;

export class Streamer {
  private readonly status = new Map<string, "arriving" | "done">();
  private doneSent = false;
  private retryTimer = 0;
  /** ms since navigation start: first chunk decoded, whole volume decoded */
  firstAt = 0;
  completeAt = 0;
  /** per chunk: range, ms asked, arrived, decoded (since navigation start), compressed bytes */
  readonly timeline: { range: Range; asked: number; arrived: number; decoded: number; bytes: number }[] = [];
  private asked = new Map<string, number>();

  constructor(
    private readonly vol: VolumeStore,
    private readonly channel: Channel,
    private readonly onLoaded: (range: Range) => void,
    private readonly onError: (e: unknown) => void,
  ) {}

  /** A frame brought `chunk`: decode it unless it is known already, and ask for the next. */
  take(chunk: ChunkInfo, payload: Uint8Array): void {
    const key = `${chunk.range[0]}:${chunk.range[1]}`;
    if (this.status.has(key) || this.vol.isLoaded(chunk.range)) {
      this.pump();
      return;
    }
    this.status.set(key, "arriving");
    const entry = { range: chunk.range, asked: this.asked.get(key) ?? 0, arrived: performance.now(), decoded: 0,
                    bytes: chunk.parts.reduce((n, p) => n + p.length, 0) };
    this.timeline.push(entry);
    const need = this.channel.need;
    if (need && need[0] === chunk.range[0] && need[1] === chunk.range[1]) this.channel.need = null;
    this.pump();
    this.vol.ingest(chunk, payload).then(
      (range) => {
        this.status.set(key, "done");
        entry.decoded = performance.now();
        if (!this.firstAt) this.firstAt = performance.now();
        if (this.vol.complete && !this.completeAt) this.completeAt = performance.now();
        this.onLoaded(range);
        this.pump();
      },
      (e) => {
        this.status.delete(key);
        this.onError(e);
      },
    );
  }

  /** Ask for the next missing range (one request at a time), or say that nothing is missing. */
  pump(): void {
    window.clearTimeout(this.retryTimer);
    if (this.channel.need) {
      const wait = RETRY_MS - (performance.now() - this.channel.needSince);
      if (wait <= 0) this.channel.request(this.channel.need);
      this.retryTimer = window.setTimeout(() => this.pump(), Math.max(wait, 50));
      return;
    }
    for (const r of this.vol.plan) {
      if (!this.status.has(`${r[0]}:${r[1]}`) && !this.vol.isLoaded(r)) {
        this.asked.set(`${r[0]}:${r[1]}`, performance.now());
        this.channel.request(r);
        this.retryTimer = window.setTimeout(() => this.pump(), RETRY_MS + 50);
        return;
      }
    }
    if (!this.doneSent) {
      this.doneSent = true;
      this.channel.request(null);
    }
  }

  get fraction(): number {
    return this.vol.loadedCount / this.vol.shape[0];
  }

  dispose(): void {
    window.clearTimeout(this.retryTimer);
  }
}
