// compileNetworks: which client addresses bypass_networks admits.
import t from 'tap';
import { compileNetworks } from '../../proxy/app/client-networks.js';

t.test('addresses inside the listed networks are admitted, others and unknowns are not', (t) => {
  const allowed = compileNetworks(['10.1.0.0/16', '127.0.0.1', 'fd00::/8']);
  const cases: [string | undefined, boolean][] = [
    ['10.1.2.3', true],
    ['10.2.0.1', false],
    ['127.0.0.1', true],
    ['127.0.0.2', false],
    ['::ffff:10.1.9.9', true],
    ['::ffff:10.2.9.9', false],
    ['fd12::1', true],
    ['fe80::1', false],
    ['::1', false],
    ['not an address', false],
    [undefined, false],
  ];
  for (const [address, expected] of cases)
    t.equal(allowed(address), expected, `${String(address)} → ${String(expected)}`);
  t.end();
});

t.test('an empty list admits nobody', (t) => {
  const allowed = compileNetworks([]);
  t.equal(allowed('127.0.0.1'), false);
  t.equal(allowed('::1'), false);
  t.end();
});
