// Transaction pooling: one client, a pooled backend per transaction. The client keeps its
// connection to the proxy; a backend is linked to it from its first message after a transaction
// ended until the ReadyForQuery that ends the next one, and goes back to the pool then, with the
// owner's context and session state still on it (sticky ownership: the same owner's next
// transaction costs no statement; another owner's gets a reset and a switch, pool/switch.ts).
//
// A backend leaves the client only at ReadyForQuery `I` with nothing of the client in flight:
//   every Query, Sync and FunctionCall answered (pending = 0), no Parse/Bind/Describe/Close/
//   Execute waiting for its Sync (unsynced), not in COPY FROM STDIN, no cancel in flight.
// The unlink happens in the same synchronous step that reads that ReadyForQuery, before it is
// written to the client, so no byte of the client can reach the backend after it.
//
// Client → backend, per whole message (nothing reaches a backend before the message is whole):
//   named statements are renamed per owner (pool/statement-names.ts) and replayed on a backend
//   that lacks them (an injected Parse whose ParseComplete is swallowed); a Parse of a statement
//   the backend already holds becomes a Close of a name that does not exist, whose CloseComplete
//   is passed on as ParseComplete; a client's Close of a statement likewise (the backend keeps it
//   for the owner's other clients); the least recently used statement beyond
//   max_prepared_statements is closed; the unnamed statement is replayed on a backend that holds
//   another client's. Terminate is never forwarded.
// Backend → client: headers are read; bodies only of the messages that decide something
//   (ReadyForQuery, ParameterStatus, CommandComplete, ErrorResponse, CopyIn/CopyBoth and the
//   Parse/Close answers); DataRows and the rest stream through.
import type { Duplex } from 'node:stream';
import { errorResponse } from '../protocol/encode.js';
import { commandTag, errorFields, parameterStatus } from '../protocol/decode.js';
import type { ProxyError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { Attachment, AttachmentEnd } from '../session/attachment.js';
import { sendCancel } from '../upstream/connect.js';
import type { ControlPools } from '../upstream/control.js';
import type { PoolKey, PooledSession } from '../upstream/login.js';
import { bookOf, type BackendBook, type Owner } from './backend-book.js';
import { CheckoutCancel, type SessionPool } from './session-pool.js';
import {
  frame,
  noStatement,
  readBind,
  readParse,
  readTarget,
  serverName,
  writeBind,
  writeParse,
  writeTarget,
} from './statement-names.js';
import { readyAsItIs, readyFor, type SwitchTarget } from './switch.js';

/** Reported settings that follow the client from backend to backend (set_config at checkout). */
export const trackedSettings = new Set([
  'application_name',
  'client_encoding',
  'DateStyle',
  'IntervalStyle',
  'TimeZone',
  'standard_conforming_strings',
  'default_transaction_read_only',
  'search_path',
]);

/** Bytes of whole messages held for a backend not linked yet before the client is paused. */
const holdLimit = 256 * 1024;
/** The texts of one client's named statements, kept for replay, at most this many bytes. */
const maxStatementBytes = 64 * 1024 * 1024;
/** One client message is held whole before it is forwarded; bigger ones end the client. */
const maxClientMessage = 256 * 1024 * 1024;

const F = {
  Query: 0x51,
  Sync: 0x53,
  FunctionCall: 0x46,
  Flush: 0x48,
  Parse: 0x50,
  Bind: 0x42,
  Describe: 0x44,
  Close: 0x43,
  Execute: 0x45,
  CopyData: 0x64,
  CopyDone: 0x63,
  CopyFail: 0x66,
  Terminate: 0x58,
} as const;

const B = {
  ParseComplete: 0x31,
  CloseComplete: 0x33,
  ReadyForQuery: 0x5a,
  ParameterStatus: 0x53,
  CommandComplete: 0x43,
  ErrorResponse: 0x45,
  CopyInResponse: 0x47,
  CopyBothResponse: 0x57,
} as const;

/** SQL `DEALLOCATE [PREPARE] name`, the name quoted or not. */
const deallocateName =
  /^\s*deallocate\s+(?:prepare\s+)?(?:"((?:[^"]|"")+)"|([a-z_][a-z0-9_$]*))\s*;?\s*$/i;

/** Client messages the proxy rewrites, held whole; the rest may stream to a linked backend. */
const rewritten = new Set<number>([F.Parse, F.Bind, F.Describe, F.Close]);

/** The white space `\s` matches in deallocateName, as bytes (ASCII; tab to carriage return). */
function isSpace(byte: number): boolean {
  return byte === 0x20 || (byte >= 0x09 && byte <= 0x0d);
}

function streamable(code: number | undefined): boolean {
  return code !== undefined && !rewritten.has(code) && code !== F.Terminate;
}

/** Backend messages whose body the link reads; everything else streams through. */
const inspected = new Set<number>(Object.values(B));

const parseComplete = Buffer.from([B.ParseComplete, 0, 0, 0, 4]);

/** In `terminators`: a Sync the proxy sent itself; its ReadyForQuery is not the client's. */
const proxySync = 0;
const syncMessage = Buffer.from([F.Sync, 0, 0, 0, 4]);
/** A Parse body's text and parameter types: an empty SELECT, no parameters. */
const emptySelect = Buffer.from('SELECT\0\0\0', 'latin1');

