// Where things are, seen from the compiled tests in dist/test.
import { fileURLToPath } from 'node:url';

export const REPO = fileURLToPath(new URL('../../../', import.meta.url));
export const FIXTURE_SOURCES = `${REPO}test/fixtures`;
export const TEST_DATA = `${REPO}test/data`;
export const BUILD_DIR = `${REPO}build`;
/** The `ferry` command as installed: Node from ferry's startup snapshot (scripts/bundle.ts). */
export const CLI = `${REPO}dist/bin/ferry`;
/** The bundle it falls back to without a snapshot for the running Node. */
export const CLI_BUNDLE = `${REPO}dist/bin/ferry.js`;
/** Debian's python3, the one the issues name. */
export const PYTHON = '/usr/bin/python3';
