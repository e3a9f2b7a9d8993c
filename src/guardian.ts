// The guardian: a process of its own (`ferry guard`, in a session of its own) that ferry starts
// before it freezes anything, and tells, before each change, which processes it holds and where it
// maps its scratch regions in them. Should ferry die (SIGKILL, the OOM killer), each thread it was
// working in has already gone back to its own state through its rescue (tracee/remote.ts); what
// only another process can undo is left: the scratch regions. The guardian learns of ferry's death
// from its stdin, a pipe only ferry writes to, ending without ferry's farewell; it then removes
// them, reports on stderr, and exits.
import { spawn } from 'node:child_process';
import { closeSync, rmSync, writeSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { ferryCommand } from './launcher.js';
import { readProcText } from './proc/files.js';
import { parseMaps } from './proc/maps.js';
import { parseStat } from './proc/stat.js';
import { parseStatus } from './proc/status.js';
import { O } from './sys/fcntl.js';
import { NR } from './sys/nr.js';
import { pipe2 } from './sys/pipe.js';
import { processVmReadv } from './sys/process-vm.js';
import { sleepMs } from './sys/time.js';
import { EXECUTOR_CODE } from './tracee/executor.js';
import { RemoteSyscalls } from './tracee/remote.js';
import { Tracee } from './tracee/tracee.js';
import type { TraceeWatch } from './tracee/watch.js';
import type { AgentEndpoint } from './migrate/client.js';

type Message =
  | { op: 'hold'; pid: number; start: string }
  | { op: 'migrating'; pid: number; id: string; to: WireEndpoint; timeoutMs: number }
  | { op: 'scratch'; pid: number; base: string; size: number }
  | { op: 'unscratch' | 'release'; pid: number }
  | { op: 'partial' | 'unpartial'; path: string }
  | { op: 'bye' };

/** Ferry's side: starts the guardian and tells it what ferry is about to do. */
export class Guardian implements TraceeWatch {
  private fd: number | undefined;

  private constructor(fd: number) {
    this.fd = fd;
  }

  /**
   * Start a guardian. It needs no time to get ready: what ferry writes waits in the pipe, and a
   * guardian still starting when ferry dies reads it all the same.
   */
  static start(): Guardian {
    const [readEnd, writeEnd] = pipe2(O.CLOEXEC);
    try {
      // A fault injected into ferry (src/sys/fault.ts) is not the guardian's.
      const env = { ...process.env, FERRY_FAULT: undefined };
      const child = spawn(ferryCommand(), ['guard'], {
        stdio: [readEnd, 'ignore', 'inherit'],
        detached: true,
        env,
      });
      child.unref();
    } finally {
      closeSync(readEnd);
    }
    return new Guardian(writeEnd);
  }

  /** Written at once, in one write: ferry may die the next instant. */
  private send(message: Message): void {
    if (this.fd !== undefined) writeSync(this.fd, `${JSON.stringify(message)}\n`);
  }

  hold(pid: number, startTime: bigint): void {
    this.send({ op: 'hold', pid, start: String(startTime) });
  }

  scratch(pid: number, base: bigint, size: number): void {
    this.send({ op: 'scratch', pid, base: `0x${base.toString(16)}`, size });
  }

  unscratch(pid: number): void {
    this.send({ op: 'unscratch', pid });
  }

  release(pid: number): void {
    this.send({ op: 'release', pid });
  }

  /** A dump writes its image in `path` until its commit: removed should ferry die first. */
  partial(path: string): void {
    this.send({ op: 'partial', path });
  }

  unpartial(path: string): void {
    this.send({ op: 'unpartial', path });
  }

  /** Process `pid` is about to be fenced for migration `id` to `to` (until released). */
  migrating(pid: number, id: string, to: AgentEndpoint, timeoutMs: number): void {
    this.send({ op: 'migrating', pid, id, to: { ...to, ca: to.ca?.toString('utf8') }, timeoutMs });
  }

  /** Ferry is done: the guardian exits without touching anything. */
  close(): void {
    if (this.fd === undefined) return;
    this.send({ op: 'bye' });
    closeSync(this.fd);
    this.fd = undefined;
  }
}

/** Run `work` watched by `given`, or by a guardian of its own, started for it and closed after. */
export async function withGuardian<T>(
  given: Guardian | undefined,
  work: (g: Guardian) => Promise<T>,
): Promise<T> {
  if (given) return work(given);
  const guardian = Guardian.start();
  try {
    return await work(guardian);
  } finally {
    guardian.close();
  }
}

/** An endpoint as the pipe carries it (the CA as text). */
type WireEndpoint = Omit<AgentEndpoint, 'ca'> & { ca?: string };

interface Held {
  start: bigint;
  scratch?: { base: bigint; size: number };
  migration?: { id: string; to: AgentEndpoint; timeoutMs: number };
}

/** The guardian's side: read what ferry says until its end; if ferry died, clean up. */
export async function guard(input: NodeJS.ReadableStream, log: (line: string) => void): Promise<void> {
  const held = new Map<number, Held>();
  const partials = new Set<string>();
  let bye = false;
  for await (const line of createInterface({ input })) {
    let m: Message;
    try {
      m = JSON.parse(line) as Message;
    } catch {
      continue;
    }
    if (m.op === 'bye') bye = true;
    else if (m.op === 'hold') held.set(m.pid, { start: BigInt(m.start) });
    else if (m.op === 'release') held.delete(m.pid);
    else if (m.op === 'partial') partials.add(m.path);
    else if (m.op === 'unpartial') partials.delete(m.path);
    else if (m.op === 'scratch') {
      const h = held.get(m.pid);
      if (h) h.scratch = { base: BigInt(m.base), size: m.size };
    } else if (m.op === 'unscratch') {
      const h = held.get(m.pid);
      if (h) h.scratch = undefined;
    } else if (m.op === 'migrating') {
      const h = held.get(m.pid);
      const to = { ...m.to, ca: m.to.ca === undefined ? undefined : Buffer.from(m.to.ca) };
      if (h) h.migration = { id: m.id, to, timeoutMs: m.timeoutMs };
    }
  }
  if (bye) return;
  for (const path of partials) {
    rmSync(path, { recursive: true, force: true });
    log(`removed the image ferry had begun in ${path}`);
  }
  for (const [pid, h] of held) {
    try {
      log(h.migration ? await settle(pid, h, h.migration) : recover(pid, h));
    } catch (err) {
      log(`process ${pid}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
}

/**
 * Settle a migration ferry died in the midst of, past its fence: the process is stopped (once the
 * kernel let go of it), and the target knows whether its copy runs.
 */
async function settle(pid: number, h: Held, m: NonNullable<Held['migration']>): Promise<string> {
  for (let i = 0; i < RETRIES && stoppedFree(pid, h.start) === false; i++) sleepMs(5);
  // Loaded only now: it needs node:http, which no startup snapshot may hold.
  const { resolveInDoubt } = await import('./migrate/resolve.js');
  const done = await resolveInDoubt(pid, m.id, m.to, { startTime: h.start, timeoutMs: m.timeoutMs });
  return done.outcome === 'moved'
    ? `migration ${m.id}: the copy of process ${pid} runs on the target; killed it here`
    : `migration ${m.id}: no copy of process ${pid} runs on the target (never let run, or gone without all its pages); it runs on here`;
}

/** Whether `pid` is stopped and untraced; undefined once it is gone. */
function stoppedFree(pid: number, start: bigint): boolean | undefined {
  try {
    const stat = parseStat(readProcText(pid, 'stat'));
    if (stat.startTime !== start) return undefined;
    return stat.state === 'T' && parseStatus(readProcText(pid, 'status')).tracerPid === 0;
  } catch {
    return undefined;
  }
}

const RETRIES = 200;

/** Undo what ferry left in process `pid`; what was done, in words. */
function recover(pid: number, h: Held): string {
  const alive = (): boolean => {
    try {
      return parseStat(readProcText(pid, 'stat')).startTime === h.start;
    } catch {
      return false;
    }
  };
  // The kernel lets go of the process when its tracer dies; its threads then run their rescue.
  for (let i = 0; i < RETRIES && alive() && parseStatus(readProcText(pid, 'status')).tracerPid !== 0; i++)
    sleepMs(5);
  if (!alive()) return `process ${pid} is gone`;
  const region = h.scratch && leftover(pid, h.scratch.base, h.scratch.size);
  if (!region) return `process ${pid} runs on; ferry left nothing in it`;
  for (let i = 0; i < RETRIES; i++) {
    const tracee = Tracee.freeze(pid);
    try {
      // A thread still on its way out of the region through its rescue: let it finish.
      const inside = tracee.tids.some((tid) => {
        const rip = tracee.savedRegs(tid).rip;
        return rip >= region.base && rip < region.base + BigInt(region.size);
      });
      if (!inside) {
        const remote = RemoteSyscalls.open(tracee);
        try {
          remote.batch([{ name: 'munmap', nr: NR.munmap, args: [region.base, region.size] }]);
        } finally {
          remote.close();
        }
        return `process ${pid} runs on; removed ferry's scratch region at 0x${region.base.toString(16)}`;
      }
    } finally {
      tracee.release();
    }
    sleepMs(1);
  }
  return `process ${pid} runs on; ferry's scratch region at 0x${region.base.toString(16)} is still in use`;
}

/**
 * The scratch region ferry announced, if the process has it as ferry made it: an anonymous
 * read-write-execute mapping of exactly that range, holding the executor or nothing yet.
 */
function leftover(pid: number, base: bigint, size: number): { base: bigint; size: number } | undefined {
  const vma = parseMaps(readProcText(pid, 'maps')).find((m) => m.start === base);
  if (!vma || vma.end !== base + BigInt(size) || vma.perms !== 'rwxp' || vma.inode !== 0n) return undefined;
  const head = Buffer.alloc(EXECUTOR_CODE.length);
  processVmReadv(pid, head, [{ addr: base, len: head.length }]);
  return head.equals(EXECUTOR_CODE) || head.every((b) => b === 0) ? { base, size } : undefined;
}
