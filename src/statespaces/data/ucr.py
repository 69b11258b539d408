r"""UCR / UEA time-series classification problems from ``.ts``, ``.tsv`` and ``.txt`` files.

Where the files come from
-------------------------
``pip install --no-deps aeon`` ships a few problems as ``aeon/datasets/data/<Name>/<Name>_{TRAIN,TEST}.ts``
(ArrowHead, BasicMotions, GunPoint, ItalyPowerDemand, JapaneseVowels, OSULeaf, ACSF1,
PickupGestureWiimoteZ, UnitTest, ...). The folder is located **without importing aeon**
(``importlib.util.find_spec("aeon").submodule_search_locations``), so its dependencies (numba, a
pinned numpy, ...) are not needed. Search order: a ``root=`` folder, ``$STATESPACES_UCR``
(``os.pathsep``-separated), aeon's folder, then sktime's ``sktime/datasets/data`` (same layout,
adds PLAID and Tecator; also found without importing sktime). Any
other problem can be loaded by path: a ``<Name>_TRAIN`` or ``<Name>_TEST`` file (its sibling must
sit beside it), or a folder holding one such pair.

File formats
------------
``.ts``, ``.tsv``, ``.txt`` (or no suffix) and ``.csv``: see :mod:`statespaces.data.series_files`,
which reads them (:func:`~statespaces.data.series_files.read_series_file`).

What :func:`load_ucr` does with the parsed series
-------------------------------------------------
1. **Labels** are mapped to ``0..C-1``: in numeric order when every class label is a number,
   otherwise in the order of the ``@classLabel`` header (or sorted, without a header).
   ``SequenceData.classes[k]`` is the original label string of class ``k``.
2. **Missing values** (NaN inside a series' valid length): ``missing="interpolate"`` (default)
   fills them linearly in time from the nearest valid values of the same channel (constant
   extrapolation at the ends; in the case's sample times when the file has ``@timeStamps``, else in
   steps); a channel with no valid value becomes the training mean (0 after
   normalization). ``missing="mean"`` replaces every missing value by the mean of its channel:
   the training split's under ``normalize="global"`` / ``"none"``, the case's own under ``"series"``
   (0 after normalization either way).
3. **Normalization** (``normalize``): ``"global"`` (default, also ``True``) z-normalizes each
   channel with the mean and std of the *training* split over all valid time steps (a channel
   constant in the training split is only shifted: its std would be 0); ``"series"``
   z-normalizes each case on its own (per channel, over its valid steps; a constant channel
   becomes 0), the usual UCR preprocessing when series differ in offset or scale; ``"none"``
   (also ``False``) keeps raw values. "Constant" allows float64 rounding (:func:`constant_rows`).
4. **Downsampling** (``max_length``, optional): when the longest *training* series has more
   than ``max_length`` steps, every series of both splits is averaged over consecutive windows of
   ``k = ceil(L_max / max_length)`` steps (the last window of a series over the steps it has),
   after normalization, so each series keeps ``ceil(length / k)`` steps; ``info["pool"]`` is ``k``.
   A cheap way to run long problems (ACSF1, L = 1460) on a CPU budget (:func:`pool_series`). A
   test series longer than every training series may keep more than ``max_length`` steps.
5. **Padding**: variable-length problems (e.g. JapaneseVowels, 7-29 steps) are right-padded
   with ``pad_value`` (0.0 = the channel mean): the training split to its longest series
   (``SequenceData.length``; JapaneseVowels: 26), the test split to the same length, or to its
   own longest series when that one is longer (``SequenceData.test_length``; JapaneseVowels: 29).
   Each split gets a third tensor ``lengths`` (int64, valid steps per case), so batches are
   ``(x, y, lengths)`` and ``SequenceClassifier(x, lengths)`` pools over valid steps only.
   Equal-length problems have no lengths tensor unless ``return_lengths=True``; a training split
   of equal lengths has none even when the test split needs one (:func:`lengths_wanted`).

Steps 2-5 take every statistic and size from the training split (the test file changes no
training input: its series are normalised with the training statistics and pooled with the
training window, and the time channel of ``data.time_channel`` counts in training steps).

Data: the UCR/UEA archives (Dau et al. 2019, "The UCR time series archive"; Bagnall et al. 2018,
"The UEA multivariate time series classification archive"); cite the archive and the problem's
source given in each file's comment header.
"""
from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union, cast

