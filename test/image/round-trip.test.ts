// Every image a dump produces decodes and re-encodes to the same bytes, and its manifest follows
// docs/image.schema.json, which is generated from the code (npm run docs:schema).
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { test } from 'node:test';
import { dump } from '../../src/checkpoint.js';
import { sealManifest } from '../../src/image/manifest.js';
import { encodePageIndex } from '../../src/image/page-index.js';
import { readImage } from '../../src/read-image.js';
import { imageJsonSchema } from '../../src/state/image.js';
import { cleanupAfterAll } from '../helpers/cleanup.js';
import { REPO } from '../helpers/paths.js';
import { validateAgainstSchema } from '../helpers/schema.js';
import { startStateFixture } from '../helpers/state-fixture.js';

const cleanup = cleanupAfterAll();

test('docs/image.schema.json is the schema the code checks', () => {
  const doc = JSON.parse(readFileSync(`${REPO}docs/image.schema.json`, 'utf8')) as unknown;
  assert.deepEqual(doc, JSON.parse(JSON.stringify(imageJsonSchema())), 'run npm run docs:schema');
});

for (const compress of [false, true]) {
  test(`a dumped image (${compress ? 'compressed' : 'raw'}) re-encodes identically and fits the schema`, async () => {
    const work = mkdtempSync(`${tmpdir()}/ferry-rt-`);
    cleanup(() => rmSync(work, { recursive: true, force: true }));
    const f = await startStateFixture(work);
    cleanup(() => f.stop());
    await dump(f.pid, { dir: `${work}/image`, leaveRunning: true, compress });
    const image = await readImage(`${work}/image`);
    const text = readFileSync(`${work}/image/manifest.json`, 'utf8');
    const { checksum: _c, ...content } = image.manifest;
    assert.equal(sealManifest(content).text, text);
    assert.ok(encodePageIndex(image.layers.at(-1)!.index).equals(readFileSync(`${work}/image/pagemap.img`)));
    validateAgainstSchema('image.schema.json', JSON.parse(text));
  });
}
