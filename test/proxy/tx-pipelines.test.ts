// Transaction pooling, pipelines and open blocks (issue 14, A9.2–4 and 16): a backend stays
// with its client while anything of the client is in flight and goes to the other org only
// after. postgres.js's five pipelined queries on one connection while the other org queues; a
// raw P/B/E/S ×3 pipeline in one write with an error in the middle (the other org runs only
// after its third ReadyForQuery); P/B/D/E/Flush without Sync (the backend waits for the Sync);
// an aborted transaction block (the backend waits for ROLLBACK); and a pipeline buffered while
// no backend is free ends in FATAL 53300 with no partial answer.
import postgres from 'postgres';
import t from 'tap';
import type { TestLike } from '../support/postgres.js';
import { typedMessage } from '../support/wire.js';
import { failure, pause } from './org-support.js';
import {
  answerOf,
  msg,
  pbes,
  readReadies,
  readToClose,
  seenIn,
  txOrgs,
  view,
  type Org,
  type TxOrgs,
} from './tx-fixture.js';

const x = await txOrgs(t, { pool_size: 1 });

/** A promise and whether it has settled yet (known once the event loop has turned). */
function watched<T>(promise: Promise<T>): { promise: Promise<T>; settled: () => boolean } {
  let done = false;
  promise.then(
    () => (done = true),
    () => (done = true),
  );
  return { promise, settled: () => done };
}

function sqlOf(t: TestLike, y: TxOrgs, org: Org): postgres.Sql {
  const login = y.login(org);
  const sql = postgres({
    host: '127.0.0.1',
    port: login.port,
    database: login.database,
    username: login.user,
    password: login.password,
    max: 1,
    prepare: false,
    onnotice: () => undefined,
  });
  t.teardown(() => sql.end({ timeout: 1 }));
  return sql;
}

t.test(
  'postgres.js: five pipelined queries on one connection while the other org queues',
  async (t) => {
    const acme = sqlOf(t, x, 'acme');
    const beta = sqlOf(t, x, 'beta');
    await Promise.all([acme`select 1`, beta`select 1`]);
    const asked = (sql: postgres.Sql) =>
      Promise.all(
        [0, 1, 2, 3, 4].map(
          async (i) =>
            (
              await sql<{ i: number; tenant: string; sleep: string }[]>`
                select ${i}::int as i, pgvpd.current_tenant_id() as tenant, pg_sleep(0.05) as sleep`
            )[0]!,
        ),
      );
    const [a, b] = await Promise.all([asked(acme), asked(beta)]);
    t.same(
      a.map((row) => [row.i, row.tenant]),
      [0, 1, 2, 3, 4].map((i) => [i, x.f.orgs.acme]),
      'acme got its five answers, each to its own query, all acme',
    );
    t.same(
      b.map((row) => [row.i, row.tenant]),
      [0, 1, 2, 3, 4].map((i) => [i, x.f.orgs.beta]),
      'beta got its five answers, all beta',
    );
  },
);

t.test('a raw P/B/E/S ×3 pipeline with an error in the middle', async (t) => {
  const acme = await x.raw(t, 'acme');
  const beta = await x.client(t, 'beta');
  acme.wire.write(
    Buffer.concat([
      pbes('select pgvpd.current_tenant_id(), pg_sleep(0.1)::text'),
      pbes('select 1/0'),
      pbes(
        "select pgvpd.current_tenant_id(), pg_sleep(0.2)::text, to_char(clock_timestamp(), 'HH24:MI:SS.US')",
      ),
    ]),
  );
  await pause(30);
  // beta queues for the one backend while acme's pipeline is in flight.
  const betaSaw = beta.query<{ tenant: string; at: string }>(
    "select pgvpd.current_tenant_id() as tenant, to_char(statement_timestamp(), 'HH24:MI:SS.US') as at",
  );
  const answer = answerOf(await readReadies(acme.wire, 3));
  // 1/0 of constants fails when the planner folds it, at Bind: no BindComplete for the second.
  t.equal(answer.codes, '12DCZ1EZ12DCZ', 'answers 1 and 3, an error for 2, each ended by its Z');
  t.same(
    answer.errors,
    [{ code: '22012', message: 'division by zero', severity: 'ERROR' }],
    'the error is the division by zero',
  );
  t.same(
    answer.rows.map((row) => row[0]),
    [x.f.orgs.acme, x.f.orgs.acme],
    'answers 1 and 3 are acme’s',
  );
  const third = answer.rows[1]![2]!;
  const b = (await betaSaw).rows[0]!;
  t.equal(b.tenant, x.f.orgs.beta, 'beta’s query saw beta');
  t.ok(b.at > third, `beta’s statement started (${b.at}) after acme’s third ended (${third})`);
  t.same(seenIn(await view(beta)), x.expected('beta'), 'and beta sees its own rows');
});

