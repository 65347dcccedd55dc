import assert from "node:assert/strict";
import type { Socket, SocketHandler } from "../handlers/handler.ts";
import { MemorySocket } from "./memory_socket.ts";

const utf8 = (text: string) => new TextEncoder().encode(text);

Deno.test("ServedSocket holds data while a callback's promise is pending, and keeps order", async () => {
  const seen: string[] = [];
  let release!: () => void;
  const handler: SocketHandler = {
    async data(socket, bytes) {
      const text = new TextDecoder().decode(bytes);
      seen.push(`start ${text}`);
      if (text === "a") await new Promise<void>((resolve) => release = resolve);
      seen.push(`end ${text}`);
      socket.write(bytes);
    },
  };
  const socket = new MemorySocket(handler);
  socket.push("a");
  socket.push("b");
  socket.pushEnd();
  await socket.settled();
  assert.deepEqual(seen, ["start a"], "b was delivered while a was still pending");
  release();
  await socket.settled();
  assert.deepEqual(seen, ["start a", "end a", "start b", "end b"]);
  assert.equal(socket.text, "ab");
  assert.equal(socket.closeReason, "done", "the end was not delivered after the held data");
});

Deno.test("ServedSocket closes a connection whose callback throws or rejects, as handler-error", async () => {
  const throws = new MemorySocket({
    data() {
      throw new Error("bad");
    },
  });
  throws.push("x");
  assert.equal(throws.closeReason, "handler-error");
  const rejects = new MemorySocket({ data: () => Promise.reject(new Error("bad")) });
  rejects.push("x");
  await rejects.settled();
  assert.equal(rejects.closeReason, "handler-error");
  const closes: string[] = [];
  const inOpen = new MemorySocket({
    open() {
      throw new Error("no");
    },
    data() {},
    close: (_socket, reason) => closes.push(reason),
  });
  await inOpen.settled();
  assert.equal(inOpen.closeReason, "handler-error");
  assert.deepEqual(closes, ["handler-error"], "close must be called once, last");
});

Deno.test("ServedSocket: past the high-water mark write returns false, input waits, drain follows", () => {
  const drains: number[] = [];
  const handler: SocketHandler = {
    data(socket, bytes) {
      if (!socket.write(bytes)) drains.push(-socket.buffered);
    },
    drain: (socket) => drains.push(socket.buffered),
  };
  const socket = new MemorySocket(handler, { highWater: 8 });
  socket.slow = true;
  socket.push("12345");
  socket.push("6789"); // 9 waiting: past the mark
  assert.deepEqual(drains, [-9]);
  assert.ok(!socket.accepting, "input must wait while output is over the mark");
  socket.push("held");
  assert.equal(socket.text, "123456789", "data was delivered over the high-water mark");
  socket.take();
  assert.deepEqual(drains, [-9, 0], "drain was not called");
  assert.equal(socket.text, "123456789held", "held input was not delivered after the drain");
});

Deno.test("ServedSocket: a drain that writes past the high-water mark again keeps input held", () => {
  let drains = 0;
  const handler: SocketHandler = {
    data(socket, bytes) {
      socket.write(bytes);
    },
    drain(socket) {
      drains++;
      socket.write(utf8("more than eight bytes")); // over the mark again: wait for the next drain
    },
  };
  const socket = new MemorySocket(handler, { highWater: 8 });
  socket.slow = true;
  socket.push("123456789");
  socket.push("held");
  socket.take();
  assert.equal(drains, 1);
  assert.ok(!socket.accepting, "input resumed while the drain's output was over the mark");
  assert.equal(socket.text, "123456789more than eight bytes", "held input was delivered");
  socket.slow = false;
  socket.take();
  assert.equal(drains, 2);
  assert.ok(socket.text.endsWith("held"), "held input was not delivered after the second drain");
});

Deno.test("ServedSocket closes as output-overflow past outputLimit, but not for one large write", () => {
  const handler: SocketHandler = {
    open(socket) {
      socket.outputLimit = 100;
    },
    data(socket, bytes) {
      socket.write(bytes);
    },
  };
  const large = new MemorySocket(handler, { highWater: 10 });
  large.slow = true;
  large.push(new Uint8Array(500));
  assert.equal(large.closeReason, undefined, "a single write with nothing waiting tripped the cap");
  const many = new MemorySocket({
    open(socket) {
      socket.outputLimit = 100;
    },
    data(socket) {
      for (let i = 0; i < 30; i++) socket.write(new Uint8Array(8));
    },
  }, { highWater: 10 });
  many.slow = true;
  many.push("go");
  assert.equal(many.closeReason, "output-overflow");
});

Deno.test("ServedSocket.end() stops data and ignores later writes; close() is immediate", () => {
  const handler: SocketHandler = {
    data(socket, bytes) {
      socket.write(bytes);
      socket.end();
      assert.equal(socket.write(utf8("late")), false);
    },
  };
  const socket = new MemorySocket(handler);
  socket.push("first");
  socket.push("second");
  assert.equal(socket.text, "first");
  assert.equal(socket.closeReason, "done");
  const closing = new MemorySocket({ data: (s) => s.close() });
  closing.push("x");
  assert.equal(closing.closeReason, "done");
  assert.equal(closing.accepting, false);
});

Deno.test("ServedSocket.pause() holds data until resume()", () => {
  let held: Socket | undefined;
  const socket = new MemorySocket({
    data(s, bytes) {
      s.write(bytes);
      s.pause();
      held = s;
    },
  });
  socket.push("a");
  socket.push("b");
  assert.equal(socket.text, "a");
  held!.resume();
  assert.equal(socket.text, "ab");
});

Deno.test("ServedSocket without an end callback ends the connection at the client's half-close", () => {
  const socket = new MemorySocket({ data: (s, b) => void s.write(b) });
  socket.push("x");
  socket.pushEnd();
  assert.equal(socket.closeReason, "done");
});

Deno.test("--debug-buffers: a lent view kept past its call is detached, and writing it throws", async () => {
  let kept: Uint8Array | undefined;
  const handler: SocketHandler = {
    data(socket, bytes) {
      if (kept === undefined) {
        kept = bytes;
        return;
      }
      socket.write(kept);
    },
  };
  {
    const socket = new MemorySocket(handler, { debugBuffers: true });
    socket.push("one");
    assert.equal(kept!.length, 0, "the kept view still reads bytes");
    socket.push("two");
    assert.equal(socket.closeReason, "handler-error", "writing a detached view did not fail");
    // Within the call, the view is intact; with a promise, until it settles.
    let during = "";
    const asyncSocket = new MemorySocket({
      async data(_s, bytes) {
        await new Promise((resolve) => setTimeout(resolve, 1));
        during = new TextDecoder().decode(bytes);
      },
    }, { debugBuffers: true });
    asyncSocket.push("still here");
    await asyncSocket.settled();
    assert.equal(during, "still here");
  }
  // Without the mode, the same handler reads whatever the buffer holds now: no error.
  kept = undefined;
  const plain = new MemorySocket(handler);
  plain.push("one");
  assert.equal(kept!.length, 3);
});
