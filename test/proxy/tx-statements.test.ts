// Transaction pooling, prepared statements across backends (issue 14, A9.8 and A9.10): a
// client's named statements follow it to whichever backend serves its next transaction (pg's
// `name:` queries forced onto alternating backends); its unnamed statement, parsed and described
// on one backend, is bound on another; Close answers CloseComplete and forgets the name; a client's
// DEALLOCATE ALL and DISCARD ALL let it prepare the same names again (Prisma's pattern) without
// breaking another client's statements on that backend; a name parsed twice is FATAL 42P05 and an
// unknown one FATAL 26000; with max_prepared_statements 2, three statements cycle; and SQL
// DEALLOCATE of a statement the backend lacks is answered (its text no longer parsing, or in an
// aborted transaction: 25P02), never left hanging.
import type pg from 'pg';
import t from 'tap';
import { answerOf, msg, readReadies, readToClose, txOrgs, type RawClient } from './tx-fixture.js';

const two = await txOrgs(t, { pool_size: 2 });
const one = await txOrgs(t, { pool_size: 1 });

const namedSql =
  'select $1::int as i, pg_backend_pid() as pid, pgvpd.current_tenant_id() as tenant, ' +
  "(select coalesce(array_agg(body order by body), '{}') from public.docs) as rows";

interface Named {
  i: number;
  pid: number;
  tenant: string;
  rows: string[];
}

/**
 * Forces a client's transactions onto alternating backends of a pool of two: before each, a
 * holder of the same org takes the backend the client used last (an owner's most recently used
 * idle backend is the one it gets), then the previous holder lets the other one go.
 */
class Alternator {
  private held: pg.Client | undefined;
  private next = 0;
  constructor(private readonly holders: [pg.Client, pg.Client]) {}

  async step(): Promise<void> {
    const holder = this.holders[this.next]!;
    this.next = 1 - this.next;
    await holder.query('begin');
    await this.held?.query('commit');
    this.held = holder;
  }

  async end(): Promise<void> {
    await this.held?.query('commit');
    this.held = undefined;
  }
}

t.test('pg name: statements bound on alternating backends', async (t) => {
  const acme = await two.client(t, 'acme');
  const beta = await two.client(t, 'beta');
  const alternate = new Alternator([await two.client(t, 'acme'), await two.client(t, 'acme')]);
  const pids: number[] = [];
  const wrong: string[] = [];
  for (let k = 0; k < 8; k++) {
    await alternate.step();
    for (const name of ['q1', 'q2']) {
      const row = (await acme.query<Named>({ name, text: `${namedSql} -- ${name}`, values: [k] }))
        .rows[0]!;
      if (name === 'q1') pids.push(row.pid);
      if (
        JSON.stringify({ i: row.i, tenant: row.tenant, rows: row.rows }) !==
        JSON.stringify({ i: k, ...two.expected('acme') })
      )
        wrong.push(`${name} round ${String(k)}: ${JSON.stringify(row)}`);
    }
    // beta's q1 is another statement under the same client name.
    const b = (
      await beta.query<{ i: number; tenant: string }>({
        name: 'q1',
        text: 'select $1::int * 10 as i, pgvpd.current_tenant_id() as tenant',
        values: [k],
      })
    ).rows[0]!;
    if (b.i !== k * 10 || b.tenant !== two.f.orgs.beta)
      wrong.push(`beta round ${String(k)}: ${JSON.stringify(b)}`);
  }
  await alternate.end();
  t.same(wrong, [], 'every answer was its own statement’s, with its own org’s rows');
  t.equal(new Set(pids).size, 2, `acme’s statements ran on two backends (${pids.join(', ')})`);
  t.ok(
    pids.every((pid, n) => n === 0 || pid !== pids[n - 1]),
    'on a different backend each round',
  );
});

const unnamedSql =
  'select pg_backend_pid()::text as pid, pgvpd.current_tenant_id() as tenant -- unnamed across';

