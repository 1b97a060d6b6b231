// Client networks: which addresses a setting's list of CIDR networks admits (bypass_networks).
// IPv4 clients of a dual-stack listener arrive as IPv4-mapped IPv6 addresses (::ffff:10.1.2.3)
// and are checked as the IPv4 address they are.
import { BlockList, isIP } from 'node:net';
import { parseNetwork } from '../config.js';

export function compileNetworks(
  networks: readonly string[],
): (address: string | undefined) => boolean {
  const list = new BlockList();
  for (const text of networks) {
    const { address, prefix, family } = parseNetwork(text);
    list.addSubnet(address, prefix, family);
  }
  return (address) => {
    if (address === undefined || networks.length === 0) return false;
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1];
    const plain = mapped ?? address;
    const version = isIP(plain);
    if (version === 0) return false;
    return list.check(plain, version === 4 ? 'ipv4' : 'ipv6');
  };
}
