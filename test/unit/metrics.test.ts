// The metrics registry on its own (proxy/metrics.ts): what each recorder adds, under which labels,
// and that label values stay within their fixed sets whatever a caller passes. Real traffic
// through both proxies, and promtool, are in test/admin/metrics.test.ts.
import t from 'tap';
import { Metrics, readyingKind, type SessionSource } from '../../proxy/metrics.js';

/** The sample lines of one metric (`name{…} value` or `name value`), in render order. */
function samples(text: string, name: string): string[] {
  return text
    .split('\n')
    .filter((line) => line.startsWith(`${name}{`) || line.startsWith(`${name} `));
}

t.test(
  'the process metrics are read at scrape time and leave nothing running between scrapes',
  async (t) => {
    // First in this file: the process's registry is set up by the first Metrics of the process.
    const before = process.getActiveResourcesInfo().sort();
    const metrics = new Metrics({ mode: 'org', version: '1' });
    const text = await metrics.render();
    await new Promise((resolve) => setImmediate(resolve));
    t.same(process.getActiveResourcesInfo().sort(), before, 'no timer, handle or observer left');
    for (const name of [
      'process_cpu_seconds_total',
      'process_cpu_system_seconds_total',
      'process_start_time_seconds',
      'process_resident_memory_bytes',
      'process_open_fds',
      'nodejs_heap_size_total_bytes',
      'nodejs_heap_size_used_bytes',
      'nodejs_external_memory_bytes',
    ]) {
      const value = Number(samples(text, name)[0]?.split(' ')[1]);
      t.ok(value > 0, `${name} is a positive number (${String(value)})`);
    }
    t.same(samples(text, 'nodejs_version_info'), [
      `nodejs_version_info{version="${process.version}"} 1`,
    ]);
    t.notMatch(text, /^nodejs_gc_duration_seconds/m, 'no GC observer metric');
    t.notMatch(text, /^nodejs_eventloop_lag_p99_seconds/m, 'no event-loop-delay monitor metric');
  },
);

t.test(
  'the default process and nodejs metrics are there, unprefixed, beside build info',
  async (t) => {
    const metrics = new Metrics({ mode: 'app', version: '9.8.7' });
    const text = await metrics.render();
    t.match(text, /^process_cpu_user_seconds_total \d/m);
    t.match(text, /^nodejs_eventloop_lag_seconds \d/m);
    t.notMatch(text, /^pgvpd_process_/m);
    t.same(samples(text, 'pgvpd_build_info'), ['pgvpd_build_info{version="9.8.7",mode="app"} 1']);
    t.equal(metrics.contentType, 'text/plain; version=0.0.4; charset=utf-8');
  },
);

t.test('two registries do not share their counts', async (t) => {
  const one = new Metrics({ mode: 'app', version: '1' });
  const two = new Metrics({ mode: 'app', version: '1' });
  one.clientConnected();
  one.clientConnected();
  t.same(samples(await one.render(), 'pgvpd_client_connections_total'), [
    'pgvpd_client_connections_total{mode="app"} 2',
  ]);
  t.same(samples(await two.render(), 'pgvpd_client_connections_total'), [
    'pgvpd_client_connections_total{mode="app"} 0',
  ]);
});

t.test('HTTP requests are counted by route pattern, method and status class', async (t) => {
  const metrics = new Metrics({ mode: 'org', version: '1' });
  metrics.httpRequest('/api/v1/orgs/:id', 'get', 200, 0.002);
  metrics.httpRequest('/api/v1/orgs/:id', 'GET', 204, 0.003);
  metrics.httpRequest('/api/v1/orgs/:id', 'GET', 404, 0.001);
  metrics.httpRequest('unmatched', 'BREW', 404, 0.001);
  metrics.httpRequest('/metrics', 'GET', 503, 0.02);
  metrics.httpRequest('/setup', 'GET', 302, 0.02);
  metrics.httpRateLimited('/api/v1/validate/:database_name');
  const text = await metrics.render();
  t.same(samples(text, 'pgvpd_http_requests_total'), [
    'pgvpd_http_requests_total{route="/api/v1/orgs/:id",method="GET",code="2xx"} 2',
    'pgvpd_http_requests_total{route="/api/v1/orgs/:id",method="GET",code="4xx"} 1',
    'pgvpd_http_requests_total{route="unmatched",method="other",code="4xx"} 1',
    'pgvpd_http_requests_total{route="/metrics",method="GET",code="5xx"} 1',
    'pgvpd_http_requests_total{route="/setup",method="GET",code="3xx"} 1',
  ]);
  t.ok(
    samples(text, 'pgvpd_http_request_duration_seconds_count').includes(
      'pgvpd_http_request_duration_seconds_count{route="/api/v1/orgs/:id"} 3',
    ),
  );
  t.same(samples(text, 'pgvpd_http_rate_limited_total'), [
    'pgvpd_http_rate_limited_total{route="/api/v1/validate/:database_name"} 1',
  ]);
});

