"""Time-stamped series files through the trainer: a ``.ts`` file's ``@timeStamps`` reach the clock channel
(``data.time_channel``) and, with ``model.intervals``, the layers' steps (irregular sampling, thesis §4.2.4)."""
import warnings


import numpy as np
import pytest
import torch

from statespaces.data import ucr
from statespaces.data.base import with_time_channel
from statespaces.models import SequenceClassifier
from statespaces.train import evaluate_checkpoint, load_checkpoint, train
from statespaces.train.config import ConfigError, TrainConfig
from statespaces.train.loop import build_model, load_data

pytestmark = pytest.mark.filterwarnings("ignore:.*@timeStamps true, and the samples")


def _write(folder, name, train_cases, test_cases, stamped=True):
    """A univariate two-class .ts problem; a case is (times, values, label)."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, cases in (("TRAIN", train_cases), ("TEST", test_cases)):
        lines = [f"@problemName {name}", f"@timeStamps {'true' if stamped else 'false'}", "@univariate true",
                 "@equalLength false", "@classLabel true a b", "@data"]
        for times, values, label in cases:
            body = ",".join(f"({t!r},{v!r})" if stamped else repr(v) for t, v in zip(times, values))
            lines.append(f"{body}:{label}")
        (folder / f"{name}_{split}.ts").write_text("\n".join(lines) + "\n")
    return folder / f"{name}_TRAIN.ts"


def _cases(n, rng, even=False):
    out = []
    for i in range(n):
        k = int(rng.integers(5, 9))
        times = np.arange(k) * 10.0 + 100.0 if even else np.cumsum(rng.uniform(5.0, 20.0, k)) + 1000.0
        label = "ab"[i % 2]
        values = np.sin(times / (15.0 if label == "a" else 40.0)) + 0.1 * rng.standard_normal(k)
        out.append((times.tolist(), values.tolist(), label))
    return out


def test_sample_times_are_in_units_of_the_median_training_interval(tmp_path):
    rng = np.random.default_rng(0)
    path = _write(tmp_path, "Irr", _cases(8, rng), _cases(4, rng))
    data = ucr.load_ucr(path)
    times = data.info["times"]
    tr, te = ucr.read_series_file(path), ucr.read_series_file(tmp_path / "Irr_TEST.ts")
    unit = np.median(np.concatenate([np.diff(t) for t in tr.times]))
    lengths = data.train.tensors[2]
    for i, t in enumerate(tr.times):
        n = len(t)
        assert int(lengths[i]) == n
        np.testing.assert_allclose(times["train"][i, :n].numpy(), (t - t[0]) / unit)
        assert torch.all(times["train"][i, n:] == 0)
    np.testing.assert_allclose(times["test"][0, : len(te.times[0])].numpy(), (te.times[0] - te.times[0][0]) / unit)
    clock = with_time_channel(data).train.tensors[0][..., 0]
    L = data.length
    torch.testing.assert_close(clock, (times["train"] / (L - 1)).float())


def test_evenly_stamped_files_get_the_step_clock(tmp_path):
    """Evenly spaced time stamps read 0, 1, 2, ... in units of their interval: the clock of the same file without
    time stamps, to the last bit (runs on regular files are unchanged)."""
    rng = np.random.default_rng(1)
    train, test = _cases(6, rng, even=True), _cases(3, rng, even=True)
    stamped = with_time_channel(ucr.load_ucr(_write(tmp_path / "s", "Ev", train, test)))
    plain = with_time_channel(ucr.load_ucr(_write(tmp_path / "p", "Ev", train, test, stamped=False)))
    assert "times" in stamped.info and "times" not in plain.info
    for split in ("train", "test"):
        assert torch.equal(getattr(stamped, split).tensors[0], getattr(plain, split).tensors[0])


def test_pooled_series_take_the_time_of_each_window_s_first_sample(tmp_path):
    rng = np.random.default_rng(2)
    path = _write(tmp_path, "Po", _cases(6, rng), _cases(2, rng))
    data = ucr.load_ucr(path, max_length=4)
    k = data.info["pool"]
    assert k == 2
    file_times = ucr.read_series_file(path).times
    unit = np.median(np.concatenate([np.diff(t[::k]) for t in file_times]))
    for i, t in enumerate(file_times):
        starts = t[::k]
        np.testing.assert_allclose(data.info["times"]["train"][i, : starts.size].numpy(), (starts - starts[0]) / unit)


def test_evenly_stamped_pooled_series_with_short_last_windows_get_the_step_clock(tmp_path):
    """Found by a verification campaign: with the windows' mean times a short last window read early (clock
    [0, 0.5714, 1] for [0, 0.5, 1]) and the unit was off; a window's time is its first sample's."""
    cases = [((np.arange(n) * 10.0).tolist(), np.linspace(0, 1, n).tolist(), "ab"[i % 2])
             for i, n in enumerate((10, 9, 10, 7))]
    stamped = with_time_channel(ucr.load_ucr(_write(tmp_path / "s", "Ev", cases, cases), max_length=3))
    plain = with_time_channel(ucr.load_ucr(_write(tmp_path / "p", "Ev", cases, cases, stamped=False), max_length=3))
    assert stamped.info["pool"] == 4
    for split in ("train", "test"):
        assert torch.equal(getattr(stamped, split).tensors[0], getattr(plain, split).tensors[0])


def _config(path, out, **model):
    return TrainConfig.from_dict({
        "data": {"name": str(path), "time_channel": True, "normalize": "series"},
        "model": {"d_model": 8, "n_layers": 1, "layer": {"kind": "s4d", "d_state": 4, "bidirectional": True},
                  **model},
        "trainer": {"epochs": 2, "batch_size": 4, "out": str(out), "tensorboard": "off", "val_fraction": 0.0},
    })


def test_training_with_intervals_runs_the_layers_on_the_file_times(tmp_path):
    rng = np.random.default_rng(3)
    path = _write(tmp_path / "d", "Irr", _cases(12, rng), _cases(6, rng))
    cfg = _config(path, tmp_path / "run", intervals=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # the file's uneven times reach the model: no warning about them
        summary = train(cfg, progress=False)
    assert 0 <= summary["test_acc"] <= 1
    data = load_data(cfg)
    tensors, meta = load_checkpoint(tmp_path / "run" / "best")
    assert float(tensors["model.clock_scale"]) == data.length - 1
    model = build_model(cfg, meta["d_input"], meta["n_classes"])          # a placeholder scale...
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    assert float(model.clock_scale) == data.length - 1                      # ...restored with the weights
    model.eval()
    x, _, lengths = data.test.tensors
    # the same weights without the clock option, given the file's times by hand: the same logits
    twin = build_model(TrainConfig.from_dict({**cfg.to_dict(), "model": {**cfg.to_dict()["model"],
                                                                         "intervals": False}}),
                       meta["d_input"], meta["n_classes"])
    twin.load_state_dict({k: v for k, v in model.state_dict().items() if k != "clock_scale"})
    twin.eval()
    with torch.no_grad():
        want = twin(x, lengths, timestamps=data.info["times"]["test"].float())
        torch.testing.assert_close(model(x, lengths), want, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(twin(x, lengths), want, atol=1e-4)     # the times change the answer
    again = evaluate_checkpoint(str(tmp_path / "run"))
    assert again["acc"] == pytest.approx(summary["test_acc"])


def test_uneven_times_warn_unless_the_clock_carries_them(tmp_path):
    rng = np.random.default_rng(4)
    path = _write(tmp_path, "Irr", _cases(6, rng), _cases(2, rng))
    cfg = _config(path, tmp_path / "run")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_data(cfg)
    plain = TrainConfig.from_dict({**cfg.to_dict(), "data": {**cfg.to_dict()["data"], "time_channel": False}})
    with pytest.warns(UserWarning, match="unevenly spaced.*--data.time_channel true.*--model.intervals true"):
        load_data(plain)


def test_intervals_settings_are_refused_where_they_cannot_work(tmp_path):
    rng = np.random.default_rng(5)
    path = _write(tmp_path, "Irr", _cases(6, rng), _cases(2, rng))
    cfg = _config(path, tmp_path / "run", intervals=True)
    no_clock = TrainConfig.from_dict({**cfg.to_dict(), "data": {**cfg.to_dict()["data"], "time_channel": False}})
    with pytest.raises(ConfigError, match="model.intervals.*data.time_channel true"):
        build_model(no_clock, 2, 2)
    with pytest.raises(ConfigError, match="model.intervals.*data.time_channel true"):   # the trainer reaches it
        train(no_clock, progress=False)                                                 # (was KeyError 'clock_scale')
    mixup = TrainConfig.from_dict({**cfg.to_dict(), "trainer": {**cfg.to_dict()["trainer"], "mixup": 0.2}})
    with pytest.raises(ConfigError, match="model.intervals with trainer.mixup"):
        build_model(mixup, 2, 2)
    with pytest.raises(ConfigError, match="model.intervals.*stem"):
        TrainConfig.from_dict({"model": {"intervals": True, "stem": 3}})
    with pytest.raises(ConfigError, match="model.intervals"):
        TrainConfig.from_dict({"model": {"intervals": "yes"}})
    with pytest.raises(ValueError, match="no dt= or timestamps="):
        SequenceClassifier(2, 2, d_model=4, n_layers=1, clock_intervals=True)(torch.zeros(1, 3, 2),
                                                                            dt=torch.ones(1, 3))
    for bad in (0, -3, 2.5):
        with pytest.raises((ValueError, TypeError), match="clock_scale"):
            SequenceClassifier(2, 2, clock_intervals=True, clock_scale=bad)


def test_format_ts_writes_time_stamps_that_parse_back():
    from statespaces.data.series_files import format_ts, parse_ts

    series = [np.array([[1.0, 2.0, np.nan], [3.0, 4.0, 5.0]]), np.array([[6.0, 7.0], [8.0, 9.0]])]
    times = [np.array([0.5, 1.5, 4.0]), np.array([10.0, 12.25])]
    f = parse_ts(format_ts(series, ["a", "b"], times=times))
    assert f.timestamps and len(f.times) == 2
    for got, want in zip(f.times, times):
        np.testing.assert_array_equal(got, want - want[0])                  # since the case's first sample
    for got, want in zip(f.series, series):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="one array of sample times per series"):
        format_ts(series, ["a", "b"], times=times[:1])


def test_the_irregular_copy_keeps_a_fraction_of_each_series_at_its_own_steps(tmp_path):
    """experiments/irregular_ucr.py: each case keeps round(keep x L) of its samples, at their step indices, with
    the original values."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "experiments" / "irregular_ucr.py"
    spec = importlib.util.spec_from_file_location("irregular_ucr", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--problem", "ItalyPowerDemand", "--keep", "0.5", "--out", str(tmp_path)]) == 0
    _, ftrain, _ = ucr.resolve("ItalyPowerDemand")
    orig = ucr.read_series_file(ftrain)
    cut = ucr.read_series_file(tmp_path / "ItalyPowerDemandIrr_TRAIN.ts")
    assert cut.labels == orig.labels
    rng = np.random.default_rng(0)                  # the script's draws, in its order (the TRAIN file first)
    for t, s, o in zip(cut.times, cut.series, orig.series):
        steps, values = mod.subsample(o, 0.5, rng)
        idx = steps.astype(int)
        assert idx.size == 12 and np.all(np.diff(idx) > 0)
        np.testing.assert_array_equal(t, steps - steps[0])        # times since the case's first sample
        np.testing.assert_array_equal(s, o[:, idx])


# ---- found by a verification campaign of the time-stamped path (2026-12-08) ---------------------------------------

def _stamped_text(lines, dims=1, extra=""):
    return (f"@problemName P\n@timeStamps true\n@dimensions {dims}\n{extra}@classLabel true a b\n@data\n"
            + "\n".join(lines) + "\n")


def _pair(folder, train_lines, test_lines=None, **kw):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "P_TRAIN.ts").write_text(_stamped_text(train_lines, **kw))
    (folder / "P_TEST.ts").write_text(_stamped_text(test_lines or train_lines, **kw))
    return folder / "P_TRAIN.ts"


