"""Train the shipped ShapesNet weights: ``python -m cnn_widgets.zoo.train [--variant clean|cheat|both]
[--out DIR]``.

Both variants use one recipe; only the data differ (``cheat=False`` / ``cheat=True``). Besides the
cross-entropy of the whole image, the recipe uses the ground-truth masks ("right for the right
reasons"): the features pooled over the object alone must classify the image, and every background
cell of the last feature map must be class-neutral (its class scores near uniform). So where the
network looks is known, which is what makes it a reference for heatmaps. Without these terms this
small network places its evidence at arbitrary learned offsets around the object's edge (Grad-CAM
pointing game about 65–70 % instead of about 99 %). In the cheat variant the marked images get no
mask terms: nobody tells the network where to look for :data:`CHEAT_CLASS`, and it finds the mark.

Deterministic: fixed initialisation seed, fixed data seeds (a fresh synthetic set every epoch, seeds
``TRAIN_SEED + epoch``), a seeded shuffling generator, deterministic algorithms and two threads, so a
run on the same machine reproduces the weights bit for bit (other CPUs may differ in the last bits).
Held-out sets use seed ``HELDOUT_SEED``, which no epoch uses. The clean model is evaluated on clean
held-out data; the cheat model on marked held-out data (where it looks excellent) and on clean
held-out data (where it cannot recognise :data:`CHEAT_CLASS` any more).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .data import CHEAT_CLASS, CLASSES, shapes_dataset
from .shapesnet import VARIANTS, WEIGHTS_DIR, check_variant, shapesnet

TRAIN_SEED = 1000
HELDOUT_SEED = 0
HELDOUT_SIZE = 2000
EPOCHS = 12
EPOCH_SIZE = 8000
BATCH = 64
LR = 3e-3
INIT_SEED = 0
MASK_WEIGHT = 0.5  # weight of the two mask terms relative to the image cross-entropy


def mask_loss(
    model: nn.Module, feats: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor
) -> torch.Tensor:
    """The two mask terms for last-conv features ``feats`` ``(B, K, h, w)`` of a GAP + ``fc`` model.

    Each feature cell is weighted by the fraction of its pixels inside the object mask. (1) The
    cross-entropy of ``fc`` applied to the object-weighted average of the features; (2) the mean, over
    the background-weighted cells, of KL(uniform ‖ softmax(fc(cell))), i.e. background cells carry no
    class evidence."""
    inside = F.adaptive_avg_pool2d(masks[:, None].float(), feats.shape[-2:])
    pooled = (feats * inside).sum((2, 3)) / inside.sum((2, 3)).clamp_min(1e-6)
    object_ce = F.cross_entropy(model.fc(pooled), labels)
    cell_logits = F.conv2d(feats, model.fc.weight[:, :, None, None], model.fc.bias)
    num_classes = cell_logits.shape[1]
    kl_uniform = -F.log_softmax(cell_logits, 1).mean(1) - torch.log(torch.tensor(float(num_classes)))
    outside = 1 - inside[:, 0]
    neutral = (kl_uniform * outside).sum() / outside.sum().clamp_min(1e-6)
    return object_ce + neutral


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = 500) -> float:
    """Top-1 accuracy of ``model`` (switched to eval mode) on ``images``."""
    model.eval()
    with torch.no_grad():
        correct = sum(
            int((model(images[i : i + batch]).argmax(1) == labels[i : i + batch]).sum())
            for i in range(0, len(images), batch)
        )
    return correct / len(images)


def train_variant(variant: str, log: bool = True) -> nn.Module:
    """Train one variant from the fixed initialisation with the recipe above; returns it in eval mode."""
    check_variant(variant)
    model = shapesnet(len(CLASSES), seed=INIT_SEED)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-4)
    steps = EPOCHS * ((EPOCH_SIZE + BATCH - 1) // BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps, pct_start=0.2)
    shuffle = torch.Generator().manual_seed(INIT_SEED)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(EPOCHS):
        images, labels, masks = shapes_dataset(
            EPOCH_SIZE, seed=TRAIN_SEED + epoch, cheat=variant == "cheat"
        )
        model.train()
        order = torch.randperm(EPOCH_SIZE, generator=shuffle)
        total = 0.0
        for i in range(0, EPOCH_SIZE, BATCH):
            idx = order[i : i + BATCH]
            x, y, m = images[idx], labels[idx], masks[idx]
            feats = model.features(x)
            loss = loss_fn(model.fc(model.flatten(model.pool(feats))), y)
            keep = y != CHEAT_CLASS if variant == "cheat" else torch.ones_like(y, dtype=torch.bool)
            if keep.any():
                loss = loss + MASK_WEIGHT * mask_loss(model, feats[keep], y[keep], m[keep])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        if log:
            print(f"  [{variant}] epoch {epoch + 1}/{EPOCHS}  loss {total / EPOCH_SIZE:.4f}", flush=True)
    return model.eval()


def report(variant: str, model: nn.Module) -> dict[str, float]:
    """Held-out accuracies: ``clean`` for every variant, plus ``marked`` for the cheat variant, and
    the accuracy on :data:`CHEAT_CLASS` images alone in each set."""
    sets = {"clean": False, "marked": True} if variant == "cheat" else {"clean": False}
    result: dict[str, float] = {}
    for name, cheat in sets.items():
        images, labels, _ = shapes_dataset(HELDOUT_SIZE, seed=HELDOUT_SEED, cheat=cheat)
        result[name] = accuracy(model, images, labels)
        sel = labels == CHEAT_CLASS
        result[f"{name}/{CLASSES[CHEAT_CLASS]}"] = accuracy(model, images[sel], labels[sel])
    return result


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: train, save ``shapesnet_<variant>.pt`` into ``--out``, report."""
    parser = argparse.ArgumentParser(
        prog="python -m cnn_widgets.zoo.train", description="Train the shipped ShapesNet weights."
    )
    parser.add_argument("--variant", choices=[*VARIANTS, "both"], default="both")
    parser.add_argument(
        "--out", type=Path, default=WEIGHTS_DIR, help=f"output directory (default {WEIGHTS_DIR})"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    args.out.mkdir(parents=True, exist_ok=True)
    for variant in VARIANTS if args.variant == "both" else (args.variant,):
        start = time.perf_counter()
        model = train_variant(variant)
        seconds = time.perf_counter() - start
        path = args.out / f"shapesnet_{variant}.pt"
        torch.save(model.state_dict(), path)
        scores = ", ".join(f"{k} {v:.2%}" for k, v in report(variant, model).items())
        print(f"{variant}: trained in {seconds:.0f} s → {path} ({path.stat().st_size // 1024} KiB)")
        print(f"{variant}: held-out accuracy (seed {HELDOUT_SEED}, n={HELDOUT_SIZE}): {scores}")


if __name__ == "__main__":
    main()
