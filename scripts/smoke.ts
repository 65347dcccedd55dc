/**
 * Starts a compiled echoserver binary on a free port, echoes a line through it, and stops it
 * with SIGTERM, expecting exit code 0. Used by the release workflow and the compile test.
 *
 * Usage: deno run --allow-run --allow-net --allow-read scripts/smoke.ts <binary>
 *
 * @module
 */

import { startProcess } from "../launcher/server_process.ts";

/**
 * Runs the smoke test.
 *
 * @param binary Path of the compiled server.
 * @throws {Error} If the server does not start, echo, or stop cleanly.
 */
export async function smoke(binary: string): Promise<void> {
  await using server = await startProcess(binary, ["--port", "0", "--workers", "2"]);
  using conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  const line = new TextEncoder().encode("smoke test\n");
  await conn.write(line);
  const echoed = new Uint8Array(line.length);
  let got = 0;
  while (got < line.length) {
    const n = await conn.read(echoed.subarray(got));
    if (n === null) break;
    got += n;
  }
  if (new TextDecoder().decode(echoed) !== "smoke test\n") {
    throw new Error(`echo mismatch: ${JSON.stringify(new TextDecoder().decode(echoed))}`);
  }
  const status = await server.stop("SIGTERM");
  if (status.code !== 0) throw new Error(`${binary} exited with ${status.code} on SIGTERM`);
}

if (import.meta.main) {
  const binary = Deno.args[0];
  if (!binary) {
    Deno.stderr.writeSync(new TextEncoder().encode("usage: smoke.ts <binary>\n"));
    Deno.exit(2);
  }
  await smoke(binary);
  Deno.stderr.writeSync(new TextEncoder().encode(`smoke: ${binary} echoed and stopped cleanly\n`));
}
