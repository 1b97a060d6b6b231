// Wire codes of the PostgreSQL frontend/backend protocol 3.0 that the proxy itself speaks
// (PostgreSQL docs, "Message Formats", §55.7). Everything else is relayed as bytes. Plain
// constant objects rather than enums, so that a code read off the wire (a number) compares with
// them in a `switch` as it is.

/** Special request codes sent in place of a protocol version in a startup packet. */
export const RequestCode = {
  /** 1234.5679 */
  SSLRequest: 80877103,
  /** 1234.5680 */
  GSSENCRequest: 80877104,
  /** 1234.5678 */
  CancelRequest: 80877102,
} as const;

/** Protocol 3.0 as (major << 16) | minor. */
export const protocol30 = 196608;

/** Message type bytes sent by the client after startup. */
export const FrontendCode = {
  /** 'p': PasswordMessage, SASLInitialResponse, SASLResponse */
  Password: 0x70,
  /** 'X' */
  Terminate: 0x58,
} as const;

/** Message type bytes sent by the server, during the handshake and after it. */
export const BackendCode = {
  /** 'R' */
  Authentication: 0x52,
  /** 'K' */
  BackendKeyData: 0x4b,
  /** 'S' */
  ParameterStatus: 0x53,
  /** 'Z' */
  ReadyForQuery: 0x5a,
  /** 'E' */
  ErrorResponse: 0x45,
  /** 'N' */
  NoticeResponse: 0x4e,
  /** 'v' */
  NegotiateProtocolVersion: 0x76,
  /** '1' */
  ParseComplete: 0x31,
  /** '2' */
  BindComplete: 0x32,
  /** 'A' */
  NotificationResponse: 0x41,
  /** 'C' */
  CommandComplete: 0x43,
  /** 'D' */
  DataRow: 0x44,
  /** 'I' */
  EmptyQueryResponse: 0x49,
  /** 'n' */
  NoData: 0x6e,
  /** 's' */
  PortalSuspended: 0x73,
  /** 't' */
  ParameterDescription: 0x74,
  /** 'T' */
  RowDescription: 0x54,
} as const;

/** The int32 that follows 'R'. */
export const AuthCode = {
  Ok: 0,
  KerberosV5: 2,
  CleartextPassword: 3,
  MD5Password: 5,
  GSS: 7,
  GSSContinue: 8,
  SSPI: 9,
  SASL: 10,
  SASLContinue: 11,
  SASLFinal: 12,
} as const;
export type AuthCode = (typeof AuthCode)[keyof typeof AuthCode];

/** Upper bound of a startup packet, as in PostgreSQL's MAX_STARTUP_PACKET_LENGTH. */
export const maxStartupPacket = 10_000;

/** Upper bound of one message during the handshake (auth exchanges are small). */
export const maxHandshakeMessage = 64 * 1024;

/**
 * Upper bound of the bytes a PacketReader holds beyond the read it is waiting for (none when no
 * read waits). The reader pauses its socket whenever it holds bytes nobody has asked for, so a
 * socket delivers at most one chunk ahead (64 KiB from TCP, 16 KiB from TLS); more than this is
 * a peer that is not speaking the protocol, and the next read fails with 08P01.
 */
export const maxReadAhead = 256 * 1024;
