/**
 * Finds the protocol handler a worker runs: a built-in one by name, or a module by path or URL.
 *
 * Runs inside a worker (to load the handler it will run) and on the main thread (to check the
 * `--handler` value before any worker starts).
 *
 * @module
 */

import { echo } from "./echo.ts";
import type { Handler } from "./handler.ts";
import { hash } from "./hash.ts";

/** Handlers that ship with the server, by name. */
export const BUILTIN_HANDLERS: Readonly<Record<string, Handler>> = { echo, hash };

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

/**
 * Loads a handler: a built-in by name, or the default export (or `handler` export) of a module.
 *
 * @param spec A built-in name or an absolute module URL (see {@linkcode resolveHandlerSpec}).
 * @returns The handler function.
 * @throws {TypeError} If the module cannot be loaded or exports no handler function.
 */
export async function loadHandler(spec: string): Promise<Handler> {
  const builtin = BUILTIN_HANDLERS[spec];
  if (builtin !== undefined) return builtin;
  let module: Record<string, unknown>;
  try {
    module = await import(spec);
  } catch (error) {
    const reason = (error as Error)?.message?.split("\n")[0] ?? String(error);
    throw new TypeError(`Cannot load handler '${spec}': ${reason}`, { cause: error });
  }
  const handler = module.default ?? module.handler;
  if (typeof handler !== "function") {
    throw new TypeError(
      `Cannot load handler '${spec}': it must export a function as default or as 'handler'`,
    );
  }
  return handler as Handler;
}
