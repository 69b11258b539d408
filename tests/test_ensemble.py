"""Ensembles of checkpoints (``statespaces evaluate RUN1 RUN2 ...``): mean class probabilities,
checked against a direct computation from the members' own forward passes."""
import numpy as np
import pytest
import torch

from statespaces.cli import main
from statespaces.train import evaluate_checkpoint, evaluate_ensemble, load_trained
from statespaces.train.ensemble import combine
from statespaces.train.loop import load_data
from statespaces.train.tasks import get_task

pytestmark = pytest.mark.usefixtures("one_thread")


def _write_waves(folder, n_train=24, n_test=16, seed=0, length=24):
    """A two-class UCR .tsv problem: noisy sines against noisy square waves."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 4 * np.pi, length)
    for split, n in (("TRAIN", n_train), ("TEST", n_test)):
        rows = []
        for _ in range(n):
            c = int(rng.integers(2))
            base = np.sin(t) if c == 0 else np.sign(np.sin(t))
            x = rng.uniform(0.5, 3) * base + 0.3 * rng.standard_normal(length)
            rows.append("\t".join([str(c + 1)] + [repr(float(v)) for v in x]) + "\n")
        (folder / f"Waves_{split}.tsv").write_text("".join(rows))
    return folder / "Waves_TRAIN.tsv"


def _train(path, out, seed):
    rc = main(["train", "--data.name", str(path), "--model.d_model", "8", "--model.n_layers", "1",
               "--model.layer.d_state", "4", "--model.layer.init", "lin", "--trainer.epochs", "2",
               "--trainer.batch_size", "8", "--trainer.seed", str(seed), "--trainer.out", str(out),
               "--trainer.tensorboard", "off", "--trainer.val_fraction", "0", "--no-progress"])
    assert rc == 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ens")
    data = _write_waves(root / "Waves")
    for s in range(3):
        _train(data, root / f"r{s}", seed=s)
    return root, data


def test_combine_is_the_log_of_the_mean_probability():
    g = torch.Generator().manual_seed(0)
    outs = [torch.randn(5, 3, generator=g) for _ in range(4)]
    task = get_task("classification")
    want = torch.stack([o.double().softmax(-1) for o in outs]).mean(0)
    got = combine(task, outs)
    torch.testing.assert_close(got.double().exp(), want, rtol=1e-6, atol=1e-7)
    # one member: the ensemble is that member (same argmax, same loss)
    y = torch.tensor([0, 1, 2, 0, 1])
    torch.testing.assert_close(task.loss(combine(task, outs[:1]), y), task.loss(outs[0], y), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(combine(get_task("regression"), outs), torch.stack(outs).mean(0))


@pytest.mark.slow
def test_ensemble_matches_the_members_forward_passes(runs):
    root, _ = runs
    paths = [str(root / f"r{s}") for s in range(3)]
    res = evaluate_ensemble(paths)
    assert res["n_members"] == 3 and res["n_test"] == 16 and res["task"] == "classification"
    for p, member in zip(paths, res["members"]):
        single = evaluate_checkpoint(p)
        assert member["acc"] == pytest.approx(single["acc"])
        assert member["loss"] == pytest.approx(single["loss"], rel=1e-5)
    _check_against_forward_passes(res, paths)


def _check_against_forward_passes(res, paths, d_inputs=None):
    """The ensemble's accuracy and loss equal those of the mean softmax of each member's own forward pass over
    its own test inputs (``d_inputs``: the input width each member must have)."""
    probs, y = [], None
    for i, p in enumerate(paths):
        model, cfg = load_trained(p)
        data = load_data(cfg)
        if d_inputs is not None:
            assert model.d_input == d_inputs[i]
        x = torch.stack([data.test[j][0] for j in range(len(data.test))])
        y = torch.stack([data.test[j][1] for j in range(len(data.test))])
        with torch.no_grad():
            probs.append(model.eval()(x).double().softmax(-1))
    p = torch.stack(probs).mean(0)
    assert res["acc"] == pytest.approx(float((p.argmax(-1) == y).double().mean()))
    assert res["loss"] == pytest.approx(float(-p[torch.arange(len(y)), y].log().mean()), rel=1e-5)


@pytest.mark.slow
def test_ensemble_refuses_bad_member_lists(runs, tmp_path):
    root, _ = runs
    with pytest.raises(ValueError, match="at least two"):
        evaluate_ensemble([str(root / "r0")])
    with pytest.raises(ValueError, match="same checkpoint"):
        evaluate_ensemble([str(root / "r0"), str(root / "r0" / "best")])
    other = _write_waves(tmp_path / "Other" / "Waves", seed=5)       # same shape, other test targets
    _train(other, tmp_path / "o", seed=0)
    with pytest.raises(ValueError, match="test split differs|share task and data|content differs"):
        evaluate_ensemble([str(root / "r0"), str(tmp_path / "o")])


def test_ensemble_refuses_members_whose_test_files_differ_in_content(runs, tmp_path):
    """Same problem name, same test size and targets, other values: the members' predictions are of different
    inputs, so their average scores nothing. Found by a CLI campaign (it was scored without a word). The same
    content in another place is the same test split."""
    root, data = runs
    lines = (data.parent / "Waves_TEST.tsv").read_text().splitlines()
    edited = []
    for line in lines:                                     # labels kept, every value changed
        label, *values = line.split("\t")
        edited.append("\t".join([label] + [repr(-float(v)) for v in values]))
    moved = tmp_path / "Elsewhere" / "Waves"
    moved.mkdir(parents=True)
    (moved / "Waves_TRAIN.tsv").write_bytes((data.parent / "Waves_TRAIN.tsv").read_bytes())
    (moved / "Waves_TEST.tsv").write_text("\n".join(edited) + "\n")
    _train(moved / "Waves_TRAIN.tsv", tmp_path / "e", seed=0)
    with pytest.raises(ValueError, match=r"Waves_TEST.tsv, whose content differs from .*Waves_TEST.tsv"):
        evaluate_ensemble([str(root / "r0"), str(tmp_path / "e")])
    (moved / "Waves_TEST.tsv").write_bytes((data.parent / "Waves_TEST.tsv").read_bytes())   # a copy: accepted
    assert evaluate_ensemble([str(root / "r0"), str(tmp_path / "e")])["n_members"] == 2


@pytest.mark.slow
def test_cli_prints_each_member_and_the_ensemble(runs, capsys, tmp_path):
    root, _ = runs
    assert main(["evaluate", str(root / "r0"), str(root / "r1")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and "ensemble of 2 (mean class probabilities" in lines[-1]
    try:                                            # user errors: one line, no traceback
        rc = main(["evaluate", str(root / "r0"), str(root / "r0")])
    except SystemExit as e:
        rc = e.code
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "same checkpoint" in err[0]


@pytest.mark.slow
def test_members_differ_in_data_config_but_score_the_same_examples(runs, tmp_path):
    """A member with another normalisation is evaluated on its own inputs; the examples are the same."""
    root, data = runs
    rc = main(["train", "--data.name", str(data), "--data.normalize", "none", "--model.d_model", "8",
               "--model.n_layers", "1", "--model.layer.d_state", "4", "--model.layer.init", "lin",
               "--trainer.epochs", "1", "--trainer.batch_size", "8", "--trainer.out", str(tmp_path / "raw"),
               "--trainer.tensorboard", "off", "--trainer.val_fraction", "0", "--no-progress"])
    assert rc == 0
    res = evaluate_ensemble([str(root / "r0"), str(tmp_path / "raw")])
    assert res["n_members"] == 2 and len(res["members"]) == 2


def test_ucr_local_is_ucr_with_the_fcn_ingredients():
    """The partner preset differs from ``ucr`` in exactly the keys its comment and docs/results.md name."""
    from statespaces.train import build_config
    from statespaces.train.config import flat

    ucr, local = (flat(build_config(p).to_dict()) for p in ("ucr", "ucr-local"))
    changed = {k: (ucr[k], local[k]) for k in ucr if ucr[k] != local[k]}
    assert changed == {"model.layer.dt_min": (0.001, 0.1), "model.layer.dt_max": (0.1, 1.0),
                       "data.time_channel": (True, False), "model.norm": ("layer", "batch"),
                       "model.dropout": (0.1, 0.0), "trainer.weight_decay": (0.05, 0.0),
                       "data.augment": ({}, {"roll": 1.0}),
                       "trainer.out": ("runs/ucr", "runs/ucr-local")}


@pytest.mark.slow
def test_pair_of_a_clocked_and_a_batchnorm_member(runs, tmp_path):
    """The ucr pair's shape: one member reads a clock channel (d_input + 1) and the other uses BatchNorm with
    short kernels; each is evaluated on its own inputs and the ensemble is the mean of their probabilities."""
    root, data = runs
    common = ["--model.d_model", "8", "--model.n_layers", "1", "--model.layer.d_state", "4",
              "--trainer.epochs", "2", "--trainer.batch_size", "8", "--trainer.tensorboard", "off",
              "--trainer.val_fraction", "0", "--no-progress", "--data.name", str(data)]
    assert main(["train", *common, "--data.time_channel", "true", "--trainer.out", str(tmp_path / "clock")]) == 0
    assert main(["train", *common, "--model.norm", "batch", "--model.layer.dt_min", "0.1",
                 "--model.layer.dt_max", "1.0", "--trainer.out", str(tmp_path / "local")]) == 0
    paths = [str(tmp_path / "clock"), str(tmp_path / "local")]
    _check_against_forward_passes(evaluate_ensemble(paths), paths, d_inputs=(2, 1))
