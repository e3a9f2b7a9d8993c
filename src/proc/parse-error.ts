// The error every /proc parser raises on text it does not understand: the file, the line, the text.
import { FerryError } from '../errors.js';

export function parseError(source: string, line: number, what: string, text: string): FerryError {
  const shown = text.length > 120 ? `${text.slice(0, 117)}...` : text;
  return new FerryError(
    'FERRY_PARSE',
    `${source} line ${line}: expected ${what}, got ${JSON.stringify(shown)}`,
  );
}
