// Validate output against the JSON schemas published in docs/.
import { readFileSync } from 'node:fs';
import { Ajv } from 'ajv';
import { REPO } from './paths.js';

export function validateAgainstSchema(name: string, value: unknown): void {
  const schema = JSON.parse(readFileSync(`${REPO}docs/${name}`, 'utf8')) as object;
  const ajv = new Ajv({ allErrors: true, strict: true });
  const validate = ajv.compile(schema);
  if (!validate(value)) throw new Error(`${name}: ${ajv.errorsText(validate.errors)}`);
}
