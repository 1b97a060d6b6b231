// Switch grants (proxy/pool/grant.ts): the claims are byte-exact JSON in the database's field
// order and ASCII only, the MAC is HMAC-SHA256 under the instance key (checked against the
// definition, two plain SHA-256 passes over the padded key), each session's grants take
// increasing sequence numbers, and the call and its parameters line up.
import { createHash } from 'node:crypto';
import t from 'tap';
import { grantParams, mintGrant, switchCall, type InstanceKey } from '../../proxy/pool/grant.js';

const key: InstanceKey = {
  instance: '42',
  secret: Buffer.from('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f', 'hex'),
};

const org = '0b5e7a52-8f0c-4f35-9a62-3f1c2e4d5a6b';

function session(pid = 4711, start = '1733540000123456') {
  return { backendPid: pid, backendStart: start, switchSeq: 0 };
}

/** HMAC-SHA256 by its definition (RFC 2104), as the database computes it from ipad and opad. */
function hmacByDefinition(secret: Buffer, text: string): string {
  const padded = Buffer.alloc(64);
  secret.copy(padded);
  const ipad = Buffer.from(padded.map((byte) => byte ^ 0x36));
  const opad = Buffer.from(padded.map((byte) => byte ^ 0x5c));
  const inner = createHash('sha256')
    .update(Buffer.concat([ipad, Buffer.from(text, 'utf8')]))
    .digest();
  return createHash('sha256')
    .update(Buffer.concat([opad, inner]))
    .digest('hex');
}

t.test('an org-mode grant carries the claims in the database field order, byte for byte', (t) => {
  const grant = mintGrant(key, session(), {
    org,
    tenant: null,
    user: 'alice',
    values: {},
  });
  t.equal(
    grant.claims,
    `{"pid":4711,"start":"1733540000123456","seq":1,"org":"${org}","tenant":null,"user":"alice","vals":{}}`,
  );
  t.equal(grant.instance, '42', 'the grant names the instance whose key signed it');
  t.end();
});

t.test('an app-mode grant has no org, its tenant, and its values in their order', (t) => {
  const grant = mintGrant(key, session(), {
    org: null,
    tenant: 'acme',
    user: null,
    values: { role: 'viewer', region: 'eu' },
  });
  t.equal(
    grant.claims,
    '{"pid":4711,"start":"1733540000123456","seq":1,"org":null,"tenant":"acme","user":null,"vals":{"role":"viewer","region":"eu"}}',
  );
  t.end();
});

t.test('the claims are ASCII: other characters are \\u-escaped and mean the same', (t) => {
  const grant = mintGrant(key, session(), {
    org,
    tenant: null,
    user: 'zoë "😀"',
    values: { note: 'a\u0001b\\c' },
  });
  t.equal(
    grant.claims,
    `{"pid":4711,"start":"1733540000123456","seq":1,"org":"${org}","tenant":null,"user":"zo\\u00eb \\"\\ud83d\\ude00\\"","vals":{"note":"a\\u0001b\\\\c"}}`,
  );
  t.match(grant.claims, /^[\x20-\x7e]*$/, 'every byte is printable ASCII');
  t.same(
    JSON.parse(grant.claims),
    {
      pid: 4711,
      start: '1733540000123456',
      seq: 1,
      org,
      tenant: null,
      user: 'zoë "😀"',
      vals: { note: 'a\u0001b\\c' },
    },
    'parsed, the claims give back the values',
  );
  t.end();
});

t.test('the mac is lowercase hex HMAC-SHA256 of the claims under the instance key', (t) => {
  const grant = mintGrant(key, session(), { org, tenant: null, user: 'alice', values: {} });
  t.match(grant.mac, /^[0-9a-f]{64}$/);
  t.equal(grant.mac, hmacByDefinition(key.secret, grant.claims));
  const other = mintGrant({ instance: '42', secret: Buffer.alloc(32, 7) }, session(), {
    org,
    tenant: null,
    user: 'alice',
    values: {},
  });
  t.equal(other.claims, grant.claims, 'the same claims under another key…');
  t.not(other.mac, grant.mac, '…have another mac');
  t.end();
});

t.test('each grant of a session takes the next sequence number; sessions count apart', (t) => {
  const first = session(100);
  const second = session(200);
  const owner = { org, tenant: null, user: 'alice', values: {} };
  const seqOf = (claims: string): unknown => (JSON.parse(claims) as { seq: unknown }).seq;
  t.equal(seqOf(mintGrant(key, first, owner).claims), 1);
  t.equal(seqOf(mintGrant(key, first, owner).claims), 2);
  t.equal(seqOf(mintGrant(key, second, owner).claims), 1, 'another session starts at 1');
  t.equal(seqOf(mintGrant(key, first, owner).claims), 3);
  t.equal(first.switchSeq, 3, 'the session records the last sequence it was given');
  t.equal(second.switchSeq, 1);
  t.end();
});

t.test('a session whose backend start is unknown gets no grant', (t) => {
  const unknown = session(4711, '');
  t.throws(() => mintGrant(key, unknown, { org, tenant: null, user: 'alice', values: {} }), {
    message: 'pooled session (backend 4711) has no backend start: no switch grant can name it',
  });
  t.equal(unknown.switchSeq, 0, 'and uses up no sequence number');
  t.end();
});

t.test('switchCall numbers its three parameters from the first, in grantParams order', (t) => {
  t.equal(switchCall(1), 'pgvpd.switch_context($1::bigint, $2, $3)');
  t.equal(switchCall(5), 'pgvpd.switch_context($5::bigint, $6, $7)');
  const grant = mintGrant(key, session(), { org, tenant: null, user: 'alice', values: {} });
  t.same(grantParams(grant), ['42', grant.claims, grant.mac]);
  t.end();
});
