/**
 * Where a worker's `memcache` replies are assembled before they go to a socket: one growable
 * buffer per worker, reused for every connection (a worker runs one command at a time), written
 * to the socket in one `write` per chunk of commands, or every 64 KiB of a long reply, so that a
 * reply costs no allocation.
 *
 * Runs inside a worker.
 *
 * @module
 */

import type { Socket } from "../../handler.ts";

/** A reply larger than this goes to the socket in pieces, as it is made. */
export const FLUSH_AT = 64 * 1024;

/** A growable byte buffer for replies. */
export class Reply {
  bytes: Uint8Array = new Uint8Array(FLUSH_AT * 2);
  length = 0;

  /** Makes room for `n` more bytes. */
  room(n: number): void {
    if (this.length + n <= this.bytes.length) return;
    const grown = new Uint8Array(Math.max(this.bytes.length * 2, this.length + n));
    grown.set(this.bytes.subarray(0, this.length));
    this.bytes = grown;
  }

  /** Appends ASCII text. */
  ascii(text: string): void {
    this.room(text.length);
    const bytes = this.bytes;
    let at = this.length;
    for (let i = 0; i < text.length; i++) bytes[at++] = text.charCodeAt(i);
    this.length = at;
  }

  /** Appends bytes. */
  raw(view: Uint8Array): void {
    this.room(view.length);
    this.bytes.set(view, this.length);
    this.length += view.length;
  }

  /** Appends one byte. */
  byte(b: number): void {
    this.room(1);
    this.bytes[this.length++] = b;
  }

  /** Appends a non-negative integer in decimal. */
  number(n: number | bigint): void {
    this.ascii(typeof n === "number" && n < 10 ? String.fromCharCode(0x30 + n) : String(n));
  }

  /** Appends `\r\n`. */
  crlf(): void {
    this.room(2);
    this.bytes[this.length++] = 0x0d;
    this.bytes[this.length++] = 0x0a;
  }

  /**
   * Sends what is assembled and starts over.
   *
   * @param socket Where it goes.
   * @returns False once the socket is past its high-water mark: stop until it drains.
   */
  flush(socket: Socket): boolean {
    if (this.length === 0) return true;
    const under = socket.write(this.bytes.subarray(0, this.length));
    this.length = 0;
    if (this.bytes.length > 4 * FLUSH_AT) this.bytes = new Uint8Array(FLUSH_AT * 2);
    return under;
  }
}
