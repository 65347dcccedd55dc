/**
 * Server-side TLS for accepted TCP connections: the handshake, and the decrypted connection as
 * the server's connection classes use it (`read`, `write`, `closeWrite`, `close`), so that TLS
 * changes nothing after admission.
 *
 * Runs on whichever thread owns the sockets: the main thread in `main` dispatch, each worker in
 * `kernel` dispatch.
 *
 * Why `node:tls` and not `Deno.listenTls` (Deno 2.9.6, checked): a `Deno.listenTls` listener
 * cannot change its certificate, cannot ask for client certificates (denoland/deno#26825), and
 * starts the handshake at accept, before a PROXY header could be read. `node:tls` does all three:
 * each accepted `Deno.TcpConn` is upgraded with a `TLSSocket` over a small stream adapter, with
 * the context current at that moment (so a reload affects only new connections). The price,
 * measured with a 64-byte echo: about half the round trips per second of `Deno.listenTls`.
 *
 * @module
 */

import { Duplex } from "node:stream";
import tls from "node:tls";

/** The PEM texts a TLS server needs. Plain strings: they travel to workers in messages. */
export interface TlsSettings {
  /** Certificate chain, leaf first. */
  cert: string;
  /** Private key of the leaf certificate. */
  key: string;
  /** CA certificates that client certificates must chain to (mutual TLS); none: not asked. */
  ca?: string | undefined;
}

/** What the server's connection classes use of a socket; a `Deno.TcpConn` is one. */
export type ServerSocket = Pick<
  Deno.TcpConn,
  "read" | "write" | "closeWrite" | "close" | "setNoDelay" | "remoteAddr"
>;

/** A TLS handshake that failed, timed out, or was cut by the client. */
export class TlsHandshakeError extends Error {
  /**
   * Creates the error.
   *
   * @param message One line: why.
   * @param options The TLS layer's error.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "TlsHandshakeError";
  }
}

/** Terminates TLS with the current settings; `update` swaps them for new connections only. */
export class TlsTerminator {
  #context: tls.SecureContext;
  #requestCert: boolean;
  #timeoutMs: number;

  /**
   * @param settings Certificate, key and (for mutual TLS) CA.
   * @param timeoutMs How long a client may take to finish its handshake.
   */
  constructor(settings: TlsSettings, timeoutMs: number) {
    this.#context = contextOf(settings);
    this.#requestCert = settings.ca !== undefined;
    this.#timeoutMs = timeoutMs;
  }

  /**
   * Uses new settings for the handshakes that start from now on; connections already upgraded
   * keep theirs.
   *
   * @param settings The new certificate, key and CA (checked by the caller).
   */
  update(settings: TlsSettings): void {
    this.#context = contextOf(settings);
    this.#requestCert = settings.ca !== undefined;
  }

