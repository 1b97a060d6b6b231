// The proxy's registrations in a database (proxy/upstream/instance-keys.ts) against real pgvpd
// SQL, on whichever context path the server gives (run it with and without pgvpd_guard):
// concurrent first uses register once; the key signs grants (pool/grant.ts) that
// pgvpd.switch_context takes on a pooled login of the org's connect_as role; renewals keep the
// instance active, a retired one is dropped and replaced, a refused switch's instance is
// forgotten, a database that refuses is a ProxyError, an unreachable one keeps the key, and
// close() leaves every instance.
import { hostname } from 'node:os';
import t from 'tap';
import { createLogger } from '../../proxy/logger.js';
import { grantParams, mintGrant, switchCall, type InstanceKey } from '../../proxy/pool/grant.js';
import { serialize } from '../../proxy/protocol/encode.js';
import { BackendCode } from '../../proxy/protocol/codes.js';
import { errorFields, upstreamMessage } from '../../proxy/protocol/decode.js';
import { ControlPools } from '../../proxy/upstream/control.js';
import { InstanceKeys, instanceName } from '../../proxy/upstream/instance-keys.js';
import { loginUpstream, type PooledSession } from '../../proxy/upstream/login.js';
import {
  createTestDatabase,
  poolKeyFor,
  type TestDatabase,
  type TestLike,
} from '../support/postgres.js';
import { contextPath, installPgvpd, loginRole, type LoginRole } from '../support/pgvpd.js';
import { orgFixture, type OrgFixture } from './org-fixture.js';

const silent = createLogger('silent');

interface Instance {
  instance_id: string;
  name: string;
  active: boolean;
  retired: boolean;
  lease_until: string;
}

async function instances(db: TestDatabase): Promise<Instance[]> {
  const { rows } = await db.query<Instance>(
    `select instance_id::text, name, active, retired_at is not null as retired,
            lease_until::text from pgvpd.instances() order by instance_id`,
  );
  return rows;
}

/** InstanceKeys over control pools of `url`, closed (both) at teardown. */
function keysOf(
  t: TestLike,
  url: string,
  lease = 60,
  name = instanceName(6432),
): { keys: InstanceKeys; control: ControlPools } {
  const control = new ControlPools(url, 2);
  const keys = new InstanceKeys(control, lease, name, silent);
  t.teardown(async () => {
    await keys.close();
    await control.close();
  });
  return { keys, control };
}

/** A pooled login of the fixture's connect_as role, as org mode's pool opens one. */
async function pooledLogin(t: TestLike, f: OrgFixture): Promise<PooledSession> {
  const session = await loginUpstream(poolKeyFor(f.db, f.connectAs), {
    password: f.connectAsPassword,
    backendStart: true,
  });
  t.teardown(() => {
    session.socket.destroy();
  });
  return session;
}

type Answer = { rows: (string | null)[][] } | { code: string | undefined; message: string };

/** One statement with text parameters on a pooled session: its rows, or its error. */
async function run(session: PooledSession, sql: string, params: string[] = []): Promise<Answer> {
  session.socket.write(
    Buffer.concat([
      serialize.parse({ text: sql }),
      serialize.bind({ values: params }),
      serialize.execute(),
      serialize.sync(),
    ]),
  );
  const rows: (string | null)[][] = [];
  let failure: { code: string | undefined; message: string } | undefined;
  for (;;) {
    const message = await upstreamMessage(session.reader, 'a test statement');
    if (message.code === BackendCode.ErrorResponse) {
      const fields = errorFields(message.body);
      failure ??= { code: fields.code, message: fields.message };
    } else if (message.code === BackendCode.DataRow) {
      const row: (string | null)[] = [];
      let at = 2;
      for (let i = 0; i < message.body.readInt16BE(0); i++) {
        const length = message.body.readInt32BE(at);
        at += 4;
        row.push(length < 0 ? null : message.body.toString('utf8', at, at + length));
        at += Math.max(length, 0);
      }
      rows.push(row);
    } else if (message.code === BackendCode.ReadyForQuery) {
      return failure ?? { rows };
    }
  }
}

function switchTo(session: PooledSession, key: InstanceKey, org: string, user = 'alice') {
  const grant = mintGrant(key, session, { org, tenant: null, user, values: {} });
  return { grant, answer: run(session, `select ${switchCall(1)}`, grantParams(grant)) };
}

const tenantOf = (session: PooledSession): Promise<Answer> =>
  run(session, 'select pgvpd.current_tenant_id()::text, (select count(*) from public.docs)::text');

t.test('concurrent first uses register one instance, and later uses reuse its key', async (t) => {
  const f = await orgFixture(t);
  const { keys } = keysOf(t, f.proxyRole.url);
  const first = await Promise.all([1, 2, 3, 4, 5].map(() => keys.keyFor(f.db.name)));
  const [key] = first;
  for (const other of first) t.equal(other, key, 'every caller gets the same key');
  t.equal(key!.secret.length, 32, 'a 32-byte key');
  t.equal(await keys.keyFor(f.db.name), key, 'a later call gets it too');
  const rows = await instances(f.db);
  t.same(
    rows.map((row) => ({ id: row.instance_id, name: row.name, active: row.active })),
    [{ id: key!.instance, name: `${hostname()}:${String(process.pid)}:6432`, active: true }],
    'one instance, named host:pid:port',
  );
  t.same(
    keys.describe().map(({ server, database, instance }) => ({ server, database, instance })),
    [{ server: null, database: f.db.name, instance: key!.instance }],
    'describe() lists it',
  );
});

