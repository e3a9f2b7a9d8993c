#!/usr/bin/env node
// The `ferry` command, run by Node without the startup snapshot (see scripts/snapshot.ts).
import { runCli } from './main.js';

runCli(process.argv.slice(2));
