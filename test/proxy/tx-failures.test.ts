// Transaction pooling when things go wrong (issue 14, A9.5–6 and A9.11–13): a context switch the
// database refuses (the proxy instance retired while another org holds the backend) ends the
// client with FATAL before any of its statements ran, drops the backend, and the next connection
// works (the proxy registers again); COPY FROM STDIN failing mid-stream (simple protocol through
// pg-copy-streams, CopyFail and the extended protocol raw) leaves nothing for the next org; a
// cancel with the client's key ends its pg_sleep with 57014, and the same key sent after its
// transaction ended cancels nothing of the next org's; a client vanishing mid-message or
// mid-pipeline costs the backend, one vanishing idle in a transaction gets a rollback and the
// backend serves the other org; idle_in_transaction_timeout ends a client with FATAL 25P03.
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import copyStreams from 'pg-copy-streams';
import t, { type Test } from 'tap';
import { contextPath } from '../support/pgvpd.js';
import { WireClient, cancelRequest } from '../support/wire.js';
import { waitFor } from './clients-support.js';
import { cut, failure, pause } from './org-support.js';
import {
  answerOf,
  msg,
  pbes,
  readReadies,
  readToClose,
  seenIn,
  txOrgs,
  view,
  viewSql,
  type TxOrgs,
} from './tx-fixture.js';

const x = await txOrgs(t, { pool_size: 1 });
// COPY FROM into a table under row-level security is refused (0A000): COPY goes into a plain one.
await x.db.query(`
  create table public.copied (org_id uuid not null, body text);
  grant select, insert on public.copied to ${x.f.connectAs};
`);
const copiedRows = async (): Promise<number> =>
  (await x.db.query<{ n: number }>('select count(*)::int as n from public.copied')).rows[0]!.n;

/** Whether backend `pid` has left pg_stat_activity (within a few seconds). */
const gone = (y: TxOrgs, pid: number): Promise<boolean> =>
  waitFor(
    async () =>
      (await y.db.query('select 1 from pg_stat_activity where pid = $1', [pid])).rowCount === 0,
  );

/**
 * Three new acme connections one after the other, each as what it saw: 'acme' (its own rows),
 * 'no context', another view, or the error it got.
 */
async function acmeAfterRetirement(t: Test, y: TxOrgs): Promise<string[]> {
  const outcomes: string[] = [];
  for (let i = 0; i < 3; i++) {
    try {
      const client = await y.client(t, 'acme');
      const v = await view(client);
      outcomes.push(
        v.tenant === null
          ? 'no context'
          : JSON.stringify(seenIn(v)) === JSON.stringify(y.expected('acme'))
            ? 'acme'
            : JSON.stringify(v),
      );
      await client.end();
    } catch (error) {
      const e = error as { code?: string; message: string };
      outcomes.push(`${e.code ?? ''} ${e.message}`);
    }
  }
  return outcomes;
}

const acmeCount = async (y: TxOrgs, body: string): Promise<number> =>
  (
    await y.db.query<{ n: number }>('select count(*)::int as n from public.docs where body = $1', [
      body,
    ])
  ).rows[0]!.n;

t.test('a refused switch: FATAL, none of the statements ran, the backend dropped', async (t) => {
  const y = await txOrgs(t, { pool_size: 1 });
  await y.db.query(`
    create table public.side (id serial primary key, note text);
    grant select, insert on public.side to ${y.f.connectAs};
    grant usage on sequence public.side_id_seq to ${y.f.connectAs};
  `);
  const acme = await y.client(t, 'acme');
  const beta = await y.client(t, 'beta');
  await acme.query('begin');
  const pid = (await view(acme)).pid;
  const [instance] = (
    await y.db.query<{ id: string }>('select instance_id as id from pgvpd.instances() where active')
  ).rows;
  await y.db.query('select pgvpd.retire_instance($1)', [instance!.id]);
  await acme.query('commit').catch(() => undefined);
  const refused = await failure(beta.query("insert into public.side (note) values ('beta ran')"));
  t.same(
    { severity: refused.severity, code: refused.code, message: refused.message },
    {
      severity: 'FATAL',
      code: '28000',
      message: 'could not establish the tenant context for this session',
    },
    'beta is told its context could not be set',
  );
  t.same((await y.db.query('select note from public.side')).rows, [], 'beta’s INSERT never ran');
  t.ok(await gone(y, pid), `the backend ${String(pid)} is gone`);
  const again = await y.client(t, 'beta');
  t.same(seenIn(await view(again)), y.expected('beta'), 'a new beta connection works');
  t.equal(
    (await y.db.query('select 1 from pgvpd.instances() where active')).rowCount,
    1,
    'under a new registration of the proxy',
  );
});