import numpy as np
import torch
from torch.utils.data import TensorDataset

from .._checks import check_real
from .base import CONSTANT_ULPS, SequenceData, absolute_path
from .series_files import (  # noqa: F401  (the readers and writer, re-exported: statespaces.data.ucr.parse_ts, ...)
    _BOOL,
    FORMATS,
    SUFFIXES,
    TSFile,
    _split_of,
    format_ts,
    parse_ts,
    parse_ucr_table,
    read_series_file,
    read_ts,
)

INSTALL_HINT = "pip install --no-deps aeon"
#: How to name a problem by path (used in error messages).
PATH_FORMS = ("a <Name>_TRAIN or <Name>_TEST file (.ts, .tsv, .txt, .csv or the old suffix-less UCR file, "
              "with its sibling beside it) or a folder holding one such pair")
#: (package, folder inside it) searched for bundled .ts files, in this order.
PACKAGES = (("aeon", ("datasets", "data")), ("sktime", ("datasets", "data")))
#: Problems registered by name in ``statespaces.data.DATASETS`` (as ``ucr:<Name>``).
FEATURED = ("ArrowHead", "BasicMotions", "GunPoint", "ItalyPowerDemand", "JapaneseVowels", "OSULeaf", "ACSF1",
            "PickupGestureWiimoteZ")


# ------------------------------------------------------------------------------------------- locate


def package_data_dirs() -> List[Path]:
    """Bundled data folders of aeon / sktime installs (found without importing the packages)."""
    out = []
    for pkg, sub in PACKAGES:
        try:
            spec = importlib.util.find_spec(pkg)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations:
            continue
        for loc in spec.submodule_search_locations:
            d = Path(loc).joinpath(*sub)
            if d.is_dir():
                out.append(d)
    return out


def search_dirs(root: Optional[Union[str, Path]] = None) -> List[Path]:
    dirs = [Path(root)] if root is not None else []
    env = os.environ.get("STATESPACES_UCR")
    if env:
        dirs += [Path(p) for p in env.split(os.pathsep) if p]
    return dirs + package_data_dirs()


def _pairs_in(d: Path) -> List[Tuple[str, Path, Path]]:
    """``(name, train, test)`` of every complete pair in folder ``d`` (one per name: .ts, then .tsv, .txt, none)."""
    out: Dict[str, Tuple[str, Path, Path]] = {}
    try:
        files = sorted(f for f in d.iterdir() if f.is_file())
    except OSError:
        return []
    for f in files:
        split = _split_of(f.name)
        if split is None or split[1] != "TRAIN":
            continue
        name, _, suffix = split
        test = companion(f, "TEST")
        if not test.is_file():
            continue
        best = out.get(name)
        if best is None or (FORMATS.index(suffix)
                            < FORMATS.index(cast(Tuple[str, str, str], _split_of(best[1].name))[2])):
            out[name] = (name, f, test)
    return list(out.values())


def companion(path: Path, split: str) -> Path:
    """The ``split`` file (``"TRAIN"`` or ``"TEST"``) of the problem of ``path`` (a ``<Name>_TRAIN`` or
    ``<Name>_TEST`` file), beside it: the split word in the case ``path`` writes its own
    (``wine_train.tsv`` -> ``wine_test.tsv``, ``Wine_Train`` -> ``Wine_Test``), else the one file of
    that name in any case, else the name in ``path``'s case (which then does not exist)."""
    name, which, _ = cast(Tuple[str, str, str], _split_of(path.name))
    written = path.name[len(name) + 1: len(name) + 1 + len(which)]
    tail = path.name[len(name) + 1 + len(which):]                 # the suffix as written
    word = split.lower() if written.islower() else split.capitalize() if written.istitle() else split
    guess = path.with_name(f"{name}_{word}{tail}")
    if guess.is_file():
        return guess
    want = guess.name.lower()
    try:
        found = [f for f in path.parent.iterdir() if f.name.lower() == want and f.is_file()]
    except OSError:
        found = []
    return found[0] if len(found) == 1 else guess


