"""``statespaces export RUN OUT``: a trained run's model as a torch.export program or an ONNX file, checked here
independently of the check the command itself prints (language models step by step against their convolution
view; classifiers on another batch size than the one traced, with their lengths)."""
import pytest
import torch
from conftest import trained_token_lm

from statespaces.train import build_config, train
from statespaces.train.evaluation import load_trained

pytestmark = pytest.mark.usefixtures("one_thread")


def _token_run(tmp_path):
    run, _, tokens = trained_token_lm(tmp_path)
    return run, torch.from_numpy(tokens[:8])


def test_a_language_model_exports_its_streaming_step(tmp_path, capsys):
    from statespaces.cli import main
    from statespaces.export import streaming_model

    run, tokens = _token_run(tmp_path)
    assert main(["export", str(run), str(tmp_path / "step.pt2")]) == 0
    printed = capsys.readouterr().out
    assert "streaming step of a language model" in printed and "max |difference| from the model" in printed
    step = torch.export.load(str(tmp_path / "step.pt2")).module()
    model, _ = load_trained(str(run))
    assert not model.training                           # loaded to be used: dropout off (as from_pretrained)
    x = tokens[2:3]                                     # another sequence than the command checked on
    state = list(streaming_model(model).initial_state(1))
    outs = []
    with torch.no_grad():
        for t in range(x.shape[1]):
            y, *state = step(x[:, t:t + 1], *state)
            outs.append(y)
        torch.testing.assert_close(torch.cat(outs, 1), model(x), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
def test_a_language_model_exports_to_onnx(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from statespaces.train.export_run import export_checkpoint

    run, _ = _token_run(tmp_path)
    res = export_checkpoint(run, tmp_path / "step.onnx")
    assert res["max_abs_diff"] is not None and res["max_abs_diff"] < 1e-4 and (tmp_path / "step.onnx").exists()


def test_a_classifier_exports_its_forward_with_lengths_and_any_batch(tmp_path):
    from statespaces.data import get_dataset
    from statespaces.train.export_run import export_checkpoint

    aeon = pytest.importorskip("aeon")  # noqa: F841  (the JapaneseVowels files ship in aeon's wheel)
    train(build_config(overrides=[("data.name", "ucr:JapaneseVowels"), ("model.d_model", "8"), ("model.n_layers", "1"),
                                  ("model.layer.d_state", "4"), ("trainer.epochs", "1"),
                                  ("trainer.out", str(tmp_path / "c")), ("trainer.tensorboard", "off")]), progress=False)
    res = export_checkpoint(tmp_path / "c", tmp_path / "c.pt2")
    assert "lengths (B,)" in res["kind"] and res["max_abs_diff"] == 0.0
    program = torch.export.load(str(tmp_path / "c.pt2")).module()
    model, _ = load_trained(str(tmp_path / "c"))
    x, _, lengths = get_dataset("ucr:JapaneseVowels").test.tensors
    with torch.no_grad():
        torch.testing.assert_close(program(x[10:15], lengths[10:15]), model(x[10:15], lengths[10:15]))
    with pytest.raises(TypeError, match="export it as a torch.export program instead"):
        export_checkpoint(tmp_path / "c", tmp_path / "c.onnx")
    with pytest.raises(ValueError, match=r"give a file ending in \.onnx"):
        export_checkpoint(tmp_path / "c", tmp_path / "c.txt")


def test_export_edges_found_by_a_campaign(tmp_path, capsys):
    """A token-input model (one-hot inputs) failed on its raw ids; --rate on a classifier was ignored and on a
    language model checked against the wrong rate; a failed export left its folder behind; an output path under
    a file gave the raw errno; the language model's input signature was not said."""
    from statespaces.cli import main
    from statespaces.data import get_dataset
    from statespaces.export import streaming_model
    from statespaces.train.export_run import export_checkpoint

    train(build_config(overrides=[("data.name", "copying"), ("data.kwargs", '{"n_train": 64, "n_test": 16}'),
                                  ("model.d_model", "8"), ("model.n_layers", "1"), ("model.layer.d_state", "4"),
                                  ("trainer.epochs", "1"), ("trainer.out", str(tmp_path / "copy")),
                                  ("trainer.tensorboard", "off")]), progress=False)
    res = export_checkpoint(tmp_path / "copy", tmp_path / "copy.pt2")
    assert res["max_abs_diff"] == 0.0
    program = torch.export.load(str(tmp_path / "copy.pt2")).module()
    model, _ = load_trained(str(tmp_path / "copy"))
    test = get_dataset("copying", n_train=64, n_test=16).test
    onehot = torch.stack([test[i][0] for i in range(10, 13)])          # what the model is trained on
    torch.testing.assert_close(program(onehot), model(onehot))
    with pytest.raises(ValueError, match="the rate applies to a language model"):
        export_checkpoint(tmp_path / "copy", tmp_path / "r.pt2", rate=2.0)
    with pytest.raises(ValueError, match="rate must be a positive"):
        export_checkpoint(tmp_path / "copy", tmp_path / "newdir" / "r.pt2", rate=0.0)
    assert not (tmp_path / "newdir").exists()
    with pytest.raises(ValueError, match="is a file, so no folder can hold"):
        export_checkpoint(tmp_path / "copy", tmp_path / "copy.pt2" / "x.pt2")

    run, tokens = _token_run(tmp_path)
    res = export_checkpoint(run, tmp_path / "half.pt2", rate=2.0)
    assert "rate 2.0" in res["checked_on"] and res["max_abs_diff"] < 1e-5 and "batch size 1" in res["kind"]
    step = torch.export.load(str(tmp_path / "half.pt2")).module()
    lm, _ = load_trained(str(run))
    sm = streaming_model(lm, 2.0)
    state, outs, x = list(sm.initial_state(1)), [], tokens[3:4]
    with torch.no_grad():
        for t in range(x.shape[1]):
            y, *state = step(x[:, t:t + 1], *state)
            outs.append(y)
        state, ref = list(sm.initial_state(1)), []
        for t in range(x.shape[1]):
            y, *state = sm(x[:, t:t + 1], *state)
            ref.append(y)
    torch.testing.assert_close(torch.cat(outs, 1), torch.cat(ref, 1))
    assert not torch.allclose(torch.cat(ref, 1), lm(x), atol=1e-3)        # another rate: another model
    assert main(["export", str(run), str(tmp_path / "ok.pt2")]) == 0
    assert "state tensors" in capsys.readouterr().out
