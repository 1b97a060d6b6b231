// Can a TCP connection be opened to host:port? The doctor's first question about the upstream: a
// proxy pointed at a closed port fails every client, so it is asked before anything else.
import { connect } from 'node:net';

export type ProbeResult = { reachable: true } | { reachable: false; reason: string };

/** A host starting with '/' is a Unix socket directory, as in libpq. */
export function probe(host: string, port: number, timeoutMs = 3000): Promise<ProbeResult> {
  return new Promise((resolve) => {
    const socket = host.startsWith('/')
      ? connect({ path: `${host}/.s.PGSQL.${port}` })
      : connect({ host, port });
    const finish = (result: ProbeResult): void => {
      socket.destroy();
      resolve(result);
    };
    socket.setTimeout(timeoutMs, () => {
      finish({ reachable: false, reason: `no answer within ${timeoutMs} ms` });
    });
    socket.once('connect', () => {
      finish({ reachable: true });
    });
    socket.once('error', (error) => {
      finish({ reachable: false, reason: error.message });
    });
  });
}
