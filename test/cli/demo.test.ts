// `pgvpd demo` as a user runs it: an embedded PostgreSQL, the proxy, psql lines that work as
// printed, and Ctrl-C removing everything.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import t from 'tap';
import { spawnCli } from './spawn-cli.js';

function shell(line: string): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile('bash', ['-c', line], { encoding: 'utf8' }, (error, stdout, stderr) => {
      resolve({ code: error ? Number(error.code) : 0, out: `${stdout}${stderr}` });
    });
  });
}

t.test('the demo prints psql lines that show isolation, and Ctrl-C removes it all', async (t) => {
  const cli = spawnCli(['demo', '--port', '0']);
  t.teardown(() => cli.child.kill('SIGKILL'));
  await cli.waitFor(/Press Ctrl-C to stop/, 120_000);
  const lines = cli
    .stdout()
    .split('\n')
    .map((line) => line.trim());
  const dir = /data directory (\S+) are removed/.exec(cli.stdout())?.[1] ?? '';
  t.ok(existsSync(dir), 'the data directory exists while the demo runs');
  const acme = lines.find(
    (line) => line.includes('user=app_user.acme"') && line.endsWith('-c "select * from invoices"'),
  );
  const globex = lines.find((line) => line.includes('user=app_user.globex"'));
  const forged = lines.find((line) => line.includes("set pgvpd.context = 'forged'"));
  const direct = lines.find((line) => line.includes('user=app_user"'));
  const write = lines.find((line) => line.includes('insert into invoices'));
  for (const line of [acme, globex, forged, direct, write]) t.type(line, 'string');

  const acmeRows = await shell(`${acme!} -A -t`);
  t.equal(acmeRows.code, 0);
  t.match(
    acmeRows.out,
    /^\d+\|acme\|Wile E\. Coyote\|120\.00\n\d+\|acme\|Road Runner Inc\.\|75\.50\n?$/,
  );
  const globexRows = await shell(`${globex!} -A -t`);
  t.equal(globexRows.out.trim().split('\n').length, 3, 'globex sees its three invoices');
  t.notMatch(globexRows.out, /acme/);
  t.match((await shell(`${forged!} -A -t`)).out, /^SET\n0\n?$/, 'a forged context sees nothing');
  t.match((await shell(`${direct!} -A -t`)).out, /^0\n?$/, 'a direct connection sees nothing');
  const refused = await shell(write!);
  t.equal(refused.code, 1);
  t.match(refused.out, 'new row violates row-level security policy for table "invoices"');

  cli.child.kill('SIGINT');
  await cli.exited;
  t.notOk(existsSync(dir), 'Ctrl-C removed the data directory');
  t.match(cli.stderr(), 'stopping: proxy, PostgreSQL, demo files');
});