t.test(
  'the unnamed statement, parsed and described on one backend, bound on another',
  async (t) => {
    const acme = await two.raw(t, 'acme');
    const alternate = new Alternator([await two.client(t, 'acme'), await two.client(t, 'acme')]);
    await alternate.step();
    acme.wire.write(
      Buffer.concat([msg.parse('', unnamedSql), msg.describeStatement(''), msg.sync()]),
    );
    const described = answerOf(await readReadies(acme.wire, 1));
    t.equal(described.codes, '1tTZ', 'ParseComplete, ParameterDescription, RowDescription');
    // The backend that parsed it says so itself: its last statement is this one.
    const parsedOn = (
      await two.db.query<{ pid: number }>(
        'select pid from pg_stat_activity where query = $1 and datname = current_database()',
        [unnamedSql],
      )
    ).rows.map((row) => String(row.pid));
    t.equal(parsedOn.length, 1, 'one backend parsed it');
    await alternate.step();
    acme.wire.write(Buffer.concat([msg.bind(''), msg.execute(), msg.sync()]));
    const bound = answerOf(await readReadies(acme.wire, 1));
    await alternate.end();
    t.equal(bound.codes, '2DCZ', 'BindComplete, the row, CommandComplete');
    t.not(bound.rows[0]![0], parsedOn[0], 'on another backend than the one that parsed it');
    t.equal(bound.rows[0]![1], two.f.orgs.acme, 'acme’s tenant');
  },
);

/** Runs `messages` then reads `readies` ReadyForQuery's worth of answer. */
async function exchange(client: RawClient, messages: Buffer[], readies = 1) {
  client.wire.write(Buffer.concat(messages));
  return answerOf(await readReadies(client.wire, readies));
}

const bindRun = (name: string, values: string[] = []) => [
  msg.bind(name, values),
  msg.execute(),
  msg.sync(),
];

t.test('Close gets CloseComplete, and the name is gone: a later Bind is FATAL 26000', async (t) => {
  const acme = await one.raw(t, 'acme');
  t.equal(
    (await exchange(acme, [msg.parse('s1', 'select 1'), ...bindRun('s1')])).codes,
    '12DCZ',
    'prepared and run',
  );
  t.equal(
    (await exchange(acme, [msg.closeStatement('s1'), msg.sync()])).codes,
    '3Z',
    'CloseComplete',
  );
  acme.wire.write(Buffer.concat(bindRun('s1')));
  const frames = answerOf(await readToClose(acme.wire));
  t.same(
    { codes: frames.codes, errors: frames.errors },
    {
      codes: 'E',
      errors: [
        { severity: 'FATAL', code: '26000', message: 'prepared statement "s1" does not exist' },
      ],
    },
    'FATAL 26000 and the connection closes',
  );
});

t.test('a name parsed twice without Close is FATAL 42P05', async (t) => {
  const acme = await one.raw(t, 'acme');
  t.equal((await exchange(acme, [msg.parse('s1', 'select 1'), msg.sync()])).codes, '1Z');
  acme.wire.write(Buffer.concat([msg.parse('s1', 'select 2'), msg.sync()]));
  const frames = answerOf(await readToClose(acme.wire));
  t.same(
    { codes: frames.codes, errors: frames.errors },
    {
      codes: 'E',
      errors: [
        { severity: 'FATAL', code: '42P05', message: 'prepared statement "s1" already exists' },
      ],
    },
    'FATAL 42P05 and the connection closes',
  );
});

for (const reset of ['DEALLOCATE ALL', 'DISCARD ALL']) {
  t.test(`after the client's ${reset} it prepares the same names again`, async (t) => {
    const acme = await one.raw(t, 'acme');
    const other = await one.raw(t, 'acme');
    const tenantOf = 'select pgvpd.current_tenant_id() as tenant, $1::text as n';
    t.equal(
      (await exchange(other, [msg.parse('mine', 'select 42'), ...bindRun('mine')])).codes,
      '12DCZ',
      'another client of the org prepares a statement on the backend',
    );
    for (const name of ['s0', 's1']) {
      const first = await exchange(acme, [msg.parse(name, tenantOf), ...bindRun(name, [name])]);
      t.same([first.codes, first.rows], ['12DCZ', [[one.f.orgs.acme, name]]], `${name} prepared`);
    }
    const cleared = await exchange(acme, [msg.query(reset)]);
    t.equal(cleared.codes, 'CZ', `${reset} runs`);
    for (const name of ['s0', 's1']) {
      const again = await exchange(acme, [msg.parse(name, tenantOf), ...bindRun(name, [name])]);
      t.same(
        [again.codes, again.rows],
        ['12DCZ', [[one.f.orgs.acme, name]]],
        `${name} prepared again under the same name, and it answers as acme`,
      );
    }
    const theirs = await exchange(other, bindRun('mine'));
    t.same(
      [theirs.codes, theirs.rows],
      ['2DCZ', [['42']]],
      'the other client’s statement still binds on that backend',
    );
  });
}

