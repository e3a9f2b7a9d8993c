// Writes docs/image.schema.json from the manifest schema in src/state/image.ts:
//   npm run docs:schema
import { writeFileSync } from 'node:fs';
import { imageJsonSchema } from '../src/state/image.js';

writeFileSync(
  new URL('../../docs/image.schema.json', import.meta.url),
  `${JSON.stringify(imageJsonSchema(), null, 2)}\n`,
);
