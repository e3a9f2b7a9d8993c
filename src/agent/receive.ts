// The target's half of a migration (docs/PROTOCOL.md): write the streamed image into the data
// directory, restore it held (stopped), and let it run only on the source's commit. Every other end
// (abort, a broken or silent connection, a bad frame, a full disk, a failed restore) kills what was
// restored and deletes what was received.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { readFileSync, rmSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { FerryError, isFerryError } from '../errors.js';
import { decodePageIndex } from '../image/page-index.js';
import { DirSink, type PartSummary, type PartWriter } from '../image/sink.js';
import {
  decodeLayerNotice,
  eventLine,
  FRAME,
  readFrames,
  decodePlacement,
  readPairs,
  type LayerNotice,
  type Migration,
  type TargetEvent,
} from '../migrate/wire.js';
import { Prefill } from '../memory/prefill.js';
import { readImage, type Image } from '../read-image.js';
import { roundRuns } from '../memory/lazy.js';
import { restore, type RestoreResult } from '../restore.js';
import { openImageManifest } from '../state/image.js';
import { macMatches, newNonce, streamKey } from '../image/mac.js';
import type { Caller } from './auth.js';
import { decodeJobHeader, JOB_HEADER, type JobInfo } from '../cluster/job.js';
import { checkLeastPrivilege } from './privilege.js';
import type { Registry } from './registry.js';

export const MIGRATION_ID = /^[A-Za-z0-9-]{8,64}$/;
/** Frames written to disk at once while the next ones are read (each a piece as it arrived). */
const WRITES_IN_FLIGHT = 4;
/** How long a finished migration's record stays (GET, a commit asked again), then goes. */
const RECORD_TTL_MS = 10 * 60_000;

export class Migrations {
  private readonly all = new Map<string, Migration>();
  /** The uid each migration's caller is bound to (undefined: any). */
  private readonly owners = new Map<string, number | undefined>();
  /** Migrations of processes that were stopped at the source: they stay so. */
  private readonly stopped = new Set<string>();
  /** A held migration whose connection broke waits this long for a commit another way. */
  private readonly pendingCommit = new Map<string, { timer: NodeJS.Timeout; commit: () => void }>();

  constructor(
    private readonly dataDir: string,
    private readonly registry: Registry,
    private readonly graceMs: number,
    private readonly warn: (message: string) => void = () => {},
  ) {}

  get(id: string): Migration | undefined {
    return this.all.get(id);
  }

  list(): Migration[] {
    return [...this.all.values()];
  }

  /** The source says again that the process may run (its connection broke after the commit). */
  commit(id: string): Migration | undefined {
    this.pendingCommit.get(id)?.commit();
    return this.all.get(id);
  }

  /** Streams under way, by the caller's token. */
  private readonly streams = new Map<string, number>();

  /** Streams under way: in all, and those of the token `tokenId`. */
  streaming(tokenId: string): { all: number; token: number } {
    let all = 0;
    for (const n of this.streams.values()) all += n;
    return { all, token: this.streams.get(tokenId) ?? 0 };
  }

  /** Whether `caller` may see or commit migration `m`: one of its uid's, for a token bound to one. */
  owns(caller: Caller, m: Migration): boolean {
    return caller.uid === undefined || this.owners.get(m.id) === caller.uid;
  }

  /** Serve POST /v1/migrations: the whole exchange of one migration. */
  async receive(id: string, caller: Caller, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const header = req.headers[JOB_HEADER];
    // A job's past comes with it; a malformed one is refused before anything is received.
    const job = typeof header === 'string' ? decodeJobHeader(header) : undefined;
    const m: Migration = { id, state: 'receiving', bytes: 0, started: Date.now() };
    this.all.set(id, m);
    this.owners.set(id, caller.uid);
    this.streams.set(caller.tokenId, (this.streams.get(caller.tokenId) ?? 0) + 1);
    try {
      await this.exchange(m, caller, req, res, job);
    } finally {
      const left = (this.streams.get(caller.tokenId) ?? 1) - 1;
      if (left > 0) this.streams.set(caller.tokenId, left);
      else this.streams.delete(caller.tokenId);
      // A finished migration's record is kept a while (a source asking again), then goes.
      setTimeout(() => this.forget(id), RECORD_TTL_MS).unref();
    }
  }

  private forget(id: string): void {
    const m = this.all.get(id);
    if (!m || this.pendingCommit.has(id) || m.state === 'receiving' || m.state === 'restoring') return;
    this.all.delete(id);
    this.owners.delete(id);
  }

