// Captured /proc text, for parser tests.
import { readFileSync } from 'node:fs';
import { TEST_DATA } from './paths.js';

export const dataText = (name: string): string => readFileSync(`${TEST_DATA}/${name}`, 'latin1');
export const dataBytes = (name: string): Buffer => readFileSync(`${TEST_DATA}/${name}`);