interface ParseExpect {
  /** Sync group it was sent in: unanswered once that group's ReadyForQuery arrived. */
  group: number;
  /** Injected by the proxy: its ParseComplete is not the client's. */
  skip: boolean;
  /** The server-side name it creates, if named. */
  server?: string;
  /** The client's name it registers, if the client's own Parse. */
  client?: string;
}

interface CloseExpect {
  group: number;
  /** What the client gets for the CloseComplete: itself, a ParseComplete, or nothing. */
  as: 'close' | 'parse' | 'skip';
  /** For `parse`: the client's name the Parse registered. */
  client?: string;
}

interface ClientStatement {
  server: string;
  /** The Parse body after the name: replayed on a backend that lacks the statement. */
  rest: Buffer;
}

export interface TransactionLinkOptions {
  pool: SessionPool;
  key: PoolKey;
  owner: Owner;
  client: Duplex;
  /** Bytes the client sent after its handshake that were already read. */
  clientEarly: Buffer;
  /** The client's startup parameters (settings applied on every backend it gets). */
  startup: Map<string, string>;
  /** Reported settings as the client last saw them (ParameterStatus). */
  reported: Map<string, string>;
  switchTarget: SwitchTarget;
  control: ControlPools;
  onDefaultUpstream: boolean;
  maxPrepared: number;
  idleInTransactionMs: number;
  log: Logger;
  /** Counted per transaction and per owner switch. */
  onTransaction?: (switched: boolean, ownerChanged: boolean) => void;
}

export class TransactionLink implements Attachment {
  readonly ended: Promise<AttachmentEnd>;
  private settle: (end: AttachmentEnd) => void = () => undefined;
  private done = false;
  private endReason: AttachmentEnd | undefined;

  // Client side.
  private readonly client: Duplex;
  private cParts: Buffer[] = [];
  private cHave = 0;
  /** Length of the message being collected, once its header is known. */
  private cNeed = 0;
  /** Bytes of a client message still to stream through to the linked backend. */
  private cStream = 0;
  private held: Buffer[] = [];
  private heldBytes = 0;
  private readonly stmts = new Map<string, ClientStatement>();
  private unnamed: Buffer | undefined;
  private readonly reported: Map<string, string>;
  /** wanted(), until a reported setting changes. */
  private wantedNow: Map<string, string> | undefined;

  // The link.
  private link: PooledSession | undefined;
  private book: BackendBook | undefined;
  private linking = false;
  private pending = 0;
  private unsynced = false;
  private copyIn = false;
  private status = 0x49;
  private sent = 0;
  private answered = 0;
  /** What each unanswered ReadyForQuery answers: Query, Sync or FunctionCall, oldest first. */
  private terminators: number[] = [];
  /** Per entry of `terminators`: a Query or FunctionCall sent after extended messages. */
  private mixed: boolean[] = [];
  /** Extended messages sent since the last terminator. */
  private extendedInGroup = false;
  /**
   * The count of answers owed may be wrong (a pipeline behind a COPY, a Sync or Query sent in
   * COPY, an error in a group that mixes extended messages and a Query): the backend is never
   * handed to another client (it is ended when the link would release it), and the link is timed
   * by idle_in_transaction_timeout whenever nothing flows, answers owed or not.
   */
  private uncertain = false;
  /** The Sync sent with an extended COPY's Execute was taken as ignored; not proven yet. */
  private copySyncTaken = false;
  private parses: ParseExpect[] = [];
  private closes: CloseExpect[] = [];
  private out: Buffer[] = [];
  private idleTimer: NodeJS.Timeout | undefined;
  private readonly abort = new CheckoutCancel();

  // Backend side: a message being read whole (its parts so far), or the rest of one streaming
  // through.
  private sPartial = false;
  private sParts: Buffer[] = [];
  private sHave = 0;
  private sNeed = 0;
  private sStream = 0;

  constructor(private readonly opts: TransactionLinkOptions) {
    this.client = opts.client;
    this.reported = opts.reported;
    this.ended = new Promise<AttachmentEnd>((resolve) => (this.settle = resolve));
    this.client.on('data', this.fromClient);
    this.client.once('end', this.clientGone);
    this.client.once('close', this.clientGone);
    this.client.once('error', this.clientGone);
    if (opts.clientEarly.length > 0) this.fromClient(opts.clientEarly);
    if (!this.isDone() && (this.client.destroyed || this.client.readableEnded)) this.clientGone();
    else if (!this.isDone()) this.client.resume();
  }

  // ── client → backend ────────────────────────────────────────────────────────────────────
  private readonly fromClient = (chunk: Buffer): void => {
    if (this.isDone()) return;
    this.clearIdleTimer();
    let buffer = chunk;
    let at = 0;
    if (this.cStream > 0) {
      // The rest of a message that streams through to the linked backend.
      const count = Math.min(this.cStream, chunk.length);
      this.out.push(chunk.subarray(0, count));
      this.cStream -= count;
      at = count;
    } else if (this.cHave > 0) {
      // The rest of a message begun in an earlier chunk: collected, copied once when whole
      // (or, for a message the proxy does not rewrite, once a backend is linked to stream to).
      this.cParts.push(chunk);
      this.cHave += chunk.length;
      if (this.cNeed === 0 && this.cHave >= 5) {
        const head = Buffer.concat(this.cParts, this.cHave);
        this.cParts = [head];
        const length = head.readInt32BE(1);
        this.cNeed = length >= 4 ? 1 + length : 5;
      }
      const streams = this.cNeed > 0 && this.link !== undefined && streamable(this.cParts[0]?.[0]);
      if (this.cHave < Math.max(5, this.cNeed) && !streams) {
        // A message too big to hold while no backend is linked: link one, and wait for it.
        if (!this.link && this.cHave > holdLimit) {
          this.client.pause();
          if (!this.linking) void this.linkUp();
        }
        return;
      }
      buffer = Buffer.concat(this.cParts, this.cHave);
      this.cParts = [];
      this.cHave = 0;
      this.cNeed = 0;
    }
    this.consume(buffer, at);
    // Everything for the backend went into `out`: one write.
    this.flushToBackend();
    this.settleAfterClient();
  };

