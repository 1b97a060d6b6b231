// pgvpd status: pgvpd.status(), one row per user table with its verdict, then a line on tenant
// confinement (pgvpd.confinement(): which facilities that reach across sessions of one role are
// closed). --json keeps printing the table rows only, as before.
import type { Command } from 'commander';
import { connectionString, dbOption, withClient, type DbOptions } from '../database.js';
import type { CliIo } from '../io.js';
import { renderTable } from '../table.js';

interface StatusRow {
  table_oid: string;
  schema_name: string;
  table_name: string;
  tenant_column: string | null;
  rls_enabled: boolean;
  rls_forced: boolean;
  pgvpd_policy: boolean;
  verdict: string;
}

interface StatusOptions extends DbOptions {
  json?: boolean;
}

export function register(program: Command, io: CliIo): void {
  program
    .command('status')
    .summary('show which tables are protected')
    .description(
      'show, table by table, whether tenant isolation is on: tenant column, RLS enabled and forced, pgvpd policy, verdict',
    )
    .addOption(dbOption())
    .option('--json', 'print a JSON array of pgvpd.status() rows instead of a table')
    .action(async (options: StatusOptions) => {
      const url = connectionString(options);
      const { rows, confinement } = await withClient(url, async (client) => {
        // The name as it must be written, always schema-qualified: regclass::text would drop
        // the schema of tables on this session's search_path.
        const result = await client.query<StatusRow>(
          `select format('%I.%I', schema_name, table_name) as table_oid, schema_name, table_name,
                  tenant_column, rls_enabled, rls_forced, pgvpd_policy, verdict
             from pgvpd.status()`,
        );
        const facilities = await client.query<{ facility: string; state: string }>(
          'select facility, state from pgvpd.confinement()',
        );
        return { rows: result.rows, confinement: facilities.rows };
      });
      const confinementLine = `tenant confinement: ${confinement
        .map((row) => `${row.facility} ${row.state}`)
        .join(', ')}\n`;
      if (options.json === true) {
        io.out(`${JSON.stringify(rows, null, 2)}\n`);
        return;
      }
      if (rows.length === 0) {
        io.out(`no tables\n${confinementLine}`);
        return;
      }
      const display = rows.map((row) => ({ table: row.table_oid, ...row }));
      io.out(
        renderTable(display, [
          'table',
          'tenant_column',
          'rls_enabled',
          'rls_forced',
          'pgvpd_policy',
          'verdict',
        ]) + confinementLine,
      );
    });
}
