// ferry check [--json]
import { check } from '../check.js';
import { printJson, startup, type Command } from './command.js';
import { renderTable } from './format.js';

export const checkCommand: Command = {
  name: 'check',
  summary: 'probe what this kernel and these privileges offer for checkpoint/restore',
  usage: 'ferry check [--json]',
  options: {},
  positionals: { min: 0, max: 0 },
  run({ values }) {
    const report = check();
    const exit = report.ok ? 0 : 1;
    const cliStartup = startup.fromSnapshot ? 'snapshot' : 'bundle';
    if (values.json) {
      printJson({ ...report, cliStartup });
      return exit;
    }
    const rows = report.features.map((f) => [
      f.available ? 'yes' : f.required ? 'NO (required)' : 'no',
      f.id,
      f.available ? f.usedFor : `${f.detail}; without it: ${f.without}`,
    ]);
    process.stdout.write(`kernel ${report.kernel}\n\n`);
    process.stdout.write(
      `${renderTable([{ header: 'OK' }, { header: 'FEATURE' }, { header: 'USE / WITHOUT IT' }], rows)}\n\n`,
    );
    process.stdout.write(`dirty-page tracking: ${report.dirtyTracking}\n`);
    process.stdout.write(
      startup.fromSnapshot
        ? 'ferry commands start from the startup snapshot built for this Node\n'
        : 'ferry commands start without a startup snapshot (none built for this Node: npm run build)\n',
    );
    process.stdout.write(
      report.ok
        ? 'checkpoint/restore can work here\n'
        : 'checkpoint/restore cannot work here: a required feature is missing\n',
    );
    return exit;
  },
};