  /** The client's whole messages in `buffer` from `at`; a partial one is kept or streamed. */
  private consume(buffer: Buffer, from: number): void {
    let at = from;
    while (at < buffer.length && !this.isDone()) {
      if (buffer.length - at < 5) break;
      const code = buffer[at] ?? 0;
      const length = buffer.readInt32BE(at + 1);
      if (length < 4) {
        this.refuse('08P01', `invalid message length ${String(length)}`);
        return;
      }
      if (length + 1 > maxClientMessage && !streamable(code)) {
        this.refuse('54000', `message of ${String(length)} bytes is longer than the proxy holds`);
        return;
      }
      if (buffer.length - at < 1 + length) {
        if (this.link && streamable(code)) {
          // Whatever the proxy does not rewrite goes on as it arrives: no message is held
          // whole beyond what the rewrite needs, so a big Query or CopyData costs no memory.
          this.outgoing(code, buffer.subarray(at));
          this.cStream = 1 + length - (buffer.length - at);
          return;
        }
        break;
      }
      const raw = buffer.subarray(at, at + 1 + length);
      at += 1 + length;
      if (code === F.Terminate) {
        this.finish('client-terminated');
        return;
      }
      if (this.link) this.outgoing(code, raw);
      else this.hold(raw);
    }
    if (!this.isDone() && at < buffer.length) {
      const rest = Buffer.from(buffer.subarray(at));
      this.cParts = [rest];
      this.cHave = rest.length;
      this.cNeed = rest.length >= 5 ? 1 + rest.readInt32BE(1) : 0;
      if (!this.link && this.cHave > holdLimit) {
        this.client.pause();
        if (!this.linking) void this.linkUp();
      }
    }
  }

  /** After the client's bytes: a transaction that is over now ends; an idle one is timed. */
  private settleAfterClient(): void {
    if (this.link && this.shouldRelease()) {
      // A COPY that failed on the backend ended with its ReadyForQuery before the client's
      // CopyDone, which the backend drops: the transaction is over now.
      const released = this.detach();
      if (released) this.giveBack(released, false);
    } else if (this.link && (this.pending === 0 || this.uncertain)) {
      this.armIdleTimer();
    }
  }

  private hold(raw: Buffer): void {
    // A copy: the socket's chunk is not ours to keep.
    this.held.push(Buffer.from(raw));
    this.heldBytes += raw.length;
    if (this.heldBytes > holdLimit) this.client.pause();
    if (!this.linking) void this.linkUp();
  }

  private flushToBackend(): void {
    const link = this.link;
    if (!link || this.out.length === 0) return;
    const data = this.out.length === 1 ? (this.out[0] ?? Buffer.alloc(0)) : Buffer.concat(this.out);
    this.out = [];
    if (!link.socket.write(data)) {
      this.client.pause();
      link.socket.once('drain', this.resumeClient);
    }
  }

  private readonly resumeClient = (): void => {
    if (!this.isDone() && this.heldBytes <= holdLimit) this.client.resume();
  };

  /** One whole client message for the linked backend, rewritten where it names a statement. */
  private outgoing(code: number, raw: Buffer): void {
    const book = this.book;
    if (!book) return;
    switch (code) {
      case F.Query: {
        // First: a DEALLOCATE may put a Parse and a Sync of the proxy's own ahead of the Query.
        const deallocate = this.deallocating(raw, 5, book);
        this.pending += 1;
        this.sent += 1;
        this.terminators.push(F.Query);
        this.mixed.push(this.extendedInGroup);
        this.extendedInGroup = false;
        // Sent while the backend is in COPY FROM STDIN: ignored (Sync) or an error that ends it.
        if (this.copyIn) this.uncertain = true;
        book.unnamedOf = undefined;
        this.out.push(deallocate ?? raw);
        return;
      }
      case F.Sync:
        this.pending += 1;
        this.sent += 1;
        this.terminators.push(F.Sync);
        this.mixed.push(false);
        this.extendedInGroup = false;
        // Sent while the backend is in COPY FROM STDIN: ignored (Sync) or an error that ends it.
        if (this.copyIn) this.uncertain = true;
        this.unsynced = false;
        this.out.push(raw);
        return;
      case F.FunctionCall:
        this.pending += 1;
        this.sent += 1;
        this.terminators.push(F.FunctionCall);
        this.mixed.push(this.extendedInGroup);
        this.extendedInGroup = false;
        // Sent while the backend is in COPY FROM STDIN: ignored (Sync) or an error that ends it.
        if (this.copyIn) this.uncertain = true;
        this.out.push(raw);
        return;
      case F.Parse:
        this.unsynced = true;
        this.extendedInGroup = true;
        this.parse(raw, book);
        return;
      case F.Bind:
        this.unsynced = true;
        this.extendedInGroup = true;
        this.bind(raw, book);
        return;
      case F.Describe:
        this.unsynced = true;
        this.extendedInGroup = true;
        this.describeMessage(raw, book);
        return;
      case F.Close:
        this.unsynced = true;
        this.extendedInGroup = true;
        this.closeMessage(raw, book);
        return;
      case F.Execute:
        this.unsynced = true;
        this.extendedInGroup = true;
        this.out.push(raw);
        return;
      case F.CopyDone:
      case F.CopyFail:
        this.copyIn = false;
        this.out.push(raw);
        return;
      default:
        // Flush, CopyData, and anything else: PostgreSQL answers what it does not know.
        this.out.push(raw);
    }
  }

