// The client's side of a connection before it is piped, shared by app and org mode: the
// startup phase (SSLRequest → TLS or 'N', GSSENCRequest → 'N', CancelRequest handed to the caller,
// NegotiateProtocolVersion for newer minors and `_pq_.` options), and reading the client's
// password messages during authentication. Every protocol violation becomes 08P01.
import type { Socket } from 'node:net';
import { TLSSocket, type SecureContext } from 'node:tls';
import { proxyErrors } from '../errors.js';
import type { Logger } from '../logger.js';
import { FrontendCode } from '../protocol/codes.js';
import { PacketReader, ProtocolViolation, type Message } from '../protocol/reader.js';
import * as send from '../protocol/encode.js';
import { decodeStartup, type StartupPacket } from '../protocol/startup.js';

/** The client left (Terminate or close) during the handshake. */
export class ClientLeft extends Error {
  override name = 'ClientLeft';
}

export interface EdgeOptions {
  tls: SecureContext | undefined;
  log: Logger;
  /** A CancelRequest arrived instead of a StartupMessage; the connection closes after it. */
  onCancel(processId: number, secretKey: Buffer): Promise<void>;
  /** The client's TLS handshake failed (not: the client left during it). */
  onTlsFailure?: () => void;
}

export class ClientEdge {
  socket: Socket | TLSSocket;
  readonly reader: PacketReader;
  /** The client negotiated TLS with the proxy. */
  tls = false;

  constructor(
    socket: Socket,
    private readonly options: EdgeOptions,
  ) {
    this.socket = socket;
    socket.setNoDelay(true);
    this.reader = new PacketReader(socket);
  }

  write(data: Buffer): void {
    this.socket.write(data);
  }

  /** The startup parameters, or undefined when the connection was a CancelRequest. */
  async startup(): Promise<Map<string, string> | undefined> {
    for (let negotiations = 0; ; negotiations++) {
      const packet = await this.packet();
      switch (packet.kind) {
        case 'ssl':
        case 'gssenc':
          if (negotiations > 1 || this.tls) {
            throw proxyErrors.protocolViolation('unexpected encryption request');
          }
          if (packet.kind === 'ssl' && this.options.tls) {
            if (this.reader.pending > 0) throw proxyErrors.plaintextAfterSslRequest();
            this.socket.write(send.acceptTls);
            await this.upgrade(this.options.tls);
          } else {
            this.socket.write(send.refuseEncryption);
          }
          continue;
        case 'cancel':
          await this.options.onCancel(packet.processId, packet.secretKey);
          return undefined;
        case 'startup':
          if ((packet.version & 0xffff) !== 0 || packet.protocolOptions.length > 0) {
            this.socket.write(send.negotiateProtocolVersion(0, packet.protocolOptions));
          }
          return packet.parameters;
      }
    }
  }

  /** A PasswordMessage / SASLInitialResponse / SASLResponse ('p'). */
  async password(): Promise<Message> {
    let message: Message;
    try {
      message = await this.reader.message();
    } catch (error) {
      if (error instanceof ProtocolViolation) throw proxyErrors.protocolViolation(error.message);
      throw new ClientLeft();
    }
    if (message.code === FrontendCode.Terminate) throw new ClientLeft();
    if (message.code !== FrontendCode.Password) {
      throw proxyErrors.protocolViolation(
        `expected password response, got message type ${JSON.stringify(String.fromCharCode(message.code))}`,
      );
    }
    return message;
  }

  private async packet(): Promise<StartupPacket> {
    let body: Buffer;
    try {
      body = await this.reader.startupPacket();
    } catch (error) {
      if (error instanceof ProtocolViolation) throw proxyErrors.protocolViolation(error.message);
      throw new ClientLeft();
    }
    try {
      return decodeStartup(body);
    } catch (error) {
      if (error instanceof ProtocolViolation) throw proxyErrors.protocolViolation(error.message);
      throw error;
    }
  }

  private async upgrade(context: SecureContext): Promise<void> {
    const secure = new TLSSocket(this.socket, { isServer: true, secureContext: context });
    await new Promise<void>((resolve, reject) => {
      secure.once('secure', resolve);
      secure.once('error', reject);
      secure.once('close', () => {
        reject(new ClientLeft());
      });
    }).catch((error: unknown) => {
      if (!(error instanceof ClientLeft)) this.options.onTlsFailure?.();
      this.options.log.info(
        { event: 'tls', err: (error as Error).message },
        'client TLS handshake failed',
      );
      throw new ClientLeft();
    });
    secure.removeAllListeners('error');
    secure.on('error', () => undefined);
    this.reader.switchTo(secure);
    this.socket = secure;
    this.tls = true;
  }
}
