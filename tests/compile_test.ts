/**
 * The single-file binary: `deno compile` must embed main.ts, the worker module and every module
 * they load at run time. `deno compile` needs its `denort` runtime, which cannot be downloaded
 * here; with DENORT_BIN pointing at the deno binary it still runs to the end and prints the
 * embedded-files tree, which is what the first test reads. Running the binary needs a real
 * denort: the second test runs only where one is available and says so when it is not.
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { COMPILE_FLAGS } from "../scripts/compile.ts";
import { smoke } from "../scripts/smoke.ts";

const ROOT = new URL("../", import.meta.url);
const decoder = new TextDecoder();

/** Local modules reachable from `root` through run-time (not type-only) imports. */
async function runtimeModules(root: string): Promise<Set<string>> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", root],
    cwd: ROOT,
  }).output();
  const graph = JSON.parse(decoder.decode(output.stdout)) as {
    roots: string[];
    modules: { specifier: string; dependencies?: { code?: { specifier: string } }[] }[];
  };
  const bySpecifier = new Map(graph.modules.map((m) => [m.specifier, m]));
  const seen = new Set<string>();
  const visit = (specifier: string) => {
    if (seen.has(specifier) || !specifier.startsWith("file:")) return;
    seen.add(specifier);
    for (const dep of bySpecifier.get(specifier)?.dependencies ?? []) {
      if (dep.code) visit(dep.code.specifier);
    }
  };
  for (const r of graph.roots) visit(r);
  return new Set(
    [...seen].map((s) => fileURLToPath(s).slice(fileURLToPath(ROOT).length).replaceAll("\\", "/")),
  );
}

/** Paths in the "Embedded Files" tree that `deno compile` prints; `dir/*` means all of dir. */
function embeddedPaths(output: string): string[] {
  const tree = output.slice(output.indexOf("Embedded Files"));
  const paths: string[] = [];
  const stack: string[] = [];
  for (const line of tree.split("\n").slice(3)) {
    const match = /^((?:[│ ] )*)[├└]─[─┬] (\S+)/.exec(line);
    if (!match) {
      if (line.trim() === "") break;
      continue;
    }
    const depth = match[1]!.length / 2;
    stack.length = depth;
    stack.push(match[2]!);
    paths.push(stack.join("/"));
  }
  return paths;
}

Deno.test("deno compile embeds main.ts, the worker and every module they load", async () => {
  const denort = Deno.env.get("DENORT_BIN") ?? Deno.execPath();
  const dir = await Deno.makeTempDir();
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["compile", ...COMPILE_FLAGS, "--output", `${dir}/echoserver`, "main.ts"],
    cwd: ROOT,
    env: { DENORT_BIN: denort, NO_COLOR: "1" },
  }).output();
  const printed = decoder.decode(output.stdout) + decoder.decode(output.stderr);
  assert.ok(output.success, printed);
  const embedded = embeddedPaths(printed);
  const covered = (path: string) =>
    embedded.some((e) => e === path || (e.endsWith("/*") && path.startsWith(e.slice(0, -1))));
  const needed = new Set([
    ...await runtimeModules("main.ts"),
    ...await runtimeModules("workers/connection_worker.ts"),
  ]);
  assert.ok(needed.has("workers/connection_worker.ts") && needed.has("lib/worker/runtime.ts"));
  const missing = [...needed].filter((path) => !covered(path));
  assert.deepEqual(missing, [], `not embedded:\n${printed}`);
  assert.ok(embedded.some((e) => e.includes("@logtape/logtape")), "npm dependency not embedded");
  await Deno.remove(dir, { recursive: true });
});

/** A denort that can run a compiled program: DENORT_BIN if it is not deno itself, or a cached download. */
function realDenort(): string | undefined {
  const given = Deno.env.get("DENORT_BIN");
  if (given && !given.endsWith("/deno")) return given;
  const cache = Deno.env.get("DENO_DIR") ?? `${Deno.env.get("HOME")}/.cache/deno`;
  try {
    const dir = `${cache}/dl/release/v${Deno.version.deno}`;
    for (const entry of Deno.readDirSync(dir)) if (entry.name.startsWith("denort-")) return dir;
  } catch {
    // No cache.
  }
  return undefined;
}

const denort = realDenort();
Deno.test({
  name: denort
    ? "the compiled binary serves echo"
    : "the compiled binary serves echo (SKIPPED: no denort runtime here; set DENORT_BIN to one)",
  ignore: denort === undefined,
  async fn() {
    const binary = `${await Deno.makeTempDir()}/echoserver`;
    const env: Record<string, string> = denort!.endsWith("/") || !denort!.includes("denort")
      ? {}
      : { DENORT_BIN: denort! };
    const built = await new Deno.Command(Deno.execPath(), {
      args: ["compile", ...COMPILE_FLAGS, "--output", binary, "main.ts"],
      cwd: ROOT,
      env,
    }).output();
    assert.ok(built.success, decoder.decode(built.stderr));
    await smoke(binary);
  },
});
