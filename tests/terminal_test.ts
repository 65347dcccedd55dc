/**
 * The server as a person runs it: `deno task serve` in a terminal, stopped with one Ctrl-C. A real
 * pseudo-terminal (util-linux `script`) turns the typed ^C into SIGINT for the whole foreground
 * process group, the task runner included, which forwards it once more.
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { DISPATCHES, readBytes, utf8, writeAll } from "./helpers.ts";

const ROOT = fileURLToPath(new URL("../", import.meta.url));
const script = Deno.build.os === "linux"
  ? new Deno.Command("sh", { args: ["-c", "command -v script"], stdout: "piped" }).outputSync()
  : undefined;
const hasScript = script?.success === true;

for (const dispatch of DISPATCHES) {
  Deno.test({
    name: hasScript
      ? `[${dispatch}] one Ctrl-C in a terminal under deno task serve drains and logs that it stopped, no permission asked`
      : `[${dispatch}] one Ctrl-C in a terminal under deno task serve drains (SKIPPED: no util-linux script)`,
    ignore: !hasScript,
  }, async () => {
    const command =
      `exec ${Deno.execPath()} task serve --port 0 --workers 2 --dispatch ${dispatch}`;
    const child = new Deno.Command("script", {
      args: ["-qfec", command, "/dev/null"],
      cwd: ROOT,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).spawn();
    const writer = child.stdin.getWriter();
    let output = "";
    const decoder = new TextDecoder();
    const waiters: (() => void)[] = [];
    const pump = (async () => {
      for await (const chunk of child.stdout) {
        output += decoder.decode(chunk, { stream: true });
        for (const wake of waiters.splice(0)) wake();
      }
    })();
    child.stderr.cancel();
    const waitFor = async (pattern: RegExp) => {
      const deadline = Date.now() + 30_000;
      while (!pattern.test(output)) {
        if (Date.now() > deadline) throw new Error(`no ${pattern} in:\n${output}`);
        await new Promise<void>((resolve) => {
          waiters.push(resolve);
          setTimeout(resolve, 200);
        });
      }
      return pattern.exec(output)!;
    };
    try {
      // A permission prompt (only a terminal shows one) would stop start-up here.
      const port = Number((await waitFor(/listening on \S+:(\d+)|Deno requests/))[1]);
      assert.doesNotMatch(output, /Deno requests/, "the task asked for a permission");
      // A client mid-conversation: the drain must let it finish, not cut it.
      using conn = await Deno.connect({ hostname: "127.0.0.1", port });
      await writeAll(conn, utf8("before ctrl-c\n"));
      assert.equal(new TextDecoder().decode(await readBytes(conn, 14)), "before ctrl-c\n");
      await writer.write(utf8("\x03")); // the keypress
      await waitFor(/Stopped|again: exiting now/);
      assert.doesNotMatch(output, /again: exiting now/, "one keypress was taken for two");
      assert.match(output, /Stopped/);
      assert.match(output, /SIGINT received: stopping/);
    } finally {
      await writer.close().catch(() => {});
      const status = await Promise.race([
        child.status,
        new Promise<undefined>((r) => setTimeout(() => r(undefined), 10_000)),
      ]);
      if (status === undefined) child.kill("SIGKILL");
      await child.status;
      await pump;
    }
  });
}
