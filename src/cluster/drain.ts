// Draining a host (`ferry drain`): it takes no new job, and every job it has is moved, one at a time,
// to the open host where it adds the least load. A pinned job (--no-migrate) stays, and is said.
import { FerryError } from '../errors.js';
import { callAgent } from '../migrate/client.js';
import type { HistoryEntry, JobReport } from '../agent/jobs.js';
import { endpointOf, gatherLoads, hostView } from './balancer.js';
import { placeJob } from './policy.js';

export interface DrainOptions {
  /** host:port of the agent to drain, and of the others, which take its jobs. */
  host: string;
  peers: string[];
  token: string | undefined;
  ca?: Buffer;
  /** Hears each move as it ends. */
  onMove?: (entry: HistoryEntry) => void;
}

export interface DrainResult {
  host: string;
  moved: HistoryEntry[];
  /** Jobs still there: pinned, or that failed to move twice (they run on there). */
  left: (JobReport & { why: string })[];
}

const MOVE_TIMEOUT_MS = 30 * 60_000;
const TRIES = 2;

export async function drainHost(o: DrainOptions): Promise<DrainResult> {
  const agent = endpointOf(o.host, o.token, o.ca);
  await callAgent(agent, 'POST', '/v1/drain', {}, 10_000);
  const others = o.peers.filter((p) => p !== o.host);
  const moved: HistoryEntry[] = [];
  const failures = new Map<string, string[]>();
  for (;;) {
    const loads = await gatherLoads([o.host, ...others], o.token, o.ca);
    const here = loads.get(o.host)!;
    if (here instanceof Error) throw here;
    const left = here.jobs.map((j) => ({
      ...j,
      why: j.pinned
        ? 'pinned (--no-migrate)'
        : (failures.get(j.id)?.length ?? 0) >= TRIES
          ? `failed to move: ${failures.get(j.id)!.at(-1)}`
          : '',
    }));
    // The job that has run longest first: the one most worth keeping going.
    const next = left.filter((j) => j.why === '').sort((a, b) => b.cpuSeconds - a.cpuSeconds)[0];
    if (!next) return { host: o.host, moved, left };
    const targets = [...loads].flatMap(([peer, l]) =>
      peer === o.host || l instanceof Error ? [] : [hostView(peer, l, false)],
    );
    const to = placeJob(targets, next.rssBytes);
    if (!to)
      throw new FerryError(
        'FERRY_BUSY',
        `no other agent can take job ${next.name} (${others.join(', ') || 'none given'}: drained, unreachable or full)`,
      );
    const entry = await callAgent<HistoryEntry>(
      agent,
      'POST',
      `/v1/jobs/${encodeURIComponent(next.id)}/migrate`,
      { to: to.id, from: o.host, reason: `drain ${o.host}`, mode: 'pre-copy' },
      MOVE_TIMEOUT_MS,
    );
    o.onMove?.(entry);
    if (entry.outcome === 'moved' || entry.outcome === 'exited') moved.push(entry);
    else if (entry.outcome === 'in-doubt')
      throw new FerryError('FERRY_MIGRATION_IN_DOUBT', `job ${next.name}: ${entry.error ?? 'in doubt'}`);
    else failures.set(next.id, [...(failures.get(next.id) ?? []), entry.error ?? entry.outcome]);
  }
}
