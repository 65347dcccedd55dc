/**
 * Handler options (`--handler-option name=value`): helpers to declare the common kinds, and the
 * one function that checks a command line's options against what a handler declares.
 *
 * Runs on the main thread (to refuse a bad option for a built-in handler before any worker
 * starts, and to list them in `--help`) and inside workers (for handler modules, whose options
 * are known only once loaded).
 *
 * @module
 */

import type { HandlerOption } from "./handler.ts";

/** A `--handler-option` the handler does not take, or a value it refuses. */
export class HandlerOptionError extends TypeError {
  /**
   * Creates the error.
   *
   * @param message One line naming the handler, the option and what is wrong.
   * @param options The parser's error as `cause`.
   */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "HandlerOptionError";
  }
}

/**
 * Declares an integer option.
 *
 * @param description One line for `--help`.
 * @param fallback The default.
 * @param range Smallest and largest value accepted.
 * @returns The option.
 *
 * @example
 * ```ts
 * import { integerOption } from "./handler_options.ts";
 * import assert from "node:assert/strict";
 * const option = integerOption("most lines kept", 100, { min: 1, max: 1000 });
 * assert.equal(option.parse!("42"), 42);
 * assert.throws(() => option.parse!("0"), RangeError);
 * ```
 */
export function integerOption(
  description: string,
  fallback: number,
  range: { min: number; max: number },
): HandlerOption {
  return {
    description: `${description} (${range.min} to ${range.max})`,
    default: String(fallback),
    parse(value) {
      const n = /^\d+$/.test(value.trim()) ? Number(value) : NaN;
      if (!Number.isSafeInteger(n) || n < range.min || n > range.max) {
        throw new RangeError(`must be an integer from ${range.min} to ${range.max}`);
      }
      return n;
    },
  };
}

const UNITS: Record<string, number> = { "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };

/**
 * Declares a size in bytes, written as a number with an optional `k`, `m` or `g` suffix
 * (powers of 1024): `1m` is 1,048,576.
 *
 * @param description One line for `--help`.
 * @param fallback The default, as typed (`"64m"`).
 * @param range Smallest and largest size accepted, in bytes.
 * @returns The option; its value is a number of bytes.
 *
 * @example
 * ```ts
 * import { sizeOption } from "./handler_options.ts";
 * import assert from "node:assert/strict";
 * const option = sizeOption("cache size", "64m", { min: 1024, max: 2 ** 40 });
 * assert.equal(option.parse!("2k"), 2048);
 * assert.throws(() => option.parse!("lots"), RangeError);
 * ```
 */
export function sizeOption(
  description: string,
  fallback: string,
  range: { min: number; max: number },
): HandlerOption {
  return {
    description,
    default: fallback,
    parse(value) {
      const match = /^\s*(\d+)\s*([kmg]?)i?b?\s*$/i.exec(value);
      const n = match === null ? NaN : Number(match[1]) * UNITS[match[2]!.toLowerCase()]!;
      if (!Number.isSafeInteger(n) || n < range.min || n > range.max) {
        throw new RangeError(
          `must be a size from ${range.min} to ${range.max} bytes, such as 512k or 64m`,
        );
      }
      return n;
    },
  };
}

/**
 * Checks `--handler-option` values against the options a handler declares, and fills in the
 * defaults of the rest.
 *
 * @param handler The handler's name, for messages.
 * @param declared What the handler accepts (none: it takes no options).
 * @param given Values from the command line, by name.
 * @returns Every declared option's value, parsed.
 * @throws {HandlerOptionError} For an option it does not declare, or a value it refuses.
 *
 * @example
 * ```ts
 * import { integerOption, parseHandlerOptions } from "./handler_options.ts";
 * import assert from "node:assert/strict";
 * const declared = { lines: integerOption("most lines", 10, { min: 1, max: 99 }) };
 * assert.deepEqual(parseHandlerOptions("demo", declared, {}), { lines: 10 });
 * assert.deepEqual(parseHandlerOptions("demo", declared, { lines: "5" }), { lines: 5 });
 * ```
 */
export function parseHandlerOptions(
  handler: string,
  declared: Readonly<Record<string, HandlerOption>> | undefined,
  given: Readonly<Record<string, string>>,
): Record<string, unknown> {
  const names = Object.keys(declared ?? {});
  for (const name of Object.keys(given)) {
    if (declared !== undefined && Object.hasOwn(declared, name)) continue;
    throw new HandlerOptionError(
      names.length === 0
        ? `Handler '${handler}' takes no options, got '--handler-option ${name}=...'`
        : `Handler '${handler}' has no option '${name}'; it takes ${names.join(", ")}`,
    );
  }
  const values: Record<string, unknown> = {};
  for (const [name, option] of Object.entries(declared ?? {})) {
    const text = given[name] ?? option.default;
    try {
      values[name] = option.parse === undefined ? text : option.parse(text);
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      throw new HandlerOptionError(
        `Handler '${handler}' option '${name}' ${reason.split("\n")[0]}, got "${text}"`,
        { cause: error },
      );
    }
  }
  return values;
}

/**
 * The `--help` lines that list a handler's options, wrapped to fit 92 columns.
 *
 * @param declared The handler's options.
 * @returns Lines, indented; none if it takes no options.
 */
export function describeHandlerOptions(
  declared: Readonly<Record<string, HandlerOption>> | undefined,
): string[] {
  const lines: string[] = [];
  for (const [name, option] of Object.entries(declared ?? {})) {
    let line = `    ${name}=<value>`.padEnd(28);
    if (line.length > 28) {
      lines.push(line.trimEnd());
      line = " ".repeat(28);
    }
    for (const word of `${option.description}; default ${option.default}`.split(" ")) {
      if (line.length + 1 + word.length > 92 && line.trim() !== "") {
        lines.push(line.trimEnd());
        line = " ".repeat(28);
      }
      line += (line.endsWith(" ") ? "" : " ") + word;
    }
    lines.push(line.trimEnd());
  }
  return lines;
}
