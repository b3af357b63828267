import { test } from "node:test";
import assert from "node:assert/strict";
import { THUMB_SIDE, captionText, stepIndex, thumbSize } from "../src/widgets/image_strip.js";

test("arrow keys, Home and End move the index and stop at the ends; other keys do nothing", () => {
  assert.equal(stepIndex(2, 5, "ArrowRight"), 3);
  assert.equal(stepIndex(2, 5, "ArrowDown"), 3);
  assert.equal(stepIndex(2, 5, "ArrowLeft"), 1);
  assert.equal(stepIndex(2, 5, "ArrowUp"), 1);
  assert.equal(stepIndex(4, 5, "ArrowRight"), 4);
  assert.equal(stepIndex(0, 5, "ArrowLeft"), 0);
  assert.equal(stepIndex(3, 5, "Home"), 0);
  assert.equal(stepIndex(1, 5, "End"), 4);
  assert.equal(stepIndex(1, 5, "a"), null);
  assert.equal(stepIndex(1, 5, "Enter"), null);
  assert.equal(stepIndex(0, 0, "ArrowRight"), null);
  assert.equal(stepIndex(9, 3, "ArrowLeft"), 1); // an out-of-range index is clamped first
});

test("captions: true and predicted labels as given, a wrong prediction flagged, pending and failed", () => {
  assert.deepEqual(captionText({ truth: "circle", predicted: "circle" }),
    { truth: "true: circle", predicted: "predicted: circle", wrong: false, error: "" });
  assert.equal(captionText({ truth: "circle", predicted: "square" }).wrong, true);
  assert.deepEqual(captionText({ truth: null, predicted: null }),
    { truth: "", predicted: "predicted: …", wrong: false, error: "" });
  assert.deepEqual(captionText(undefined), { truth: "", predicted: "predicted: …", wrong: false, error: "" });
  const failed = captionText({ truth: "a", predicted: null, error: "the model failed" });
  assert.equal(failed.predicted, "predicted: failed");
  assert.equal(failed.error, "the model failed");
  assert.equal(failed.wrong, false);
  const xss = "<img src=x onerror=pwned=1>";
  assert.equal(captionText({ truth: xss, predicted: xss }).truth, `true: ${xss}`); // text, set with textContent
});

test("thumbnails keep the aspect ratio with the longer side at THUMB_SIDE", () => {
  assert.deepEqual(thumbSize(64, 64), [THUMB_SIDE, THUMB_SIDE]);
  assert.deepEqual(thumbSize(100, 50, 72), [36, 72]);
  assert.deepEqual(thumbSize(10, 40, 72), [72, 18]);
  assert.deepEqual(thumbSize(1, 1000, 72), [72, 1]);
});