t.test(
  'after the instance is retired, the same org is never silently served without its context',
  async (t) => {
    const y = await txOrgs(t, { pool_size: 1 });
    const acme = await y.client(t, 'acme');
    t.same(seenIn(await view(acme)), y.expected('acme'), 'acme sees acme');
    const [instance] = (
      await y.db.query<{ id: string }>(
        'select instance_id as id from pgvpd.instances() where active',
      )
    ).rows;
    await y.db.query('select pgvpd.retire_instance($1)', [instance!.id]);
    const outcomes = await acmeAfterRetirement(t, y);
    t.comment(`new acme connections after the retirement: ${JSON.stringify(outcomes)}`);
    t.notOk(outcomes.includes('no context'), 'none was served without a context');
    t.equal(outcomes.at(-1), 'acme', 'the last one was served as acme');
  },
);

t.test(
  'session mode: a release whose context cannot be put back (its instance retired) ends the backend',
  async (t) => {
    const y = await txOrgs(t, { pool_mode: 'session', pool_size: 1 });
    const acme = await y.client(t, 'acme');
    const pid = (await view(acme)).pid;
    const [instance] = (
      await y.db.query<{ id: string }>(
        'select instance_id as id from pgvpd.instances() where active',
      )
    ).rows;
    // The record of acme's context is deleted (on the guard path the backend is ended too): the
    // release's reset empties the context, and set_context of its token is refused.
    await y.db.query('select pgvpd.retire_instance($1)', [instance!.id]);
    await acme.end();
    t.ok(await gone(y, pid), `the backend ${String(pid)} is ended, not given back to the pool`);
    const outcomes = await acmeAfterRetirement(t, y);
    t.comment(`acme connections after the retirement: ${JSON.stringify(outcomes)}`);
    t.notOk(outcomes.includes('no context'), 'none was served without a context');
    t.equal(outcomes.at(-1), 'acme', 'the last one was served as acme');
    // On the SQL path the backend lived to its release: set_context said which instance is
    // retired (migration 000016), the proxy forgot that key, and the very next switch registered
    // it again. (On the guard path retiring ended the backend: the next switch learns it.)
    if ((await contextPath(y.db)) === 'sql')
      t.equal(outcomes[0], 'acme', 'SQL path: the first connection after it is served already');
  },
);

t.test('COPY FROM STDIN failing mid-stream leaves nothing for the next org', async (t) => {
  await t.test('simple protocol, a bad row (pg-copy-streams)', async (t) => {
    const acme = await x.client(t, 'acme');
    const beta = await x.client(t, 'beta');
    const pid = (await view(acme)).pid;
    const rows = [
      `${x.f.orgs.acme}\ta-copy\n`,
      'not-a-uuid\ta-copy\n',
      `${x.f.orgs.acme}\ta-copy\n`,
    ];
    const copied = failure(
      pipeline(
        Readable.from(rows),
        acme.query(copyStreams.from('copy public.copied (org_id, body) from stdin')),
      ),
    );
    const f = await copied;
    t.same(
      { code: f.code, message: f.message },
      { code: '22P02', message: 'invalid input syntax for type uuid: "not-a-uuid"' },
      'the bad row fails the COPY',
    );
    const b = await view(beta);
    t.same([b.pid, seenIn(b)], [pid, x.expected('beta')], 'beta on that backend sees beta');
    t.same(seenIn(await view(acme)), x.expected('acme'), 'acme goes on, without a copied row');
    t.equal(await copiedRows(), 0, 'no row of the COPY was kept');
  });

  await t.test('simple protocol, the client sends CopyFail', async (t) => {
    const acme = await x.raw(t, 'acme');
    const beta = await x.client(t, 'beta');
    acme.wire.write(msg.query('copy public.copied (org_id, body) from stdin'));
    t.equal((await acme.wire.readFrame()).code, 'G', 'CopyInResponse');
    acme.wire.write(msg.copyData(Buffer.from(`${x.f.orgs.acme}\ta-fail\n`)));
    await pause(50);
    acme.wire.write(msg.copyFail('the client gave up'));
    const answer = answerOf(await readReadies(acme.wire, 1));
    t.same(
      [answer.codes, answer.errors, answer.statuses],
      [
        'EZ',
        [
          {
            severity: 'ERROR',
            code: '57014',
            message: 'COPY from stdin failed: the client gave up',
          },
        ],
        'I',
      ],
      'the COPY fails and the transaction is over',
    );
    t.same(seenIn(await view(beta)), x.expected('beta'), 'beta sees beta');
    t.equal(await copiedRows(), 0, 'nothing was copied');
  });

  await t.test('extended protocol, a bad row, then CopyDone and Sync', async (t) => {
    const acme = await x.raw(t, 'acme');
    const beta = await x.client(t, 'beta');
    acme.wire.write(pbes('copy public.copied (org_id, body) from stdin'));
    const started = answerOf([await acme.wire.readFrame(), await acme.wire.readFrame()]);
    t.equal(started.codes, '12', 'ParseComplete, BindComplete');
    t.equal((await acme.wire.readFrame()).code, 'G', 'CopyInResponse');
    acme.wire.write(
      Buffer.concat([
        msg.copyData(Buffer.from(`${x.f.orgs.acme}\ta-ext\n`)),
        msg.copyData(Buffer.from('not-a-uuid\ta-ext\n')),
      ]),
    );
    await pause(100);
    const betaView = view(beta);
    acme.wire.write(
      Buffer.concat([msg.copyData(Buffer.from('more\n')), msg.copyDone(), msg.sync()]),
    );
    const answer = answerOf(await readReadies(acme.wire, 1));
    t.same(
      [answer.codes, answer.errors.map((e) => e.code), answer.statuses],
      ['EZ', ['22P02'], 'I'],
      'the COPY fails; the Sync after CopyDone ends the transaction',
    );
    t.same(seenIn(await betaView), x.expected('beta'), 'beta, queued meanwhile, sees beta');
    t.equal(await copiedRows(), 0, 'nothing was copied');
    acme.wire.write(pbes('select pgvpd.current_tenant_id()'));
    t.same(answerOf(await readReadies(acme.wire, 1)).rows, [[x.f.orgs.acme]], 'acme goes on');
  });
});

