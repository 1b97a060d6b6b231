// Issue 11, finding 8 (org mode, where the proxy checks passwords itself): login throttling and
// user enumeration, through a real proxy. A success on the attacker's own account does not clear
// the throttle on guesses at someone else's; parallel guesses from one address are answered one
// at a time, and connections beyond max_unauthenticated_per_address are refused; a wrong password
// and an unknown user are answered equally fast; two proxies of one catalog give an unknown user
// the same salt (and another org gives it another).
//
// Each client comes from its own loopback address (127.20.x.y as the source address), so that
// the throttle's memory of one test does not reach another. What the throttle decided is read
// from the proxy's log (delay_ms, step_ms), not from wall-clock times, except where the finding
// itself is about time.
import pg from 'pg';
import t from 'tap';
import { loadConfig } from '../../proxy/config.js';
import { createLogger } from '../../proxy/logger.js';
import { ScramClient } from '../../proxy/auth/scram-client.js';
import { makeVerifier } from '../../proxy/auth/scram-verifier.js';
import { startProxy } from '../../proxy/index.js';
import {
  authCodeOf,
  cstring,
  int32,
  startupMessage,
  terminateMessage,
  typedMessage,
  WireClient,
  wireErrorOf,
  type WireError,
} from '../support/wire.js';
import { waitFor } from './clients-support.js';
import { orgFixture } from './org-fixture.js';
import { resetDone } from './org-support.js';

interface LogEntry {
  event?: string;
  result?: string;
  delay_ms?: number;
  step_ms?: number;
  answer_at?: number;
  client?: string;
  time: number;
  msg?: string;
  users?: number;
}
const entries: LogEntry[] = [];
const logger = createLogger('debug', {
  write: (line: string) => {
    entries.push(JSON.parse(line) as LogEntry);
  },
});
const f = await orgFixture(t, {}, { logger });

// The attacker's own account (eve), victims, and users for the timing test (one per try, so that
// no per-user tally builds up).
const timingTries = 220;
const users: [string, string][] = [
  ['eve', 'eve-pass'],
  ['victim1', 'victim1-pass'],
  ['victim2', 'victim2-pass'],
  ['victim3', 'victim3-pass'],
  ...Array.from({ length: timingTries }, (_, i): [string, string] => [
    `t${String(i)}`,
    `p${String(i)}`,
  ]),
];
await f.db.query(
  `select pgvpd.user_add($1, u.name, u.verifier, $2)
     from unnest($3::text[], $4::text[]) as u(name, verifier)`,
  [
    f.orgs.acme,
    f.connectAs,
    users.map(([name]) => name),
    users.map(([, password]) => makeVerifier(password)),
  ],
);
if (
  !(await waitFor(
    () => entries.some((e) => e.event === 'catalog' && (e.users ?? 0) >= users.length + 2),
    10_000,
  ))
) {
  throw new Error('the proxy did not load the new users');
}

let hosts = 0;
/** A loopback address no client of this file has used yet. */
function freshAddress(): string {
  hosts += 1;
  return `127.20.${String(Math.floor(hosts / 250))}.${String((hosts % 250) + 1)}`;
}

const refused = (user: string) => ({
  severity: 'FATAL',
  code: '28P01',
  message: `password authentication failed for user "${user}"`,
  detail: undefined,
  hint: undefined,
});

const fields = (e: WireError | undefined) =>
  e && { severity: e.severity, code: e.code, message: e.message, detail: e.detail, hint: e.hint };

/** The auth lines the proxy logged for clients from `address`, in order. */
const logOf = (address: string, result: string) =>
  entries.filter(
    (e) => e.event === 'auth' && e.result === result && e.client?.startsWith(`${address}:`),
  );

const saslInitial = (scram: ScramClient): Buffer => {
  const first = Buffer.from(scram.firstMessage(), 'utf8');
  return typedMessage('p', Buffer.concat([cstring('SCRAM-SHA-256'), int32(first.length), first]));
};

