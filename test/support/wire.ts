// A raw-socket PostgreSQL client for tests that must send what no driver would: malformed
// startup packets, requests in odd orders, bytes that arrive too early. Packets are built here
// from their parts (PostgreSQL docs §55.7), never pasted as bytes; what comes back is read frame
// by frame and decoded with pg-protocol's parser where it knows the message.
// Also a counting TCP relay, to prove whether a connection reached the upstream at all.
import { connect, createServer, type Server, type Socket } from 'node:net';
import { EventEmitter } from 'node:events';
import { createRequire } from 'node:module';
import { ScramClient } from '../../proxy/auth/scram-client.js';

/** Request codes sent in place of a protocol version (1234.5679, 1234.5680, 1234.5678). */
export const requestCode = {
  ssl: (1234 << 16) | 5679,
  gssenc: (1234 << 16) | 5680,
  cancel: (1234 << 16) | 5678,
} as const;

export function int32(value: number): Buffer {
  const out = Buffer.alloc(4);
  out.writeInt32BE(value, 0);
  return out;
}

export function cstring(value: string): Buffer {
  return Buffer.concat([Buffer.from(value, 'utf8'), Buffer.from([0])]);
}

/** A startup-phase packet: int32 length (itself included), then the body. */
export function untypedPacket(body: Buffer): Buffer {
  return Buffer.concat([int32(body.length + 4), body]);
}

/** A typed message: type byte, int32 length (itself included), then the body. */
export function typedMessage(code: string, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from(code, 'ascii'), int32(body.length + 4), body]);
}

/** The body of a StartupMessage: version, name/value pairs, terminator. */
export function startupBody(
  parameters: Record<string, string>,
  version: { major: number; minor: number } = { major: 3, minor: 0 },
): Buffer {
  return Buffer.concat([
    int32((version.major << 16) | version.minor),
    ...Object.entries(parameters).flatMap(([name, value]) => [cstring(name), cstring(value)]),
    Buffer.from([0]),
  ]);
}

export function startupMessage(
  parameters: Record<string, string>,
  version?: { major: number; minor: number },
): Buffer {
  return untypedPacket(startupBody(parameters, version));
}

export const sslRequest = (): Buffer => untypedPacket(int32(requestCode.ssl));
export const gssencRequest = (): Buffer => untypedPacket(int32(requestCode.gssenc));

export function cancelRequest(processId: number, secretKey: Buffer): Buffer {
  return untypedPacket(Buffer.concat([int32(requestCode.cancel), int32(processId), secretKey]));
}

export const queryMessage = (sql: string): Buffer => typedMessage('Q', cstring(sql));
export const terminateMessage = (): Buffer => typedMessage('X', Buffer.alloc(0));

/** One backend message as it came off the wire. */
export interface Frame {
  /** Type byte as a character, e.g. 'E'. */
  code: string;
  /** Body, without type and length. */
  body: Buffer;
  raw: Buffer;
}

/** A backend message as pg-protocol's parser hands it to node-postgres. */
export interface BackendMessage {
  name: string;
  length: number;
}

/**
 * Decodes frames pg-protocol knows (everything but 'v' NegotiateProtocolVersion), through its
 * public `parse`: a stream is only something that emits 'data', so the bytes are parsed at once.
 */
export function parseBackend(bytes: Buffer): BackendMessage[] {
  const messages: BackendMessage[] = [];
  const stream = new EventEmitter();
  const pgProtocol = createRequire(import.meta.url)('pg-protocol') as typeof import('pg-protocol');
  void pgProtocol.parse(stream as unknown as NodeJS.ReadableStream, (message) =>
    messages.push(message),
  );
  stream.emit('data', bytes);
  return messages;
}

/** Every field of an ErrorResponse or NoticeResponse, by its one-letter tag (S, V, C, M, …). */
export function errorFieldsOf(frame: Frame): Record<string, string> {
  const fields: Record<string, string> = {};
  let offset = 0;
  while (offset < frame.body.length && frame.body[offset] !== 0) {
    const tag = String.fromCharCode(frame.body[offset] ?? 0);
    const end = frame.body.indexOf(0, offset + 1);
    if (end < 0) throw new Error(`unterminated ${tag} field in ${frame.code} message`);
    fields[tag] = frame.body.toString('utf8', offset + 1, end);
    offset = end + 1;
  }
  return fields;
}

