// PostgreSQL from Debian's package through dump and restore: a postmaster and its children, its
// shared buffers written by backends that have exited (the pages are in the shared memory object,
// in no surviving process's page tables), brought back whole: every row, the catalog, and writes.
import assert from 'node:assert/strict';
import { chmodSync, chownSync, readdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { execFileSync } from 'node:child_process';
import { before, test } from 'node:test';
import { cleanupAfterAll, workDirs } from './helpers/cleanup.js';
import { cliOk, restoreCli } from './helpers/cli.js';
import { startLogged } from './helpers/processes.js';
import { becomeSubreaper, killAndReap, killTree, treeOf } from './helpers/reaper.js';

const cleanup = cleanupAfterAll();
const { dir } = workDirs('ferry-postgres', cleanup);
before(becomeSubreaper);

/** The newest PostgreSQL server Debian installed (postgresql-NN), its programs' directory. */
function postgresBin(): string {
  const versions = readdirSync('/usr/lib/postgresql')
    .map(Number)
    .filter((v) => v > 0);
  assert.ok(versions.length > 0, 'no PostgreSQL in /usr/lib/postgresql (apt-get install postgresql)');
  return `/usr/lib/postgresql/${Math.max(...versions)}/bin`;
}

const id = (flag: string): string => execFileSync('id', [flag, 'postgres'], { encoding: 'utf8' }).trim();
/** Run as the postgres user (PostgreSQL refuses root). */
const asPostgres = (): string[] => [
  'setpriv',
  `--reuid=${id('-u')}`,
  `--regid=${id('-g')}`,
  '--clear-groups',
];

/** psql over the server's Unix socket in `sockets`; its unaligned, tuples-only output. */
function psql(sockets: string, sql: string): string {
  return execFileSync('psql', ['-h', sockets, '-p', '5432', '-U', 'postgres', '-AtX', '-c', sql], {
    encoding: 'utf8',
  }).trim();
}

test('PostgreSQL: checkpoint, kill, restore; every row, the roles and new writes are there', async () => {
  const bin = postgresBin();
  const work = dir();
  chmodSync(dirname(work), 0o711); // made 0700 for root: the postgres user must pass through
  chownSync(work, Number(id('-u')), Number(id('-g')));
  const data = `${work}/data`;
  execFileSync(
    asPostgres()[0]!,
    [...asPostgres().slice(1), `${bin}/initdb`, '-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync'],
    {
      stdio: 'ignore',
    },
  );
  // Only a Unix socket in the work directory (no TCP port); dynamic shared memory in the data
  // directory, not /dev/shm.
  const pid = await startLogged(
    `${work}/log`,
    asPostgres()[0]!,
    [
      ...asPostgres().slice(1),
      `${bin}/postgres`,
      '-D',
      data,
      '-k',
      work,
      '-c',
      'listen_addresses=',
      '-c',
      'dynamic_shared_memory_type=mmap',
      '-c',
      'fsync=off',
    ],
    /database system is ready to accept connections/,
    cleanup,
  );
  cleanup(() => killTree(pid));
  // Each psql is a backend that exits: what it wrote to shared buffers is in no process that stays.
  psql(
    work,
    'CREATE TABLE t (x int PRIMARY KEY, y text); INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 100000) i',
  );
  const sum = psql(work, "SELECT sum(x), md5(string_agg(y, ',' ORDER BY x)) FROM t");

  const image = dir();
  const tree = treeOf(pid);
  await cliOk(['dump', String(pid), '-D', image]);
  tree.slice(1).forEach(killAndReap); // orphaned to this process: reaped, their PIDs are free
  const restored = await restoreCli(image, cleanup);
  cleanup(() => killTree(restored));

  assert.equal(psql(work, "SELECT sum(x), md5(string_agg(y, ',' ORDER BY x)) FROM t"), sum);
  assert.equal(psql(work, "SELECT rolname FROM pg_authid WHERE rolname = 'postgres'"), 'postgres');
  assert.equal(psql(work, 'SELECT count(*) FROM t WHERE x = 4242'), '1', 'the index reads back');
  psql(work, "INSERT INTO t VALUES (100001, 'after')");
  assert.equal(psql(work, 'SELECT count(*) FROM t'), '100001');
});
