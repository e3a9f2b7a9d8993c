import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { isFerryError } from '../../src/errors.js';
import { initHashing } from '../../src/image/hash.js';
import { IMAGE_VERSION, openManifest, sealManifest } from '../../src/image/manifest.js';
import { integer, literal, object, string } from '../../src/image/schema.js';

before(() => initHashing());

const schema = object({
  format: literal('ferry-image'),
  version: literal(IMAGE_VERSION),
  pid: integer(1, 100),
  name: string(),
  checksum: string(),
});
const content = { format: 'ferry-image', version: IMAGE_VERSION, pid: 42, name: 'x' };

test('a sealed manifest opens to the same content, and re-seals to the same text', () => {
  const text = sealManifest(content).text;
  const opened = openManifest(text, schema, '/img');
  assert.deepEqual({ ...opened, checksum: undefined }, { ...content, checksum: undefined });
  const { checksum: _c, ...again } = opened;
  assert.equal(sealManifest(again).text, text);
});

test('edits, foreign files and newer versions are told apart', () => {
  const text = sealManifest(content).text;
  const cases: [string, string, RegExp][] = [
    [
      'FERRY_IMAGE_CORRUPT',
      text.replace('"pid": 42', '"pid": 43'),
      /does not match its checksum: it was edited or damaged/,
    ],
    ['FERRY_IMAGE_INVALID', '{"format": "other"}', /is not a ferry image/],
    ['FERRY_IMAGE_INVALID', 'not json', /is not JSON/],
    [
      'FERRY_IMAGE_INCOMPATIBLE',
      sealManifest({ ...content, version: IMAGE_VERSION + 1 }).text,
      new RegExp(`format version ${IMAGE_VERSION + 1}; this ferry reads version ${IMAGE_VERSION}`),
    ],
    [
      'FERRY_IMAGE_INVALID',
      sealManifest({ ...content, pid: 0 }).text,
      /manifest\.pid must be an integer from 1 to 100/,
    ],
  ];
  for (const [code, bad, message] of cases) {
    assert.throws(
      () => openManifest(bad, schema, '/img'),
      (err: unknown) => isFerryError(err) && err.code === code && message.test(err.message),
      code,
    );
  }
});

test('an image of an older version is read through the upgrade it is given', () => {
  const old = sealManifest({ format: 'ferry-image', version: IMAGE_VERSION - 1, pid: 42 }).text;
  const opened = openManifest(old, schema, '/img', (value, version) => ({
    ...value,
    name: `from ${version}`,
  }));
  assert.equal(opened.version, IMAGE_VERSION);
  assert.equal(opened.name, `from ${IMAGE_VERSION - 1}`);
});
