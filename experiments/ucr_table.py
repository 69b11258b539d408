"""The UCR/UEA section of ``docs/results.md``: the ``ucr`` preset on every classification problem
shipped with aeon, beside the 1-NN Euclidean floor (computed here) and published ROCKET /
InceptionTime accuracies (quoted, with their sources).

    python experiments/ucr_table.py --train --seeds 0 1 2     # train the missing runs, then write
    python experiments/ucr_table.py                          # table from the runs already there
    python experiments/ucr_table.py --problems GunPoint ArrowHead --runs runs/ucr --pair-runs runs/ucr-local

Each run is ``statespaces train --preset ucr|uea --data.name ucr:<Problem> --trainer.seed <k>
--trainer.out <runs>/<Problem>-s<k>``; its test accuracy is read from the run's ``summary.json``
(``best/`` = the last epoch: the preset has no validation split, so the test set chooses nothing).
For univariate problems the runs of the partner preset ``ucr-local`` (``--pair-runs``, the same layout) give two
more columns: ``ucr-local`` alone, and the *pair*: the ensemble of the ucr and ucr-local runs of one seed (mean
class probabilities, ``statespaces evaluate RUN_ucr RUN_ucr_local``), mean ± sd over the seeds.
The section is written between the markers ``<!-- ucr:begin -->`` and ``<!-- ucr:end -->`` of
``--out`` (``experiments/results_table.py`` keeps it when it rewrites the file). Nothing in the
table is typed by hand except the published figures below, each with its source.

1-NN Euclidean floor: the nearest training series' label (scikit-learn ``KNeighborsClassifier``,
Euclidean distance over all channels and steps, full resolution: no downsampling), variable-length
series right-padded with zeros to the longest; computed on the raw series and on each series
z-normalised on its own (per channel), and the better of the two is the floor (the table says which).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from statespaces.train.config import PRESETS

#: Classification problems shipped with aeon 1.6 (``aeon/datasets/data``); the ``_eq`` copies of
#: JapaneseVowels / PickupGestureWiimoteZ are the same problems and are left out.
PROBLEMS = ("ACSF1", "ArrowHead", "BasicMotions", "Covid3Month_disc", "GunPoint", "ItalyPowerDemand",
            "JapaneseVowels", "OSULeaf", "PickupGestureWiimoteZ", "UnitTest")

ROCKET_SOURCE = ("Dempster, Petitjean & Webb (2020), ROCKET, DMKD 34: mean test accuracy of 10 runs on the "
                 "archive's train/test split, `results/results_ucr.csv` of github.com/angus924/rocket")
INCEPTION_SOURCE = ("Ismail Fawaz et al. (2020), InceptionTime, DMKD 34: `results-InceptionTime-128.csv` "
                    "(UCR 2018) and `results-mts.csv` (UEA) of github.com/hfawaz/InceptionTime")
#: Published test accuracies (%), as printed in the sources above; a problem missing here has no
#: figure there (BasicMotions and JapaneseVowels are UEA problems, not in ROCKET's UCR file;
#: Covid3Month_disc and UnitTest are aeon test fixtures, not archive problems).
ROCKET = {"ACSF1": 88.60, "ArrowHead": 81.43, "GunPoint": 100.00, "ItalyPowerDemand": 96.96, "OSULeaf": 94.09,
          "PickupGestureWiimoteZ": 83.00}
INCEPTION = {"ACSF1": 92.00, "ArrowHead": 84.57, "GunPoint": 100.00, "ItalyPowerDemand": 96.50, "OSULeaf": 94.21,
             "PickupGestureWiimoteZ": 76.00, "BasicMotions": 100.00, "JapaneseVowels": 99.19}

BEGIN, END = "<!-- ucr:begin -->", "<!-- ucr:end -->"

#: The univariate partner preset: its run of seed k and ucr's run of seed k form the "pair" (a two-model ensemble).
PAIR = "ucr-local"

#: ROCKET run on this machine (``experiments/rocket_reference.py``: aeon's ROCKET, 10,000 kernels, ridge,
#: on the data the preset sees, seeds 0-2); its JSON output is kept beside this script.
ROCKET_HERE_JSON = Path(__file__).with_name("rocket_reference.json")


def rocket_here() -> dict:
    """``{problem: mean test accuracy (%)}`` of the ROCKET runs made here ({} when the file is absent)."""
    if not ROCKET_HERE_JSON.is_file():
        return {}
    return {name: r["mean"] for name, r in json.loads(ROCKET_HERE_JSON.read_text())["test"].items()}


def one_nn_floor(name: str):
    """``(accuracy, how)``: the better test accuracy of 1-NN Euclidean on the raw series and on the
    series z-normalised one by one (see the module docstring), and which of the two it was."""
    from sklearn.neighbors import KNeighborsClassifier

    from statespaces.data.ucr import load_ucr

    best = (-1.0, "")
    for mode in ("none", "series"):
        data = load_ucr(name, normalize=mode, return_lengths=True)
        xtr, ytr = data.train.tensors[0].numpy(), data.train.tensors[1].numpy()
        xte, yte = data.test.tensors[0].numpy(), data.test.tensors[1].numpy()
        # the splits are stored at their own lengths (zero past each series): compare on the longer one
        L = max(xtr.shape[1], xte.shape[1])
        xtr, xte = (np.pad(x, ((0, 0), (0, L - x.shape[1]), (0, 0))) for x in (xtr, xte))
        knn = KNeighborsClassifier(n_neighbors=1).fit(xtr.reshape(len(xtr), -1), ytr)
        acc = float((knn.predict(xte.reshape(len(xte), -1)) == yte).mean())
        best = max(best, (acc, "raw" if mode == "none" else "z-norm"))
    return best


@functools.lru_cache(maxsize=None)
def describe(name: str) -> dict:
    """Sizes, channels, length range and classes of a problem (read once per problem: :func:`preset_for` asks
    for it at every run it checks)."""
    from statespaces.data.ucr import load_ucr

    d = load_ucr(name, return_lengths=True)
    lens = np.r_[d.train.tensors[2].numpy(), d.test.tensors[2].numpy()]
    length = str(lens.max()) if lens.min() == lens.max() else f"{lens.min()}-{lens.max()}"
    return {"n_train": len(d.train), "n_test": len(d.test), "channels": d.d_input, "length": length,
            "classes": d.n_classes}


def preset_for(name: str) -> str:
    """``uea`` for a multivariate problem, ``ucr`` for a univariate one."""
    return "uea" if describe(name)["channels"] > 1 else "ucr"


def run_dir(runs: Path, name: str, seed: int) -> Path:
    return runs / f"{name}-s{seed}"


def train_one(runs: Path, name: str, seed: int, preset: str = "") -> None:
    from statespaces.train import build_config, train

    out = run_dir(runs, name, seed)
    cfg = build_config(preset or preset_for(name), None, [("data.name", f"ucr:{name}"), ("trainer.seed", str(seed)),
                                     ("trainer.out", str(out)), ("trainer.tensorboard", "off")])
    t0 = time.time()
    s = train(cfg, progress=False)
    print(f"{name} seed {seed}: test {100 * s['test_acc']:.2f}%  ({time.time() - t0:.0f} s)", flush=True)


def read_run(runs: Path, name: str, seed: int, preset: str = ""):
    """``(test accuracy, seconds)`` of a finished run, after checking it ran ``preset``
    (default: :func:`preset_for`)."""
    from statespaces.train import TrainConfig, build_config
    from statespaces.train.config import RESUMABLE

    preset = preset or preset_for(name)
    out = run_dir(runs, name, seed)
    f = out / "summary.json"
    if not f.is_file():
        return None
    s = json.loads(f.read_text())
    used = json.loads((out / "run.json").read_text())["config"]
    want = build_config(preset, None, [("data.name", f"ucr:{name}"), ("trainer.seed", str(seed))]).to_dict()
    default = TrainConfig().to_dict()       # keys added to the library since the run: at their defaults
    for section, values in want.items():
        for key, value in values.items():
            got = used[section].get(key, default[section][key])
            if f"{section}.{key}" not in RESUMABLE and got != value:
                raise SystemExit(f"{out} did not run the {preset} preset: {section}.{key} = {got!r}, "
                                 f"preset {value!r}")
    if s.get("selection") != "last epoch":
        raise SystemExit(f"{out}: its best/ was chosen by {s.get('selection')!r}, expected the last epoch")
    if s.get("test_acc") is None:
        raise SystemExit(f"{out}: trained with trainer.test_eval off, so it has no test score; run it again without")
    return s["test_acc"], s["train_seconds"]


def ensemble_acc(runs: Path, name: str, seeds):
    """Test accuracy (%) of the ensemble of the seeds' runs (mean class probabilities,
    :func:`statespaces.train.evaluate_ensemble`), or None with fewer than two runs."""
    from statespaces.train import evaluate_ensemble

    dirs = [str(run_dir(runs, name, k)) for k in seeds if (run_dir(runs, name, k) / "summary.json").is_file()]
    return 100 * evaluate_ensemble(dirs)["acc"] if len(dirs) > 1 else None


def pair_accs(runs: Path, pair_runs: Path, name: str, seeds):
    """Test accuracies (%) of the pairs {ucr run, ucr-local run} of each seed (mean class probabilities of the
    two, :func:`statespaces.train.evaluate_ensemble`), for the seeds where both runs exist; [] for a
    multivariate problem (ucr-local is the univariate partner)."""
    from statespaces.train import evaluate_ensemble

    if preset_for(name) != "ucr":
        return []
    out = []
    for k in seeds:
        a, b = read_run(runs, name, k), read_run(pair_runs, name, k, PAIR)
        if a is not None and b is not None:
            out.append(100 * evaluate_ensemble([str(run_dir(runs, name, k)), str(run_dir(pair_runs, name, k))])["acc"])
    return out


def mean_sd(accs) -> str:
    if not accs:
        return ""
    return f"{statistics.mean(accs):.2f}" + (f" ± {statistics.stdev(accs):.2f}" if len(accs) > 1 else "")


def fmt(v) -> str:
    return "" if v is None else f"{v:.2f}"


def table(problems, runs: Path, seeds, note: str = "", pair_runs: Path = Path("runs/ucr-local")) -> str:
    rows, ours_all, gaps, floors_beaten, n_with = [], {}, [], 0, 0
    local_all, pair_all, floors = {}, {}, {}
    here = rocket_here()
    ens_all, ens_beaten = {}, 0
    for name in problems:
        info = describe(name)
        got = [r for r in (read_run(runs, name, k) for k in seeds) if r is not None]
        accs = [100 * a for a, _ in got]
        mean = statistics.mean(accs) if accs else None
        spread = f" ± {statistics.stdev(accs):.2f}" if len(accs) > 1 else ""
        floor, how = one_nn_floor(name)
        floor *= 100
        floors[name] = floor
        ours_all[name] = mean
        ens = ens_all[name] = ensemble_acc(runs, name, seeds)
        ens_beaten += ens is not None and ens > floor
        if mean is not None:
            n_with += 1
            floors_beaten += mean > floor
            if name in ROCKET:
                gaps.append(mean - ROCKET[name])
        local = ([100 * r[0] for r in (read_run(pair_runs, name, k, PAIR) for k in seeds) if r is not None]
                 if preset_for(name) == "ucr" else [])
        pairs = pair_accs(runs, pair_runs, name, seeds)
        if local:
            local_all[name] = statistics.mean(local)
        if pairs:
            pair_all[name] = statistics.mean(pairs)
        secs = f"{statistics.mean(s for _, s in got):.0f} s" if got else ""
        rows.append(f"| {name} | {preset_for(name)} | {info['n_train']} / {info['n_test']} | {info['channels']} | "
                    f"{info['length']} | {info['classes']} | {fmt(mean)}{spread} | {len(accs)} | {fmt(ens)} | "
                    f"{mean_sd(local)} | {mean_sd(pairs)} | "
                    f"{floor:.2f} ({how}) | {fmt(here.get(name))} | "
                    f"{fmt(ROCKET.get(name))} | "
                    f"{fmt(INCEPTION.get(name))} | {secs} |")
    with_rocket = [n for n in problems if n in ROCKET and ours_all.get(n) is not None]
    summary = []
    if with_rocket:
        ours_m = statistics.mean(ours_all[n] for n in with_rocket)
        rocket_m = statistics.mean(ROCKET[n] for n in with_rocket)
        summary.append(f"On the {len(with_rocket)} problems with a published ROCKET figure: ours {ours_m:.2f}%, "
                       f"ROCKET {rocket_m:.2f}% (mean difference {statistics.mean(gaps):+.2f} points).")
        if all(ens_all.get(n) is not None for n in with_rocket):
            ens_m = statistics.mean(ens_all[n] for n in with_rocket)
            summary.append(f"The ensembles of the seeds on the same problems: {ens_m:.2f}% (mean difference "
                           f"{ens_m - rocket_m:+.2f} points to ROCKET, a single model; InceptionTime's published "
                           "figures are themselves ensembles of five networks).")
    with_here = [n for n in problems if n in here and ours_all.get(n) is not None]
    if with_here:
        for label, names in (("the same problems", [n for n in with_rocket if n in here]),
                             (f"all {len(with_here)} problems it was run on", with_here)):
            ours_m = statistics.mean(ours_all[n] for n in names)
            here_m = statistics.mean(here[n] for n in names)
            summary.append(f"ROCKET run here, on {label}: {here_m:.2f}%, ours {ours_m:.2f}% (mean difference "
                           f"{ours_m - here_m:+.2f} points).")
    with_pair = [n for n in problems if n in pair_all]
    if with_pair:
        for label, names, ref in (("the problems with a published ROCKET figure", [n for n in with_pair if n in ROCKET],
                                   ROCKET),
                                  ("the same problems, against ROCKET run here", [n for n in with_pair if n in ROCKET
                                                                                  and n in here], here),
                                  (f"all {len(with_pair)} univariate problems, against ROCKET run here",
                                   [n for n in with_pair if n in here], here)):
            if not names:
                continue
            pair_m, ref_m = statistics.mean(pair_all[n] for n in names), statistics.mean(ref[n] for n in names)
            alone = statistics.mean(ours_all[n] for n in names)
            summary.append(f"The pair ucr + {PAIR} (two models, mean over seeds) on {label}: {pair_m:.2f}%, "
                           f"ROCKET {ref_m:.2f}% (mean difference {pair_m - ref_m:+.2f} points; ucr alone "
                           f"{alone - ref_m:+.2f}).")
        alone_local = [n for n in with_pair if n in ROCKET and n in local_all]
        if alone_local:
            loc_m = statistics.mean(local_all[n] for n in alone_local)
            ref_m = statistics.mean(ROCKET[n] for n in alone_local)
            summary.append(f"{PAIR} alone on the {len(alone_local)} problems with a published ROCKET figure: "
                           f"{loc_m:.2f}% (mean difference {loc_m - ref_m:+.2f} points).")
        recipe = {n: pair_all[n] if n in pair_all else ours_all[n] for n in problems
                  if n in here and (n in pair_all or (preset_for(n) == "uea" and ours_all.get(n) is not None))}
        if len(recipe) > len(with_pair):
            rec_m, ref_m = statistics.mean(recipe.values()), statistics.mean(here[n] for n in recipe)
            above = sum(recipe[n] > floors[n] for n in recipe)
            summary.append(f"The recipe on all {len(recipe)} problems ROCKET was run on here (the pair on univariate "
                           f"problems, uea on multivariate ones): {rec_m:.2f}%, ROCKET {ref_m:.2f}% (mean difference "
                           f"{rec_m - ref_m:+.2f} points), above the 1-NN Euclidean floor on {above} of "
                           f"{len(recipe)}.")
        pair_beaten = sum(pair_all[n] > floors[n] for n in with_pair)
        summary.append(f"The pair is above the 1-NN Euclidean floor on {pair_beaten} of {len(with_pair)} univariate "
                       "problems.")
    summary.append(f"Above the 1-NN Euclidean floor on {floors_beaten} of {n_with} problems (ensembles: "
                   f"{ens_beaten} of {sum(v is not None for v in ens_all.values())}).")
    seeds_text = ", ".join(str(k) for k in seeds)
    max_len = PRESETS["ucr"]["data"]["kwargs"]["max_length"]
    return "\n".join([
        BEGIN,
        "## UCR/UEA problems shipped with aeon: the `ucr` preset",
        "",
        f"Generated by `python experiments/ucr_table.py --seeds {' '.join(str(k) for k in seeds)}"
        + (" --note ..." if note else "") + "` from the runs in "
        f"`{runs}` (`statespaces train --preset ucr|uea --data.name ucr:<Problem> --trainer.seed <k>`, seeds "
        f"{seeds_text}; one thread per run, on a shared 2-core CPU). *ours*: test accuracy (%) of the last "
        "epoch, mean ± standard deviation over the seeds run (*n*). *ensemble*: test accuracy of the seeds' "
        "models together (mean class probabilities: `statespaces evaluate RUN_s0 RUN_s1 RUN_s2`; one figure, no "
        "spread; it chooses nothing, every member is the last epoch of its run). *ucr-local*: the partner preset "
        "alone (univariate problems; mean ± sd over the seeds). *pair*: the ucr and ucr-local runs of one seed "
        "together (`statespaces evaluate RUN_ucr RUN_ucr_local`), mean ± sd over the seeds: the recipe for "
        "univariate problems (below). *1-NN ED*: computed here (module "
        "docstring of the script). *ROCKET (run here)*: aeon's ROCKET (10,000 kernels, ridge) on the same data the "
        "preset sees, mean of seeds 0-2 (`experiments/rocket_reference.py`, output in "
        "`experiments/rocket_reference.json`). **The ROCKET (published) and InceptionTime columns are published "
        "figures, not run here**; blank where the source has none.",
        *(["", note] if note else []),
        "",
        f"| problem | preset | train / test | channels | length | classes | ours (%) | n | ensemble (%) | {PAIR} (%) "
        "| pair (%) | 1-NN ED (%) "
        "| ROCKET (run here) | ROCKET (published) | InceptionTime (published) | time / run |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        *summary,
        "",
        f"Sources: ROCKET: {ROCKET_SOURCE}. InceptionTime: {INCEPTION_SOURCE}.",
        "",
        "### The `ucr` recipe",
        "",
        "Preset `ucr` (`src/statespaces/train/presets.py`), for any univariate `--data.name ucr:<Problem>` or "
        "path (values over the defaults of `statespaces train`); preset `uea`, for multivariate problems (second "
        "line below), differs in `data.normalize = \"global\"` (each channel scaled by its training mean and std: "
        "per-series normalisation erases the level of a channel, which carries the class in JapaneseVowels), "
        "`model.pool = \"max\"` (the maximum over time per channel; JapaneseVowels validation, three splits: 161 "
        "vs 160 of 162 series), no time channel and `max_length` 1024 (the clock: 266 vs 268 of 270 "
        "JapaneseVowels validation series over five splits), d_state 32 and 400 steps (the JapaneseVowels "
        "recipe's) and label smoothing 0.1 (`experiments/ucr_tuning.md`, twenty-first round):",
        "",
        "```json",
        json.dumps(PRESETS["ucr"], indent=None),
        json.dumps(PRESETS["uea"], indent=None),
        "```",
        "",
        "- each series z-normalised on its own, per channel (`data.normalize = \"series\"`); series longer than "
        f"{max_len} steps averaged over windows of `ceil(L / {max_len})` steps (`data.kwargs.max_length`);",
        "- a clock t/(L-1) on the training split's grid (test series on the same scale) prepended as input "
        "channel 0 (`data.time_channel`; 0 on padding);",
        "- bidirectional S4D layers (thesis §7.2.6); padded steps of variable-length problems are masked;",
        "- batches of series of similar length, each cut to its longest series (`trainer.bucket`);",
        "- step rule: at least `trainer.epochs` epochs and at least `trainer.min_steps` optimizer steps; a small "
        "training split gets `ceil(min_steps / (epochs x batches per pass))` passes per epoch "
        "(`statespaces.data.sampler.passes_for`), so 36 series get as many updates as 300;",
        "- AdamW, cosine decay, SSM parameters at lr 1e-3 without weight decay (thesis §7.1), dropout "
        f"{PRESETS['ucr']['model']['dropout']};",
        "- no validation split (`trainer.val_fraction = 0`): the archive's training splits are small (20 to 270 "
        "series), so `best/` is the last epoch and the test set chooses nothing.",
        "",
        f"### The pair: `ucr` with `{PAIR}`",
        "",
        f"Preset `{PAIR}` is the same model with the ingredients of the FCN of Wang, Yan & Oates (2017): short "
        "kernels, no clock, BatchNorm, no dropout and no weight decay. Its S4D steps start in [0.1, 1], so every "
        "mode forgets within about 2 to 20 steps: a detector of local shape wherever it sits in the series. "
        "Alone it is no better than `ucr`: over 4 problems x 5 validation splits it gets 370 vs 369 of 440 series "
        "right, with OSULeaf 224 vs 211 of 245 and PickupGestureWiimoteZ 33 vs 43 of 50. The two models err on "
        "different series, though. Their ensemble (the mean of the two models' class probabilities) gets 383 of "
        "440 series right on the same splits: 233 vs 220 on splits 0-2 and 150 vs 149 on splits 3-4. Averaging alone "
        "does not explain it: `ucr` paired with a near twin of itself (label smoothing 0.1) scores 366, below `ucr` "
        "alone (`experiments/ucr_tuning.md`, seventeenth round). Since the eighteenth round the partner also "
        "shifts every training series circularly by a random offset (`data.augment = {\"roll\": 1.0}`; with no "
        "clock, a pattern's position carries no information the shift could destroy): the pair then gets 389 of "
        "the same 440 (236 vs 233 on splits 0-2, 153 vs 150 on splits 3-4; OSULeaf 231 vs 224 of 245), and 648 vs 642 "
        "of 775 over all eight univariate problems (nineteenth round, run after the test table below had shown "
        "ItalyPowerDemand falling: the pair loses one of its 80 validation series there). "
        "The pair is two trainings and one evaluation:",
        "",
        "```",
        "statespaces train --preset ucr --data.name ucr:OSULeaf --trainer.out runs/osuleaf-ucr",
        f"statespaces train --preset {PAIR} --data.name ucr:OSULeaf --trainer.out runs/osuleaf-{PAIR}",
        f"statespaces evaluate runs/osuleaf-ucr runs/osuleaf-{PAIR}",
        "```",
        "",
        "```json",
        json.dumps(PRESETS[PAIR], indent=None),
        "```",
        "",
        "How it was chosen: variants were compared on validation splits (a quarter of the training split, "
        "stratified, seed 0), never on test accuracies: in a first round on the six cheapest problems, in a "
        "second on ACSF1, ArrowHead, OSULeaf and PickupGestureWiimoteZ (which moved `max_length` from 256 to "
        "1024; steps, depth, lr, normalisation and dropout were left as they were), in a third on the same four "
        "problems over three splits each (max pooling and train-time augmentation, `data.augment`: max pooling "
        "won at max_length 256 and was adopted, its table fell on test to 78.29%, and a validation check at the "
        "preset's max_length 1024, run after that table, showed it losing on OSULeaf and ACSF1, so `ucr` went "
        "back to mean pooling: that reversal was prompted by test figures, and is labelled so here), in a fourth "
        "on the same protocol at max_length 1024 (weight decay 0.25 and 1.0, half the width, frozen SSM "
        "parameters, BatchNorm: none beat the preset, nothing changed), and in a fifth to eighth on five splits "
        "(the official LinOSS recipe's factors one at a time: the time channel and max_length 2048 were adopted, "
        "343 vs 331 of 440 validation series, the gain ACSF1's; unidirectional layers, lr 1e-3, a constant "
        "schedule, global normalisation and batch 32 were not), and in a ninth on the same five splits (width 128, "
        "354 vs 343 of 440, ahead on both groups of splits: adopted), a tenth (d_state 64, dt_max 1, dropout 0.2, "
        "lr 5e-3: none ahead), an eleventh (a convolutional stem, `model.stem`, at one or several dilations, "
        "the S4D-Lin init and batch 8: none ahead on both groups; d_state 16: 362 vs 354 of 440, ahead on both "
        "groups by a small margin, 217 vs 215 and 145 vs 139: adopted) and a twelfth (label smoothing 0.1, mixup "
        "0.2 and a weight average 0.99: none ahead; at least 800 optimizer steps instead of 400: 369 vs 362 of "
        "440, 220 vs 217 and 149 vs 145, the gain ACSF1's, which underfit at 400 steps: adopted). Rounds thirteen to "
        "sixteen changed nothing in `ucr` (the last compared ROCKET on the same splits and found the gap in "
        f"OSULeaf alone); the seventeenth added `{PAIR}` as a partner, chosen on the same validation splits "
        "before any test run of it; the eighteenth gave the partner random circular shifts (`data.augment`), and "
        "a nineteenth, prompted by its test runs (labelled so), checked the shifts on validation splits of the "
        "other four univariate problems and kept them, and a twentieth (the same label) found shifting half the "
        "series no better (648 vs 648 of 775). Tuning log: "
        "`experiments/ucr_tuning.md`.",
        END,
    ])


def write_section(path: Path, text: str) -> None:
    old = path.read_text() if path.is_file() else "# Results\n"
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        new = head + text + rest.split(END, 1)[1]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(new)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--problems", nargs="*", default=list(PROBLEMS))
    p.add_argument("--seeds", nargs="*", type=int, default=[0])
    p.add_argument("--runs", default="runs/ucr", type=Path)
    p.add_argument("--pair-runs", default="runs/ucr-local", type=Path,
                   help=f"runs of the {PAIR} preset, <Problem>-s<k> (univariate problems; the pair columns)")
    p.add_argument("--train", action="store_true", help="train the runs that are missing first")
    p.add_argument("--out", default="docs/results.md", type=Path)
    p.add_argument("--note", default="",
                   help="a line printed under the table's header (e.g. the code version of the runs)")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.train:
        for seed in args.seeds:
            for name in args.problems:
                if read_run(args.runs, name, seed) is None:
                    train_one(args.runs, name, seed)
                if preset_for(name) == "ucr" and read_run(args.pair_runs, name, seed, PAIR) is None:
                    train_one(args.pair_runs, name, seed, PAIR)
    text = table(args.problems, args.runs, args.seeds, args.note, args.pair_runs)
    write_section(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
