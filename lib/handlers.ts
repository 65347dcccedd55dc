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
 * @param spec A built-in name, a file path (relative to `base`) or a URL.
 * @param base Directory URL that relative paths start from (the working directory); only
 *   called for a relative path.
 * @returns The built-in name or an absolute URL.
 */
export function resolveHandlerSpec(spec: string, base: () => URL): string {
  if (Object.hasOwn(BUILTIN_HANDLERS, spec)) return spec;
  if (/^[a-z][a-z0-9+.-]*:/i.test(spec) && !/^[a-z]:[\\/]/i.test(spec)) return spec;
  return new URL(spec.replaceAll("\\", "/"), base()).href;
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
