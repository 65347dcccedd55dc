/**
 * Starts a compiled echoserver binary on a free port, echoes a line through it, and stops it
 * with SIGTERM, expecting exit code 0. Used by the release workflow and the compile test.
 *
 * Usage: deno run --allow-run --allow-net --allow-read scripts/smoke.ts <binary>
 *
 * @module
 */

/**
 * Runs the smoke test.
 *
 * @param binary Path of the compiled server.
 * @throws {Error} If the server does not start, echo, or stop cleanly.
 */
export async function smoke(binary: string): Promise<void> {
  const child = new Deno.Command(binary, {
    args: ["--port", "0", "--workers", "2"],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let log = "";
  try {
    while (!/listening on \S+:(\d+)/.test(log)) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`${binary} exited before listening:\n${log}`);
      log += value;
    }
    const port = Number(/listening on \S+:(\d+)/.exec(log)![1]);
    using conn = await Deno.connect({ hostname: "127.0.0.1", port });
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
  } finally {
    child.kill("SIGTERM");
    (async () => {
      while (!(await reader.read()).done) { /* drain */ }
    })();
  }
  const status = await child.status;
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
