import assert from 'node:assert/strict';
import { test } from 'node:test';
import { callWidth, runAtOnce } from '../../src/sys/call.js';

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

test('runAtOnce runs a thousand jobs callWidth() at a time, results in order', async () => {
  let running = 0;
  let most = 0;
  const jobs = Array.from({ length: 1000 }, (_, i) => async () => {
    most = Math.max(most, ++running);
    await tick();
    running--;
    return i * 2;
  });
  const results = await runAtOnce(jobs);
  assert.deepEqual(
    results,
    Array.from({ length: 1000 }, (_, i) => i * 2),
  );
  assert.equal(most, callWidth());
});

test('after a failure runAtOnce starts no job, waits for the running ones, throws the failure', async () => {
  const started: number[] = [];
  let running = 0;
  const jobs = Array.from({ length: 100 }, (_, i) => async () => {
    started.push(i);
    running++;
    await tick();
    running--;
    if (i === 3) throw new Error('job 3 failed');
    return i;
  });
  await assert.rejects(runAtOnce(jobs), /job 3 failed/);
  assert.equal(running, 0, 'every started job is over');
  assert.ok(started.length < 100 && started.length <= 4 + callWidth(), `${started.length} started`);
});
