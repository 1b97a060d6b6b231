// The CLI's surface without a database: help for every command, the version, and the errors for
// arguments it cannot work with.
import { readFileSync } from 'node:fs';
import t from 'tap';
import { CliExit, createProgram } from '../../cli/program.js';
import { pgvpd, withDatabaseUrl } from './run-cli.js';

const { version } = JSON.parse(
  readFileSync(new URL('../../package.json', import.meta.url), 'utf8'),
) as { version: string };

const commands: { name: string; usage: string; says: RegExp }[] = [
  { name: 'setup', usage: 'pgvpd setup [options]', says: /install or upgrade pgvpd's SQL/ },
  {
    name: 'protect',
    usage: 'pgvpd protect [options] <table> [column]',
    says: /turn on tenant isolation for a table/,
  },
  { name: 'status', usage: 'pgvpd status [options]', says: /whether tenant isolation is on/ },
  { name: 'lint', usage: 'pgvpd lint [options]', says: /what could leak one tenant's rows/ },
  { name: 'doctor', usage: 'pgvpd doctor [options]', says: /check that pgvpd can run safely/ },
];

for (const command of commands) {
  t.test(`${command.name} --help says what the command does and exits 0`, async (t) => {
    const result = await pgvpd(command.name, '--help');
    t.equal(result.code, 0);
    t.equal(result.err, '');
    t.match(result.out, `Usage: ${command.usage}\n`);
    t.match(result.out, command.says);
    t.match(result.out, /--db <url>\s+connection string of the database \(env: DATABASE_URL\)/);
  });
}

t.test('pgvpd --help lists every command', async (t) => {
  const result = await pgvpd('--help');
  t.equal(result.code, 0);
  for (const command of commands) t.match(result.out, new RegExp(`^  ${command.name}\\b`, 'm'));
});

t.test('pgvpd --version prints the package version', async (t) => {
  t.same(await pgvpd('--version'), { code: 0, out: `${version}\n`, err: '' });
});

const needDatabase: string[][] = [
  ['setup'],
  ['protect', 'public.docs'],
  ['status'],
  ['lint'],
  ['doctor'],
];

for (const args of needDatabase) {
  t.test(
    `${args[0]} without --db or DATABASE_URL says how to name the database and exits 1`,
    async (t) => {
      const result = await withDatabaseUrl(undefined, () => pgvpd(...args));
      t.same(result, {
        code: 1,
        out: '',
        err: 'error: no database: pass --db <url> or set DATABASE_URL\n',
      });
    },
  );
}

t.test('an empty DATABASE_URL counts as none', async (t) => {
  const result = await withDatabaseUrl('', () => pgvpd('status'));
  t.same(result, {
    code: 1,
    out: '',
    err: 'error: no database: pass --db <url> or set DATABASE_URL\n',
  });
});

t.test('protect without a table is rejected by the argument parser with exit code 1', async (t) => {
  t.same(await pgvpd('protect', '--db', 'postgres://x/y'), {
    code: 1,
    out: '',
    err: "error: missing required argument 'table'\n",
  });
});

t.test('an unknown option is rejected with exit code 1', async (t) => {
  t.same(await pgvpd('status', '--nope'), {
    code: 1,
    out: '',
    err: "error: unknown option '--nope'\n",
  });
});

t.test(
  'createProgram can be driven directly: a failing command rejects with a CliExit and its code',
  async (t) => {
    let out = '';
    const program = createProgram({
      out: (text) => {
        out += text;
      },
      err: (text) => {
        out += text;
      },
    });
    const error: unknown = await withDatabaseUrl(undefined, () =>
      program.parseAsync(['node', 'pgvpd', 'lint']).then(
        () => undefined,
        (rejected: unknown) => rejected,
      ),
    );
    t.ok(error instanceof CliExit, 'a CliExit');
    t.match(error, { exitCode: 1, message: 'no database: pass --db <url> or set DATABASE_URL' });
    t.equal(out, '', 'the message is left to the caller (runCli prints it)');
  },
);
