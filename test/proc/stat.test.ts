import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isFerryError } from '../../src/errors.js';
import { parseStat } from '../../src/proc/stat.js';
import { dataText } from '../helpers/data.js';

test('parses captured stat', () => {
  const s = parseStat(dataText('stat.txt'));
  assert.equal(s.pid, 3320);
  assert.equal(s.comm, 'cat');
  assert.equal(s.state, 'R');
  assert.equal(s.ppid, 3315);
  assert.equal(s.numThreads, 1);
  assert.equal(s.startCode, 94712477241344n);
  assert.equal(s.endCode, 94712477261225n);
  assert.equal(s.startStack, 140733096779152n);
  assert.equal(s.startData, 94712477277232n);
  assert.equal(s.endData, 94712477278848n);
  assert.equal(s.startBrk, 94713045143552n);
  assert.equal(s.envEnd, 140733096783851n);
  assert.equal(s.exitCode, 0);
});

test('a command name with spaces and parentheses is cut at the last parenthesis', () => {
  const line = dataText('stat.txt').replace('(cat)', '(a) b (c))');
  const s = parseStat(line);
  assert.equal(s.comm, 'a) b (c)');
  assert.equal(s.ppid, 3315);
});

test('refuses malformed stat', () => {
  const good = dataText('stat.txt');
  const cases = [
    '',
    '12 cat R 1',
    good.replace(' R ', ' 7 '),
    good.replace('3315 3315', '3315 x'),
    good.split(' ').slice(0, 30).join(' '),
  ];
  for (const text of cases) {
    assert.throws(
      () => parseStat(text),
      (err: unknown) => isFerryError(err, 'FERRY_PARSE'),
      text,
    );
  }
});