def _cfg(path, out, **sections):
    d = _config(path, out).to_dict()
    for key, value in sections.items():
        section, name = key.split("__")
        d[section] = {**d[section], name: value}
    return TrainConfig.from_dict(d)


def test_roll_and_crop_are_refused_when_the_clock_carries_the_file_times(tmp_path):
    rng = np.random.default_rng(6)
    path = _write(tmp_path / "d", "Irr", _cases(8, rng), _cases(4, rng))
    for k, aug in enumerate(({"roll": 1.0}, {"crop": 0.8}, {"crop": 0.9, "jitter": 0.1})):
        with pytest.raises(ConfigError, match="clock carries each sample's own time"):
            train(_cfg(path, tmp_path / f"r{k}", data__augment=aug), progress=False)
    # no crop (1.0) and no roll (0.0) beside another key: accepted
    train(_cfg(path, tmp_path / "ok", data__augment={"scale": 0.1, "jitter": 0.05, "crop": 1.0, "roll": 0.0}),
          progress=False)


def test_unusable_time_stamps_are_named_not_dropped_silently(tmp_path):
    good = ["(0,1),(1,2),(5,3),(6,4):a", "(0,4),(3,3),(4,2),(9,1):b"]
    for bad, why in (("(0,1),(2,2),(2,3),(3,4):a", "line 8: time stamps that are not strictly increasing"),
                     ("(0,1),(2,2),(inf,3):a", "line 8: time stamps that are not numbers or ISO dates, or not finite")):
        path = _pair(tmp_path / why[:8].replace(" ", "") / str(len(bad)), good + [bad])
        with pytest.raises(ConfigError, match=why):
            load_data(_cfg(path, tmp_path / "x", model__intervals=True))
        with pytest.warns(UserWarning, match=why + ".*the clock counts steps instead"):
            load_data(_cfg(path, tmp_path / "x"))
    folder = tmp_path / "half"
    path = _pair(folder, good)
    (folder / "P_TEST.ts").write_text("@problemName P\n@classLabel true a b\n@data\n1,2,3,4:a\n")
    with pytest.raises(ConfigError, match="P_TEST.ts has no time stamps"):
        load_data(_cfg(path, tmp_path / "x", model__intervals=True))


