import assert from "node:assert/strict";
import { echoStream, handler as echo, QuitDetector } from "./echo.ts";
import { MemorySocket } from "../../worker/memory_socket.ts";

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

async function runEcho(
  input: string[],
  handler: typeof echo | typeof echoStream = echo,
): Promise<{ output: string; closed: string | undefined }> {
  const socket = new MemorySocket(handler);
  for (const chunk of input) socket.push(chunk);
  socket.pushEnd();
  await socket.settled();
  return { output: socket.text, closed: socket.closeReason };
}

for (const [name, handler] of [["echo", echo], ["echoStream", echoStream]] as const) {
  Deno.test(`${name} writes back every chunk and ends at the end of input`, async () => {
    assert.deepEqual(await runEcho(["ab", "c\n", "d"], handler), {
      output: "abc\nd",
      closed: "done",
    });
  });

  Deno.test(`${name} stops at a quit line: echoes what came before, not the line or after`, async () => {
    assert.deepEqual(await runEcho(["one\ntwo\nquit\r\nthree\n", "four"], handler), {
      output: "one\ntwo\n",
      closed: "done",
    });
    assert.deepEqual(await runEcho(["one\nqu", "it\nthree"], handler), {
      output: "one\nqu",
      closed: "done",
    });
  });
}

Deno.test("echo writes the lent view back without waiting for the end of input", () => {
  const socket = new MemorySocket(echo);
  socket.push("no newline yet");
  assert.equal(socket.text, "no newline yet");
  assert.equal(socket.closeReason, undefined);
});