interface Login {
  client: WireClient;
  scram: ScramClient;
  /** The server-first-message, or the error that came instead of AuthenticationSASL. */
  serverFirst?: string;
  error?: WireError;
}

/** Connects from `from` and runs SCRAM up to the server-first-message. */
async function begin(
  from: string,
  database: string,
  user: string,
  password: string,
  port = f.proxy.port,
): Promise<Login> {
  const client = await WireClient.connect(port, '127.0.0.1', from);
  const scram = new ScramClient(password);
  client.write(startupMessage({ user, database }));
  const sasl = await client.readFrame();
  if (sasl.code === 'E') return { client, scram, error: wireErrorOf(sasl) };
  if (sasl.code !== 'R' || authCodeOf(sasl) !== 10) throw new Error('expected AuthenticationSASL');
  client.write(saslInitial(scram));
  const more = await client.readFrame();
  if (more.code !== 'R' || authCodeOf(more) !== 11) throw new Error('expected SASLContinue');
  return { client, scram, serverFirst: more.body.toString('utf8', 4) };
}

interface Outcome {
  ok: boolean;
  error?: WireError;
  /** From sending the client-final-message to the first byte of the answer, in ms. */
  ms: number;
}

/** Sends the client-final-message and reads the answer; a success is ended with Terminate. */
async function finish(login: Login, wait = 20_000): Promise<Outcome> {
  const { client } = login;
  try {
    const final = typedMessage('p', Buffer.from(login.scram.finalMessage(login.serverFirst!)));
    let arrived = 0n;
    client.socket.once('data', () => (arrived = process.hrtime.bigint()));
    const sent = process.hrtime.bigint();
    client.write(final);
    const answer = await client.readFrame(wait);
    const ms = Number(arrived - sent) / 1e6;
    if (answer.code === 'E') return { ok: false, error: wireErrorOf(answer), ms };
    await client.readUntil('Z', wait);
    client.write(terminateMessage());
    return { ok: true, ms };
  } finally {
    client.destroy();
  }
}

async function login(
  from: string,
  user: string,
  password: string,
  database = 'acme-analytics',
): Promise<Outcome> {
  const started = await begin(from, database, user, password);
  if (started.error) {
    started.client.destroy();
    return { ok: false, error: started.error, ms: 0 };
  }
  return finish(started);
}

t.test(
  "finding 8: a success on the attacker's own account does not reset the delay for guesses at another user",
  async (t) => {
    const from = freshAddress();
    for (let i = 0; i < 4; i++) {
      t.same(fields((await login(from, 'victim1', 'guess')).error), refused('victim1'));
    }
    t.same(
      logOf(from, 'refused').map((e) => e.delay_ms),
      [0, 0, 0, 250],
      'three free failures, then 250 ms',
    );
    t.equal((await login(from, 'eve', 'eve-pass')).ok, true, 'the attacker logs in as eve');
    t.same(logOf(from, 'held'), [], 'and is not held back: eve has no failures');
    t.same(fields((await login(from, 'victim1', 'guess')).error), refused('victim1'));
    t.equal(
      logOf(from, 'refused').at(-1)?.delay_ms,
      500,
      'the next guess at victim1 goes on where it was (500 ms), not at 0',
    );
  },
);

t.test(
  'finding 8: guesses at one user from many addresses add up, are not forgiven by another login, and the victim still gets in',
  async (t) => {
    const addresses = Array.from({ length: 11 }, () => freshAddress());
    for (const from of addresses) {
      t.same(fields((await login(from, 'victim2', 'guess')).error), refused('victim2'));
    }
    t.same(
      addresses.map((from) => logOf(from, 'refused')[0]?.delay_ms),
      [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 250],
      'ten free failures at victim2 from anywhere, then 250 ms',
    );
    t.equal((await login(addresses[0]!, 'eve', 'eve-pass')).ok, true, 'eve logs in meanwhile');
    const next = freshAddress();
    t.same(fields((await login(next, 'victim2', 'guess')).error), refused('victim2'));
    t.equal(logOf(next, 'refused')[0]?.delay_ms, 500, 'the next guess, from a new address: 500 ms');

    const own = freshAddress();
    const victim = await login(own, 'victim2', 'victim2-pass');
    t.equal(victim.ok, true, 'the victim, with its password, gets in');
    t.same(
      logOf(own, 'held').map((e) => e.delay_ms),
      [1000],
      'held back as long as a guess would be (so a guesser cannot tell), and no more',
    );
  },
);