t.test('P/B/D/E/Flush without Sync keeps the backend until the Sync', async (t) => {
  const acme = await x.raw(t, 'acme');
  const beta = await x.client(t, 'beta');
  acme.wire.write(
    Buffer.concat([
      msg.parse('', 'select pgvpd.current_tenant_id() as tenant'),
      msg.bind(),
      msg.describePortal(),
      msg.execute(),
      msg.flush(),
    ]),
  );
  const early = [];
  for (let i = 0; i < 5; i++) early.push(await acme.wire.readFrame());
  const flushed = answerOf(early);
  t.equal(flushed.codes, '12TDC', 'the flush brought the whole answer, no ReadyForQuery');
  t.same(flushed.rows, [[x.f.orgs.acme]], 'acme’s tenant');
  const betaView = watched(view(beta));
  await pause(300);
  t.notOk(betaView.settled(), 'beta still waits for the backend');
  acme.wire.write(msg.sync());
  const synced = answerOf(await readReadies(acme.wire, 1));
  t.equal(synced.codes + synced.statuses, 'ZI', 'the Sync ends acme’s implicit transaction');
  t.same(seenIn(await betaView.promise), x.expected('beta'), 'then beta runs, and sees beta');
});

t.test('an aborted transaction block keeps the backend until ROLLBACK', async (t) => {
  const acme = await x.client(t, 'acme');
  const beta = await x.client(t, 'beta');
  await acme.query('begin');
  const zero = await failure(acme.query('select 1/0'));
  t.same(
    { code: zero.code, message: zero.message },
    { code: '22012', message: 'division by zero' },
  );
  const betaView = watched(view(beta));
  await pause(300);
  t.notOk(betaView.settled(), 'beta waits while acme’s block is aborted');
  const ignored = await failure(acme.query('select 1'));
  t.same(
    { code: ignored.code, message: ignored.message },
    {
      code: '25P02',
      message: 'current transaction is aborted, commands ignored until end of transaction block',
    },
    'acme is still in its aborted block',
  );
  await acme.query('rollback');
  t.same(
    seenIn(await betaView.promise),
    x.expected('beta'),
    'after ROLLBACK beta runs, and sees beta',
  );
  t.same(seenIn(await view(acme)), x.expected('acme'), 'and acme’s next transaction sees acme');
});

t.test('a pipeline buffered past the checkout timeout: FATAL 53300, nothing else', async (t) => {
  const y = await txOrgs(t, { pool_size: 1, pool_checkout_timeout: 1 });
  const beta = await y.client(t, 'beta');
  const acme = await y.raw(t, 'acme');
  await beta.query('begin');
  await view(beta);
  acme.wire.write(Buffer.concat([pbes('select 1'), pbes('select 2'), msg.query('select 3')]));
  const frames = await readToClose(acme.wire);
  t.equal(answerOf(frames).codes, 'E', 'one message, then the connection closed');
  const fields = answerOf(frames).errors[0];
  t.same(
    fields,
    {
      severity: 'FATAL',
      code: '53300',
      message: `pool for role "${y.f.connectAs}" on database "${y.db.name}" is exhausted (size 1); timed out after 1000 ms`,
    },
    'FATAL 53300 naming the role, database, size and wait',
  );
  await beta.query('commit');
  t.same(seenIn(await view(beta)), y.expected('beta'), 'the holder goes on');
});

