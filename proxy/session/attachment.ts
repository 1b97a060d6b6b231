// The pipe phase's one seam. Once a client has authenticated and its backend holds the client's
// context, the session hands the client to an attachment, which serves it until one side ends.
// Three implementations: the dedicated pipe of app mode (session/pipe.ts: one backend for the
// client's whole life, bytes relayed with no per-message work), the pooled loan of org mode's
// session pooling (pool/lend.ts: a pooled backend lent for the session, framed so that it can go
// back to the pool) and the transaction link of org mode's transaction pooling
// (pool/transaction-link.ts: a pooled backend per transaction). The session's lifecycle is the
// same for all three.

/** Why an attachment ended, for the log and for what happens to the backend. */
export type AttachmentEnd =
  /** The client sent Terminate. */
  | 'client-terminated'
  /** The client's connection ended or failed without Terminate. */
  | 'client-closed'
  /** The client sent a message the attachment cannot frame (pooled loans only). */
  | 'client-violation'
  /** The backend's connection ended (its FATAL, if any, went to the client). */
  | 'upstream-closed'
  /** The proxy stopped it (drain, or a session cut at the end of a drain). */
  | 'stopped'
  /**
   * The proxy ended the client with a FATAL of its own (transaction mode: pool exhausted, a
   * backend that could not be readied, a statement name the client reused or never prepared).
   */
  | 'refused';

export interface AttachmentDescription {
  /**
   * Which implementation: `pipe` (dedicated backend), `loan` (pooled backend for the session) or
   * `transaction` (a pooled backend per transaction).
   */
  kind: 'pipe' | 'loan' | 'transaction';
  /** The backend serving the client; null between transactions. */
  backendPid: number | null;
  database: string;
  /** The upstream role the backend runs as. */
  role: string;
}

export interface Attachment {
  /** Settles once the client's service has ended, with why; never rejects. */
  readonly ended: Promise<AttachmentEnd>;
  /**
   * Drain at shutdown: asks PostgreSQL to end the backend (pgvpd.end_session), which sends the
   * client FATAL 57P01 itself, framed correctly; where that is not possible, stops.
   */
  terminate(): Promise<void>;
  /** Ends the service from the proxy's side now. */
  stop(): void;
  /**
   * Once the client's socket is closed: what becomes of the backend (a dedicated one is closed;
   * a pooled one is cancelled if the client vanished mid-statement, then reset and returned or
   * discarded). Never rejects.
   */
  release(end: AttachmentEnd): Promise<void>;
  describe(): AttachmentDescription;
}
