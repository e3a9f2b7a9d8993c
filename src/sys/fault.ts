// Fault injection, for the tests and `npm run bench:faults`: with FERRY_FAULT=<point>[@<n>][:<signal>]
// ferry sends itself <signal> (KILL unless said: INT, TERM, HUP, KILL, or STOP, which lets a test
// act while ferry stands still) the n-th time (1st unless said) it passes <point>. Points: `resume`
// (every ptrace resume of a thread ferry works in), `frozen` (a process is frozen, nothing read
// yet), `fence` (a migration's source is fenced, COMMIT not sent yet), `commit` (COMMIT sent),
// `lazy` (a lazy restore's process runs, its pages coming in: each chunk the background copies),
// `postcopy` (a post-copy migration's copy runs on the target: each chunk of pages the source sends)
// and `place` (a migration's target puts received pages into the process it restores: each call).
// Unset, a point costs one comparison.

export type FaultPoint = 'resume' | 'frozen' | 'fence' | 'commit' | 'lazy' | 'postcopy' | 'place';

const SIGNALS = new Set(['KILL', 'INT', 'TERM', 'HUP', 'STOP']);

interface Fault {
  point: string;
  at: number;
  signal: NodeJS.Signals;
  seen: number;
}

function parse(spec: string | undefined): Fault | undefined {
  const m = spec === undefined ? null : /^([a-z-]+)(?:@(\d+))?(?::([A-Z]+))?$/.exec(spec);
  if (!m || (m[3] !== undefined && !SIGNALS.has(m[3]))) return undefined;
  return { point: m[1]!, at: Number(m[2] ?? 1), signal: `SIG${m[3] ?? 'KILL'}` as NodeJS.Signals, seen: 0 };
}

/** Read at the first point passed, not as the module loads: a startup snapshot loads it at build. */
let fault: Fault | undefined | null = null;

/** Pass fault point `point`: the injected signal is sent here when FERRY_FAULT names this pass. */
export function faultPoint(point: FaultPoint): void {
  if (fault === null) fault = parse(process.env.FERRY_FAULT);
  if (fault?.point !== point || ++fault.seen !== fault.at) return;
  process.kill(process.pid, fault.signal);
}
