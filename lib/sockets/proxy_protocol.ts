/**
 * PROXY protocol v1 (text) and v2 (binary) headers, as sent by HAProxy and other load balancers
 * in front of the server (https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt), so that
 * the server sees each client's real address.
 *
 * Runs on whichever thread accepts the connection: the main thread in `main` dispatch, the worker
 * in `kernel` dispatch. The header is read before the connection reaches its handler.
 *
 * @module
 */

import { closeQuietly } from "./address.ts";

/** The v2 signature: the first 12 bytes of every v2 header. */
export const V2_SIGNATURE: Uint8Array = new Uint8Array([
  0x0d,
  0x0a,
  0x0d,
  0x0a,
  0x00,
  0x0d,
  0x0a,
  0x51,
  0x55,
  0x49,
  0x54,
  0x0a,
]);
/** Longest v1 header, CRLF included (the specification's figure). */
export const V1_MAX_LENGTH = 107;
/** Longest v2 header this server accepts (16-byte preamble and up to 4 KiB of addresses and TLVs). */
export const V2_MAX_LENGTH: number = 16 + 4096;

/** A parsed header. */
export interface ProxyHeader {
  /** 1 or 2. */
  version: 1 | 2;
  /**
   * `proxy`: the connection is relayed for a client, whose address is `source`.
   * `local`: the proxy speaks for itself (health checks; v2 LOCAL, v1 UNKNOWN): use the real
   * socket address.
   */
  command: "proxy" | "local";
  /** The client, when `command` is `proxy` and the family is IPv4 or IPv6. */
  source?: Deno.NetAddr;
  /** The address the client connected to on the proxy. */
  destination?: Deno.NetAddr;
  /** v2 type-length-value extensions, by type. */
  tlvs: Map<number, Uint8Array>;
  /** Bytes the header took; what follows is the client's data. */
  length: number;
}

