// C fixtures, compiled with gcc by the tests themselves the first time they are needed; the binary
// name carries a hash of the source and the headers beside it, so an edited fixture is rebuilt.
// `name` may name a subdirectory (conformance/locks).
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync } from 'node:fs';
import { dirname } from 'node:path';
import { BUILD_DIR, FIXTURE_SOURCES } from './paths.js';

export function fixture(name: string): string {
  const source = `${FIXTURE_SOURCES}/${name}.c`;
  const hash = createHash('sha256').update(readFileSync(source));
  for (const header of readdirSync(dirname(source))
    .filter((f) => f.endsWith('.h'))
    .sort())
    hash.update(readFileSync(`${dirname(source)}/${header}`));
  const binary = `${BUILD_DIR}/fixtures/${name}-${hash.digest('hex').slice(0, 12)}`;
  if (existsSync(binary)) return binary;
  mkdirSync(dirname(binary), { recursive: true });
  const tmp = `${binary}.${process.pid}.tmp`;
  execFileSync('gcc', ['-O1', '-g', '-Wall', '-Werror', '-pthread', '-o', tmp, source], { stdio: 'inherit' });
  renameSync(tmp, binary);
  return binary;
}
