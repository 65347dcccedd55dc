import assert from "node:assert/strict";
import { echo, nextNewline, QuitDetector } from "../lib/handlers/echo.ts";
import { handlerContext, streamConnection } from "./helpers.ts";

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

Deno.test("nextNewline() agrees with indexOf at every alignment, start and newline position", () => {
  const backing = new Uint8Array(2048).fill(0x61);
  for (const offset of [0, 1, 2, 3]) {
    for (const newlineAt of [-1, 0, 3, 255, 256, 257, 1000, 1001, 1002, 1003, 1500]) {
      const chunk = backing.subarray(offset, offset + 1503);
      chunk.fill(0x61);
      // Bytes that differ from a newline by one bit, so a sloppy word test would misfire.
      chunk[10] = 0x0b;
      chunk[600] = 0x8a;
      if (newlineAt >= 0) chunk[newlineAt] = 0x0a;
      for (const from of [0, 1, 5, 300, 1001, 1502, 1503]) {
        assert.equal(
          nextNewline(chunk, from),
          chunk.indexOf(0x0a, from),
          `offset ${offset}, newline at ${newlineAt}, from ${from}`,
        );
      }
    }
  }
});

Deno.test("QuitDetector.scan() finds a quit line deep in a long chunk", () => {
  const long = "x".repeat(5000);
  assert.deepEqual(
    scanAll([`${long}
quit
`]),
    [5001],
  );
  assert.deepEqual(
    scanAll([
      long,
      `${long}
quit
`,
    ]),
    [-1, 5001],
  );
  assert.deepEqual(
    scanAll([`${long}quit
${long}`]),
    [-1],
  );
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
  await echo(streamConnection(readable, writable), handlerContext());
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