/** The ErrorResponse as pg-protocol reads it, plus V, which pg-protocol does not keep. */
export interface WireError {
  severity: string | undefined;
  severityV: string | undefined;
  code: string | undefined;
  message: string;
  detail: string | undefined;
  hint: string | undefined;
}

export function wireErrorOf(frame: Frame): WireError {
  if (frame.code !== 'E') throw new Error(`expected ErrorResponse, got ${describe(frame)}`);
  // The fields pg-protocol's DatabaseError carries, read structurally.
  const [parsed] = parseBackend(frame.raw) as (BackendMessage & {
    severity?: string;
    code?: string;
    message: string;
    detail?: string;
    hint?: string;
  })[];
  if (parsed === undefined) throw new Error('pg-protocol parsed no message');
  return {
    severity: parsed.severity,
    severityV: errorFieldsOf(frame).V,
    code: parsed.code,
    message: parsed.message,
    detail: parsed.detail,
    hint: parsed.hint,
  };
}

/** NegotiateProtocolVersion ('v'): newest minor version and the options not recognised. */
export function negotiationOf(frame: Frame): { newestMinor: number; unsupported: string[] } {
  if (frame.code !== 'v')
    throw new Error(`expected NegotiateProtocolVersion, got ${describe(frame)}`);
  const count = frame.body.readInt32BE(4);
  const unsupported: string[] = [];
  let offset = 8;
  for (let i = 0; i < count; i++) {
    const end = frame.body.indexOf(0, offset);
    unsupported.push(frame.body.toString('utf8', offset, end));
    offset = end + 1;
  }
  return { newestMinor: frame.body.readInt32BE(0), unsupported };
}

function describe(frame: Frame): string {
  const summary =
    frame.code === 'E' || frame.code === 'N' ? ` ${JSON.stringify(errorFieldsOf(frame))}` : '';
  return `'${frame.code}' (${String(frame.body.length)} bytes)${summary}`;
}

/** The int32 after 'R': 0 ok, 3 cleartext, 5 MD5, 10 SASL, 11 SASL continue, 12 SASL final. */
export const authCodeOf = (frame: Frame): number => frame.body.readInt32BE(0);

const defaultWait = 5000;

export class WireClient {
  private buffered = Buffer.alloc(0);
  private ended = false;
  private wake: (() => void) | undefined;
  private readonly closedPromise: Promise<void>;

