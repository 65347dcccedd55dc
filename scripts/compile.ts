/**
 * `deno task compile` / `deno task compile:all`: builds the single-file binary with
 * `deno compile`, embedding the worker module (workers are not embedded unless included) and
 * fixing the permissions the server needs (network, and reading its own modules and any
 * `--handler` module).
 *
 * Usage: deno run -A scripts/compile.ts [--all]
 *   without --all: dist/echoserver for this platform
 *   with --all:    dist/echoserver-<version>-<target>[.exe] for the five release targets,
 *                  and dist/SHA256SUMS
 *
 * @module
 */

import denoJson from "../deno.json" with { type: "json" };
import { LAUNCH_FLAGS } from "../launcher/launch_flags.ts";

/** Release targets. */
export const TARGETS = [
  "x86_64-unknown-linux-gnu",
  "aarch64-unknown-linux-gnu",
  "x86_64-apple-darwin",
  "aarch64-apple-darwin",
  "x86_64-pc-windows-msvc",
] as const;

/** `deno compile` arguments before `--output`: permissions, V8 flags and embedded modules. */
export const COMPILE_FLAGS = [
  "--allow-net",
  "--allow-read",
  ...LAUNCH_FLAGS,
  "--include",
  "workers/connection_worker.ts",
];

const ROOT = new URL("../", import.meta.url);

async function compile(output: string, target?: string): Promise<void> {
  const args = [
    "compile",
    ...COMPILE_FLAGS,
    ...(target ? ["--target", target] : []),
    "--output",
    output,
    "main.ts",
  ];
  const status = await new Deno.Command(Deno.execPath(), { args, cwd: ROOT }).spawn().status;
  if (!status.success) throw new Error(`deno ${args.join(" ")} failed (exit ${status.code})`);
}

async function sha256(path: URL): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", await Deno.readFile(path));
  return new Uint8Array(digest).toHex();
}

if (import.meta.main) {
  Deno.mkdirSync(new URL("dist/", ROOT), { recursive: true });
  if (!Deno.args.includes("--all")) {
    await compile("dist/echoserver");
  } else {
    const lines: string[] = [];
    for (const target of TARGETS) {
      const name = `echoserver-${denoJson.version}-${target}${
        target.includes("windows") ? ".exe" : ""
      }`;
      await compile(`dist/${name}`, target);
      lines.push(`${await sha256(new URL(`dist/${name}`, ROOT))}  ${name}`);
    }
    Deno.writeTextFileSync(new URL("dist/SHA256SUMS", ROOT), lines.join("\n") + "\n");
  }
}