  /**
   * Runs the server side of a TLS handshake on an accepted connection.
   *
   * @param raw The accepted TCP connection; owned by the result from now on.
   * @param initial Bytes already read from it (after a PROXY header): the handshake's first.
   * @returns The decrypted connection, once the handshake is done.
   * @throws {TlsHandshakeError} If the client does not complete it in time, sends something
   *   that is not TLS, or (with a CA) has no valid certificate; `raw` is closed then.
   */
  upgrade(raw: Deno.TcpConn, initial?: Uint8Array): Promise<TlsServerConn> {
    const transport = new SocketTransport(raw, initial);
    const socket = new tls.TLSSocket(transport, {
      isServer: true,
      secureContext: this.#context,
      requestCert: this.#requestCert,
      rejectUnauthorized: this.#requestCert,
    });
    const conn = new TlsServerConn(raw, transport, socket);
    return new Promise<TlsServerConn>((resolve, reject) => {
      const fail = (reason: string, cause?: unknown) => {
        clearTimeout(timer);
        conn.abort();
        reject(new TlsHandshakeError(reason, { cause }));
      };
      const timer = setTimeout(
        () => fail(`no TLS handshake within ${this.#timeoutMs / 1000} s`),
        this.#timeoutMs,
      );
      // A client that ends its side before the handshake is done can never finish it (it has
      // its Finished to send): free its slot now, not at the timeout (nginx does the same).
      const ended = () => fail("the client closed its connection during the TLS handshake");
      transport.once("end", ended);
      socket.once("secure", () => {
        clearTimeout(timer);
        socket.removeAllListeners("close");
        transport.off("end", ended);
        resolve(conn);
      });
      socket.once("error", (error: Error) => fail(describe(error), error));
      socket.once("close", () => fail("closed during the TLS handshake"));
    });
  }
}

/**
 * A connection after its TLS handshake: reads give plaintext from the client, writes are
 * encrypted to it. Backpressure holds both ways: the socket is not read while more than
 * `RECEIVE_HIGH_WATER` bytes of plaintext wait here, and a write resolves once the socket has
 * taken it.
 *
 * Two ways to end it: `close()` ends the TLS session properly (`close_notify`, then FIN), so
 * that the client knows it has everything; `abort()` drops it with neither, for resets and
 * failed handshakes, so that a cut connection can never look complete.
 */
export class TlsServerConn implements ServerSocket {
  /** The client's address (the TCP peer's). */
  readonly remoteAddr: Deno.NetAddr;
  #raw: Deno.TcpConn;
  #transport: SocketTransport;
  #socket: tls.TLSSocket;
  /** Plaintext received and not yet returned by `read`, oldest first. */
  #received: Uint8Array[] = [];
  #receivedBytes = 0;
  #ended = false;
  #error: Error | undefined;
  #wake: (() => void) | undefined;
  #closed = false;
  /** Set by `closeWrite`: the TLS session's end, flushed to the socket and FIN sent. */
  #outputEnded: Promise<void> | undefined;

  /**
   * @param raw The TCP connection underneath.
   * @param transport The stream the TLS layer writes to and reads from (over `raw`).
   * @param socket The TLS layer.
   */
  constructor(raw: Deno.TcpConn, transport: SocketTransport, socket: tls.TLSSocket) {
    this.#raw = raw;
    this.#transport = transport;
    this.#socket = socket;
    this.remoteAddr = raw.remoteAddr;
    // The descriptor, where Deno exposes it: a reset (SO_LINGER 0) must reach the real socket.
    for (const symbol of Object.getOwnPropertySymbols(raw)) {
      if (symbol.description === "Deno.internal.fd") {
        Object.defineProperty(this, symbol, { value: (raw as never)[symbol] });
      }
    }
    const wake = () => {
      const resume = this.#wake;
      this.#wake = undefined;
      resume?.();
    };
    // The TLS layer always flows; backpressure is applied below it, by not reading the socket
    // (see SocketTransport): Deno 2.9.6's TLSSocket over a stream never delivers again once
    // paused, whether by pause() or by a reader that stops calling read() for a few
    // milliseconds (checked: 1 MiB echoed with 10 ms reading pauses stalled every time).
    transport.gate = () => this.#receivedBytes >= RECEIVE_HIGH_WATER;
    socket.on("data", (chunk: Uint8Array) => {
      this.#received.push(chunk);
      this.#receivedBytes += chunk.length;
      wake();
    });
    socket.on("end", () => {
      this.#ended = true;
      wake();
    });
    socket.on("error", (error: Error) => {
      this.#error ??= error;
      wake();
    });
    socket.on("close", () => {
      this.#ended = true;
      wake();
    });
  }