def available_problems(root: Optional[Union[str, Path]] = None) -> Dict[str, Tuple[Path, Path]]:
    """``{name: (train_file, test_file)}`` for every ``<name>_TRAIN`` file (:data:`FORMATS`) with its
    ``_TEST`` sibling, in the search folders and their subfolders (earlier folders win)."""
    found: Dict[str, Tuple[Path, Path]] = {}
    for d in search_dirs(root):
        if not d.is_dir():
            continue
        folders = [d] + sorted(p for p in d.iterdir() if p.is_dir())
        for sub in folders:
            for name, train, test in _pairs_in(sub):
                found.setdefault(name, (train, test))
    return found


def _pair_from_path(p: Path) -> Tuple[str, Path, Path]:
    if p.is_dir():
        pairs = _pairs_in(p)
        own = [q for q in pairs if q[0] == p.name]
        if own:
            pairs = own
        if len(pairs) != 1:
            found = ", ".join(q[0] for q in pairs) or "none"
            raise FileNotFoundError(f"{p}: expected one problem (a <Name>_TRAIN file with its <Name>_TEST file, "
                                    f"suffix {SUFFIXES}) in this folder, found {found}; pass a file path")
        return pairs[0]
    split = _split_of(p.name)
    if split is None:
        raise ValueError(f"{p}: a time-series file must be named <Name>_TRAIN or <Name>_TEST with the suffix "
                         f"{SUFFIXES} (e.g. GunPoint_TRAIN.tsv)")
    name, which, _ = split
    tail = p.name[len(name) + 1 + len(which):]                 # the suffix as written
    train, test = (p, companion(p, "TEST")) if which == "TRAIN" else (companion(p, "TRAIN"), p)
    for f in (train, test):
        if not f.is_file():
            other = _other_formats(f)
            hint = (f"; found {', '.join(other)} beside it: both files of a problem share one format, so convert "
                    f"it or rename it to {f.name} if it is in that format" if other else "")
            raise FileNotFoundError(f"{f} not found: a problem needs both <Name>_TRAIN{tail} and "
                                    f"<Name>_TEST{tail} in one folder{hint}")
    return name, train, test


def _other_formats(f: Path) -> List[str]:
    """Names of the files beside ``f`` that are its split in another accepted format (``M_TEST.txt`` for a missing
    ``M_TEST.tsv``)."""
    want = _split_of(f.name)
    try:
        return sorted(g.name for g in f.parent.iterdir() if g.is_file() and g.name != f.name
                      and (s := _split_of(g.name)) is not None and want is not None
                      and (s[0].lower(), s[1]) == (want[0].lower(), want[1]))
    except OSError:
        return []


def looks_like_path(s: str) -> bool:
    """Whether a problem reference is written as a path (a separator, ``~``, or a file suffix)."""
    return ("/" in s or os.sep in s or s.startswith("~") or s.startswith(".")
            or s.lower().endswith(tuple(f for f in FORMATS if f)))


def _lookup(name: str, problems: Dict[str, Tuple[Path, Path]]) -> Optional[Tuple[str, Path, Path]]:
    """``(name, train, test)`` of ``name`` among ``problems`` (exact spelling first, then any case)."""
    if name in problems:
        return (name, *problems[name])
    folded = {k.lower(): k for k in problems}
    key = folded.get(name.lower())
    return (key, *problems[key]) if key is not None else None


