/**
 * memcached's `tokenize_command` over a command line's bytes: tokens are what lies between
 * spaces (only spaces: a tab is part of a token), at most 23 of them, and, when there are more,
 * the rest of the line is left for the command to read on (`get` does, for any number of keys).
 * The counts below include memcached's final empty token, so that each command's `WANT_TOKENS`
 * check reads as memcached's does.
 *
 * Pure; runs inside a worker.
 *
 * @module
 */

/** memcached's `MAX_TOKENS`: 23 tokens and the final one. */
export const MAX_TOKENS = 24;

/** The tokens of one line. Reused for every line (no allocation per command). */
export class Tokens {
  /** The line (a view of the chunk, or of a joined partial line). */
  line: Uint8Array = new Uint8Array(0);
  /** Number of tokens, counting memcached's final empty one. */
  count = 0;
  /** Where the unread rest of the line starts when there were more tokens than fit; else -1. */
  rest = -1;
  readonly start = new Int32Array(MAX_TOKENS);
  readonly end = new Int32Array(MAX_TOKENS);

  /**
   * Splits `line` (from `from` on) as memcached does.
   *
   * @param line The command line, without its line end.
   * @param from Where to start.
   * @returns `this`.
   */
  split(line: Uint8Array, from = 0): this {
    this.line = line;
    const length = line.length;
    let n = 0;
    let s = from;
    let e = from;
    this.rest = -1;
    for (; e < length; e++) {
      if (line[e] !== 0x20) continue;
      if (s !== e) {
        this.start[n] = s;
        this.end[n] = e;
        n++;
        if (n === MAX_TOKENS - 1) {
          e++;
          s = e;
          this.rest = e < length ? e : -1;
          break;
        }
      }
      s = e + 1;
    }
    if (this.rest === -1 && s !== e && s < length) {
      this.start[n] = s;
      this.end[n] = Math.min(e, length);
      n++;
    }
    // The final token: empty, at the unread rest (if any).
    this.start[n] = this.rest === -1 ? length : this.rest;
    this.end[n] = this.start[n]!;
    this.count = n + 1;
    return this;
  }

  /** Length of token `i`. */
  length(i: number): number {
    return this.end[i]! - this.start[i]!;
  }

  /** Token `i`, as a view of the line. */
  token(i: number): Uint8Array {
    return this.line.subarray(this.start[i]!, this.end[i]!);
  }

  /** Byte `at` of token `i` (-1 past its end). */
  byte(i: number, at = 0): number {
    const p = this.start[i]! + at;
    return p < this.end[i]! ? this.line[p]! : -1;
  }

  /**
   * Whether token `i` is exactly `word` (ASCII).
   *
   * @param i Token index.
   * @param word The word.
   * @returns True if equal.
   */
  is(i: number, word: string): boolean {
    const s = this.start[i]!;
    if (this.end[i]! - s !== word.length) return false;
    for (let k = 0; k < word.length; k++) {
      if (this.line[s + k] !== word.charCodeAt(k)) return false;
    }
    return true;
  }
}
