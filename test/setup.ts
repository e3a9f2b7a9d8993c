// Loaded before every test file (`node --import`): what this test process inherited beyond stdio
// (a pipe the shell or CI runner left open, say) reaches no workload it starts. A workload holding
// such a descriptor could not be checkpointed.
import { cloexecFrom } from '../src/sys/fcntl.js';

cloexecFrom(3);
