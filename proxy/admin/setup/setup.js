// pgvpd's /setup page (index.html loads it as /setup.js; a classic script, no inline code).
//
// What it guarantees:
// - The invite is read from the URL fragment, which browsers never send, and is dropped from the
//   address bar and history (history.replaceState) before anything else happens.
// - Outside a secure context (plain HTTP on a host other than 127.0.0.1 / localhost), where
//   WebCrypto is missing, it shows "open this link over HTTPS" and sends nothing at all.
// - The password never leaves the page: no request carries it. The browser computes the
//   SCRAM-SHA-256 verifier exactly as PostgreSQL (and pgvpd's makeVerifier in
//   proxy/auth/scram-verifier.ts) do, with a fresh 16-byte salt, clears both password fields, and
//   posts only {invite, verifier} to /api/v1/invites/redeem.
// - Every dead invite (used, expired, revoked, unknown, malformed) gets the same message.
// - Text from the server is shown with textContent only, never parsed as HTML.
//
// Without a DOM (Node, for test/unit/setup-verifier.test.ts) it touches nothing and sends nothing:
// it only puts its pure functions on globalThis.pgvpdSetup.
(function (root) {
  'use strict';

  /** PostgreSQL's default scram_iterations, and the least redeem accepts. */
  const defaultIterations = 4096;
  /** PostgreSQL's SCRAM_DEFAULT_SALT_LEN. */
  const saltLength = 16;
  /** PostgreSQL keeps the iteration count in an int. */
  const maxIterations = 2147483647;
  /** Checked here only: the server never sees the password, so it cannot check it. */
  const minPasswordLength = 12;

  const encoder = new TextEncoder();

  /**
   * The password as SCRAM hashes it: SASLprep approximated by its normalisation step, NFKC, as
   * saslPrep in proxy/auth/scram-verifier.ts does (same input, same bytes).
   */
  function saslPrep(password) {
    return password.normalize('NFKC');
  }

  /** Standard base64 with padding, as PostgreSQL and Node's Buffer write it. */
  function base64(bytes) {
    let binary = '';
    for (const byte of new Uint8Array(bytes)) binary += String.fromCharCode(byte);
    return btoa(binary);
  }

  /**
   * The SCRAM-SHA-256 verifier of `password` in pg_authid.rolpassword format,
   *   SCRAM-SHA-256$<iterations>:<salt b64>$<StoredKey b64>:<ServerKey b64>,
   * computed with WebCrypto: SaltedPassword = PBKDF2-HMAC-SHA-256(SASLprep(password), salt, i),
   * StoredKey = SHA-256(HMAC(SaltedPassword, "Client Key")), ServerKey = HMAC(SaltedPassword,
   * "Server Key"). Salt: 16 random bytes unless given. Rejects (RangeError) an empty password,
   * an empty salt or iterations outside 1…2^31-1, as makeVerifier throws.
   */
  async function scramVerifier(password, salt, iterations) {
    const subtle = root.crypto.subtle;
    const saltBytes =
      salt === undefined ? root.crypto.getRandomValues(new Uint8Array(saltLength)) : salt;
    const count = iterations === undefined ? defaultIterations : iterations;
    if (password === '') throw new RangeError('SCRAM: empty password');
    if (!Number.isInteger(count) || count < 1 || count > maxIterations) {
      throw new RangeError('SCRAM: iteration count must be 1…' + String(maxIterations));
    }
    if (saltBytes.length === 0) throw new RangeError('SCRAM: empty salt');
    const passwordKey = await subtle.importKey(
      'raw',
      encoder.encode(saslPrep(password)),
      'PBKDF2',
      false,
      ['deriveBits'],
    );
    const salted = await subtle.deriveBits(
      { name: 'PBKDF2', hash: 'SHA-256', salt: saltBytes, iterations: count },
      passwordKey,
      256,
    );
    const hmacKey = await subtle.importKey(
      'raw',
      salted,
      { name: 'HMAC', hash: 'SHA-256' },
      false,
      ['sign'],
    );
    const clientKey = await subtle.sign('HMAC', hmacKey, encoder.encode('Client Key'));
    const storedKey = await subtle.digest('SHA-256', clientKey);
    const serverKey = await subtle.sign('HMAC', hmacKey, encoder.encode('Server Key'));
    return (
      'SCRAM-SHA-256$' +
      String(count) +
      ':' +
      base64(saltBytes) +
      '$' +
      base64(storedKey) +
      ':' +
      base64(serverKey)
    );
  }

  /** The invite in a location.hash ("#invite=…"), or '' when there is none. */
  function inviteFromHash(hash) {
    const params = new URLSearchParams(hash.replace(/^#/, ''));
    return (params.get('invite') || '').trim();
  }

  /** Why two typed passwords cannot be used, or '' when they can. Counts characters, not bytes. */
  function passwordProblem(password, confirm) {
    if (Array.from(password).length < minPasswordLength) {
      return 'Choose a password of at least ' + String(minPasswordLength) + ' characters.';
    }
    if (password !== confirm) return 'The two passwords differ.';
    return '';
  }

  /** The iteration count /info asked for, or PostgreSQL's default when it named none usable. */
  function iterationsFrom(info) {
    const value = info && info.scram_iterations;
    return Number.isInteger(value) && value >= 1 && value <= maxIterations
      ? value
      : defaultIterations;
  }

  /** A ~/.pgpass field: ':' and '\' are escaped with a backslash (libpq's rule). */
  function pgpassField(value) {
    return String(value).replace(/[\\:]/g, (c) => '\\' + c);
  }

  /** The ~/.pgpass line for a connection, with a placeholder where the password goes. */
  function pgpassLine(connection) {
    return [connection.host, connection.port, connection.database, connection.user]
      .map(pgpassField)
      .concat('<your password>')
      .join(':');
  }

  const pure = {
    defaultIterations,
    minPasswordLength,
    saslPrep,
    base64,
    scramVerifier,
    inviteFromHash,
    passwordProblem,
    iterationsFrom,
    pgpassLine,
  };

  if (typeof root.document === 'undefined') {
    root.pgvpdSetup = Object.freeze(pure);
    return;
  }

  // ---- The page ----------------------------------------------------------------------------

  const doc = root.document;
  const byId = (id) => doc.getElementById(id);

  /** Shows exactly one of the page's sections (and hides "Checking your invite…"). */
  function show(id) {
    for (const section of [
      'loading',
      'insecure',
      'no-invite',
      'gone',
      'failed',
      'choose',
      'done',
    ]) {
      byId(section).hidden = section !== id;
    }
  }

  function fail(message) {
    byId('failed-message').textContent = message;
    show('failed');
  }

  const tooMany = 'Too many attempts from your address: wait a minute, then try again.';

  /** POSTs a JSON body to a same-origin API route: {status, body} (body {} when not JSON). */
  async function postJson(path, payload) {
    const response = await root.fetch(path, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(payload),
      credentials: 'omit',
      cache: 'no-store',
      redirect: 'error',
      referrerPolicy: 'no-referrer',
    });
    let body;
    try {
      body = await response.json();
    } catch {
      body = {};
    }
    return { status: response.status, body: body || {} };
  }

  function serverMessage(status, body) {
    return typeof body.message === 'string' && body.message !== ''
      ? body.message
      : 'the server answered ' + String(status);
  }

  function showDone(result) {
    const connection = result.connection || {};
    byId('psql-line').textContent = result.psql;
    byId('uri').textContent = result.uri;
    byId('conn-host').textContent = String(connection.host);
    byId('conn-port').textContent = String(connection.port);
    byId('conn-database').textContent = String(connection.database);
    byId('conn-user').textContent = String(connection.user);
    byId('conn-sslmode').textContent = String(connection.sslmode);
    byId('pgpass-line').textContent = pgpassLine(connection);
    for (const button of doc.querySelectorAll('button.copy')) {
      button.addEventListener('click', () => {
        const text = byId(button.dataset.copy).textContent;
        root.navigator.clipboard.writeText(text).then(
          () => {
            button.textContent = 'Copied';
          },
          () => {
            button.textContent = 'Select and copy';
          },
        );
      });
    }
    show('done');
  }

  function askForPassword(invite, info) {
    const org = info.org || {};
    byId('org-database').textContent = String(org.database_name);
    byId('org-display').textContent =
      typeof org.display_name === 'string' && org.display_name !== ''
        ? '(' + org.display_name + ')'
        : '';
    byId('invite-username').textContent = String(info.username);
    byId('username-hint').value = String(info.username);
    const form = byId('password-form');
    const password = byId('password');
    const confirm = byId('confirm');
    const problem = byId('form-problem');
    const submit = byId('submit');
    const say = (text) => {
      problem.textContent = text;
      problem.hidden = text === '';
    };
    const iterations = iterationsFrom(info);
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const why = passwordProblem(password.value, confirm.value);
      say(why);
      if (why !== '') return;
      submit.disabled = true;
      submit.textContent = 'Setting your password…';
      void (async () => {
        let verifier;
        try {
          verifier = await scramVerifier(password.value, undefined, iterations);
        } finally {
          // Gone from the page before anything is sent.
          password.value = '';
          confirm.value = '';
        }
        const { status, body } = await postJson('/api/v1/invites/redeem', { invite, verifier });
        if (status === 200) return showDone(body);
        if (status === 410) return show('gone');
        submit.disabled = false;
        submit.textContent = 'Set my password';
        if (status === 429) return say(tooMany);
        if (status === 400) {
          return say('The server refused this password: ' + serverMessage(status, body));
        }
        fail(serverMessage(status, body));
      })().catch(() => {
        fail('Could not reach the server: check your connection, then reload this page.');
      });
    });
    show('choose');
    password.focus();
  }

  async function start() {
    const invite = inviteFromHash(root.location.hash);
    if (root.location.hash !== '') {
      root.history.replaceState(
        root.history.state,
        '',
        root.location.pathname + root.location.search,
      );
    }
    if (root.isSecureContext !== true || !root.crypto || !root.crypto.subtle) {
      return show('insecure');
    }
    if (invite === '') return show('no-invite');
    const { status, body } = await postJson('/api/v1/invites/info', { invite });
    if (status === 200) return askForPassword(invite, body);
    if (status === 410) return show('gone');
    if (status === 429) return fail(tooMany + ' Then reload this page.');
    fail(serverMessage(status, body));
  }

  start().catch(() => {
    fail('Could not reach the server: check your connection, then reload this page.');
  });
})(globalThis);