  private async exchange(
    m: Migration,
    caller: Caller,
    req: IncomingMessage,
    res: ServerResponse,
    job: JobInfo | undefined,
  ): Promise<void> {
    const id = m.id;
    const nonce = newNonce();
    const dir = join(this.dataDir, 'migrations', id);
    const sink = new DirSink(dir);
    const parts = new Map<string, PartWriter>();
    /** Parts closed so far, with the sums taken as they arrived. */
    const closed = new Map<string, PartSummary>();
    const close = async (name: string): Promise<void> => {
      const part = parts.get(name);
      if (!part) throw new FerryError('FERRY_CONNECTION', `the stream names a part it never sent: ${name}`);
      parts.delete(name);
      closed.set(name, await part.close());
    };
    // The stub the process will be restored in, started now while the source freezes and reads
    // it (its PID taken as the source names it, when free here): not within the downtime.
    let prefill = this.earlyStub(req.headers['ferry-pid']);
    // Hybrid: the rounds' pages come in as the process runs, from here or the source, as its faults
    // ask: staged, they would have to be dropped wherever the process wrote since, while it is
    // frozen. The other modes' rounds (and frozen copy) go into the process as they come.
    const staging = req.headers['ferry-mode'] !== 'hybrid';
    /** Layers begun (ROUND) and staged, not ended by LAYER: the frozen copy's, at the manifest. */
    const begun = new Map<string, LayerNotice>();
    /** Writes of received frames still going on, oldest first. */
    const writes: Promise<void>[] = [];
    res.writeHead(200, {
      'content-type': 'application/x-ndjson',
      'cache-control': 'no-store',
      'ferry-nonce': nonce,
    });
    res.flushHeaders();
    const send = (event: TargetEvent): void => {
      if (!res.writableEnded && !res.destroyed) res.write(eventLine(event));
    };
    let committed = false;
    /** The manifest, once in; acted on at its seal. */
    let text: string | undefined;
    /** Post-copy: the pages the process gets as it runs, from the source. */
    let lazy: RestoreResult['lazy'];
    /** The image received, once restored (hybrid: its pre-copy rounds serve the pages kept). */
    let image: Image | undefined;
    try {
      for await (const frame of readFrames(req)) {
        if (frame.type === FRAME.PART) {
          if (m.state !== 'receiving')
            throw new FerryError('FERRY_CONNECTION', 'image data after the manifest');
          if (closed.has(frame.name))
            throw new FerryError('FERRY_CONNECTION', `part ${frame.name} after its end`);
          let part = parts.get(frame.name);
          if (!part) parts.set(frame.name, (part = sink.openPart(frame.name)));
          // The next frames are read while this one is written (a part's close() waits for all).
          const written = part.write(frame.payload);
          written.catch(() => {}); // awaited below or by the part's close()
          writes.push(written);
          if (writes.length > WRITES_IN_FLIGHT) await writes.shift();
          m.bytes += frame.payload.length;
        } else if (frame.type === FRAME.ROUND) {
          if (m.state !== 'receiving') throw new FerryError('FERRY_CONNECTION', 'a round after the manifest');
          const notice = decodeLayerNotice(frame.payload);
          if (parts.has(notice.layer.pages) || closed.has(notice.layer.pages))
            throw new FerryError('FERRY_CONNECTION', `round part ${notice.layer.pages} begun twice`);
          if (staging) {
            begun.set(notice.layer.pages, notice);
            prefill = this.beginRound(prefill, notice);
            if (prefill)
              parts.set(
                notice.layer.pages,
                prefill.placePart(notice.layer.pages, sink.openPart(notice.layer.pages)),
              );
          }
        } else if (frame.type === FRAME.PLACE) {
          if (m.state !== 'receiving')
            throw new FerryError('FERRY_CONNECTION', 'a placement after the manifest');
          // Parts not placed (the prefill gave up, or hybrid) are written whole.
          parts.get(frame.name)?.place?.(decodePlacement(frame.payload));
        } else if (frame.type === FRAME.LAYER) {
          if (m.state !== 'receiving') throw new FerryError('FERRY_CONNECTION', 'a layer after the manifest');
          const notice = decodeLayerNotice(frame.payload);
          begun.delete(notice.layer.pages);
          await close(notice.layer.pages);
          await close(notice.layer.index);
          if (staging) prefill = this.prefillLayer(prefill, notice, sink);
          send({ event: 'layered', layer: notice.layer.pages, prefilled: staging && prefill !== undefined });
        } else if (frame.type === FRAME.MANIFEST) {
          if (m.state !== 'receiving' || text !== undefined)
            throw new FerryError('FERRY_CONNECTION', 'a second manifest');
          text = frame.payload.toString('utf8');
        } else if (frame.type === FRAME.SEAL) {
          if (m.state !== 'receiving' || text === undefined)
            throw new FerryError('FERRY_CONNECTION', 'a seal without a manifest before it');
          // Sealed for this migration by the holder of the caller's token: not one sent again.
          if (!macMatches(streamKey(caller.token, id, nonce), text, frame.payload.toString('latin1')))
            throw new FerryError(
              'FERRY_AUTH',
              `the stream of migration ${id} is not sealed for it: sent again from another, or forged`,
            );
          const manifest = openImageManifest(text, `migration ${id}`);
          const state = manifest.state;
          checkLeastPrivilege(caller, manifest);
          await Promise.all([...parts.keys()].map(close));
          // The frozen copy's pages placed as they came: the rest of them go in now.
          for (const notice of begun.values()) prefill = this.prefillLayer(prefill, notice, sink);
          m.state = 'restoring';
          // Each part was hashed as it arrived: the manifest is checked against those sums. The
          // image is restored where it was received, never made whole on disk: it goes once the
          // process runs (or dies).
          image = await readImage(sink.partial, Object.fromEntries(closed), manifest);
          // The image goes once the process runs (or dies): its pages are its to reuse meanwhile.
          const result = await restore(image, {
            stopped: true,
            tty: 'null',
            prefill,
            consumePages: true,
            asUser: caller.uid !== undefined && caller.uid !== 0,
            remotePages: {
              request: (addr, len) => send({ event: 'fault', addr: addr.toString(16), len }),
            },
          });
          lazy = result.lazy;
          m.pid = result.pid;
          m.state = 'held';
          if (manifest.tree[0]?.stopped) this.stopped.add(id);
          this.registry.add({
            pid: result.pid,
            originalPid: state.pid,
            uid: state.creds.uids[0]!,
            command: state.command,
            origin: 'migration',
            migrationId: id,
            state: 'held',
            since: Date.now(),
            ...(job ? { job: { ...job, arrivedAt: Date.now() } } : {}),
          });
          send({ event: 'restored', pid: result.pid, restoreMs: result.restoreMs, stages: result.stages });
        } else if (frame.type === FRAME.COMMIT) {
          if (m.state !== 'held')
            throw new FerryError('FERRY_CONNECTION', 'a commit before the process was restored');
          this.letRun(m, lazy !== undefined);
          send({ event: 'running', pid: m.pid! });
          if (lazy) continue; // post-copy: its pages come now
          committed = true;
          res.end(); // the source ends its stream in turn
          await rm(dir, { recursive: true, force: true }); // after the answer: it takes a while
        } else if (frame.type === FRAME.PAGES) {
          if (m.state !== 'copying' || frame.payload.length < 8)
            throw new FerryError('FERRY_CONNECTION', 'pages out of place: not a post-copy running here');
          lazy!.server.arrive(frame.payload.readBigUInt64LE(0), frame.payload.subarray(8));
          m.bytes += frame.payload.length - 8;
        } else if (frame.type === FRAME.KEEP) {
          if (m.state !== 'copying' || frame.payload.length % 16 !== 0)
            throw new FerryError('FERRY_CONNECTION', 'kept pages out of place: not a hybrid running here');
          const spans = readPairs(frame.payload).map(([start, end]) => ({ start, end }));
          if (spans.some((sp, i) => sp.start >= sp.end || (i > 0 && sp.start < spans[i - 1]!.end)))
            throw new FerryError('FERRY_CONNECTION', 'kept pages out of order');
          const { runs, data } = roundRuns(image!.processes[0]!, spans);
          lazy!.server.keep(runs, data);
        } else if (frame.type === FRAME.PAGES_END) {
          if (m.state !== 'copying') throw new FerryError('FERRY_CONNECTION', 'an end of pages out of place');
          lazy!.server.end();
          const totals = await lazy!.done;
          m.state = 'running';
          committed = true;
          send({ event: 'complete', pages: totals.filledPages });
          res.end();
          await rm(dir, { recursive: true, force: true });
        } else {
          throw new FerryError('FERRY_MIGRATION_FAILED', 'the source aborted the migration');
        }
      }
      if (!committed)
        throw new FerryError(
          'FERRY_CONNECTION',
          m.state === 'copying'
            ? 'the source closed the stream before every page came'
            : 'the source closed the stream before the commit',
        );
    } catch (err) {
      prefill?.abort();
      if (committed) return;
      const message = err instanceof Error ? err.message : String(err);
      send({ event: 'error', code: isFerryError(err) ? err.code : 'FERRY_INTERNAL', message });
      res.end();
      await sink.abort(); // closes the parts still open; closed ones must not be closed again
      if (m.state === 'held' && !lazy && !isFerryError(err, 'FERRY_MIGRATION_FAILED')) {
        // The connection broke with the process held: the source may have sent the commit. It
        // has graceMs to say so another way; then the held process goes.
        await this.awaitCommit(m, dir, message);
      } else {
        // Post-copy: the process cannot go on without the pages it lacks (its own would be zeros).
        // The source holds it still, as it was when frozen, and runs it on once it learns this one
        // is gone.
        this.abort(m, dir, message);
      }
      // Its page service ends once the process is killed, never before (the pages it lacks would
      // be served as zeros).
      lazy?.server.end();
      await lazy?.done.catch(() => {});
    }
  }

