// An image sink that streams to a target agent (docs/PROTOCOL.md): parts go out as frames while the
// dump runs; commit() sends the manifest, waits until the target has restored the process (held
// stopped), tells it to run, and resolves only when the target says it runs. Until then every
// failure throws, so the dump lets the source process run on.
import type { Writable } from 'node:stream';
import { FerryError, isFerryError } from '../errors.js';
import { createHasher } from '../image/hash.js';
import { macOf } from '../image/mac.js';
import { faultPoint } from '../sys/fault.js';
import type { LayerRecord } from '../image/manifest.js';
import type { ImageSink, LayerVma, PartWriter } from '../image/sink.js';
import type { PageChannel } from '../memory/postcopy.js';
import {
  encodeLayerNotice,
  encodePlacement,
  FRAME,
  frameHeader,
  MAX_PAYLOAD,
  type FrameType,
  type TargetEvent,
} from './wire.js';

export interface StreamSinkOptions {
  /** How long to wait for each answer of the target. */
  timeoutMs: number;
  /**
   * Called when the connection broke after the commit frame went out, before the target said the
   * process runs: tell the target again, another way, and learn whether it runs (then the source
   * must go) or was aborted.
   */
  commitAgain: () => Promise<'running' | 'aborted'>;
  onBytes?: (sent: number) => void;
  /** Aborting it fails what waits for the target, until COMMIT is sent (not after). */
  signal?: AbortSignal;
  /** The migration's key (streamKey()): the manifest goes out sealed with it (a SEAL frame). */
  sealKey: Buffer;
}

export interface StreamOutcome {
  /** PID of the process on the target. */
  pid: number;
  /** The target's own restore time, and its stages. */
  restoreMs: number;
  restoreStages: Record<string, number>;
}

/** Spans in one KEEP frame (1 MiB). */
const KEEP_SPANS = 65536;

export class StreamSink implements ImageSink {
  /** Bytes handed to the connection so far. */
  bytesSent = 0;
  outcome: StreamOutcome | undefined;
  private failure: Error | undefined;
  private readonly waiters = new Set<(event: TargetEvent | Error) => void>();
  /**
   * Writes whose callback has not come: failed with the connection. Node does not call back writes
   * still queued on a request whose socket was destroyed, and a promise that never settles would
   * let the command end as if it were done.
   */
  private readonly writing = new Set<(err: Error) => void>();
  /** The pages parts a ROUND began (pre-copy rounds', the frozen copy's): each batch goes with its PLACE. */
  private readonly placing = new Set<string>();
  /** Post-copy: hears the target's requests for pages. */
  private onFault: ((addr: bigint, len: number) => void) | undefined;

  constructor(
    readonly location: string,
    private readonly out: Writable,
    events: AsyncIterable<TargetEvent>,
    private readonly options: StreamSinkOptions,
  ) {
    void this.pump(events);
    out.on('error', (err) => this.fail(err));
    out.on('close', () =>
      this.fail(new FerryError('FERRY_CONNECTION', `the connection to ${location} closed`)),
    );
  }

  /** Hand every event to whoever waits; a target error or a closed stream fails what is pending. */
  private async pump(events: AsyncIterable<TargetEvent>): Promise<void> {
    try {
      for await (const event of events) {
        if (event.event === 'error' || event.event === 'aborted') {
          const why = event.event === 'error' ? event.message : event.reason;
          this.fail(new FerryError('FERRY_MIGRATION_FAILED', `the target gave up: ${why}`));
          return;
        }
        if (event.event === 'fault') this.onFault?.(BigInt(`0x${event.addr}`), event.len);
        else for (const waiter of [...this.waiters]) waiter(event);
      }
      this.fail(new FerryError('FERRY_CONNECTION', 'the target closed the connection'));
    } catch (err) {
      this.fail(err instanceof Error ? err : new Error(String(err)));
    }
  }

  private fail(err: Error): void {
    this.failure ??= isFerryError(err)
      ? err
      : new FerryError('FERRY_CONNECTION', `connection to ${this.location} lost: ${err.message}`, {
          cause: err,
        });
    for (const waiter of [...this.waiters]) waiter(this.failure);
    for (const reject of [...this.writing]) reject(this.failure);
    this.writing.clear();
  }

  /**
   * The next event named `name`, or the failure that comes first, or a timeout, or (unless
   * `committed`) the caller's abort.
   */
  private next<E extends TargetEvent['event']>(
    name: E,
    committed = false,
    timeoutMs = this.options.timeoutMs,
  ): Promise<Extract<TargetEvent, { event: E }>> {
    const signal = committed ? undefined : this.options.signal;
    return new Promise((resolve, reject) => {
      if (this.failure) return reject(this.failure);
      if (signal?.aborted) return reject(signal.reason as Error);
      const onAbort = (): void => done(signal!.reason as Error);
      signal?.addEventListener('abort', onAbort, { once: true });
      const timer = setTimeout(
        () =>
          done(
            new FerryError(
              'FERRY_CONNECTION',
              `${this.location} did not answer within ${timeoutMs} ms (waiting for "${name}")`,
            ),
          ),
        timeoutMs,
      );
      const done = (event: TargetEvent | Error): void => {
        if (!(event instanceof Error) && event.event !== name) return;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.waiters.delete(done);
        if (event instanceof Error) reject(event);
        else resolve(event as Extract<TargetEvent, { event: E }>);
      };
      this.waiters.add(done);
    });
  }

