import assert from "node:assert/strict";
import { echo, QuitDetector } from "../lib/echo.ts";

const bytes = (s: string) => new TextEncoder().encode(s);

function scanAll(chunks: string[]): number[] {
  const detector = new QuitDetector();
  return chunks.map((chunk) => detector.scan(bytes(chunk)));
}

Deno.test("QuitDetector.scan() finds quit\\n and quit\\r\\n lines", () => {
  assert.deepEqual(scanAll(["quit\n"]), [0]);
  assert.deepEqual(scanAll(["quit\r\n"]), [0]);
  assert.deepEqual(scanAll(["hello\nquit\r\nmore"]), [6]);
  assert.deepEqual(scanAll(["a\n", "b\nquit\n"]), [-1, 2]);
});

Deno.test("QuitDetector.scan() finds a quit line split across chunks", () => {
  assert.deepEqual(scanAll(["q", "u", "i", "t", "\r", "\n"]), [-1, -1, -1, -1, -1, 0]);
  assert.deepEqual(scanAll(["hello\nqu", "it\r\n"]), [-1, 0]);
  assert.deepEqual(scanAll(["x\n", "", "quit", "\n"]), [-1, -1, -1, 0]);
});

Deno.test("QuitDetector.scan() ignores lines that only contain quit", () => {
  assert.deepEqual(scanAll(["quit"]), [-1]);
  assert.deepEqual(scanAll(["quits\n", "xquit\n", " quit\n", "quit \n", "QUIT\n"]), [
    -1,
    -1,
    -1,
    -1,
    -1,
  ]);
  assert.deepEqual(scanAll(["quit\r\r\n", "qu\nit\n"]), [-1, -1]);
  assert.deepEqual(scanAll(["abc", "quit\n"]), [-1, -1]);
});

async function runEcho(input: string[]): Promise<{ output: string; closed: boolean }> {
  const readable = ReadableStream.from(input.map(bytes));
  let output = "";
  let closed = false;
  const decoder = new TextDecoder();
  const writable = new WritableStream<Uint8Array>({
    write: (chunk) => {
      output += decoder.decode(chunk, { stream: true });
    },
    close: () => {
      closed = true;
    },
  });
  await echo({
    id: 1,
    remoteAddr: { transport: "tcp", hostname: "127.0.0.1", port: 1 },
    readable,
    writable,
    signal: new AbortController().signal,
  });
  return { output, closed };
}

Deno.test("echo() writes back every chunk and closes at the end of input", async () => {
  assert.deepEqual(await runEcho(["ab", "c\n", "d"]), { output: "abc\nd", closed: true });
});

Deno.test("echo() stops at a quit line: echoes what came before, not the line or after", async () => {
  assert.deepEqual(await runEcho(["one\ntwo\nquit\r\nthree\n", "four"]), {
    output: "one\ntwo\n",
    closed: true,
  });
  assert.deepEqual(await runEcho(["one\nqu", "it\nthree"]), { output: "one\nqu", closed: true });
});
