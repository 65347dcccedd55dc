/**
 * The tree shows which code runs on which thread: nothing that a worker loads, and nothing in
 * the folders shared by both threads, may import main-thread code.
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

const ROOT = new URL("../", import.meta.url);
const MAIN_THREAD = new URL("lib/main_thread/", ROOT).href;

/** Files under a folder of the repository, recursively. */
function filesUnder(folder: string): URL[] {
  const dir = new URL(folder, ROOT);
  const found: URL[] = [];
  for (const entry of Deno.readDirSync(dir)) {
    const url = new URL(entry.name + (entry.isDirectory ? "/" : ""), dir);
    if (entry.isDirectory) {
      found.push(...filesUnder(fileURLToPath(url).slice(fileURLToPath(ROOT).length)));
    } else if (entry.name.endsWith(".ts")) found.push(url);
  }
  return found;
}

/** The relative imports of a module, resolved, from its source text. */
function importsOf(file: URL): URL[] {
  const source = Deno.readTextFileSync(file);
  return [
    ...source.matchAll(/^\s*(?:import|export)(?:[^;]*?from)?\s*"(\.{1,2}\/[^"]+)"/gms),
  ]
    .map((m) => new URL(m[1]!, file));
}

Deno.test("layout: lib/worker, lib/shared and lib/handlers never import lib/main_thread", () => {
  const offenders: string[] = [];
  for (const folder of ["lib/worker/", "lib/shared/", "lib/handlers/", "workers/"]) {
    for (const file of filesUnder(folder)) {
      for (const target of importsOf(file)) {
        if (target.href.startsWith(MAIN_THREAD)) offenders.push(`${file.href} -> ${target.href}`);
      }
    }
  }
  assert.deepEqual(offenders, []);
});

Deno.test("layout: the worker entry's whole module graph stays out of lib/main_thread", async () => {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", fileURLToPath(new URL("workers/connection_worker.ts", ROOT))],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(output.success, new TextDecoder().decode(output.stderr));
  const graph = JSON.parse(new TextDecoder().decode(output.stdout)) as {
    modules: { specifier: string }[];
  };
  const specifiers = graph.modules.map((m) => m.specifier);
  // The graph really was read: it holds the worker runtime and both adapters.
  for (const needed of ["lib/worker/runtime.ts", "lib/worker/socket_server.ts"]) {
    assert.ok(specifiers.some((s) => s.endsWith(needed)), `${needed} missing from the graph`);
  }
  assert.deepEqual(specifiers.filter((s) => s.startsWith(MAIN_THREAD)), []);
});

Deno.test("layout: the benchmark, scripts and launcher never import from tests/", () => {
  const tests = new URL("tests/", ROOT).href;
  const offenders: string[] = [];
  for (const folder of ["bench/", "scripts/", "launcher/"]) {
    for (const file of filesUnder(folder)) {
      for (const target of importsOf(file)) {
        if (target.href.startsWith(tests)) offenders.push(`${file.href} -> ${target.href}`);
      }
    }
  }
  assert.deepEqual(offenders, []);
});