/** Sends a CancelRequest with a client's key to the proxy. */
async function sendCancel(port: number, key: { processId: number; secretKey: Buffer }) {
  const wire = await WireClient.connect(port);
  wire.write(cancelRequest(key.processId, key.secretKey));
  await wire.closed();
}

t.test('a cancel with the client’s key ends its pg_sleep with 57014', async (t) => {
  const acme = await x.raw(t, 'acme');
  acme.wire.write(msg.query('select pg_sleep(10)'));
  await pause(300);
  const started = Date.now();
  await sendCancel(x.f.proxy.port, acme.key);
  const answer = answerOf(await readReadies(acme.wire, 1, 8000));
  t.same(
    [answer.codes, answer.errors, answer.statuses],
    [
      'TEZ',
      [{ severity: 'ERROR', code: '57014', message: 'canceling statement due to user request' }],
      'I',
    ],
    'canceled',
  );
  t.ok(Date.now() - started < 5000, 'long before the ten seconds were up');
  acme.wire.write(msg.query('select pgvpd.current_tenant_id()'));
  t.same(answerOf(await readReadies(acme.wire, 1)).rows, [[x.f.orgs.acme]], 'acme goes on');
});

t.test('a late cancel with acme’s key does not reach beta’s statement', async (t) => {
  const acme = await x.raw(t, 'acme');
  const beta = await x.client(t, 'beta');
  acme.wire.write(msg.query('select pg_backend_pid()'));
  const pid = Number(answerOf(await readReadies(acme.wire, 1)).rows[0]![0]);
  const sleeping = beta.query<{ pid: number; tenant: string }>(
    'select pg_backend_pid() as pid, pgvpd.current_tenant_id() as tenant, pg_sleep(1)',
  );
  await pause(300);
  await sendCancel(x.f.proxy.port, acme.key);
  const row = (await sleeping).rows[0]!;
  t.same(
    [row.pid, row.tenant],
    [pid, x.f.orgs.beta],
    'beta’s pg_sleep on that backend ran to its end',
  );
});

t.test('a client vanishing mid-message costs the backend; the other org goes on', async (t) => {
  const acme = await x.raw(t, 'acme');
  const beta = await x.client(t, 'beta');
  acme.wire.write(msg.query('select pg_backend_pid()'));
  const pid = Number(answerOf(await readReadies(acme.wire, 1)).rows[0]![0]);
  const half = msg.query('select 1 as never_whole');
  acme.wire.write(Buffer.concat([msg.query('select pg_sleep(0.3)'), half.subarray(0, 9)]));
  await pause(100);
  acme.wire.destroy();
  t.ok(await gone(x, pid), `the backend ${String(pid)} is gone`);
  const b = await view(beta);
  t.not(b.pid, pid, 'beta is served by another backend');
  t.same(seenIn(b), x.expected('beta'), 'and sees beta');
});

