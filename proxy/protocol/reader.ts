// Reads whole packets from a socket during the handshake. "Don't tolerate partial packets"
// (PgBouncer): every length is checked against a bound before a byte of the body is awaited,
// so a negative, oversized or truncated length ends that client, never the process.
// Back-pressure: the socket flows only while the reader holds nothing unread or a read waits for
// more than it holds; otherwise it is paused, so a peer that streams while the proxy is busy
// elsewhere (a delayed refusal, a held-back ReadyForQuery) fills its own kernel buffers, not the
// proxy's memory. What is held is capped (maxReadAhead beyond the awaited read); past the cap
// the reader stops for good and every read throws a ProtocolViolation (08P01).
// After the handshake `release()` hands back any bytes that arrived early, and the caller pipes.
import type { Duplex } from 'node:stream';
import { maxHandshakeMessage, maxReadAhead, maxStartupPacket } from './codes.js';

/** A violation of the protocol by the peer; the session answers it with SQLSTATE 08P01. */
export class ProtocolViolation extends Error {
  override name = 'ProtocolViolation';
}

/** The peer closed (or the socket failed) while a packet was awaited. */
export class PeerClosed extends Error {
  override name = 'PeerClosed';
}

export interface Message {
  /** Type byte. */
  code: number;
  /** Body, without type and length. */
  body: Buffer;
  /** The message as it came: type, length and body. */
  raw: Buffer;
}

export class PacketReader {
  private buffered: Buffer = Buffer.alloc(0);
  private wake: (() => void) | undefined;
  private closed: Error | undefined;
  /** Set once the peer sent more than the cap: bytes were dropped, nothing can be read since. */
  private violation: ProtocolViolation | undefined;
  /** How many bytes the read in progress needs buffered; 0 when no read waits. */
  private wanted = 0;
  private socket: Duplex;
  private listening = false;
  /** While diverted: where every chunk goes instead of the buffer, and who hears of the end. */
  private sink: ((chunk: Buffer) => void) | undefined;
  private sinkGone: (() => void) | undefined;

  private readonly onData = (chunk: Buffer): void => {
    if (this.sink) {
      this.sink(chunk);
      return;
    }
    if (this.violation) return;
    if (this.buffered.length + chunk.length > this.wanted + maxReadAhead) {
      this.violation = new ProtocolViolation(
        `more than ${String(maxReadAhead)} bytes received ahead of the message being read`,
      );
    } else {
      this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    }
    this.regulate();
    this.notify();
  };
  private readonly onEnd = (): void => {
    this.closed ??= new PeerClosed('connection closed by peer');
    this.sinkGone?.();
    this.notify();
  };
  private readonly onError = (error: Error): void => {
    this.closed ??= new PeerClosed(error.message);
    this.sinkGone?.();
    this.notify();
  };

  constructor(socket: Duplex) {
    this.socket = socket;
    this.listen();
  }

  /** Bytes received and not yet read (at least 1 once bytes were dropped past the cap). */
  get pending(): number {
    return this.violation ? Math.max(1, this.buffered.length) : this.buffered.length;
  }

  /**
   * Moves to another socket (the TLS layer over the same connection), or back to listening on
   * the same one after release(). Already listening on `socket`: nothing changes but the flow.
   */
  switchTo(socket: Duplex): void {
    if (this.listening && socket === this.socket && !this.sink) {
      this.regulate();
      return;
    }
    this.sink = undefined;
    this.sinkGone = undefined;
    this.unlisten();
    this.socket = socket;
    this.closed = undefined;
    this.listen();
  }

  /**
   * Stops reading and returns what arrived beyond the last packet read. Throws the
   * ProtocolViolation if the peer went past the cap (the bytes after it were dropped).
   */
  release(): Buffer {
    // Paused so that nothing is emitted while no one listens; pipe() resumes it.
    this.socket.pause();
    this.sink = undefined;
    this.sinkGone = undefined;
    this.unlisten();
    if (this.violation) throw this.violation;
    const rest = this.buffered;
    this.buffered = Buffer.alloc(0);
    return rest;
  }