  private parse(message: Buffer, book: BackendBook): void {
    let raw = message;
    const parts = readParse(raw.subarray(5));
    if (!parts) {
      this.refuse('08P01', 'malformed Parse message');
      return;
    }
    if (parts.name === '') {
      const rewritten = this.deallocating(raw, 6, book);
      if (rewritten) raw = rewritten;
      this.unnamed = Buffer.from(raw);
      book.unnamedOf = this;
      this.parses.push({ group: this.sent, skip: false });
      this.out.push(raw);
      return;
    }
    if (this.stmts.has(parts.name)) {
      this.refuse('42P05', `prepared statement "${parts.name}" already exists`);
      return;
    }
    const server = serverName(this.opts.owner.key, parts.rest);
    // Kept for replay on other backends: bounded per client, so that one tenant cannot hold
    // the proxy's memory with statements (max_prepared_statements bounds each backend only).
    let held = parts.rest.length;
    for (const statement of this.stmts.values()) held += statement.rest.length;
    if (held > maxStatementBytes) {
      this.refuse(
        '54000',
        `prepared statements of this connection would hold more than ${String(maxStatementBytes)} bytes`,
        'Close or DEALLOCATE statements that are no longer used.',
      );
      return;
    }
    this.stmts.set(parts.name, { server, rest: Buffer.from(parts.rest) });
    if (book.prepared.has(server)) {
      book.prepared.delete(server);
      book.prepared.set(server, true);
      this.closes.push({ group: this.sent, as: 'parse', client: parts.name });
      this.out.push(writeTarget(F.Close, 0x53, noStatement));
      return;
    }
    this.makeRoom(book);
    book.prepared.set(server, true);
    this.parses.push({ group: this.sent, skip: false, server, client: parts.name });
    this.out.push(writeParse(server, parts.rest));
  }

  /** The backend's name of a client's statement, injecting its Parse where it is missing. */
  private ensure(name: string, book: BackendBook): string | undefined {
    if (name === '') {
      if (book.unnamedOf !== this && this.unnamed) {
        this.parses.push({ group: this.sent, skip: true });
        this.out.push(this.unnamed);
        book.unnamedOf = this;
      }
      return '';
    }
    const statement = this.stmts.get(name);
    if (!statement) {
      this.refuse('26000', `prepared statement "${name}" does not exist`);
      return undefined;
    }
    if (book.prepared.has(statement.server)) {
      book.prepared.delete(statement.server);
    } else {
      this.makeRoom(book);
      this.parses.push({ group: this.sent, skip: true, server: statement.server });
      this.out.push(writeParse(statement.server, statement.rest));
    }
    book.prepared.set(statement.server, true);
    return statement.server;
  }

  private bind(raw: Buffer, book: BackendBook): void {
    const parts = readBind(raw.subarray(5));
    if (!parts) {
      this.refuse('08P01', 'malformed Bind message');
      return;
    }
    const server = this.ensure(parts.statement, book);
    if (server === undefined) return;
    this.out.push(server === '' ? raw : writeBind(parts, server));
  }

  private describeMessage(raw: Buffer, book: BackendBook): void {
    const target = readTarget(raw.subarray(5));
    if (!target) {
      this.refuse('08P01', 'malformed Describe message');
      return;
    }
    if (target.kind !== 0x53) {
      this.out.push(raw);
      return;
    }
    const server = this.ensure(target.name, book);
    if (server === undefined) return;
    this.out.push(server === '' ? raw : writeTarget(F.Describe, 0x53, server));
  }

  private closeMessage(raw: Buffer, book: BackendBook): void {
    const target = readTarget(raw.subarray(5));
    if (!target) {
      this.refuse('08P01', 'malformed Close message');
      return;
    }
    this.closes.push({ group: this.sent, as: 'close' });
    if (target.kind === 0x53 && target.name !== '') {
      // The backend keeps the statement for the owner's other clients; the client forgets it.
      this.stmts.delete(target.name);
      this.out.push(writeTarget(F.Close, 0x53, noStatement));
      return;
    }
    if (target.kind === 0x53) {
      this.unnamed = undefined;
      if (book.unnamedOf === this) book.unnamedOf = undefined;
    }
    this.out.push(raw);
  }

