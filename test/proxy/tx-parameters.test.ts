// Transaction pooling, settings that follow the client (issue 14, A9.14): two orgs' clients with
// different startup parameters (TimeZone UTC and Asia/Tokyo, their own application_name) share
// one backend, and each of their transactions runs with its own; a client's SET of a reported
// setting (ParameterStatus) follows that client to its next transaction on the backend, and not
// the other org's client.
import t from 'tap';
import { answerOf, msg, readReadies, statusOf, txOrgs, type RawClient } from './tx-fixture.js';

const x = await txOrgs(t, { pool_size: 1 });

const settingsSql =
  "select pg_backend_pid()::text, current_setting('TimeZone'), current_setting('application_name'), " +
  'pgvpd.current_tenant_id()';

/** The backend pid, TimeZone, application_name and tenant one transaction of `client` ran with. */
async function settings(client: RawClient): Promise<(string | null)[]> {
  client.wire.write(msg.query(settingsSql));
  const frames = await readReadies(client.wire, 1);
  const statuses = frames.filter((frame) => frame.code === 'S').map(statusOf);
  if (statuses.length > 0)
    throw new Error(`a ParameterStatus the client did not cause: ${JSON.stringify(statuses)}`);
  return answerOf(frames).rows[0]!;
}

t.test('each client’s startup parameters apply to each of its transactions', async (t) => {
  const acme = await x.raw(t, 'acme', { TimeZone: 'UTC', application_name: 'acme-app' });
  const beta = await x.raw(t, 'beta', { TimeZone: 'Asia/Tokyo', application_name: 'beta-app' });
  t.same(
    [acme.parameters.get('TimeZone'), beta.parameters.get('TimeZone')],
    ['UTC', 'Asia/Tokyo'],
    'each handshake reported the client’s own TimeZone',
  );
  const pids = new Set<string>();
  const wrong: string[] = [];
  for (let i = 0; i < 10; i++) {
    for (const [client, expected] of [
      [acme, ['UTC', 'acme-app', x.f.orgs.acme]],
      [beta, ['Asia/Tokyo', 'beta-app', x.f.orgs.beta]],
    ] as const) {
      const [pid, ...rest] = await settings(client);
      pids.add(pid!);
      if (JSON.stringify(rest) !== JSON.stringify(expected))
        wrong.push(`round ${String(i)}: ${JSON.stringify(rest)}`);
    }
  }
  t.same(
    wrong,
    [],
    'every transaction ran with its own client’s TimeZone and application_name, and no client was sent a ParameterStatus of the other’s',
  );
  t.equal(pids.size, 1, 'all on one backend');

  await t.test('a SET TimeZone follows its client, not the other org’s', async (t) => {
    acme.wire.write(msg.query("set TimeZone = 'Europe/Paris'"));
    const set = await readReadies(acme.wire, 1);
    t.same(
      set.filter((frame) => frame.code === 'S').map(statusOf),
      [['TimeZone', 'Europe/Paris']],
      'acme is told the new TimeZone (ParameterStatus)',
    );
    const b = await settings(beta);
    t.same(b.slice(1), ['Asia/Tokyo', 'beta-app', x.f.orgs.beta], 'beta keeps Asia/Tokyo');
    const a = await settings(acme);
    t.same(
      a.slice(1),
      ['Europe/Paris', 'acme-app', x.f.orgs.acme],
      'acme’s next transaction runs in Europe/Paris',
    );
    t.same([a[0], b[0]], [...pids, ...pids], 'on the same backend');
    t.same(
      (await settings(beta)).slice(1),
      ['Asia/Tokyo', 'beta-app', x.f.orgs.beta],
      'and beta after it in Asia/Tokyo again',
    );
  });
});

