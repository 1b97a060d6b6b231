// The /setup page in a real browser (Debian's Chromium driven by playwright-core), served by the
// HTTP control plane of an org-mode proxy: an invite made in SQL is opened as its setup link, a
// password is typed twice, and the psql line the page then shows logs in through the proxy with
// that password. Every request the page makes is recorded: none carries the password (only the
// SCRAM verifier of it travels), the invite leaves the address bar, a dead invite gets the one
// message for all, and on an origin that is not a secure context the page shows the HTTPS
// message and sends nothing. Without /usr/bin/chromium the file fails in CI and skips elsewhere.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chromium, type Browser, type Page } from 'playwright-core';
import t from 'tap';
import { makeVerifier, parseVerifier } from '../../proxy/auth/scram-verifier.js';
import type { TestLike } from '../support/postgres.js';
import { adminFixture } from './admin-fixture.js';

const executablePath = '/usr/bin/chromium';

interface Recorded {
  method: string;
  url: string;
  headers: Record<string, string>;
  postData: string | null;
}

interface Opened {
  page: Page;
  requests: Recorded[];
  /** Console messages and uncaught errors (a CSP violation would show here), favicon aside. */
  problems: string[];
}

if (!existsSync(executablePath)) {
  if (process.env.CI !== undefined)
    t.fail(`${executablePath} is missing: apt-get install chromium`);
  else
    t.plan(
      0,
      `${executablePath} is missing (apt-get install chromium): the browser test is skipped`,
    );
} else {
  await run();
}

function shell(line: string, env: NodeJS.ProcessEnv): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(
      'bash',
      ['-c', line],
      { encoding: 'utf8', env: { ...process.env, ...env } },
      (error, stdout, stderr) => {
        resolve({ code: error ? Number(error.code) : 0, out: `${stdout}${stderr}` });
      },
    );
  });
}

async function launch(t: TestLike): Promise<Browser> {
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--no-first-run',
      // A name that reaches the proxy's admin listener but is not a secure context (plain HTTP
      // on a host other than 127.0.0.1 / localhost).
      '--host-resolver-rules=MAP pgvpd.test 127.0.0.1',
    ],
  });
  t.teardown(() => browser.close());
  return browser;
}

/** A fresh page (its own context) that records every request and every console message. */
async function open(browser: Browser, url: string): Promise<Opened> {
  const context = await browser.newContext();
  const page = await context.newPage();
  const requests: Recorded[] = [];
  const problems: string[] = [];
  page.on('request', (request) => {
    requests.push({
      method: request.method(),
      url: request.url(),
      headers: request.headers(),
      postData: request.postData(),
    });
  });
  page.on('console', (message) => {
    // The browser asks for /favicon.ico by itself; the page has none (404), which is no problem.
    if (message.location().url.endsWith('/favicon.ico')) return;
    problems.push(`console ${message.type()}: ${message.text()}`);
  });
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  await page.goto(url);
  return { page, requests, problems };
}

