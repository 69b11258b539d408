r"""Bach chorales from music21's bundled corpus as a 4-voice 16th-note grid (for autoregressive models).

The corpus ships with ``pip install music21`` (no download at run time): ``corpus.chorales.Iterator``
lists 371 chorales, but only 350 distinct files (21 are listed twice), and 331 of those have
exactly four parts (soprano, alto, tenor, bass). Each is parsed once to an integer grid ``(L, 4)``:
one row per 16th note, one column per voice, holding the sounding MIDI pitch (0..127) or
``REST = 128``. Held notes and repeated notes look the same on the grid (as in the usual JSB
chorales piano roll); ties, grace notes (zero length), lyrics, fermatas and repeat signs are
dropped; a chord within one part keeps its highest pitch.

Every piece is kept once: a name listed twice is parsed once, and of two files whose grids are
identical only the first listed is kept (:func:`unique_pieces`: ``bwv62.6`` and not ``bwv274``,
``bwv69.6-a`` and not ``bwv69.6``), which leaves 329 pieces. Otherwise the split by piece would put
copies of training pieces into the held-out splits and flatter their NLL.

The parsed grids are cached as one ``.npz`` under ``$STATESPACES_DATA`` or ``~/.cache/statespaces``
(never in the repository). The split into train/valid/test is by piece (80/10/10 by default: 263,
33 and 33 pieces) with a fixed seed. :func:`write_midi` turns a grid back into a MIDI file to
listen to.

Used by ``experiments/chorales.py`` (NLL per 16th-note step, SaShiMi vs flat stacks; thesis ch. 8
reports the same kind of likelihood on audio, Tables 8.2-8.5).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

if TYPE_CHECKING:
    from .base import SequenceData

#: Token of a silent voice; pitches use their MIDI numbers 0..127.
REST = 128
#: Token values per voice (MIDI pitches + rest).
VOCAB_SIZE = 129
#: Voices per step (soprano, alto, tenor, bass).
N_VOICES = 4
#: Grid steps per quarter note (16th notes).
STEPS_PER_QUARTER = 4
#: Cache file; v2 holds each piece once (v1 kept repeated names and identical grids).
_CACHE_NAME = "bach_chorales_16th_v2.npz"


def _music21(what: str = "the Bach chorales come from music21's bundled corpus") -> Any:
    try:
        import music21  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"{what}: install it with `pip install music21`") from e
    return music21


def data_dir(path: Optional[Union[str, Path]] = None) -> Path:
    """Cache folder: ``path``, else ``$STATESPACES_DATA``, else ``~/.cache/statespaces``."""
    if path is None:
        path = os.environ.get("STATESPACES_DATA") or Path.home() / ".cache" / "statespaces"
    return Path(path).expanduser()


def score_to_grid(score, steps_per_quarter: int = STEPS_PER_QUARTER) -> np.ndarray:
    """A 4-part music21 score -> int64 grid (L, 4) of MIDI pitches / ``REST``.

    Raises ``ValueError`` if the score does not have exactly four parts.
    """
    m21 = _music21()
    parts = list(score.parts)
    if len(parts) != N_VOICES:
        raise ValueError(f"expected a score with {N_VOICES} parts (S, A, T, B), got {len(parts)}")
    L = int(np.ceil(float(score.highestTime) * steps_per_quarter - 1e-6))
    grid = np.full((max(L, 1), N_VOICES), REST, dtype=np.int64)
    for v, part in enumerate(parts):
        for n in part.flatten().notes:
            if isinstance(n, m21.harmony.ChordSymbol) or n.quarterLength <= 0:
                continue
            start = int(round(float(n.offset) * steps_per_quarter))
            end = int(round(float(n.offset + n.quarterLength) * steps_per_quarter))
            pitch = max(p.midi for p in n.pitches) if n.isChord else n.pitch.midi
            grid[start:max(end, start + 1), v] = pitch
    return grid


def grid_to_score(grid: np.ndarray, steps_per_quarter: int = STEPS_PER_QUARTER, tempo: Optional[float] = 80.0) -> Any:
    """Grid (L, 4) of MIDI pitches / ``REST`` -> music21 ``Score`` with four parts.

    Runs of the same value in a voice become one note (or rest) of that length.
    """
    m21 = _music21("writing MIDI needs music21 (statespaces generate saves the sampled tokens as .npy before it)")
    grid = np.asarray(grid)
    if grid.ndim != 2 or grid.shape[1] != N_VOICES:
        raise ValueError(f"grid must have shape (length, {N_VOICES}), got {grid.shape}")
    if grid.size and (grid.min() < 0 or grid.max() > REST):
        raise ValueError(f"grid values must be MIDI pitches 0..127 or REST={REST}")
    score = m21.stream.Score()
    names = ("Soprano", "Alto", "Tenor", "Bass")
    for v in range(N_VOICES):
        part = m21.stream.Part()
        part.partName = names[v]
        if v == 0 and tempo:
            part.append(m21.tempo.MetronomeMark(number=tempo))
        col = grid[:, v]
        t = 0
        while t < len(col):
            u = t
            while u < len(col) and col[u] == col[t]:
                u += 1
            ql = (u - t) / steps_per_quarter
            if col[t] == REST:
                el = m21.note.Rest(quarterLength=ql)
            else:
                el = m21.note.Note(int(col[t]), quarterLength=ql)
            part.append(el)
            t = u
        score.insert(0, part)
    return score


def write_midi(grid: np.ndarray, path: Union[str, Path], tempo: float = 80.0) -> Path:
    """Write a grid (L, 4) (MIDI pitches / ``REST``) as a MIDI file; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid_to_score(np.asarray(grid), tempo=tempo).write("midi", fp=str(path))
    return path