  /**
   * SQL `DEALLOCATE name` of one of the client's protocol-level statements (psycopg 3.1 evicts
   * its statements so): the backend knows the statement by the proxy's name, so the text is
   * rewritten to that name (the statement injected first where the backend lacks it, so that the
   * answer is the client's expected DEALLOCATE) and the client forgets the name. `at`: where the
   * text starts in `raw` (a Query's body, or an unnamed Parse's after its empty name). Undefined
   * when the message is something else (or not whole: a streamed Query is never a DEALLOCATE).
   */
  private deallocating(raw: Buffer, at: number, book: BackendBook): Buffer | undefined {
    if (raw.length - 1 !== raw.readInt32BE(1) || raw.length > 512) return undefined;
    // Most queries are not: their first letter after any white space says so without a string.
    let first = at;
    while (first < raw.length && isSpace(raw[first] ?? 0)) first += 1;
    if ((raw[first] ?? 0) !== 0x64 && raw[first] !== 0x44) return undefined;
    const end = raw.indexOf(0, at);
    if (end < 0) return undefined;
    const match = deallocateName.exec(raw.toString('utf8', at, end));
    if (!match) return undefined;
    const name =
      match[1] !== undefined ? match[1].replaceAll('""', '"') : (match[2] ?? '').toLowerCase();
    const statement = this.stmts.get(name);
    if (!statement) return undefined;
    if (!book.prepared.has(statement.server)) {
      const query = raw[0] === F.Query;
      // Before a simple Query, which runs the DEALLOCATE at once: an empty SELECT, which fails
      // only where the DEALLOCATE itself would (an aborted transaction). The client's own text
      // could fail where the DEALLOCATE would not (a table dropped since), and an
      // extended-protocol error makes the backend skip everything up to the next Sync, a simple
      // Query included, which would then never be answered. A Sync of the proxy's own ends the
      // Parse's group (its ParseComplete or error and its ReadyForQuery are the proxy's); not
      // after extended messages of the client's still waiting for theirs, which that Sync would
      // end early. Before an unnamed Parse of the DEALLOCATE, which runs only if the client binds
      // and executes it (and its own Sync follows), the statement's own text: left behind
      // unexecuted, it is still the statement the name stands for.
      this.parses.push({ group: this.sent, skip: true, server: statement.server });
      this.out.push(writeParse(statement.server, query ? emptySelect : statement.rest));
      if (query && !this.unsynced) {
        this.pending += 1;
        this.sent += 1;
        this.terminators.push(proxySync);
        this.mixed.push(false);
        this.out.push(syncMessage);
      }
    }
    book.prepared.delete(statement.server);
    this.stmts.delete(name);
    const text = Buffer.from(`DEALLOCATE ${statement.server}\0`, 'utf8');
    return frame(raw[0] ?? 0, Buffer.concat([raw.subarray(5, at), text, raw.subarray(end + 1)]));
  }

  /** Closes the least recently used statements until one more fits. */
  private makeRoom(book: BackendBook): void {
    while (book.prepared.size >= this.opts.maxPrepared) {
      const [oldest] = book.prepared.keys();
      if (oldest === undefined) return;
      book.prepared.delete(oldest);
      this.closes.push({ group: this.sent, as: 'skip' });
      this.out.push(writeTarget(F.Close, 0x53, oldest));
    }
  }

  // ── linking ─────────────────────────────────────────────────────────────────────────────
  /** Checks out a backend for the held messages, readies it for the owner, and links it. */
  private async linkUp(): Promise<void> {
    this.linking = true;
    let session: PooledSession | undefined;
    try {
      for (let attempt = 0; ; attempt += 1) {
        // Patient: rather wait a little for a backend of its own owner than change another's.
        session = await this.opts.pool.checkout(
          this.opts.key,
          this.abort,
          this.opts.owner.key,
          true,
        );
        if (this.isDone()) {
          this.opts.pool.checkin(session);
          return;
        }
        const wanted = this.wanted();
        const result =
          readyAsItIs(session, this.opts.owner, wanted, this.opts.switchTarget) ??
          (await readyFor(session, this.opts.owner, wanted, this.opts.switchTarget));
        this.opts.onTransaction?.(result.switched, result.ownerChanged);
        if (this.isDone()) {
          this.opts.pool.checkin(session);
          return;
        }
        // Nothing unread: attach() diverts the backend's bytes to this link from here on.
        if (session.reader.pending === 0) break;
        // The backend said something while idle: not the state that was readied.
        this.opts.pool.discard(session, 'unsolicited message while idle');
        session = undefined;
        if (attempt >= 2) throw new Error('no pooled backend stayed quiet after readying');
      }
    } catch (error) {
      this.linking = false;
      if (session) this.opts.pool.discard(session, 'readying for a transaction failed');
      if (this.isDone()) return;
      const failure = error as Partial<ProxyError> & Error;
      this.opts.log.warn(
        { event: 'transaction_link_failed', code: failure.code, pid: session?.backendPid },
        failure.logMessage ?? failure.message,
      );
      this.refuse(failure.code ?? '08006', failure.message, failure.hint);
      return;
    }
    this.linking = false;
    this.attach(session);
  }

  /**
   * The settings the client has: its startup parameters, then what the backends reported. The
   * same map from transaction to transaction until a reported setting changes (readyFor keys
   * its fast path on it).
   */
  private wanted(): Map<string, string> {
    if (this.wantedNow) return this.wantedNow;
    const wanted = new Map(this.opts.startup);
    for (const [name, value] of this.reported)
      if (trackedSettings.has(name)) wanted.set(name, value);
    this.wantedNow = wanted;
    return wanted;
  }