t.test('API auth failures, invite redeems and the control connection are recorded', async (t) => {
  const metrics = new Metrics({ mode: 'app', version: '1' });
  metrics.apiAuthFailure('invalid_token');
  metrics.apiAuthFailure('invalid_token');
  metrics.apiAuthFailure('forbidden');
  metrics.inviteRedeem('ok');
  metrics.inviteRedeem('gone');
  metrics.controlUp(true);
  let text = await metrics.render();
  t.same(samples(text, 'pgvpd_api_auth_failures_total'), [
    'pgvpd_api_auth_failures_total{reason="invalid_token"} 2',
    'pgvpd_api_auth_failures_total{reason="forbidden"} 1',
  ]);
  t.same(samples(text, 'pgvpd_invite_redeems_total'), [
    'pgvpd_invite_redeems_total{outcome="ok"} 1',
    'pgvpd_invite_redeems_total{outcome="gone"} 1',
  ]);
  t.same(samples(text, 'pgvpd_control_connection_up'), ['pgvpd_control_connection_up 1']);
  metrics.controlUp(false);
  text = await metrics.render();
  t.same(samples(text, 'pgvpd_control_connection_up'), ['pgvpd_control_connection_up 0']);
});

t.test('a SQLSTATE outside the proxy’s own set is counted as other', async (t) => {
  const metrics = new Metrics({ mode: 'org', version: '1' });
  metrics.clientError('28P01');
  metrics.clientError('42501');
  metrics.clientError('a"b\nc');
  t.same(samples(await metrics.render(), 'pgvpd_client_errors_total'), [
    'pgvpd_client_errors_total{mode="org",sqlstate="28P01"} 1',
    'pgvpd_client_errors_total{mode="org",sqlstate="other"} 2',
  ]);
});

t.test('sessions and active orgs are read from the sources at scrape time', async (t) => {
  const metrics = new Metrics({ mode: 'org', version: '1' });
  const live: SessionSource[] = [
    { mode: 'org', phase: 'startup', identity: {} },
    { mode: 'org', phase: 'pipe', identity: { tenant: 'org-a' } },
    { mode: 'org', phase: 'pipe', identity: { tenant: 'org-a' } },
    { mode: 'org', phase: 'auth', identity: { tenant: 'org-b' } },
    { mode: 'org', phase: 'closed', identity: { tenant: 'org-c' } },
  ];
  metrics.observe({ sessions: () => live });
  let text = await metrics.render();
  t.same(samples(text, 'pgvpd_client_sessions'), [
    'pgvpd_client_sessions{mode="org",phase="startup"} 1',
    'pgvpd_client_sessions{mode="org",phase="route"} 0',
    'pgvpd_client_sessions{mode="org",phase="auth"} 1',
    'pgvpd_client_sessions{mode="org",phase="context"} 0',
    'pgvpd_client_sessions{mode="org",phase="pipe"} 2',
  ]);
  t.same(samples(text, 'pgvpd_active_orgs'), ['pgvpd_active_orgs 2']);
  live.splice(1, 3);
  text = await metrics.render();
  t.same(samples(text, 'pgvpd_active_orgs'), ['pgvpd_active_orgs 0']);
  t.notMatch(text, /org-a|org-b|org-c/);
});

t.test('pool gauges are read from the pool’s stats at scrape time', async (t) => {
  const metrics = new Metrics({ mode: 'org', version: '1' });
  metrics.observe({
    pool: () => ({
      idle: 3,
      busy: 2,
      opening: 1,
      waiting: 4,
      tentative: 0,
      opened: 9,
      closed: 3,
      timeouts: 0,
      reclaimed: 0,
      keys: [],
    }),
  });
  const text = await metrics.render();
  t.same(samples(text, 'pgvpd_pool_sessions'), [
    'pgvpd_pool_sessions{state="idle"} 3',
    'pgvpd_pool_sessions{state="busy"} 2',
    'pgvpd_pool_sessions{state="opening"} 1',
  ]);
  t.same(samples(text, 'pgvpd_pool_waiting_clients'), ['pgvpd_pool_waiting_clients 4']);
  t.same(samples(text, 'pgvpd_pool_keys'), ['pgvpd_pool_keys 0']);
});

