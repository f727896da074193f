import type { Command } from 'commander';
import { addDaemonOptions, daemonSettings, type DaemonFlags } from './daemon-command.js';
import { exitStatusOf, type CheckResult } from './doctor/check.js';
import { runDoctor } from './doctor/run-doctor.js';
import { printJson } from './output.js';

function line(r: CheckResult): string {
  return `${r.status.padEnd(4)}  ${r.check.padEnd(13)}  ${r.message}${r.advice ? ` -> ${r.advice}` : ''}`;
}

/**
 * `stowage doctor`: this node's set-up checked with the daemon's own settings (the same flags
 * and STOWAGE_* variables), whether the daemon runs or not. It only reads.
 */
export function addDoctorCommand(program: Command, socketOf: (cmd: Command) => string): void {
  addDaemonOptions(program.command('doctor')
    .description('check this node\'s set-up (give it the daemon\'s options) and say how to fix what is wrong; exit 1 on any fail'))
    .option('--json', 'print the checks as JSON')
    .option('--strict', 'exit 1 on warnings too')
    .action(async (flags: DaemonFlags & { json?: boolean; strict?: boolean }, cmd: Command) => {
      const results = await runDoctor(daemonSettings(flags, socketOf(cmd)));
      const status = exitStatusOf(results, Boolean(flags.strict));
      if (flags.json) printJson({ status: status === 0 ? 'ok' : 'action needed', exitStatus: status, checks: results });
      else process.stdout.write(results.map(line).join('\n') + '\n');
      process.exitCode = status;
    });
}