  private attach(session: PooledSession): void {
    this.link = session;
    this.book = bookOf(session);
    this.book.used = true;
    this.pending = 0;
    this.unsynced = false;
    this.copyIn = false;
    this.status = 0x49;
    this.sent = 0;
    this.answered = 0;
    this.terminators = [];
    this.mixed = [];
    this.extendedInGroup = false;
    this.uncertain = false;
    this.copySyncTaken = false;
    this.parses = [];
    this.closes = [];
    this.sPartial = false;
    this.sParts = [];
    this.sHave = 0;
    this.sNeed = 0;
    this.sStream = 0;
    const socket = session.socket;
    // The pool's reader keeps listening on the socket: its bytes and its end come here now.
    session.reader.divert(this.fromBackend, this.backendGone);
    if (socket.destroyed || socket.readableEnded) {
      this.backendGone();
      return;
    }
    const held = this.held;
    this.held = [];
    this.heldBytes = 0;
    for (const raw of held) {
      if (this.isDone()) break;
      this.outgoing(raw[0] ?? 0, raw);
    }
    // A big message that waited for this backend, collected so far: it streams from here on.
    if (this.cNeed > 0 && streamable(this.cParts[0]?.[0]) && !this.isDone()) {
      const partial = Buffer.concat(this.cParts, this.cHave);
      this.cParts = [];
      this.cHave = 0;
      this.cNeed = 0;
      this.consume(partial, 0);
    }
    this.flushToBackend();
    socket.resume();
    if (this.isDone()) return;
    this.client.resume();
    // What was held may already be a whole transaction's worth of nothing to answer (a lone
    // Flush), or a pipeline without Sync: released now, or timed like any idle link.
    this.settleAfterClient();
  }

  /** Takes the link off the backend's socket; the backend is the caller's to return or end. */
  private detach(): PooledSession | undefined {
    const session = this.link;
    if (!session) return undefined;
    const socket = session.socket;
    session.reader.undivert();
    socket.off('drain', this.resumeClient);
    this.client.off('drain', this.resumeBackend);
    this.link = undefined;
    this.book = undefined;
    this.clearIdleTimer();
    return session;
  }

  // ── backend → client ────────────────────────────────────────────────────────────────────
  private readonly fromBackend = (chunk: Buffer): void => {
    const session = this.link;
    if (!session || this.isDone()) return;
    const out: Buffer[] = [];
    let buffer = chunk;
    let at = 0;
    if (this.sStream > 0) {
      const count = Math.min(this.sStream, chunk.length);
      out.push(chunk.subarray(0, count));
      this.sStream -= count;
      at = count;
    } else if (this.sPartial) {
      // An inspected message begun earlier: collected as parts, copied once when whole.
      this.sParts.push(chunk);
      this.sHave += chunk.length;
      if (this.sNeed === 0 && this.sHave >= 5) {
        const head = Buffer.concat(this.sParts, this.sHave);
        this.sParts = [head];
        this.sNeed = 1 + head.readInt32BE(1);
      }
      if (this.sHave < Math.max(5, this.sNeed)) return;
      buffer = Buffer.concat(this.sParts, this.sHave);
      this.sParts = [];
      this.sHave = 0;
      this.sNeed = 0;
      this.sPartial = false;
    }
    let run = -1;
    let released: PooledSession | undefined;
    while (at < buffer.length) {
      if (buffer.length - at < 5) {
        if (run >= 0) out.push(buffer.subarray(run, at));
        run = -1;
        this.keepPartial(buffer.subarray(at));
        at = buffer.length;
        break;
      }
      const code = buffer[at] ?? 0;
      const length = buffer.readInt32BE(at + 1);
      const end = at + 1 + length;
      if (!inspected.has(code)) {
        if (run < 0) run = at;
        if (end > buffer.length) {
          out.push(buffer.subarray(run, buffer.length));
          run = -1;
          this.sStream = end - buffer.length;
          at = buffer.length;
          break;
        }
        at = end;
        continue;
      }
      if (end > buffer.length) {
        if (run >= 0) out.push(buffer.subarray(run, at));
        run = -1;
        this.keepPartial(buffer.subarray(at));
        at = buffer.length;
        break;
      }
      const start = at;
      const raw = buffer.subarray(at, end);
      at = end;
      const forward = this.incoming(code, raw, session);
      if (forward === raw) {
        // Passed on as it is: part of the run (one write of the chunk as it came, mostly).
        if (run < 0) run = start;
      } else {
        if (run >= 0) out.push(buffer.subarray(run, start));
        run = -1;
        if (forward) out.push(forward);
      }
      if (this.shouldRelease()) {
        released = this.detach();
        break;
      }
      if (this.isDone()) break;
    }
    if (run >= 0) out.push(buffer.subarray(run, at));
    if (released) this.giveBack(released, at < buffer.length || this.sPartial);
    if (out.length > 0 && !this.client.destroyed && this.endReason !== 'refused') {
      const data = out.length === 1 ? (out[0] ?? Buffer.alloc(0)) : Buffer.concat(out);
      if (!this.client.write(data) && this.link) {
        this.link.socket.pause();
        this.client.once('drain', this.resumeBackend);
      }
    }
    if (released && this.held.length > 0 && !this.linking && !this.isDone()) void this.linkUp();
    // An uncertain link is timed from the last byte either way (see `uncertain`).
    else if (!released && this.link && this.uncertain && !this.isDone()) this.armIdleTimer();
  };

  /** The start of an inspected backend message, kept (a copy) until the rest arrives. */
  private keepPartial(rest: Buffer): void {
    const part = Buffer.from(rest);
    this.sParts = [part];
    this.sHave = part.length;
    this.sNeed = part.length >= 5 ? 1 + part.readInt32BE(1) : 0;
    this.sPartial = true;
  }

  private readonly resumeBackend = (): void => {
    if (!this.isDone()) this.link?.socket.resume();
  };