  /**
   * Reads plaintext into `p`.
   *
   * @param p Where to put it.
   * @returns How many bytes, or null at the client's end of input.
   * @throws {Error} If the TLS layer or the socket failed.
   */
  async read(p: Uint8Array): Promise<number | null> {
    while (true) {
      const chunk = this.#received[0];
      if (chunk !== undefined) {
        const n = Math.min(p.length, chunk.length);
        p.set(chunk.subarray(0, n));
        if (n < chunk.length) this.#received[0] = chunk.subarray(n);
        else this.#received.shift();
        this.#receivedBytes -= n;
        if (this.#receivedBytes < RECEIVE_HIGH_WATER) this.#transport.release();
        return n;
      }
      if (this.#error !== undefined) throw this.#error;
      if (this.#ended || this.#closed) return null;
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
  }

  /**
   * Encrypts and sends `p`.
   *
   * @param p The bytes (not to be changed until the promise settles).
   * @returns `p.length`, once the socket has taken the encrypted bytes.
   */
  write(p: Uint8Array): Promise<number> {
    if (this.#closed) return Promise.reject(new Deno.errors.BadResource("Connection is closed"));
    return new Promise((resolve, reject) => {
      this.#socket.write(p, (error) => error ? reject(error) : resolve(p.length));
    });
  }

  /** Ends the output: TLS `close_notify`, then the socket's FIN; input may still arrive. */
  closeWrite(): Promise<void> {
    this.#outputEnded ??= new Promise((resolve) => {
      // The TLS layer writes close_notify but does not end the stream below it: do it once
      // everything before has been handed to the socket.
      this.#socket.end(() => {
        this.#transport.end(() => resolve());
      });
    });
    return this.#outputEnded;
  }

  /**
   * Sets `TCP_NODELAY` on the socket underneath.
   *
   * @param noDelay Whether to turn Nagle's algorithm off.
   */
  setNoDelay(noDelay?: boolean): void {
    this.#raw.setNoDelay(noDelay);
  }

  /**
   * Closes gracefully: what was written goes out, then `close_notify` and FIN, then the socket
   * is released (at most a second later, for a client that takes nothing).
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#wakeReader();
    const timer = setTimeout(() => this.#release(), GRACEFUL_CLOSE_MS);
    this.closeWrite().finally(() => {
      clearTimeout(timer);
      this.#release();
    });
  }

  /** Drops the connection at once, without `close_notify`: for resets and failed handshakes. */
  abort(): void {
    this.#closed = true;
    this.#wakeReader();
    this.#release();
  }

  #release(): void {
    this.#socket.destroy();
    this.#transport.destroy();
    try {
      this.#raw.close();
    } catch {
      // Closed already.
    }
  }

  #wakeReader(): void {
    const resume = this.#wake;
    this.#wake = undefined;
    resume?.();
  }
}

/** Plaintext buffered here before the TLS layer is paused (it then stops reading the socket). */
const RECEIVE_HIGH_WATER = 64 * 1024;

/** How long a graceful close may take to flush `close_notify` to a client that reads nothing. */
const GRACEFUL_CLOSE_MS = 1000;

/**
 * The accepted connection as the stream `TLSSocket` reads ciphertext from and writes it to. It
 * reads the socket only while `gate` allows (the plaintext waiting above is not too much); a
 * read held back starts when `release` is called.
 */
class SocketTransport extends Duplex {
  /** Whether reading must wait; set by the connection above. */
  gate: () => boolean = () => false;
  #raw: Deno.TcpConn;
  #buffer = new Uint8Array(16 * 1024);
  #first: Uint8Array | undefined;
  #reading = false;
  #held = false;

  constructor(raw: Deno.TcpConn, initial: Uint8Array | undefined) {
    super();
    this.#raw = raw;
    this.#first = initial !== undefined && initial.length > 0 ? initial : undefined;
  }

  /** Starts a read that the gate held back, if it is open now. */
  release(): void {
    if (this.#held && !this.gate()) {
      this.#held = false;
      this.#pull();
    }
  }

  override _read(): void {
    if (this.#first !== undefined) {
      const bytes = this.#first;
      this.#first = undefined;
      this.push(bytes);
      return;
    }
    if (this.#reading) return;
    if (this.gate()) this.#held = true;
    else this.#pull();
  }

  #pull(): void {
    this.#reading = true;
    this.#raw.read(this.#buffer).then(
      (n) => {
        this.#reading = false;
        this.push(n === null ? null : this.#buffer.slice(0, n));
      },
      (error) => this.destroy(error),
    );
  }

  override _write(chunk: Uint8Array, _encoding: string, done: (error?: Error) => void): void {
    writeAll(this.#raw, chunk).then(() => done(), done);
  }

  override _final(done: () => void): void {
    this.#raw.closeWrite().then(done, done);
  }
}

async function writeAll(raw: Deno.TcpConn, bytes: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < bytes.length) offset += await raw.write(bytes.subarray(offset));
}

function contextOf(settings: TlsSettings): tls.SecureContext {
  return tls.createSecureContext({
    cert: settings.cert,
    key: settings.key,
    ...(settings.ca === undefined ? {} : { ca: settings.ca }),
  });
}

function describe(error: Error): string {
  const text = error.message.split("\n")[0] ?? String(error);
  return text.length > 0 ? text : error.name;
}
