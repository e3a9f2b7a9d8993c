// /proc/PID/timers: the POSIX timers of a process (timer_create), four lines each:
//   ID: 1 / signal: 10/0000000000000099 / notify: signal/tid.755 / ClockID: 0
// `signal` is the signal number and the sigev_value the timer hands it; `notify` how it tells
// (signal, none, or thread for SIGEV_THREAD) and whom (the process, or one thread: tid).
import { parseError } from './parse-error.js';

export interface ProcTimer {
  id: number;
  signal: number;
  /** sigev_value, as a pointer-sized word. */
  value: bigint;
  notify: 'signal' | 'none' | 'thread';
  /** The thread it signals (SIGEV_THREAD_ID), or null: the process. */
  tid: number | null;
  clock: number;
}

const FORMS: [RegExp, string][] = [
  [/^ID: (\d+)$/, '"ID: <n>"'],
  [/^signal: (\d+)\/([0-9a-f]+)$/, '"signal: <n>/<hex>"'],
  [/^notify: (signal|none|thread)\/(pid|tid)\.(\d+)$/, '"notify: <how>/<pid|tid>.<n>"'],
  [/^ClockID: (\d+)$/, '"ClockID: <n>"'],
];

export function parseTimers(text: string, source = 'timers'): ProcTimer[] {
  const lines = text.split('\n').filter((l, i, all) => !(l === '' && i === all.length - 1));
  if (lines.length % FORMS.length !== 0)
    throw parseError(source, lines.length, 'blocks of 4 lines', lines.at(-1) ?? '');
  const timers: ProcTimer[] = [];
  for (let at = 0; at < lines.length; at += FORMS.length) {
    const [id, signal, notify, clock] = FORMS.map(([form, what], k) => {
      const m = form.exec(lines[at + k]!);
      if (!m) throw parseError(source, at + k + 1, what, lines[at + k]!);
      return m;
    }) as [RegExpExecArray, RegExpExecArray, RegExpExecArray, RegExpExecArray];
    timers.push({
      id: Number(id[1]),
      signal: Number(signal[1]),
      value: BigInt(`0x${signal[2]}`),
      notify: notify[1] as ProcTimer['notify'],
      tid: notify[2] === 'tid' ? Number(notify[3]) : null,
      clock: Number(clock[1]),
    });
  }
  return timers.sort((a, b) => a.id - b.id);
}