  /**
   * Hands every chunk from now on to `sink`, and the peer's end or failure to `gone`, instead of
   * buffering them; the socket's listeners stay as they are (a pooled backend lent to one
   * transaction after another: pool/transaction-link.ts). Returns what was buffered and unread.
   * The socket flows; the caller controls it (pause/resume) until undivert(). Throws the
   * ProtocolViolation if the peer went past the cap.
   */
  divert(sink: (chunk: Buffer) => void, gone: () => void): Buffer {
    if (this.violation) throw this.violation;
    const rest = this.buffered;
    this.buffered = Buffer.alloc(0);
    this.sink = sink;
    this.sinkGone = gone;
    this.socket.resume();
    return rest;
  }

  /** Back to buffering after divert(), flowing while nothing is unread. */
  undivert(): void {
    this.sink = undefined;
    this.sinkGone = undefined;
    this.regulate();
  }

  /** A startup-phase packet: int32 length (itself included), then the body. */
  async startupPacket(): Promise<Buffer> {
    await this.need(4);
    const length = this.buffered.readInt32BE(0);
    if (length < 8 || length > maxStartupPacket) {
      throw new ProtocolViolation(`invalid length of startup packet: ${String(length)}`);
    }
    await this.need(length);
    return this.take(length).subarray(4);
  }

  /** A typed message: one type byte, int32 length (itself included), then the body. */
  async message(limit = maxHandshakeMessage): Promise<Message> {
    const ready = this.bufferedMessage(limit);
    if (ready) return ready;
    await this.need(5);
    const length = this.buffered.readInt32BE(1);
    if (length < 4 || length > limit) {
      throw new ProtocolViolation(`invalid message length ${String(length)}`);
    }
    await this.need(length + 1);
    const raw = this.take(length + 1);
    return { code: raw.readUInt8(0), body: raw.subarray(5), raw };
  }

  /**
   * message() without waiting: the next message when it is buffered whole, else undefined (then
   * message() waits for it). Throws as message() does for a bad length or after the cap. A loop
   * reading a burst of answers takes them this way without a promise per message.
   */
  bufferedMessage(limit = maxHandshakeMessage): Message | undefined {
    if (this.violation) throw this.violation;
    if (this.buffered.length < 5) return undefined;
    const length = this.buffered.readInt32BE(1);
    if (length < 4 || length > limit) {
      throw new ProtocolViolation(`invalid message length ${String(length)}`);
    }
    if (this.buffered.length < length + 1) return undefined;
    const raw = this.take(length + 1);
    return { code: raw.readUInt8(0), body: raw.subarray(5), raw };
  }

  /** One byte (the answer to SSLRequest). */
  async byte(): Promise<number> {
    await this.need(1);
    return this.take(1).readUInt8(0);
  }

  private take(count: number): Buffer {
    const head = this.buffered.subarray(0, count);
    this.buffered = this.buffered.subarray(count);
    // All read: the socket may deliver again (a peer that says nothing costs nothing, and an
    // idle upstream's FATAL or close is still seen).
    if (this.buffered.length === 0) this.regulate();
    return head;
  }

  private async need(count: number): Promise<void> {
    try {
      for (;;) {
        if (this.violation) throw this.violation;
        if (this.buffered.length >= count) return;
        if (this.closed) throw this.closed;
        this.wanted = count;
        this.regulate();
        await new Promise<void>((resolve) => (this.wake = resolve));
      }
    } finally {
      this.wanted = 0;
    }
  }

  /**
   * Flowing while there is nothing unread or a read waits for more than is buffered; paused
   * otherwise, and for good after a violation.
   */
  private regulate(): void {
    if (this.violation === undefined && this.buffered.length < Math.max(1, this.wanted)) {
      this.socket.resume();
    } else {
      this.socket.pause();
    }
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  private listen(): void {
    this.listening = true;
    this.socket.on('data', this.onData);
    this.socket.on('end', this.onEnd);
    this.socket.on('close', this.onEnd);
    this.socket.on('error', this.onError);
    this.regulate();
  }

  private unlisten(): void {
    this.listening = false;
    this.socket.off('data', this.onData);
    this.socket.off('end', this.onEnd);
    this.socket.off('close', this.onEnd);
    this.socket.off('error', this.onError);
  }
}
