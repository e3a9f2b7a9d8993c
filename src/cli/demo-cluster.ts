// ferry demo cluster: three local agents with CPU quotas, jobs started on one, the balancer; with
// --http, its dashboard, kept open after the jobs are done until Ctrl-C.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { calibrateJob, runBatch, startLocalCluster, type BatchResult } from '../cluster/local.js';
import { describeEvent } from './balancer-command.js';
import { interruptible, printJson } from './command.js';
import { startDashboard, type Dashboard } from '../cluster/dashboard.js';
import { checkListen } from '../agent/listen.js';
import { parseAddress } from '../migrate/client.js';
import { formatMs, renderTable } from './format.js';

const HOSTS = 3;
const CPUS = 0.4;
const JOBS = 6;
const CPU_SECONDS = 2;

/** The before/after table of a balanced batch. */
function renderBatch(r: BatchResult, peers: readonly string[]): string {
  const host = (address: string): string => `host ${String.fromCharCode(97 + peers.indexOf(address))}`;
  return renderTable(
    ['job', 'started on', 'ended on', 'moves', 'CPU', 'done after', 'result'].map((header) => ({ header })),
    r.jobs.map((j) => [
      j.name,
      host(j.hosts[0]!),
      host(j.hosts.at(-1)!),
      String(j.hosts.length - 1),
      `${j.cpuSeconds.toFixed(1)} s`,
      formatMs(j.finishedMs),
      j.ok ? 'correct' : `WRONG: ${j.output}`,
    ]),
  );
}

export function demoCluster(json: boolean, http?: string): Promise<number> {
  // Ctrl-C stops the batch, kills its jobs, stops the agents and removes what it made.
  return interruptible((signal) => runDemo(json, http, signal));
}

async function runDemo(json: boolean, http: string | undefined, signal: AbortSignal): Promise<number> {
  const say = (line: string): void => {
    if (!json) process.stdout.write(`${line}\n`);
  };
  const dir = mkdtempSync(join(tmpdir(), 'ferry-demo-cluster-'));
  try {
    say(`starting ${HOSTS} agents on loopback, each with a quota of ${CPUS} CPU (a cgroup of its own)`);
    const cluster = await startLocalCluster({ hosts: HOSTS, cpus: CPUS, dir });
    let dashboard: Dashboard | undefined;
    try {
      if (http !== undefined) {
        const { host, port } = parseAddress(http);
        checkListen(host, false, false);
        dashboard = await startDashboard({
          host,
          port,
          token: cluster.token,
          id: 'demo',
          membership: 'peers',
          describe: describeEvent,
        });
        say(`the dashboard: ${dashboard.url}?token=${cluster.token}`);
        if (json) printJson({ dashboard: `${dashboard.url}?token=${cluster.token}` });
      }
      const rate = await calibrateJob();
      const jobs = Array.from({ length: JOBS }, (_, i) => ({
        name: `job-${i + 1}`,
        cpuSeconds: CPU_SECONDS,
      }));
      const unbalancedMs = ((JOBS * CPU_SECONDS) / CPUS) * 1000;
      say(
        `starting ${JOBS} jobs of ${CPU_SECONDS} CPU-seconds on host a (${cluster.peers[0]}), then the balancer`,
      );
      const result = await runBatch(cluster, {
        jobs,
        host: 0,
        balance: true,
        cpus: CPUS,
        iterationsPerSecond: rate,
        dir: join(dir, 'jobs'),
        onEvent: (e) => {
          say(`  ${describeEvent(e)}`);
          dashboard?.event(e);
        },
        onLook: (loads, acting) => dashboard?.look(loads, acting),
        signal,
        onProgress: (p) =>
          say(
            `  ${(p.elapsedMs / 1000).toFixed(0).padStart(3)} s  jobs per host: ${p.perHost
              .map((n, i) => `${String.fromCharCode(97 + i)}=${n}`)
              .join(' ')}  done: ${p.done}/${JOBS}`,
          ),
      });
      const passed = result.jobs.every((j) => j.ok);
      if (json) printJson({ ...result, peers: cluster.peers, unbalancedEstimateMs: unbalancedMs, passed });
      else {
        say('');
        say(renderBatch(result, cluster.peers));
        say('');
        say(
          `all done after ${formatMs(result.makespanMs)}: without balancing, host a alone would take ` +
            `${formatMs(unbalancedMs)} (${JOBS} x ${CPU_SECONDS} CPU-s at ${CPUS} CPU): ` +
            `${(unbalancedMs / result.makespanMs).toFixed(1)}x faster; the ideal is ${formatMs(result.idealMs)}. ` +
            `${result.migrations.filter((m) => m.outcome === 'moved').length} migrations.`,
        );
        say(passed ? 'every job checked its result: correct' : 'A JOB CAME BACK WRONG');
      }
      if (dashboard) {
        say(`the dashboard stays at ${dashboard.url} until Ctrl-C`);
        await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
      }
      return passed ? 0 : 1;
    } finally {
      await dashboard?.close();
      await cluster.stop();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