def chorale_names() -> List[str]:
    """Corpus names of the chorales music21 ships (e.g. ``'bach/bwv269'``)."""
    return list(_music21().corpus.chorales.Iterator(returnType="filename"))


def parse_chorale(name: str) -> np.ndarray:
    """Parse one corpus chorale to its grid (L, 4); ``ValueError`` if it does not have four parts."""
    return score_to_grid(_music21().corpus.parse(name))


def grid_key(grid: np.ndarray) -> str:
    """Content hash of a grid (its shape and values, whatever the integer dtype): two pieces with
    the same note grid get the same key."""
    g = np.ascontiguousarray(grid, dtype=np.int64)
    return hashlib.sha1(repr(g.shape).encode() + g.tobytes()).hexdigest()


def transposition_key(grid: np.ndarray) -> str:
    """Content hash of a grid up to transposition: its sounding notes shifted so that the lowest is 0 (rests kept).
    Two pieces with the same key are one harmonisation in two keys (music21 holds bwv18.5-l and bwv18.5-w, a
    tone apart)."""
    g = np.ascontiguousarray(grid, dtype=np.int64).copy()
    notes = g != REST
    if notes.any():
        g[notes] -= g[notes].min()
    return grid_key(g)


def unique_pieces(
    names: Sequence[str], grids: Sequence[np.ndarray]
) -> Tuple[List[str], List[np.ndarray], Dict[str, str]]:
    """Each piece once: drop a repeated name, then a grid identical to an earlier piece's.

    The corpus lists some chorales twice and holds a few files under two names with the same
    notes; splitting by piece would then put a copy of a training piece in the held-out splits.
    The first occurrence is kept. Returns the kept names and grids, in order, and
    ``{dropped name: kept name}`` for the grids dropped under another name.
    """
    kept_names: List[str] = []
    kept_grids: List[np.ndarray] = []
    owner: Dict[str, str] = {}              # grid key -> name of the kept piece
    aliases: Dict[str, str] = {}
    seen = set()
    for name, g in zip(names, grids):
        if name in seen:
            continue
        seen.add(name)
        key = grid_key(g)
        if key in owner:
            aliases[name] = owner[key]
            continue
        owner[key] = name
        kept_names.append(name)
        kept_grids.append(g)
    return kept_names, kept_grids, aliases


def _parse_four_part(names: Sequence[str]) -> Tuple[List[str], List[np.ndarray]]:
    """Parse each distinct name once; pieces without exactly four parts are skipped."""
    parsed_names, grids = [], []
    for name in dict.fromkeys(names):
        try:
            g = parse_chorale(name)
        except ValueError:
            continue
        parsed_names.append(name)
        grids.append(g.astype(np.int16))
    return parsed_names, grids