def resolve(name_or_path: Union[str, Path], root: Optional[Union[str, Path]] = None) -> Tuple[str, Path, Path]:
    """``(name, train_file, test_file)`` for a problem name or a path (see :data:`PATH_FORMS`).

    A name (a string that does not look like a path) is looked up in the search folders first
    (:func:`search_dirs`), so ``"ArrowHead"`` means the same files whatever the working folder (a
    warning says so when the working folder holds another ``ArrowHead``); only a name found there
    under no spelling is tried as a file or folder of the working folder, with a warning (write it
    as a path, ``./Name``, to say so)."""
    s = str(name_or_path)
    p = Path(s).expanduser()
    if isinstance(name_or_path, Path) or looks_like_path(s):
        if not p.exists():
            where = "" if p.is_absolute() else f", relative to the working folder {Path.cwd()}"
            raise FileNotFoundError(f"{p} does not exist{where} (a problem path is {PATH_FORMS})")
        return _pair_from_path(p)
    problems = available_problems(root)
    found = _lookup(s, problems)
    if found is not None:
        if p.exists() and p.resolve() not in (found[1].parent.resolve(), found[1].resolve()):
            warnings.warn(f"UCR/UEA problem {s!r}: reading {found[1]} from the search folders, not {p.resolve()} in "
                          f"the working folder (pass ./{s} for that one)", stacklevel=2)
        return found
    if p.exists():
        warnings.warn(f"UCR/UEA problem {s!r} is in no search folder; reading {p.resolve()} in the working folder "
                      f"(write it as a path, ./{s}, to say so)", stacklevel=2)
        return _pair_from_path(p)
    if not problems:
        raise FileNotFoundError(
            f"UCR/UEA problem {s!r}: no .ts files found. Install the bundled problems with `{INSTALL_HINT}` "
            "(or sktime), set STATESPACES_UCR to a folder of <Name>/<Name>_TRAIN.ts files, or pass a path."
        )
    regression = sorted(n for n, (train, _) in problems.items() if _declares_regression(train))
    usable = sorted(n for n in problems if n not in regression)
    also = f" (regression problems, which load_ucr refuses: {', '.join(regression)})" if regression else ""
    raise ValueError(f"unknown UCR/UEA problem {s!r}; available: {', '.join(usable)}{also} "
                     f"(searched {', '.join(str(d) for d in search_dirs(root))}); or pass a path: {PATH_FORMS}")


def _declares_regression(path: Path) -> bool:
    """Whether a ``.ts`` file's header says ``@targetLabel true`` (read up to ``@data``; other formats: False)."""
    if path.suffix.lower() != ".ts":
        return False
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                words = line.strip().lower().split()
                if words and words[0] == "@data":
                    return False
                if len(words) >= 2 and words[0] == "@targetlabel":
                    return _BOOL.get(words[1], False)          # as read_series_file reads the flag
    except OSError:
        return False
    return False


def is_packaged(path: Union[str, Path]) -> bool:
    """Whether ``path`` lies in the data folder shipped with aeon or sktime (:func:`package_data_dirs`)."""
    target = Path(path).resolve()
    return any(target.is_relative_to(d.resolve()) for d in package_data_dirs())


def stored_reference(name: str) -> str:
    """How a run stores the problem ``ucr:<name>`` (a name, not a path) in its config.

    The name itself when it resolves to data shipped with aeon or sktime (the same files wherever
    the run is evaluated or resumed); otherwise the absolute path of the train file it resolves
    to (in ``$STATESPACES_UCR``, or in the working folder), so that another working folder or
    environment reads the same files. A name that resolves to nothing is kept: loading it
    reports the available problems.
    """
    try:
        _, train, _ = resolve(name)
    except (OSError, ValueError):
        return name
    return name if is_packaged(train) else absolute_path(train)


# --------------------------------------------------------------------------------------------- load


def _class_order(declared: Optional[List[str]], seen: Iterable[str]) -> List[str]:
    names = list(declared) if declared else sorted(set(seen))
    try:
        return sorted(names, key=float)
    except ValueError:
        return names


def _check_training_classes(train_labels: Sequence[str], test_labels: Sequence[str], ftrain: Path,
                            ftest: Path) -> None:
    """Refuse a training split of fewer than 2 classes (a classifier of one class scores 100% on
    anything); warn when every class has a single training case (an index or time stamp read as a label), and
    about classes of the test split that training never shows (they can never be predicted, so the test score
    cannot reach 100%)."""
    seen = sorted(set(train_labels))
    if len(seen) < 2:
        raise ValueError(f"{ftrain}: every training case has class {seen[0]!r}; a classifier needs at least 2 classes "
                         "in the training split (check the file's label field)")
    if len(seen) == len(train_labels) and len(seen) > 2:
        warnings.warn(f"{ftrain}: each of its {len(seen)} classes has a single training case; if the first field is "
                      "not a class label (a time stamp or an index, as in anomaly-detection files), this file is not "
                      "a classification problem", stacklevel=3)
    unseen = sorted(set(test_labels) - set(seen))
    if unseen:
        n = sum(lab in unseen for lab in test_labels)
        warnings.warn(f"{ftest}: classes {unseen} ({n} test cases) never occur in {ftrain.name}; the model has an "
                      "output for each but never learns them, so expect those cases wrong", stacklevel=3)