  private constructor(readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.buffered = Buffer.concat([this.buffered, chunk]);
      this.notify();
    });
    socket.on('error', () => undefined);
    this.closedPromise = new Promise((resolve) => {
      socket.once('close', () => {
        this.ended = true;
        this.notify();
        resolve();
      });
    });
    socket.on('end', () => {
      this.ended = true;
      this.notify();
    });
  }

  /** `localAddress`: the client's own address, e.g. another 127.0.0.x for a fresh one. */
  static async connect(
    port: number,
    host = '127.0.0.1',
    localAddress?: string,
  ): Promise<WireClient> {
    const socket = connect({
      port,
      host,
      noDelay: true,
      ...(localAddress ? { localAddress } : {}),
    });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new WireClient(socket);
  }

  /** Bytes received and not yet read. */
  get pending(): number {
    return this.buffered.length;
  }

  write(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  /** Half-closes: the server sees end of input. */
  end(bytes?: Buffer): void {
    if (bytes) this.socket.end(bytes);
    else this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** The single-byte answer to SSLRequest or GSSENCRequest. */
  async readByte(wait = defaultWait): Promise<string> {
    await this.need(1, wait, 'a one-byte answer');
    return this.take(1).toString('latin1');
  }

  async readFrame(wait = defaultWait): Promise<Frame> {
    await this.need(5, wait, 'a message header');
    const length = this.buffered.readInt32BE(1);
    await this.need(length + 1, wait, `a message of ${String(length)} bytes`);
    const raw = this.take(length + 1);
    return { code: String.fromCharCode(raw[0] ?? 0), body: raw.subarray(5), raw };
  }

  /** Reads one frame and decodes it as an ErrorResponse (throws if it is anything else). */
  async readError(wait = defaultWait): Promise<WireError> {
    return wireErrorOf(await this.readFrame(wait));
  }

  /** Frames up to and including the first one with `code`. */
  async readUntil(code: string, wait = defaultWait): Promise<Frame[]> {
    const frames: Frame[] = [];
    for (;;) {
      const frame = await this.readFrame(wait);
      frames.push(frame);
      if (frame.code === code) return frames;
      if (frame.code === 'E')
        throw new Error(`server error while waiting for '${code}': ${describe(frame)}`);
    }
  }

  /** Resolves when the server has closed the connection; rejects after `wait` ms. */
  async closed(wait = defaultWait): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        this.closedPromise,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => {
            reject(new Error(`server did not close the connection within ${String(wait)} ms`));
          }, wait);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Logs in after the startup packet was sent: answers SCRAM-SHA-256 (or cleartext) with
   * `password` and returns every frame up to ReadyForQuery.
   */
  async authenticate(password: string, wait = defaultWait): Promise<Frame[]> {
    const frames: Frame[] = [];
    let scram: ScramClient | undefined;
    for (;;) {
      const frame = await this.readFrame(wait);
      frames.push(frame);
      if (frame.code === 'Z') return frames;
      if (frame.code === 'E') throw new Error(`login failed: ${describe(frame)}`);
      if (frame.code !== 'R') continue;
      switch (authCodeOf(frame)) {
        case 3:
          this.write(typedMessage('p', cstring(password)));
          break;
        case 10: {
          scram = new ScramClient(password);
          const first = Buffer.from(scram.firstMessage(), 'utf8');
          this.write(
            typedMessage(
              'p',
              Buffer.concat([cstring('SCRAM-SHA-256'), int32(first.length), first]),
            ),
          );
          break;
        }
        case 11:
          if (!scram) throw new Error('SASLContinue before SASL');
          this.write(
            typedMessage('p', Buffer.from(scram.finalMessage(frame.body.toString('utf8', 4)))),
          );
          break;
        case 12:
          scram?.verifyFinal(frame.body.toString('utf8', 4));
          break;
      }
    }
  }

  /** Runs a simple query and returns the text of each column of each row. */
  async query(sql: string, wait = defaultWait): Promise<(string | null)[][]> {
    this.write(queryMessage(sql));
    const rows: (string | null)[][] = [];
    for (const frame of await this.readUntil('Z', wait)) {
      if (frame.code !== 'D') continue;
      const [row] = parseBackend(frame.raw) as unknown as { fields: (string | null)[] }[];
      rows.push(row?.fields ?? []);
    }
    return rows;
  }

  private take(count: number): Buffer {
    const head = this.buffered.subarray(0, count);
    this.buffered = this.buffered.subarray(count);
    return head;
  }

  private async need(count: number, wait: number, what: string): Promise<void> {
    const deadline = Date.now() + wait;
    while (this.buffered.length < count) {
      if (this.ended)
        throw new Error(
          `connection closed while waiting for ${what} (${String(this.pending)} bytes buffered)`,
        );
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no ${what} within ${String(wait)} ms`);
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
    }
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}

/** A TCP relay in front of a real server that counts the connections it was asked for. */
export interface CountingRelay {
  port: number;
  /** Connections accepted so far. */
  connections(): number;
  close(): Promise<void>;
}

export async function countingRelay(target: {
  host: string;
  port: number;
}): Promise<CountingRelay> {
  let accepted = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    accepted += 1;
    const upstream = connect({ host: target.host, port: target.port });
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
      socket.once('close', () => sockets.delete(socket));
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (typeof address !== 'object' || address === null) throw new Error('relay has no address');
  return {
    port: address.port,
    connections: () => accepted,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => {
          resolve();
        });
      }),
  };
}

/** A port nothing listens on (bound once, then released). */
export async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (typeof address !== 'object' || address === null) throw new Error('no address');
  await new Promise<void>((resolve) =>
    server.close(() => {
      resolve();
    }),
  );
  return address.port;
}
