"""The method registry's types: an :class:`Option` (one tunable argument), a :class:`MethodInfo` (one
method: metadata beside its runner), the :class:`Attribution` result, and :func:`method`, the decorator
that registers a runner under its metadata in :data:`METHODS`."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch



class Cancelled(Exception):
    """Raise from a ``progress`` callback to stop :func:`attribute`; it propagates to the caller after
    the model has been restored."""


@dataclass(frozen=True)
class Option:
    """One tunable argument of a method: what the UI needs to build a control and what is accepted.

    ``type`` is ``"int"``, ``"float"``, ``"bool"``, ``"choice"`` or ``"tensor"`` (Python only, no
    control). ``default=None`` means "chosen from the input" as ``doc`` says. ``also`` lists further
    Python values passed through unchanged: ``"tensor"`` (e.g. a baseline image) or ``"tuple"`` (e.g. a
    Captum window shape). ``tensor_dtype`` says which tensors are accepted: ``"real"`` (finite floats or
    integers) or ``"integer"`` (ids); their shape is checked against the input when the method runs.
    ``label`` is what the option's control says ("noise level"); ``name`` (Captum's argument name) goes
    in its tooltip."""

    name: str
    type: str
    default: Any
    doc: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None
    also: tuple[str, ...] = ()
    tensor_dtype: str = "real"
    label: str = ""

    def to_json(self) -> dict[str, Any]:
        """The schema entry as plain JSON values (the UI's view of this option)."""
        return {
            "name": self.name,
            "label": self.label or self.name.replace("_", " "),
            "type": self.type,
            "default": self.default,
            "min": self.min,
            "max": self.max,
            "choices": list(self.choices) if self.choices else None,
            "also": list(self.also),
            "doc": self.doc,
        }

    def check(self, method: str, value: Any) -> Any:
        """``value`` converted to the option's type, or a ``ValueError`` saying what is expected."""
        if value is None and self.default is None:
            return None
        if isinstance(value, torch.Tensor) and ("tensor" in self.also or self.type == "tensor"):
            return self._check_tensor(method, value)
        if "tuple" in self.also and isinstance(value, (tuple, list)):
            if all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in value):
                return tuple(int(v) for v in value)
            raise self._error(method, value, "a tuple of positive ints")
        if self.type == "bool":
            if isinstance(value, bool):
                return value
            raise self._error(method, value, "True or False")
        if self.type == "choice":
            if isinstance(value, str) and value in self.choices:
                return value
            raise self._error(method, value, "one of " + ", ".join(repr(c) for c in self.choices))
        if self.type == "tensor":
            raise self._error(method, value, f"a torch.Tensor of {self.tensor_dtype} values")
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise self._error(method, value, f"{'an int' if self.type == 'int' else 'a number'}{self._range()}")
        if self.type == "int":
            if not isinstance(value, numbers.Integral):
                raise self._error(method, value, f"an int{self._range()}")
            value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise self._error(method, value, f"a finite number{self._range()}")
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            raise self._error(method, value, f"a value{self._range()}")
        return value

    def _check_tensor(self, method: str, value: torch.Tensor) -> torch.Tensor:
        """``value`` if it is a dense, non-empty tensor of the accepted dtype with finite values."""
        expected = f"a tensor of {'integer' if self.tensor_dtype == 'integer' else 'finite real'} values"
        if value.is_meta or value.layout != torch.strided or value.is_quantized or value.is_nested:
            raise self._error(method, value, f"{expected} (dense, with data)")
        if value.numel() == 0:
            raise self._error(method, value, f"{expected}, not an empty one")
        if value.dtype == torch.bool or value.is_complex():
            raise self._error(method, value, f"{expected}, not {str(value.dtype).replace('torch.', '')}")
        if self.tensor_dtype == "integer":
            if value.is_floating_point():
                raise self._error(method, value, f"{expected} (e.g. mask.long()), not {value.dtype}")
        elif value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise self._error(method, value, f"{expected}, without NaN or infinity")
        return value

    def _range(self) -> str:
        if self.min is not None and self.max is not None:
            return f" between {self.min:g} and {self.max:g}"
        if self.min is not None:
            return f" >= {self.min:g}"
        return ""

    def _error(self, method: str, value: Any, expected: str) -> ValueError:
        extra = " (or " + ", ".join(self.also) + ")" if self.also else ""
        none = ", or None for the automatic choice" if self.default is None else ""
        if isinstance(value, torch.Tensor):
            shown = f"<{str(value.dtype).replace('torch.', '')} tensor of shape {tuple(value.shape)}>"
        elif hasattr(value, "shape") and hasattr(value, "dtype"):  # a numpy array: no pages of numbers
            shown = f"<{type(value).__name__} of dtype {value.dtype} and shape {tuple(value.shape)}>"
        else:
            shown = repr(value)
        return ValueError(
            f"option {self.name}={shown} is not valid for {method!r}: expected {expected}{extra}{none}. "
            f"{self.name}: {self.doc}"
        )