def _fill_missing(case: np.ndarray, length: int, means: np.ndarray, how: str,
                  times: Optional[np.ndarray] = None) -> np.ndarray:
    """``case`` (C, >= length) cut to ``length`` steps, its NaN filled per channel: ``"interpolate"`` linearly
    between the channel's valid neighbours, in the case's sample ``times`` when it has them (else in steps), the
    nearest valid value past either end; ``"mean"`` (or a channel with no valid value) by ``means`` (C,)."""
    out = case[:, :length].copy()
    bad = np.isnan(out)
    if not bad.any():
        return out
    t = np.arange(length) if times is None else times[:length]
    for c in range(out.shape[0]):
        m = bad[c]
        if not m.any():
            continue
        if how == "mean" or m.all():
            out[c, m] = means[c]
        else:
            out[c, m] = np.interp(t[m], t[~m], out[c, ~m])
    return out


def constant_rows(x: np.ndarray) -> np.ndarray:
    """Which rows of x (C, n) hold one value up to float64 rounding (NaN ignored; an all-NaN row is not constant).

    ``std > 0`` is no such test: ``np.std([0.1] * 100)`` is 2.8e-17, so a constant channel of 0.1 would be
    scaled by 3.6e16 (its values read as +-1, a test value of 0.2 as 7e15)."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanmin(x, axis=1), np.nanmax(x, axis=1)
    return (hi - lo) <= CONSTANT_ULPS * np.finfo(np.float64).eps * np.maximum(np.abs(lo), np.abs(hi))


NORMALIZE = ("global", "series", "none")


def _normalize_mode(normalize: Union[bool, str]) -> str:
    if isinstance(normalize, bool):
        return "global" if normalize else "none"
    if isinstance(normalize, str) and normalize.lower() in NORMALIZE:
        return normalize.lower()
    raise ValueError(f"normalize: got {normalize!r}; valid: {', '.join(NORMALIZE)} (or True = global, False = none)")


def pool_series(series: np.ndarray, k: int) -> np.ndarray:
    """Mean over consecutive windows of ``k`` steps: (C, n) -> (C, ceil(n / k)); the last window
    averages the steps it has. ``k = 1`` returns the input."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"pool_series: k must be a positive integer, got {k!r}")
    n = series.shape[-1]
    if k == 1 or n == 0:
        return series
    starts = np.arange(0, n, k)
    counts = np.minimum(starts + k, n) - starts
    return np.add.reduceat(series, starts, axis=-1) / counts


