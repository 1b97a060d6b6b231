// pgvpd serve says what failed at start-up, one message per cause, and exits 1: a missing
// control_url, an unreadable or invalid client TLS certificate, an unreadable upstream_tls_ca, a
// connect_as passfile readable by others or unreadable, a catalog that cannot be loaded, a port
// that cannot be listened on. None of these needs a database: app mode opens no connection
// before its first client, and org mode reads its passwords before it loads the catalog.
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { spawnCli } from './spawn-cli.js';

const dir = mkdtempSync(join(tmpdir(), 'pgvpd-serve-startup-'));
const missing = join(dir, 'missing.pem');
const garbage = join(dir, 'garbage.pem');
writeFileSync(garbage, 'not a certificate\n');
const openPassfile = join(dir, 'open-passfile');
writeFileSync(openPassfile, '*:*:*:alice:secret\n', { mode: 0o644 });
const passfileDir = join(dir, 'passfile-dir');
mkdirSync(passfileDir, { mode: 0o700 });
// Nothing listens on port 1 of the loopback: a catalog there cannot be loaded.
const deadControl = 'postgresql://pgvpd_proxy@127.0.0.1:1/postgres';

async function startFails(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number | null; stderr: string }> {
  const cli = spawnCli(['serve', '--port', '0', '--log-level', 'silent', ...args], {
    PGVPD_CONTROL_URL: '',
    ...env,
  });
  t.teardown(() => cli.child.kill('SIGKILL'));
  const exited = await cli.exited;
  return { code: exited.code, stderr: cli.stderr() };
}

t.test('each start-up failure has its own message and exit code 1', async (t) => {
  const cases: { name: string; args: string[]; message: string | RegExp }[] = [
    {
      name: 'no control_url',
      args: [],
      message:
        'control_url is required: the proxy issues tenant contexts over it (role pgvpd_proxy)',
    },
    {
      name: 'a client TLS certificate that does not exist',
      args: ['--control-url', deadControl, '--tls-cert', missing, '--tls-key', missing],
      message: `cannot load the client TLS certificate (tls_cert ${missing}, tls_key ${missing}): ENOENT: no such file or directory, open '${missing}'`,
    },
    {
      name: 'a client TLS certificate that is not PEM',
      args: ['--control-url', deadControl, '--tls-cert', garbage, '--tls-key', garbage],
      // The rest is OpenSSL's own wording, which differs between versions.
      message: new RegExp(
        `^cannot load the client TLS certificate \\(tls_cert ${garbage}, tls_key ${garbage}\\): .+$`,
      ),
    },
    {
      name: 'an upstream_tls_ca that does not exist',
      args: ['--control-url', deadControl, '--upstream-tls', '--upstream-tls-ca', missing],
      message: `cannot read upstream_tls_ca ${missing}: ENOENT: no such file or directory, open '${missing}'`,
    },
    {
      name: 'a connect_as passfile readable by others',
      args: ['--mode', 'org', '--control-url', deadControl, '--connect-as-passfile', openPassfile],
      message: `connect_as_passfile ${openPassfile} is readable by group or others; chmod 0600 it`,
    },
    {
      name: 'a connect_as passfile that cannot be read',
      args: ['--mode', 'org', '--control-url', deadControl, '--connect-as-passfile', passfileDir],
      message:
        'cannot read the connect_as passwords: EISDIR: illegal operation on a directory, read',
    },
    {
      name: 'a catalog that cannot be loaded',
      args: ['--mode', 'org', '--control-url', deadControl],
      message:
        'cannot load the org catalog over control_url (a pgvpd_proxy member must be able to call pgvpd.catalog_snapshot()): connect ECONNREFUSED 127.0.0.1:1',
    },
  ];
  for (const c of cases) {
    const result = await startFails(c.args);
    t.equal(result.code, 1, `${c.name}: exit code 1`);
    const lines = result.stderr.trimEnd().split('\n');
    t.equal(lines.length, 1, `${c.name}: one line`);
    const line = lines[0] ?? '';
    if (typeof c.message === 'string') t.equal(line, `error: ${c.message}`, c.name);
    else t.match(line.replace(/^error: /, ''), c.message, c.name);
  }
});

t.test('a port already in use is named with the reason', async (t) => {
  const holder = createServer();
  await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
  t.teardown(() => holder.close());
  const address = holder.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  const cli = spawnCli(
    ['serve', '--port', String(port), '--log-level', 'silent', '--control-url', deadControl],
    {},
  );
  t.teardown(() => cli.child.kill('SIGKILL'));
  t.same(await cli.exited, { code: 1, signal: null });
  t.equal(
    cli.stderr(),
    `error: cannot listen on 127.0.0.1:${String(port)}: listen EADDRINUSE: address already in use 127.0.0.1:${String(port)}\n`,
  );
});