t.test('a grant under the key switches a pooled backend into the org', async (t) => {
  const f = await orgFixture(t);
  const { keys } = keysOf(t, f.proxyRole.url);
  const key = await keys.keyFor(f.db.name);
  const session = await pooledLogin(t, f);
  t.comment(`context path: ${await contextPath(f.db)}`);

  const toAcme = switchTo(session, key, f.orgs.acme);
  t.same(await toAcme.answer, { rows: [[f.orgs.acme]] }, 'switch_context returns the tenant');
  t.same(await tenantOf(session), { rows: [[f.orgs.acme, '2']] }, "the backend sees acme's rows");

  const toBeta = switchTo(session, key, f.orgs.beta);
  t.same(await toBeta.answer, { rows: [[f.orgs.beta]] }, 'the next grant switches it again');
  t.same(await tenantOf(session), { rows: [[f.orgs.beta, '3']] }, "then it sees beta's rows");

  t.same(
    await run(session, `select ${switchCall(1)}`, grantParams(toAcme.grant)),
    {
      code: '28000',
      message:
        'pgvpd: switch grant is not newer than the one this backend holds (replayed or out of order)',
    },
    'the earlier grant replayed is refused',
  );
  t.same(await tenantOf(session), { rows: [[f.orgs.beta, '3']] }, 'and changes nothing');
});

t.test('renewing keeps the instance active and its key the same', async (t) => {
  const f = await orgFixture(t);
  const { keys } = keysOf(t, f.proxyRole.url, 10);
  const key = await keys.keyFor(f.db.name);
  const [before] = await instances(f.db);
  await new Promise((resolve) => setTimeout(resolve, 50));
  await keys.renew();
  const [after] = await instances(f.db);
  t.equal(after!.active, true, 'still active');
  t.ok(after!.lease_until > before!.lease_until, 'its lease runs from the renewal');
  t.equal(await keys.keyFor(f.db.name), key, 'the same key');
  t.equal((await instances(f.db)).length, 1, 'no second registration');
});

t.test('the timer renews every third of the lease', async (t) => {
  const f = await orgFixture(t);
  const { keys } = keysOf(t, f.proxyRole.url, 10);
  await keys.keyFor(f.db.name);
  const [registered] = await instances(f.db);
  // A 10 s lease is renewed after 3.3 s; allow three times that.
  let renewed = false;
  for (let waited = 0; waited < 10_000 && !renewed; waited += 250) {
    await new Promise((resolve) => setTimeout(resolve, 250));
    const [now] = await instances(f.db);
    renewed = now!.lease_until > registered!.lease_until;
  }
  t.ok(renewed, 'the lease was extended without a call');
});

t.test(
  'after an admin retires the instance, the next renewal drops it and keyFor registers anew',
  async (t) => {
    const f = await orgFixture(t);
    const { keys } = keysOf(t, f.proxyRole.url);
    const old = await keys.keyFor(f.db.name);
    await f.db.query('select pgvpd.retire_instance($1)', [old.instance]);
    await keys.renew();
    t.same(keys.describe(), [], 'the retired key is no longer held');
    const fresh = await keys.keyFor(f.db.name);
    t.not(fresh.instance, old.instance, 'a new instance');
    t.same(
      (await instances(f.db)).map(({ instance_id, active, retired }) => ({
        instance_id,
        active,
        retired,
      })),
      [
        { instance_id: old.instance, active: false, retired: true },
        { instance_id: fresh.instance, active: true, retired: false },
      ],
    );
    const session = await pooledLogin(t, f);
    t.same(
      await switchTo(session, fresh, f.orgs.acme).answer,
      { rows: [[f.orgs.acme]] },
      'the new key works',
    );
  },
);

t.test(
  'a switch refused under a retired instance, then forget(): keyFor registers anew',
  async (t) => {
    const f = await orgFixture(t);
    const { keys } = keysOf(t, f.proxyRole.url);
    const old = await keys.keyFor(f.db.name);
    await f.db.query('select pgvpd.retire_instance($1)', [old.instance]);
    const session = await pooledLogin(t, f);
    t.same(await switchTo(session, old, f.orgs.acme).answer, {
      code: '28000',
      message: `pgvpd: switch grant refused: proxy instance ${old.instance} is retired or its lease expired`,
    });
    keys.forget(f.db.name, undefined, String(Number(old.instance) + 1000));
    t.equal(await keys.keyFor(f.db.name), old, 'forgetting another instance keeps the key');
    keys.forget(f.db.name, undefined, old.instance);
    const fresh = await keys.keyFor(f.db.name);
    t.not(fresh.instance, old.instance, 'forgetting it makes the next keyFor register');
    t.same(await switchTo(session, fresh, f.orgs.acme).answer, { rows: [[f.orgs.acme]] });
  },
);

