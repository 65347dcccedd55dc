import assert from "node:assert/strict";
import {
  BatchInbox,
  BatchRing,
  Frame,
  FrameWriter,
  HEADER_SIZE,
  postingBatches,
  readFrames,
} from "./frames.ts";
import {
  framesInRing,
  type FramesMessage,
  isFromWorker,
  isToWorker,
  type RingBatch,
} from "../../threads/messages.ts";

type Seen = [number, number, number, string | undefined];

function decode(buffer: ArrayBuffer, length: number, attached: ArrayBuffer[] = []): Seen[] {
  const seen: Seen[] = [];
  readFrames(buffer, length, attached, (kind, id, value, payload) => {
    seen.push([kind, id, value, payload && new TextDecoder().decode(payload)]);
  });
  return seen;
}

Deno.test("FrameWriter batches every frame of a turn into one send", async () => {
  const batches: Seen[][] = [];
  const writer = new FrameWriter((buffer, length) => {
    batches.push(decode(buffer, length));
  });
  writer.payload(Frame.OPEN, 1, new TextEncoder().encode('{"a":1}'));
  writer.data(1, new TextEncoder().encode("hello"));
  writer.control(Frame.ACK, 1, 131072);
  writer.control(Frame.EOF, 4294967295);
  assert.equal(batches.length, 0, "sent before the turn ended");
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.deepEqual(batches, [[
    [Frame.OPEN, 1, 7, '{"a":1}'],
    [Frame.DATA, 1, 5, "hello"],
    [Frame.ACK, 1, 131072, undefined],
    [Frame.EOF, 4294967295, 0, undefined],
  ]]);
  writer.data(2, new TextEncoder().encode("next"));
  await new Promise((resolve) => setTimeout(resolve, 10));
  assert.equal(batches.length, 2);
  assert.deepEqual(batches[1], [[Frame.DATA, 2, 4, "next"]]);
});

Deno.test("FrameWriter.data() copies, so the caller may reuse its buffer", () => {
  let sent: Seen[] = [];
  const writer = new FrameWriter((buffer, length) => {
    sent = decode(buffer, length);
  });
  const buffer = new TextEncoder().encode("abc");
  writer.data(9, buffer);
  buffer.fill(0x7a);
  writer.flush();
  assert.deepEqual(sent, [[Frame.DATA, 9, 3, "abc"]]);
  assert.equal(writer.pending, 0);
});

Deno.test("FrameWriter grows past its initial capacity without losing bytes", () => {
  let total = 0;
  let frames = 0;
  const writer = new FrameWriter((buffer, length) => {
    readFrames(buffer, length, [], (_kind, id, _value, payload) => {
      frames++;
      assert.ok(payload!.every((b) => b === id % 256));
      total += payload!.length;
    });
  });
  for (let id = 0; id < 50; id++) writer.data(id, new Uint8Array(10_000).fill(id % 256));
  assert.equal(writer.pending, 50 * (10_000 + HEADER_SIZE));
  writer.flush();
  assert.equal(frames, 50);
  assert.equal(total, 500_000);
});

Deno.test("FrameWriter.attach() moves the buffer itself, in order with copied frames", () => {
  const sent: Seen[] = [];
  let moved: ArrayBuffer[] = [];
  const writer = new FrameWriter((buffer, length, attached) => {
    moved = attached;
    sent.push(...decode(buffer, length, attached));
  });
  const big = new TextEncoder().encode("big payload!").buffer;
  writer.data(1, new TextEncoder().encode("a"));
  writer.attach(2, big, 3);
  writer.data(3, new TextEncoder().encode("c"));
  writer.flush();
  assert.deepEqual(sent, [
    [Frame.DATA, 1, 1, "a"],
    [Frame.DATA, 2, 3, "big"],
    [Frame.DATA, 3, 1, "c"],
  ]);
  assert.equal(moved[0], big);
});

Deno.test("FrameWriter.processed() follows the batches the receiver counts as done", () => {
  const writer = new FrameWriter(() => {});
  const first = writer.staging;
  writer.control(Frame.EOF, 1);
  writer.flush();
  const second = writer.staging;
  writer.control(Frame.EOF, 2);
  writer.flush();
  assert.ok(writer.processed(0), "batch 0 is the one before the first");
  assert.ok(!writer.processed(first));
  writer.processedBy(1);
  assert.ok(writer.processed(first) && !writer.processed(second), "one done is one batch");
  writer.processedBy(1);
  assert.ok(writer.processed(second));
});