  /** One whole inspected backend message: what the client gets for it (undefined: nothing). */
  private incoming(code: number, raw: Buffer, session: PooledSession): Buffer | undefined {
    const book = this.book;
    if (!book) return raw;
    switch (code) {
      case B.ParseComplete: {
        const expect = this.parses.shift();
        return expect?.skip ? undefined : raw;
      }
      case B.CloseComplete: {
        const expect = this.closes.shift();
        if (expect?.as === 'skip') return undefined;
        return expect?.as === 'parse' ? parseComplete : raw;
      }
      case B.ReadyForQuery: {
        const own = this.terminators.shift() === proxySync;
        this.mixed.shift();
        this.status = raw[5] ?? 0;
        this.pending = Math.max(0, this.pending - 1);
        this.answered += 1;
        this.unanswered(book);
        // The proxy's own Sync (deallocating): the client's Query is still owed its answer.
        if (own) return undefined;
        if ((this.pending === 0 || this.uncertain) && !this.shouldRelease()) this.armIdleTimer();
        return raw;
      }
      case B.ParameterStatus: {
        const [name, value] = parameterStatus(raw.subarray(5));
        session.parameters.set(name, value);
        book.readyKey = undefined;
        if (this.reported.get(name) !== value) {
          this.reported.set(name, value);
          if (trackedSettings.has(name)) this.wantedNow = undefined;
        }
        return raw;
      }
      case B.CommandComplete: {
        const tag = commandTag(raw.subarray(5));
        if (this.copySyncTaken && tag.startsWith('COPY ')) this.copySyncTaken = false;
        this.tag(tag, book);
        return raw;
      }
      case B.ErrorResponse: {
        const fields = errorFields(raw.subarray(5));
        // An error among extended messages makes the backend skip to the next Sync, a Query or
        // FunctionCall among them included, which then gets no ReadyForQuery of its own: when
        // the group being answered mixes both, the count of answers owed is no longer known.
        if (this.mixed[0] === true) this.uncertain = true;
        if (this.copySyncTaken) {
          // The COPY failed: if it failed before it read the Sync sent with its Execute (a
          // trigger raising at its start), that Sync ends the error's skip and is answered after
          // all, one answer more than counted; if it had read it, not. The proxy cannot tell
          // which: the link is uncertain, so its backend is ended, never handed on, whenever the
          // count says the transaction is over.
          this.copySyncTaken = false;
          this.uncertain = true;
        }
        if (fields.severity === 'FATAL' || fields.severity === 'PANIC') session.broken = true;
        // The failure of the proxy's own Parse (deallocating): the DEALLOCATE after it answers.
        if (this.terminators[0] === proxySync && !session.broken && !this.uncertain)
          return undefined;
        return raw;
      }
      case B.CopyInResponse:
        this.copyIn = true;
        // COPY FROM STDIN through the extended protocol: the backend reads, and ignores, the Sync
        // sent with the Execute (it arrives in copy mode); libpq sends another after CopyDone.
        // Anything else pipelined behind the COPY is answered or ignored depending on how far
        // the COPY gets, which the proxy cannot know: the link is uncertain.
        // Until the COPY's CommandComplete proves the Sync ignored, an error (a trigger raising
        // before the COPY read anything) means the backend answers it after all (copySyncTaken).
        if (this.terminators.length === 1 && this.terminators[0] === F.Sync) {
          this.terminators = [];
          this.mixed = [];
          this.pending = Math.max(0, this.pending - 1);
          this.sent -= 1;
          this.copySyncTaken = true;
        } else if (this.terminators.length > 1) {
          this.uncertain = true;
        }
        return raw;
      case B.CopyBothResponse:
        session.broken = true;
        this.refuse('0A000', 'replication and COPY BOTH are not served by transaction pooling');
        return undefined;
      default:
        return raw;
    }
  }

  /** What a command's tag says about the backend's state. */
  private tag(tag: string, book: BackendBook): void {
    switch (tag) {
      case 'DISCARD ALL':
        // The client's own DISCARD ALL: its statements and the context are gone, but the backend
        // is not clean for the proxy: whatever the client runs after it in this link is still
        // this owner's session state, so the owner stays and another owner's checkout resets.
        book.prepared.clear();
        book.applied.clear();
        book.readyKey = undefined;
        book.contextValid = false;
        book.unnamedOf = undefined;
        this.stmts.clear();
        this.unnamed = undefined;
        return;
      case 'DEALLOCATE ALL':
        book.prepared.clear();
        this.stmts.clear();
        return;
      case 'RESET':
        // RESET ALL, or RESET of one setting (the same tag): the context may have gone with it,
        // and the settings the proxy set may have: the owner's next transaction sets them again.
        book.contextValid = false;
        book.applied.clear();
        book.readyKey = undefined;
        return;
      default:
    }
  }

  /**
   * At a ReadyForQuery: what the backend was asked and skipped (an error discards everything up
   * to the Sync) will never be answered; statements it did not create are not on it.
   */
  private unanswered(book: BackendBook): void {
    while (this.parses.length > 0 && (this.parses[0]?.group ?? 0) < this.answered) {
      const expect = this.parses.shift();
      if (expect?.server) book.prepared.delete(expect.server);
      if (expect?.client && this.stmts.get(expect.client)?.server === expect.server)
        this.stmts.delete(expect.client);
    }
    while (this.closes.length > 0 && (this.closes[0]?.group ?? 0) < this.answered) {
      const expect = this.closes.shift();
      if (expect?.as === 'parse' && expect.client) this.stmts.delete(expect.client);
    }
  }