// Startup parameters are applied with set_config, a session SET (docs/transaction-pooling.md):
// RESET goes to the server's default, as behind PgBouncer. The client is told so, and its later
// transactions run with what it was told.
t.test('a client’s RESET of a startup setting: the server’s default, told and kept', async (t) => {
  const serverDefault = (
    await x.db.query<{ tz: string }>(
      "select reset_val as tz from pg_settings where name = 'TimeZone'",
    )
  ).rows[0]!.tz;
  const acme = await x.raw(t, 'acme', { TimeZone: 'Europe/Berlin' });
  const beta = await x.raw(t, 'beta', { TimeZone: 'Asia/Tokyo' });
  acme.wire.write(msg.query("set TimeZone = 'America/New_York'"));
  await readReadies(acme.wire, 1);
  await settings(beta);
  acme.wire.write(msg.query('reset TimeZone'));
  const reset = await readReadies(acme.wire, 1);
  t.same(
    reset.filter((frame) => frame.code === 'S').map(statusOf),
    [['TimeZone', serverDefault]],
    `RESET reports the server’s default, ${serverDefault}`,
  );
  for (let i = 0; i < 2; i++) {
    t.equal((await settings(beta))[1], 'Asia/Tokyo', 'beta keeps Asia/Tokyo');
    t.equal(
      (await settings(acme))[1],
      serverDefault,
      'acme’s next transaction after beta’s runs in what it was told',
    );
  }
});

t.test('client_encoding follows each client: the same character in each one’s bytes', async (t) => {
  const acme = await x.raw(t, 'acme', { client_encoding: 'LATIN1' });
  const beta = await x.raw(t, 'beta', { client_encoding: 'UTF8' });
  /** The bytes of the one value of `select chr(233)` (é) as the client received them. */
  const eAcute = async (client: RawClient): Promise<string> => {
    client.wire.write(msg.query('select chr(233), pg_backend_pid()::text'));
    const row = (await readReadies(client.wire, 1)).find((frame) => frame.code === 'D')!;
    const length = row.body.readInt32BE(2);
    return row.body.subarray(6, 6 + length).toString('hex');
  };
  const seen: string[] = [];
  for (let i = 0; i < 3; i++) seen.push(await eAcute(acme), await eAcute(beta));
  t.same(seen, ['e9', 'c3a9', 'e9', 'c3a9', 'e9', 'c3a9'], 'LATIN1 for acme, UTF-8 for beta');
});

t.test('a client without a startup TimeZone never gets another client’s', async (t) => {
  const serverDefault = (
    await x.db.query<{ tz: string }>(
      "select reset_val as tz from pg_settings where name = 'TimeZone'",
    )
  ).rows[0]!.tz;
  t.not(serverDefault, 'Asia/Tokyo', `the server’s default is ${serverDefault}`);
  for (const other of ['acme', 'beta'] as const) {
    await t.test(`the other client of ${other}`, async (t) => {
      const tokyo = await x.raw(t, 'acme', { TimeZone: 'Asia/Tokyo' });
      await settings(tokyo);
      const plain = await x.raw(t, other);
      t.equal(
        plain.parameters.get('TimeZone'),
        serverDefault,
        'its handshake reports the server’s default',
      );
      const seen: (string | null)[] = [];
      for (let i = 0; i < 3; i++) {
        seen.push((await settings(tokyo))[1]!, (await settings(plain))[1]!);
      }
      t.same(
        seen,
        ['Asia/Tokyo', serverDefault, 'Asia/Tokyo', serverDefault, 'Asia/Tokyo', serverDefault],
        'each transaction of the plain client runs in the server’s default',
      );
    });
  }
});

t.test('a SET rolled back, and a SET LOCAL, do not follow the client', async (t) => {
  const acme = await x.raw(t, 'acme', { TimeZone: 'UTC' });
  const beta = await x.raw(t, 'beta', { TimeZone: 'Asia/Tokyo' });
  // PostgreSQL reports a setting at ReadyForQuery when it changed since the last report.
  const reported = async (sql: string) => {
    acme.wire.write(msg.query(sql));
    return (await readReadies(acme.wire, 1)).filter((frame) => frame.code === 'S').map(statusOf);
  };
  t.same(await reported('begin'), [], 'BEGIN reports nothing');
  t.same(
    await reported("set TimeZone = 'Europe/Paris'"),
    [['TimeZone', 'Europe/Paris']],
    'the SET inside the block is reported',
  );
  t.same(await reported('rollback'), [['TimeZone', 'UTC']], 'and so is its rollback');
  await settings(beta);
  t.equal((await settings(acme))[1], 'UTC', 'acme’s next transaction runs in UTC');
  acme.wire.write(msg.query("begin; set local TimeZone = 'America/Lima'; commit"));
  await readReadies(acme.wire, 1);
  await settings(beta);
  t.equal((await settings(acme))[1], 'UTC', 'and after a SET LOCAL, in UTC too');
});
