#!/usr/bin/env node
// A raw TCP pipe: the ceiling for any Node proxy. No protocol work at all: each accepted socket is
// connected to upstream and the two are piped both ways, with Nagle off on both sides.
//
// Usage: node bench/lib/raw-pipe.mjs <listen-port> <upstream-host> <upstream-port>
// Prints "ready <port>" on stdout once it listens; ends on SIGTERM/SIGINT.

import { connect, createServer } from 'node:net';

const [listenPort, upstreamHost, upstreamPort] = process.argv.slice(2);
if (!listenPort || !upstreamHost || !upstreamPort) {
  process.stderr.write('usage: raw-pipe.mjs <listen-port> <upstream-host> <upstream-port>\n');
  process.exit(2);
}

const server = createServer((client) => {
  client.setNoDelay(true);
  const upstream = connect({ host: upstreamHost, port: Number(upstreamPort) });
  upstream.setNoDelay(true);
  const close = () => {
    client.destroy();
    upstream.destroy();
  };
  client.on('error', close);
  upstream.on('error', close);
  client.on('close', close);
  upstream.on('close', close);
  client.pipe(upstream).pipe(client);
});

server.listen(Number(listenPort), '127.0.0.1', () => {
  process.stdout.write(`ready ${server.address().port}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
