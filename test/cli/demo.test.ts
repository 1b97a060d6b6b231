// `pgvpd demo` as a user runs it: an embedded PostgreSQL, the app-mode proxy and the org-mode
// proxy with its HTTP control plane; psql lines, an invite link and curl lines that work as
// printed; and Ctrl-C removing everything.
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
  const cli = spawnCli(['demo', '--port', '0', '--org-port', '0', '--admin-port', '0']);
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

  // Org mode: alice logs in as printed and sees acme's notes only.
  const alice = lines.find((line) => line.includes('user=alice"'));
  t.type(alice, 'string');
  const notes = await shell(`${alice!} -A -t`);
  t.equal(notes.code, 0);
  t.match(
    notes.out,
    /^\d+\|[0-9a-f-]{36}\|acme: ship the anvils\n\d+\|[0-9a-f-]{36}\|acme: order more rockets\n?$/,
  );

  // The invite link opens the setup page; its invite is open, for bob of acme.
  const link = lines.find((line) => line.includes('/setup#invite='));
  const parts = /^(http:\/\/127\.0\.0\.1:\d+)\/setup#invite=(pgvpd_inv_[0-9a-f]{72})$/.exec(
    link ?? '',
  );
  if (parts === null) throw new Error(`no setup link in:\n${cli.stdout()}`);
  const [, origin, invite] = parts;
  const page = await fetch(`${origin!}/setup`);
  t.equal(page.status, 200);
  t.match(await page.text(), '<script src="/setup.js" defer></script>');
  const info = await fetch(`${origin!}/api/v1/invites/info`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ invite }),
  });
  t.equal(info.status, 200);
  t.match(await info.json(), {
    org: { database_name: 'acme', display_name: 'Acme Inc' },
    username: 'bob',
    scram_iterations: 4096,
  });

  // The curl lines: /metrics with the metrics token, the status with the operator token.
  const metricsLine = lines.find((line) => line.startsWith('curl ') && line.endsWith('/metrics'));
  const statusLine = lines.find(
    (line) => line.startsWith('curl ') && line.endsWith('/api/v1/status'),
  );
  t.type(metricsLine, 'string');
  t.type(statusLine, 'string');
  const metrics = await shell(`${metricsLine!} -s -f`);
  t.equal(metrics.code, 0);
  t.match(metrics.out, /^# TYPE pgvpd_\w+ /m);
  t.equal((await fetch(`${origin!}/metrics`)).status, 401, 'not without the token');
  const status = await shell(`${statusLine!} -s -f`);
  t.equal(status.code, 0);
  t.type(JSON.parse(status.out), 'object');
  const withMetricsToken = await shell(
    `${metricsLine!.replace(/\/metrics$/, '/api/v1/status')} -s -o /dev/null -w '%{http_code}'`,
  );
  t.equal(withMetricsToken.out, '403', 'the metrics token reads no status');

  cli.child.kill('SIGINT');
  await cli.exited;
  t.notOk(existsSync(dir), 'Ctrl-C removed the data directory');
  t.match(cli.stderr(), 'stopping: proxy, PostgreSQL, demo files');
});
