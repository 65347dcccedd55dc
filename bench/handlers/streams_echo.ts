/**
 * The benchmark's Web Streams echo, written as a user would write one: the readable piped into
 * the writable. It measures what the convenient contract costs over the byte-level built-in
 * echo, on the same transport (`deno task bench`, server `kernel-1w-streams`).
 *
 * Runs inside a worker, as a handler module (`--handler bench/handlers/streams_echo.ts`).
 *
 * @module
 */

import type { Connection } from "../../mod.ts";

export default function streamsEcho({ readable, writable }: Connection): Promise<void> {
  return readable.pipeTo(writable);
}
