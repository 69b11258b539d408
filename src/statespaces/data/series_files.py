r"""Time-series files: the formats of the UCR/UEA archives, read and written (no lookup, no preprocessing).

File formats (:data:`FORMATS`; the two files of a problem share one)
----------------------------------------------------------------------
* ``.ts`` -- the sktime/aeon format, uni- or multivariate (below).
* ``.tsv`` -- the UCR 2018 archive: one case per line, the class label first, then the values,
  tab-separated; univariate; ``NaN`` (or an empty field: each tab separates two fields) marks a
  missing value, and trailing ``NaN`` pad the shorter series of a variable-length problem (the
  case's length ends at its last number). A line without a label is an error.
* ``.txt`` or no suffix -- the older UCR 2015 archive (``<Name>_TRAIN``): the same layout with the
  values separated by commas (an empty field between two is a missing value) or white space
  (labels such as ``1.0000000e+00`` are read as ``1``).
* ``.csv`` -- the same layout, comma-separated, as a spreadsheet or ``numpy.savetxt`` writes it; a first
  line of column names (``label,t0,t1,...`` or pandas' ``label,0,1,...``) is a header and is skipped.

The ``.ts`` format (parsed here by :func:`parse_ts`, written by :func:`format_ts`)
-----------------------------------------------------------------------------------
Comment lines start with ``#`` or ``%``. Header lines (keys are case-insensitive):
``@problemName``, ``@timeStamps``, ``@missing``, ``@univariate``, ``@dimensions``,
``@equalLength``, ``@seriesLength``, ``@classLabel true <labels...>`` (or ``false``),
``@targetLabel true`` (regression), then ``@data``. Each data line is one case: the channels
separated by ``:``, the values of a channel by ``,``, and the class label (or regression target)
as the last ``:`` field. ``?`` (or ``NaN``) marks a missing value and becomes NaN. Series may
have different lengths (``@equalLength false``); within a case, channels shorter than the
longest are NaN-padded at the end. With ``@timeStamps true`` the values are written as
``(timestamp,value)`` pairs; the values go to ``series`` and each case's times to ``times`` (channels sampled at
different times are put on the union of their times, NaN where a channel has no sample), and a file whose samples
are unevenly spaced in some series warns that a model given the values alone reads them as evenly spaced steps
(times as numbers or as ISO dates; :func:`parse_ts`; the trainer's ``data.time_channel`` and ``model.intervals``
use them).

:func:`read_series_file` reads one file by its suffix into a :class:`TSFile` (series as float64 arrays with NaN
for missing values, labels as text); :mod:`statespaces.data.ucr` finds a problem's two files and turns them into a
:class:`~statespaces.data.base.SequenceData`.
"""
from __future__ import annotations

import csv
import math
import re
import warnings
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union, cast

import numpy as np

#: File suffixes of a problem's ``<Name>_TRAIN`` / ``<Name>_TEST`` files, in lookup order.
FORMATS = (".ts", ".tsv", ".txt", ".csv", "")
#: The suffixes of :data:`FORMATS` in words (used in error messages).
SUFFIXES = ", ".join(f for f in FORMATS if f) + " or none"

_BOOL = {"true": True, "false": False}



@dataclass
class TSFile:
    """Contents of one ``.ts`` file.

    ``series[i]`` is a float64 array (channels, length_i) with NaN for missing values;
    ``labels[i]`` is the class label string (classification), a float (regression), or the list is
    empty when the file has no labels. ``header`` holds every ``@key value`` line (lower-cased
    keys, raw values).
    """

    series: List[np.ndarray]
    labels: list
    problem_name: Optional[str] = None
    class_labels: Optional[List[str]] = None
    is_regression: bool = False
    timestamps: bool = False
    header: Dict[str, str] = field(default_factory=dict)
    #: with ``@timeStamps true``: each case's sample times since its first sample, float64 (numbers in the file's
    #: unit, ISO dates in nanoseconds; the differences formed exactly from the text), None for a case whose times are
    #: unreadable, not finite or not increasing; None for a file without time stamps
    times: Optional[List[Optional[np.ndarray]]] = None
    #: the first case whose time stamps are unusable, and why (``"<file>, line N: ..."``); None if all are usable
    times_issue: Optional[str] = None

    @property
    def n_channels(self) -> int:
        return self.series[0].shape[0] if self.series else 0

    @property
    def lengths(self) -> np.ndarray:
        return np.array([s.shape[1] for s in self.series], dtype=np.int64)