  private send(type: FrameType, name: string, data: Uint8Array, lead?: Buffer): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    const writes: Promise<void>[] = [];
    for (let off = 0; off === 0 || off < data.length; off += MAX_PAYLOAD) {
      const payload = data.subarray(off, off + MAX_PAYLOAD);
      this.out.write(frameHeader(type, name, (lead?.length ?? 0) + payload.length));
      if (lead) this.out.write(lead);
      writes.push(
        new Promise((resolve, reject) => {
          this.writing.add(reject);
          this.out.write(payload, (err) => {
            this.writing.delete(reject);
            if (err) reject(this.failure ?? err);
            else resolve();
          });
        }),
      );
      this.bytesSent += payload.length;
    }
    this.options.onBytes?.(this.bytesSent);
    return Promise.all(writes).then(() => undefined);
  }

  /** Post-copy, once the target runs the process: the pages go through this (PAGES frames). */
  pageChannel(): PageChannel {
    return {
      send: (addr, data) => {
        const at = Buffer.alloc(8);
        at.writeBigUInt64LE(addr);
        return this.send(FRAME.PAGES, '', data, at);
      },
      end: () => this.send(FRAME.PAGES_END, '', Buffer.alloc(0)),
      keep: async (spans) => {
        // As many frames as it takes: each span holds by itself.
        for (let i = 0; i < spans.length; i += KEEP_SPANS) {
          const part = spans.slice(i, i + KEEP_SPANS);
          const payload = Buffer.alloc(part.length * 16);
          part.forEach((span, k) => {
            payload.writeBigUInt64LE(span.start, k * 16);
            payload.writeBigUInt64LE(span.end, k * 16 + 8);
          });
          await this.send(FRAME.KEEP, '', payload);
        }
      },
      onRequest: (handler) => (this.onFault = handler),
      // As long as it takes, while the connection lives (its socket's own timeout ends a silent one).
      complete: () => this.next('complete', true, 2 ** 31 - 1).then(() => undefined),
    };
  }

  openPart(name: string): PartWriter {
    const hasher = createHasher();
    let size = 0;
    return {
      // Sent in order with the part's frames, so no wait: the connection's failure fails those.
      place: (runs) => {
        if (this.placing.has(name)) void this.send(FRAME.PLACE, name, encodePlacement(runs)).catch(() => {});
      },
      write: (data) => {
        hasher.update(data);
        size += data.length;
        return this.send(FRAME.PART, name, data);
      },
      reserve: () => {}, // the target's disk: it says so when it fills up
      close: async () => {
        // A part with no bytes still exists: one empty frame makes the target create it.
        if (size === 0) await this.send(FRAME.PART, name, Buffer.alloc(0));
        return { size, checksum: hasher.digest() };
      },
    };
  }

  /** Send the ROUND frame: the round's pages part is placed as it goes (PLACE frames), from now. */
  layerStart(pid: number, layer: LayerRecord, vmas: readonly LayerVma[]): Promise<void> {
    this.placing.add(layer.pages);
    return this.send(FRAME.ROUND, '', encodeLayerNotice({ pid, layer, vmas: [...vmas] }));
  }

  /** Send the LAYER frame and wait until the target has taken the layer in (it may prefill from it). */
  async layerDone(pid: number, layer: LayerRecord, vmas: readonly LayerVma[]): Promise<boolean> {
    const layered = this.next('layered');
    layered.catch(() => {}); // awaited below; a failure meanwhile must not go unhandled
    await this.send(FRAME.LAYER, '', encodeLayerNotice({ pid, layer, vmas: [...vmas] }));
    return (await layered).prefilled;
  }

  async commit(manifest: string, fence?: () => void): Promise<void> {
    const restored = this.next('restored');
    restored.catch(() => {}); // awaited below; a failure meanwhile must not go unhandled
    await this.send(FRAME.MANIFEST, '', Buffer.from(manifest));
    await this.send(FRAME.SEAL, '', Buffer.from(macOf(this.options.sealKey, manifest)));
    const { pid, restoreMs, stages } = await restored;
    this.options.signal?.throwIfAborted();
    fence?.();
    faultPoint('fence');
    const running = this.next('running', true);
    running.catch(() => {});
    await this.send(FRAME.COMMIT, '', Buffer.alloc(0));
    faultPoint('commit');
    try {
      await running;
    } catch (err) {
      // The target may have let the process run before the connection broke: tell it another way.
      let outcome: 'running' | 'aborted';
      try {
        outcome = await this.options.commitAgain();
      } catch (againErr) {
        throw new FerryError(
          'FERRY_MIGRATION_IN_DOUBT',
          `lost ${this.location} after telling it to run the process as PID ${pid}, and cannot reach it again (${againErr instanceof Error ? againErr.message : String(againErr)})`,
          { cause: err },
        );
      }
      if (outcome !== 'running') throw err;
    }
    this.outcome = { pid, restoreMs, restoreStages: stages ?? {} };
  }

  settle(): Promise<void> {
    this.out.end();
    return Promise.resolve();
  }

  abort(): Promise<void> {
    if (!this.failure && this.out.writable) {
      this.out.write(frameHeader(FRAME.ABORT, '', 0));
      this.out.end();
    } else {
      this.out.destroy();
    }
    return Promise.resolve();
  }
}
