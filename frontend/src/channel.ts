/**
 * Everything the viewer tells Python, and nothing more:
 *
 * - trigger `msg` `{client, volume, need, events}`: the slice range it needs next (streaming only)
 *   and the outbox of box events Python has not acknowledged. Each send carries the whole outbox,
 *   so when Streamlit merges two quick triggers into one rerun nothing is lost; Python skips events
 *   it has seen (by `seq`) and acknowledges them in the next frame;
 * - trigger `msg` with `refresh` `{message, kind, ask_levels, n}`: a box saved through the box
 *   route (see saver.ts) changed what the page shows, or was refused: the page reruns;
 * - state `slice` `{plane, index, cursor}`, debounced, once the reader stops stepping.
 */
import type { PlaneName, Range, Vec3 } from "./protocol";
import type { BoxEvent } from "./boxes";

type Setter = (name: string, value: unknown) => void;

export interface OutEvent extends BoxEvent {
  seq: number;
}

export class Channel {
  readonly client = Math.random().toString(36).slice(2, 10);
  seq = 0;
  outbox: OutEvent[] = [];
  volume = "";
  /** the range asked for and not yet received; null: nothing (or streaming finished) */
  need: Range | null = null;
  needSince = 0;
  setState: Setter = () => undefined;
  setTrigger: Setter = () => undefined;
  /** counts of messages sent, for tests and the benchmark */
  sent = 0;
  /** page reruns asked for after box saves */
  refreshes = 0;
  private commitTimer = 0;
  /** recently committed cursors (to recognise Python echoing them back) */
  recentCommits: Vec3[] = [];

  bind(setState: Setter, setTrigger: Setter): void {
    this.setState = setState;
    this.setTrigger = setTrigger;
  }

  private send(extra: Record<string, unknown> = {}): void {
    this.sent++;
    this.setTrigger("msg", { client: this.client, volume: this.volume, need: this.need,
                             events: this.outbox, ...extra });
  }

  request(range: Range | null): void {
    this.need = range;
    this.needSince = performance.now();
    this.send();
  }

  nextSeq(): number {
    return this.seq + 1;
  }

  event(ev: BoxEvent): void {
    this.seq += 1;
    this.outbox.push({ ...ev, seq: this.seq });
    this.send();
  }

  /** Ask the page to rerun after a box save through the box route (see saver.ts). */
  refresh(info: { message: string; kind: string; ask_levels: string[] }): void {
    this.refreshes += 1;
    this.send({ refresh: { ...info, n: this.refreshes } });
  }

  ack(client: string, seq: number): void {
    if (client !== this.client) return;
    this.outbox = this.outbox.filter((e) => e.seq > seq);
  }

  /** Report the slice the reader settled on, `delayMs` after the last call. */
  commitSlice(plane: PlaneName, index: number, cursor: Vec3, delayMs = 400): void {
    window.clearTimeout(this.commitTimer);
    this.commitTimer = window.setTimeout(() => {
      this.recentCommits = [...this.recentCommits.slice(-7), [...cursor] as Vec3];
      this.sent++;
      this.setState("slice", { plane, index, cursor });
    }, delayMs);
  }

  /** Python moved the viewer on purpose (Back/Forward): earlier commits are no echo to skip. */
  forgetCommits(): void {
    this.recentCommits = [];
  }

  dispose(): void {
    window.clearTimeout(this.commitTimer);
  }
}