t.test('a client vanishing mid-pipeline (no Sync) costs the backend', async (t) => {
  const acme = await x.raw(t, 'acme');
  const beta = await x.client(t, 'beta');
  acme.wire.write(msg.query('select pg_backend_pid()'));
  const pid = Number(answerOf(await readReadies(acme.wire, 1)).rows[0]![0]);
  acme.wire.write(
    Buffer.concat([
      msg.parse(
        '',
        "insert into public.docs (org_id, body) values (pgvpd.current_tenant_id()::uuid, 'a-pipe')",
      ),
      msg.bind(),
      msg.execute(),
      msg.flush(),
    ]),
  );
  await pause(200);
  acme.wire.destroy();
  t.ok(await gone(x, pid), `the backend ${String(pid)} is gone`);
  t.same(seenIn(await view(beta)), x.expected('beta'), 'beta sees beta');
  t.equal(await acmeCount(x, 'a-pipe'), 0, 'the unsynced insert was not committed');
});

t.test(
  'a client vanishing idle in a transaction: rolled back, the backend serves beta',
  async (t) => {
    const acme = await x.client(t, 'acme');
    const beta = await x.client(t, 'beta');
    await acme.query('begin');
    const pid = (await view(acme)).pid;
    await acme.query(
      "insert into public.docs (org_id, body) values (pgvpd.current_tenant_id()::uuid, 'a-uncommitted')",
    );
    cut(acme);
    const b = await view(beta);
    t.same([b.pid, seenIn(b)], [pid, x.expected('beta')], 'beta on the same backend sees beta');
    t.equal(await acmeCount(x, 'a-uncommitted'), 0, 'acme’s insert was rolled back');
  },
);

t.test('idle in a transaction past idle_in_transaction_timeout: FATAL 25P03', async (t) => {
  const y = await txOrgs(t, { pool_size: 1, idle_in_transaction_timeout: 1 });
  const busy = await y.raw(t, 'acme');
  busy.wire.write(msg.query('begin'));
  await readReadies(busy.wire, 1);
  busy.wire.write(msg.query('select pg_sleep(1.5)'));
  await readReadies(busy.wire, 1, 5000);
  busy.wire.write(msg.query('commit'));
  const committed = answerOf(await readReadies(busy.wire, 1));
  t.same(
    [committed.codes, committed.statuses],
    ['CZ', 'I'],
    'a statement running longer than the timeout inside a block is not idleness',
  );
  const acme = await y.raw(t, 'acme');
  const beta = await y.client(t, 'beta');
  acme.wire.write(
    msg.query(
      "begin; insert into public.docs (org_id, body) values (pgvpd.current_tenant_id()::uuid, 'a-idle'); select pg_backend_pid()",
    ),
  );
  const opened = answerOf(await readReadies(acme.wire, 1));
  t.equal(opened.statuses, 'T', 'acme is in a transaction block');
  const pid = Number(opened.rows[0]![0]);
  const frames = answerOf(await readToClose(acme.wire, 5000));
  t.same(
    [frames.codes, frames.errors],
    [
      'E',
      [
        {
          severity: 'FATAL',
          code: '25P03',
          message: 'terminating connection due to idle-in-transaction timeout (1000 ms)',
        },
      ],
    ],
    'FATAL 25P03, then the connection closes',
  );
  const b = await view(beta);
  t.same([b.pid, seenIn(b)], [pid, y.expected('beta')], 'the backend serves beta afterwards');
  t.equal(await acmeCount(y, 'a-idle'), 0, 'acme’s insert was rolled back');
});

t.test('a cancel from a client still waiting for a backend reaches no one', async (t) => {
  const acme = await x.raw(t, 'acme');
  const beta = await x.client(t, 'beta');
  await beta.query('begin');
  const pid = (await view(beta)).pid;
  acme.wire.write(msg.query('select pgvpd.current_tenant_id(), pg_backend_pid()::text'));
  await pause(100);
  const sleeping = beta.query('select pg_sleep(0.5)');
  await pause(100);
  await sendCancel(x.f.proxy.port, acme.key);
  await sleeping;
  t.pass('beta’s pg_sleep, running on the backend acme waits for, was not canceled');
  await beta.query('commit');
  const answer = answerOf(await readReadies(acme.wire, 1));
  t.same(
    [answer.codes, answer.rows],
    ['TDCZ', [[x.f.orgs.acme, String(pid)]]],
    'acme’s query then runs as acme on that backend, not canceled either',
  );
});

