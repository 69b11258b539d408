"""Token files for language models (``--data.name tokens:PATH.npz``, statespaces.data.tokens): the layout read back
exactly, every malformed file refused with a message naming the problem, and a run trained and sampled from one."""
import numpy as np
import pytest
import torch

from statespaces.data import DATASETS, canonical_name, get_dataset
from statespaces.data.tokens import load_tokens

pytestmark = pytest.mark.usefixtures("one_thread")


def _progressions(rng, n, L, vocab=20):
    start, step = rng.integers(0, vocab, n), rng.integers(1, 4, n)
    return (start[:, None] + step[:, None] * np.arange(L)[None]) % vocab, rng.integers(4, L + 1, n)


def test_a_token_file_reads_back_as_given(tmp_path):
    rng = np.random.default_rng(0)
    tr, trl = _progressions(rng, 30, 12)
    te = rng.integers(0, 7, (5, 9, 2)).astype(np.int16)
    path = tmp_path / "t.npz"
    np.savez(path, train=np.stack([tr, tr], -1), train_lengths=trl, test=te, vocab_size=np.int64(25))
    d = get_dataset(f"tokens:{path}")
    assert d.task == "lm" and (d.d_input, d.n_classes) == (2, 25) and d.valid is None
    x, y, lengths = d.train.tensors
    assert x.dtype == torch.int64 and torch.equal(x, y) and lengths.tolist() == trl.tolist()
    for b in range(30):
        n = int(trl[b])
        assert x[b, :n, 0].tolist() == tr[b, :n].tolist() and (x[b, n:] == 0).all()     # padding: token 0
    assert d.test.tensors[2].tolist() == [9] * 5 and torch.equal(d.test.tensors[0], torch.from_numpy(te).long())
    one = tmp_path / "one.npz"
    np.savez(one, train=tr, test=tr[:3], valid=tr[3:6])
    d1 = load_tokens(one)
    assert d1.train.tensors[0].shape == (30, 12, 1) and d1.n_classes == int(tr.max()) + 1 and len(d1.valid) == 3
    assert canonical_name(f"tokens:{one}") == f"tokens:{one.resolve()}" and f"tokens:{one}" in DATASETS


@pytest.mark.parametrize("arrays, match", [
    (dict(train=np.zeros((3, 5), int)), "no array 'test'"),
    (dict(train=np.zeros((3, 5)), test=np.zeros((3, 5), int)), "must be integer tokens"),
    (dict(train=np.zeros((3, 1), int), test=np.zeros((3, 5), int)), "at least 2 steps"),
    (dict(train=np.zeros((3, 5), int), train_lengths=np.array([2, 6, 3]), test=np.zeros((3, 5), int)),
     r"must lie in \[2, 5\]"),
    (dict(train=np.zeros((3, 5), int), train_lengths=np.array([2, 3]), test=np.zeros((3, 5), int)), "must be 3 integers"),
    (dict(train=-np.ones((3, 5), int), test=np.zeros((3, 5), int)), "negative tokens"),
    (dict(train=np.full((3, 5), 9), test=np.zeros((3, 5), int), vocab_size=np.int64(9)), "not below vocab_size=9"),
    (dict(train=np.zeros((3, 5, 2), int), test=np.zeros((3, 5), int)), "different numbers of tokens per step"),
    (dict(train=np.array([[1, 2], [3]], dtype=object), test=np.zeros((3, 5), int)),
     "array 'train' cannot be read without pickle"),
    (dict(train=np.zeros((3, 5), int), test=np.zeros((3, 5), int), validation=np.zeros((3, 5), int)),
     r"arrays \['validation'\] are not part of a token file"),
    (dict(train=np.zeros((3, 5), int), test=np.zeros((3, 5), int), valid_lengths=np.array([2, 3, 4])),
     "lengths without their split"),
    (dict(train=np.full((3, 5), 2**63 + 5, dtype=np.uint64), test=np.zeros((3, 5), int)), "above 2"),
    (dict(train=np.zeros((3, 5), int), test=np.zeros((3, 5), int), vocab_size=np.int64(10**12)), "is over 16777216"),
    (dict(train=np.full((3, 5), 10**12), test=np.zeros((3, 5), int)), "implies a vocabulary of 1000000000001"),
])
def test_a_malformed_token_file_is_refused_by_name(tmp_path, arrays, match):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=match):
        load_tokens(path)


def test_a_missing_token_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no file at"):
        canonical_name(f"tokens:{tmp_path / 'nope.npz'}")
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_tokens(tmp_path / "nope.npz")


def test_train_and_generate_from_a_token_file(tmp_path, capsys):
    from statespaces.cli import main
    from statespaces.train import build_config, train

    rng = np.random.default_rng(1)
    tr, trl = _progressions(rng, 64, 16)
    te, tel = _progressions(rng, 8, 16)
    path = tmp_path / "prog.npz"
    np.savez(path, train=tr, train_lengths=trl, test=te, test_lengths=tel)
    cfg = build_config(overrides=[("data.name", f"tokens:{path}"), ("model.d_model", "8"), ("model.n_layers", "1"),
                                  ("model.layer.d_state", "4"), ("trainer.epochs", "2"), ("trainer.batch_size", "16"),
                                  ("trainer.out", str(tmp_path / "run")), ("trainer.tensorboard", "off")])
    s = train(cfg, progress=False)
    assert s["task"] == "lm" and s["n_val"] == round(0.1 * 64) and s["n_train"] == 64 - s["n_val"]
    assert s["val_split"] == "random"                 # a plain seeded draw: no classes to stratify
    assert main(["generate", str(tmp_path / "run"), "--prompt", "3", "--steps", "5", "--n", "2"]) == 0
    out = np.load(tmp_path / "run" / "generated" / "sample_0.npy")
    assert out.shape == (2, 3 + 5, 1) and out.min() >= 0 and out.max() < 20
    np.testing.assert_array_equal(out[:, :3, 0], te[:2, :3])
    assert not list((tmp_path / "run" / "generated").glob("*.mid"))          # MIDI only for the chorales


