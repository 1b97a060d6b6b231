// Frames what a client sends to a pooled session (§55.7: type byte, int32 length, body), without
// buffering more than a 5-byte header. Two things depend on it: a client's Terminate must not reach
// the backend (it would end a session meant for the next client), and a session whose client left
// in the middle of a message must not be reused (the next bytes written would complete it).
// Pure: bytes in, bytes to forward out.
import { FrontendCode } from '../protocol/codes.js';

export type FramerEnd =
  /** The client sent Terminate; nothing of it was forwarded. */
  | 'terminate'
  /** A message length below 4: the stream cannot be framed any further. */
  | 'violation';

export interface FramerResult {
  /** Bytes to write to the upstream, in order. */
  forward: Buffer;
  /** Set when the client's stream ends here; later bytes are not for the upstream. */
  end: FramerEnd | undefined;
}

const headerLength = 5;

export class ClientFramer {
  private header = Buffer.alloc(0);
  private remaining = 0;
  private ended: FramerEnd | undefined;

  /** True between messages: everything the client sent so far was whole messages. */
  get atBoundary(): boolean {
    return this.header.length === 0 && this.remaining === 0;
  }

  push(chunk: Buffer): FramerResult {
    if (this.ended) return { forward: Buffer.alloc(0), end: this.ended };
    // The common case, once per statement in steady state: between messages, a chunk of whole
    // messages with no Terminate in it goes on as it is, with no copy and no allocation.
    if (this.atBoundary && wholeMessages(chunk)) return { forward: chunk, end: undefined };
    const out: Buffer[] = [];
    let at = 0;
    while (at < chunk.length) {
      if (this.remaining > 0) {
        const count = Math.min(this.remaining, chunk.length - at);
        out.push(chunk.subarray(at, at + count));
        this.remaining -= count;
        at += count;
        continue;
      }
      const take = Math.min(headerLength - this.header.length, chunk.length - at);
      this.header = Buffer.concat([this.header, chunk.subarray(at, at + take)]);
      at += take;
      if (this.header.length < headerLength) break;
      const type = this.header.readUInt8(0);
      const length = this.header.readInt32BE(1);
      if (length < 4) {
        this.ended = 'violation';
        break;
      }
      if (type === FrontendCode.Terminate) {
        this.header = Buffer.alloc(0);
        this.ended = 'terminate';
        break;
      }
      out.push(this.header);
      this.header = Buffer.alloc(0);
      this.remaining = length - 4;
    }
    return {
      forward: out.length === 1 ? (out[0] ?? Buffer.alloc(0)) : Buffer.concat(out),
      end: this.ended,
    };
  }
}

/** True when `chunk` is one or more whole messages, none of them Terminate or malformed. */
function wholeMessages(chunk: Buffer): boolean {
  let at = 0;
  while (at + headerLength <= chunk.length) {
    const length = chunk.readInt32BE(at + 1);
    if (length < 4 || chunk[at] === FrontendCode.Terminate) return false;
    at += 1 + length;
  }
  return at === chunk.length;
}
