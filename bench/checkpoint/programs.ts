// Real programs for the checkpoint benchmark: a 4-thread C workload (the threads fixture) and
// redis-server holding a given amount of memory. Each starts in a work directory and says how to
// check a restored copy: all its threads are there; redis answers with every key.
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, openSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { freePort } from '../../test/helpers/redis.js';
import { startWorkload } from '../workload.js';

export interface Running {
  pid: number;
  exited: Promise<void>;
  /** Throw unless the restored program `pid` is whole. */
  check(pid: number): void;
}

export interface Program {
  /** What it is, for the SIZE and KIND columns. */
  size: string;
  kind: string;
  start(work: string): Promise<Running>;
}

const THREADS = 4;
const REDIS_VALUE = 1024;

const threadCount = (pid: number): number => readdirSync(`/proc/${pid}/task`).length;

export const threadsProgram: Program = {
  size: '-',
  kind: `${THREADS} threads`,
  async start(work) {
    const w = await startWorkload(work, 'threads', [String(THREADS)]);
    return {
      pid: w.pid,
      exited: w.exited,
      check(pid) {
        if (threadCount(pid) !== THREADS + 1) throw new Error(`restored with ${threadCount(pid)} threads`);
      },
    };
  },
};

function redisCli(port: number, ...args: string[]): string {
  return execFileSync('redis-cli', ['-p', String(port), ...args], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
  }).trim();
}

async function redisReady(port: number): Promise<void> {
  for (let i = 0; i < 500; i++) {
    try {
      if (redisCli(port, 'ping') === 'PONG') return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error('redis-server did not answer');
}

export function redisProgram(mib: number): Program {
  const keys = Math.round((mib * 2 ** 20) / (REDIS_VALUE + 100));
  return {
    size: `${mib} MiB`,
    kind: 'redis-server',
    async start(work) {
      const port = await freePort('127.0.0.1');
      const fd = openSync(join(work, 'redis.log'), 'w');
      const child = spawn(
        'redis-server',
        [
          ...['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
          ...['--enable-debug-command', 'yes', '--dir', work],
        ],
        { stdio: ['ignore', fd, fd], detached: true },
      );
      closeSync(fd);
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      await redisReady(port);
      redisCli(port, 'debug', 'populate', String(keys), 'key', String(REDIS_VALUE));
      return {
        pid: child.pid!,
        exited,
        check() {
          const size = Number(redisCli(port, 'dbsize'));
          if (size !== keys) throw new Error(`restored redis holds ${size} keys, not ${keys}`);
        },
      };
    },
  };
}