async function run(): Promise<void> {
  const f = await adminFixture(t);
  const browser = await launch(t);
  const adminPort = f.proxy.adminPort!;

  const invite = async (username: string): Promise<string> => {
    const { rows } = await f.db.query<{ invite: string }>(
      'select invite from pgvpd.invite_create($1, $2, $3)',
      [f.orgs.acme, username, f.connectAs],
    );
    return rows[0]!.invite;
  };
  // rate_limit_invites allows 10 requests a minute to /api/v1/invites/* per address; the tests
  // below make 7.
  const posts = (requests: Recorded[]): Recorded[] => requests.filter((r) => r.method !== 'GET');

  t.test('an invitee sets a password and the psql line shown works with it', async (t) => {
    const password = 'grüne Äpfel, 42 mal';
    const secret = await invite('dora');
    const { page, requests, problems } = await open(
      browser,
      `http://127.0.0.1:${String(adminPort)}/setup#invite=${secret}`,
    );
    await page.locator('#choose').waitFor({ state: 'visible' });
    t.equal(page.url(), `http://127.0.0.1:${String(adminPort)}/setup`, 'the fragment is gone');
    t.equal(await page.evaluate('location.hash'), '');
    t.equal(await page.textContent('#org-database'), 'acme-analytics');
    t.equal(await page.textContent('#org-display'), '(Acme)');
    t.equal(await page.textContent('#invite-username'), 'dora');

    await page.fill('#password', password);
    await page.fill('#confirm', password);
    await page.click('#submit');
    await page.locator('#done').waitFor({ state: 'visible' });
    t.equal(await page.inputValue('#password'), '', 'the password field is cleared');
    t.equal(await page.inputValue('#confirm'), '', 'so is the confirmation');

    const target = `host=127.0.0.1 port=${String(f.proxy.port)} dbname=acme-analytics user=dora`;
    const psql = (await page.textContent('#psql-line')) ?? '';
    t.equal(psql, `psql '${target} sslmode=prefer'`);
    t.equal(
      await page.textContent('#uri'),
      `postgresql://dora@127.0.0.1:${String(f.proxy.port)}/acme-analytics?sslmode=prefer`,
    );
    t.equal(
      await page.textContent('#pgpass-line'),
      `127.0.0.1:${String(f.proxy.port)}:acme-analytics:dora:<your password>`,
    );
    t.same(
      await Promise.all(
        ['host', 'port', 'database', 'user', 'sslmode'].map((k) => page.textContent(`#conn-${k}`)),
      ),
      ['127.0.0.1', String(f.proxy.port), 'acme-analytics', 'dora', 'prefer'],
    );

    // The page's psql line, as printed, through the proxy: dora runs as the connect_as role in
    // org acme, whose two docs she sees.
    const query = `${psql} -X -A -t -c "select current_user, count(*) from docs"`;
    const login = await shell(query, { PGPASSWORD: password });
    t.same(login, { code: 0, out: `${f.connectAs}|2\n` });
    const wrong = await shell(query, { PGPASSWORD: 'not the password' });
    t.equal(wrong.code, 2);
    t.match(wrong.out, 'password authentication failed for user "dora"');

    const sent = posts(requests);
    t.same(
      sent.map((r) => [r.method, new URL(r.url).pathname]),
      [
        ['POST', '/api/v1/invites/info'],
        ['POST', '/api/v1/invites/redeem'],
      ],
      'two POSTs: info, then redeem',
    );
    t.same(JSON.parse(sent[0]!.postData!), { invite: secret });
    const redeem = JSON.parse(sent[1]!.postData!) as { invite: string; verifier: string };
    t.same(Object.keys(redeem), ['invite', 'verifier']);
    t.equal(redeem.invite, secret);
    const parsed = parseVerifier(redeem.verifier);
    if (parsed === undefined) throw new Error(`not a verifier: ${redeem.verifier}`);
    t.equal(parsed.salt.length, 16);
    t.equal(parsed.iterations, 4096);
    t.equal(
      makeVerifier(password, { salt: parsed.salt, iterations: parsed.iterations }),
      redeem.verifier,
      "what was sent is the password's SCRAM verifier",
    );
    for (const request of requests) {
      const everything = [request.url, JSON.stringify(request.headers), request.postData ?? ''];
      for (const part of everything) {
        t.notOk(part.includes(password), `${request.method} ${request.url} carries no password`);
        t.notOk(part.includes(encodeURIComponent(password)), 'not even URL-encoded');
      }
      t.notOk(new URL(request.url).search.includes(secret), 'the invite is in no query string');
      t.equal(new URL(request.url).origin, `http://127.0.0.1:${String(adminPort)}`, 'same origin');
    }
    t.same(problems, [], 'no console error, no CSP violation');
  });

  t.test('the form refuses short or differing passwords without sending anything', async (t) => {
    const secret = await invite('gus');
    const { page, requests } = await open(
      browser,
      `http://127.0.0.1:${String(adminPort)}/setup#invite=${secret}`,
    );
    await page.locator('#choose').waitFor({ state: 'visible' });
    const attempt = async (password: string, confirm: string): Promise<string | null> => {
      await page.fill('#password', password);
      await page.fill('#confirm', confirm);
      await page.click('#submit');
      return page.textContent('#form-problem');
    };
    t.equal(
      await attempt('short one', 'short one'),
      'Choose a password of at least 12 characters.',
    );
    t.equal(await attempt('twelve chars', 'twelve charz'), 'The two passwords differ.');
    t.same(
      posts(requests).map((r) => new URL(r.url).pathname),
      ['/api/v1/invites/info'],
      'no redeem was sent',
    );
    // Revoked while the page is open: the redeem gets the same message as any dead invite.
    await f.db.query(
      "select pgvpd.invite_revoke($1, (select id from pgvpd.invites($1) where username = 'gus'))",
      [f.orgs.acme],
    );
    await attempt('a long enough password', 'a long enough password');
    await page.locator('#gone').waitFor({ state: 'visible' });
    t.ok(await page.locator('#choose').isHidden(), 'the form is gone');
    t.same(
      posts(requests).map((r) => new URL(r.url).pathname),
      ['/api/v1/invites/info', '/api/v1/invites/redeem'],
    );
  });

  t.test('a used invite gets the one message for every dead invite', async (t) => {
    const secret = await invite('emil');
    await f.db.query('select * from pgvpd.invite_redeem($1, $2)', [
      secret,
      makeVerifier('emil chose this one'),
    ]);
    for (const link of [secret, `pgvpd_inv_${'0'.repeat(72)}`, 'not-an-invite']) {
      const { page, requests } = await open(
        browser,
        `http://127.0.0.1:${String(adminPort)}/setup#invite=${link}`,
      );
      await page.locator('#gone').waitFor({ state: 'visible' });
      t.equal(
        await page.textContent('#gone p'),
        'This invite was used, has expired, or does not exist. Ask for a new invite.',
      );
      t.ok(await page.locator('#choose').isHidden(), 'no password form');
      t.equal(new URL(page.url()).hash, '', 'the fragment is gone');
      t.same(
        posts(requests).map((r) => new URL(r.url).pathname),
        ['/api/v1/invites/info'],
      );
    }
  });

  t.test('a link without an invite says so and sends nothing', async (t) => {
    const { page, requests } = await open(browser, `http://127.0.0.1:${String(adminPort)}/setup`);
    await page.locator('#no-invite').waitFor({ state: 'visible' });
    t.same(posts(requests), []);
  });

  t.test('outside a secure context the page asks for HTTPS and sends nothing', async (t) => {
    const secret = await invite('fritz');
    const { page, requests, problems } = await open(
      browser,
      `http://pgvpd.test:${String(adminPort)}/setup#invite=${secret}`,
    );
    await page.locator('#insecure').waitFor({ state: 'visible' });
    t.equal(await page.evaluate('isSecureContext'), false, 'not a secure context');
    t.equal(await page.textContent('#insecure h2'), 'Open this link over HTTPS');
    t.equal(page.url(), `http://pgvpd.test:${String(adminPort)}/setup`, 'the fragment is gone');
    t.ok(await page.locator('#choose').isHidden(), 'no password form');
    t.same(posts(requests), [], 'no POST at all');
    t.same(
      requests.map((r) => new URL(r.url).pathname),
      ['/setup', '/setup.css', '/setup.js'],
      "only the page's own files were fetched",
    );
    // Chromium notes that it ignores Cross-Origin-Opener-Policy on an untrustworthy origin.
    t.same(
      problems.filter((problem) => !problem.includes('Cross-Origin-Opener-Policy')),
      [],
      'no other console error, no CSP violation',
    );
    const { rows } = await f.db.query('select username from pgvpd.invite_info($1)', [secret]);
    t.same(rows, [{ username: 'fritz' }], 'the invite is still open');
  });
}
