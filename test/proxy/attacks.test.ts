// The attack suite through the proxy: every session of tenant a or b comes in as
// `<app role>.<tenant>`, gets its context from the proxy, and then attacks. Plus the attacks only
// a proxy can face: forged context in the startup packet, and queries sent before ReadyForQuery.
import net from 'node:net';
import t from 'tap';
import { serialize } from '../../proxy/protocol/encode.js';
import { attackSuite } from '../support/attack-suite.js';
import { contextPath } from '../support/pgvpd.js';
import { testRoles } from '../support/postgres.js';
import { fixture } from '../sql/fixture.js';
import { proxyFixture } from './fixture.js';

const base = await fixture(t);
const f = await proxyFixture(t, {}, { db: base.db });

attackSuite(t, {
  db: base.db,
  app: f.app,
  visible: (client) => base.visible(client),
  async sessionFor(tenant) {
    if (tenant === null) return base.sessionFor(null);
    const client = await f.connect(f.userFor(tenant));
    const { rows } = await client.query<{ token: string }>(
      `select current_setting('pgvpd.context') as token`,
    );
    return { client, token: rows[0]!.token };
  },
});

t.test('a context forged in the startup packet options never counts', async (t) => {
  const forged = { options: '-c pgvpd.context=v1.forged.1.e30.AAAA' };
  const path = await contextPath(base.db);
  if (path === 'guard') {
    // The guard module makes pgvpd.context superuser-only: PostgreSQL itself refuses the login.
    const error = await f.connect(f.userFor('a'), f.app.password, forged).then(
      () => undefined,
      (e: unknown) => e as { severity?: string; code?: string; message: string },
    );
    t.same(
      { severity: error?.severity, code: error?.code, message: error?.message },
      {
        severity: 'FATAL',
        code: '42501',
        message: 'permission denied to set parameter "pgvpd.context"',
      },
      'guard path: the upstream refuses the connection',
    );
  } else {
    const client = await f.connect(f.userFor('a'), f.app.password, forged);
    t.same(await base.visible(client), { a: 2, b: 0, total: 2 }, 'SQL path: replaced by the proxy');
  }
});

t.test('queries sent before ReadyForQuery run only after the context is set', async (t) => {
  await base.db.query('select pgvpd.add_app_role($1)', [testRoles.trust.user]);
  await base.db.query(`grant select on public.notes to ${testRoles.trust.user}`);
  const socket = net.connect(f.proxy.port, '127.0.0.1');
  t.teardown(() => socket.destroy());
  const received: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => received.push(chunk));
  // Startup and a query in one write: a careless proxy would run the query with no context
  // (zero rows) or, worse, before its own set_context call.
  socket.write(
    Buffer.concat([
      serialize.startup({ user: `${testRoles.trust.user}.b`, database: base.db.name }),
      serialize.query(
        `select count(*)::text || ':' || coalesce(pgvpd.current_tenant_id(), 'none') from public.notes`,
      ),
    ]),
  );
  const text = await new Promise<string>((resolve) => {
    const check = (): void => {
      const all = Buffer.concat(received).toString('latin1');
      if (all.includes('SELECT 1')) resolve(all);
      else setTimeout(check, 20);
    };
    check();
  });
  t.match(text, /3:b/, 'the query saw tenant b’s three rows, with its context');
});
