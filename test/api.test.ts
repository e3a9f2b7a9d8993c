// The package's entry point exports the library the README documents, and its example runs.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import * as ferry from '../src/index.js';
import { REPO } from './helpers/paths.js';
import { becomeSubreaper, descendants, killTree } from './helpers/reaper.js';

test('the entry point exports every function the README documents', () => {
  for (const name of [
    'check',
    'inspect',
    'inspectResultToJson',
    'parseVmaSelection',
    'dump',
    'restore',
    'readImage',
    'demo',
    'vmaContents',
    'findVma',
    'vmaBytes',
    'findProcess',
    'isFerryError',
    'isErrno',
    'migrate',
    'startAgent',
    'readTokenFile',
    'parseTokenFile',
    'startBalancer',
    'gatherLoads',
    'decide',
    'placeJob',
    'drainHost',
    'startDashboard',
    'ClusterStore',
  ] as const) {
    assert.equal(typeof ferry[name], 'function', name);
  }
  assert.deepEqual(ferry.MIGRATE_MODES, ['stop-copy', 'pre-copy', 'post-copy', 'hybrid']);
});

test("README's library example is examples/library.ts, and it runs: dump, restore, agent, migrate", () => {
  const readme = readFileSync(`${REPO}README.md`, 'utf8');
  const block = /## Library API\n[\s\S]*?```ts\n([\s\S]*?)```/.exec(readme)?.[1];
  assert.equal(block, readFileSync(`${REPO}examples/library.ts`, 'utf8'));
  becomeSubreaper(); // what it starts and leaves behind, should it fail, comes here to be killed
  const run = spawnSync(process.execPath, [`${REPO}dist/examples/library.js`], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 60_000,
  });
  descendants().forEach(killTree);
  assert.equal(run.status, 0, run.stderr);
  assert.match(run.stdout, /^dumped: frozen [\d.]+ ms, \d+ pages$/m);
  assert.match(run.stdout, /^restored sleep as \d+$/m);
  assert.match(run.stdout, /^migrated \d+ as \d+: downtime [\d.]+ ms$/m);
});
