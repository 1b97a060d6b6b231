// The control plane's request log (docs/control-plane.md §2): one line per request, below 400 at
// info (debug for /healthz, /readyz, /metrics), 4xx at warn, 5xx at error, with the method, the
// route's pattern, the status, the time, the client address, the token's id and the request id;
// a 500 tells the client only its request id, under which the log has the cause. No token,
// invite, verifier, Authorization header or query string appears anywhere in the log.
import t from 'tap';
import { makeVerifier } from '../../proxy/auth/scram-verifier.js';
import { adminFixture, capturingLogger } from './admin-fixture.js';

interface Line {
  level: number;
  event?: string;
  method?: string;
  route?: string;
  status?: number;
  ms?: number;
  ip?: string;
  token_id?: string;
  req_id?: string;
  err?: string;
}

const levels = { debug: 20, info: 30, warn: 40, error: 50 };

t.test('one line per request at the level of its status, and no secret anywhere', async (t) => {
  const { logger, lines } = capturingLogger('debug');
  const f = await adminFixture(t, { rate_limit_invites: 1000 }, { logger });
  const operator = await f.token('operator');
  const operatorId = (
    await f.db.query<{ id: string }>(`select id from pgvpd.tokens() where scope = 'operator'`)
  ).rows[0]!.id;
  const created = await f.http(`/api/v1/orgs/${f.orgs.acme}/invites`, {
    method: 'POST',
    token: operator,
    json: { username: 'bob', connect_as: f.connectAs },
  });
  const invite = (created.json as { invite: string }).invite;
  const verifier = makeVerifier('bob-password-1');
  const weakVerifier = makeVerifier('bob-password-0', { iterations: 1024 });
  await f.http('/healthz');
  await f.http('/api/v1/status', { token: operator });
  await f.http('/api/v1/status?access_token=query-secret-123', { token: 'pgvpd_tok_bogus-token' });
  await f.http('/api/v1/invites/info', { method: 'POST', json: { invite } });
  await f.http('/api/v1/invites/redeem', {
    method: 'POST',
    json: { invite, verifier: weakVerifier },
  });
  await f.http('/api/v1/invites/redeem', { method: 'POST', json: { invite, verifier } });
  await f.http('/api/v1/invites/redeem', { method: 'POST', json: { invite, verifier } });
  await f.db.query('alter function pgvpd.org_validate(text) rename to org_validate_moved');
  t.teardown(() =>
    f.db.query('alter function pgvpd.org_validate_moved(text) rename to org_validate'),
  );
  const failed = await f.http('/api/v1/validate/acme-analytics');
  t.equal(failed.status, 500);
  const requestId = /^internal error \(request ([0-9a-f-]{36})\)$/.exec(
    (failed.json as { message: string }).message,
  )?.[1];
  t.ok(requestId, 'the 500 names its request id and nothing else');
  t.equal(
    failed.text,
    `{"error":"internal","message":"internal error (request ${String(requestId)})"}`,
  );
  await new Promise((resolve) => setTimeout(resolve, 100));

  const parsed = lines.map((line) => JSON.parse(line) as Line);
  const http = parsed.filter((line) => line.event === 'http');
  const seen = http.map((line) => [line.method, line.route, line.status, line.level]);
  t.same(seen, [
    ['POST', '/api/v1/orgs/:id/invites', 201, levels.info],
    ['GET', '/healthz', 200, levels.debug],
    ['GET', '/api/v1/status', 200, levels.info],
    ['GET', '/api/v1/status', 401, levels.warn],
    ['POST', '/api/v1/invites/info', 200, levels.info],
    ['POST', '/api/v1/invites/redeem', 400, levels.warn],
    ['POST', '/api/v1/invites/redeem', 200, levels.info],
    ['POST', '/api/v1/invites/redeem', 410, levels.warn],
    ['GET', '/api/v1/validate/:database_name', 500, levels.error],
  ]);
  for (const line of http) {
    t.equal(typeof line.ms, 'number', `${String(line.route)}: ms`);
    t.equal(line.ip, '127.0.0.1', `${String(line.route)}: ip`);
    t.match(line.req_id, /^[0-9a-f-]{36}$/, `${String(line.route)}: req_id`);
  }
  t.equal(http[0]!.token_id, operatorId, 'the token is named by its id');
  t.equal(http[3]!.token_id, undefined, 'no id for a refused token');
  const cause = parsed.find((line) => line.event === 'http_error');
  t.match(cause, { level: levels.error, req_id: requestId, err: /org_validate/ });

  const text = lines.join('');
  const secrets = {
    'the operator token': operator,
    'the bogus token': 'pgvpd_tok_bogus-token',
    'the invite': invite,
    'the invite body': invite.slice(10, 40),
    'the verifier': verifier,
    "the verifier's keys": verifier.split('$')[2]!,
    'the weak verifier': weakVerifier.split('$')[2]!,
    'the query string': 'query-secret-123',
    'an Authorization header': 'Bearer',
  };
  for (const [what, secret] of Object.entries(secrets)) {
    t.notOk(text.includes(secret), `no ${what} in the log`);
  }
  t.notOk(text.includes('SCRAM-SHA-256$'), 'no verifier at all');
});
