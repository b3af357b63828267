"""TrainingMonitor: training is bit-identical with and without it (weights, buffers, gradients, optimizer
state and every RNG), snapshots hold the exact weights of their time and the probe's activations, the
budget thins them as documented, the chart gets every reported value (throttled), arguments are checked,
and it works on the odd architectures of archs.py without touching them."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import archs
from cnn_widgets import capture_activations, wire
from cnn_widgets.widgets import training_monitor as tm
from cnn_widgets.widgets.training_monitor import Snapshot, TrainingMonitor
from cnn_widgets.zoo import shapes_dataset, shapesnet

pytestmark = pytest.mark.usefixtures("single_thread")

IMAGES, LABELS, _ = shapes_dataset(48, seed=3)
PROBE = IMAGES[:2]
CONVS = ["features.conv1", "features.conv2", "features.conv3", "features.conv4"]


def rng_states() -> tuple[Any, ...]:
    return torch.get_rng_state(), random.getstate(), np.random.get_state()


def same_rng(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    np_a, np_b = a[2], b[2]
    return (
        torch.equal(a[0], b[0]) and a[1] == b[1] and np_a[0] == np_b[0] and np.array_equal(np_a[1], np_b[1])
        and np_a[2:] == np_b[2:]
    )


def bits(t: torch.Tensor) -> bytes:
    return t.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def train(monitored: bool, dropout: bool = False, epochs: int = 2) -> dict[str, Any]:
    """A small training run of ShapesNet whose loop draws from torch's, Python's and numpy's RNGs (shuffle,
    flips, noise; Dropout too when asked). With the monitor, a snapshot follows every second step, taken
    between backward() and the optimizer step, i.e. while the gradients are waiting to be used."""
    torch.manual_seed(123)
    random.seed(5)
    np.random.seed(7)
    model = shapesnet(seed=0)
    if dropout:
        model.fc = nn.Sequential(nn.Dropout(0.3), model.fc)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    monitor = TrainingMonitor(model, probe=PROBE, every_steps=2) if monitored else None
    n, batch = len(IMAGES), 16
    for _ in range(epochs):
        model.train()
        order = torch.randperm(n)
        for i in range(0, n, batch):
            idx = order[i : i + batch]
            x = IMAGES[idx]
            if random.random() < 0.5:
                x = x.flip(-1)
            x = x + torch.from_numpy(np.random.normal(0, 0.01, tuple(x.shape)).astype(np.float32))
            loss = F.cross_entropy(model(x), LABELS[idx])
            opt.zero_grad()
            loss.backward()
            if monitor is not None:
                monitor.step(loss, batch_accuracy=0.5)
            opt.step()
        model.eval()
        with torch.no_grad():
            accuracy = float((model(IMAGES).argmax(1) == LABELS).float().mean())
        if monitor is not None:
            monitor.epoch_end(accuracy=accuracy)
    return {"model": model, "opt": opt, "rng": rng_states(), "monitor": monitor}


@pytest.mark.parametrize("dropout", [False, True], ids=["shapesnet", "shapesnet+dropout"])
def test_training_is_bit_identical_with_and_without_the_monitor(dropout: bool) -> None:
    plain = train(False, dropout)
    watched = train(True, dropout)
    # steps 2, 4 and 6 of 3 per epoch, epoch ends at 3 and 6 (the epoch's replaces the step's at 6)
    assert [(s.epoch, s.step) for s in watched["monitor"].snapshots] == [(0, 0), (0, 2), (1, 3), (1, 4), (2, 6)]
    a, b = plain["model"], watched["model"]
    assert [m.training for m in a.modules()] == [m.training for m in b.modules()]
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert bits(p) == bits(q), f"weights of {name} differ"
        assert bits(p.grad) == bits(q.grad), f"gradient of {name} differs"
        assert p.requires_grad == q.requires_grad
    for (name, x), (_, y) in zip(a.named_buffers(), b.named_buffers()):
        assert bits(x) == bits(y), f"buffer {name} differs"
    for s, u in zip(plain["opt"].state.values(), watched["opt"].state.values()):
        assert bits(s["momentum_buffer"]) == bits(u["momentum_buffer"])
    assert same_rng(plain["rng"], watched["rng"]), "an RNG state differs"
    # and the runs did train: the control is not vacuous
    assert not torch.equal(a.features.conv1.weight, shapesnet(seed=0).features.conv1.weight)


def test_each_call_leaves_model_gradients_and_rng_untouched(untouched) -> None:
    torch.manual_seed(0)
    model = shapesnet(seed=1).train()
    F.cross_entropy(model(IMAGES[:8]), LABELS[:8]).backward()  # gradients waiting mid-step
    before = rng_states()
    with untouched(model):
        monitor = TrainingMonitor(model, probe=PROBE, every_steps=1)
    with untouched(model):
        monitor.step(torch.tensor(1.0, requires_grad=True) * 2)
    with untouched(model):
        monitor.epoch_end(accuracy=0.3)
    with untouched(model):
        monitor.snapshot(note=1)
    assert same_rng(before, rng_states())
    assert all(m.training for m in model.modules())
    assert [(s.epoch, s.step) for s in monitor.snapshots] == [(0, 0), (1, 1)]  # one per step: the last replaced


def test_filters_are_the_exact_weights_of_their_time() -> None:
    model = shapesnet(seed=0).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = TrainingMonitor(model, probe=PROBE, layers=["features.conv1", "features.conv3"])
    expected = [{n: model.get_submodule(n).weight.detach().clone() for n in monitor.layers}]
    for epoch in range(3):
        for i in range(0, 32, 16):
            loss = F.cross_entropy(model(IMAGES[i : i + 16].double()), LABELS[i : i + 16])
            opt.zero_grad()
            loss.backward()
            opt.step()
            monitor.step(loss)
        monitor.epoch_end()
        expected.append({n: model.get_submodule(n).weight.detach().clone() for n in monitor.layers})
    assert [(s.epoch, s.step) for s in monitor.snapshots] == [(0, 0), (1, 2), (2, 4), (3, 6)]
    for i, weights in enumerate(expected):
        for name, w in weights.items():
            got = monitor.filters(name, i)
            assert got.dtype == torch.float64 and torch.equal(got, w), (name, i)
    assert not torch.equal(expected[0]["features.conv1"], expected[-1]["features.conv1"])
    assert torch.equal(monitor.filters("features.conv1", -1), expected[-1]["features.conv1"])
    got = monitor.filters("features.conv1", 0)
    got.zero_()  # a copy: the monitor's own is not changed through it
    assert torch.equal(monitor.filters("features.conv1", 0), expected[0]["features.conv1"])
    assert monitor.snapshots[1].metrics == pytest.approx({"loss": monitor.history["step"]["loss"][0][1] / 2
                                                          + monitor.history["step"]["loss"][1][1] / 2})


def sent_snapshots(monitor: TrainingMonitor) -> list[tuple[dict[str, Any], list[Any]]]:
    """What a newly rendered view receives when it asks for every kept snapshot."""
    sent: list[tuple[dict[str, Any], list[Any]]] = []
    monitor._canvas.send = lambda content, buffers=None: sent.append((content, buffers))  # type: ignore[method-assign]
    monitor._canvas._handle_custom_msg({"type": "fetch", "have": []}, [])
    return sent


def test_the_browser_gets_filters_and_probe_activations_of_each_snapshot() -> None:
    model = shapesnet(seed=0)
    monitor = TrainingMonitor(model, probe=PROBE)
    assert monitor.layers == CONVS
    with torch.no_grad():
        model.features.conv1.weight.mul_(-2.0)
    monitor.snapshot()
    reference = capture_activations(model, PROBE, CONVS)
    sent = sent_snapshots(monitor)
    assert [c["id"] for c, _ in sent] == [s["id"] for s in monitor._canvas._kept] == [0, 1]
    content, buffers = sent[-1]
    parts = {(p["what"], p["layer"], p["image"]): {**p, "data": b} for p, b in zip(content["parts"], buffers)}
    assert len(parts) == len(CONVS) * 3  # filters + two probe images per layer
    for name in CONVS:
        w = torch.from_numpy(wire.decode(parts[("filters", name, -1)]))
        exact = model.get_submodule(name).weight.detach()
        step = (exact.amax((1, 2, 3)) - exact.amin((1, 2, 3))) / 255
        assert (w - exact).abs().amax((1, 2, 3)).le(step / 2 + 1e-7).all()
        for n in range(2):
            act = torch.from_numpy(wire.decode(parts[("activations", name, n)]))
            ref = wire.downsample(reference[name][n], tm.ACTIVATION_SIDE)
            assert act.shape == ref.shape
            span = (ref.amax((1, 2)) - ref.amin((1, 2))) / 255
            assert (act - ref).abs().amax((1, 2)).le(span / 2 + 1e-6).all()
    # a view that already holds snapshot 0 is sent only the other
    sent.clear()
    monitor._canvas._handle_custom_msg({"type": "fetch", "have": [0]}, [])
    assert [c["id"] for c, _ in sent] == [1]
    assert len(monitor._canvas._probe) == 2 and monitor._canvas._probe[0]["shape"] == [64, 64, 3]


def test_budget_thins_every_second_snapshot_keeping_first_and_last() -> None:
    model = shapesnet(seed=0)
    size = TrainingMonitor(model, probe=PROBE).nbytes
    monitor = TrainingMonitor(model, probe=PROBE, budget_mb=4.5 * size / 2**20)
    kept = []
    weights = {0: model.features.conv1.weight.detach().clone()}
    for epoch in range(1, 9):
        with torch.no_grad():
            model.features.conv1.weight.add_(0.01)
        weights[epoch] = model.features.conv1.weight.detach().clone()
        monitor.epoch_end(accuracy=epoch / 10)
        kept.append([s.epoch for s in monitor.snapshots])
        assert monitor.nbytes <= monitor.budget_mb * 2**20
    # 0-4 → thinned to 0 2 4; +5; +6 → 0 4 6; +7; +8 → 0 6 8
    assert kept == [[0, 1], [0, 1, 2], [0, 1, 2, 3], [0, 2, 4], [0, 2, 4, 5], [0, 4, 6], [0, 4, 6, 7], [0, 6, 8]]
    assert [s["epoch"] for s in monitor._canvas._kept] == [0, 6, 8]
    assert monitor.snapshots[-1].metrics == {"accuracy": 0.8}
    for i, epoch in enumerate([0, 6, 8]):
        assert torch.equal(monitor.filters("features.conv1", i), weights[epoch])


def test_every_counts_epochs_and_every_steps_counts_steps() -> None:
    monitor = TrainingMonitor(shapesnet(seed=0), probe=PROBE[:1], every=2, every_steps=3)
    for _ in range(3):
        for _ in range(2):
            monitor.step(1.0)
        monitor.epoch_end()
    # steps 3 and 6 (step snapshots), epoch 2 at step 4; the epoch-1 and epoch-3 ends take none
    assert [(s.epoch, s.step) for s in monitor.snapshots] == [(0, 0), (1, 3), (2, 4), (2, 6)]
    assert monitor.epoch == 3 and monitor.steps == 6


def test_chart_gets_every_value_and_names_with_loss_share_the_loss_axis() -> None:
    monitor = TrainingMonitor(shapesnet(seed=0), probe=PROBE[:1])
    losses = [2.0, 1.5, float("nan"), 1.0]
    for i, loss in enumerate(losses):
        monitor.step(torch.tensor(loss), lr=0.1 * (i + 1))
    monitor.epoch_end(accuracy=0.7, val_loss=1.2)
    lines = monitor._lines
    np.testing.assert_array_equal(lines["step", "loss"].x, [1, 2, 3, 4])
    np.testing.assert_array_equal(lines["step", "loss"].y, losses)
    np.testing.assert_allclose(lines["step", "lr"].y, [0.1, 0.2, 0.3, 0.4])
    assert list(lines["epoch", "accuracy"].x) == [4] and list(lines["epoch", "accuracy"].y) == [0.7]
    assert lines["epoch", "accuracy"].marker == "circle" and lines["step", "loss"].marker is None
    loss_scale = lines["step", "loss"].scales["y"]
    assert lines["epoch", "val_loss"].scales["y"] is loss_scale
    assert lines["epoch", "accuracy"].scales["y"] is not loss_scale
    assert set(monitor._figure.marks) == set(lines.values())
    assert monitor.history["epoch"] == {"accuracy": [(4, 0.7)], "val_loss": [(4, 1.2)]}
    # Jupyter sends JSON without NaN: a diverged loss reaches the browser as text
    assert math.isnan(monitor.snapshots[-1].metrics["loss"])
    assert monitor._canvas._kept[-1]["metrics"] == {"accuracy": 0.7, "val_loss": 1.2, "loss": "nan"}
    json.dumps(monitor._canvas._kept, allow_nan=False)


def test_chart_updates_are_throttled_and_flush_sends_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(tm, "_now", lambda: clock[0])
    monitor = TrainingMonitor(shapesnet(seed=0), probe=PROBE[:1])
    line = monitor._lines["step", "loss"]
    pushes: list[int] = []
    line.observe(lambda change: pushes.append(len(change["new"])), "y")
    monitor.flush()  # the throttle counts from here
    for i in range(200):
        monitor.step(1.0 / (i + 1))
    assert len(pushes) <= 2, pushes  # the frozen clock allows none (one may come from the real timer)
    clock[0] += 0.2
    monitor.step(0.5)
    assert pushes[-1] == 201  # the interval passed: this step pushed everything
    for _ in range(10):
        monitor.step(0.25)
    monitor.flush()
    assert pushes[-1] == 211 and len(line.y) == 211


def test_long_histories_are_plotted_as_means_of_runs() -> None:
    xs = list(range(1, 10_002))
    ys = [float(i % 7) for i in xs]
    x, y = tm._decimated(xs, ys)
    assert len(x) <= tm.MAX_POINTS
    run = len(xs) // (len(x) - 1) if len(xs) % (len(x) - 1) else len(xs) // len(x)
    assert x[0] == np.mean(xs[:run]) and y[0] == np.mean(ys[:run])
    assert x[-1] <= xs[-1] and abs(np.mean(y) - np.mean(ys)) < 0.05


def test_callback_reports_steps_and_epoch_ends() -> None:
    monitor = TrainingMonitor(shapesnet(seed=0), probe=PROBE[:1])
    cb = monitor.callback
    cb(1.0)
    cb(loss=0.5, lr=0.1)
    cb(0.25, epoch_end=True, accuracy=0.9)
    cb(epoch_end=True, accuracy=0.95)
    assert [v for _, v in monitor.history["step"]["loss"]] == [1.0, 0.5, 0.25]
    assert monitor.history["epoch"]["accuracy"] == [(3, 0.9), (3, 0.95)]
    assert monitor.epoch == 2
    with pytest.raises(ValueError, match="needs its loss"):
        cb(accuracy=1.0)
    with pytest.raises(TypeError, match="epoch_end"):
        cb(1.0, epoch_end="yes")


def test_errors_are_clear() -> None:
    model = shapesnet(seed=0)
    with pytest.raises(ValueError, match=r"unknown conv layer 'features\.conv9'.*features\.conv"):
        TrainingMonitor(model, probe=PROBE, layers="features.conv9")
    with pytest.raises(ValueError, match="'fc' is a Linear, not a Conv2d"):
        TrainingMonitor(model, probe=PROBE, layers=["fc"])
    with pytest.raises(ValueError, match="layers is empty"):
        TrainingMonitor(model, probe=PROBE, layers=[])
    with pytest.raises(TypeError, match="layers must be"):
        TrainingMonitor(model, probe=PROBE, layers=model.features.conv1)
    with pytest.raises(ValueError, match="first convolution expects 3 input channels"):
        TrainingMonitor(model, probe=torch.rand(1, 1, 64, 64))
    with pytest.raises(ValueError, match=r"failed on an input of shape \(1, 3, 2, 2\)"):
        TrainingMonitor(model, probe=torch.rand(3, 2, 2))
    with pytest.raises(ValueError, match="probe holds 9 images"):
        TrainingMonitor(model, probe=torch.rand(9, 3, 64, 64))
    with pytest.raises(ValueError, match=r"TrainingMonitor's probe needs images of one size"):
        TrainingMonitor(model, probe=[PROBE[0], torch.rand(3, 32, 32)])
    with pytest.raises(ValueError, match="every must be an int >= 1"):
        TrainingMonitor(model, probe=PROBE, every=0)
    with pytest.raises(ValueError, match="every_steps must be"):
        TrainingMonitor(model, probe=PROBE, every_steps=1.5)
    with pytest.raises(ValueError, match="budget_mb must be a positive"):
        TrainingMonitor(model, probe=PROBE, budget_mb=0)
    with pytest.raises(ValueError, match="holds fewer than two snapshots"):
        TrainingMonitor(model, probe=PROBE, budget_mb=0.1)
    with pytest.raises(ValueError, match="at least one nn.Conv2d"):
        TrainingMonitor(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), probe=torch.rand(3, 2, 2))
    with pytest.raises(TypeError, match="TorchScript"):
        TrainingMonitor(torch.jit.script(shapesnet(seed=0)), probe=PROBE)
    monitor = TrainingMonitor(model, probe=PROBE[:1])
    with pytest.raises(ValueError, match=r"unknown monitored layer 'conv1'; did you mean 'features\.conv1'"):
        monitor.filters("conv1", 0)
    with pytest.raises(ValueError, match="snapshot index 1 is out of range: 1 snapshots"):
        monitor.filters("features.conv1", 1)
    with pytest.raises(TypeError, match="loss must be a number"):
        monitor.step("high")
    with pytest.raises(TypeError, match=r"loss must be a number or a one-element tensor, got a tensor of shape \(2,\)"):
        monitor.step(torch.ones(2))
    with pytest.raises(TypeError, match="metric 'acc'"):
        monitor.epoch_end(acc=[1, 2])
    assert monitor.steps == 0 and monitor.epoch == 0  # refused calls count nothing


@pytest.mark.parametrize("name", sorted(archs.ARCHS))
def test_odd_architectures(name: str, untouched) -> None:
    model, x = archs.build(name)
    training = [m.training for m in model.modules()]
    with untouched(model):
        monitor = TrainingMonitor(model, probe=x)
        monitor.step(1.0)
        monitor.epoch_end(score=0.5)
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert monitor.layers == tm.default_layers(convs) and monitor.layers[0] == convs[0]
    assert [m.training for m in model.modules()] == training
    assert len(monitor.snapshots) == 2
    for layer in monitor.layers:
        assert torch.equal(monitor.filters(layer, -1), model.get_submodule(layer).weight)
    # the activations sent are the conv's output (its first call when it runs twice)
    reference = capture_activations(model, x, monitor.layers)
    content, buffers = sent_snapshots(monitor)[-1]
    for part, data in zip(content["parts"], buffers):
        if part["what"] == "activations":
            ref = wire.downsample(reference[part["layer"]][0], tm.ACTIVATION_SIDE)
            got = torch.from_numpy(wire.decode({**part, "data": data}))
            assert torch.allclose(got, ref, atol=float(ref.max() - ref.min()) / 500 + 1e-6), part["layer"]


def test_default_layers_are_the_first_and_a_spread_to_the_last() -> None:
    names = [f"c{i}" for i in range(20)]
    assert tm.default_layers(names) == ["c0", "c6", "c13", "c19"]
    assert tm.default_layers(names[:3]) == names[:3]
    model, x = archs.build("resnet18_like")
    monitor = TrainingMonitor(model, probe=x)
    assert monitor.layers[0] == "conv1" and len(monitor.layers) == 4
    assert monitor.layers[-1] == [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)][-1]


def test_font_scale_reaches_the_canvas_and_the_chart() -> None:
    monitor = TrainingMonitor(shapesnet(seed=0), probe=PROBE[:1], font_scale=1.5)
    assert monitor._canvas.font_scale == 1.5
    assert monitor._figure.axes[0].tick_style["font-size"] == "18px"
    assert monitor._figure.layout.width == "960px"
    monitor.font_scale = 1.0
    assert monitor._canvas.font_scale == 1.0 and monitor._figure.legend_text["font-size"] == "12px"


def test_snapshot_records() -> None:
    monitor = TrainingMonitor(shapesnet(seed=0), probe=PROBE[:1])
    monitor.step(torch.tensor(0.5))
    info = monitor.snapshot(note=np.float32(2.0))
    assert info == Snapshot(0, 1, {"note": 2.0}) == monitor.snapshots[-1]
    monitor.close()


def test_the_probe_may_be_a_list_of_images_as_elsewhere() -> None:
    """A list of images (as the Explorer, compare and Metrics take them) is the same probe as a batch."""
    from PIL import Image

    pictures = [Image.fromarray((p.permute(1, 2, 0) * 255).round().byte().numpy()) for p in PROBE]
    listed = TrainingMonitor(shapesnet(seed=0), probe=pictures)
    batched = TrainingMonitor(shapesnet(seed=0), probe=torch.stack([torch.from_numpy(np.array(p)).permute(2, 0, 1)
                                                                     for p in pictures]))
    assert torch.equal(listed._batch, batched._batch) and listed._batch.shape[0] == len(PROBE)
