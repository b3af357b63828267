"""Which part of a model's output holds the class scores, and what kind of scores they are.

Real models return tuples (a detector's boxes, landmarks and class probabilities), dicts, or dense class
maps. Everything that explains a prediction takes ``output=``: an ``int`` (tuple/list index), a ``str``
(dict key) or a callable ``output(model_output) -> (N, classes)`` (e.g. pooling a dense ``(N, C, H, W)``
class map). Without it a non-tensor output is an error that lists the structure and the ``output=`` to
write. ``scores="auto"`` treats rows that are already probabilities (non-negative, summing to 1 within
1e-4) as probabilities, so a softmax head's 0.9999 is not softmaxed again into 73 %.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

import torch
from torch import nn

Output = Union[int, str, Callable[[Any], torch.Tensor], None]
SCORES: tuple[str, ...] = ("auto", "logits", "probabilities")
# modules whose output is a normalised form of the scores; ``logits=True`` bypasses them for a run
SQUASHERS: tuple[type[nn.Module], ...] = (nn.Softmax, nn.LogSoftmax, nn.Sigmoid)


def check_output(output: object) -> Output:
    """``output`` if it is ``None``, an int, a str or a callable; otherwise a ``TypeError``."""
    if output is None or callable(output) or isinstance(output, str):
        return output  # type: ignore[return-value]
    if isinstance(output, int) and not isinstance(output, bool):
        return output
    raise TypeError(
        f"output must be an int (tuple index), a str (dict key) or a callable returning (N, classes) "
        f"scores, got {type(output).__name__} {output!r}"
    )


def check_scores(scores: object) -> str:
    """``scores`` if it is one of :data:`SCORES`, else a ``ValueError``."""
    if scores not in SCORES:
        raise ValueError(f"scores must be one of {', '.join(map(repr, SCORES))}, got {scores!r}")
    return scores  # type: ignore[return-value]


def describe(value: Any, prefix: str = "output") -> list[str]:
    """One line per tensor inside ``value`` (nested tuples, lists, dicts): its path and shape."""
    if isinstance(value, torch.Tensor):
        kind = " (probability rows)" if value.ndim == 2 and is_probabilities(value) else ""
        return [f"{prefix}: Tensor{tuple(value.shape)} {str(value.dtype).replace('torch.', '')}{kind}"]
    if isinstance(value, Mapping):
        return [line for k, v in value.items() for line in describe(v, f"{prefix}[{k!r}]")]
    if isinstance(value, (tuple, list)):
        return [line for i, v in enumerate(value) for line in describe(v, f"{prefix}[{i}]")]
    return [f"{prefix}: {type(value).__name__}"]


def _suggestion(value: Any) -> str:
    """The ``output=`` a user most likely wants: the first top-level element that is (N, classes)."""
    items = value.items() if isinstance(value, Mapping) else enumerate(value) if isinstance(
        value, (tuple, list)) else ()
    for key, v in items:
        if isinstance(v, torch.Tensor) and v.ndim == 2 and v.is_floating_point():
            return f"output={key!r}"
    return "output=lambda out: ...  # return the (N, classes) scores"


def _structure_error(value: Any, problem: str) -> ValueError:
    lines = "\n  ".join(describe(value))
    return ValueError(
        f"{problem}. The model returned:\n  {lines}\nPass which part holds the class scores, e.g. "
        f"{_suggestion(value)} (an int indexes a tuple/list, a str a dict; a callable gets the whole "
        "output and returns (N, classes))"
    )


def select(model_output: Any, output: Output) -> torch.Tensor:
    """The (N, classes) class scores inside ``model_output`` as ``output`` says (see module doc)."""
    if output is None:
        value = model_output
        if not isinstance(value, torch.Tensor):
            raise _structure_error(value, f"the model returned a {type(value).__name__}, not a tensor of class scores")
    elif callable(output):
        try:
            value = output(model_output)
        except Exception as err:  # the user's selector failed on this output: say so, not "the model failed"
            raise _structure_error(
                model_output, f"the output= callable raised {type(err).__name__}: {err}"
            ) from err
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"the output= callable returned a {type(value).__name__}; it must return a tensor of (N, classes) scores")
    else:
        if isinstance(output, str) and isinstance(model_output, torch.Tensor):  # torch would index by characters
            raise _structure_error(model_output, f"output={output!r} does not select anything")
        try:
            value = model_output[output]
        except (KeyError, IndexError, TypeError):
            raise _structure_error(model_output, f"output={output!r} does not select anything") from None
        if not isinstance(value, torch.Tensor):
            raise _structure_error(model_output, f"output={output!r} selects a {type(value).__name__}, not a tensor")
    if value.ndim != 2:
        hint = (
            "; a dense (N, classes, H, W) class map needs pooling: output=lambda out: out.amax(dim=(2, 3))"
            if value.ndim == 4 else ""
        )
        if isinstance(output, int) and isinstance(model_output, torch.Tensor) and model_output.ndim == 2:
            hint = (
                f"; the model returned one tensor of shape {tuple(model_output.shape)}, which output= indexed. "
                "It runs in eval mode here (a model that returns (logits, aux) in train mode often returns "
                "only its logits in eval mode): drop output="
            )
        where = "the model returned" if output is None else f"output={output!r} gives"
        raise ValueError(
            f"explaining a prediction needs (N, classes) class scores, but {where} shape "
            f"{tuple(value.shape)}{hint}"
        )
    if not value.is_floating_point():
        where = "the model returned" if output is None else f"output={output!r} gives"
        raise ValueError(
            f"{where} class scores of dtype {str(value.dtype).replace('torch.', '')}, but integers carry no "
            "gradient; select the floating-point scores the prediction is made from (output=...)"
        )
    return value


def is_probabilities(scores: torch.Tensor) -> bool:
    """Whether every row of ``scores`` is a probability distribution (non-negative, sums to 1 ± 1e-4)."""
    s = scores.detach().double()
    return bool(s.numel() and (s >= 0).all() and ((s.sum(dim=-1) - 1).abs() <= 1e-4).all())


def as_probabilities(scores: torch.Tensor, mode: str = "auto", *, squashed: bool | None = None) -> torch.Tensor:
    """Scores (N, classes) as probabilities, in their own dtype: as given when ``mode="probabilities"``
    (or ``"auto"`` and the rows already are), softmax otherwise. A single column is a binary
    classifier's score for its positive class (a softmax over one column would always be 1): under
    ``"auto"`` it is taken as given when the model ends in a sigmoid module (``squashed``, from
    :func:`final_squasher`; when unknown, when every value is in 0‥1), else it is a logit and goes
    through the sigmoid."""
    one = scores.ndim == 2 and scores.shape[1] == 1
    s = scores.detach()
    if one and squashed is None:
        squashed = bool(s.numel() and ((s >= 0) & (s <= 1)).all())
    given = bool(squashed) if one else is_probabilities(s)
    if mode == "probabilities" or (mode == "auto" and given):
        return scores
    return torch.sigmoid(scores) if one else torch.softmax(scores, dim=1)


def probabilities(scores: torch.Tensor, mode: str = "auto", *, squashed: bool | None = None) -> torch.Tensor:
    """:func:`as_probabilities` for display: detached float32 on the CPU, non-finite values as 0."""
    return as_probabilities(scores.detach().float().cpu(), mode, squashed=squashed).nan_to_num(0.0, 0.0, 0.0)


def final_squasher(
    model: nn.Module, records: Sequence[tuple[str, torch.Tensor]], scores: torch.Tensor
) -> str | None:
    """The name of the Softmax/LogSoftmax/Sigmoid module whose recorded output *is* ``scores``
    (same storage and shape), or ``None``. ``records``: (name, output) of squasher modules in a pass."""
    for name, out in reversed(records):
        if (
            isinstance(out, torch.Tensor)
            and out.shape == scores.shape
            and out.untyped_storage().data_ptr() == scores.untyped_storage().data_ptr()
            and out.storage_offset() == scores.storage_offset()
        ):
            return name
    return None


def squasher_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's Softmax/LogSoftmax/Sigmoid modules (candidates for ``logits=True``)."""
    return [(n, m) for n, m in model.named_modules() if n and isinstance(m, SQUASHERS)]