def pool_factor(train_lengths: np.ndarray, max_length: Optional[int]) -> int:
    """The averaging window ``k = ceil(L_max / max_length)`` of ``max_length``, with ``L_max`` the
    longest **training** series (1 without ``max_length``).

    Taken from the training split alone so that the training inputs do not depend on the test
    file; the test series are then pooled with the same ``k``, so a test series longer than every
    training series may keep more than ``max_length`` steps."""
    if max_length is None:
        return 1
    return -(-int(np.max(train_lengths)) // max_length)


def split_grids(train_steps: np.ndarray, test_steps: np.ndarray) -> Tuple[int, int]:
    """``(L_train, L_test)``: the stored lengths of the two splits, given each series' steps after pooling.

    The training split is padded to its own longest series, whatever the test file holds, so the
    training inputs (and the time channel's clock ``t / (L_train - 1)``) are fixed by the training
    file alone. The test split is padded to the same length, or to its own longest series when
    that one is longer than every training series: such a series is kept whole, not cut."""
    L_train = int(np.max(train_steps))
    return L_train, max(L_train, int(np.max(test_steps)))


def lengths_wanted(return_lengths: Optional[bool], train_padded: bool, test_padded: bool) -> Tuple[bool, bool]:
    """Whether the (train, test) splits carry a ``lengths`` tensor.

    ``return_lengths`` True or False decides for both. By default the training split carries one
    when its own series are padded (differ in length), whatever the test file holds, and the test
    split when either split is padded: it needs one to mask its own padding, and beside a
    training split that has one the two stay alike."""
    if return_lengths is not None:
        return bool(return_lengths), bool(return_lengths)
    return train_padded, train_padded or test_padded


def _check_series_lengths(name: str, ftrain: Path, len_tr: np.ndarray, len_te: np.ndarray) -> None:
    """``normalize="series"`` subtracts each series' own mean and divides by its own spread: a one-step series
    becomes 0 and a two-step one -1, +1 whatever its values. Refuse a training split of one-step series (the
    inputs would all be 0) and warn when some series have fewer than three steps."""
    if int(len_tr.max()) < 2:
        raise ValueError(f"{ftrain}: every training series has a single step, which normalize='series' maps to 0 "
                         "(it subtracts the series' own mean); use normalize='global' (statespaces train: "
                         "--data.normalize global) or 'none'")
    short = int((len_tr < 3).sum() + (len_te < 3).sum())
    if short:
        warnings.warn(f"{name}: {short} of {len(len_tr) + len(len_te)} series have fewer than 3 steps, and "
                      "normalize='series' maps a one-step series to 0 and a two-step one to -1, +1 whatever its "
                      "values; normalize='global' (--data.normalize global) keeps them", stacklevel=3)


def load_ucr(
    name_or_path: Union[str, Path],
    normalize: Union[bool, str] = "global",
    missing: str = "interpolate",
    pad_value: float = 0.0,
    return_lengths: Optional[bool] = None,
    root: Optional[Union[str, Path]] = None,
    seed: int = 0,
    max_length: Optional[int] = None,
    time_unit: Optional[float] = None,
) -> SequenceData:
    """Load a UCR/UEA classification problem as right-padded sequences (n, L, channels).

    Args:
        name_or_path: problem name (``"JapaneseVowels"``, case-insensitive) or a path to a folder /
            ``<Name>_TRAIN`` / ``<Name>_TEST`` file (``.ts``, ``.tsv``, ``.txt`` or no suffix).
        normalize: ``"global"`` (per-channel, training statistics), ``"series"`` (each case on its
            own) or ``"none"``; ``True``/``False`` mean global/none.
        missing: ``"interpolate"`` or ``"mean"`` (see the module docstring).
        pad_value: value of the padded steps (after normalization).
        return_lengths: add the lengths tensor to each split; default: only when lengths vary
            (:func:`lengths_wanted`: the training split's choice is its own).
        root: an extra folder to search first.
        seed: unused (the archive's train/test split is fixed); accepted for the ``DATASETS`` interface.
        max_length: average every series over windows of ``ceil(L_max / max_length)`` steps, with
            ``L_max`` the longest training series (see the module docstring); None keeps every step.
        time_unit: the unit of ``info["times"]`` in the files' time (default: the training split's median interval,
            :func:`sample_times`; a checkpoint evaluated on other data passes the one it was trained with).

    Returns ``SequenceData`` with ``name = "ucr:<Name>"``, ``classes`` = the original label strings,
    ``length`` = the training split's padded length (``test_length`` set when the test split is
    longer), ``info`` holding the files, per-channel mean/std, the number of filled missing
    values, the pooling window ``pool`` and the shortest/longest series after pooling.
    """
    if missing not in ("interpolate", "mean"):
        raise ValueError(f"missing must be 'interpolate' or 'mean', got {missing!r}")
    mode = _normalize_mode(normalize)
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1):
        raise ValueError(f"max_length: got {max_length!r}; allowed: a positive integer (steps) or None")
    name, ftrain, ftest = resolve(name_or_path, root)
    tr, te = read_series_file(ftrain), read_series_file(ftest)
    for part, f in ((tr, ftrain), (te, ftest)):
        if part.is_regression:
            raise ValueError(f"{f} is a regression problem (@targetLabel); load_ucr handles classification, "
                             "use read_ts for the raw series and targets")
        if not part.series:
            raise ValueError(f"{f} has no cases (no line after @data)")
        if not part.labels:
            declared = "classlabel" in part.header
            raise ValueError(f"{f} has no class labels ("
                             + ("@classLabel false" if declared else "no @classLabel line before @data")
                             + "); a classification .ts file declares them: @classLabel true <label> <label> ...")
    if tr.n_channels != te.n_channels:
        raise ValueError(f"{name}: train has {tr.n_channels} channels, test {te.n_channels}")
    _check_training_classes(tr.labels, te.labels, ftrain, ftest)
    classes = _class_order(tr.class_labels or te.class_labels, list(tr.labels) + list(te.labels))
    index = {c: k for k, c in enumerate(classes)}
    for part, f in ((tr, ftrain), (te, ftest)):
        unknown = sorted(set(part.labels) - set(index))
        if unknown:
            raise ValueError(f"{f}: labels {unknown} are not among the classes {classes}")

    # length of a case = its longest channel; shorter channels were NaN-padded by the parser and
    # are filled like missing values
    len_tr, len_te = tr.lengths, te.lengths
    if mode == "series":
        _check_series_lengths(name, ftrain, len_tr, len_te)
    C = tr.n_channels
    flat = np.concatenate([s[:, :n] for s, n in zip(tr.series, len_tr)], axis=1)  # (C, total steps)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a channel with no valid value
        mean = np.nanmean(flat, axis=1)
        std = np.nanstd(flat, axis=1)
    mean = np.where(np.isfinite(mean), mean, 0.0)                  # training mean: fills missing values
    std = np.where(np.isfinite(std) & (std > 0) & ~constant_rows(flat), std, 1.0)
    shift, scale = (mean, std) if mode == "global" else (np.zeros(C), np.ones(C))
    n_missing = int(sum(np.isnan(s[:, :n]).sum() for s, n in zip(tr.series + te.series, np.r_[len_tr, len_te])))
    # every choice that shapes the inputs comes from the training split (statistics above, the
    # pooling window and the padded length here); the test split is mapped onto that grid
    k = pool_factor(len_tr, max_length)
    len_tr, len_te = -(-len_tr // k), -(-len_te // k)             # steps kept after pooling
    L_train, L_test = split_grids(len_tr, len_te)

    f_of = {id(tr): ftrain, id(te): ftest}

    def build(part: TSFile, lens: np.ndarray, L: int) -> Tuple[torch.Tensor, torch.Tensor]:
        x = np.full((len(part.series), L, C), pad_value, dtype=np.float32)
        for i, (s, n) in enumerate(zip(part.series, lens)):
            raw = s[:, :part.series[i].shape[1]]
            stamps = part.times[i] if part.times is not None else None      # gaps filled in time, not in steps
            if mode == "series":        # a missing value becomes the case's own mean (0 after its z-scores)
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)      # a channel with no valid value
                    own = np.nanmean(raw, axis=1)
                filled = _fill_missing(s, raw.shape[1], np.where(np.isfinite(own), own, mean), missing, stamps)
                with np.errstate(over="ignore", invalid="ignore"):
                    mu, sd = filled.mean(axis=1, keepdims=True), filled.std(axis=1, keepdims=True)
                if not (np.isfinite(mu).all() and np.isfinite(sd).all()):   # its z-scores would read 0 or NaN
                    raise ValueError(f"{f_of[id(part)]}: case {i} is too large for its own statistics (mean or "
                                     "standard deviation overflows float64); rescale the file")
                flat_channel = constant_rows(filled)[:, None] | ~(sd > 0)
                z = np.where(flat_channel, 0.0, (filled - mu) / np.where(flat_channel, 1.0, sd))
            else:
                filled = _fill_missing(s, raw.shape[1], mean, missing, stamps)
                z = (filled - shift[:, None]) / scale[:, None]
            with np.errstate(over="ignore"):           # an overflow is reported below, naming the case
                x[i, :n] = pool_series(z, k).T
            if not np.isfinite(x[i, :n]).all():
                fix = ("rescale the file, or normalise it (data.normalize 'global' or 'series')" if mode == "none"
                       else "rescale the file (the training statistics cannot bring it into range)")
                raise ValueError(f"{f_of[id(part)]}: case {i} holds values beyond float32's range (+-3.4e38) after "
                                 f"normalisation {mode!r}, the precision the series are read into; {fix}")
        y = np.array([index[lab] for lab in part.labels], dtype=np.int64)
        return torch.from_numpy(x), torch.from_numpy(y)

    if time_unit is not None:
        time_unit = check_real("time_unit", time_unit, what="positive finite number (the unit of the sample times)")
    times, times_issue, unit = sample_times(tr, te, k, L_train, L_test, (ftrain, ftest), time_unit)
    padded_tr, padded_te = bool((len_tr != L_train).any()), bool((len_te != L_test).any())
    if return_lengths is False and (padded_tr or padded_te):
        warnings.warn(f"{name}: return_lengths=False on series of different lengths: without the lengths a model "
                      f"reads the padding ({pad_value}) as data; keep them (the default) unless the model masks the "
                      "padding by itself", stacklevel=2)
    want_tr, want_te = lengths_wanted(return_lengths, padded_tr, padded_te)
    splits = []
    for part, lens, L, want in ((tr, len_tr, L_train, want_tr), (te, len_te, L_test, want_te)):
        x, y = build(part, lens, L)
        tensors = (x, y, torch.from_numpy(lens)) if want else (x, y)
        splits.append(TensorDataset(*tensors))
    return SequenceData(
        train=splits[0], test=splits[1], d_input=C, n_classes=len(classes), length=L_train, name=f"ucr:{name}",
        classes=classes, test_length=L_test if L_test != L_train else None,
        info={"train_file": str(ftrain), "test_file": str(ftest), "mean": mean, "std": std,  # train stats
              "missing_filled": n_missing, "missing": missing, "normalize": mode,
              "min_length": int(min(len_tr.min(), len_te.min())), "max_length": L_test, "pool": k,
              **({} if times is None else {"times": times, "time_unit": unit}),
              **({} if times_issue is None else {"times_issue": times_issue})},
    )


