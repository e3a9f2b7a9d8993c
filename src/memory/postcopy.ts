// Post-copy, the source's half: once the copy runs on the target, the pages of its anonymous memory
// (VMAs of content `remote`) go from the process here, frozen, to the target: those it asks for
// (its faults) first, then all the others in address order, then word that there are no more. The
// process is killed only once the target has them all.
import { setImmediate as nextTurn } from 'node:timers/promises';
import { FerryError } from '../errors.js';
import { PAGE_SIZE } from '../proc/pagemap.js';
import { faultPoint } from '../sys/fault.js';
import { processVmReadv } from '../sys/process-vm.js';
import { openPageScanner } from '../vma/pages.js';
import { intersectSpans, subtractSpans, type Span } from '../vma/spans.js';
import { trackedSpans, type Baseline } from './dirty.js';
import type { VmaRecord } from './vmas.js';

/** Bytes read and sent at a time in the background (a request waits for at most one). */
const SEND_CHUNK = 1 << 20;
/** Sends under way at once. */
const IN_FLIGHT = 4;

/** The target, as the pages go to it. */
export interface PageChannel {
  /** Tell it which pages of the pre-copy rounds' it has still hold: the process has them so. */
  keep(spans: readonly Span[]): Promise<void>;
  /** Send the process's bytes of [addr, addr + data.length). */
  send(addr: bigint, data: Buffer): Promise<void>;
  /** Every page is sent: those never sent are zeros. */
  end(): Promise<void>;
  /** Hear the target's requests for [addr, addr + len), as they come. */
  onRequest(handler: (addr: bigint, len: number) => void): void;
  /** Resolves once the target has every page. */
  complete(): Promise<void>;
}

export interface PostCopyReport {
  /** Pages sent in the background, and the target's requests answered. */
  pages: number;
  requests: number;
  bytes: number;
  /** Milliseconds from the first page sent until the target had them all. */
  ms: number;
}

/** The part of [start, end) inside the spans of `vmas` holding `start`, if any. */
function clip(vmas: readonly Span[], start: bigint, end: bigint): Span | undefined {
  const v = vmas.find((s) => s.start <= start && start < s.end);
  return v && { start, end: end < v.end ? end : v.end };
}

/** The present pages of `vmas` of process `pid`. */
function presentPages(pid: number, vmas: readonly Span[]): Span[] {
  const present: Span[] = [];
  const scanner = openPageScanner(pid);
  try {
    for (const v of vmas) scanner.scan(v, (run) => present.push({ start: run.start, end: run.end }));
  } finally {
    scanner.close();
  }
  return present;
}

/**
 * After pre-copy rounds: the present pages of `vmas` the rounds hold and the process has not written
 * since, which the target has (`keep`), and the others (`later`), which it needs.
 */
function sinceRounds(
  pid: number,
  vmas: readonly VmaRecord[],
  baseline: Baseline,
): { keep: Span[]; later: Span[] } {
  const present = presentPages(pid, vmas);
  const tracked = trackedSpans(baseline.tracker, vmas);
  const unwritten = subtractSpans(tracked, baseline.tracker.written(tracked, false));
  const keep = intersectSpans(intersectSpans(present, unwritten), baseline.held);
  return { keep, later: subtractSpans(present, keep) };
}

/**
 * Send the pages of `vmas` of frozen process `pid` through `channel` until the target has them all:
 * the present ones, or after pre-copy rounds (`baseline`), those the rounds do not hold as they are
 * now (the target is told which of theirs hold first). `onProgress` hears the bytes sent so far.
 */
export async function sendPages(
  pid: number,
  vmas: readonly VmaRecord[],
  channel: PageChannel,
  baseline?: Baseline,
  onProgress?: (doneBytes: number, totalBytes: number) => void,
): Promise<PostCopyReport> {
  const started = performance.now();
  let present: Span[];
  if (baseline) {
    const { keep, later } = sinceRounds(pid, vmas, baseline);
    await channel.keep(keep);
    present = later;
  } else {
    present = presentPages(pid, vmas);
  }
  const totalBytes = present.reduce((n, s) => n + Number(s.end - s.start), 0);
  const asked: Span[] = [];
  channel.onRequest((addr, len) => {
    const piece = clip(vmas, addr, addr + BigInt(len));
    if (piece) asked.push(piece);
  });
  const report: PostCopyReport = { pages: 0, requests: 0, bytes: 0, ms: 0 };
  const inFlight: Promise<void>[] = [];
  // Each send's buffer is used again once the connection has taken its bytes: fresh memory for
  // every chunk would be faulted in, then collected.
  const free = Array.from({ length: IN_FLIGHT + 1 }, () => Buffer.allocUnsafeSlow(SEND_CHUNK));
  const send = async (piece: Span): Promise<void> => {
    const len = Number(piece.end - piece.start);
    const buffer = free.pop()!;
    const data = buffer.subarray(0, len);
    const got = processVmReadv(pid, data, [{ addr: piece.start, len }]);
    if (got !== len)
      throw new FerryError(
        'FERRY_MIGRATION_FAILED',
        `read ${got} of ${len} bytes at 0x${piece.start.toString(16)} of process ${pid}`,
      );
    report.bytes += len;
    inFlight.push(channel.send(piece.start, data).then(() => void free.push(buffer)));
    if (inFlight.length >= IN_FLIGHT) await inFlight.shift();
    else await nextTurn(); // the target's requests come in as the event loop turns
  };
  let sent = 0;
  for (const run of present) {
    for (let at = run.start; at < run.end;) {
      while (asked.length > 0) {
        report.requests++;
        await send(asked.shift()!);
      }
      const end = run.end < at + BigInt(SEND_CHUNK) ? run.end : at + BigInt(SEND_CHUNK);
      await send({ start: at, end });
      faultPoint('postcopy');
      report.pages += Number(end - at) / PAGE_SIZE;
      sent += Number(end - at);
      onProgress?.(sent, totalBytes);
      at = end;
    }
  }
  while (asked.length > 0) {
    report.requests++;
    await send(asked.shift()!);
  }
  await Promise.all(inFlight);
  await channel.end();
  await channel.complete();
  report.ms = performance.now() - started;
  return report;
}