t.test('a client leaving while it waits for a backend leaves the pool usable', async (t) => {
  const acme = await x.raw(t, 'acme');
  const beta = await x.client(t, 'beta');
  await beta.query('begin');
  const pid = (await view(beta)).pid;
  acme.wire.write(
    msg.query(
      "insert into public.docs (org_id, body) values (pgvpd.current_tenant_id()::uuid, 'a-left')",
    ),
  );
  await pause(100);
  acme.wire.destroy();
  await pause(100);
  await beta.query('commit');
  const later = await x.client(t, 'acme');
  const v = await view(later);
  t.same([v.pid, seenIn(v)], [pid, x.expected('acme')], 'the next acme client gets the backend');
  t.equal(await acmeCount(x, 'a-left'), 0, 'the insert of the client that left never ran');
});

t.test('a client ending (Terminate) inside a transaction block is rolled back', async (t) => {
  const acme = await x.client(t, 'acme');
  const beta = await x.client(t, 'beta');
  await acme.query('begin');
  const pid = (await view(acme)).pid;
  await acme.query(
    "insert into public.docs (org_id, body) values (pgvpd.current_tenant_id()::uuid, 'a-ended')",
  );
  await acme.end();
  const b = await view(beta);
  t.same([b.pid, seenIn(b)], [pid, x.expected('beta')], 'beta on the same backend sees beta');
  t.equal(await acmeCount(x, 'a-ended'), 0, 'acme’s insert was rolled back');
});

t.test('a pipeline left without its Sync is idleness too: FATAL 25P03', async (t) => {
  const y = await txOrgs(t, { pool_size: 1, idle_in_transaction_timeout: 1 });
  const acme = await y.raw(t, 'acme');
  const beta = await y.client(t, 'beta');
  acme.wire.write(
    Buffer.concat([
      msg.parse('', 'select pg_backend_pid()::text'),
      msg.bind(),
      msg.execute(),
      msg.flush(),
    ]),
  );
  const flushed = answerOf([
    await acme.wire.readFrame(),
    await acme.wire.readFrame(),
    await acme.wire.readFrame(),
    await acme.wire.readFrame(),
  ]);
  t.equal(flushed.codes, '12DC', 'the answer so far, no ReadyForQuery');
  const pid = Number(flushed.rows[0]![0]);
  const frames = answerOf(await readToClose(acme.wire, 5000));
  t.same(
    [frames.codes, frames.errors],
    [
      'E',
      [
        {
          severity: 'FATAL',
          code: '25P03',
          message: 'terminating connection due to idle-in-transaction timeout (1000 ms)',
        },
      ],
    ],
    'FATAL 25P03, then the connection closes',
  );
  const b = await view(beta);
  t.same(seenIn(b), y.expected('beta'), 'beta is served afterwards');
  t.comment(`backend ${String(pid)} before, ${String(b.pid)} after`);
});

for (const change of ['the org suspended', 'the user removed'] as const) {
  t.test(`${change}: a connected client’s next transaction is refused`, async (t) => {
    const y = await txOrgs(t, { pool_size: 1 });
    const acme = await y.client(t, 'acme');
    const beta = await y.client(t, 'beta');
    t.same(seenIn(await view(acme)), y.expected('acme'), 'acme sees acme');
    const catalog = y.f.proxy.runtime.org?.catalog;
    if (change === 'the org suspended') {
      await y.db.query('select pgvpd.org_suspend($1)', [y.f.orgs.acme]);
      t.ok(await waitFor(() => catalog?.org('acme-analytics')?.status === 'suspended'));
    } else {
      await y.db.query('select pgvpd.user_remove($1, $2)', [y.f.orgs.acme, 'alice']);
      t.ok(await waitFor(() => catalog?.user(y.f.orgs.acme, 'alice') === undefined));
    }
    const refused = await failure(acme.query(viewSql));
    t.same(
      { severity: refused.severity, code: refused.code, message: refused.message },
      {
        severity: 'FATAL',
        code: '28000',
        message: 'could not establish the tenant context for this session',
      },
      'FATAL 28000 before anything of it ran on the backend',
    );
    t.same(seenIn(await view(beta)), y.expected('beta'), 'beta goes on, seeing beta');
  });
}