def _build_cache(path: Path, verbose: bool = True) -> None:
    """Parse the corpus, keep each piece once (:func:`unique_pieces`) and write the ``.npz`` cache."""
    listed = chorale_names()
    parsed, grids = _parse_four_part(listed)
    names, grids, aliases = unique_pieces(parsed, grids)
    if verbose:
        same = ", ".join(f"{a} = {b}" for a, b in aliases.items()) or "none"
        print(f"{len(listed)} chorales listed, {len(set(listed))} distinct, {len(parsed)} with four parts; "
              f"{len(names)} kept after dropping identical grids ({same}) -> {path}")
    offsets = np.cumsum([0] + [len(g) for g in grids])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, grid=np.concatenate(grids), offsets=offsets, names=np.array(names),
                        aliases=np.array(list(aliases.items()), dtype=str).reshape(-1, 2))
    os.replace(tmp, path)


def _read_cache(path: Path) -> Tuple[List[str], List[np.ndarray], Dict[str, str]]:
    """Names, int64 grids and ``{dropped name: kept name}`` stored by :func:`_build_cache`."""
    with np.load(path) as z:
        grid, offsets, names = z["grid"].astype(np.int64), z["offsets"], [str(n) for n in z["names"]]
        aliases = {str(a): str(b) for a, b in z["aliases"]} if "aliases" in z else {}
    return names, [grid[offsets[i]:offsets[i + 1]] for i in range(len(names))], aliases


@dataclass
class Chorales:
    """Chorale grids split by piece. Each split is a list of int64 arrays (L_i, 4) with values
    MIDI pitch / ``REST``; ``names`` holds the corpus names per split."""

    train: List[np.ndarray]
    valid: List[np.ndarray]
    test: List[np.ndarray]
    names: Dict[str, List[str]] = field(default_factory=dict)
    #: corpus names left out because their grid equals a kept piece's -> that piece's name
    duplicates: Dict[str, str] = field(default_factory=dict)
    vocab_size: int = VOCAB_SIZE
    n_voices: int = N_VOICES

    def split(self, name: str) -> List[np.ndarray]:
        if name not in ("train", "valid", "test"):
            raise ValueError(f"unknown split {name!r}; valid: train, valid, test")
        return getattr(self, name)


