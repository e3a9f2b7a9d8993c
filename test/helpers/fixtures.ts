// C fixtures, compiled with gcc by the tests themselves the first time they are needed; the binary
// name carries a hash of the source, so an edited fixture is rebuilt.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync } from 'node:fs';
import { BUILD_DIR, FIXTURE_SOURCES } from './paths.js';

export function fixture(name: string): string {
  const source = `${FIXTURE_SOURCES}/${name}.c`;
  const hash = createHash('sha256').update(readFileSync(source)).digest('hex').slice(0, 12);
  const dir = `${BUILD_DIR}/fixtures`;
  const binary = `${dir}/${name}-${hash}`;
  if (existsSync(binary)) return binary;
  mkdirSync(dir, { recursive: true });
  const tmp = `${binary}.${process.pid}.tmp`;
  execFileSync('gcc', ['-O1', '-g', '-Wall', '-Werror', '-pthread', '-o', tmp, source], { stdio: 'inherit' });
  renameSync(tmp, binary);
  return binary;
}