Deno.test("FrameWriter.markDone() sends a batch even without frames, counting the batches done", async () => {
  const dones: [number, number][] = [];
  const writer = new FrameWriter((_buffer, length, _attached, done) => {
    dones.push([length, done]);
  });
  writer.markDone();
  writer.markDone();
  await new Promise((resolve) => setTimeout(resolve, 5));
  writer.control(Frame.END, 1);
  await new Promise((resolve) => setTimeout(resolve, 5));
  assert.deepEqual(dones, [[0, 2], [HEADER_SIZE, 0]]);
});

Deno.test("readFrames() rejects truncated and unknown frames", () => {
  const bytes = new Uint8Array(HEADER_SIZE + 2);
  bytes[0] = Frame.DATA;
  new DataView(bytes.buffer).setUint32(5, 10, true);
  const read = (length: number) => readFrames(bytes.buffer, length, [], () => {});
  assert.throws(() => read(bytes.length), /Truncated frame payload/);
  assert.throws(() => read(4), /Truncated frame header/);
  bytes[0] = Frame.DATA_REF;
  assert.throws(() => read(HEADER_SIZE), /Missing attached buffer/);
  bytes[0] = 99;
  assert.throws(() => read(HEADER_SIZE), /Unknown frame kind 99/);
});

Deno.test("isToWorker() and isFromWorker() accept only their own message types", () => {
  const frames = {
    type: "frames",
    buffer: new ArrayBuffer(0),
    length: 0,
    attached: [],
    done: 0,
  };
  assert.ok(isToWorker({ type: "init", index: 1, logLevel: "info", handler: "echo" }));
  assert.ok(isToWorker(frames));
  assert.ok(!isToWorker({ type: "ready" }));
  assert.ok(isFromWorker({ type: "ready" }));
  assert.ok(isFromWorker({ type: "failed", message: "x" }));
  assert.ok(isFromWorker(frames));
  assert.ok(!isFromWorker({ type: "init" }));
  for (const junk of [null, undefined, 1, "ready", {}]) {
    assert.ok(!isToWorker(junk) && !isFromWorker(junk));
  }
});

Deno.test("BatchRing carries batches in order across its end, and refuses one that does not fit", () => {
  const producer = new BatchRing();
  const consumer = new BatchRing(producer.shared);
  const capacity = producer.shared.byteLength - 8;
  let seed = 7;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  const queued: Uint8Array[] = [];
  let wrapsAtLeast = 0;
  for (let i = 0; i < 2000; i++) {
    const batch = new Uint8Array(Math.floor(random() * 40_000)).fill(i % 251);
    while (!producer.put(batch)) {
      // Full: the consumer takes the oldest, which must come out as it went in.
      assert.ok(queued.length > 0, `a ${batch.length}-byte batch never fits an empty ring`);
      const expected = queued.shift()!;
      const out = new Uint8Array(expected.length);
      consumer.take(out);
      assert.deepEqual(out, expected);
    }
    queued.push(batch);
    wrapsAtLeast += batch.length;
  }
  for (const expected of queued) {
    const out = new Uint8Array(expected.length);
    consumer.take(out);
    assert.deepEqual(out, expected);
  }
  assert.ok(wrapsAtLeast > 100 * capacity, "the test went round the ring many times");
  assert.ok(!producer.put(new Uint8Array(capacity + 1)), "a batch larger than the ring fit");
});

Deno.test("postingBatches: small batches go through the ring as numbers, others as transfers", () => {
  const messages: (FramesMessage | RingBatch)[] = [];
  const writer = new FrameWriter(
    postingBatches((message) => messages.push(message), new BatchRing()),
  );
  const receiver = new FrameWriter(() => {});
  const inbox = new BatchInbox();
  const received: Seen[][] = [];
  const receive = () => {
    for (const data of messages.splice(0)) {
      const message = typeof data === "number" ? framesInRing(data) : data;
      const buffer = inbox.open(message, receiver);
      received.push(decode(buffer, message.length, message.attached));
    }
  };
  writer.data(1, new TextEncoder().encode("first"));
  writer.flush();
  writer.data(2, new TextEncoder().encode("second"));
  writer.markDone();
  writer.flush();
  writer.attach(3, new TextEncoder().encode("bulk").buffer, 4);
  writer.flush();
  const kinds = messages.map((m) =>
    typeof m === "number" ? "number" : m.buffer ? "transfer" : "ring"
  );
  // The first announces the ring; a batch with an attached buffer is transferred.
  assert.deepEqual(kinds, ["ring", "number", "transfer"]);
  assert.equal(framesInRing(messages[1] as number).done, 1);
  receive();
  assert.deepEqual(received, [
    [[Frame.DATA, 1, 5, "first"]],
    [[Frame.DATA, 2, 6, "second"]],
    [[Frame.DATA, 3, 4, "bulk"]],
  ]);
});
