r"""LRA-style ListOps (Nangia & Bowman 2018; Tay et al. 2021, Long Range Arena), generated here.

No package ships the LRA ListOps files or generator, so this module writes its own. An
expression is a digit ``0..9`` or ``[OP a1 a2 ... ak ]`` with ``2 <= k <= max_args`` arguments
that are expressions again (nesting depth at most ``max_depth``). Operators:

* ``MIN`` / ``MAX``: smallest / largest argument,
* ``MED``: median, rounded down for an even count (``floor((a_(k/2) + a_(k/2+1)) / 2)`` of the
  sorted arguments), as ``int(numpy.median(args))`` gives for non-negative integers,
* ``SM``: sum modulo 10 (LRA's ``SUM_MOD``).

The label is the value of the whole expression (10 classes). Like LRA, each sequence's length is
drawn uniformly in ``[min_length, max_length]`` (LRA: 500..2000) and a random tree is grown to
fill it: every operator node gets a token budget that is split at random among its arguments
(the generator evaluates the tree recursively as it writes the tokens), and a tree is redrawn
until its length falls in the range.

Tokens (``vocab_size = 16``): ``0`` = padding, ``1..10`` = digits ``0..9``, ``11..14`` =
``[MIN``, ``[MAX``, ``[MED``, ``[SM``, ``15`` = ``]``. Sequences are right-padded to
``max_length``; each split holds ``(ids, y, lengths)`` in a
:class:`~statespaces.data.base.TokenDataset` (items are one-hot, padding = zero vector,
``d_input = 15``), and ``SequenceClassifier(x, lengths)`` pools over the real tokens.

:func:`evaluate_tokens` evaluates a token sequence with an explicit stack (no recursion, no
tree): the tests check every generated label against it.
"""
from __future__ import annotations

import random
from typing import Dict, List, Sequence, Union

import numpy as np
import torch

from .base import SequenceData, TokenDataset, check_count, compact_ids, split_rngs

PAD = 0
OPS = ("MIN", "MAX", "MED", "SM")
DIGIT0 = 1                      # token of digit d is DIGIT0 + d
OP0 = 11                        # token of OPS[i] is OP0 + i
CLOSE = 15
VOCAB_SIZE = 16
N_CLASSES = 10
TOKEN_NAMES = ["<pad>"] + [str(d) for d in range(10)] + ["[" + op for op in OPS] + ["]"]