def test_files_that_are_not_token_archives_are_named(tmp_path):
    np.save(tmp_path / "plain.npy", np.zeros((3, 5), int))
    with pytest.raises(ValueError, match="a single .npy array; a token file is an .npz"):
        load_tokens(tmp_path / "plain.npy")
    (tmp_path / "text.npz").write_text("not numpy at all")
    with pytest.raises(ValueError, match="not a NumPy .npz archive") as e:
        load_tokens(tmp_path / "text.npz")
    assert "unsafely" not in str(e.value)


def test_an_npz_path_without_the_prefix_is_a_token_file(tmp_path):
    path = tmp_path / "t.npz"
    np.savez(path, train=np.zeros((3, 5), int), test=np.ones((2, 5), int))
    assert canonical_name(str(path)) == f"tokens:{path.resolve()}"
    assert DATASETS[str(path)](seed=0).task == "lm"


def test_moved_and_copied_token_files_are_recognised_by_content(tmp_path, capsys):
    """evaluate --data.name did not warn about other data for token files; generate could not be pointed at
    moved data; an ensemble of runs on copies of one file was refused."""
    import shutil
    import warnings

    from statespaces.cli import main
    from statespaces.train import build_config, train
    from statespaces.train.ensemble import evaluate_ensemble
    from statespaces.train.evaluation import evaluate_checkpoint

    rng = np.random.default_rng(2)
    tr, trl = _progressions(rng, 48, 12)
    te, tel = _progressions(rng, 6, 12)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    np.savez(tmp_path / "a" / "p.npz", train=tr, train_lengths=trl, test=te, test_lengths=tel)
    shutil.copy(tmp_path / "a" / "p.npz", tmp_path / "b" / "p.npz")
    np.savez(tmp_path / "other.npz", train=tr[:, ::-1].copy(), test=te[:, ::-1].copy())
    for run, data in (("r1", tmp_path / "a" / "p.npz"), ("r2", tmp_path / "b" / "p.npz")):
        train(build_config(overrides=[("data.name", f"tokens:{data}"), ("model.d_model", "8"), ("model.n_layers", "1"),
                                      ("model.layer.d_state", "4"), ("trainer.epochs", "1"), ("trainer.batch_size", "16"),
                                      ("trainer.out", str(tmp_path / run)), ("trainer.tensorboard", "off")]), progress=False)
    res = evaluate_ensemble([str(tmp_path / "r1"), str(tmp_path / "r2")])        # copies of one file: accepted
    assert res["n_members"] == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate_checkpoint(str(tmp_path / "r1"), data_name=f"tokens:{tmp_path / 'b' / 'p.npz'}")   # same content
    with pytest.warns(UserWarning, match="not the data"):
        evaluate_checkpoint(str(tmp_path / "r1"), data_name=f"tokens:{tmp_path / 'other.npz'}")
    small = tmp_path / "small.npz"                      # a smaller vocabulary than the model's: still scored
    np.savez(small, train=np.zeros((3, 6), int), test=np.zeros((2, 6), int))
    with pytest.warns(UserWarning, match="not the data"):
        assert evaluate_checkpoint(str(tmp_path / "r1"), data_name=f"tokens:{small}")["loss"] > 0
    (tmp_path / "a" / "p.npz").rename(tmp_path / "moved.npz")
    with pytest.raises(SystemExit):
        main(["generate", str(tmp_path / "r1")])
    assert "--data.name NEW_PATH" in capsys.readouterr().err
    assert main(["generate", str(tmp_path / "r1"), "--data.name", f"tokens:{tmp_path / 'moved.npz'}",
                 "--steps", "3"]) == 0


def test_a_resume_on_changed_data_files_is_refused(tmp_path, monkeypatch, capsys):
    """A token file overwritten between two segments of a run was trained on silently."""
    import statespaces.train.loop as loop
    from statespaces.train import build_config, train
    from statespaces.train.config import ConfigError

    rng = np.random.default_rng(3)
    tr, trl = _progressions(rng, 32, 10)
    path = tmp_path / "p.npz"
    np.savez(path, train=tr, train_lengths=trl, test=tr[:4])
    cfg = build_config(overrides=[("data.name", f"tokens:{path}"), ("model.d_model", "8"), ("model.n_layers", "1"),
                                  ("model.layer.d_state", "4"), ("trainer.epochs", "2"), ("trainer.batch_size", "16"),
                                  ("trainer.out", str(tmp_path / "run")), ("trainer.tensorboard", "off")])
    real_save = loop._Checkpoints.save

    def crash(self, *a, **k):
        real_save(self, *a, **k)
        raise KeyboardInterrupt("simulated kill after the first checkpoint")

    monkeypatch.setattr(loop._Checkpoints, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False)
    monkeypatch.setattr(loop._Checkpoints, "save", real_save)
    np.savez(path, train=tr[:, ::-1].copy(), train_lengths=trl, test=tr[:4])      # other content, same name
    capsys.readouterr()
    with pytest.raises(ConfigError, match=f"changed since its checkpoint .*{path.name} holds other content"):
        train(cfg, resume=True, progress=False)
    assert "resumed at step" not in capsys.readouterr().err      # refused before anything is announced
    np.savez(path, train=tr, train_lengths=trl, test=tr[:4])                       # the original again: resumes
    assert train(cfg, resume=True, progress=False)["steps"] == 2 * 2