  /** A stub for the process the stream will bring (header `Ferry-Pid`), or none if it cannot be had. */
  private earlyStub(header: string | string[] | undefined): Prefill | undefined {
    if (typeof header !== 'string' || !/^[1-9]\d{0,6}$/.test(header) || Number(header) > 2 ** 22)
      return undefined;
    try {
      return Prefill.start(Number(header));
    } catch (err) {
      this.warn(`could not start a stub ahead of the stream, the restore will: ${String(err)}`);
      return undefined;
    }
  }

  /**
   * A pre-copy round begins: make room in the prefill's stub for its pages, which go in as they
   * come (memory/prefill.ts).
   */
  private beginRound(prefill: Prefill | undefined, notice: LayerNotice): Prefill | undefined {
    return this.prefillStep(prefill, notice, (p) => p.beginRound(notice.vmas));
  }

  /** A pre-copy round's layer is in: its pages not placed yet go into the prefill's stub. */
  private prefillLayer(
    prefill: Prefill | undefined,
    notice: LayerNotice,
    sink: DirSink,
  ): Prefill | undefined {
    return this.prefillStep(prefill, notice, (p) => {
      const index = decodePageIndex(readFileSync(sink.partPath(notice.layer.index)));
      p.addLayer(notice.layer.pages, sink.partPath(notice.layer.pages), index, notice.vmas);
    });
  }

