import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isFerryError } from '../../src/errors.js';
import { parseStatus } from '../../src/proc/status.js';
import { dataText } from '../helpers/data.js';

test('parses captured status', () => {
  const s = parseStatus(dataText('status.txt'));
  assert.equal(s.name, 'cat');
  assert.equal(s.state, 'R');
  assert.equal(s.tgid, s.pid);
  assert.equal(s.tracerPid, 0);
  assert.deepEqual(s.uids, [0, 0, 0, 0]);
  assert.equal(s.threads, 1);
  assert.equal(s.capEffective, 0x000001fffeffffffn);
  assert.equal(s.noNewPrivs, false);
  assert.equal(s.seccomp, 0);
  assert.equal(s.rssAnon, 112 * 1024);
  assert.equal(typeof s.raw.VmRSS, 'string');
});

test('refuses malformed status', () => {
  const good = dataText('status.txt');
  const cases = [
    'no colon here',
    good.replace(/^Pid:.*$/m, 'Pid:\tabc'),
    good.replace(/^Uid:.*$/m, 'Uid:\t0 0'),
    good.replace(/^SigBlk:.*$/m, 'SigBlk:\txyz'),
    good.replace(/^Name:.*\n/m, ''),
  ];
  for (const text of cases) {
    assert.throws(
      () => parseStatus(text),
      (err: unknown) => isFerryError(err, 'FERRY_PARSE'),
    );
  }
});
