/**
 * Drives the volume's arrival, in one of two ways:
 *
 * - **fetch** (the header carries `chunk_url`): the browser GETs the plan's chunks from the
 *   server's volume route itself, {@link IN_FLIGHT} at a time in plan order (the slice on screen
 *   first), decoding each as it arrives; a failed fetch is retried with backoff. No message goes
 *   to Python. A refusal (4xx) falls back to the rerun path for what is still missing.
 * - **rerun**: takes each chunk Python sends in a frame, asks for the next range of the plan as
 *   soon as one arrives (so Python compresses the next while this one is decoded), says when it
 *   has everything, and re-asks if an answer never comes.
 */
import { parseFrame } from "./protocol";
import type { ChunkInfo, Range } from "./protocol";
import type { Channel } from "./channel";
import type { VolumeStore } from "./volume";

const RETRY_MS = 8000;
/** chunks fetched at once in fetch mode */
export const IN_FLIGHT = 3;
const BACKOFF_MS = [250, 500, 1000, 2000, 4000, 8000];
/** tries of a chunk whose grant is unknown (404) before falling back to the rerun path */
const GRANT_TRIES = 5;

type Entry = { range: Range; asked: number; arrived: number; decoded: number; bytes: number };

export class Streamer {
  private readonly status = new Map<string, "arriving" | "done">();
  private doneSent = false;
  private retryTimer = 0;
  private disposed = false;
  private inFlight = 0;
  private readonly tries = new Map<string, number>();
  /** chunk URLs the server refused (4xx): not tried again */
  private readonly refused = new Set<string>();
  /** fetch mode: a failed chunk is not asked again before this time (ms) */
  private readonly notBefore = new Map<string, number>();
  /** ms since navigation start: first chunk decoded, whole volume decoded */
  firstAt = 0;
  completeAt = 0;
  /** per chunk: range, ms asked, arrived, decoded (since navigation start), compressed bytes */
  readonly timeline: Entry[] = [];
  /** chunk URLs fetched (fetch mode), for tests and the benchmark */
  readonly fetched: string[] = [];
  private asked = new Map<string, number>();

  constructor(
    private readonly vol: VolumeStore,
    private readonly channel: Channel,
    private readonly onLoaded: (range: Range) => void,
    private readonly onError: (e: unknown) => void,
    /** base URL of the volume route's grant (`spine-volume/{grant}/`), or null: rerun path */
    private url: string | null = null,
  ) {}

  /** How the chunks travel now. */
  get mode(): "fetch" | "rerun" {
    return this.url ? "fetch" : "rerun";
  }

  /** The page's run brought the volume's chunk URL (a new grant after a reconnect to another
   * replica, or none): fetch what is still missing from there. */
  retarget(url: string | null | undefined): void {
    const next = url ?? null;
    if (!next || next === this.url || this.refused.has(next) || this.vol.complete) return;
    this.url = next;
    this.channel.need = null; // the route brings what was asked of Python
    this.tries.clear();
    this.notBefore.clear();
    this.pump();
  }

  /** A frame brought `chunk`: decode it unless it is known already, and ask for the next. */
  take(chunk: ChunkInfo, payload: Uint8Array): void {
    const key = `${chunk.range[0]}:${chunk.range[1]}`;
    if (this.status.has(key) || this.vol.isLoaded(chunk.range)) {
      this.pump();
      return;
    }
    const need = this.channel.need;
    if (need && need[0] === chunk.range[0] && need[1] === chunk.range[1]) this.channel.need = null;
    this.decode(chunk, payload, this.asked.get(key) ?? 0);
  }

  private decode(chunk: ChunkInfo, payload: Uint8Array, asked: number): void {
    const key = `${chunk.range[0]}:${chunk.range[1]}`;
    this.status.set(key, "arriving");
    const entry: Entry = { range: chunk.range, asked, arrived: performance.now(), decoded: 0,
                           bytes: chunk.parts.reduce((n, p) => n + p.length, 0) };
    this.timeline.push(entry);
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

  /** Start what is missing next: fetches (fetch mode), or one request to Python. */
  pump(): void {
    if (this.disposed) return;
    if (this.url) {
      this.pumpFetch();
      return;
    }
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

  private pumpFetch(): void {
    for (const r of this.vol.plan) {
      if (this.inFlight >= IN_FLIGHT) return;
      const key = `${r[0]}:${r[1]}`;
      if (this.status.has(key) || this.vol.isLoaded(r)) continue;
      if ((this.notBefore.get(key) ?? 0) > performance.now()) continue;
      this.status.set(key, "arriving");
      this.inFlight++;
      void this.fetchChunk(r, key);
    }
  }

  private async fetchChunk(r: Range, key: string): Promise<void> {
    const href = new URL(`${this.url}${r[0]}-${r[1]}`, document.baseURI).href;
    const asked = performance.now();
    let retry = true;
    let status = 0; // 0: no answer (a network error)
    let message = "";
    try {
      const resp = await fetch(href, { credentials: "same-origin" });
      if (resp.ok) {
        const frame = parseFrame(new Uint8Array(await resp.arrayBuffer()));
        const chunk = frame.header.chunk;
        if (!chunk || chunk.range[0] !== r[0] || chunk.range[1] !== r[1]) throw new Error("the server sent another chunk");
        this.fetched.push(href);
        this.inFlight--;
        if (this.disposed) return;
        this.decode(chunk, frame.payload, asked);
        return;
      }
      status = resp.status;
      message = `${resp.status} ${(await resp.text()).slice(0, 200)}`;
      // a proxy's 502/503/504 (a replica is going away) is worth another try, and so is a 404
      // for a while (another replica has the grant once the page has run there); a refusal is not
      retry = resp.status >= 500 || (resp.status === 404 && (this.tries.get(key) ?? 0) < GRANT_TRIES);
    } catch (e) {
      message = (e as Error).message;
    }
    this.inFlight--;
    this.status.delete(key);
    if (this.disposed) return;
    if (!retry) {
      if (this.url) {
        this.onError(new Error(`volume route refused (${message}); streaming through the page instead`));
        // a grant still unknown after GRANT_TRIES (the page has not run on this replica yet) is
        // worth fetching again once the page's run brings it (retarget); a refusal is not
        if (status !== 404) this.refused.add(this.url);
        this.url = null;
      }
      this.pump();
      return;
    }
    const n = this.tries.get(key) ?? 0;
    const wait = BACKOFF_MS[Math.min(n, BACKOFF_MS.length - 1)];
    this.tries.set(key, n + 1);
    this.notBefore.set(key, performance.now() + wait);
    window.setTimeout(() => this.pump(), wait + 5);
  }

  get fraction(): number {
    return this.vol.loadedCount / this.vol.shape[0];
  }

  dispose(): void {
    this.disposed = true;
    window.clearTimeout(this.retryTimer);
  }
}