def load_chorales(
    path: Optional[Union[str, Path]] = None,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    refresh: bool = False,
    verbose: bool = True,
) -> Chorales:
    """Load (parsing and caching on first use, ~1 min) the four-part Bach chorales, each piece once
    (:func:`unique_pieces`, applied again here so that no split holds a copy of another piece), and the
    transpositions of a piece in one split (:func:`transposition_key`: the one drawn first decides; the split
    sizes can then differ from ``fractions`` by a piece).

    Args:
        path: cache folder (default :func:`data_dir`).
        fractions: train/valid/test fractions of the pieces (must sum to 1).
        seed: seed of the piece shuffle that defines the split.
        refresh: re-parse even if the cache exists.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {tuple(fractions)}")
    cache = data_dir(path) / _CACHE_NAME
    if refresh or not cache.exists():
        _build_cache(cache, verbose)
    names, pieces, aliases = _read_cache(cache)
    names, pieces, more = unique_pieces(names, pieces)
    aliases.update(more)
    order = np.random.default_rng(seed).permutation(len(pieces))
    n_train = int(round(fractions[0] * len(pieces)))
    n_valid = int(round(fractions[1] * len(pieces)))
    empty = [k for k, n in zip(("train", "valid", "test"), (n_train, n_valid, len(pieces) - n_train - n_valid))
             if n < 1]
    if empty:
        raise ValueError(f"fractions {tuple(fractions)} leave the {' and '.join(empty)} split(s) of the {len(pieces)} "
                         "pieces empty; give each split at least one piece")
    where = np.empty(len(pieces), dtype=np.int64)                    # 0 train, 1 valid, 2 test, by piece
    where[order[:n_train]], where[order[n_train:n_train + n_valid]], where[order[n_train + n_valid:]] = 0, 1, 2
    # a piece transposed is the same piece: each group of transpositions joins the split of its member drawn first
    keys = [transposition_key(g) for g in pieces]
    first: Dict[str, int] = {}
    for i in order:
        first.setdefault(keys[i], int(where[i]))
    parts = {name: np.array([i for i in order if first[keys[i]] == k], dtype=np.int64)
             for k, name in enumerate(("train", "valid", "test"))}
    split = {k: [pieces[i] for i in idx] for k, idx in parts.items()}
    return Chorales(
        train=split["train"], valid=split["valid"], test=split["test"],
        names={k: [names[i] for i in idx] for k, idx in parts.items()}, duplicates=aliases,
    )


def random_crops(
    pieces: Sequence[np.ndarray], length: int, batch_size: int, rng: np.random.Generator
) -> np.ndarray:
    """A batch (batch_size, length, 4) of random windows; shorter pieces are right-padded with ``REST``."""
    out = np.full((batch_size, length, N_VOICES), REST, dtype=np.int64)
    for b in range(batch_size):
        g = pieces[int(rng.integers(len(pieces)))]
        start = int(rng.integers(max(len(g) - length, 0) + 1))
        w = g[start:start + length]
        out[b, : len(w)] = w
    return out


def pad_batch(pieces: Sequence[np.ndarray], multiple: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """Right-pad pieces with ``REST`` to one array (B, L_max, 4) (L_max rounded up to ``multiple``);
    returns it and the lengths (B,)."""
    lengths = np.array([len(g) for g in pieces])
    L = int(-(-lengths.max() // multiple) * multiple)
    out = np.full((len(pieces), L, N_VOICES), REST, dtype=np.int64)
    for b, g in enumerate(pieces):
        out[b, : len(g)] = g
    return out, lengths



def load_chorales_lm(seed: int = 0, path: Optional[Union[str, Path]] = None) -> "SequenceData":
    """The chorales as a :class:`~statespaces.data.base.SequenceData` of task ``"lm"`` (``statespaces train
    --data.name chorales``; the presets ``chorales-sashimi`` and ``chorales-s4d``).

    Each split holds ``(tokens, tokens, lengths)``: its pieces whole, right-padded with ``REST`` to the split's
    longest, as int64 tokens (n, L, 4) (MIDI pitch or ``REST`` per voice), the same tokens as targets (a language
    model predicts its own input one step ahead) and each piece's length; ``valid`` holds the validation pieces
    (:attr:`SequenceData.valid`, the split ``statespaces train`` validates on). ``n_classes`` is the vocabulary
    (129 tokens per voice) and ``d_input`` the number of voices (4), which
    :func:`statespaces.train.loop.build_model` reads as the model's ``vocab_size`` and ``n_streams``. Training
    on random windows of the pieces (what the presets do) is ``data.augment = {"window": 128}``
    (:class:`~statespaces.data.augment.TokenWindows`).

    The split by piece is :func:`load_chorales`'s with its seed 0 (263 / 33 / 33 pieces) whatever ``seed``
    is: ``seed`` (``trainer.seed``) is accepted for the ``DATASETS`` interface, so that runs of several seeds
    are scored on the same test pieces. ``path``: the cache folder (:func:`data_dir`).
    """
    import torch
    from torch.utils.data import TensorDataset

    from .base import SequenceData

    data = load_chorales(path, verbose=False)

    def split(name: str) -> TensorDataset:
        x, lengths = pad_batch(data.split(name))
        tokens = torch.from_numpy(np.ascontiguousarray(x, dtype=np.int64))
        return TensorDataset(tokens, tokens, torch.from_numpy(lengths.astype(np.int64)))

    train, valid, test = split("train"), split("valid"), split("test")
    info = {"pieces": {k: len(data.split(k)) for k in ("train", "valid", "test")}, "names": data.names,
            "unit": "nats per 16th-note step, summed over the 4 voices"}
    return SequenceData(train, test, d_input=N_VOICES, n_classes=VOCAB_SIZE, length=int(train.tensors[0].shape[1]),
                        name="chorales", task="lm", info=info, test_length=int(test.tensors[0].shape[1]),
                        valid=valid)
