import { writeFile } from 'node:fs/promises';
import { InvalidArgumentError, type Command } from 'commander';
import { inspectLedger } from '../agent/ledger/health.js';
import { EXPORT_TABLES, Ledger, type ExportTable } from '../agent/ledger/ledger.js';
import { agentPaths, defaultDataDir } from '../agent/paths.js';
import { UsageError } from './options.js';

function exportTable(value: string): ExportTable {
  if (!(EXPORT_TABLES as readonly string[]).includes(value)) {
    throw new InvalidArgumentError(`expected one of ${EXPORT_TABLES.join(', ')}`);
  }
  return value as ExportTable;
}

interface LedgerFlags {
  db?: string;
  dataDir?: string;
}

function ledgerPath(flags: LedgerFlags): string {
  return flags.db ?? agentPaths(flags.dataDir ?? defaultDataDir()).ledger;
}

/** Read-only: checking or exporting a ledger never changes it. */
function openExisting(path: string): Ledger {
  const health = inspectLedger(path);
  if (health.state === 'absent')
    throw new UsageError(`no ledger at ${path} (use --db or --data-dir to point at one)`);
  if (health.state === 'unusable') throw new Error(`Ledger UNUSABLE (${path}): ${health.reason}`);
  return new Ledger(path, { readonly: true });
}

/** `tributary ledger verify|export`: check the hash chain, or write a table as CSV. */
export function registerLedgerCommand(program: Command): void {
  const ledger = program
    .command('ledger')
    .description('Check or export your local ledger of work and credits');
  const dbOption = ['--db <path>', `ledger file (default: ledger.sqlite in the data dir)`] as const;
  const dataDirOption = ['--data-dir <dir>', "the node's data directory", defaultDataDir()] as const;

  ledger
    .command('verify')
    .description('Check every entry against the hash chain and every receipt against its signature')
    .option(...dbOption)
    .option(...dataDirOption)
    .option('--json', 'print the result as JSON')
    .action((options: LedgerFlags & { json?: boolean }) => {
      const path = ledgerPath(options);
      const db = openExisting(path);
      try {
        const result = db.verify((checked, total) => {
          if (total > 10_000)
            process.stderr.write(`\rchecked ${checked} of ${total} entries${checked === total ? '\n' : ''}`);
        });
        if (options.json) console.log(JSON.stringify(result));
        else if (result.ok)
          console.log(
            `Ledger intact: ${result.entries} entries, hash chain, signed head and coordinator signatures verified (${path})`,
          );
        else {
          console.log(
            `Ledger TAMPERED (${path}): ${result.problems.length} problem(s) in ${result.entries} entries`,
          );
          for (const p of result.problems) console.log(`  - ${p.message}`);
        }
        if (!result.ok) process.exitCode = 1;
      } finally {
        db.close();
      }
    });

  ledger
    .command('export')
    .description('Write a ledger table as CSV (receipts include their credit state)')
    .option(...dbOption)
    .option(...dataDirOption)
    .option('--table <name>', `one of ${EXPORT_TABLES.join(', ')}`, exportTable, 'receipts' as ExportTable)
    .option('--out <file>', 'write here instead of standard output')
    .action(async (options: LedgerFlags & { table: ExportTable; out?: string }) => {
      const db = openExisting(ledgerPath(options));
      try {
        const csv = db.exportCsv(options.table);
        if (options.out === undefined) process.stdout.write(csv);
        else {
          await writeFile(options.out, csv);
          const rows = csv.split('\r\n').length - 2;
          console.error(`Wrote ${rows} ${options.table} row(s) to ${options.out}`);
        }
      } finally {
        db.close();
      }
    });
}
