/**
 * memcached's base64 (`base64.c`), for meta commands' `b` flag: its decoder skips characters
 * outside the alphabet and fails on a count of significant characters that is not a multiple of
 * four, so a key decodes (or fails) exactly as memcached decodes it.
 *
 * Pure; runs inside a worker.
 *
 * @module
 */

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const SKIP = 0x80;
const TABLE = new Uint8Array(256).fill(SKIP);
for (let i = 0; i < 64; i++) TABLE[ALPHABET.charCodeAt(i)] = i;
TABLE[0x3d] = 0; // '=' counts, as padding

/**
 * Decodes as memcached's `base64_decode`.
 *
 * @param src The base64 text's bytes.
 * @returns The bytes, or undefined where memcached's decoder returns 0 (which it treats as a
 *   failure, an empty result included).
 */
export function decodeBase64(src: Uint8Array): Uint8Array | undefined {
  let count = 0;
  for (let i = 0; i < src.length; i++) if (TABLE[src[i]!] !== SKIP) count++;
  if (count === 0 || count % 4 !== 0) return undefined;
  const out = new Uint8Array((count / 4) * 3);
  const block = [0, 0, 0, 0];
  let pos = 0;
  let n = 0;
  let pad = 0;
  for (let i = 0; i < src.length; i++) {
    const c = src[i]!;
    const v = TABLE[c]!;
    if (v === SKIP) continue;
    if (c === 0x3d) pad++;
    block[n++] = v;
    if (n === 4) {
      out[pos++] = ((block[0]! << 2) | (block[1]! >> 4)) & 0xff;
      out[pos++] = ((block[1]! << 4) | (block[2]! >> 2)) & 0xff;
      out[pos++] = ((block[2]! << 6) | block[3]!) & 0xff;
      n = 0;
      if (pad) {
        if (pad === 1) pos--;
        else if (pad === 2) pos -= 2;
        else return undefined;
        break;
      }
    }
  }
  return pos === 0 ? undefined : out.subarray(0, pos);
}

/**
 * Encodes as memcached's `base64_encode` (standard alphabet, `=` padding, no line breaks).
 *
 * @param src The bytes.
 * @returns The text.
 */
export function encodeBase64(src: Uint8Array): string {
  let out = "";
  let i = 0;
  for (; src.length - i >= 3; i += 3) {
    out += ALPHABET[src[i]! >> 2]! + ALPHABET[((src[i]! & 3) << 4) | (src[i + 1]! >> 4)]! +
      ALPHABET[((src[i + 1]! & 15) << 2) | (src[i + 2]! >> 6)]! + ALPHABET[src[i + 2]! & 63]!;
  }
  if (src.length - i === 1) {
    out += ALPHABET[src[i]! >> 2]! + ALPHABET[(src[i]! & 3) << 4]! + "==";
  } else if (src.length - i === 2) {
    out += ALPHABET[src[i]! >> 2]! + ALPHABET[((src[i]! & 3) << 4) | (src[i + 1]! >> 4)]! +
      ALPHABET[(src[i + 1]! & 15) << 2]! + "=";
  }
  return out;
}
