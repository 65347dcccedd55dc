/**
 * Finds the protocol handler a worker runs: a built-in one by name, or a module by path or URL.
 *
 * Runs inside a worker (to load the handler it will run) and on the main thread (to check the
 * `--handler` value before any worker starts).
 *
 * @module
 */

import * as chat from "./builtin/chat.ts";
import * as echo from "./builtin/echo.ts";
import {
  type Handler,
  type HandlerModule,
  isSocketHandler,
  type SocketHandler,
} from "./handler.ts";
import { HandlerOptionError } from "./handler_options.ts";
import * as hash from "./builtin/hash.ts";
import * as memcache from "./builtin/memcache/memcache.ts";

/**
 * Handlers that ship with the server, by name: modules written exactly as a user's must be
 * (each also loads with `--handler lib/handlers/builtin/<name>.ts`), so any is a template.
 */
export const BUILTIN_HANDLERS: Readonly<Record<string, HandlerModule>> = {
  echo,
  hash,
  chat,
  memcache,
};

/**
 * Resolves a `--handler` value to a module URL, or returns it as is if it names a built-in.
 *
 * A relative path is looked up from each base in turn and resolved from the first where the
 * file exists (from the first base if none has it, so that the error names the usual place).
 * The server passes the working directory, then its own folder: the second finds handlers
 * embedded in a compiled binary with `--include`.
 *
 * @param spec A built-in name, a file path or a URL.
 * @param bases Directory URLs that relative paths start from, in order; only called for a
 *   relative path.
 * @returns The built-in name or an absolute URL.
 *
 * @example
 * ```ts
 * import { resolveHandlerSpec } from "./registry.ts";
 * import assert from "node:assert/strict";
 * assert.equal(resolveHandlerSpec("echo", []), "echo");
 * assert.equal(
 *   resolveHandlerSpec("h.ts", [() => new URL("file:///srv/")]),
 *   "file:///srv/h.ts",
 * );
 * ```
 */
export function resolveHandlerSpec(spec: string, bases: (() => URL)[]): string {
  if (Object.hasOwn(BUILTIN_HANDLERS, spec)) return spec;
  if (/^[a-z][a-z0-9+.-]*:/i.test(spec) && !/^[a-z]:[\\/]/i.test(spec)) return spec;
  const candidates = bases.map((base) => new URL(spec.replaceAll("\\", "/"), base()));
  const found = candidates.find((url) => {
    try {
      return Deno.statSync(url).isFile;
    } catch {
      return false; // missing, or not readable with the permissions given
    }
  });
  return (found ?? candidates[0] ?? new URL(spec, "file:///")).href;
}

/** A handler module could not be loaded. The message is one line; `detail` has the stack. */
export class HandlerLoadError extends TypeError {
  /** The underlying error's stack, for debug logs; empty if there was none. */
  readonly detail: string;

  /**
   * @param message One line naming the module and the reason, with file, line and column.
   * @param options The underlying error as `cause`.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "HandlerLoadError";
    const cause = options?.cause;
    this.detail = cause instanceof Error ? cause.stack ?? "" : "";
  }
}

/**
 * Loads a handler module: a built-in by name, or a module whose default export (or `handler`
 * export) is the handler (a Web Streams function, or a byte-level object with a `data` method),
 * with optional `options`, `setup`, `teardown` and `handover` exports.
 *
 * @param spec A built-in name or an absolute module URL (see {@linkcode resolveHandlerSpec}).
 * @param timeoutMs How long the module may take to load (its top-level code included).
 * @returns The handler and its optional parts.
 * @throws {HandlerLoadError} If the module cannot be loaded in time, exports no handler
 *   function, or exports `options`, `setup`, `teardown` or `handover` of the wrong kind; the message names
 *   the file, line and column where Deno gives them.
 */
export async function loadHandler(spec: string, timeoutMs = 10_000): Promise<HandlerModule> {
  const builtin = BUILTIN_HANDLERS[spec];
  if (builtin !== undefined) return builtin;
  const module = await withDeadline(
    import(spec) as Promise<Record<string, unknown>>,
    timeoutMs,
    `Cannot load handler '${spec}'`,
    `it did not finish loading within ${
      timeoutMs / 1000
    } s (a top-level await that never settles?)`,
  );
  const handler = module.default ?? module.handler;
  if (typeof handler !== "function" && !isSocketHandler(handler as SocketHandler)) {
    throw new HandlerLoadError(
      `Cannot load handler '${spec}': it must export, as default or as 'handler', a function ` +
        "(Web Streams) or an object with a data(socket, bytes) method (byte-level)",
    );
  }
  for (const name of ["setup", "teardown", "handover"]) {
    if (module[name] !== undefined && typeof module[name] !== "function") {
      throw new HandlerLoadError(`Cannot load handler '${spec}': its '${name}' must be a function`);
    }
  }
  const options = module.options;
  if (
    options !== undefined &&
    (typeof options !== "object" || options === null ||
      Object.values(options).some((o) => typeof o?.description !== "string"))
  ) {
    throw new HandlerLoadError(
      `Cannot load handler '${spec}': its 'options' must map names to { description, default }`,
    );
  }
  const loaded: HandlerModule = { handler: handler as Handler | SocketHandler };
  if (options !== undefined) loaded.options = options as HandlerModule["options"] & object;
  if (module.setup !== undefined) loaded.setup = module.setup as HandlerModule["setup"] & object;
  if (module.teardown !== undefined) {
    loaded.teardown = module.teardown as HandlerModule["teardown"] & object;
  }
  if (module.handover !== undefined) {
    loaded.handover = module.handover as HandlerModule["handover"] & object;
  }
  return loaded;
}

/**
 * Waits for a step of a handler's start (its module's loading, its `setup`), or fails when it
 * takes longer than `timeoutMs` or throws.
 *
 * @param work The step.
 * @param timeoutMs Its deadline.
 * @param what The start of the error message: `Cannot load handler 'x'`.
 * @param late What the message says when the deadline passes.
 * @returns What the step gave.
 * @throws {HandlerLoadError} One line: `what`, then why (file, line and column where Deno gives
 *   them). A `HandlerLoadError` or `HandlerOptionError` from the step passes as it is.
 */
export async function withDeadline<T>(
  work: Promise<T>,
  timeoutMs: number,
  what: string,
  late: string,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new HandlerLoadError(`${what}: ${late}`)), timeoutMs);
  });
  try {
    return await Promise.race([work, deadline]);
  } catch (error) {
    if (error instanceof HandlerLoadError || error instanceof HandlerOptionError) throw error;
    throw new HandlerLoadError(`${what}: ${describeLoadError(error)}`, { cause: error });
  } finally {
    clearTimeout(timer);
  }
}

/**
 * An error from loading a module as one line: its first line, and where it happened (the first
 * `file:` or `http(s):` location in its message, where Deno puts a syntax error's, or its stack).
 *
 * @param error What `import()` threw.
 * @returns Such as `SyntaxError: Expression expected (/srv/h.ts:2:13)`.
 */
export function describeLoadError(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  const first = message.split("\n")[0] ?? message;
  const where = /\b((?:file|https?):\/\/[^\s()]+:\d+:\d+)/;
  const location = where.exec(message)?.[1] ??
    (error instanceof Error ? where.exec(error.stack ?? "")?.[1] : undefined);
  if (location === undefined) return first;
  const readable = location.startsWith("file:") ? decodeURIComponent(location.slice(7)) : location;
  return `${first} (${readable})`;
}
