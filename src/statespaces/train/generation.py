"""``statespaces generate``: sample from a trained language model in recurrent mode (thesis §7.4.2, ch. 8).

A run of a language-model dataset (``statespaces train --preset chorales-sashimi``) holds a causal model;
:func:`generate_from_checkpoint` loads its ``best/`` (or any checkpoint folder), takes the first
``prompt_steps`` steps of held-out pieces as prompts, and samples ``steps`` further steps with
:meth:`statespaces.models.SSMLanguageModel.generate`: one convolution-mode pass over the prompt, then one
recurrent step per new token (O(1) time and memory per token). The result is written as MIDI for the
chorales (prompt and continuation, :func:`statespaces.data.chorales.write_midi`; ``music21`` needed) and as
int64 tokens ``(n, prompt_steps + steps, S)`` in a ``.npy`` file beside it, for any language-model dataset (a
row whose test piece is shorter than ``prompt_steps`` has the piece whole as its prompt, and is padded at the
end by repeating its last step: its own prompt length is in the ``.json`` written beside, with the checkpoint,
the sampling settings and the figures of the summary).

The same ``seed`` gives the same tokens (sampling draws from a ``torch.Generator`` seeded by it). The
summary also scores the sampled continuation under the model (its mean NLL per step: how surprising the
model finds its own samples; compare with the test NLL: at ``temperature`` 1 the two are close, lower
temperatures give lower figures and duller music).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np
import torch

from .._checks import check_int, file_in_the_way
from .evaluation import load_for_evaluation
from .loop import checkpoint_dir
from .run import outputs_dir

__all__ = ["generate_from_checkpoint"]


def generate_from_checkpoint(path: Union[str, Path], steps: int = 256, prompt_steps: int = 16, piece: int = 0,
                             n: int = 1, temperature: float = 1.0, top_k: Optional[int] = None,
                             top_p: Optional[float] = None, seed: int = 0,
                             out: Optional[Union[str, Path]] = None, data_name: Optional[str] = None) -> Dict[str, Any]:
    """Sample continuations of held-out pieces from the language model of a checkpoint and write them.

    Args:
        path: a checkpoint folder, or a run folder (its ``best/``), of a run of task ``lm``.
        steps: new steps per piece (>= 1).
        prompt_steps: steps of each test piece given as the prompt (>= 1; 16 = one 4/4 bar of the chorales);
            a piece shorter than that is given whole.
        piece: index of the first test piece used as a prompt; ``n`` pieces from there on (wrapping around).
        n: number of continuations (one per prompt piece), sampled as one batch.
        temperature, top_k, top_p: sampling (:func:`statespaces.models.generate.sample_logits`).
        seed: seed of the sampling generator.
        data_name: take the prompts from this dataset instead of the stored one (e.g. the same token file moved
            elsewhere: ``tokens:NEW_PATH``), as ``statespaces evaluate --data.name`` does.
        out: where to write: a file stem (``.mid`` / ``.npy`` / ``.json`` are added; a folder, existing or
            written with a trailing ``/``, holds ``sample_<seed>.*``) or None for
            ``<run>/generated/sample_<seed>`` (:func:`~statespaces.train.run.outputs_dir`: outside the checkpoints,
            which a live run replaces and prunes).

    Returns:
        a summary, also written as ``<stem>.json``: ``tokens`` (the written ``.npy``), ``midi`` (the ``.mid``
        files, chorales only) and ``reference_midi`` (each test piece itself over the same span, to compare),
        ``steps``, ``seconds`` and ``steps_per_second`` of the sampling, ``sample_nll`` (mean NLL per step of the
        sampled steps under the model, nats), ``prompts`` (the test sequences used, by index and name when known,
        with each prompt's length).

    Raises:
        ValueError: the checkpoint is not a language model's, or an argument is out of range.
        TypeError: a count that is not an integer (the rule of ``SSMLanguageModel.generate``'s arguments).
    """
    steps, prompt_steps = check_int("steps", steps, 1), check_int("prompt_steps", prompt_steps, 1)
    piece, n, seed = check_int("piece", piece, 0), check_int("n", n, 1), check_int("seed", seed, 0)
    folder = checkpoint_dir(path)
    loaded, cfg, meta, data = load_for_evaluation(folder, data_name)     # moved data: a hint to --data.name
    if meta.get("task") != "lm":
        raise ValueError(f"{folder} holds a {meta.get('task')} model; generation needs a language model "
                         "(a run of task lm, e.g. statespaces train --preset chorales-sashimi)")
    model: Any = loaded                          # an SSMLanguageModel
    x, _, lengths = data.test.tensors
    if piece >= len(x):
        raise ValueError(f"piece={piece}; the test split has {len(x)} pieces (0 to {len(x) - 1})")
    order = [(piece + i) % len(x) for i in range(n)]
    prompt_lengths = lengths[order].clamp(max=prompt_steps)
    prompt = x[order, :prompt_steps]
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    new = model.generate(prompt, steps, temperature=temperature, top_k=top_k, top_p=top_p, generator=gen,
                         prompt_lengths=prompt_lengths)
    seconds = time.perf_counter() - t0
    assert isinstance(new, torch.Tensor)
    if new.dim() == prompt.dim() - 1:          # one token per step: generate returns (B, steps)
        new = new.unsqueeze(-1)
    # each piece: its own prompt, then its continuation (a piece shorter than prompt_steps is given whole)
    rows = [torch.cat([prompt[b, :int(prompt_lengths[b])], new[b]]) for b in range(n)]
    width = max(len(r) for r in rows)
    tokens = torch.stack([torch.cat([r, r[-1:].expand(width - len(r), *r.shape[1:])]) for r in rows])
    with torch.no_grad():
        total, count = model.nll(tokens, lengths=torch.tensor([len(r) for r in rows]))
        prompt_total, prompt_count = _prompt_nll(model, prompt, prompt_lengths)
    sample_nll = float(total - prompt_total) / max(int(count - prompt_count), 1)

    stem = Path(out) if out is not None else outputs_dir(folder, "generated") / f"sample_{seed}"
    if out is not None and (stem.is_dir() or str(out).endswith(("/", os.sep))):   # a folder: the files go inside
        stem = stem / f"sample_{seed}"
    blocker = file_in_the_way(stem)
    if blocker is not None:
        raise ValueError(f"--out {out}: {blocker} is a file, so no folder can hold the output there; give a file "
                         "stem in a folder (e.g. samples/run1) or a folder")
    stem.parent.mkdir(parents=True, exist_ok=True)
    tokens_path = stem.with_name(stem.name + ".npy")
    np.save(tokens_path, tokens.numpy())
    names = (data.info.get("names") or {}).get("test") if isinstance(data.info.get("names"), dict) else None
    summary: Dict[str, Any] = {
        "checkpoint": str(folder), "dataset": data.name, "tokens": str(tokens_path), "midi": [],
        "steps": steps, "n": n, "seconds": seconds, "steps_per_second": n * steps / max(seconds, 1e-9),
        "sample_nll": sample_nll, "temperature": temperature, "top_k": top_k, "top_p": top_p, "seed": seed,
        "prompts": [{"piece": i, "name": names[i] if names else None, "prompt_steps": int(prompt_lengths[b])}
                    for b, i in enumerate(order)],
    }
    if data.name == "chorales":
        from ..data.chorales import write_midi

        summary["reference_midi"] = []
        for b, r in enumerate(rows):
            suffix = f"_{b}" if n > 1 else ""
            summary["midi"].append(str(write_midi(r.numpy(), stem.with_name(f"{stem.name}{suffix}.mid"))))
            # the piece itself over the same span (its own continuation after the prompt), to listen side by side
            real = x[order[b], :min(len(r), int(lengths[order[b]]))]
            summary["reference_midi"].append(str(write_midi(real.numpy(), stem.with_name(
                f"{stem.name}{suffix}_reference.mid"))))
    _remove_stale(stem.with_name(stem.name + ".json"), summary)
    stem.with_name(stem.name + ".json").write_text(json.dumps(summary, indent=2))
    return summary


def _remove_stale(summary_path: Path, summary: Dict[str, Any]) -> None:
    """Delete the MIDI files an earlier call wrote under the same stem (listed in its summary) that this call did
    not write again: with fewer pieces (``--n``) they would lie beside a summary that no longer names them."""
    try:
        old = json.loads(summary_path.read_text())
    except (OSError, ValueError):
        return
    if not isinstance(old, dict):
        return
    written = set(summary.get("midi", [])) | set(summary.get("reference_midi", []))
    for key in ("midi", "reference_midi"):
        for f in old.get(key) or []:
            path = Path(str(f))
            if str(f) not in written and path.parent == summary_path.parent and path.suffix == ".mid":
                path.unlink(missing_ok=True)



def _prompt_nll(model: Any, prompt: torch.Tensor, lengths: torch.Tensor) -> "tuple[torch.Tensor, torch.Tensor]":
    """NLL summed over the prompt's own predicted steps and their number (0 for one-step prompts)."""
    if prompt.shape[1] < 2 or int(lengths.max()) < 2:
        return torch.zeros(()), torch.zeros((), dtype=torch.int64)
    keep = lengths >= 2
    if not bool(keep.all()):           # one-step prompts predict nothing: left out
        prompt, lengths = prompt[keep], lengths[keep]
    return model.nll(prompt, lengths=lengths)

