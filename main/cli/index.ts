#!/usr/bin/env node
import { Command } from 'commander';
import { registerCoordinatorCommand } from './coordinator-command.js';
import { registerLedgerCommand } from './ledger-command.js';
import { registerLocalCommand } from './local-command.js';
import { registerNodeCommand } from './node-command.js';

const program = new Command()
  .name('tributary')
  .description('Lend your idle GPU to decentralized AI training')
  .version('0.1.0')
  .showHelpAfterError();

registerCoordinatorCommand(program);
registerNodeCommand(program);
registerLocalCommand(program);
registerLedgerCommand(program);

program.parseAsync(process.argv).catch((err: Error) => {
  console.error(`tributary: ${err.message}`);
  process.exit(1);
});
