/**
 * The TLS files named on the command line: read and checked before any of them is used, at
 * start-up and on every reload (SIGHUP), so that a bad file is one clear line and never a
 * half-working listener. `tls.createSecureContext` checks nothing (garbage and a key that does
 * not match the certificate both pass it on Deno 2.9.6), so the checks use `node:crypto`.
 *
 * Runs on the main thread only.
 *
 * @module
 */

import { createPrivateKey, X509Certificate } from "node:crypto";
import type { TlsSettings } from "../sockets/tls_socket.ts";
import type { TlsFiles } from "./config.ts";

/** A TLS file that cannot be used. The message is one line naming the file and the reason. */
export class TlsFileError extends Error {
  /**
   * Creates the error.
   *
   * @param message One line.
   * @param options The underlying error.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "TlsFileError";
  }
}

/** Checked TLS settings, and what the logs say about them. */
export interface LoadedTls {
  /** The PEM texts, ready for the TLS layer. */
  settings: TlsSettings;
  /** The certificate's subject, one line (`CN=example.com`). */
  subject: string;
  /** When the certificate expires, as the certificate says it. */
  validTo: string;
}

/**
 * Reads and checks the TLS files: the certificate parses, the key parses and matches it, the
 * certificate has not expired, the CA file (if any) parses.
 *
 * @param files The paths.
 * @param now The time to check expiry against.
 * @returns The settings.
 * @throws {TlsFileError} For a file that is missing, unreadable or unusable.
 */
export function loadTls(files: TlsFiles, now: Date = new Date()): LoadedTls {
  const cert = readPem(files.cert, "certificate");
  const key = readPem(files.key, "key");
  const ca = files.ca === undefined ? undefined : readPem(files.ca, "CA file");
  let certificate: X509Certificate;
  try {
    certificate = new X509Certificate(cert);
  } catch (error) {
    throw new TlsFileError(
      `Cannot use TLS certificate '${files.cert}': not a PEM certificate (${reason(error)})`,
      { cause: error },
    );
  }
  let privateKey;
  try {
    privateKey = createPrivateKey(key);
  } catch (error) {
    throw new TlsFileError(
      `Cannot use TLS key '${files.key}': not a PEM private key (${reason(error)})`,
      { cause: error },
    );
  }
  if (!certificate.checkPrivateKey(privateKey)) {
    throw new TlsFileError(
      `Cannot use TLS key '${files.key}': it does not match the certificate in '${files.cert}'`,
    );
  }
  if (new Date(certificate.validTo).getTime() < now.getTime()) {
    throw new TlsFileError(
      `Cannot use TLS certificate '${files.cert}': it expired on ${certificate.validTo}`,
    );
  }
  if (ca !== undefined) {
    try {
      new X509Certificate(ca);
    } catch (error) {
      throw new TlsFileError(
        `Cannot use TLS CA file '${files.ca}': not a PEM certificate (${reason(error)})`,
        { cause: error },
      );
    }
  }
  return {
    settings: { cert, key, ca },
    subject: certificate.subject.replaceAll("\n", ", "),
    validTo: certificate.validTo,
  };
}

/**
 * Largest certificate, key or CA file read. A chain of a few certificates is some KB, and a CA
 * bundle of every public root about 250 KB; a file past this is a mistake (or `/dev/zero`),
 * not a certificate, and reading it whole could take all the memory.
 */
export const MAX_PEM_BYTES = 4 * 1024 * 1024;

function readPem(path: string, what: string): string {
  try {
    // A device or a FIFO would be read without end: regular files only, their size checked
    // first, and the read itself bounded too (the file may grow meanwhile).
    const refuse = (why: string) => new TlsFileError(`Cannot read TLS ${what} '${path}': ${why}`);
    const tooLarge = `more than the ${MAX_PEM_BYTES / 1024 / 1024} MiB a PEM file may have`;
    const info = Deno.statSync(path);
    if (!info.isFile) throw refuse("not a regular file");
    if (info.size > MAX_PEM_BYTES) throw refuse(`${info.size} bytes, ${tooLarge}`);
    using file = Deno.openSync(path);
    const bytes = new Uint8Array(MAX_PEM_BYTES + 1);
    let length = 0;
    for (let n: number | null = 0; n !== null && length < bytes.length;) {
      n = file.readSync(bytes.subarray(length));
      if (n !== null) length += n;
    }
    if (length > MAX_PEM_BYTES) throw refuse(tooLarge);
    return new TextDecoder().decode(bytes.subarray(0, length));
  } catch (error) {
    if (error instanceof TlsFileError) throw error;
    const why = error instanceof Deno.errors.NotFound
      ? "no such file"
      : error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied
      ? "no permission to read it (deno task serve may read this folder only: run with " +
        `--allow-read=${path})`
      : reason(error);
    throw new TlsFileError(`Cannot read TLS ${what} '${path}': ${why}`, { cause: error });
  }
}

function reason(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).split("\n")[0] ?? "unknown";
}
