// Where the `ferry` command is: beside this module's directory (dist/bin), or beside the bundle it is
// part of. For what ferry starts of its own: the guardian, the agents of `ferry demo cluster`.
import { fileURLToPath } from 'node:url';

export const ferryCommand = (): string => fileURLToPath(new URL('../bin/ferry', import.meta.url));