def sample_times(tr: TSFile, te: TSFile, k: int, L_train: int, L_test: int,
                 files: Tuple[Path, Path] = (Path("TRAIN"), Path("TEST")), unit: Optional[float] = None
                 ) -> Tuple[Optional[Dict[str, torch.Tensor]], Optional[str], float]:
    """The sample times of both splits of a ``@timeStamps`` problem on the grid the series are read into, why there
    are none when the files declare time stamps that cannot be used (None otherwise), and their unit (the
    training split's median interval between windows, unless ``unit`` is given).

    Times: ``{"train": (n, L_train), "test": (n, L_test)}`` float64, each series' times from 0 at its first sample
    in units of the median interval of the training split, 0 on padding. Under pooling by ``k`` a window's time is
    that of its first sample (the values are its mean, :func:`pool_series`): evenly spaced samples read 0, 1, 2,
    ... as the steps do, a short last window included. None without time stamps, or when a case's are unusable
    (:attr:`TSFile.times_issue`) or only one split has them. ``data.time_channel`` reads them
    (:func:`~statespaces.data.base.with_time_channel`)."""
    if tr.times is None and te.times is None:
        return None, None, 1.0
    for part, f in ((tr, files[0]), (te, files[1])):
        if part.times is None:
            return None, (f"{f} has no time stamps (@timeStamps false) while the other file of the problem has "
                          "them"), 1.0
        if part.times_issue is not None:
            return None, part.times_issue, 1.0
    starts = [[cast(np.ndarray, t)[::k] for t in part.times or ()] for part in (tr, te)]
    if unit is None:
        gaps = np.concatenate([np.diff(t) for t in starts[0]])
        unit = float(np.median(gaps)) if gaps.size else 1.0
        unit = unit if np.isfinite(unit) and unit > 0 else 1.0
    out = {}
    for split, series, L in (("train", starts[0], L_train), ("test", starts[1], L_test)):
        t = torch.zeros(len(series), L, dtype=torch.float64)
        for i, s in enumerate(series):
            t[i, : s.size] = torch.from_numpy((s - s[0]) / unit)
        out[split] = t
    return out, None, unit
