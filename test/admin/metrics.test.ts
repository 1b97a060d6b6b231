// The proxy's metrics after real traffic through an app-mode and an org-mode proxy: each counter
// holds exactly what the traffic did (connections, handshakes, refusals by SQLSTATE and reason,
// cancel requests, contexts issued, catalog reloads, pool sessions, backends readied and owner
// switches, transactions served by transaction pooling, instance registrations), the pgvpd_* lines pass
// `promtool check metrics` (Debian package prometheus; this test fails without it), and no org
// id, database name, username, tenant or role name used here appears anywhere in the output.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import t from 'tap';
import { sqlstate } from '../support/pgvpd.js';
import { testCertificates } from '../support/postgres.js';
import { sslRequest } from '../support/wire.js';
import { backendKey, sendCancelRequest, waitFor } from '../proxy/clients-support.js';
import { proxyFixture } from '../proxy/fixture.js';
import { orgFixture } from '../proxy/org-fixture.js';
import type { Runtime } from '../../proxy/runtime.js';

const promtool = '/usr/bin/promtool';
const version = (
  JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
    version: string;
  }
).version;

/** The value of one series, `name{labels}` exactly as rendered; undefined when absent. */
function value(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** The HELP, TYPE and sample lines of the pgvpd_* metrics. */
function pgvpdLines(text: string): string {
  return (
    text
      .split('\n')
      .filter((l) => /^(# (HELP|TYPE) )?pgvpd_/.test(l))
      .join('\n') + '\n'
  );
}

/** What `promtool check metrics` says of the text (status 0 and no output: clean). */
function promtoolCheck(text: string): { status: number | null; output: string } {
  const run = spawnSync(promtool, ['check', 'metrics'], { input: text, encoding: 'utf8' });
  return { status: run.status, output: `${run.stdout}${run.stderr}`.trim() };
}

async function closedAll(runtime: Runtime): Promise<boolean> {
  return waitFor(() => runtime.sessions.size === 0);
}

t.test('promtool is installed (Debian package prometheus)', (t) => {
  t.ok(existsSync(promtool), `${promtool} exists; apt-get install prometheus`);
  t.end();
});

t.test(
  'app mode: connections, handshakes, refusals, cancels and contexts, counted exactly',
  async (t) => {
    const f = await proxyFixture(t);
    const runtime = f.proxy.runtime;
    const metrics = runtime.metrics;

    const clients = [
      await f.connect(f.userFor('acme')),
      await f.connect(f.userFor('acme')),
      await f.connect(f.userFor('globex')),
    ];
    for (const client of clients) await client.query('select 1');
    let text = await metrics.render();
    t.equal(value(text, 'pgvpd_client_connections_total{mode="app"}'), 3, '3 connections');
    t.equal(value(text, 'pgvpd_client_sessions{mode="app",phase="pipe"}'), 3, '3 piped now');
    t.equal(value(text, 'pgvpd_client_sessions{mode="app",phase="startup"}'), 0);
    t.equal(
      value(text, 'pgvpd_handshake_duration_seconds_count{mode="app",outcome="ok"}'),
      3,
      '3 handshakes ended in ReadyForQuery',
    );
    t.equal(value(text, 'pgvpd_context_issue_duration_seconds_count'), 3, '3 contexts issued');
    t.equal(value(text, 'pgvpd_control_connection_up'), 1);
    t.equal(value(text, `pgvpd_build_info{version="${version}",mode="app"}`), 1);

    t.equal(await sqlstate(f.connect(f.userFor('acme'), 'not the password')), '28P01');
    const key = backendKey(clients[0]!);
    await sendCancelRequest(f.proxy.port, key.processId, key.secretKey);
    await sendCancelRequest(f.proxy.port, key.processId, key.secretKey ^ 1);
    for (const client of clients) await client.end();
    t.ok(await closedAll(runtime), 'every session closed');

    text = await metrics.render();
    t.equal(value(text, 'pgvpd_client_connections_total{mode="app"}'), 6, '+1 refused, +2 cancels');
    t.equal(value(text, 'pgvpd_auth_failures_total{mode="app",reason="password"}'), 1);
    t.equal(value(text, 'pgvpd_client_errors_total{mode="app",sqlstate="28P01"}'), 1);
    t.equal(value(text, 'pgvpd_handshake_duration_seconds_count{mode="app",outcome="error"}'), 1);
    t.equal(value(text, 'pgvpd_cancel_requests_total{outcome="forwarded"}'), 1);
    t.equal(value(text, 'pgvpd_cancel_requests_total{outcome="unknown_key"}'), 1);
    t.equal(
      value(text, 'pgvpd_session_duration_seconds_count{mode="app"}'),
      4,
      'sessions closed: 3 served, 1 refused (cancel requests are not sessions)',
    );
    t.equal(value(text, 'pgvpd_client_sessions{mode="app",phase="pipe"}'), 0);
    t.ok((value(text, 'pgvpd_client_received_bytes_total{mode="app"}') ?? 0) > 0, 'bytes read');
    t.ok((value(text, 'pgvpd_client_sent_bytes_total{mode="app"}') ?? 0) > 0, 'bytes written');
    t.equal(value(text, 'pgvpd_draining'), 0);

    t.same(promtoolCheck(pgvpdLines(text)), { status: 0, output: '' }, 'promtool: clean');
    for (const name of [f.userFor('acme'), f.app.name, f.proxyRole.name, f.db.name, 'globex']) {
      t.notOk(text.includes(name), `${name} is nowhere in the output`);
    }

    const closing = f.proxy.close(1);
    t.equal(value(await metrics.render(), 'pgvpd_draining'), 1, 'draining once close began');
    await closing;
  },
);

t.test(
  'org mode: refusals by reason, the catalog, the pool and active orgs, counted exactly',
  async (t) => {
    const f = await orgFixture(t);
    const runtime = f.proxy.runtime;
    const metrics = runtime.metrics;
    const pool = runtime.org!.pool;

    let text = await metrics.render();
    t.equal(value(text, 'pgvpd_catalog_reloads_total{outcome="ok"}'), 1, 'loaded at start');
    t.equal(value(text, 'pgvpd_catalog_orgs{status="active"}'), 2);
    t.equal(value(text, 'pgvpd_catalog_orgs{status="suspended"}'), 0);
    t.equal(value(text, 'pgvpd_catalog_users'), 2);
    const loadedAt = value(text, 'pgvpd_catalog_last_reload_timestamp_seconds') ?? 0;
    t.ok(Math.abs(Date.now() / 1000 - loadedAt) < 60, 'loaded just now');

    const clients = [
      await f.connect('acme-analytics', 'alice', 'alice-at-acme'),
      await f.connect('acme-analytics', 'alice', 'alice-at-acme'),
      await f.connect('beta-db', 'alice', 'alice-at-beta'),
    ];
    for (const client of clients) await client.query('select 1');
    text = await metrics.render();
    t.equal(value(text, 'pgvpd_client_connections_total{mode="org"}'), 3, '3 connections');
    t.equal(value(text, 'pgvpd_client_sessions{mode="org",phase="pipe"}'), 3);
    t.equal(value(text, 'pgvpd_active_orgs'), 2, 'two orgs have sessions');
    t.equal(value(text, 'pgvpd_pool_sessions{state="busy"}'), 3, '3 pooled sessions lent');
    t.equal(value(text, 'pgvpd_pool_sessions_opened_total'), 3);
    t.equal(value(text, 'pgvpd_pool_checkout_duration_seconds_count'), 3, '3 checkouts');
    t.equal(value(text, 'pgvpd_pool_keys'), 1, 'one (server, database, role)');
    t.equal(
      value(text, 'pgvpd_pool_owner_switches_total{kind="switch"}'),
      3,
      'a context switched in on each new backend',
    );
    t.equal(value(text, 'pgvpd_pool_owner_switches_total{kind="reset"}'), 0, 'no owner changed');
    t.equal(value(text, 'pgvpd_pool_readying_seconds_count{kind="switch"}'), 3);
    t.equal(value(text, 'pgvpd_instance_registrations_total{result="ok"}'), 1, 'one registration');
    t.equal(value(text, 'pgvpd_instance_registrations_total{result="error"}'), 0);
    t.equal(value(text, 'pgvpd_pool_transactions_total'), 0, 'session pooling');
    t.equal(value(text, 'pgvpd_handshake_duration_seconds_count{mode="org",outcome="ok"}'), 3);
    t.equal(value(text, `pgvpd_build_info{version="${version}",mode="org"}`), 1);

    for (const client of clients) await client.end();
    t.ok(await closedAll(runtime), 'every session closed');
    t.ok(await waitFor(() => pool.stats().idle === 3), 'the pooled sessions went back idle');
    text = await metrics.render();
    t.equal(value(text, 'pgvpd_active_orgs'), 0);
    t.equal(value(text, 'pgvpd_pool_sessions{state="idle"}'), 3);
    t.equal(value(text, 'pgvpd_pool_sessions{state="busy"}'), 0);
    t.equal(
      value(text, 'pgvpd_pool_owner_switches_total{kind="switch"}'),
      3,
      'no switch at release',
    );
    t.equal(
      value(text, 'pgvpd_pool_readying_seconds_count{kind="restore"}'),
      3,
      'each release put its owner’s context back after the reset, with set_context',
    );

    t.equal(await sqlstate(f.connect('acme-analytics', 'alice', 'wrong')), '28P01');
    t.equal(await sqlstate(f.connect('acme-analytics', 'mallory', 'alice-at-acme')), '28P01');
    t.equal(await sqlstate(f.connect('nope-db', 'alice', 'alice-at-acme')), '3D000');
    await f.db.query('select pgvpd.org_suspend($1)', [f.orgs.beta]);
    t.ok(
      await waitFor(
        async () => value(await metrics.render(), 'pgvpd_catalog_orgs{status="suspended"}') === 1,
      ),
      'the catalog reloaded on NOTIFY',
    );
    t.equal(await sqlstate(f.connect('beta-db', 'alice', 'alice-at-beta')), '28000');
    t.ok(await closedAll(runtime), 'every session closed');

    text = await metrics.render();
    t.equal(value(text, 'pgvpd_client_connections_total{mode="org"}'), 7);
    t.equal(
      value(text, 'pgvpd_auth_failures_total{mode="org",reason="password"}'),
      2,
      'a wrong password and an unknown user are both password',
    );
    t.equal(value(text, 'pgvpd_auth_failures_total{mode="org",reason="unknown_database"}'), 1);
    t.equal(value(text, 'pgvpd_auth_failures_total{mode="org",reason="suspended"}'), 1);
    t.equal(value(text, 'pgvpd_client_errors_total{mode="org",sqlstate="28P01"}'), 2);
    t.equal(value(text, 'pgvpd_client_errors_total{mode="org",sqlstate="3D000"}'), 1);
    t.equal(value(text, 'pgvpd_client_errors_total{mode="org",sqlstate="28000"}'), 1);
    t.equal(value(text, 'pgvpd_handshake_duration_seconds_count{mode="org",outcome="error"}'), 4);
    t.equal(value(text, 'pgvpd_session_duration_seconds_count{mode="org"}'), 7);
    t.equal(value(text, 'pgvpd_auth_throttled_total'), 0, 'two failures are not throttled');
    t.equal(value(text, 'pgvpd_catalog_reloads_total{outcome="ok"}'), 2);
    t.equal(value(text, 'pgvpd_catalog_orgs{status="active"}'), 1);

    t.same(promtoolCheck(pgvpdLines(text)), { status: 0, output: '' }, 'promtool: clean');
    for (const name of [
      f.orgs.acme,
      f.orgs.beta,
      'acme-analytics',
      'beta-db',
      'nope-db',
      'alice',
      'mallory',
      f.connectAs,
      f.proxyRole.name,
      f.db.name,
    ]) {
      t.notOk(text.includes(name), `${name} is nowhere in the output`);
    }
  },
);

t.test(
  'a checkout that times out, and pooled sessions closed at shutdown, are counted',
  async (t) => {
    const f = await orgFixture(t, { pool_size: 1, pool_checkout_timeout: 0.3 });
    const metrics = f.proxy.runtime.metrics;
    const holder = await f.connect('acme-analytics', 'alice', 'alice-at-acme');
    await holder.query('select 1');
    t.equal(await sqlstate(f.connect('acme-analytics', 'alice', 'alice-at-acme')), '53300');
    let text = await metrics.render();
    t.equal(value(text, 'pgvpd_pool_checkout_timeouts_total'), 1);
    t.equal(value(text, 'pgvpd_client_errors_total{mode="org",sqlstate="53300"}'), 1);
    t.equal(value(text, 'pgvpd_pool_checkout_duration_seconds_count'), 2, 'both checkouts');
    t.equal(value(text, 'pgvpd_pool_sessions_opened_total'), 1);
    t.equal(value(text, 'pgvpd_auth_failures_total{mode="org",reason="password"}'), undefined);
    await holder.end();
    await f.proxy.close(1);
    text = await metrics.render();
    t.equal(value(text, 'pgvpd_pool_sessions_closed_total{reason="shutdown"}'), 1);
    t.equal(value(text, 'pgvpd_pool_sessions{state="idle"}'), 0);
    t.equal(value(text, 'pgvpd_draining'), 1);
  },
);

t.test(
  'transaction pooling: transactions served, owner switches and readyings by kind, counted exactly',
  async (t) => {
    // One backend for two orgs' clients: every change of owner on it is a reset.
    const f = await orgFixture(t, { pool_size: 1, pool_mode: 'transaction' });
    const metrics = f.proxy.runtime.metrics;
    const acme = await f.connect('acme-analytics', 'alice', 'alice-at-acme');
    const beta = await f.connect('beta-db', 'alice', 'alice-at-beta');
    let text = await metrics.render();
    t.equal(value(text, 'pgvpd_pool_transactions_total'), 0, 'no transaction yet');
    t.equal(
      value(text, 'pgvpd_pool_owner_switches_total{kind="switch"}'),
      1,
      'the first login switched a new backend in',
    );
    t.equal(
      value(text, 'pgvpd_pool_owner_switches_total{kind="reset"}'),
      1,
      'the second, of another org, reset it first',
    );

    await acme.query('select 1'); // reset: the backend is beta's
    await acme.query('select 2'); // acme's already: nothing sent
    await beta.query('select 3'); // reset
    await beta.query('begin');
    await beta.query('select 4'); // the same transaction, the same backend
    await beta.query('commit');
    text = await metrics.render();
    t.equal(value(text, 'pgvpd_pool_transactions_total'), 4, 'four transactions served');
    t.equal(value(text, 'pgvpd_pool_owner_switches_total{kind="switch"}'), 1);
    t.equal(
      value(text, 'pgvpd_pool_owner_switches_total{kind="reset"}'),
      3,
      'two more owner changes',
    );
    t.equal(value(text, 'pgvpd_pool_readying_seconds_count{kind="reset"}'), 3);
    t.equal(
      value(text, 'pgvpd_pool_readying_seconds_count{kind="none"}'),
      2,
      'the same owner again',
    );
    t.equal(value(text, 'pgvpd_pool_sessions_opened_total'), 1, 'on one backend throughout');
    t.same(promtoolCheck(pgvpdLines(text)), { status: 0, output: '' }, 'promtool: clean');
  },
);

t.test('a client TLS handshake that fails is counted on the client side', async (t) => {
  const certs = await testCertificates();
  const f = await proxyFixture(t, { tls_cert: certs.serverCert, tls_key: certs.serverKey });
  const socket = connect({ host: '127.0.0.1', port: f.proxy.port });
  socket.on('error', () => undefined);
  const answer = await new Promise<string>((resolve) => {
    socket.once('data', (data: Buffer) => {
      resolve(data.toString('latin1'));
    });
    socket.write(sslRequest());
  });
  t.equal(answer, 'S', 'TLS accepted');
  socket.write('this is not a TLS ClientHello\r\n\r\n');
  t.ok(await closedAll(f.proxy.runtime), 'the proxy closed the connection');
  const text = await f.proxy.runtime.metrics.render();
  t.equal(value(text, 'pgvpd_tls_handshake_failures_total{side="client"}'), 1);
  t.equal(value(text, 'pgvpd_handshake_duration_seconds_count{mode="app",outcome="error"}'), 1);
  t.equal(value(text, 'pgvpd_session_duration_seconds_count{mode="app"}'), 1);
});

t.test('an upstream TLS handshake that fails is counted on the upstream side', async (t) => {
  // Without a CA the server's certificate does not verify; a server without TLS refuses it.
  const f = await proxyFixture(t, { upstream_tls: true });
  t.equal(await sqlstate(f.connect(f.userFor('acme'))), '08006');
  t.ok(await closedAll(f.proxy.runtime), 'the session closed');
  const text = await f.proxy.runtime.metrics.render();
  t.equal(value(text, 'pgvpd_tls_handshake_failures_total{side="upstream"}'), 1);
  t.equal(value(text, 'pgvpd_tls_handshake_failures_total{side="client"}'), undefined);
  t.equal(value(text, 'pgvpd_client_errors_total{mode="app",sqlstate="08006"}'), 1);
});
