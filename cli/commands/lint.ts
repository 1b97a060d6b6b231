// pgvpd lint: pgvpd.lint(), what could leak and how to fix it. Exits 1 when a finding has
// severity 'error' (the SQL core's other severity is 'warning'), so that CI can gate on it.
import type { Command } from 'commander';
import { CliExit } from '../cli-exit.js';
import { connectionString, dbOption, withClient, type DbOptions } from '../database.js';
import type { CliIo } from '../io.js';
import { renderTable } from '../table.js';

interface LintOptions extends DbOptions {
  json?: boolean;
}

interface Finding {
  severity: string;
  check_name: string;
  object: string;
  detail: string;
  fix: string;
}

function plural(count: number, word: string): string {
  return `${count} ${word}${count === 1 ? '' : 's'}`;
}

export function register(program: Command, io: CliIo): void {
  program
    .command('lint')
    .summary('list what could leak, with a fix for each')
    .description(
      'list what could leak one tenant\'s rows to another, with a fix for each; exits 1 when a finding has severity "error"',
    )
    .addOption(dbOption())
    .option('--json', 'print a JSON array of pgvpd.lint() rows instead of a table')
    .action(async (options: LintOptions) => {
      const url = connectionString(options);
      const findings = await withClient(url, async (client) => {
        const result = await client.query<Finding>(
          'select severity, check_name, object, detail, fix from pgvpd.lint()',
        );
        return result.rows;
      });
      const errors = findings.filter((finding) => finding.severity === 'error').length;
      if (options.json === true) {
        io.out(`${JSON.stringify(findings, null, 2)}\n`);
      } else if (findings.length === 0) {
        io.out('no findings\n');
      } else {
        io.out(renderTable(findings, ['severity', 'check_name', 'object', 'detail', 'fix']));
        io.out(
          `${plural(findings.length, 'finding')}: ${plural(errors, 'error')}, ${plural(findings.length - errors, 'warning')}\n`,
        );
      }
      if (errors > 0) throw new CliExit(1);
    });
}
