/**
 * Box events straight to the server's box route (`POST spine-box-events`), without a page rerun.
 *
 * Used when the page passes `box_post` ({url, study, fracture, base_study_version}). Events are
 * posted one at a time, in order: a change of a box still being created waits for its id, and a
 * box this tab changed twice is sent with the version the first save returned. Each answer brings
 * the reader's boxes of the study (key and interpolated), the study version and a line to show;
 * when it says the page must follow (a level newly boxed, a level to ask about, a conflict or any
 * refusal), the host asks the page to rerun. A create carries the new box's `client_key`, so
 * posting it again after the network dropped the reply returns the box the first post saved
 * (the server keeps one box per key) instead of making a second one.
 */
import type { BoxEvent } from "./boxes";
import type { BoxSpec } from "./protocol";

export interface BoxPost {
  url: string;
  study: number;
  fracture: string | null;
  base_study_version: number | null;
}

export interface SaveReply {
  boxes: BoxSpec[];
  study_version: number;
  ask_levels: string[];
  off_vertebra: boolean;
  message: string;
  refresh: boolean;
  box_id: number | null;
  box_version: number | null;
}

/** An event and the seq its local edit was recorded under (to clear exactly that edit). */
export interface Queued {
  ev: BoxEvent;
  seq: number;
}

export interface SaverHost {
  saved(q: Queued, sentId: string, reply: SaveReply): void;
  failed(q: Queued, message: string, dropped: Queued[]): void;
  saving(text: string): void;
}

/**
 * Waits before posting again when no app answered: the network failed, or the proxy said 502/503/504
 * without the route's JSON (a replica was killed: the proxy sends the next try to another one).
 */
const RETRY_MS = [250, 500, 1000, 2000, 4000];

const sleep = (ms: number) => new Promise<void>((done) => window.setTimeout(done, ms));

/** A proxy's answer for an app that did not answer (the route itself always answers JSON). */
function noApp(r: Response): boolean {
  return [502, 503, 504].includes(r.status)
    && !(r.headers.get("content-type") ?? "").includes("application/json");
}

/** Seqs of events posted here start above any seq Python acknowledges (the outbox's). */
export const HTTP_SEQ_BASE = 1e12;

export class BoxSaver {
  post: BoxPost | null = null;
  studyVersion: number | null = null;
  private pageVersion: number | null = null;
  private queue: Queued[] = [];
  private busy = false;
  private n = 0;
  /** temporary "new-…" id → the saved box's id */
  private ids = new Map<string, string>();
  /** box id → versions this tab's own saves moved it through (old → new) */
  private bumps = new Map<string, Map<number, number>>();

  constructor(private readonly host: SaverHost) {}

  /** The page's settings of this run; its study version counts only when the page changed it. */
  configure(post: BoxPost | null | undefined): void {
    this.post = post ?? null;
    const v = post?.base_study_version ?? null;
    if (v !== this.pageVersion) {
      this.pageVersion = v;
      this.studyVersion = v;
    }
  }

  nextSeq(): number {
    return HTTP_SEQ_BASE + this.n + 1;
  }

  send(ev: BoxEvent): void {
    this.n += 1;
    this.queue.push({ ev, seq: HTTP_SEQ_BASE + this.n });
    void this.pump();
  }

  get pending(): number {
    return this.queue.length + (this.busy ? 1 : 0);
  }

  private resolved(ev: BoxEvent): { id: string; base: number | null } {
    const id = this.ids.get(ev.id) ?? ev.id;
    let base = ev.base_version;
    const bumps = this.bumps.get(id);
    if (ev.type !== "created" && bumps) {
      if (ev.id !== id) base = bumps.get(0) ?? base; // a change of a box this tab just created
      for (let i = 0; i < 100 && base !== null && bumps.has(base); i++) base = bumps.get(base)!;
    }
    return { id, base };
  }

  private async pump(): Promise<void> {
    if (this.busy || !this.post) return;
    const q = this.queue.shift();
    if (!q) return;
    this.busy = true;
    const post = this.post;
    const { id, base } = this.resolved(q.ev);
    const ev = q.ev;
    this.host.saving("saving…");
    let message = "";
    const body = JSON.stringify({
      study: post.study, type: ev.type, id, base_version: ev.type === "created" ? null : base,
      slice: ev.slice, x0: ev.x0, y0: ev.y0, width: ev.x1 - ev.x0, height: ev.y1 - ev.y0,
      fracture: post.fracture, base_study_version: this.studyVersion,
      // the same key on every retry below: a create whose reply was lost returns the saved box
      client_key: ev.type === "created" ? (ev.client_key ?? ev.id) : null,
    });
    try {
      const r = await this.fetchRetrying(new URL(post.url, document.baseURI), body);
      let answer: unknown = null;
      try {
        answer = await r.json();
      } catch {
        answer = null;
      }
      const said = (answer as { message?: unknown } | null)?.message;
      message = typeof said === "string" ? said : `Not saved: the server answered ${r.status}`;
      if (r.ok && answer) {
        const reply = answer as SaveReply;
        if (reply.box_id !== null && reply.box_version !== null) {
          const saved = String(reply.box_id);
          if (ev.type === "created") {
            this.ids.set(ev.id, saved);
            this.bump(saved, 0, reply.box_version);
          } else if (base !== null) this.bump(saved, base, reply.box_version);
        }
        this.studyVersion = reply.study_version;
        this.host.saved(q, id, reply);
        message = "";
      }
    } catch (e) {
      message = `Not saved: the server could not be reached (${(e as Error).message}); reload the page`;
    }
    if (message) {
      const dropped = this.queue; // they built on the refused one: the page reloads the boxes
      this.queue = [];
      this.host.failed(q, message, dropped);
    }
    this.busy = false;
    void this.pump();
  }

  /** POST, again after a pause while no app answers (see RETRY_MS); throws when none ever does. */
  private async fetchRetrying(url: URL, body: string): Promise<Response> {
    for (let attempt = 0; ; attempt++) {
      let r: Response | null = null;
      try {
        r = await fetch(url, { method: "POST", credentials: "same-origin",
                               headers: { "Content-Type": "application/json" }, body });
      } catch (e) {
        if (attempt >= RETRY_MS.length) throw e;
      }
      if (r && (!noApp(r) || attempt >= RETRY_MS.length)) return r;
      this.host.saving("saving… (the server does not answer; trying again)");
      await sleep(RETRY_MS[attempt]);
    }
  }

  private bump(id: string, from: number, to: number): void {
    let m = this.bumps.get(id);
    if (!m) this.bumps.set(id, (m = new Map()));
    m.set(from, to);
  }
}
