"""ModelSummary: the rows are layer_table's, the tree folds them by dotted names with subtree sums, the
totals add up to the model's own counts, the strip has one block per call and its arcs are exactly the
residual joins, forks and concatenations of the architecture; the model is left untouched."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import archs
from cnn_widgets import layer_table
from cnn_widgets.widgets import WidgetValueError
from cnn_widgets.widgets.model_summary import INPUT, ModelSummary, trace_calls
from cnn_widgets.zoo.resnet import resnet18_like


def summary_of(model: nn.Module, x: torch.Tensor, **kwargs) -> tuple[ModelSummary, dict]:
    s = ModelSummary(model, x, **kwargs)
    return s, json.loads(json.dumps(s._summary, allow_nan=False))  # what the browser receives


def block_index(data: dict) -> dict[tuple[str, int], int]:
    """(layer name, call number) → block index."""
    return {(data["nodes"][b["node"]]["name"], b["repeat"]): i for i, b in enumerate(data["blocks"])}


@pytest.fixture(scope="module")
def resnet() -> tuple[nn.Module, torch.Tensor, ModelSummary, dict]:
    model, x = archs.build("resnet18_like")
    s, data = summary_of(model, x)
    return model, x, s, data


def test_rows_are_layer_table_and_totals_are_the_models_own_counts(resnet) -> None:
    model, x, s, data = resnet
    assert s.rows == layer_table(model, x)
    assert s.totals["params"] == sum(p.numel() for p in model.parameters()) == 11_181_642
    assert s.totals["trainable"] == s.totals["params"]
    assert s.totals["buffers"] == sum(b.numel() for b in model.buffers())
    assert s.totals["layers"] == len(s.rows)
    # per BasicBlock: conv1 bn1 relu conv2 bn2 relu (6 calls) + 2 downsample calls in 3 blocks; stem 4; head 2
    assert s.totals["calls"] == len(data["blocks"]) == 8 * 6 + 3 * 2 + 4 + 2
    assert data["totals"] == s.totals and data["model"] == "ResNet18Like" and data["input"] == [1, 3, 64, 64]


def test_tree_groups_every_container_with_subtree_sums(resnet) -> None:
    model, _, s, data = resnet
    nodes = data["nodes"]
    modules = dict(model.named_modules())
    names = [n["name"] for n in nodes]
    containers = {n for n, m in modules.items() if n and any(True for _ in m.children())}
    assert {n["name"] for n in nodes if n["group"]} == containers
    assert set(names) == containers | {r.name for r in s.rows} and len(names) == len(set(names))
    for i, n in enumerate(nodes):
        assert n["depth"] == n["name"].count(".")
        assert n["label"] == n["name"].rsplit(".", 1)[-1]
        assert n["type"] == type(modules[n["name"]]).__name__
        subtree = names[i + 1:n["end"]]
        assert all(m.startswith(n["name"] + ".") for m in subtree), n  # a node's subtree is its own
        assert len(subtree) == sum(1 for m in names if m.startswith(n["name"] + "."))  # … and all of it
        module = modules[n["name"]]
        assert n["params"] == sum(p.numel() for p in module.parameters())
        assert n["trainable"] == sum(p.numel() for p in module.parameters() if p.requires_grad)
        assert n["buffers"] == sum(b.numel() for b in module.buffers())
    # depth-first in execution order: the block's shortcut runs before its convs, so it comes first
    start = names.index("layer2.0")
    assert names[start:start + 4] == ["layer2.0", "layer2.0.downsample", "layer2.0.downsample.0",
                                      "layer2.0.downsample.1"]
    assert names[-2:] == ["avgpool", "fc"]
    relu = nodes[names.index("layer3.1.relu")]
    assert relu["calls"] == 2 and relu["shape"] == [1, 256, 4, 4]
    assert nodes[names.index("layer3")]["shape"] == [1, 256, 4, 4]  # a container's own output


def test_arcs_are_exactly_the_residual_joins_and_the_shortcut_forks(resnet) -> None:
    _, _, _, data = resnet
    at = block_index(data)
    expected = set()
    source = at["maxpool", 0]
    for stage in range(1, 5):
        for b in range(2):
            p = f"layer{stage}.{b}."
            out = at[p + "relu", 1]
            if (p + "downsample.0", 0) in at:  # the shortcut runs first; conv1 forks from the block input
                expected |= {(source, at[p + "conv1", 0]), (at[p + "downsample.1", 0], out)}
            else:
                expected.add((source, out))  # out += identity
            source = out
    assert {tuple(j) for j in data["joins"]} == expected
    assert len(expected) == 8 + 3
    chained = [b["chained"] for b in data["blocks"]]
    breaks = {i for i, c in enumerate(chained) if not c}
    assert breaks == {at[f"layer{s}.0.conv1", 0] for s in (2, 3, 4)}, "only a fork leaves the chain"
    assert data["blocks"][at["fc", 0]]["chained"], "flatten between avgpool and fc is followed"


class UNetish(nn.Module):
    """Encoder features concatenated with upsampled decoder features (a skip connection through
    torch.cat and F.interpolate), and the input reused by the last conv."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Conv2d(3, 4, 3, padding=1)
        self.down = nn.MaxPool2d(2)
        self.mid = nn.Conv2d(4, 4, 3, padding=1)
        self.dec = nn.Conv2d(8, 4, 3, padding=1)
        self.out = nn.Conv2d(7, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.enc(x)
        m = F.interpolate(self.mid(self.down(e)), scale_factor=2.0)
        d = self.dec(torch.cat([e, m], dim=1))
        return self.out(torch.cat([d, x[:, :, :, :]], dim=1))


def test_concatenation_skips_and_reuse_of_the_input_are_arcs(untouched) -> None:
    model = archs._seeded(UNetish).eval()
    x = torch.rand(1, 3, 16, 16)
    with untouched(model):
        _, data = summary_of(model, x)
    at = block_index(data)
    assert [tuple(j) for j in data["joins"]] == [(at["enc", 0], at["dec", 0]), (INPUT, at["out", 0])]
    assert [b["chained"] for b in data["blocks"]] == [True] * 5


def test_shared_modules_get_one_block_per_call_and_one_row(untouched) -> None:
    model, x = archs.build("shared")
    with untouched(model):
        s, data = summary_of(model, x)
    calls = [(data["nodes"][b["node"]]["name"], b["repeat"]) for b in data["blocks"]]
    assert calls == [("stem", 0), ("act", 0), ("shared", 0), ("act", 1), ("shared", 1), ("act", 2), ("head", 0)]
    assert data["joins"] == []
    assert [(n["name"], n["calls"]) for n in data["nodes"]] == [("stem", 1), ("act", 3), ("shared", 2), ("head", 1)]


class Extras(nn.Module):
    """Owns a parameter itself (a learnt scale), and has a registered module that never runs."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1, 4, 1, 1))
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        self.unused = nn.Sequential(nn.Linear(4, 2))
        self.body[0].weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) * self.scale


def test_own_parameters_frozen_weights_and_modules_that_never_ran(untouched) -> None:
    model = archs._seeded(Extras).eval()
    x = torch.rand(1, 3, 8, 8)
    with untouched(model):
        s, data = summary_of(model, x)
    nodes = {n["name"]: n for n in data["nodes"]}
    assert nodes[""]["label"] == "(model)" and nodes[""]["params"] == 4 and not nodes[""]["group"]
    assert nodes["unused"]["calls"] == 0 and nodes["unused.0"]["shape"] is None
    assert [n["name"] for n in data["nodes"]][-2:] == ["unused", "unused.0"], "modules that never ran come last"
    assert s.totals["params"] == sum(p.numel() for p in model.parameters()) == 4 + 112 + 10
    assert s.totals["trainable"] == s.totals["params"] - 108
    assert len(data["blocks"]) == 2, "only leaf calls are blocks"


def test_a_bare_module_is_one_row_and_one_block_and_can_be_selected() -> None:
    conv = nn.Conv2d(3, 2, 3).eval()
    s, data = summary_of(conv, torch.rand(3, 8, 8), selected="")
    assert [n["name"] for n in data["nodes"]] == [""]
    assert len(data["blocks"]) == 1 and data["joins"] == []
    assert s.selected == ""


def test_selected_accepts_rows_groups_and_none_and_refuses_other_names(resnet) -> None:
    model, x, s, _ = resnet
    assert s.selected is None
    for name in ("layer1", "layer1.0.relu", "fc", None):
        s.selected = name
        assert s.selected == name
    with pytest.raises(WidgetValueError, match="layer1.0.conv1"):
        s.selected = "layer1.0.conv"
    with pytest.raises(ValueError, match="unknown layer"):
        ModelSummary(model, x, selected="nope")
    assert s.selected is None


def test_html_in_a_layer_name_is_data(untouched) -> None:
    model, x = archs.build("xss_named")
    with untouched(model):
        s, data = summary_of(model, x, selected=f"blocks.{archs.XSS_NAME}")
    node = next(n for n in data["nodes"] if n["name"] == f"blocks.{archs.XSS_NAME}")
    assert node["label"] == archs.XSS_NAME and s.selected == node["name"]


@pytest.mark.parametrize("arch", ["resnet18_like", "train_bn", "inplace_zoo", "nested"])
def test_the_model_is_left_untouched(arch: str, untouched) -> None:
    model, x = archs.build(arch)
    with untouched(model):
        ModelSummary(model, x)


def test_tracing_a_model_that_raises_leaves_it_untouched(untouched) -> None:
    model = archs._seeded(archs.Exploding).train()
    with untouched(model), pytest.raises(ValueError, match="boom"):
        trace_calls(model, torch.rand(1, 3, 8, 8))


def test_six_hundred_layers_make_a_flat_table_and_a_plain_chain() -> None:
    layers = []
    for i in range(200):
        layers += [nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4), nn.ReLU(inplace=i % 2 == 0)]
    model = archs._seeded(lambda: nn.Sequential(*layers)).eval()
    s, data = summary_of(model, torch.rand(1, 4, 8, 8))
    assert len(data["nodes"]) == len(data["blocks"]) == 600
    assert [n["name"] for n in data["nodes"]] == [str(i) for i in range(600)]
    assert data["joins"] == [] and all(b["chained"] for b in data["blocks"])
    assert s.totals["params"] == 200 * (20 + 8)
    assert len(json.dumps(data)) < 200_000