def _apply(op: str, args: Sequence[int]) -> int:
    if op == "MIN":
        return min(args)
    if op == "MAX":
        return max(args)
    if op == "MED":
        s = sorted(args)
        k = len(s)
        return s[k // 2] if k % 2 else (s[k // 2 - 1] + s[k // 2]) // 2
    if op == "SM":
        return sum(args) % 10
    raise ValueError(f"unknown ListOps operator {op!r}; valid: {', '.join(OPS)}")


def _grow(budget: int, depth: int, rnd: random.Random, max_args: int, max_depth: int, out: List[int]) -> int:
    """Append the tokens of a random expression using at most ``budget`` tokens to ``out`` and
    return its value (recursive evaluation; depth <= max_depth keeps the recursion shallow).

    An operator costs 2 tokens plus its arguments; its inner budget is split into random parts,
    parts of 2 or 3 tokens (too small for an operator) are cut to one digit and the spare tokens
    go to the largest part, so the expression fills its budget closely."""
    if budget < 4 or depth >= max_depth:  # smallest operator: [OP a b ] = 4 tokens
        d = rnd.randrange(10)
        out.append(DIGIT0 + d)
        return d
    inner = budget - 2
    k = rnd.randint(2, min(max_args, inner))
    if depth == max_depth - 1:  # the arguments must be digits
        sizes = [1] * k
    else:
        cuts = sorted(rnd.sample(range(1, inner), k - 1))
        sizes = [b - a for a, b in zip([0] + cuts, cuts + [inner])]
        big = max(range(k), key=sizes.__getitem__)
        for j in range(k):
            if j != big and sizes[j] in (2, 3):
                sizes[big] += sizes[j] - 1
                sizes[j] = 1
    op = rnd.randrange(len(OPS))
    out.append(OP0 + op)
    value = _apply(OPS[op], [_grow(s, depth + 1, rnd, max_args, max_depth, out) for s in sizes])
    out.append(CLOSE)
    return value


def generate_listops(
    n: int,
    min_length: int = 500,
    max_length: int = 2000,
    max_args: int = 10,
    max_depth: int = 10,
    seed: Union[int, np.random.Generator] = 0,
    max_tries: int = 1000,
) -> Dict[str, np.ndarray]:
    """``n`` random expressions. Returns ``ids`` (n, max_length) int64 right-padded with 0,
    ``lengths`` (n,) int64 and ``labels`` (n,) int64 (recursive evaluation of the tree)."""
    n, max_args = check_count("n", n), check_count("max_args", max_args, 2)
    max_depth = check_count("max_depth", max_depth)
    min_length, max_length = check_count("min_length", min_length), check_count("max_length", max_length)
    if min_length > max_length:
        raise ValueError(f"min_length={min_length} > max_length={max_length}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    rnd = random.Random(int(rng.integers(2**63)))  # Python's generator: ~10x cheaper per scalar draw
    ids = np.zeros((n, max_length), dtype=np.int64)
    lengths = np.zeros(n, dtype=np.int64)
    labels = np.zeros(n, dtype=np.int64)
    for i in range(n):
        for _ in range(max_tries):
            toks: List[int] = []
            value = _grow(rnd.randint(min_length, max_length), 0, rnd, max_args, max_depth, toks)
            if min_length <= len(toks) <= max_length:
                break
        else:
            raise RuntimeError(f"could not grow an expression with {min_length}..{max_length} tokens in {max_tries} "
                               "tries; widen the range or raise max_depth / max_args")
        ids[i, : len(toks)] = toks
        lengths[i] = len(toks)
        labels[i] = value
    return {"ids": ids, "lengths": lengths, "labels": labels}


def evaluate_tokens(ids: Sequence[int]) -> int:
    """Evaluate one token sequence (padding ignored) with an explicit operand stack.

    Independent of the generator's tree: reads tokens left to right, pushes a frame at ``[OP``,
    appends digits to the top frame, and at ``]`` reduces the frame and appends its value to
    the frame below. Raises ``ValueError`` on malformed input.
    """
    frames: List[List] = [["<root>", []]]
    for t in ids:
        t = int(t)
        if t == PAD:
            continue
        if DIGIT0 <= t < DIGIT0 + 10:
            frames[-1][1].append(t - DIGIT0)
        elif OP0 <= t < OP0 + len(OPS):
            frames.append([OPS[t - OP0], []])
        elif t == CLOSE:
            if len(frames) == 1:
                raise ValueError("unbalanced ']'")
            op, args = frames.pop()
            if len(args) < 1:
                raise ValueError(f"[{op} with no arguments")
            frames[-1][1].append(_apply(op, args))
        else:
            raise ValueError(f"unknown token {t}")
    if len(frames) != 1 or len(frames[0][1]) != 1:
        raise ValueError("malformed expression (unclosed '[' or several top-level values)")
    return frames[0][1][0]


def detokenize(ids: Sequence[int]) -> str:
    """Token ids -> text like ``[MAX 2 9 [MIN 4 7 ] 0 ]`` (padding dropped)."""
    return " ".join(TOKEN_NAMES[int(t)] for t in ids if int(t) != PAD)


def tokenize(text: str) -> List[int]:
    """Text (tokens separated by spaces, e.g. ``[SM 3 [MED 1 5 8 ] ]``) -> token ids."""
    index = {name: k for k, name in enumerate(TOKEN_NAMES)}
    index["[SUM_MOD"] = OP0 + OPS.index("SM")
    out = []
    for tok in text.split():
        if tok not in index or tok == "<pad>":
            raise ValueError(f"unknown ListOps token {tok!r}; valid: {', '.join(TOKEN_NAMES[1:])}")
        out.append(index[tok])
    return out


def load_listops(
    n_train: int = 2000,
    n_test: int = 500,
    min_length: int = 500,
    max_length: int = 2000,
    max_args: int = 10,
    max_depth: int = 10,
    seed: int = 0,
) -> SequenceData:
    """ListOps as ``SequenceData`` of one-hot tokens (n, max_length, 15) with lengths.

    Defaults follow LRA's lengths (500..2000) with small splits for CPU runs (LRA itself uses
    96k/2k/2k). Generation costs about 4 s per million tokens (the defaults: ~13 s on 2 busy
    CPU cores); use smaller ``n_train`` / ``max_length`` for quick runs.
    """
    n_train, n_test = check_count("n_train", n_train), check_count("n_test", n_test)
    parts = []
    for n, rng in zip((n_train, n_test), split_rngs(seed)):
        d = generate_listops(n, min_length, max_length, max_args, max_depth, rng)
        parts.append(TokenDataset(compact_ids(d["ids"], VOCAB_SIZE), torch.from_numpy(d["labels"]),
                                  torch.from_numpy(d["lengths"]), vocab_size=VOCAB_SIZE))
    return SequenceData(
        train=parts[0], test=parts[1], d_input=VOCAB_SIZE - 1, n_classes=N_CLASSES, length=max_length,
        name="listops", classes=[str(d) for d in range(10)],
        info={"min_length": min_length, "max_length": max_length, "max_args": max_args, "max_depth": max_depth,
              "seed": seed, "token_names": TOKEN_NAMES},
    )
