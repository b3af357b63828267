import { test } from "node:test";
import assert from "node:assert/strict";
import { SnapshotStore, nextIndex, snapshotText } from "../src/widgets/training_monitor.js";

const meta = (id, step, epoch = 0, metrics = {}) => ({ id, step, epoch, metrics });

test("snapshotText: epoch, step, then loss and the other metrics by name", () => {
  assert.equal(snapshotText(meta(3, 40, 2, { zeta: 1, loss: 0.51234, accuracy: 0.9 })),
    "epoch 2 · step 40 · loss 0.5123 · accuracy 0.9 · zeta 1");
  assert.equal(snapshotText(meta(0, 0)), "epoch 0 · step 0");
  assert.equal(snapshotText(meta(1, 5, 1, { loss: "nan" })), "epoch 1 · step 5 · loss nan");
});

test("nextIndex follows the newest, keeps the shown one, else the nearest in steps", () => {
  const kept = [meta(0, 0), meta(2, 20), meta(4, 40), meta(5, 50)];
  assert.equal(nextIndex([], null, true), -1);
  assert.equal(nextIndex(kept, null, false), 3, "nothing shown yet: the newest");
  assert.equal(nextIndex(kept, meta(2, 20), true), 3, "following: the newest");
  assert.equal(nextIndex(kept, meta(2, 20), false), 1, "still kept: the same snapshot");
  assert.equal(nextIndex(kept, meta(3, 31), false), 2, "dropped: the nearest in steps (40 is 9 away, 20 is 11)");
  assert.equal(nextIndex(kept, meta(1, 10), false), 0, "a tie takes the earlier");
});

test("SnapshotStore files parts with their buffers and forgets dropped snapshots", () => {
  const store = new SnapshotStore();
  const parts = [
    { what: "filters", layer: "conv1", image: -1, shape: [1] },
    { what: "activations", layer: "conv1", image: 0, shape: [2] },
    { what: "activations", layer: "<img src=x>", image: 1, shape: [3] },
  ];
  assert.equal(store.receive({ type: "other" }, []), false);
  assert.equal(store.receive({ type: "snapshot", id: 7, parts }, ["a", "b", "c"]), true);
  assert.equal(store.receive({ type: "snapshot", id: 9, parts: parts.slice(0, 1) }, ["d"]), true);
  assert.equal(store.part(7, "activations", "conv1", 0).data, "b");
  assert.deepEqual(store.part(7, "activations", "<img src=x>", 1).shape, [3]);
  assert.equal(store.part(7, "activations", "conv1", 1), undefined);
  assert.equal(store.part(9, "filters", "conv1", -1).data, "d");
  assert.deepEqual(store.ids().sort(), [7, 9]);
  store.keepOnly([9]);
  assert.equal(store.has(7), false);
  assert.equal(store.has(9), true);
});
