"""Named recipes (``statespaces train --preset NAME``, ``statespaces presets``): each a partial config, merged over
the defaults of :class:`~statespaces.train.config.TrainConfig` by :func:`~statespaces.train.config.build_config`.

Each recipe's comment says where its settings come from (the thesis' hyperparameters, or the tuning rounds of
``experiments/preset_tuning.md`` and ``experiments/ucr_tuning.md``, on validation splits) and what they gave.
"""
from __future__ import annotations

from typing import Any, Dict

#: Named recipes; each is a partial config merged over the defaults.
PRESETS: Dict[str, Dict[str, Any]] = {
    # sequential digits (sklearn 8x8, L=64): the default main job and its layer/ordering variants
    # 50 epochs (was the default 25): last-epoch validation accuracy 99.3 / 99.3% vs 99.0 / 98.6%
    # (seeds 10, 11, 20% held out, 287 series), validation loss 0.014 / 0.014 vs 0.021 / 0.027
    # (experiments/preset_tuning.md); about 1 CPU minute unloaded
    "digits-s4d": {"trainer": {"epochs": 50}},
    "pdigits-s4d": {"data": {"name": "pdigits"}},
    "digits-s4": {"model": {"layer": {"kind": "s4"}}},
    # LinOSS: BatchNorm pre-norm, as the official model (experiments/linoss_fidelity.py: +3 to +4.5 test
    # points over LayerNorm at 500 steps; lr 1e-2 or the ssm_lr group dropped cost 5 points). The
    # IMEX (symplectic, undamped) discretization and 50 epochs: last-epoch validation accuracy 96.5%
    # vs 95.1% for IM at 25 epochs (seed 10, 20% held out; IMEX at 25 epochs 95.8%, IM at 50 epochs
    # and batch 32 96.2%; lr 1e-2 and dt log-uniform in [1e-3, 1e-1] no better:
    # experiments/preset_tuning.md). mode "conv" (equal to the scan, 2x faster on CPU) and no
    # torch.compile (minutes of compiling on CPU). Initial stiffness A ~ U[0, 4] (a_max; the paper's U[0, 1]
    # caps the initial frequency near 0.75 rad/step, under the 8-step rows' 0.785): last-epoch validation
    # 852 vs 834 of 861 series over seeds 10-12 (20% held out), loss 0.037 vs 0.100 (preset_tuning.md, third round)
    "digits-linoss": {"model": {"layer": {"kind": "linoss", "discretization": "imex", "mode": "conv", "a_max": 4.0},
                                "norm": "batch"},
                      "trainer": {"lr": 3e-3, "epochs": 50, "compile": "off"}},
    "digits-dlinoss": {"model": {"layer": {"kind": "dlinoss"}, "norm": "batch"}, "trainer": {"lr": 3e-3}},
    "digits-s5": {"model": {"layer": {"kind": "s5"}}},
    # UCR/UEA (aeon's .ts files): variable-length multichannel speech features, and motion sensors
    # the `uea` recipe (bidirectional S4D, d_model 64, d_state 32, batch 16, >= 400 steps, length
    # buckets) with a 10% validation split: validation accuracy 98.1 / 100% (seeds 10, 11, 20% held
    # out) vs 96.3 / 100% for the former d_model 32 unidirectional preset, validation loss 0.09 /
    # 0.003 vs 0.10 / 0.05; 4 layers overfit (92.6% on seed 10), dropout 0.2 ties 0.1
    # (experiments/preset_tuning.md). Max pooling over time: 161 vs 160 of 162 validation series
    # right over seeds 10-12 (20% held out), validation loss 0.031 vs 0.041 (as for the ucr preset).
    # Width 128 (was 64, as the ucr preset's ninth round): 535 vs 533 of 540 validation series over seeds
    # 10-19 and 532 vs 530 over seeds 20-29 (20% held out), loss 0.028 vs 0.043 and 0.048 vs 0.061: ahead on
    # both groups by small margins (experiments/preset_tuning.md, fourth round). Label smoothing 0.1: 537 vs 534
    # of 540 validation series over seeds 10-19 and 535 vs 532 over seeds 20-29, never behind on a split (ninth
    # round; the validation loss of a smoothed model is higher by construction and was not compared)
    "japanese-vowels-s4d": {"data": {"name": "ucr:JapaneseVowels"},
                            "model": {"d_model": 128, "n_layers": 2, "dropout": 0.1, "pool": "max",
                                      "layer": {"kind": "s4d", "d_state": 32, "bidirectional": True}},
                            "trainer": {"epochs": 20, "min_steps": 400, "batch_size": 16, "bucket": True,
                                        "label_smoothing": 0.1}},
    "japanese-vowels-s4": {"data": {"name": "ucr:JapaneseVowels"},
                           "model": {"layer": {"kind": "s4"}, "d_model": 32, "n_layers": 2},
                           "trainer": {"epochs": 20, "batch_size": 32}},
    # the japanese-vowels-s4d recipe with bidirectional LinOSS-IMEX layers (conv mode, no compile, as
    # digits-linoss): last-epoch validation accuracy 96.3 / 100% vs 94.4 / 96.3% for the former
    # preset (unidirectional LinOSS-IM, d_model 32, batch 32; seeds 10, 11, 20% held out;
    # experiments/preset_tuning.md)
    # Train-time scaling (sd 0.1) and jitter (sd 0.05) of the inputs (data.augment): 160 vs 159 of 162
    # validation series right over seeds 10-12 (20% held out), validation loss 0.032 vs 0.078; IM,
    # BatchNorm and max pooling were no better (experiments/preset_tuning.md). Label smoothing 0.1: 530 vs 529
    # of 540 validation series over seeds 10-19 and 529 vs 523 over seeds 20-29 (ninth round). No validation split,
    # best/ the last epoch: 1,046 vs 1,036 of 1,080 outer-holdout series (20% of the training file, seeds 10-29,
    # ahead on both groups of ten: 523 vs 521, 523 vs 515; the test file never read; eleventh round)
    "japanese-vowels-linoss": {"data": {"name": "ucr:JapaneseVowels", "augment": {"scale": 0.1, "jitter": 0.05}},
                               "model": {"layer": {"kind": "linoss", "discretization": "imex", "mode": "conv",
                                                   "bidirectional": True},
                                         "d_model": 64, "n_layers": 2},
                               "trainer": {"epochs": 20, "min_steps": 400, "batch_size": 16, "bucket": True,
                                           "lr": 3e-3, "compile": "off", "label_smoothing": 0.1,
                                           "val_fraction": 0.0}},
    # the same problem for the other layers of the family (issue 21): S5 on the S4D recipe (its P = 32
    # shared modes for d_state 32), D-LinOSS (IMEX by default) on the LinOSS recipe
    "japanese-vowels-s5": {"data": {"name": "ucr:JapaneseVowels"},
                           "model": {"d_model": 64, "n_layers": 2, "dropout": 0.1,
                                     "layer": {"kind": "s5", "d_state": 32, "bidirectional": True}},
                           "trainer": {"epochs": 20, "min_steps": 400, "batch_size": 16, "bucket": True}},
    "japanese-vowels-dlinoss": {"data": {"name": "ucr:JapaneseVowels"},
                                "model": {"layer": {"kind": "dlinoss", "mode": "conv", "bidirectional": True},
                                          "d_model": 64, "n_layers": 2},
                                "trainer": {"epochs": 20, "min_steps": 400, "batch_size": 16, "bucket": True,
                                            "lr": 3e-3, "compile": "off"}},
    "basicmotions-s4d": {"data": {"name": "ucr:BasicMotions"}, "model": {"d_model": 32, "n_layers": 2},
                         "trainer": {"epochs": 40, "batch_size": 8}},
    # any UCR/UEA problem (--data.name ucr:<Problem> or a path), uni- or multivariate, equal or
    # variable length: the generic recipe of docs/results.md (UCR/UEA section). Per-series
    # z-normalisation; series over 2048 steps averaged down to <= 2048 (was 1024; detail matters: validation
    # accuracy of ACSF1 (L 1460) 50 -> 55 -> 60% at max_length 256 -> 512 -> 1024, OSULeaf (L 427)
    # 73.5 -> 83.7% at 256 -> 512 on one split; a second split checked after the table did not
    # confirm ACSF1 (60 -> 45%): experiments/ucr_tuning.md); bidirectional S4D (padding is
    # masked); length-bucketed batches cut to their longest series; a run is >= 20 epochs and >=
    # 400 optimizer steps (small splits get several passes per epoch: trainer.min_steps); no
    # validation split (the archive splits are small): best/ is the last epoch. Mean pooling: max
    # pooling won at max_length 256 (192 vs 188 of 264 validation series over 4 problems x 3 splits)
    # but lost at this preset's 1024 on the two problems it changes (OSULeaf 114 vs 120 of 147,
    # ACSF1 18 vs 21 of 40); augmentation did not help (experiments/ucr_tuning.md, third round).
    # A time channel (data.time_channel) and max_length 2048 (ACSF1's 1460 steps untouched): 343 vs 331
    # of 440 validation series over 4 problems x 5 splits, the gain ACSF1's (53 -> 65 of 100; the time
    # channel neutral on the others): experiments/ucr_tuning.md, fifth to eighth rounds. Width 128
    # (was 64): 354 vs 343 of the same 440 series, ahead on both groups of splits (215 vs 209 on
    # splits 0-2, 139 vs 134 on 3-4; ninth round), at 2-3x the time per run. State size 16 (was 32): 217 vs
    # 215 on splits 0-2 and ahead on 3-4 too (eleventh round; a small margin, the rule's: ahead on both groups).
    # At least 800 optimizer steps (was 400): 220 vs 217 on splits 0-2 and 149 vs 145 on 3-4 (twelfth round;
    # ACSF1 underfit at 400: 89% training accuracy), about twice the time per run on the small splits
    "ucr": {"data": {"name": "ucr:ArrowHead", "normalize": "series", "time_channel": True,
                     "kwargs": {"max_length": 2048}},
            "model": {"d_model": 128, "n_layers": 2, "dropout": 0.1,
                      "layer": {"kind": "s4d", "d_state": 16, "bidirectional": True}},
            "trainer": {"epochs": 20, "min_steps": 800, "batch_size": 16, "bucket": True, "val_fraction": 0.0}},
    # ucr's partner for univariate problems, the FCN's ingredients (Wang et al. 2017) on the same model: short
    # kernels (dt in [0.1, 1]: every mode forgets within about 2 to 20 steps), no clock, BatchNorm, no dropout,
    # no weight decay. A detector of local shape wherever it sits in the series. Alone it is not a better
    # recipe (370 vs 369 of 440 validation series over 4 problems x 5 splits; OSULeaf 224 vs 211 of 245, but
    # PickupGestureWiimoteZ 33 vs 43 of 50); as a second member beside a ucr model (`statespaces evaluate
    # RUN_ucr RUN_ucr_local`, the mean of their class probabilities) the pair scores 383 of 440 (ucr 369; 233 vs
    # 220 on splits 0-2, 150 vs 149 on 3-4): experiments/ucr_tuning.md, seventeenth round. With no clock, a
    # random circular shift of every training series (data.augment roll): the pair 389 vs 383 of the same 440
    # (236 vs 233 on splits 0-2, 153 vs 150 on 3-4; OSULeaf 231 vs 224 of 245): eighteenth round; over all
    # eight univariate problems 648 vs 642 of 775 (nineteenth round; ItalyPowerDemand 77 vs 78 of 80); shifting
    # half the series (roll 0.5) ties, 648 vs 648, behind on splits 0-2 (twentieth round)
    "ucr-local": {"data": {"name": "ucr:ArrowHead", "normalize": "series", "time_channel": False,
                           "augment": {"roll": 1.0}, "kwargs": {"max_length": 2048}},
                  "model": {"d_model": 128, "n_layers": 2, "dropout": 0.0, "norm": "batch",
                            "layer": {"kind": "s4d", "d_state": 16, "bidirectional": True,
                                      "dt_min": 0.1, "dt_max": 1.0}},
                  "trainer": {"epochs": 20, "min_steps": 800, "batch_size": 16, "bucket": True, "val_fraction": 0.0,
                              "weight_decay": 0.0}},
    # multivariate (UEA) problems: the same, with each channel normalised by its training mean/std
    # instead of per series (the level of a channel carries class information: JapaneseVowels
    # validation accuracy 76% with per-series, 99% with global normalisation); max pooling, as
    # japanese-vowels-s4d (JapaneseVowels validation: 161 vs 160 of 162 series, loss 0.031 vs 0.041).
    # No time channel and max_length 1024, as before ucr's fifth round: the clock gave 266 vs 268 of 270
    # JapaneseVowels validation series (seeds 10-14, 20% held out; experiments/ucr_tuning.md). Width 128
    # with japanese-vowels-s4d, the same recipe on JapaneseVowels (experiments/preset_tuning.md, fourth round).
    # Label smoothing 0.1, as japanese-vowels-s4d (ninth round: the same recipe under the validation protocol,
    # 537 vs 534 and 535 vs 532 of 540 JapaneseVowels series); BasicMotions, 20% held out: 80 vs 80 of 80 on seeds
    # 10-19, 80 vs 78 on seeds 20-29 (experiments/ucr_tuning.md, twenty-first round)
    "uea": {"data": {"name": "ucr:BasicMotions", "normalize": "global", "kwargs": {"max_length": 1024}},
            "model": {"d_model": 128, "n_layers": 2, "dropout": 0.1, "pool": "max",
                      "layer": {"kind": "s4d", "d_state": 32, "bidirectional": True}},
            "trainer": {"epochs": 20, "min_steps": 400, "batch_size": 16, "bucket": True, "val_fraction": 0.0,
                        "label_smoothing": 0.1}},
    # long-range synthetic tasks generated here (LRA-style), CPU-sized
    "listops-s4d": {"data": {"name": "listops"}, "model": {"d_model": 64, "n_layers": 4, "pool": "mean"},
                    "trainer": {"epochs": 5, "batch_size": 32}},
    "pathfinder-s4d": {"data": {"name": "pathfinder"}, "model": {"d_model": 64, "n_layers": 4},
                       "trainer": {"epochs": 10, "batch_size": 32}},
    # smaller versions that learn within CPU minutes: ListOps of 100..300 tokens (depth <= 6) and
    # Pathfinder 16x16 (L = 256) with solid curves and no distractors; both bidirectional
    "listops-short-s4d": {"data": {"name": "listops", "kwargs": {"n_train": 10000, "n_test": 1000, "min_length": 100,
                                                                 "max_length": 300, "max_depth": 6}},
                          "model": {"d_model": 64, "n_layers": 4, "pool": "mean",
                                    "layer": {"kind": "s4d", "bidirectional": True}},
                          "trainer": {"epochs": 20, "batch_size": 32}},
    "pathfinder16-s4d": {"data": {"name": "pathfinder", "kwargs": {"n_train": 10000, "n_test": 1000, "size": 16,
                                                                   "n_distractors": 0, "dash_off": 0}},
                         "model": {"d_model": 64, "n_layers": 4, "dropout": 0.0,
                                   "layer": {"kind": "s4d", "bidirectional": True}},
                         "trainer": {"epochs": 10, "batch_size": 64}},
    # sequential / permuted Fashion-MNIST, L = 784 (GPU-sized; Debian's dataset-fashion-mnist)
    "sfmnist-s4d": {"data": {"name": "fashion_mnist"}, "model": {"d_model": 128, "n_layers": 4},
                    "trainer": {"epochs": 20, "batch_size": 64, "lr": 4e-3, "weight_decay": 0.01, "device": "auto"}},
    "psfmnist-s4d": {"data": {"name": "pfashion_mnist"}, "model": {"d_model": 128, "n_layers": 4},
                     "trainer": {"epochs": 20, "batch_size": 64, "lr": 4e-3, "weight_decay": 0.01}},
    "fmnist14-s4d": {"data": {"name": "fashion_mnist14", "kwargs": {"n_train": 10000}}, "trainer": {"epochs": 3}},
    # Bach chorales, next-step prediction (task lm; statespaces.data.chorales.load_chorales_lm): random windows of
    # 128 steps of the 263 training pieces (17 batches per pass: SaShiMi 8 passes per epoch, 4352 steps; flat S4D
    # 2 passes, 1088 steps), validated and tested on whole held-out pieces, NLL per 16th-note step; the two models
    # of experiments/chorales.py (SaShiMi of thesis ch. 8, a flat S4D stack with FF blocks). Steps and dropout
    # chosen on the validation pieces (docs/generation.md). `statespaces generate runs/chorales-sashimi` writes
    # chorales (MIDI)
    "chorales-sashimi": {"data": {"name": "chorales", "augment": {"window": 128}},
                         "model": {"backbone": "sashimi", "d_model": 32, "n_layers": 1, "dropout": 0.0,
                                   "mixing": "linear", "layer": {"kind": "s4d", "d_state": 32},
                                   "backbone_kwargs": {"pool": 4, "n_pools": 2, "expand": 2, "ff_expand": 2}},
                         "trainer": {"epochs": 32, "min_steps": 4000, "batch_size": 16, "lr": 3e-3,
                                     "weight_decay": 0.01, "warmup_steps": 80, "grad_clip": 1.0}},
    "chorales-s4d": {"data": {"name": "chorales", "augment": {"window": 128}},
                     "model": {"backbone": "flat", "d_model": 64, "n_layers": 6, "dropout": 0.1, "mixing": "linear",
                               "layer": {"kind": "s4d", "d_state": 32}, "backbone_kwargs": {"ff_expand": 2}},
                     "trainer": {"epochs": 32, "min_steps": 800, "batch_size": 16, "lr": 3e-3, "weight_decay": 0.01,
                                 "warmup_steps": 80, "grad_clip": 1.0}},
}

#: Presets that finish in minutes on a 2-core CPU (the others are meant for a GPU).
CPU_PRESETS = ("digits-s4d", "pdigits-s4d", "digits-s4", "digits-linoss", "digits-dlinoss", "digits-s5",
               "japanese-vowels-s4d", "japanese-vowels-s4", "japanese-vowels-linoss", "japanese-vowels-s5",
               "japanese-vowels-dlinoss", "basicmotions-s4d", "ucr", "ucr-local", "uea", "listops-s4d",
               "pathfinder-s4d", "listops-short-s4d", "pathfinder16-s4d", "fmnist14-s4d")
#: The language-model presets (NLL, not accuracy: their figures are in docs/generation.md); minutes on a CPU too.
LM_PRESETS = ("chorales-sashimi", "chorales-s4d")
