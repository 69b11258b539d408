"""``statespaces export``: a trained run's model as an ONNX file or a ``torch.export`` program, checked on its data.

:func:`export_checkpoint` puts :mod:`statespaces.export` (the streaming step of a model, in real arithmetic) together
with a run folder of ``statespaces train``: it loads the run's ``best/`` (or any checkpoint folder), exports the
model and checks the written file against the model on the run's own test data, so that a file that does not
reproduce the model is never handed over silently. The streaming step is the recurrent view of the model (thesis
§2.3.2, §7.4.2: constant time and memory per step), frozen in real arithmetic by :mod:`statespaces.export`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Union

import torch
from torch.utils.data import default_collate

from .._checks import check_int, file_in_the_way
from ..export import export_onnx, export_step, streaming_model
from ..layers.base import check_rate
from .evaluation import load_for_evaluation
from .loop import checkpoint_dir

Tensor = torch.Tensor

__all__ = ["export_checkpoint", "EXPORT_FORMATS"]

#: The formats of :func:`export_checkpoint`, by the output file's suffix.
EXPORT_FORMATS = {".onnx": "an ONNX file (run it with onnxruntime)",
                  ".pt2": "a torch.export program (torch.export.load(path).module())"}


def _save_program(program, out: Path) -> None:
    """``torch.export.save`` with an unwritable path reported as such (torch raised a RuntimeError from its zip
    writer: "[enforce fail at inline_container.cc] ... open file failed")."""
    try:
        torch.export.save(program, str(out))
    except RuntimeError as e:
        if "open file failed" not in str(e) and "file_name" not in str(e):
            raise
        raise OSError(f"could not write {out}: the path is not writable; choose another OUT.pt2") from None


def export_checkpoint(path: Union[str, Path], out: Union[str, Path], rate: float = 1.0,
                      check_steps: int = 64, data_name: Optional[str] = None) -> dict:
    """Export the model of a ``statespaces train`` checkpoint (a run folder stands for its ``best/``) to ``out``
    (``statespaces export RUN OUT``), and check the file against the model on the run's own test data.

    * a language model (a run of task ``lm``): its streaming step, :func:`export_onnx` for ``out.onnx``,
      :func:`export_step` saved with ``torch.export.save`` for ``out.pt2``; checked by stepping the file through
      the first ``check_steps`` steps of the first test sequence (whole frames) against the model's convolution view;
    * a classifier or regressor (pooled over the whole sequence, so no step to stream): its forward as a
      ``torch.export`` program with a dynamic batch (``out.pt2``; inputs (B, L, C) of the run's padded test length
      L, and the lengths (B,) for variable-length data); checked on the first test examples. ONNX is refused for
      it (its kernels use complex arithmetic).

    ``data_name``: the test data to check on, when the run's data has moved (as ``statespaces evaluate
    --data.name``).

    Returns ``{"checkpoint", "out", "kind", "format", "max_abs_diff", "checked_on"}``; ``max_abs_diff`` is None
    when the check could not run (an ONNX file without onnxruntime installed).
    """
    out = Path(out)
    suffix = out.suffix
    if suffix not in EXPORT_FORMATS:
        raise ValueError(f"{out}: give a file ending in " + " or ".join(
            f"{k} ({v})" for k, v in EXPORT_FORMATS.items()) + " (in lower case: torch.export.load reads .pt2 only)")
    if out.exists() and out.is_dir():
        raise ValueError(f"{out} is a folder; give the file to write")
    blocker = file_in_the_way(out)
    if blocker is not None:
        raise ValueError(f"{out}: {blocker} is a file, so no folder can hold the output there")
    rate = check_rate(rate)
    check_steps = check_int("check_steps", check_steps, 1)
    folder = checkpoint_dir(path)
    model, _, meta, data = load_for_evaluation(folder, data_name)
    model = model.eval()
    with torch.no_grad():
        if meta.get("task") == "lm":
            sm = streaming_model(model, rate)
            streams = int(getattr(model, "n_streams", 1))
            x = data.test.tensors[0]
            T = max(1, min(check_steps, int(data.test.tensors[2][0])) // sm.frame) * sm.frame
            tokens = x[:1, :T]
            if tokens.shape[1] < T:
                raise ValueError(f"the first test sequence has fewer than {T} steps (one frame) to check on")
            if streams == 1:
                tokens = tokens[..., 0]
            # the convolution view at the training rate; at another rate, the eager streaming step at that rate
            reference = model(tokens) if rate == 1.0 else _stepped(sm, tokens)
            out.parent.mkdir(parents=True, exist_ok=True)
            if suffix == ".onnx":
                export_onnx(model, out, rate=rate)
                step = _onnx_runner(out)
            else:
                _save_program(export_step(model, rate=rate), out)
                step = torch.export.load(str(out)).module()
            diff = None if step is None else float((_stepped(sm, tokens, step) - reference).abs().max())
            n_state = len(sm.initial_state(1))
            kind = (f"streaming step of a language model (inputs: tokens (1, {sm.frame}"
                    f"{', ' + str(streams) if streams > 1 else ''}) and {n_state} state tensors, "
                    "batch size 1; outputs the logits and the next state)")
            checked = (f"the first {T} steps of test sequence 0, against the model's "
                       + ("convolution view" if rate == 1.0 else f"eager streaming step at rate {rate}"))
        else:
            if rate != 1.0:
                raise ValueError(f"--rate {rate}: a {meta.get('task')} model is exported as its forward at the rate it "
                                 "was trained at; the rate applies to a language model's streaming step")
            if suffix == ".onnx":
                raise TypeError(f"{folder} holds a {meta.get('task')} model, which pools over the whole "
                                "sequence (no step to stream) and whose kernels use complex arithmetic, which ONNX "
                                "lacks; export it as a torch.export program instead: OUT.pt2")
            # the inputs the model is trained on (a token dataset yields one-hot floats per example, not its ids)
            items = default_collate([data.test[i] for i in range(min(len(data.test), 8))])
            inputs = (items[0], items[2]) if len(items) > 2 else (items[0],)
            batch = torch.export.Dim("batch", min=1)
            program = torch.export.export(model, tuple(t[:2] for t in inputs),
                                          dynamic_shapes=tuple({0: batch} for _ in inputs))
            out.parent.mkdir(parents=True, exist_ok=True)
            _save_program(program, out)
            loaded = torch.export.load(str(out)).module()
            diff = float((loaded(*inputs) - model(*inputs)).abs().max())
            takes = f"x (B, {inputs[0].shape[1]}, {inputs[0].shape[2]})" + (" and lengths (B,)" if len(inputs) == 2
                                                                             else "")
            kind = f"forward of a {meta.get('task')} model (inputs {takes}, any batch size B)"
            checked = f"{len(inputs[0])} test examples"
    return {"checkpoint": str(folder), "out": str(out), "kind": kind, "format": EXPORT_FORMATS[suffix],
            "max_abs_diff": diff, "checked_on": checked}


def _stepped(sm: Any, tokens: Tensor, step: Any = None) -> Tensor:
    """The outputs of stepping ``tokens`` (1, T[, S]) frame by frame through ``step`` (default: the eager
    streaming model ``sm`` itself) from the zero state."""
    step = sm if step is None else step
    state = list(sm.initial_state(1))
    outs = []
    for t in range(0, tokens.shape[1], sm.frame):
        y, *state = step(tokens[:, t:t + sm.frame], *state)
        outs.append(torch.as_tensor(y))
    return torch.cat(outs, 1)

def _onnx_runner(path: Path) -> Any:
    """A function ``(x, *state) -> (y, *state')`` running an exported ONNX step in onnxruntime, or None without it."""
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(x: Tensor, *state: Tensor) -> List[Tensor]:
        feeds = {"x": x.numpy(), **{f"state_{i}": s.numpy() if isinstance(s, Tensor) else s
                                    for i, s in enumerate(state)}}
        return [torch.from_numpy(v) for v in session.run(None, feeds)]

    return run
