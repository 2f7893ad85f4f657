#!/usr/bin/env node
import { Command, CommanderError } from 'commander';
import { registerCoordinatorCommand } from './coordinator-command.js';
import { registerLedgerCommand } from './ledger-command.js';
import { registerLocalCommand } from './local-command.js';
import { registerNodeCommand } from './node-command.js';
import { UsageError } from './options.js';

const program = new Command()
  .name('tributary')
  .description('Lend your idle GPU to decentralized AI training')
  .version('0.1.0')
  .showHelpAfterError('(add --help for the options)')
  .exitOverride();

// Started by bin/tributary.js, whose IPC channel closes when it dies: stop as on SIGTERM, never run on unseen.
if (process.channel) {
  process.channel.unref();
  process.once('disconnect', () => process.kill(process.pid, 'SIGTERM'));
}

registerCoordinatorCommand(program);
registerNodeCommand(program);
registerLocalCommand(program);
registerLedgerCommand(program);

/**
 * Exit codes a supervisor (systemd, a script) can act on: 0 done or stopped by a signal, 1 failed while
 * running, 2 bad usage (unknown flag, invalid value or settings; commander has already said what is wrong).
 */
program.parseAsync(process.argv).catch((err: Error) => {
  if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 2);
  console.error(`tributary: ${err.message}`);
  process.exit(err instanceof UsageError ? 2 : 1);
});