  /**
   * Take one step of restoring from the pre-copy rounds (its stub started first if need be). Only an
   * optimization while the stub holds no pages alone: if it fails, a warning, and the restore at the
   * manifest starts afresh. Once pages were placed there alone, its failure fails the migration.
   */
  private prefillStep(
    prefill: Prefill | undefined,
    notice: LayerNotice,
    step: (p: Prefill) => void,
  ): Prefill | undefined {
    let p = prefill;
    try {
      p ??= Prefill.start(notice.pid);
      step(p);
      return p;
    } catch (err) {
      p?.abort();
      const why = `prefill from ${notice.layer.pages} failed`;
      if (p?.holds) throw new FerryError('FERRY_RESTORE_FAILED', `${why}: ${String(err)}`, { cause: err });
      this.warn(`${why}, the restore will do it all: ${String(err)}`);
      return undefined;
    }
  }

  /** Let the held process run; `lazy` (post-copy): its pages come now, and it is `copying` until then. */
  private letRun(m: Migration, lazy = false): void {
    this.registry.run(m.pid!, this.stopped.delete(m.id), lazy);
    m.state = lazy ? 'copying' : 'running';
  }

  private abort(m: Migration, dir: string, reason: string): void {
    this.stopped.delete(m.id);
    if (m.pid !== undefined && (m.state === 'held' || m.state === 'copying')) this.registry.kill(m.pid);
    m.state = 'aborted';
    m.reason = reason;
    rmSync(dir, { recursive: true, force: true });
  }

  private awaitCommit(m: Migration, dir: string, reason: string): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.pendingCommit.delete(m.id);
        this.abort(m, dir, `${reason}; no commit came within ${this.graceMs} ms`);
        resolve();
      }, this.graceMs);
      this.pendingCommit.set(m.id, {
        timer,
        commit: () => {
          clearTimeout(timer);
          this.pendingCommit.delete(m.id);
          this.letRun(m);
          void rm(dir, { recursive: true, force: true }).then(resolve, resolve);
        },
      });
    });
  }

  /** Abort whatever is still held (the agent is shutting down). */
  close(): void {
    for (const [id, pending] of this.pendingCommit) {
      clearTimeout(pending.timer);
      const m = this.all.get(id)!;
      this.abort(m, join(this.dataDir, 'migrations', id), 'the agent stopped');
    }
    this.pendingCommit.clear();
  }
}
