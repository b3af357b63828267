import { test } from "node:test";
import assert from "node:assert/strict";
import { cellText, stepText } from "../src/widgets/metrics_view.js";

test("cellText: numbers, shares, pending and not-available cells", () => {
  const row = { deletion_auc: 0.123456, pointing_game: 0.75, infidelity: 0.0000123, mass_inside: null, randomization_min: 0.4, error: "" };
  assert.equal(cellText("deletion_auc", row, false), "0.123");
  assert.equal(cellText("pointing_game", row, false), "75%");
  assert.equal(cellText("infidelity", row, false), "1.23e-5");
  assert.equal(cellText("randomization", row, false), "0.400");
  assert.equal(cellText("mass_inside", row, false), "…");
  assert.equal(cellText("mass_inside", row, true), "—");
  assert.equal(cellText("mass_inside", { ...row, error: "boom" }, false), "—");
  assert.equal(cellText("deletion_auc", { deletion_auc: 0 }, true), "0.000");
});

test("stepText: intact, each step's layer and correlation, this image's or the mean", () => {
  const cascade = { layers: ["fc", "conv4"], rho: [0.5, 0.25], per_image: [[0.4, 0.2]], flagged: false };
  assert.match(stepText(undefined, 1, 0), /not computed/);
  assert.match(stepText(cascade, 0, 0), /intact model/);
  assert.equal(stepText(cascade, 1, 0), "randomised from the top down to fc · Spearman ρ = 0.400 (this image)");
  assert.equal(stepText(cascade, 2, 0), "randomised from the top down to conv4 · Spearman ρ = 0.200 (this image)");
  assert.equal(stepText(cascade, 9, 0), "randomised from the top down to conv4 · Spearman ρ = 0.200 (this image)");
  assert.equal(stepText(cascade, 1, 3), "randomised from the top down to fc · Spearman ρ = 0.500 (mean over the tested images)");
});