  private shouldRelease(): boolean {
    const book = this.book;
    return (
      this.link !== undefined &&
      book !== undefined &&
      this.pending === 0 &&
      !this.unsynced &&
      !this.copyIn &&
      this.status === 0x49 &&
      !this.sPartial &&
      this.sStream === 0 &&
      this.cStream === 0 &&
      this.out.length === 0 &&
      book.canceling === 0 &&
      this.parses.length === 0 &&
      this.closes.length === 0
    );
  }

  /** The transaction ended: the backend goes back with its owner's state (or ends if it spoke on). */
  private giveBack(session: PooledSession, trailing: boolean): void {
    if (this.uncertain)
      this.opts.pool.discard(session, 'the answers its client was owed could not be counted');
    else if (trailing || session.broken)
      this.opts.pool.discard(session, 'output after its transaction');
    else this.opts.pool.checkin(session);
  }

  private readonly backendGone = (): void => {
    const session = this.link;
    if (!session) return;
    session.broken = true;
    this.detach();
    this.opts.pool.discard(session, 'connection closed while linked');
    if (!this.isDone()) {
      this.writeFatal('08006', 'the pooled backend serving this transaction closed its connection');
      this.finish('upstream-closed');
    }
  };

  // ── idle in transaction ─────────────────────────────────────────────────────────────────
  private armIdleTimer(): void {
    this.clearIdleTimer();
    this.idleTimer = setTimeout(() => {
      this.refuse(
        '25P03',
        `terminating connection due to idle-in-transaction timeout (${String(this.opts.idleInTransactionMs)} ms)`,
      );
    }, this.opts.idleInTransactionMs);
    this.idleTimer.unref();
  }

  private clearIdleTimer(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
  }

  // ── cancel ──────────────────────────────────────────────────────────────────────────────
  /**
   * The client's CancelRequest: to the backend it holds now, or nowhere (nothing of the client
   * runs between its transactions). While the cancel is on its way the backend is not handed on,
   * so a late cancel cannot reach the next client's statement.
   */
  async cancel(): Promise<void> {
    const session = this.link;
    if (!session || this.isDone()) return;
    const book = bookOf(session);
    book.canceling += 1;
    try {
      await sendCancel(session.key.target, session.backendPid, session.secretKey);
    } finally {
      book.canceling -= 1;
      if (this.link === session && this.shouldRelease()) {
        const released = this.detach();
        if (released) this.giveBack(released, false);
        if (this.held.length > 0 && !this.linking && !this.isDone()) void this.linkUp();
      }
    }
  }

  // ── the end ─────────────────────────────────────────────────────────────────────────────
  private readonly clientGone = (): void => {
    this.finish('client-closed');
  };

  private writeFatal(code: string, message: string, hint?: string): void {
    if (this.client.destroyed || !this.client.writable) return;
    this.client.write(
      errorResponse({ severity: 'FATAL', code, message, ...(hint ? { hint } : {}) }),
    );
  }

  /** Ends the client with a FATAL of the proxy's own. */
  private refuse(code: string, message: string, hint?: string): void {
    if (this.isDone()) return;
    this.writeFatal(code, message, hint);
    this.finish('refused');
  }

  private finish(reason: AttachmentEnd): void {
    if (this.isDone()) return;
    this.done = true;
    this.endReason = reason;
    this.clearIdleTimer();
    this.abort.abort();
    this.client.off('data', this.fromClient);
    this.client.off('end', this.clientGone);
    this.client.off('close', this.clientGone);
    this.client.off('error', this.clientGone);
    this.client.pause();
    this.settle(reason);
  }

  /** A method, not the field: the link may end while a checkout or a write is under way. */
  private isDone(): boolean {
    return this.done;
  }

  stop(): void {
    this.finish('stopped');
  }

  async terminate(): Promise<void> {
    const session = this.link;
    if (session) {
      const target = session.key.target;
      const ended = await this.opts.control
        .terminate(
          session.key.database,
          session.backendPid,
          this.opts.onDefaultUpstream ? undefined : { host: target.host, port: target.port },
        )
        .catch(() => false);
      if (ended) return;
    }
    this.writeFatal('57P01', 'terminating connection because the pgvpd proxy is shutting down');
    this.stop();
  }

  /**
   * The client is gone: a backend it still holds is rolled back and returned if it was idle in
   * a transaction between whole messages, cancelled and ended if anything of the client was in
   * flight; nothing to do between transactions.
   */
  async release(): Promise<void> {
    const session = this.detach();
    if (!session) return;
    const inFlight =
      this.uncertain ||
      bookOf(session).canceling > 0 ||
      this.pending > 0 ||
      this.unsynced ||
      this.copyIn ||
      this.sPartial ||
      this.sStream > 0 ||
      this.cStream > 0 ||
      this.parses.length > 0 ||
      this.closes.length > 0;
    if (inFlight || session.broken || this.endReason === 'upstream-closed') {
      if (this.endReason === 'client-closed' && !session.broken)
        await sendCancel(session.key.target, session.backendPid, session.secretKey).catch(
          () => undefined,
        );
      this.opts.pool.discard(session, 'client left in the middle of a transaction');
      return;
    }
    if (this.status === 0x49) {
      this.opts.pool.checkin(session);
      return;
    }
    // Idle in a transaction block: the pool's reset (ROLLBACK, DISCARD ALL) makes it clean.
    await this.opts.pool.release(session);
  }

  describe() {
    return {
      kind: 'transaction' as const,
      backendPid: this.link?.backendPid ?? null,
      database: this.opts.key.database,
      role: this.opts.key.role,
    };
  }
}