t.test(
  'finding 8: 60 parallel guesses from one address are answered one at a time; beyond 32 not yet authenticated, 53300',
  async (t) => {
    const from = freshAddress();
    const logins = await Promise.all(
      Array.from({ length: 60 }, () => begin(from, 'acme-analytics', 'victim3', 'guess')),
    );
    const going = logins.filter((l) => !l.error);
    const stopped = logins.filter((l) => l.error);
    for (const l of stopped) l.client.destroy();
    t.equal(going.length, 32, 'max_unauthenticated_per_address (32) connections go on');
    t.equal(stopped.length, 28);
    t.same(
      new Set(stopped.map((l) => JSON.stringify(fields(l.error)))),
      new Set([
        JSON.stringify({
          severity: 'FATAL',
          code: '53300',
          message: `too many connections from host "${from}" that have not authenticated yet`,
          detail: undefined,
          hint: 'At most 32 connections from one host may be logging in at a time.',
        }),
      ]),
      'the others are refused at once, each with the same 53300',
    );

    // All the guesses at once, then what is answered within 6 s: each delay alone is at most 5 s,
    // so without a queue every guess would be answered by then.
    const finals = going.map((l) =>
      typedMessage('p', Buffer.from(l.scram.finalMessage(l.serverFirst!))),
    );
    const sent = Date.now();
    going.forEach((l, i) => {
      l.client.write(finals[i]!);
    });
    const answers = await Promise.all(
      going.map((l) =>
        l.client.readFrame(6000).then(
          (frame) => ({ frame, at: Date.now() - sent }),
          () => undefined,
        ),
      ),
    );
    for (const l of going) l.client.destroy();
    const answered = answers.filter((a) => a !== undefined);
    t.ok(
      answered.length >= 3 && answered.length <= 7,
      `at most 7 answered within 6 s: 3 free, then 250, 750, 1750, 3750 ms, the 8th at 7750 (${String(answered.length)}: ${answered.map((a) => a.at).join(', ')} ms)`,
    );
    t.same(
      new Set(answered.map((a) => JSON.stringify(fields(wireErrorOf(a.frame))))),
      new Set([JSON.stringify(refused('victim3'))]),
      'every answer a 28P01',
    );

    // The proxy's schedule: each answer at least its own delay after the one before it, by the
    // answer times the throttle set (answer_at; the log line's own time may come later on a
    // loaded machine). Without the queue, answers would come only the previous delay apart:
    // 250 ms short of 500, and so on.
    const decided = logOf(from, 'refused');
    t.equal(decided.length, 32, 'every guess was decided');
    const schedule = decided
      .map((e) => ({ at: e.answer_at ?? NaN, step: e.step_ms ?? NaN }))
      .sort((a, b) => a.at - b.at);
    const tooClose = schedule.filter(
      (s, i) => i > 0 && s.step > 0 && s.at - schedule[i - 1]!.at < s.step,
    );
    t.same(tooClose, [], 'no answer sooner than its delay after the previous one');
    t.ok(
      (schedule.at(-1)?.at ?? 0) - sent > 60_000,
      'the 32nd answer would have come after more than a minute',
    );

    t.ok(
      await waitFor(async () => {
        const again = await begin(from, 'acme-analytics', 'victim3', 'guess');
        again.client.destroy();
        return !again.error;
      }, 15_000),
      'once the clients have gone, the address may connect again',
    );
  },
);