t.test(
  'readying is timed by what it took, and a switch or a reset is counted as an owner switch',
  async (t) => {
    const metrics = new Metrics({ mode: 'org', version: '1' });
    let text = await metrics.render();
    t.same(
      samples(text, 'pgvpd_pool_owner_switches_total'),
      [
        'pgvpd_pool_owner_switches_total{kind="switch"} 0',
        'pgvpd_pool_owner_switches_total{kind="reset"} 0',
      ],
      'both kinds from the start, at 0',
    );
    t.same(samples(text, 'pgvpd_pool_readying_seconds_count'), [
      'pgvpd_pool_readying_seconds_count{kind="none"} 0',
      'pgvpd_pool_readying_seconds_count{kind="settings"} 0',
      'pgvpd_pool_readying_seconds_count{kind="restore"} 0',
      'pgvpd_pool_readying_seconds_count{kind="switch"} 0',
      'pgvpd_pool_readying_seconds_count{kind="reset"} 0',
    ]);
    metrics.poolReadied('none', 0.00002);
    metrics.poolReadied('none', 0.00003);
    metrics.poolReadied('settings', 0.0004);
    metrics.poolReadied('restore', 0.0002);
    metrics.poolReadied('switch', 0.0003);
    metrics.poolReadied('switch', 0.002);
    metrics.poolReadied('reset', 0.04);
    text = await metrics.render();
    t.same(samples(text, 'pgvpd_pool_owner_switches_total'), [
      'pgvpd_pool_owner_switches_total{kind="switch"} 2',
      'pgvpd_pool_owner_switches_total{kind="reset"} 1',
    ]);
    t.same(samples(text, 'pgvpd_pool_readying_seconds_count'), [
      'pgvpd_pool_readying_seconds_count{kind="none"} 2',
      'pgvpd_pool_readying_seconds_count{kind="settings"} 1',
      'pgvpd_pool_readying_seconds_count{kind="restore"} 1',
      'pgvpd_pool_readying_seconds_count{kind="switch"} 2',
      'pgvpd_pool_readying_seconds_count{kind="reset"} 1',
    ]);
    t.same(
      samples(text, 'pgvpd_pool_readying_seconds_bucket').filter((line) =>
        line.includes('kind="switch"'),
      ),
      [
        'pgvpd_pool_readying_seconds_bucket{le="0.0001",kind="switch"} 0',
        'pgvpd_pool_readying_seconds_bucket{le="0.00025",kind="switch"} 0',
        'pgvpd_pool_readying_seconds_bucket{le="0.0005",kind="switch"} 1',
        'pgvpd_pool_readying_seconds_bucket{le="0.001",kind="switch"} 1',
        'pgvpd_pool_readying_seconds_bucket{le="0.0025",kind="switch"} 2',
        'pgvpd_pool_readying_seconds_bucket{le="0.005",kind="switch"} 2',
        'pgvpd_pool_readying_seconds_bucket{le="0.01",kind="switch"} 2',
        'pgvpd_pool_readying_seconds_bucket{le="0.025",kind="switch"} 2',
        'pgvpd_pool_readying_seconds_bucket{le="0.05",kind="switch"} 2',
        'pgvpd_pool_readying_seconds_bucket{le="0.1",kind="switch"} 2',
        'pgvpd_pool_readying_seconds_bucket{le="0.5",kind="switch"} 2',
        'pgvpd_pool_readying_seconds_bucket{le="+Inf",kind="switch"} 2',
      ],
      'buckets from 0.1 ms to 100 ms, and 500 ms',
    );
  },
);

t.test('a readying’s kind is read from what readyFor reports', (t) => {
  t.equal(readyingKind({ statements: 0, ownerChanged: false, switched: false }), 'none');
  t.equal(readyingKind({ statements: 1, ownerChanged: false, switched: false }), 'settings');
  t.equal(readyingKind({ statements: 1, ownerChanged: false, switched: true }), 'switch');
  t.equal(readyingKind({ statements: 2, ownerChanged: false, switched: true }), 'switch');
  t.equal(readyingKind({ statements: 2, ownerChanged: true, switched: true }), 'reset');
  t.equal(
    readyingKind({ statements: 1, ownerChanged: false, switched: false, restored: true }),
    'restore',
    'a held context put back (set_context) is not a switch',
  );
  t.end();
});

t.test(
  'transactions served in transaction mode and instance registrations are counted',
  async (t) => {
    const metrics = new Metrics({ mode: 'org', version: '1' });
    let text = await metrics.render();
    t.same(samples(text, 'pgvpd_pool_transactions_total'), ['pgvpd_pool_transactions_total 0']);
    t.same(samples(text, 'pgvpd_instance_registrations_total'), [
      'pgvpd_instance_registrations_total{result="ok"} 0',
      'pgvpd_instance_registrations_total{result="error"} 0',
    ]);
    metrics.poolTransaction();
    metrics.poolTransaction();
    metrics.poolTransaction();
    metrics.instanceRegistration('ok');
    metrics.instanceRegistration('error');
    metrics.instanceRegistration('ok');
    text = await metrics.render();
    t.same(samples(text, 'pgvpd_pool_transactions_total'), ['pgvpd_pool_transactions_total 3']);
    t.same(samples(text, 'pgvpd_instance_registrations_total'), [
      'pgvpd_instance_registrations_total{result="ok"} 2',
      'pgvpd_instance_registrations_total{result="error"} 1',
    ]);
  },
);

t.test('app mode has no catalog, pool, instance or login-throttle metrics', async (t) => {
  const metrics = new Metrics({ mode: 'app', version: '1' });
  metrics.poolTransaction();
  metrics.poolReadied('reset', 0.001);
  metrics.instanceRegistration('ok');
  const text = await metrics.render();
  for (const name of [
    'pgvpd_catalog_',
    'pgvpd_pool_',
    'pgvpd_instance_',
    'pgvpd_active_orgs',
    'pgvpd_auth_throttled_total',
  ]) {
    t.notMatch(text, new RegExp(`^(# (HELP|TYPE) )?${name}`, 'm'), name);
  }
});
