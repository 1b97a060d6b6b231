// The last step of every upstream login, shared by both flows: after AuthenticationOk the
// backend reports its parameters (ParameterStatus), its cancel key (BackendKeyData) and may send
// notices, then ReadyForQuery. This reads all of it, keeping each message's bytes in order so
// that app mode can hold them back from its client until the context is set. An ErrorResponse
// (e.g. too many connections, database removed during the login) goes to `refused`, whose error
// is thrown; anything else out of place is 08P01.
import { proxyErrors } from '../errors.js';
import { BackendCode } from '../protocol/codes.js';
import {
  backendKeyData,
  parameterStatus,
  upstreamMessage,
  type BackendKey,
} from '../protocol/decode.js';
import type { Message, PacketReader } from '../protocol/reader.js';

export interface ReadyBackend {
  backend: BackendKey;
  /** ParameterStatus values, as the backend reported them. */
  parameters: Map<string, string>;
  /** ParameterStatus and NoticeResponse messages as they came, in order. */
  held: Buffer[];
  /** The ReadyForQuery message. */
  ready: Buffer;
}

export async function untilReady(
  reader: PacketReader,
  phase: string,
  refused: (message: Message) => Error,
): Promise<ReadyBackend> {
  const parameters = new Map<string, string>();
  const held: Buffer[] = [];
  let backend: BackendKey | undefined;
  for (;;) {
    const message = await upstreamMessage(reader, phase);
    switch (message.code) {
      case BackendCode.ParameterStatus: {
        const [name, value] = parameterStatus(message.body);
        parameters.set(name, value);
        held.push(message.raw);
        continue;
      }
      case BackendCode.NoticeResponse:
        held.push(message.raw);
        continue;
      case BackendCode.BackendKeyData:
        backend = backendKeyData(message.body);
        continue;
      case BackendCode.ReadyForQuery:
        if (!backend) throw proxyErrors.upstreamProtocol('no BackendKeyData before ReadyForQuery');
        return { backend, parameters, held, ready: message.raw };
      case BackendCode.ErrorResponse:
        throw refused(message);
      default:
        throw proxyErrors.upstreamProtocol(
          `message type ${String.fromCharCode(message.code)} before ReadyForQuery`,
        );
    }
  }
}
