#!/usr/bin/env node
// A reference arm of bench/proxy.mjs, not a baseline: the raw pipe of raw-pipe.mjs, byte for byte
// the same code, in a process that also runs a pgvpd proxy (app mode, started in-process from
// <tree>/dist/proxy/index.js on a port of its own) which has served 3 tenant sessions of 200
// `select 1` each before the pipe listens. Its difference from raw-pipe.mjs is what the process
// costs the same pipe code (more object shapes through Node's shared stream code, the pg control
// pool, ...), as opposed to what pgvpd's own pipe code costs.
//
// Usage: node raw-pipe-heavy.mjs <listen-port> <upstream-host> <upstream-port> <control-url>
//                                <user> <password> <database> [<tree>]
// The control role's password is in PGPASSWORD. Prints "ready <port>" once it listens.

import { connect, createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import pg from 'pg';

const [listenPort, upstreamHost, upstreamPort, controlUrl, user, password, database, tree] =
  process.argv.slice(2);
if (!database) {
  process.stderr.write(
    'usage: raw-pipe-heavy.mjs <listen-port> <upstream-host> <upstream-port> <control-url> <user> <password> <database> [<tree>]\n',
  );
  process.exit(2);
}
const ROOT = tree ? resolve(tree) : join(dirname(fileURLToPath(import.meta.url)), '../..');
const dist = (f) => pathToFileURL(join(ROOT, 'dist/proxy', f)).href;
const { startProxy } = await import(dist('index.js'));
const { loadConfig } = await import(dist('config.js'));
const proxy = await startProxy(
  loadConfig({
    env: {},
    flags: {
      port: 0,
      upstream_host: upstreamHost,
      upstream_port: Number(upstreamPort),
      control_url: controlUrl,
      log_level: 'warn',
    },
  }),
);
for (let i = 0; i < 3; i++) {
  const c = new pg.Client({ host: '127.0.0.1', port: proxy.port, user, database, password });
  await c.connect();
  for (let k = 0; k < 200; k++) await c.query('select 1');
  await c.end();
}

// From here on, raw-pipe.mjs.
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
