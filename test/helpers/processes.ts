// Processes a test starts: each prints a line when it is ready, and is killed by PID when the test
// is done with it, whatever happened.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readdirSync, readFileSync } from 'node:fs';
import { parseStat, PF_KTHREAD } from '../../src/proc/stat.js';
import { createInterface } from 'node:readline';
import { fileContent } from './compute.js';
import { killAndReap } from './reaper.js';

export interface Started {
  pid: number;
  child: ChildProcess;
  /** The first line the process printed (its readiness report). */
  readyLine: string;
  /** Every stdout line so far. */
  lines: string[];
  /** Kill it (SIGKILL, by PID) and wait until it has been reaped. */
  stop(): Promise<void>;
}

const READY_TIMEOUT_MS = 20_000;

/** Start `cmd`, wait for its first stdout line. */
export async function startProcess(
  cmd: string,
  args: string[],
  options: { cwd?: string } = {},
): Promise<Started> {
  const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'inherit'], cwd: options.cwd });
  const lines: string[] = [];
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null && child.pid) {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await exited;
  };
  const readyLine = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${cmd} did not report ready`)), READY_TIMEOUT_MS);
    createInterface({ input: child.stdout }).on('line', (line) => {
      lines.push(line);
      if (lines.length === 1) {
        clearTimeout(timer);
        resolve(line);
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${cmd} exited (${code ?? signal}) before it was ready`));
    });
  }).catch(async (err: unknown) => {
    await stop();
    throw err;
  });
  return { pid: child.pid!, child, readyLine, lines, stop };
}

/** The process's state letter from /proc/PID/stat, or undefined once it is gone. */
export function processState(pid: number): string | undefined {
  const path = `/proc/${pid}/stat`;
  if (!existsSync(path)) return undefined;
  try {
    const stat = readFileSync(path, 'latin1');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
  } catch {
    return undefined;
  }
}

/** Fields of /proc/PID/status that tell whether a process is stopped or traced. */
export function traceState(pid: number): { state: string; tracerPid: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'latin1');
  const state = /^State:\s+(\S)/m.exec(status)?.[1] ?? '?';
  const tracerPid = Number(/^TracerPid:\s+(\d+)/m.exec(status)?.[1] ?? -1);
  return { state, tracerPid };
}

/** A process of another user (nobody), asleep: for the tests of what ferry may not do to it. */
export function startOtherUserProcess(): Promise<Started> {
  return startProcess('setpriv', [
    '--reuid=65534',
    '--regid=65534',
    '--clear-groups',
    'sh',
    '-c',
    'echo READY; exec sleep 600',
  ]);
}

/**
 * Run ferry as root without the capabilities that let it trace or read other users' processes
 * (CAP_SYS_ADMIN and CAP_PERFMON also grant reading their /proc files on Linux 6.x).
 */
export const WITHOUT_TRACE_CAPS = [
  'setpriv',
  '--bounding-set=-sys_ptrace,-sys_admin,-perfmon',
  '--inh-caps=-all',
];

/**
 * Start `cmd` with stdout and stderr in the file `out`, which a restored copy goes on writing;
 * wait until the file matches `ready`. `cleanup` kills it by PID.
 */
export async function startLogged(
  out: string,
  cmd: string,
  args: string[],
  ready: RegExp,
  cleanup: (step: () => void) => void,
): Promise<number> {
  const fd = openSync(out, 'w');
  const child = spawn(cmd, args, { stdio: ['ignore', fd, fd] });
  closeSync(fd);
  child.unref(); // reaped by killAndReap, which Node's handle would wait for in vain
  const pid = child.pid!;
  cleanup(() => killAndReap(pid));
  await fileContent(out, ready);
  return pid;
}

/**
 * A kernel thread this process can see (kthreadd is PID 2 on the host); none inside a PID namespace
 * of its own, as in some CI containers.
 */
export function kernelThread(): number | undefined {
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (parseStat(readFileSync(`/proc/${name}/stat`, 'latin1')).flags & PF_KTHREAD) return Number(name);
    } catch {
      // gone meanwhile
    }
  }
  return undefined;
}
