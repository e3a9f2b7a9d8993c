import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isFerryError } from '../../src/errors.js';
import { hashBytes } from '../../src/image/hash.js';
import { serialize } from '../../src/image/json.js';
import { IMAGE_VERSION, openManifest, sealManifest } from '../../src/image/manifest.js';
import { integer, literal, object, string } from '../../src/image/schema.js';

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

test('a manifest laid out anew (the checksum moved, other indents) opens; an edit to it does not', () => {
  const { checksum, ...rest } = JSON.parse(sealManifest(content).text) as Record<string, unknown>;
  const relaid = JSON.stringify({ checksum, ...rest }, null, 4);
  assert.equal(openManifest(relaid, schema, '/img').pid, 42);
  assert.throws(
    () => openManifest(relaid.replace('"pid": 42', '"pid": 43'), schema, '/img'),
    /does not match its checksum/,
  );
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

test('a manifest sealed with xxHash64 (format 3 and older) is checked with it', () => {
  const old = { format: 'ferry-image', version: 3, pid: 42, name: 'x' };
  const checksum = hashBytes(Buffer.from(serialize(old)), 'xxh64');
  assert.match(checksum, /^xxh64:[0-9a-f]{16}$/);
  const opened = openManifest(serialize({ ...old, checksum }), schema, '/img');
  assert.equal(opened.pid, 42);
  assert.throws(
    () => openManifest(serialize({ ...old, pid: 43, checksum }), schema, '/img'),
    /does not match its checksum/,
  );
});