t.test(
  'a registration the database refuses is a ProxyError with its SQLSTATE, tried again next time',
  async (t) => {
    const f = await orgFixture(t);
    // An application role: not a pgvpd_proxy member.
    const stranger = await loginRole(t, f.db, 'app');
    const { keys } = keysOf(t, stranger.url);
    for (const attempt of ['first', 'second']) {
      await t.rejects(
        keys.keyFor(f.db.name),
        {
          name: 'ProxyError',
          kind: 'context_failed',
          code: '42501',
          message: 'could not establish the tenant context for this session',
          logMessage: `could not establish the tenant context: register_instance in database "${f.db.name}": permission denied for function register_instance`,
        },
        attempt,
      );
    }
    t.same(await instances(f.db), [], 'nothing registered');
  },
);

t.test('a renewal that cannot reach the database keeps the key until its lease ends', async (t) => {
  const f = await orgFixture(t);
  const lines: string[] = [];
  const logger = createLogger('warn', {
    write: (line: string) => {
      lines.push(line);
    },
  });
  const control = new ControlPools(f.proxyRole.url, 2);
  const keys = new InstanceKeys(control, 60, instanceName(6432), logger);
  t.teardown(async () => {
    await keys.close();
    await control.close();
  });
  const key = await keys.keyFor(f.db.name);
  // The control role can no longer log in, and its open connections are gone.
  await cutOff(t, f.db, f.proxyRole);
  // The first may still go to the connection just ended; the second must log in again.
  await keys.renew();
  await keys.renew();
  t.equal(await keys.keyFor(f.db.name), key, 'the key is kept');
  t.equal(keys.describe().length, 1);
  const warned = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
  t.equal(warned.length, 2, 'each failed renewal is a warning');
  t.match(warned.at(-1), {
    event: 'instance_renew_failed',
    database: f.db.name,
    instance: key.instance,
    err: `role "${f.proxyRole.name}" is not permitted to log in`,
  });
  t.notOk(lines.join('').includes(key.secret.toString('hex')), 'the secret is not logged');
});

/** Makes `role` unable to log in and ends its sessions, until the test ends. */
async function cutOff(t: TestLike, db: TestDatabase, role: LoginRole): Promise<void> {
  await db.query(`alter role ${role.name} nologin`);
  t.teardown(() => db.query(`alter role ${role.name} login`).catch(() => undefined));
  await db.query('select pg_terminate_backend(pid) from pg_stat_activity where usename = $1', [
    role.name,
  ]);
}

t.test(
  'close() leaves every instance, in every database, and hands out no key after',
  async (t) => {
    const f = await orgFixture(t);
    const second = await createTestDatabase(t);
    await installPgvpd(second);
    const control = new ControlPools(f.proxyRole.url, 2);
    const keys = new InstanceKeys(control, 60, instanceName(6432), silent);
    t.teardown(() => control.close());
    const inFirst = await keys.keyFor(f.db.name);
    const inSecond = await keys.keyFor(second.name);
    await keys.close();
    for (const [db, key] of [
      [f.db, inFirst],
      [second, inSecond],
    ] as const) {
      t.same(
        (await instances(db)).map(({ instance_id, active, retired }) => ({
          instance_id,
          active,
          retired,
        })),
        [{ instance_id: key.instance, active: false, retired: true }],
        `left in ${db === f.db ? 'the first' : 'the second'} database`,
      );
    }
    t.same(keys.describe(), [], 'nothing held');
    await t.rejects(keys.keyFor(f.db.name), { code: '57P01', kind: 'pool_closed' });
    await keys.close();
    t.pass('close() again settles');
  },
);

t.test('close() settles without throwing when the database cannot be reached', async (t) => {
  const f = await orgFixture(t);
  const { keys } = keysOf(t, f.proxyRole.url);
  const key = await keys.keyFor(f.db.name);
  await cutOff(t, f.db, f.proxyRole);
  await keys.close();
  t.same(
    (await instances(f.db)).map(({ instance_id, active }) => ({ instance_id, active })),
    [{ instance_id: key.instance, active: true }],
    'it could not leave: its lease will end it',
  );
});

t.test("the org-mode runtime's instance keys are left when the proxy stops", async (t) => {
  const f = await orgFixture(t, { instance_lease: 30 });
  const keys = f.proxy.runtime.org!.instanceKeys;
  const key = await keys.keyFor(f.db.name);
  t.match(keys.describe(), [{ server: null, database: f.db.name, instance: key.instance }]);
  t.same(
    (await instances(f.db)).map(({ instance_id, name, active }) => ({ instance_id, name, active })),
    [{ instance_id: key.instance, name: instanceName(f.proxy.runtime.config.port), active: true }],
    'registered under the proxy name',
  );
  await f.proxy.close(1);
  t.same(
    (await instances(f.db)).map(({ instance_id, active, retired }) => ({
      instance_id,
      active,
      retired,
    })),
    [{ instance_id: key.instance, active: false, retired: true }],
    'left at shutdown',
  );
});
