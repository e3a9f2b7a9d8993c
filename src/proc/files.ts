// Reading /proc/PID/* with errors a user understands: a missing PID, a process that went away,
// or a file ferry may not read, each as a FerryError naming the PID and the file.
import { closeSync, openSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { FerryError } from '../errors.js';

function systemCode(err: unknown): string | undefined {
  return err instanceof Error && 'code' in err ? String(err.code) : undefined;
}

/** Map a failed /proc access to a FerryError, or rethrow what it is not. */
export function procError(pid: number, file: string, err: unknown): never {
  const code = systemCode(err);
  if (code === 'ENOENT' || code === 'ESRCH') {
    throw new FerryError(
      'FERRY_NO_SUCH_PROCESS',
      `no process with PID ${pid} (reading /proc/${pid}/${file})`,
      {
        cause: err,
      },
    );
  }
  if (code === 'EACCES' || code === 'EPERM') {
    throw new FerryError(
      'FERRY_PERMISSION',
      `no permission to read /proc/${pid}/${file}: run ferry as root or with CAP_SYS_PTRACE`,
      { cause: err },
    );
  }
  throw err;
}

function attempt<T>(pid: number, file: string, read: () => T): T {
  try {
    return read();
  } catch (err) {
    return procError(pid, file, err);
  }
}

export function procPath(pid: number, file: string): string {
  return `/proc/${pid}/${file}`;
}

export function readProcText(pid: number, file: string): string {
  return attempt(pid, file, () => readFileSync(procPath(pid, file), 'latin1'));
}

export function readProcBytes(pid: number, file: string): Buffer {
  return attempt(pid, file, () => readFileSync(procPath(pid, file)));
}

export function readProcLink(pid: number, file: string): string {
  return attempt(pid, file, () => readlinkSync(procPath(pid, file)));
}

export function listProcDir(pid: number, dir: string): string[] {
  return attempt(pid, dir, () => readdirSync(procPath(pid, dir)));
}

/** Open a /proc file for reading; the caller closes it with closeProcFile. */
export function openProcFile(pid: number, file: string): number {
  return attempt(pid, file, () => openSync(procPath(pid, file), 'r'));
}

export function closeProcFile(fd: number): void {
  closeSync(fd);
}

/** Thread IDs of a process, ascending. */
export function listThreads(pid: number): number[] {
  return listProcDir(pid, 'task')
    .map(Number)
    .sort((a, b) => a - b);
}

/** What each descriptor of `pid` is, as /proc/PID/fd shows it; none once it is gone. */
export function fdTargets(pid: number): string[] {
  try {
    return readdirSync(`/proc/${pid}/fd`).map((fd) => readlinkSync(`/proc/${pid}/fd/${fd}`));
  } catch {
    return [];
  }
}

/** A process holding a descriptor: its PID and name. */
export interface Holder {
  pid: number;
  command: string;
}

/**
 * The processes other than `skip` that hold a descriptor whose /proc link reads one of `targets`
 * (`pipe:[123]`, say), for each target, in PID order, with their names. Processes that go away or
 * hide their descriptors meanwhile are passed over.
 */
export function holdersOf(targets: ReadonlySet<string>, skip: ReadonlySet<number>): Map<string, Holder[]> {
  const found = new Map<string, Holder[]>();
  if (targets.size === 0) return found;
  const pids = readdirSync('/proc')
    .map(Number)
    .filter((pid) => Number.isInteger(pid) && !skip.has(pid))
    .sort((a, b) => a - b);
  for (const pid of pids) {
    try {
      const seen = new Set(fdTargets(pid));
      if (![...seen].some((t) => targets.has(t))) continue;
      const command = readFileSync(`/proc/${pid}/comm`, 'latin1').trim();
      for (const target of seen)
        if (targets.has(target)) found.set(target, [...(found.get(target) ?? []), { pid, command }]);
    } catch {
      // gone, or not ours to read
    }
  }
  return found;
}

/** "logger (process 55)", or several of them joined. */
export const describeHolders = (holders: readonly Holder[]): string =>
  holders.map((h) => `${h.command} (process ${h.pid})`).join(', ');