t.test('with max_prepared_statements 2, three statements cycle', async (t) => {
  const tiny = await txOrgs(t, { pool_size: 1, max_prepared_statements: 2 });
  const acme = await tiny.client(t, 'acme');
  const beta = await tiny.client(t, 'beta');
  const wrong: string[] = [];
  let most = 0;
  for (let round = 0; round < 4; round++) {
    for (const [client, org] of [
      [acme, 'acme'],
      [beta, 'beta'],
    ] as const) {
      for (const name of ['n1', 'n2', 'n3']) {
        const row = (
          await client.query<{ i: number; tenant: string; held: number }>({
            name,
            text: `select $1::int as i, pgvpd.current_tenant_id() as tenant,
                   (select count(*)::int from pg_prepared_statements) as held -- ${name}`,
            values: [round],
          })
        ).rows[0]!;
        most = Math.max(most, row.held);
        if (row.i !== round || row.tenant !== tiny.f.orgs[org])
          wrong.push(`${org} ${name} round ${String(round)}: ${JSON.stringify(row)}`);
      }
    }
  }
  t.same(wrong, [], 'every answer was its own, for both orgs, in every round');
  t.ok(most <= 2, `the backend never held more than 2 statements (at most ${String(most)})`);
});

t.test('two clients of one org share a statement; one closing it leaves the other’s', async (t) => {
  const first = await one.raw(t, 'acme');
  const second = await one.raw(t, 'acme');
  const text = 'select pgvpd.current_tenant_id() as tenant, $1::text as who';
  t.equal((await exchange(first, [msg.parse('a', text), msg.sync()])).codes, '1Z', 'a parsed');
  t.equal((await exchange(second, [msg.parse('b', text), msg.sync()])).codes, '1Z', 'b parsed');
  t.equal(
    (await exchange(first, [msg.closeStatement('a'), msg.sync()])).codes,
    '3Z',
    'a closed by the first client',
  );
  const bound = await exchange(second, bindRun('b', ['second']));
  t.same(
    [bound.codes, bound.rows],
    ['2DCZ', [[one.f.orgs.acme, 'second']]],
    'the second client’s b still binds',
  );
});

t.test('a Parse the backend refuses registers no name: the same name parses again', async (t) => {
  const acme = await one.raw(t, 'acme');
  const refused = await exchange(acme, [msg.parse('s1', 'selec 1'), msg.sync()]);
  t.same(
    [refused.codes, refused.errors],
    ['EZ', [{ severity: 'ERROR', code: '42601', message: 'syntax error at or near "selec"' }]],
    'a syntax error, and the client stays',
  );
  const again = await exchange(acme, [msg.parse('s1', 'select 1'), ...bindRun('s1')]);
  t.same([again.codes, again.rows], ['12DCZ', [['1']]], 's1 parses and runs');
});

t.test('statements skipped after an error in their Sync group are not taken as made', async (t) => {
  const acme = await one.raw(t, 'acme');
  const failed = await exchange(acme, [
    msg.parse('', 'select 1/0'),
    msg.bind(),
    msg.execute(),
    msg.parse('s2', 'select 2'),
    msg.sync(),
  ]);
  t.same(
    [failed.codes, failed.errors.map((e) => e.code)],
    ['1EZ', ['22012']],
    'the error skips the rest of the group',
  );
  const again = await exchange(acme, [msg.parse('s2', 'select 2'), ...bindRun('s2')]);
  t.same([again.codes, again.rows], ['12DCZ', [['2']]], 's2 parses (no 42P05) and runs');
});

t.test('a replayed Parse skipped after an error is replayed again', async (t) => {
  const acme = await two.raw(t, 'acme');
  const alternate = new Alternator([await two.client(t, 'acme'), await two.client(t, 'acme')]);
  await alternate.step();
  t.equal(
    (await exchange(acme, [msg.parse('s', 'select pg_backend_pid()::text'), ...bindRun('s')]))
      .codes,
    '12DCZ',
    's prepared and run on one backend',
  );
  await alternate.step();
  const failed = await exchange(acme, [
    msg.parse('', 'select 1/0'),
    msg.bind(),
    msg.execute(),
    ...bindRun('s'),
  ]);
  t.same(
    [failed.codes, failed.errors.map((e) => e.code)],
    ['1EZ', ['22012']],
    'on the other backend the error skips the Bind of s (and its injected Parse)',
  );
  const bound = await exchange(acme, bindRun('s'));
  await alternate.end();
  t.same(
    [bound.codes, bound.errors],
    ['2DCZ', []],
    'the next Bind of s there gets its Parse injected again',
  );
});

