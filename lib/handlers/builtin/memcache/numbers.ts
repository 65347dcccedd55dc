/**
 * Numbers in memcached command lines, read exactly as memcached 1.6 reads them: its `safe_strtoul`,
 * `safe_strtol` and `safe_strtoull` wrap the C library's `strtoul`, `strtol` and `strtoull`, so a
 * token may start with white space other than a space (tokens are split on spaces only) and a
 * sign, may have leading zeros, and may end in one white-space character; a 32-bit result keeps
 * the low 32 bits of a 64-bit one (`flags 4294967297` is 1, as memcached stores it). Getting these
 * the same is what makes the answers the same.
 *
 * Pure; runs inside a worker.
 *
 * @module
 */

const U64_MAX = (1n << 64n) - 1n;
const I64_MIN = -(1n << 63n);
const I64_MAX = (1n << 63n) - 1n;

/** C's `isspace` in the C locale. */
function isSpace(b: number): boolean {
  return b === 0x20 || (b >= 0x09 && b <= 0x0d);
}

/**
 * What C's `strtoull` / `strtol` see in a token: `null` where they would fail (no digits, out of
 * range, or a character after the digits that is not white space).
 */
function scan(
  token: Uint8Array,
  signed: boolean,
): { value: bigint; negative: boolean } | null {
  const end = token.length;
  let at = 0;
  while (at < end && isSpace(token[at]!)) at++;
  let negative = false;
  if (at < end && (token[at] === 0x2b || token[at] === 0x2d)) {
    negative = token[at] === 0x2d;
    at++;
  }
  const first = at;
  let value = 0n;
  let small = 0;
  while (at < end && token[at]! >= 0x30 && token[at]! <= 0x39) {
    if (at - first < 15) small = small * 10 + (token[at]! - 0x30);
    else {
      if (at - first === 15) value = BigInt(small);
      value = value * 10n + BigInt(token[at]! - 0x30);
    }
    at++;
  }
  if (at === first) return null; // no digits: strtoul's endptr == str
  if (at - first <= 15) value = BigInt(small);
  if (at < end && !isSpace(token[at]!)) return null; // memcached wants space or the end next
  if (signed) {
    const v = negative ? -value : value;
    if (v < I64_MIN || v > I64_MAX) return null; // ERANGE
    return { value: v, negative };
  }
  if (value > U64_MAX) return null; // ERANGE
  return { value: negative ? (-value) & U64_MAX : value, negative };
}

/**
 * Whether the token holds only ASCII digits (1 to 9 of them): the common case, read without
 * the general path.
 */
function plainDigits(token: Uint8Array, most: number): number {
  const length = token.length;
  if (length === 0 || length > most) return -1;
  let n = 0;
  for (let i = 0; i < length; i++) {
    const d = token[i]! - 0x30;
    if (d < 0 || d > 9) return -1;
    n = n * 10 + d;
  }
  return n;
}

/**
 * memcached's `safe_strtoull`: an unsigned 64-bit number.
 *
 * @param token The token's bytes.
 * @returns The number, or undefined where memcached refuses it.
 *
 * @example
 * ```ts
 * import { safeStrtoull } from "./numbers.ts";
 * import assert from "node:assert/strict";
 * const b = (s: string) => new TextEncoder().encode(s);
 * assert.equal(safeStrtoull(b("0005")), 5n);
 * assert.equal(safeStrtoull(b("-1")), undefined);
 * assert.equal(safeStrtoull(b("12x")), undefined);
 * ```
 */
export function safeStrtoull(token: Uint8Array): bigint | undefined {
  const fast = plainDigits(token, 15);
  if (fast >= 0) return BigInt(fast);
  const scanned = scan(token, false);
  if (scanned === null) return undefined;
  // Only when the value is "negative" as a signed number does memcached look for a minus sign.
  if (scanned.value >= 1n << 63n && token.includes(0x2d)) return undefined;
  return scanned.value;
}

/**
 * memcached's `safe_strtoul`: an unsigned 32-bit number (the low 32 bits of C's 64-bit result).
 *
 * @param token The token's bytes.
 * @returns The number, or undefined.
 */
export function safeStrtoul(token: Uint8Array): number | undefined {
  const fast = plainDigits(token, 9);
  if (fast >= 0) return fast;
  const scanned = scan(token, false);
  if (scanned === null) return undefined;
  if (scanned.value >= 1n << 63n && token.includes(0x2d)) return undefined;
  return Number(scanned.value & 0xffffffffn);
}

/**
 * memcached's `safe_strtol`: a signed 32-bit number (the low 32 bits of C's 64-bit result).
 *
 * @param token The token's bytes.
 * @returns The number, or undefined.
 */
export function safeStrtol(token: Uint8Array): number | undefined {
  const fast = plainDigits(token, 9);
  if (fast >= 0) return fast;
  const scanned = scan(token, true);
  if (scanned === null) return undefined;
  return Number(BigInt.asIntN(32, scanned.value));
}

/**
 * The decimal text of an unsigned number, as bytes into `out` at `at`.
 *
 * @param value A non-negative integer (a number up to 2^53, or a bigint).
 * @param out Where to write.
 * @param at Where to start.
 * @returns The index after the last digit.
 */
export function writeNumber(value: number | bigint, out: Uint8Array, at: number): number {
  if (typeof value === "number" && value < 10) {
    out[at] = 0x30 + value;
    return at + 1;
  }
  const text = value.toString();
  for (let i = 0; i < text.length; i++) out[at + i] = text.charCodeAt(i);
  return at + text.length;
}