t.test(
  'finding 8: a wrong password and an unknown user are answered equally fast (median of 200 each, fresh addresses)',
  async (t) => {
    // Idle pooled sessions of the connect_as role, which a known user's login readies early.
    const warm = await Promise.all(
      [0, 1, 2].map(async () => {
        const client = new pg.Client({
          host: '127.0.0.1',
          port: f.proxy.port,
          database: 'acme-analytics',
          user: 'eve',
          password: 'eve-pass',
        });
        await client.connect();
        return client;
      }),
    );
    const pids = await Promise.all(
      warm.map(
        async (c) =>
          (await c.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid,
      ),
    );
    await Promise.all(warm.map((c) => c.end()));
    for (const pid of pids) t.ok(await resetDone(f.db, pid), 'a pooled session is idle');

    const wrong: number[] = [];
    const unknown: number[] = [];
    const warmUp = 20;
    const timingAddresses: string[] = [];
    const fresh = () => {
      const from = freshAddress();
      timingAddresses.push(from);
      return from;
    };
    for (let i = 0; i < timingTries; i++) {
      const tryWrong = async () => {
        const outcome = await login(fresh(), `t${String(i)}`, 'not-the-password');
        t.same(fields(outcome.error), refused(`t${String(i)}`));
        if (i >= warmUp) wrong.push(outcome.ms);
      };
      const tryUnknown = async () => {
        const outcome = await login(fresh(), `ghost${String(i)}`, 'not-the-password');
        t.same(fields(outcome.error), refused(`ghost${String(i)}`));
        if (i >= warmUp) unknown.push(outcome.ms);
      };
      // Interleaved, in alternating order, so that drift and noise fall on both alike.
      if (i % 2 === 0) {
        await tryWrong();
        await tryUnknown();
      } else {
        await tryUnknown();
        await tryWrong();
      }
    }
    const median = (xs: number[]) => {
      const sorted = [...xs].sort((a, b) => a - b);
      const mid = sorted.length / 2;
      return (sorted[Math.floor(mid - 0.5)]! + sorted[Math.ceil(mid - 0.5)]!) / 2;
    };
    const mWrong = median(wrong);
    const mUnknown = median(unknown);
    t.equal(wrong.length, 200);
    t.equal(unknown.length, 200);
    t.ok(
      Math.abs(mWrong - mUnknown) <= 0.3,
      `medians within 0.3 ms: wrong password ${mWrong.toFixed(3)} ms, unknown user ${mUnknown.toFixed(3)} ms`,
    );
    t.same(
      timingAddresses.flatMap((from) => logOf(from, 'refused').map((e) => e.delay_ms)),
      timingAddresses.map(() => 0),
      'none of them was held back by the throttle',
    );
  },
);

t.test('finding 8: two proxies of one catalog give an unknown user the same salt', async (t) => {
  const second = await startProxy(
    loadConfig({
      flags: {
        mode: 'org',
        port: 0,
        upstream_host: f.db.server.host,
        upstream_port: f.db.server.port,
        control_url: f.proxyRole.url,
        log_level: 'silent',
      },
    }),
  );
  t.teardown(() => second.close(1));
  const saltOf = async (port: number, database: string, user: string): Promise<string> => {
    const started = await begin(freshAddress(), database, user, 'x', port);
    started.client.destroy();
    const salt = /,s=([^,]+),/.exec(started.serverFirst ?? '')?.[1];
    if (salt === undefined) throw new Error(`no salt in ${String(started.serverFirst)}`);
    return salt;
  };
  const first = await saltOf(f.proxy.port, 'acme-analytics', 'mallory');
  t.equal(
    await saltOf(second.port, 'acme-analytics', 'mallory'),
    first,
    'the same salt from the second proxy',
  );
  t.equal(await saltOf(f.proxy.port, 'acme-analytics', 'mallory'), first, 'and on every try');
  t.not(await saltOf(f.proxy.port, 'beta-db', 'mallory'), first, 'another org, another salt');
  t.not(await saltOf(f.proxy.port, 'acme-analytics', 'mallory2'), first, 'another name, another');
  const eve = await saltOf(second.port, 'acme-analytics', 'eve');
  t.equal(
    await saltOf(f.proxy.port, 'acme-analytics', 'eve'),
    eve,
    "a real user's salt is its own",
  );
});