def test_a_clock_that_cannot_resolve_the_times_is_refused_for_intervals(tmp_path):
    lines = [",".join(f"({t},{v})" for v, t in enumerate(list(range(10)) + [1e8 + j for j in range(10)])) + ":a",
             ",".join(f"({t},{v})" for v, t in enumerate(list(range(10)) + [1e8 + j for j in range(10)])) + ":b"]
    path = _pair(tmp_path, lines)
    with pytest.raises(ConfigError, match="cannot resolve the time stamps.*in the train split, series 0 .*reads back "
                                          "as 0"):
        load_data(_cfg(path, tmp_path / "x", model__intervals=True))
    even = [",".join(f"({t},{v})" for v, t in enumerate(range(20))) + f":{c}" for c in "ab"]
    folder = tmp_path / "test-only"
    path = _pair(folder, even, [even[0], lines[1]])
    with pytest.raises(ConfigError, match="in the test split, series 1 "):
        load_data(_cfg(path, tmp_path / "x", model__intervals=True))
    with pytest.warns(UserWarning, match="cannot resolve the time stamps"):
        load_data(_cfg(path, tmp_path / "x"))


def test_sub_second_iso_dates_keep_their_intervals_exactly(tmp_path):
    stamps = [f"(2007-01-01 00:00:00.{ms:03d},{ms})" for ms in range(8)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")                     # evenly spaced: no warning
        f = ucr.parse_ts(_stamped_text([",".join(stamps) + ":a"]))
    np.testing.assert_array_equal(f.times[0], np.arange(8) * 1e6)      # ns since the case's first sample, exact
    us = [f"(2007-01-01 00:00:00.000{u:03d},{u})" for u in (0, 1, 3, 4)]
    np.testing.assert_array_equal(ucr.parse_ts(_stamped_text([",".join(us) + ":a"])).times[0], [0, 1e3, 3e3, 4e3])


def test_equal_length_counts_samples_per_channel_not_the_merged_grid():
    f = ucr.parse_ts(_stamped_text(["(0,1),(2,2),(4,3):(1,5),(3,6),(5,7):a"], dims=2,
                                   extra="@equalLength true\n@seriesLength 3\n"))
    np.testing.assert_array_equal(f.times[0], [0, 1, 2, 3, 4, 5])


def test_intervals_refuse_layers_without_a_varying_step_path_when_the_model_is_built(tmp_path):
    rng = np.random.default_rng(7)
    path = _write(tmp_path, "Irr", _cases(6, rng), _cases(2, rng))
    for layer, why in (({"kind": "dlinoss", "n_oscillators": 4}, "D-LinOSS takes one interval per sequence"),
                       ({"kind": "linoss", "n_oscillators": 4, "discretization": "IMEX"},
                        "--model.layer.discretization IM"),
                       ({"kind": "s4", "d_state": 4}, "S4 has no irregular-sampling path")):
        with pytest.raises(ConfigError, match=f"model.intervals with model.layer.*{why}"):
            build_model(_cfg(path, tmp_path / "x", model__intervals=True, model__layer=layer), 2, 2)


def test_intervals_on_padded_series_need_their_lengths(tmp_path):
    rng = np.random.default_rng(8)
    path = _write(tmp_path, "Irr", _cases(6, rng), _cases(2, rng))
    cfg = _cfg(path, tmp_path / "x", model__intervals=True, data__kwargs={"return_lengths": False})
    with pytest.raises(ConfigError, match="needs their lengths"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_data(cfg)
    # equal lengths in the training file, padding in the test file only (it crashed at the first evaluation)
    train_cases = [(np.cumsum(rng.uniform(1, 2, 8)).tolist(), rng.standard_normal(8).tolist(), "ab"[i % 2])
                   for i in range(6)]
    path = _write(tmp_path / "t", "Tl", train_cases, _cases(4, rng))
    cfg = _cfg(path, tmp_path / "x", model__intervals=True, data__kwargs={"return_lengths": False})
    with pytest.raises(ConfigError, match="needs their lengths"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_data(cfg)


def test_the_clock_scale_survives_a_cast_to_bfloat16():
    m = SequenceClassifier(2, 2, d_model=4, n_layers=1, clock_intervals=True, clock_scale=1459).to(torch.bfloat16)
    assert int(m.clock_scale) == 1459 and m.clock_scale.dtype == torch.int64


def test_a_channel_without_a_sample_at_a_time_is_interpolated_in_time(tmp_path):
    """Channel 1 has no sample at time 1 of the union grid [0, 1, 10]: linear in time, 1.0 (in steps it read 5.0)."""
    lines = ["(0,0),(1,1),(10,2):(0,0),(10,10):a", "(0,0),(1,1),(10,2):(0,0),(10,10):b"]
    data = ucr.load_ucr(_pair(tmp_path, lines, dims=2), normalize="none")
    np.testing.assert_allclose(data.train.tensors[0][0].numpy(), [[0, 0], [1, 1], [2, 10]])


def test_a_run_records_what_its_clock_counted_and_an_older_run_is_evaluated_on_steps(tmp_path):
    """Runs before the clock carried time stamps saw a step clock on stamped files: a checkpoint without
    meta["clock"] is evaluated on steps, a new one on what it recorded."""
    from statespaces.train import save_checkpoint
    from statespaces.train.evaluation import load_for_evaluation

    rng = np.random.default_rng(9)
    path = _write(tmp_path / "d", "Irr", _cases(10, rng), _cases(6, rng))
    cfg = _config(path, tmp_path / "run")
    train(cfg, progress=False)
    best = tmp_path / "run" / "best"
    tensors, meta = load_checkpoint(best)
    assert meta["clock"] == "times"
    now = load_for_evaluation(tmp_path / "run")[3]
    assert torch.equal(now.test.tensors[0], load_data(cfg).test.tensors[0])
    del meta["clock"]
    save_checkpoint(best, tensors, meta)
    old = load_for_evaluation(tmp_path / "run")[3]
    assert torch.equal(old.test.tensors[0], load_data(cfg, clock="steps").test.tensors[0])
    assert not torch.equal(old.test.tensors[0], now.test.tensors[0])


def test_time_stamps_are_exact_differences_of_what_the_file_says():
    """Found by a second verification round: decimal epoch seconds lost their millisecond steps in float64 (a false
    'unevenly spaced' warning), ISO dates past 2262 wrapped around in int64 nanoseconds, a time zone printed numpy's
    warning, and numbers and dates mixed across cases shared one unit."""
    ms = ",".join(f"(1700000000.{k:03d},{k})" for k in range(1, 6)) + ":a"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f = ucr.parse_ts(_stamped_text([ms]))
        z = ucr.parse_ts(_stamped_text(["(2007-01-01T00:00:00Z,1),(2007-01-01T02:00:00+01:00,2),"
                                        "(2007-01-01T02:00:00Z,3):a"]))
    np.testing.assert_array_equal(f.times[0], [0, 0.001, 0.002, 0.003, 0.004])
    np.testing.assert_array_equal(z.times[0], [0, 3600e9, 7200e9])         # 02:00+01:00 is 01:00 UTC
    late = ucr.parse_ts(_stamped_text(["(2262-04-08,0),(2262-04-09,1),(2262-04-11,2),(2262-04-12,0),(2300-01-01,1):b"]))
    np.testing.assert_array_equal(late.times[0] / 86_400e9, [0, 1, 3, 4, 13782])
    early = ucr.parse_ts(_stamped_text(["(1677-09-20,0),(1677-09-21,1),(1677-09-23,2):b"]))
    np.testing.assert_array_equal(early.times[0] / 86_400e9, [0, 1, 3])
    mixed = ucr.parse_ts(_stamped_text(["(0,1),(1,2),(3,3):a", "(2007-01-01,1),(2007-01-02,2):b"]))
    assert "mixing numbers (<string>, line 6) and ISO dates (<string>, line 7)" in mixed.times_issue


def test_evaluating_on_other_data_keeps_the_clock_of_the_training_grid(tmp_path):
    """An intervals model pointed at other data (evaluate --data.name) whose training file is longer read every
    interval halved: the clock was divided by the new file's L - 1 and multiplied back by the saved one."""
    from statespaces.train.evaluation import load_for_evaluation

    rng = np.random.default_rng(10)
    train_cases, test_cases = _cases(8, rng), _cases(4, rng)
    path = _write(tmp_path / "a", "Irr", train_cases, test_cases)
    cfg = _config(path, tmp_path / "run", intervals=True)
    train(cfg, progress=False)
    longer = [(list(t) + [t[-1] + 10.0 * k for k in range(1, 9)], list(v) + [0.0] * 8, lab)
              for t, v, lab in train_cases[:1]] + train_cases[1:]
    other = _write(tmp_path / "b", "Irr", longer, test_cases)
    model, _, meta, data = load_for_evaluation(tmp_path / "run", str(other))
    trained = load_data(cfg)
    assert data.length > trained.length and meta["clock_scale"] == trained.length - 1
    assert meta["time_unit"] == trained.info["time_unit"] != ucr.load_ucr(other).info["time_unit"]
    x = data.test.tensors[0]
    times = x[..., 0].double() * int(model.clock_scale)
    want = load_data(cfg).info["times"]["test"]
    torch.testing.assert_close(times[:, : want.shape[1]], want, atol=1e-4, rtol=1e-5)


def test_time_stamp_text_the_parser_refuses_or_reads_past_nanoseconds():
    """Found by a fourth verification round: 1e400 crashed the parser (OverflowError); digits past nanoseconds
    made numpy read dates in picoseconds, which wrap around beyond +-106 days of 1970; '1/3', 'today' and a bare
    year beside dates were read as times."""
    for line in ("(1,1),(1e400,2):a", "(0,1),(1/3,2):a", "(today,1),(now,2):a", "(2020,1),(2020-01-02,2):a"):
        f = ucr.parse_ts(_stamped_text([line]))
        assert f.times == [None] and "not numbers or ISO dates, or not finite" in f.times_issue, line
    f = ucr.parse_ts(_stamped_text(["(2020-01-01T00:00:00.0000000000001,1),(2020-01-01T06:00:00.0000000000001,2),"
                                    "(2020-01-01T12:00:00.0000000000001,3):a"]))
    np.testing.assert_array_equal(f.times[0], [0, 6 * 3600e9, 12 * 3600e9])
    g = ucr.parse_ts(_stamped_text(["(1e3,1),(+2E3,2),(3000.0,3):a", "(2020,1),(2021,2),(2022,3):b"]))
    np.testing.assert_array_equal(g.times[0], [0, 1000, 2000])
    np.testing.assert_array_equal(g.times[1], [0, 1, 2])                 # years alone: numbers


def test_intervals_on_a_file_without_time_stamps_warn_that_they_change_nothing(tmp_path):
    rng = np.random.default_rng(11)
    path = _write(tmp_path, "Plain", _cases(6, rng, even=True), _cases(2, rng, even=True), stamped=False)
    with pytest.warns(UserWarning, match="has no time stamps, so every interval is one step"):
        load_data(_cfg(path, tmp_path / "x", model__intervals=True))
