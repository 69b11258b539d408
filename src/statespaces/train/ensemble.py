"""Ensembles of trained checkpoints: the test score of several models' averaged predictions.

Deep time-series classifiers are often reported as ensembles: the published InceptionTime figures are
the mean softmax output of five networks trained from different random inits (Ismail Fawaz et al.,
2020). ``statespaces evaluate RUN1 RUN2 ...`` scores ours the same way, e.g. the seeds of one preset:

- classification: the mean of the members' class probabilities, ``p = (1/M) sum_m softmax(z_m)``;
  accuracy of ``argmax p`` and the loss ``-log p[y]`` (the cross-entropy of the averaged distribution);
- regression: the mean of the members' predictions; score R^2;
- language models: the mean of the members' next-step probabilities, ``p(x_{t+1} | x_{<=t}) = (1/M) sum_m
  p_m(x_{t+1} | x_{<=t})`` for the whole step (the S tokens of a step together: a mixture of the members' joint
  next-step distributions); score the NLL per step of the held-out sequences.

Every member is evaluated on its own data config (its normalisation, resolution), so members may
differ in recipe; they must score the same test examples in the same order: the same dataset and
identical test targets, and for files (UCR/UEA) a test file of identical content, checked, or a ``ValueError``
names the member that differs (e.g. ``digits`` runs of different seeds, whose seed also draws the train/test
split, or two runs of one problem name trained on different files).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from ..ops._amp import upcast_half
from .checkpoint import file_sha256
from .evaluation import describe_selection, load_for_evaluation
from .loop import checkpoint_dir
from .tasks import Task, get_task

#: Tasks whose predictions can be averaged over members.
ENSEMBLE_TASKS = ("classification", "regression", "lm")


@torch.no_grad()
def step_log_likelihoods(model: nn.Module, dataset, batch_size: int = 16) -> Tuple[Tensor, Tensor, Tensor]:
    """A language model's log-probability of every scored step of ``dataset`` ``(tokens, tokens, lengths)``:
    ``(ll, tokens, mask)`` with ``ll`` (n, L - 1) float64, ``ll[b, t]`` the log-probability of step t + 1 given the
    steps up to t (summed over the S tokens of the step; 0 where ``mask`` is False, past a sequence's length)."""
    was_training = model.training
    model.eval()
    x, _, lengths = dataset.tensors
    parts = []
    for i in range(0, len(x), batch_size):
        xb, lb = x[i:i + batch_size], lengths[i:i + batch_size]
        logits = model(xb, lengths=lb)
        if logits.dim() == 3:
            logits = logits.unsqueeze(-2)
        lp = torch.log_softmax(logits[:, :-1].double(), -1)
        tgt = xb[:, 1:].reshape(*lp.shape[:3], 1)
        parts.append(lp.gather(-1, tgt).squeeze(-1).sum(-1))
    model.train(was_training)
    mask = torch.arange(1, x.shape[1])[None, :] < lengths[:, None]
    ll = torch.cat(parts) * mask
    return ll, x, mask


@torch.no_grad()
def predict(model: nn.Module, loader, task: Task, device: Optional[torch.device] = None) -> Tuple[Tensor, Tensor]:
    """``(outputs, targets)`` over ``loader``: the model's outputs (n, C) in float32 and the targets (n,),
    in the loader's order (on ``device``, default CPU). The model's training mode is restored afterwards."""
    device = device if device is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    outs, ys = [], []
    for batch in loader:
        x, y, lengths = task.unpack(batch, device)
        outs.append(task.output(model, x, lengths).float().cpu())
        ys.append(y.cpu())
    model.train(was_training)
    return torch.cat(outs), torch.cat(ys)


def combine(task: Task, outputs: Sequence[Tensor]) -> Tensor:
    """The ensemble's output from the members' outputs, each (n, C): for classification the log of
    the mean softmax probability (so the task's cross-entropy is ``-log p[y]`` of the averaged
    distribution), for regression the mean prediction."""
    stacked = torch.stack(list(outputs))                           # (M, n, C)
    if task.name == "lm":              # log of the mean next-step probability (padded steps: masked by the caller)
        return torch.logsumexp(stacked, dim=0) - math.log(len(outputs))
    if task.name == "classification":
        log_p = torch.log_softmax(stacked.double(), dim=-1)
        return (torch.logsumexp(log_p, dim=0) - math.log(len(outputs))).float()
    return stacked.mean(0)


def _scores(task: Task, out: Tensor, y: Tensor, mask: Optional[Tensor] = None) -> Dict[str, float]:
    """``{"loss", "acc"}`` of outputs ``out`` against ``y``, as :func:`statespaces.train.evaluate` reports them
    (a language model: ``out`` the step log-likelihoods of :func:`step_log_likelihoods`, ``mask`` its mask)."""
    if task.name == "lm":
        assert mask is not None
        nll = float(-out.sum() / mask.sum())
        return {"loss": nll, "acc": -nll}
    return task.summary(task.output_sums(out, y), upcast_half(y) if task.needs_targets() else None)


def _test_file_digest(data) -> Optional[Tuple[str, str]]:
    """``(path, sha256)`` of the file a member's test split was read from (UCR/UEA data records it), or None.

    Two runs of one problem name can have been trained on different files (a copy edited, another problem
    saved under the same name): the same name, test size and targets do not make the same test inputs,
    and averaging the predictions of different inputs would be a score of nothing. Compared by content,
    so the same file in two places (the packaged copy and a download) is one test split."""
    info = getattr(data, "info", None) or {}
    path = info.get("test_file") if isinstance(info, dict) else None
    if not path:
        return None
    try:
        return str(path), file_sha256(path)
    except OSError:
        return None


def evaluate_ensemble(paths: Sequence[str], data_name: Optional[str] = None) -> Dict[str, Any]:
    """Test loss and score of each checkpoint in ``paths`` (run folders stand for their ``best/``) and of
    their ensemble (module docstring). ``data_name`` points every member at other data, as in
    :func:`statespaces.train.evaluate_checkpoint`.

    Returns ``{"members": [{"checkpoint", "loss", "acc", "epoch", "selection"}, ...], "loss", "acc",
    "task", "dataset", "n_test", "n_members"}``."""
    if isinstance(paths, (str, Path)) or len(paths) < 2:
        raise ValueError(f"an ensemble needs at least two checkpoints; got {paths!r} "
                         "(for one checkpoint use evaluate_checkpoint)")
    folders = [checkpoint_dir(p) for p in paths]
    seen: Dict[Path, str] = {}
    for p, f in zip(paths, folders):
        key = f.resolve()
        if key in seen:
            raise ValueError(f"{p} and {seen[key]} are the same checkpoint ({key}); give each member once")
        seen[key] = str(p)
    outputs: List[Tensor] = []
    members: List[Dict[str, Any]] = []
    first: Dict[str, Any] = {}
    for p, folder in zip(paths, folders):
        model, _, meta, data = load_for_evaluation(folder, data_name)
        task = get_task(data.task)
        if task.name not in ENSEMBLE_TASKS:
            raise ValueError(f"{p}: a {task.name} checkpoint; ensembles average pooled outputs and are defined for "
                             f"{' and '.join(ENSEMBLE_TASKS)} only")
        mask = None
        if task.name == "lm":
            out, y, mask = step_log_likelihoods(model, data.test)
        else:
            out, y = predict(model, DataLoader(data.test, batch_size=256), task)
        source = _test_file_digest(data)
        if not first:
            first = {"path": str(p), "task": task, "dataset": data.name, "y": y, "width": out.shape[-1],
                     "source": source, "mask": mask}
        elif source is not None and first["source"] is not None and source[1] != first["source"][1]:
            raise ValueError(f"{p}: its test split was read from {source[0]}, whose content differs from "
                             f"{first['source'][0]}, the test file of {first['path']}; an ensemble's members must "
                             "score the same test examples (point them all at one copy with --data.name PATH)")
        elif task.name != first["task"].name or data.name != first["dataset"]:
            raise ValueError(f"{p}: a {task.name} model of {data.name}, but {first['path']} is a {first['task'].name} "
                             f"model of {first['dataset']}; an ensemble's members must share task and data (the same "
                             "data under two names or places: point them all at one copy with --data.name PATH)")
        elif y.shape != first["y"].shape or not torch.equal(y, first["y"]) or out.shape[-1] != first["width"]:
            raise ValueError(f"{p}: its test split differs from that of {first['path']} ({len(y)} vs "
                             f"{len(first['y'])} examples, or other targets or outputs); members must score the same "
                             "test examples in the same order (a seed that draws the train/test split, as for "
                             "digits, gives each run another test set)")
        outputs.append(out)
        members.append({"checkpoint": str(folder), **_scores(task, out, y, mask), "epoch": meta.get("epoch"),
                        "selection": describe_selection(meta, folder)})
    task = first["task"]
    combined = combine(task, outputs)
    if first["mask"] is not None:
        combined = combined * first["mask"]
    res: Dict[str, Any] = {"members": members, **_scores(task, combined, first["y"], first["mask"]),
                           "task": task.name, "dataset": first["dataset"], "n_test": len(first["y"]),
                           "n_members": len(members)}
    return res