def _split_fields(line: str) -> List[str]:
    """Split a data line on ':' outside parentheses (timestamps contain ':')."""
    if "(" not in line:
        return line.split(":")
    out, depth, start = [], 0, 0
    for i, ch in enumerate(line):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == ":" and depth == 0:
            out.append(line[start:i])
            start = i + 1
    out.append(line[start:])
    return out


_PAIR = re.compile(r"\(([^()]*)\)")


#: Nanoseconds per unit of a parsed ISO date (units of a day and below; years, months and weeks go through days).
_NS = {"D": 86_400 * 10**9, "h": 3_600 * 10**9, "m": 60 * 10**9, "s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}


#: A decimal number as the ``.ts`` format writes one (no ``1/3``, no ``1_000``).
_DECIMAL = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")
#: Fractional seconds past nanoseconds, cut before numpy reads a date (its picosecond units span only +-106 days).
_SUB_NS = re.compile(r"(\.\d{9})\d+")
#: The relative error of a float64 time stamp's difference from its channel's first below which the float64 values
#: are taken as they are (else the differences are formed exactly from the text).
_FLOAT_EXACT = 1e-12

_Times = Tuple[str, Union[np.ndarray, List[Any]]]


def _time_values(tokens: Sequence[str]) -> Optional[_Times]:
    """Time stamps of one channel: ``("number", ...)`` as float64 when that keeps the differences to 1e-12 (most
    files), else as :class:`fractions.Fraction` of the decimal text (epoch seconds with milliseconds: float64 keeps
    the milliseconds to 2e-4); or ``("date", ...)`` as integer nanoseconds since 1970 (Python ints: any year; digits
    past nanoseconds dropped); None if unreadable or not finite."""
    try:
        t = np.array(tokens, dtype=np.float64)
    except ValueError:
        t = None
    if t is not None and not any("_" in x for x in tokens):       # float() also reads 1_000; '1/3' fails above
        if not np.isfinite(t).all():
            return None
        d = np.abs(np.diff(t))
        span = float(np.abs(t).max()) if t.size else 0.0
        if t.size < 2 or (d.min() > 0 and span * 2.3e-16 <= _FLOAT_EXACT * float(d.min())):
            return "number", t
        return "number", [Fraction(x.strip()) for x in tokens]
    if any(x.strip().lower() in ("today", "now") or _DECIMAL.fullmatch(x)
           for x in tokens):
        return None
    out = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")        # "no explicit representation of timezones": converted to UTC
            for x in tokens:
                d = np.datetime64(_SUB_NS.sub(r"\1", x.strip()))
                unit = np.datetime_data(d.dtype)[0]
                if unit not in _NS:                             # years, months, weeks: to days
                    d, unit = d.astype("datetime64[D]"), "D"
                if np.isnat(d):
                    return None
                out.append(int(d.astype(np.int64)) * _NS[unit])
    except (ValueError, TypeError, OverflowError):
        return None
    return "date", out


def _case_times(tokens: List[Optional[List[str]]]) -> Tuple[Optional[List[np.ndarray]], Optional[str], str]:
    """The sample times of one case's channels, float64 since the case's first sample (the differences formed
    exactly where float64 would not keep them: :func:`_time_values`), or None and why; and the kind (``"number"`` /
    ``"date"``)."""
    if any(t is None for t in tokens):
        return None, "a (time,value) pair without its time", ""
    parsed = [_time_values(cast(List[str], t)) for t in tokens]
    if any(p is None for p in parsed):
        return None, "time stamps that are not numbers or ISO dates, or not finite", ""
    kinds = {cast(_Times, p)[0] for p in parsed}
    if len(kinds) > 1:
        return None, "time stamps mixing numbers and ISO dates", ""
    values = [cast(_Times, p)[1] for p in parsed]
    if all(isinstance(v, np.ndarray) for v in values):              # float64 keeps them: vectorised
        first = min((float(v[0]) for v in values if len(v)), default=0.0)
        return [cast(np.ndarray, v) - first for v in values], None, kinds.pop()
    exact = [[Fraction(float(x)) for x in v] if isinstance(v, np.ndarray) else v for v in values]
    origin = min((v[0] for v in exact if v), default=0)
    try:
        out = [np.array([float(x - origin) for x in v], dtype=np.float64) for v in exact]
    except OverflowError:
        return None, "time stamps that are not numbers or ISO dates, or not finite", ""
    if not all(np.isfinite(t).all() for t in out):
        return None, "time stamps that are not numbers or ISO dates, or not finite", ""
    return out, None, kinds.pop()


def _evenly_spaced(times: Optional[np.ndarray]) -> bool:
    """Whether consecutive sample times have one interval (to 1e-9 relative); unreadable times count as even (no
    claim is made about them)."""
    if times is None or times.size < 3:
        return True
    d = np.diff(times)
    return bool(np.ptp(d) <= 1e-9 * np.abs(d).max())


def _parse_values(text: str, timestamps: bool, where: str,
                  times: Optional[List[Optional[List[str]]]] = None) -> np.ndarray:
    """The values of one channel; with ``timestamps``, the pairs' time stamps as written (None if a pair has none)
    are appended to ``times``."""
    text = text.strip()
    if timestamps:
        pairs = _PAIR.findall(text)
        if not pairs and text:
            raise ValueError(f"{where}: expected (timestamp,value) pairs, got {text[:40]!r}")
        split = [p.rsplit(",", 1) for p in pairs]
        tokens = [v[-1] for v in split]
        if times is not None:
            times.append([v[0] for v in split] if all(len(v) == 2 for v in split) else None)
    else:
        if not text:
            raise ValueError(f"{where}: empty channel")
        tokens = text.split(",")
    if "?" in text:
        tokens = ["nan" if t.strip() == "?" else t for t in tokens]
    try:
        v = np.array(tokens, dtype=np.float64)
    except ValueError:
        bad = next(t for t in tokens if not _is_float(t))
        raise ValueError(f"{where}: cannot read {bad!r} as a number (missing values are written '?')") from None
    _check_no_infinity(v, tokens, where, "'?'")
    return v


def _check_no_infinity(v: np.ndarray, tokens: Sequence[str], where: str, missing: str) -> None:
    """Refuse an infinite value where it is read (file and line), not later as a NaN/inf input of the model."""
    inf = np.flatnonzero(np.isinf(v))
    if inf.size:
        raise ValueError(f"{where}: value {tokens[inf[0]].strip()!r} is not finite; write a missing value as "
                         f"{missing} (it is then filled), or clean the file")


def _is_float(t: str) -> bool:
    try:
        float(t)
        return True
    except ValueError:
        return False


def parse_ts(text: Union[str, Iterable[str]], source: str = "<string>") -> TSFile:
    """Parse the text of a ``.ts`` file (a string or an iterable of lines). See the module docstring."""
    lines = text.splitlines() if isinstance(text, str) else text
    header: Dict[str, str] = {}
    series: List[np.ndarray] = []
    labels: list = []
    in_data = False
    n_dims: Optional[int] = None
    class_labels: Optional[List[str]] = None
    has_class = has_target = timestamps = False
    uneven: List[str] = []                           # channels whose time stamps are unevenly spaced
    uneven_series = 0
    case_times: List[Optional[np.ndarray]] = []
    counts: List[int] = []                           # samples per case (its longest channel), for @equalLength
    times_issue: Optional[str] = None
    kinds: Dict[str, str] = {}                       # "number" / "date": the first case stamped so
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip().lstrip("\ufeff")
        if not line or line[0] in "#%":
            continue
        where = f"{source}, line {lineno}"
        if not in_data:
            if line[0] != "@":
                raise ValueError(f"{where}: expected a '@key value' header line or '@data' before the data, "
                                 f"got {line[:40]!r}")
            key, *rest = line[1:].split(None, 1)           # "@key value", a space or a tab between
            key, value = key.lower(), (rest[0].strip() if rest else "")
            if key == "data":
                in_data = True
                n_dims = int(header["dimensions"]) if "dimensions" in header else None
                if _BOOL.get(header.get("univariate", "").lower()) and n_dims not in (None, 1):
                    raise ValueError(f"{where}: @univariate true but @dimensions {n_dims}")
                if _BOOL.get(header.get("univariate", "").lower()):
                    n_dims = 1
                continue
            header[key] = value
            if key == "classlabel":
                flag, *names = value.split()
                if flag.lower() not in _BOOL:
                    raise ValueError(f"{where}: @classLabel must be followed by true/false, got {value!r}")
                has_class = _BOOL[flag.lower()]
                class_labels = names if has_class else None
                if has_class and len(set(names)) != len(names):
                    raise ValueError(f"{where}: repeated class labels in {names}")
            elif key == "targetlabel":
                has_target = _BOOL.get(value.split()[0].lower(), False) if value else False
            elif key == "timestamps":
                timestamps = _BOOL.get(value.lower(), False)
            elif key in ("dimensions", "serieslength"):
                if not value.isdigit() or int(value) < 1:
                    raise ValueError(f"{where}: @{key} must be a positive integer, got {value!r}")
            continue
        parts = _split_fields(line)
        label = None
        if has_class or has_target:
            if len(parts) < 2:
                raise ValueError(f"{where}: expected channels followed by ':<label>', found no ':'")
            label = parts.pop().strip()
        if n_dims is None:
            n_dims = len(parts)
        if len(parts) != n_dims:
            raise ValueError(f"{where}: found {len(parts)} channels, expected {n_dims}")
        tokens: List[Optional[List[str]]] = []
        chans = [_parse_values(p, timestamps, f"{where}, channel {c}", tokens) for c, p in enumerate(parts)]
        chan_times, issue, kind = _case_times(tokens) if timestamps else (None, None, "")
        if chan_times is not None:
            uneven_here = [c for c, t in enumerate(chan_times) if not _evenly_spaced(t)]
            uneven += [f"{where}, channel {c}" for c in uneven_here]
            uneven_series += bool(uneven_here)
            kinds.setdefault(kind, where)
            if len(kinds) > 1 and times_issue is None:
                times_issue = (f"time stamps mixing numbers ({kinds.get('number')}) and ISO dates "
                               f"({kinds.get('date')}) in one file")
        case, grid, grid_issue = _on_time_grid(chans, chan_times if timestamps else None)
        issue = issue or grid_issue
        series.append(case)
        case_times.append(grid)
        counts.append(max(len(c) for c in chans))
        if issue is not None and times_issue is None:
            times_issue = f"{where}: {issue}"
        if has_class:
            if cast(str, label).lower() in _NO_LABEL:
                raise ValueError(f"{where}: the class label (after the last ':') is missing; write the case's label "
                                 "there or remove the line")
            if class_labels and label not in class_labels:
                raise ValueError(f"{where}: class label {label!r} is not declared in @classLabel {class_labels}")
            labels.append(label)
        elif has_target:
            try:
                labels.append(float(cast(str, label)))
            except ValueError:
                raise ValueError(f"{where}: regression target {label!r} is not a number") from None
    if not in_data:
        raise ValueError(f"{source}: no @data line found; is this a .ts file?")
    if uneven:
        warnings.warn(f"{source}: @timeStamps true, and the samples of {uneven_series} series are unevenly spaced "
                      f"(first: {uneven[0]}); a model given the values alone reads them as evenly spaced steps and "
                      "does not see the gaps. statespaces train gives it the times with --data.time_channel true "
                      "(the clock channel carries them) and --model.intervals true (the layers step over them); in "
                      "Python, layer(x, timestamps=t) (docs/s5.md)", stacklevel=2)
    if has_class and not class_labels:        # labels the header declares are the classes, spelt as declared
        _check_label_spellings(labels, source)
    if _BOOL.get(header.get("equallength", "").lower()) and series:
        lens = set(counts)              # samples per channel: channels stamped at different times share a longer grid
        declared = int(header["serieslength"]) if "serieslength" in header else None
        if len(lens) > 1 or (declared is not None and lens != {declared}):
            raise ValueError(f"{source}: @equalLength true but the series have lengths {sorted(lens)[:10]}"
                             + (f" (declared @seriesLength {declared})" if declared else ""))
    return TSFile(series=series, labels=labels, problem_name=header.get("problemname"), class_labels=class_labels,
                  is_regression=has_target and not has_class, timestamps=timestamps, header=header,
                  times=case_times if timestamps else None, times_issue=times_issue)


def _on_time_grid(chans: List[np.ndarray], times: Optional[List[np.ndarray]]
                  ) -> Tuple[np.ndarray, Optional[np.ndarray], Optional[str]]:
    """One case (channels, length) from its channels' values, its sample times (length,) or None, and why the times
    are unusable (None if usable or absent).

    Without times (or with a channel's not strictly increasing), the channels are aligned by index, the shorter
    NaN-padded at the end. With times (:func:`_case_times`), on the sorted union of the channels' times: a channel
    has NaN (a missing value, filled like any other) where it has no sample; channels sampled together keep their
    values as they are."""
    def by_index() -> np.ndarray:
        case = np.full((len(chans), max(len(c) for c in chans)), np.nan)
        for c, v in enumerate(chans):
            case[c, : len(v)] = v
        return case

    if times is None:
        return by_index(), None, None
    if any(t.size > 1 and not bool((np.diff(t) > 0).all()) for t in times):
        return by_index(), None, "time stamps that are not strictly increasing (repeated or out of order)"
    grid = np.unique(np.concatenate(times))
    case = np.full((len(chans), grid.size), np.nan)
    for c, (v, t) in enumerate(zip(chans, times)):
        case[c, np.searchsorted(grid, t)] = v
    return case, grid, None


def _check_label_spellings(labels: Iterable[str], source: str) -> None:
    """Refuse two class labels that are one number written two ways (``1`` and ``1.0``) in a file whose header does
    not declare its classes: a ``.ts`` label is text, so they would be two classes, where the ``.tsv`` / ``.txt``
    reader (:func:`_label_text`) reads one. Classes declared in ``@classLabel true ...`` are taken as declared."""
    seen: Dict[str, str] = {}
    for lab in dict.fromkeys(labels):
        key = _label_text(lab)
        if key in seen and seen[key] != lab:
            raise ValueError(f"{source}: class labels {seen[key]!r} and {lab!r} are the same number written two ways; "
                             "a .ts class label is text, so they would be two classes: write each class one way, or, "
                             f"if they are two classes, declare them: @classLabel true {seen[key]} {lab} ...")
        seen.setdefault(key, lab)


def read_ts(path: Union[str, Path]) -> TSFile:
    """Read and parse one ``.ts`` file."""
    path = Path(path)
    with open(path, encoding="utf-8", errors="replace") as f:
        return parse_ts(f, source=str(path))


def _label_text(tok: str) -> str:
    """A UCR label as text: numbers written the same way however the file spells them (``1.0000000e+00``,
    ``1.0`` and ``1`` are all ``"1"``); other labels unchanged."""
    try:
        v = float(tok)
    except ValueError:
        return tok
    if not math.isfinite(v):
        return tok
    return str(int(v)) if v.is_integer() else repr(v)


def _split_ucr_line(line: str, sep: Optional[str]) -> List[str]:
    """The fields of one data line of a UCR table, the label first, each stripped of white space.

    A tab or a comma separates exactly two fields, so an empty field (``1\t0.5\t\t0.3``,
    ``1,0.5,,0.3``: how pandas writes NaN) stays in place as a missing value instead of shifting
    the rest of the series left, and a line starting with the separator has an empty label. Only
    white space other than a tab (the old archive's aligned columns) separates fields by runs.
    ``sep=None`` picks per line: a comma if the line has one, else a tab if it has one, else runs
    of white space. Comma- and tab-separated fields may be quoted (``"a",5,7``: read by :mod:`csv`).
    """
    if sep is None:
        sep = "," if "," in line else "\t" if "\t" in line else " "
    if sep.isspace() and sep != "\t":
        return line.split()
    if '"' in line:                                      # quoted fields, as a spreadsheet writes them
        return [t.strip() for t in next(csv.reader([line], delimiter=sep, skipinitialspace=True))]
    return [t.strip() for t in line.split(sep)]


#: Label fields that mean "no label" (an empty field, or the archive's missing-value marks).
_NO_LABEL = ("", "?", "nan")


def _check_header(labels: List[str], first_line: int, source: str) -> None:
    """Refuse a column-header line (``label 1 2 3 ...`` written by pandas): its label is the only
    one that is not a number, so it would become a class of one example."""
    if len(labels) < 2 or _is_float(labels[0]) or not all(_is_float(lab) for lab in labels[1:]):
        return
    raise ValueError(f"{source}, line {first_line}: looks like a column header (label {labels[0]!r}, every other "
                     "label is a number); remove that line, a UCR file holds one case per line")


def _check_not_an_index(labels: List[str], first_line: int, source: str) -> None:
    """Refuse a file whose label column counts its lines (0, 1, 2, ... or 1, 2, 3, ...): an index or a time stamp,
    one long series written a step per line (as anomaly-detection data are), where each case would be its own class.
    Only past 100 lines: a problem with one training case per class (UCR's Fungi, 18) may list them in order, and no
    UCR/UEA problem has more than 60 classes."""
    if len(labels) <= 100:
        return
    start = labels[0]
    if start in ("0", "1") and labels == [str(int(start) + i) for i in range(len(labels))]:
        raise ValueError(f"{source}, line {first_line}: the first column counts the lines ({', '.join(labels[:3])}, "
                         "...), so every case would be its own class: it looks like an index or a time stamp, not a "
                         "class label. A UCR file holds one case per line, its label first; a file of one long series "
                         "with a step per line (anomaly-detection data) is not a classification problem")


def parse_ucr_table(text: Union[str, Iterable[str]], source: str = "<string>", sep: Optional[str] = None,
                    header: bool = False) -> TSFile:
    """Parse a UCR archive file: one univariate case per line, the class label first.

    ``sep="\t"`` reads the 2018 ``.tsv`` files; ``sep=None`` (the 2015 ``.txt`` files) splits each
    line on its commas, else its tabs, else runs of white space (:func:`_split_ucr_line`); ``sep=","``
    the ``.csv`` files. ``NaN``, ``?`` or an empty field inside a series is a missing value; trailing
    ones are padding (the case ends at its last number). A line without a label is an error naming the
    line; so is a column-header line, unless ``header`` (``.csv``): then a first line that is one
    (column names, or a non-numeric label before numeric names) is skipped.
    """
    lines = text.splitlines() if isinstance(text, str) else text
    series: List[np.ndarray] = []
    labels: List[str] = []
    first = 0
    for lineno, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n").lstrip("\ufeff")
        if not line.strip() or line.lstrip()[0] in "#%":
            continue
        where = f"{source}, line {lineno}"
        if line.lstrip()[0] == "@":
            raise ValueError(f"{where}: a '@' header line: this is a .ts file, name it <Name>_TRAIN.ts")
        tokens = _split_ucr_line(line, sep)
        if header:                                          # the first line of a .csv
            if tokens[0] == "" and len(tokens) > 1:
                raise ValueError(f"{where}: the first field is empty, as in the header of an index column that "
                                 "pandas writes by default; write the file with df.to_csv(path, index=False) (the "
                                 "label first, then the values), or drop that column")
            header = False                                  # only the first line can be a header
            if _is_column_names(tokens):                    # it names the columns: skip it
                if any(_is_float(t) for t in tokens):       # numbers as names: a case could read the same way
                    warnings.warn(f"{where}: {line.strip()[:60]!r} is read as column names and skipped (a label "
                                  "before the numbers 0, 1, 2, ... or 1, 2, 3, ..., as pandas writes them); if it is "
                                  "a case, write a header line of column names above it", stacklevel=4)
                continue
        if len(tokens) < 2:
            raise ValueError(f"{where}: expected a class label followed by the values, got {line.strip()[:40]!r}"
                             + _separator_hint(line, sep))
        label, values = tokens[0], ["nan" if t in ("?", "") else t for t in tokens[1:]]
        if label.lower() in _NO_LABEL:
            raise ValueError(f"{where}: the class label (the first field) is missing; write the case's label there "
                             "or remove the line")
        try:
            v = np.array(values, dtype=np.float64)
        except ValueError:
            bad = next(t for t in values if not _is_float(t))
            raise ValueError(f"{where}: cannot read {bad!r} as a number (a UCR file has the label first, then "
                             "the values; missing values are NaN)") from None
        _check_no_infinity(v, values, where, "NaN or an empty field")
        valid = np.flatnonzero(~np.isnan(v))
        if valid.size == 0:
            raise ValueError(f"{where}: the series has no value (every field is missing); give it values or "
                             "remove the line")
        series.append(v[None, : valid[-1] + 1])
        labels.append(_label_text(label))
        first = first or lineno
    if not series:
        raise ValueError(f"{source}: no cases found (a UCR file has one line per case: label, then values)")
    _check_header(labels, first, source)
    _check_not_an_index(labels, first, source)
    classes = sorted(set(labels))
    fmt = {"\t": "ucr-tsv", ",": "ucr-csv"}.get(sep or "", "ucr-txt")
    return TSFile(series=series, labels=labels, problem_name=None, class_labels=None,
                  header={"format": fmt, "classes": " ".join(classes)})


#: The field separator each format reads, for messages.
_SEPARATORS: Dict[Optional[str], str] = {"\t": "tabs (.tsv)", ",": "commas (.csv)",
                                         None: "commas, tabs or spaces (.txt or no suffix)"}


def _separator_hint(line: str, sep: Optional[str]) -> str:
    """Why a line read as one field: the separator its format reads, and another it seems to use."""
    used = next((name for c, name in ((";", "semicolons"), (",", "commas"), ("\t", "tabs"), (" ", "spaces"))
                 if c != sep and c in line.strip()), None)
    return (f" (fields separated by {_SEPARATORS.get(sep, repr(sep))}"
            + (f"; this line seems separated by {used}" if used else "")
            + ": write the file with that separator, or give it the suffix of its format)")


def _is_column_names(tokens: List[str]) -> bool:
    """Whether the fields of a first line are a CSV header: names where the values go (``t0, t1``: none of them
    a number, the missing-value marks ``?`` and empty fields aside), or a label that is not a number before the
    integers 0, 1, 2, ... or 1, 2, 3, ... (pandas' ``label,0,1,2``), or the integers 0, 1, ..., n - 1 over every
    field, the label's included (what ``pd.DataFrame(np.column_stack([y, X])).to_csv(path, index=False)`` writes).
    A line with some numbers and some words is a case with a typo (reported as such), not a header. Ambiguous by
    nature: a first case with a text label whose values are exactly 0, 1, 2, ..., or with label 0 and values
    exactly 1, 2, ..., reads as a header."""
    if len(tokens) > 2 and tokens == [str(i) for i in range(len(tokens))]:
        return True                                    # pandas' column numbers 0, 1, ..., n - 1 (label column too)
    label, values = tokens[0], [t for t in tokens[1:] if t not in ("", "?")]
    numeric = [_is_float(t) for t in values]
    if not values or (any(numeric) and not all(numeric)):
        return False
    if not any(numeric):
        return True
    if _is_float(label) or len(values) < 2:
        return False
    cols = [float(t) for t in values]
    return cols[0] in (0.0, 1.0) and all(b - a == 1 for a, b in zip(cols, cols[1:]))


def read_series_file(path: Union[str, Path]) -> TSFile:
    """Read one problem file by its suffix: ``.ts`` (:func:`read_ts`), ``.tsv``, ``.txt``/none or ``.csv``
    (:func:`parse_ucr_table`)."""
    path = Path(path)
    split = _split_of(path.name)          # <Name>_TRAIN<suffix>: a dot inside the name (Wine.v2_TRAIN) is no suffix
    suffix = split[2] if split is not None else path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{path}: unsupported suffix {path.suffix!r}; accepted: {SUFFIXES}")
    _check_encoding(path)
    if suffix == ".ts":
        return read_ts(path)
    sep = {".tsv": "\t", ".csv": ","}.get(suffix)
    with open(path, encoding="utf-8", errors="replace") as f:
        return parse_ucr_table(f, source=str(path), sep=sep, header=suffix == ".csv")


def _check_encoding(path: Path) -> None:
    """Refuse a file in UTF-16 or UTF-32 (a byte-order mark, or NUL bytes in its first 4 KB; a spreadsheet's
    "Unicode text"), which reads as numbers interleaved with NUL characters: the files are UTF-8 (or ASCII)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return                                  # open() below reports it
    if head.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in head:
        raise ValueError(f"{path}: the file is not UTF-8 text (it holds NUL bytes: UTF-16 or UTF-32, as a spreadsheet "
                         "saves 'Unicode text'); save it as UTF-8 (or plain text / CSV) and try again")


def _fmt(v: float) -> str:
    return "?" if np.isnan(v) else repr(float(v))


def format_ts(
    series: Sequence[np.ndarray],
    labels: Sequence = (),
    problem_name: str = "problem",
    class_labels: Optional[Sequence[str]] = None,
    regression: bool = False,
    times: Optional[Sequence[np.ndarray]] = None,
) -> str:
    """Write series (each (channels, length) or (length,), NaN = missing) and labels as ``.ts`` text.

    Channels of one case are written with the case's full length (trailing NaNs included, as '?').
    ``times``: each case's sample times (length,), written as ``(time,value)`` pairs under ``@timeStamps true``
    (every channel of a case at the case's times; :func:`parse_ts` reads them back into ``TSFile.times``).
    """
    arrs = [np.atleast_2d(np.asarray(s, dtype=np.float64)) for s in series]
    if not arrs:
        raise ValueError("format_ts needs at least one series")
    stamps = None if times is None else [np.asarray(t, dtype=np.float64).reshape(-1) for t in times]
    if stamps is not None and (len(stamps) != len(arrs) or any(t.size != a.shape[1] for t, a in zip(stamps, arrs))):
        raise ValueError(f"times: one array of sample times per series, as long as its series; got {len(stamps)} "
                         f"for {len(arrs)} series")
    dims = {a.shape[0] for a in arrs}
    if len(dims) != 1:
        raise ValueError(f"all series must have the same number of channels, got {sorted(dims)}")
    lens = {a.shape[1] for a in arrs}
    labels = list(labels)
    if labels and len(labels) != len(arrs):
        raise ValueError(f"{len(labels)} labels for {len(arrs)} series")
    lines = [f"@problemName {problem_name}", f"@timeStamps {'false' if stamps is None else 'true'}",
             f"@missing {'true' if any(np.isnan(a).any() for a in arrs) else 'false'}",
             f"@univariate {'true' if dims == {1} else 'false'}", f"@dimensions {dims.pop()}",
             f"@equalLength {'true' if len(lens) == 1 else 'false'}"]
    if len(lens) == 1:
        lines.append(f"@seriesLength {lens.pop()}")
    if regression:
        lines.append("@targetLabel true")
    elif labels:
        names = list(class_labels) if class_labels is not None else sorted({str(lab) for lab in labels})
        lines.append("@classLabel true " + " ".join(names))
    else:
        lines.append("@classLabel false")
    lines.append("@data")
    for i, a in enumerate(arrs):
        if stamps is None:
            chans = [",".join(_fmt(v) for v in row) for row in a]
        else:
            chans = [",".join(f"({float(t)!r},{_fmt(v)})" for t, v in zip(stamps[i], row)) for row in a]
        tail = [repr(float(labels[i])) if regression else str(labels[i])] if labels else []
        lines.append(":".join(chans + tail))
    return "\n".join(lines) + "\n"


def _split_of(filename: str) -> Optional[Tuple[str, str, str]]:
    """``(name, "TRAIN"|"TEST", suffix)`` of ``<name>_TRAIN<suffix>`` with an accepted suffix (any case), else None."""
    for suffix in FORMATS:
        if suffix and not filename.lower().endswith(suffix):
            continue
        stem = filename[: len(filename) - len(suffix)] if suffix else filename
        for split in ("TRAIN", "TEST"):
            if stem.upper().endswith("_" + split) and len(stem) > len(split) + 1:
                return stem[: -len(split) - 1], split, suffix
    return None