t.test('a lone Flush between transactions does not keep a backend', async (t) => {
  const acme = await x.raw(t, 'acme');
  const beta = await x.client(t, 'beta');
  acme.wire.write(msg.flush());
  await pause(200);
  const betaView = watched(view(beta));
  await pause(1000);
  t.ok(betaView.settled(), 'beta was served within a second');
  t.same(seenIn(await betaView.promise), x.expected('beta'), 'and sees beta');
  acme.wire.write(msg.query('select pgvpd.current_tenant_id()'));
  t.same(answerOf(await readReadies(acme.wire, 1)).rows, [[x.f.orgs.acme]], 'acme goes on');
});

t.test('large answers and large messages cross whole, with the other org in between', async (t) => {
  const acme = await x.client(t, 'acme');
  const beta = await x.client(t, 'beta');
  const big = 'y'.repeat(3 * 1024 * 1024);
  const results = await Promise.all([
    (async () => {
      const out: string[] = [];
      for (let i = 0; i < 3; i++) {
        const { rows } = await acme.query<{ n: number; body: string; tenant: string }>(
          "select n, repeat('x', 100000) || n as body, pgvpd.current_tenant_id() as tenant from generate_series(1, 40) n",
        );
        const bad = rows.filter(
          (r) => r.body !== `${'x'.repeat(100000)}${String(r.n)}` || r.tenant !== x.f.orgs.acme,
        );
        out.push(`${String(rows.length)} rows, ${String(bad.length)} wrong`);
        const sent = await acme.query<{ length: number; tenant: string }>(
          'select length($1::text) as length, pgvpd.current_tenant_id() as tenant',
          [big],
        );
        out.push(`${String(sent.rows[0]!.length)} ${sent.rows[0]!.tenant}`);
      }
      return out;
    })(),
    (async () => {
      const out: string[] = [];
      for (let i = 0; i < 20; i++) {
        const v = await view(beta);
        out.push(JSON.stringify(seenIn(v)));
      }
      return out;
    })(),
  ]);
  const acmeLine = ['40 rows, 0 wrong', `${String(big.length)} ${x.f.orgs.acme}`];
  t.same(
    results[0],
    [...acmeLine, ...acmeLine, ...acmeLine],
    'acme’s 4 MB answers and 3 MB parameter, whole',
  );
  t.same(
    new Set(results[1]),
    new Set([JSON.stringify(x.expected('beta'))]),
    'beta’s 20 answers in between were all beta',
  );
});

t.test('a megabyte of pipelined queries written while no backend is free', async (t) => {
  const acme = await x.raw(t, 'acme');
  const beta = await x.client(t, 'beta');
  await beta.query('begin');
  await view(beta);
  const queries = Array.from({ length: 1000 }, (_, i) =>
    msg.query(
      `select ${String(i)} as i, pgvpd.current_tenant_id() as tenant -- ${'p'.repeat(1000)}`,
    ),
  );
  acme.wire.write(Buffer.concat(queries));
  await pause(300);
  await beta.query('commit');
  const answer = answerOf(await readReadies(acme.wire, 1000, 20_000));
  t.equal(answer.statuses, 'I'.repeat(1000), 'a thousand ReadyForQuery');
  t.same(
    answer.rows,
    Array.from({ length: 1000 }, (_, i) => [String(i), x.f.orgs.acme]),
    'each answer in order, each acme’s',
  );
  t.same(seenIn(await view(beta)), x.expected('beta'), 'beta goes on after');
});

t.test('a FunctionCall is a transaction of its own', async (t) => {
  const acme = await x.raw(t, 'acme');
  const beta = await x.client(t, 'beta');
  const oid = (
    await x.db.query<{ oid: number }>(
      "select 'pg_catalog.pg_backend_pid()'::regprocedure::oid as oid",
    )
  ).rows[0]!.oid;
  // FunctionCall: function oid, no argument formats, no arguments, result in text.
  const call = Buffer.alloc(4 + 2 + 2 + 2);
  call.writeInt32BE(oid, 0);
  acme.wire.write(typedMessage('F', call));
  const answer = await readReadies(acme.wire, 1);
  t.same(
    answer.map((frame) => frame.code).join(''),
    'VZ',
    'FunctionCallResponse and ReadyForQuery',
  );
  const pid = answer[0]!.body.toString('utf8', 4);
  const b = await view(beta);
  t.same([String(b.pid), seenIn(b)], [pid, x.expected('beta')], 'then beta runs there, as beta');
});
