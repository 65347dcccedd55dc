/**
 * The tree shows which code runs on which thread and which dispatch mode it serves: nothing a
 * worker loads imports main-thread code, the two modes do not import each other, and no module
 * (nor top-level folder) imports itself back through others.
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

const ROOT = new URL("../", import.meta.url);

/** Files under a folder of the repository, recursively. */
function filesUnder(folder: string): URL[] {
  const dir = new URL(folder, ROOT);
  const found: URL[] = [];
  for (const entry of Deno.readDirSync(dir)) {
    const url = new URL(entry.name + (entry.isDirectory ? "/" : ""), dir);
    if (entry.isDirectory) found.push(...filesUnder(relative(url)));
    else if (entry.name.endsWith(".ts")) found.push(url);
  }
  return found;
}

function relative(url: URL): string {
  return fileURLToPath(url).slice(fileURLToPath(ROOT).length);
}

/** The relative imports of a module, resolved, from its source text. */
function importsOf(file: URL): URL[] {
  const source = Deno.readTextFileSync(file);
  return [
    ...source.matchAll(/^\s*(?:import|export)(?:[^;]*?from)?\s*"(\.{1,2}\/[^"]+)"/gms),
  ].map((m) => new URL(m[1]!, file));
}

/** Main-thread code: the mode-independent folder and each mode's main-thread half. */
function isMainThread(path: string): boolean {
  return path.startsWith("lib/main_thread/") || /^lib\/dispatch\/[^/]+\/main_thread\//.test(path);
}

const PROJECT = [
  "main.ts",
  "mod.ts",
  "workers/",
  "lib/",
  "launcher/",
  "tests/",
  "bench/",
  "scripts/",
]
  .flatMap((entry) => entry.endsWith("/") ? filesUnder(entry) : [new URL(entry, ROOT)]);

Deno.test("layout: code that runs in workers, or on both threads, never imports main-thread code", () => {
  const offenders: string[] = [];
  for (const file of PROJECT) {
    const from = relative(file);
    const workerSide = from.startsWith("workers/") || from.startsWith("lib/worker/") ||
      from.startsWith("lib/threads/") || from.startsWith("lib/sockets/") ||
      from === "lib/log.ts" || from.startsWith("lib/handlers/") ||
      /^lib\/dispatch\/[^/]+\/(worker\/|[^/]+\.ts$)/.test(from);
    if (!workerSide) continue;
    for (const target of importsOf(file)) {
      if (isMainThread(relative(target))) offenders.push(`${from} -> ${relative(target)}`);
    }
  }
  assert.deepEqual(offenders, []);
});

Deno.test("layout: the worker entry's whole module graph stays out of main-thread code", async () => {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", fileURLToPath(new URL("workers/connection_worker.ts", ROOT))],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(output.success, new TextDecoder().decode(output.stderr));
  const graph = JSON.parse(new TextDecoder().decode(output.stdout)) as {
    modules: { specifier: string }[];
  };
  const paths = graph.modules.map((m) => m.specifier)
    .filter((s) => s.startsWith(ROOT.href)).map((s) => relative(new URL(s)));
  // The graph really was read: it holds the runtime and both modes' worker halves.
  for (
    const needed of [
      "lib/worker/runtime.ts",
      "lib/dispatch/kernel/worker/kernel_listener.ts",
      "lib/dispatch/main/worker/relay_transport.ts",
    ]
  ) {
    assert.ok(paths.includes(needed), `${needed} missing from the graph`);
  }
  assert.deepEqual(paths.filter(isMainThread), []);
});

Deno.test("layout: one dispatch mode's code never imports the other's", () => {
  const offenders: string[] = [];
  for (const file of filesUnder("lib/dispatch/")) {
    const mode = /^lib\/dispatch\/([^/]+)\//.exec(relative(file))![1];
    for (const target of importsOf(file)) {
      const other = /^lib\/dispatch\/([^/]+)\//.exec(relative(target))?.[1];
      if (other !== undefined && other !== mode) {
        offenders.push(`${relative(file)} -> ${relative(target)}`);
      }
    }
  }
  assert.deepEqual(offenders, []);
});

Deno.test("layout: no module imports itself back through others (no import cycles)", () => {
  const graph = new Map(PROJECT.map((file) => [file.href, importsOf(file).map((u) => u.href)]));
  const cycles: string[] = [];
  const state = new Map<string, "open" | "done">();
  const path: string[] = [];
  const visit = (node: string) => {
    state.set(node, "open");
    path.push(node);
    for (const next of graph.get(node) ?? []) {
      if (state.get(next) === "open") {
        cycles.push(
          path.slice(path.indexOf(next)).concat(next).map((u) => relative(new URL(u))).join(" -> "),
        );
      } else if (!state.has(next)) visit(next);
    }
    path.pop();
    state.set(node, "done");
  };
  for (const node of graph.keys()) if (!state.has(node)) visit(node);
  assert.deepEqual(cycles, []);
});

Deno.test("layout: top-level folders do not import each other both ways", () => {
  const edges = new Set<string>();
  const top = (url: URL) => relative(url).split("/")[0]!;
  for (const file of PROJECT) {
    for (const target of importsOf(file)) {
      if (top(file) !== top(target)) edges.add(`${top(file)} -> ${top(target)}`);
    }
  }
  const both = [...edges].filter((edge) => {
    const [a, b] = edge.split(" -> ");
    return edges.has(`${b} -> ${a}`);
  });
  assert.deepEqual(both, []);
});

Deno.test("layout: the benchmark, scripts and launcher never import from tests/", () => {
  const offenders: string[] = [];
  for (const folder of ["bench/", "scripts/", "launcher/"]) {
    for (const file of filesUnder(folder)) {
      for (const target of importsOf(file)) {
        if (relative(target).startsWith("tests/")) {
          offenders.push(`${relative(file)} -> ${relative(target)}`);
        }
      }
    }
  }
  assert.deepEqual(offenders, []);
});
