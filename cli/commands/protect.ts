// pgvpd protect: turns on tenant isolation for one table through pgvpd.protect(), which the SQL
// core makes safe to repeat.
import type { Command } from 'commander';
import { connectionString, dbOption, queryOne, withClient, type DbOptions } from '../database.js';
import type { CliIo } from '../io.js';

export function register(program: Command, io: CliIo): void {
  program
    .command('protect')
    .summary('turn on tenant isolation for a table')
    .description(
      'turn on tenant isolation for a table: row level security enabled and forced, the pgvpd policy, and grants to the application roles; safe to run again',
    )
    .argument(
      '<table>',
      'the table, schema-qualified if need be (quote mixed-case names: \'"Sales"."Deals"\')',
    )
    .argument('[column]', 'its tenant column', 'tenant_id')
    .addOption(dbOption())
    .action(async (table: string, column: string, options: DbOptions) => {
      const url = connectionString(options);
      const result = await withClient(url, async (client) => {
        // The cast to regclass resolves the name as PostgreSQL would, search_path and quoting
        // included, and fails with 42P01 for an unknown table.
        const row = await queryOne<{ result: string }>(
          client,
          'select pgvpd.protect($1::regclass, $2) as result',
          [table, column],
        );
        return row.result;
      });
      io.out(`${result}\n`);
    });
}