/** A header that is missing or malformed. The message says what is wrong, in one line. */
export class ProxyProtocolError extends Error {
  /**
   * Creates the error.
   *
   * @param message What is wrong with the header.
   * @param options The underlying error as `cause`, if any.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ProxyProtocolError";
  }
}

/** How long a connection may take to send its PROXY header. */
export const PROXY_HEADER_TIMEOUT_MS = 5000;

/** A connection's PROXY header and the client bytes that arrived with it. */
export interface ProxiedStart {
  /** The parsed header. */
  header: ProxyHeader;
  /** Bytes read past the header: the start of the client's own data. */
  rest: Uint8Array;
}

/**
 * Reads a PROXY header from a freshly accepted connection, with a deadline. On failure the
 * error says why in one line, and the caller closes the connection (after counting it, so that
 * a client that sees the close and then reads `/metrics` finds it counted).
 *
 * @param conn The accepted socket; nothing may have been read from it yet.
 * @param timeoutMs How long the peer may take to send the whole header.
 * @returns The header and what followed it.
 * @throws {ProxyProtocolError} If the header is malformed, late, or the peer left first.
 */
export async function readProxyHeader(
  conn: Deno.Conn,
  timeoutMs: number = PROXY_HEADER_TIMEOUT_MS,
): Promise<ProxiedStart> {
  let received = new Uint8Array(0);
  let late = false;
  const timer = setTimeout(() => {
    late = true;
    closeQuietly(conn);
  }, timeoutMs);
  try {
    const buffer = new Uint8Array(V2_MAX_LENGTH);
    while (true) {
      let n: number | null;
      try {
        n = await conn.read(buffer.subarray(received.length));
      } catch (error) {
        if (late) throw new ProxyProtocolError(`no PROXY header within ${timeoutMs / 1000} s`);
        throw new ProxyProtocolError(`closed before sending its PROXY header`, { cause: error });
      }
      if (n === null) throw new ProxyProtocolError("closed before sending its PROXY header");
      received = buffer.subarray(0, received.length + n);
      const header = parseProxyHeader(received);
      if (header !== undefined) return { header, rest: received.slice(header.length) };
    }
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Parses a PROXY header at the start of `bytes`.
 *
 * @param bytes What the connection has sent so far.
 * @returns The header, or `undefined` if more bytes are needed to decide.
 * @throws {ProxyProtocolError} If the bytes cannot be the start of a valid header.
 *
 * @example
 * ```ts
 * import { parseProxyHeader } from "./proxy_protocol.ts";
 * import assert from "node:assert/strict";
 * const header = parseProxyHeader(
 *   new TextEncoder().encode("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nhello"),
 * );
 * assert.equal(header?.source?.hostname, "192.168.0.1");
 * assert.equal(header?.length, 47);
 * ```
 */
export function parseProxyHeader(bytes: Uint8Array): ProxyHeader | undefined {
  if (bytes.length === 0) return undefined;
  if (bytes[0] === 0x0d) return _parseV2(bytes);
  if (bytes[0] === 0x50 /* P */) return _parseV1(bytes);
  throw new ProxyProtocolError("no PROXY protocol header");
}

const V1_PREFIX = "PROXY ";

function _parseV1(bytes: Uint8Array): ProxyHeader | undefined {
  const prefixLength = Math.min(bytes.length, V1_PREFIX.length);
  for (let i = 0; i < prefixLength; i++) {
    if (bytes[i] !== V1_PREFIX.charCodeAt(i)) {
      throw new ProxyProtocolError("no PROXY protocol header");
    }
  }
  const end = bytes.indexOf(0x0a);
  if (end < 0) {
    if (bytes.length >= V1_MAX_LENGTH) {
      throw new ProxyProtocolError("v1 header longer than 107 bytes");
    }
    return undefined;
  }
  if (end + 1 > V1_MAX_LENGTH) throw new ProxyProtocolError("v1 header longer than 107 bytes");
  if (bytes[end - 1] !== 0x0d) throw new ProxyProtocolError("v1 header does not end with CRLF");
  const line = new TextDecoder("ascii").decode(bytes.subarray(0, end - 1));
  const parts = line.split(" ");
  const tlvs = new Map<number, Uint8Array>();
  if (parts[1] === "UNKNOWN") return { version: 1, command: "local", tlvs, length: end + 1 };
  if (parts.length !== 6) throw new ProxyProtocolError(`malformed v1 header "${line}"`);
  const [, family, source, destination, sourcePort, destinationPort] = parts as string[];
  if (family !== "TCP4" && family !== "TCP6") {
    throw new ProxyProtocolError(`unknown v1 protocol family "${family}"`);
  }
  const check = family === "TCP4" ? _isIPv4 : _isIPv6;
  if (!check(source!) || !check(destination!)) {
    throw new ProxyProtocolError(`bad ${family} address in v1 header "${line}"`);
  }
  return {
    version: 1,
    command: "proxy",
    source: { transport: "tcp", hostname: source!, port: _port(sourcePort!) },
    destination: { transport: "tcp", hostname: destination!, port: _port(destinationPort!) },
    tlvs,
    length: end + 1,
  };
}

function _parseV2(bytes: Uint8Array): ProxyHeader | undefined {
  const known = Math.min(bytes.length, V2_SIGNATURE.length);
  for (let i = 0; i < known; i++) {
    if (bytes[i] !== V2_SIGNATURE[i]) throw new ProxyProtocolError("no PROXY protocol header");
  }
  if (bytes.length < 16) return undefined;
  const versionCommand = bytes[12]!;
  if (versionCommand >> 4 !== 2) {
    throw new ProxyProtocolError(`unsupported v2 version ${versionCommand >> 4}`);
  }
  const command = versionCommand & 0x0f;
  if (command > 1) throw new ProxyProtocolError(`unknown v2 command ${command}`);
  const family = bytes[13]! >> 4;
  const transport = bytes[13]! & 0x0f;
  if (family > 3 || transport > 2) {
    throw new ProxyProtocolError(
      `unknown v2 address family/transport 0x${bytes[13]!.toString(16)}`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const addressLength = view.getUint16(14, false);
  const length = 16 + addressLength;
  if (length > V2_MAX_LENGTH) {
    throw new ProxyProtocolError(`v2 header of ${length} bytes is too long`);
  }
  if (bytes.length < length) return undefined;

  const needed = [0, 12, 36, 216][family]!;
  if (addressLength < needed) {
    throw new ProxyProtocolError(`v2 address block of ${addressLength} bytes is too short`);
  }
  const header: ProxyHeader = {
    version: 2,
    command: command === 0 ? "local" : "proxy",
    tlvs: _parseTlvs(bytes.subarray(16 + needed, length)),
    length,
  };
  // LOCAL, UNSPEC and UNIX carry no client IP address: the socket's own address stands.
  if (command === 0 || family === 0 || family === 3) {
    if (command === 1) header.command = "local";
    return header;
  }
  if (family === 1) {
    header.source = {
      transport: "tcp",
      hostname: bytes.subarray(16, 20).join("."),
      port: view.getUint16(24, false),
    };
    header.destination = {
      transport: "tcp",
      hostname: bytes.subarray(20, 24).join("."),
      port: view.getUint16(26, false),
    };
  } else {
    header.source = {
      transport: "tcp",
      hostname: _ipv6(bytes.subarray(16, 32)),
      port: view.getUint16(48, false),
    };
    header.destination = {
      transport: "tcp",
      hostname: _ipv6(bytes.subarray(32, 48)),
      port: view.getUint16(50, false),
    };
  }
  return header;
}

function _parseTlvs(bytes: Uint8Array): Map<number, Uint8Array> {
  const tlvs = new Map<number, Uint8Array>();
  let at = 0;
  while (at < bytes.length) {
    if (at + 3 > bytes.length) throw new ProxyProtocolError("truncated v2 TLV header");
    const type = bytes[at]!;
    const length = (bytes[at + 1]! << 8) | bytes[at + 2]!;
    if (at + 3 + length > bytes.length) {
      throw new ProxyProtocolError(`v2 TLV 0x${type.toString(16)} overruns the header`);
    }
    tlvs.set(type, bytes.slice(at + 3, at + 3 + length));
    at += 3 + length;
  }
  return tlvs;
}

function _port(text: string): number {
  if (
    !/^\d{1,5}$/.test(text) || (text.length > 1 && text.startsWith("0")) || Number(text) > 65535
  ) {
    throw new ProxyProtocolError(`bad port "${text}" in v1 header`);
  }
  return Number(text);
}

function _isIPv4(text: string): boolean {
  const parts = text.split(".");
  return parts.length === 4 &&
    parts.every((p) =>
      /^\d{1,3}$/.test(p) && Number(p) <= 255 && (p === "0" || !p.startsWith("0"))
    );
}

function _isIPv6(text: string): boolean {
  if (!/^[0-9a-fA-F:.]+$/.test(text) || text.length < 2 || text.length > 45) return false;
  try {
    new URL(`http://[${text}]/`);
    return true;
  } catch {
    return false;
  }
}

function _ipv6(bytes: Uint8Array): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
  // Canonical form through the URL parser: compresses the longest run of zeros.
  return new URL(`http://[${groups.join(":")}]/`).hostname.slice(1, -1);
}
