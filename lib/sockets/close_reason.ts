/**
 * Why a connection closed: the reasons that logs print and `/metrics` counts, the same in every
 * dispatch mode.
 *
 * Used on both threads.
 *
 * @module
 */

/** Why a connection closed, for logs and counters. */
export type CloseReason =
  | "done" // the handler finished (client half-closed, or sent quit)
  | "reset" // the socket failed: reset by peer, broken pipe
  | "idle" // --idle-timeout passed without traffic
  | "shutdown" // the server stopped before the connection finished
  | "write-timeout" // --write-timeout passed with output pending and none of it taken
  | "worker-lost" // its worker died
  | "handler-error" // the handler threw
  | "output-overflow"; // the handler queued more unsent output than allowed

/** Every close reason, in the order metrics list them. */
export const CLOSE_REASONS: readonly CloseReason[] = [
  "done",
  "reset",
  "idle",
  "write-timeout",
  "shutdown",
  "worker-lost",
  "handler-error",
  "output-overflow",
];
