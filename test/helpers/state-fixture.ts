// The `state` C fixture (test/fixtures/state.c): started, checked, dumped and restored by the
// end-to-end tests, and compared before and after as CRIU's ZDTM does (maps and descriptors).
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { parseMaps, type MapsEntry } from '../../src/proc/maps.js';
import { fixture } from './fixtures.js';
import { processState } from './processes.js';
import { reportLines, waitForLines } from './report.js';

export interface StateFixture {
  pid: number;
  report: string;
  data: string;
  scratch: bigint;
  /** Send SIGUSR1 to `pid` and return the line it answers with. */
  verify(pid?: number): Promise<string>;
  /** Kill it and wait for Node to reap it (its child, whose handle would keep the test alive). */
  stop(): Promise<void>;
}

/** Start the fixture with its report and data files in `dir`. */
export async function startStateFixture(dir: string): Promise<StateFixture> {
  const report = `${dir}/report`;
  const data = `${dir}/data`;
  const child = spawn(fixture('state'), [report, data], { stdio: 'ignore' });
  child.on('error', () => {});
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const [ready] = await waitForLines(report, 1);
  const [, pid, scratch] = ready!.split(' ');
  return {
    pid: Number(pid),
    report,
    data,
    scratch: BigInt(scratch!),
    async verify(target = Number(pid)) {
      const before = reportLines(report).length;
      // Restored, it re-enters the pause() it was in: a signal before that is handled and then slept
      // through (docs/STATE.md), so it is sent once the fixture sleeps.
      for (const until = Date.now() + 5000; processState(target) !== 'S' && Date.now() < until;)
        await new Promise((r) => setTimeout(r, 5));
      process.kill(target, 'SIGUSR1');
      const lines = await waitForLines(report, before + 1);
      return lines.at(-1)!;
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

/** maps with adjacent look-alike VMAs merged (a restore maps them one by one and the kernel merges them). */
function mergedMaps(pid: number): MapsEntry[] {
  const out: MapsEntry[] = [];
  for (const m of parseMaps(readFileSync(`/proc/${pid}/maps`, 'latin1'))) {
    const last = out.at(-1);
    const contiguousFile = last && m.inode !== 0n && last.offset + (last.end - last.start) === m.offset;
    if (
      last &&
      last.end === m.start &&
      last.perms === m.perms &&
      last.name === m.name &&
      last.inode === m.inode &&
      (m.inode === 0n || contiguousFile)
    ) {
      last.end = m.end;
    } else {
      out.push({ ...m });
    }
  }
  return out;
}

/** What a process shows of itself in /proc: its VMAs and its descriptors. */
export function visibleState(pid: number): { maps: MapsEntry[]; fds: string[] } {
  const fds = readdirSync(`/proc/${pid}/fd`)
    .map(Number)
    .sort((a, b) => a - b)
    .map((fd) => {
      const info = readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'latin1');
      const flags = /^flags:\s+(\d+)/m.exec(info)?.[1];
      const pos = /^pos:\s+(\d+)/m.exec(info)?.[1];
      return `${fd} ${readlinkSync(`/proc/${pid}/fd/${fd}`)} flags=${flags} pos=${pos}`;
    });
  return { maps: mergedMaps(pid), fds };
}
