// The package's entry point exports the library the README documents.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as ferry from '../src/index.js';

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
  ] as const) {
    assert.equal(typeof ferry[name], 'function', name);
  }
});