t.test('a standalone Describe of a statement on a backend that lacks it', async (t) => {
  const acme = await two.raw(t, 'acme');
  const alternate = new Alternator([await two.client(t, 'acme'), await two.client(t, 'acme')]);
  await alternate.step();
  const text = 'select $1::int as n, pgvpd.current_tenant_id() as tenant';
  t.equal((await exchange(acme, [msg.parse('d', text), msg.sync()])).codes, '1Z', 'd parsed');
  await alternate.step();
  const described = await exchange(acme, [msg.describeStatement('d'), msg.sync()]);
  t.equal(described.codes, 'tTZ', 'ParameterDescription and RowDescription, nothing else');
  await alternate.step();
  const bound = await exchange(acme, bindRun('d', ['7']));
  await alternate.end();
  t.same([bound.codes, bound.rows], ['2DCZ', [['7', two.f.orgs.acme]]], 'then it binds and runs');
});

for (const otherOrg of ['acme', 'beta'] as const) {
  t.test(`an unnamed statement replaced on the backend by a client of ${otherOrg}`, async (t) => {
    const first = await one.raw(t, 'acme');
    const other = await one.raw(t, otherOrg);
    t.equal(
      (
        await exchange(first, [
          msg.parse('', "select 'first' as who, pgvpd.current_tenant_id()"),
          msg.sync(),
        ])
      ).codes,
      '1Z',
      'the first client parses its unnamed statement',
    );
    const theirs = await exchange(other, [
      msg.parse('', "select 'other' as who, pgvpd.current_tenant_id()"),
      ...bindRun(''),
    ]);
    t.same(theirs.rows, [['other', one.f.orgs[otherOrg]]], 'the other client runs its own');
    const mine = await exchange(first, bindRun(''));
    t.same(
      [mine.codes, mine.rows],
      ['2DCZ', [['first', one.f.orgs.acme]]],
      'the first client’s Bind runs its own statement, as acme',
    );
  });
}

t.test(
  'DEALLOCATE of a statement whose text no longer parses, on a backend that lacks it',
  async (t) => {
    await two.db.query(
      'create function public.tx_dealloc_fn() returns int language sql as $$select 1$$',
    );
    t.teardown(() => two.db.query('drop function if exists public.tx_dealloc_fn()'));
    const acme = await two.raw(t, 'acme');
    const alternate = new Alternator([await two.client(t, 'acme'), await two.client(t, 'acme')]);
    await alternate.step();
    t.equal(
      (await exchange(acme, [msg.parse('gone', 'select public.tx_dealloc_fn()'), msg.sync()]))
        .codes,
      '1Z',
      'prepared on one backend',
    );
    await two.db.query('drop function public.tx_dealloc_fn()');
    await alternate.step();
    const deallocated = await exchange(acme, [msg.query('DEALLOCATE gone')]);
    t.same(
      [deallocated.codes, deallocated.errors, deallocated.statuses],
      ['CZ', [], 'I'],
      'on the other backend it is answered as DEALLOCATE, with no error',
    );
    const again = await exchange(acme, [msg.parse('gone', 'select 7'), ...bindRun('gone')]);
    await alternate.end();
    t.same([again.codes, again.rows], ['12DCZ', [['7']]], 'the name is free again');
  },
);

t.test('DEALLOCATE in an aborted transaction on a backend that lacks the statement', async (t) => {
  const acme = await two.raw(t, 'acme');
  const alternate = new Alternator([await two.client(t, 'acme'), await two.client(t, 'acme')]);
  await alternate.step();
  t.equal(
    (await exchange(acme, [msg.parse('held', 'select 1'), msg.sync()])).codes,
    '1Z',
    'prepared on one backend',
  );
  await alternate.step();
  const failed = await exchange(
    acme,
    [msg.query('BEGIN'), msg.query('SELECT 1/0'), msg.query('DEALLOCATE held')],
    3,
  );
  t.same(
    [failed.codes, failed.errors.map((e) => [e.code, e.message]), failed.statuses],
    [
      'CZEZEZ',
      [
        ['22012', 'division by zero'],
        [
          '25P02',
          'current transaction is aborted, commands ignored until end of transaction block',
        ],
      ],
      'TEE',
    ],
    'the DEALLOCATE gets what PostgreSQL answers in an aborted transaction, and no more',
  );
  const rolledBack = await exchange(acme, [msg.query('ROLLBACK')]);
  await alternate.end();
  t.same([rolledBack.codes, rolledBack.statuses], ['CZ', 'I'], 'ROLLBACK ends it');
});