REDUCTIONS: Mapping[str, str] = MappingProxyType(
    {
        "sum": "sum over channels (per-channel contributions add up, as for gradient × input)",
        "max_abs": "per pixel, the channel value of largest magnitude, sign kept (Simonyan et al.'s "
        "max over channels of |gradient| when the gradient is absolute)",
        "mean": "mean over channels (a patch or window spanning all channels gives each the same value)",
        "none": "none: a single-channel map at layer resolution, upsampled bilinearly to the input",
    }
)


@dataclass(frozen=True)
class MethodInfo:
    """A registry entry: what the method does, whether it needs a ``layer``, how channels reduce to
    ``.map`` (a key of :data:`REDUCTIONS`), whether it is slow (the UI shows progress and cancel), and
    its options."""

    name: str
    description: str
    needs_layer: bool
    reduction: str
    slow: bool
    options: tuple[Option, ...]
    backend: str
    run: Callable[[Any], tuple[torch.Tensor, torch.Tensor]] = field(repr=False, compare=False)
    hooks: bool = False

    @property
    def reduction_rule(self) -> str:
        """The reduction in words."""
        return REDUCTIONS[self.reduction]

    def defaults(self) -> dict[str, Any]:
        """Option name → default value."""
        return {o.name: o.default for o in self.options}

    def to_json(self) -> dict[str, Any]:
        """The entry as plain JSON values, for the UI."""
        return {
            "name": self.name,
            "description": self.description,
            "needs_layer": self.needs_layer,
            "reduction": self.reduction,
            "reduction_rule": self.reduction_rule,
            "slow": self.slow,
            "backend": self.backend,
            "options": [o.to_json() for o in self.options],
        }


@dataclass
class Attribution:
    """One attribution result.

    ``map``: float32 CPU tensor H×W (N×H×W for a batch) at input resolution, signed, in the method's
    own units, channels reduced by the method's rule. ``raw``: what the algorithm returned, unreduced,
    batch dimension kept (per-pixel methods: N×C×H×W; CAM methods: N×1×h×w at layer resolution).
    ``target``: the class index used (a list for a batch); ``top_prediction`` says it was the model's top
    prediction because ``target=None`` was passed. ``options``: the option values actually used, automatic
    choices filled in. ``notes``: caveats the reader of this map must know (the views show them under
    the heatmap), e.g. that guided backprop equals the gradient on a model without ``nn.ReLU``."""

    map: torch.Tensor
    raw: torch.Tensor
    method: str
    target: int | list[int]
    layer: str | None
    top_prediction: bool
    options: dict[str, Any]
    notes: list[str] = field(default_factory=list)


_REGISTRY: dict[str, MethodInfo] = {}
METHODS: Mapping[str, MethodInfo] = MappingProxyType(_REGISTRY)
"""The registry: method name → :class:`MethodInfo`, in the order the UI lists them. Read-only."""


def method(
    name: str,
    description: str,
    reduction: str,
    options: tuple[Option, ...] = (),
    *,
    needs_layer: bool = False,
    slow: bool = False,
    backend: str = "captum",
    hooks: bool | None = None,
) -> Callable[[Callable[[Any], tuple[torch.Tensor, torch.Tensor]]], Callable[[Any], tuple[torch.Tensor, torch.Tensor]]]:
    """Register the decorated runner as method ``name``: adding a method touches one place. The runner
    takes the run (:class:`cnn_widgets.attribution.engine.Run`) and returns ``(raw, per-channel map at
    input resolution)``. ``hooks``: whether it needs module hooks (default: when it needs a layer), so
    TorchScript models are refused up front."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r} for method {name!r}")

    def register(run: Callable[[Any], tuple[torch.Tensor, torch.Tensor]]) -> Callable[[Any], tuple[torch.Tensor, torch.Tensor]]:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} is registered twice")
        _REGISTRY[name] = MethodInfo(
            name, description, needs_layer, reduction, slow, tuple(options), backend, run,
            hooks=needs_layer if hooks is None else hooks,
        )
        return run

    return register
