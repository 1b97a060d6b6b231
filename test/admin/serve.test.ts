// `pgvpd serve` with admin_port: it prints the control plane's URL, and on SIGTERM /readyz turns
// 503 "draining" while sessions drain (a client that has sent nothing keeps the drain going).
// App mode opens no database connection at start, so no database is needed.
import { connect } from 'node:net';
import t from 'tap';
import { spawnCli } from '../cli/spawn-cli.js';
import { request } from './admin-fixture.js';

t.test('serve prints the admin URL; SIGTERM makes /readyz 503 draining', async (t) => {
  const cli = spawnCli(
    [
      'serve',
      '--port',
      '0',
      '--admin-port',
      '0',
      '--shutdown-timeout',
      '5',
      '--handshake-timeout',
      '30',
      '--log-level',
      'silent',
      '--control-url',
      'postgresql://nobody@127.0.0.1:1/postgres',
    ],
    {},
  );
  t.teardown(() => cli.child.kill('SIGKILL'));
  const [, proxyPort] = await cli.waitFor(/pgvpd proxy listening on 127\.0\.0\.1:(\d+)\n/);
  const [, base] = await cli.waitFor(/pgvpd control plane on (http:\/\/127\.0\.0\.1:\d+)\n/);
  const health = await request(base!, '/healthz');
  t.equal(health.status, 200);
  const before = await request(base!, '/readyz');
  t.equal(before.status, 503, 'not ready: its control database does not answer');
  t.match(before.json, { status: 'not_ready', checks: { control: 'failing' } });

  const idle = connect(Number(proxyPort), '127.0.0.1');
  idle.on('error', () => undefined);
  await new Promise((resolve) => idle.once('connect', resolve));
  t.teardown(() => idle.destroy());
  await new Promise((resolve) => setTimeout(resolve, 100));
  cli.child.kill('SIGTERM');
  await cli.waitFor(/SIGTERM: draining/);
  const draining = await request(base!, '/readyz');
  t.equal(draining.status, 503);
  t.match(draining.json, { status: 'draining', checks: { listener: 'failing' } });
  idle.destroy();
  t.same(await cli.exited, { code: 0, signal: null }, 'exits once drained');
});
