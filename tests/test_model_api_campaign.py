"""Model-level API defects found by a campaign acting as a new user (2026-12-07): each was a silent wrong answer
or a crash that did not name the mistake. One test per fix; the numerical routes of the models are tested
elsewhere (padding, generation, steppers)."""
import pytest
import torch

from statespaces import S4D
from statespaces.blocks import ResidualBlock
from statespaces.models.classifier import SequenceClassifier
from statespaces.models.forecast import SSMForecaster
from statespaces.models.lm import SSMLanguageModel, SSMStack
from statespaces.models.sashimi import SaShiMi

pytestmark = pytest.mark.usefixtures("one_thread")


def test_loss_refuses_targets_not_aligned_with_the_inputs():
    """Targets (4, 4) for inputs (2, 7): after the shift both score 12 tokens, so the flattened cross-entropy paired
    each sequence's predictions with another sequence's tokens and returned a number; other counts failed inside
    torch's cross_entropy."""
    torch.manual_seed(0)
    m = SSMLanguageModel(11, d_model=8, n_layers=1).double()
    for inputs, targets in ((torch.randint(0, 11, (2, 7)), torch.randint(0, 11, (4, 4))),
                            (torch.randint(0, 11, (3, 5)), torch.randint(0, 11, (4, 4))),
                            (torch.randint(0, 11, (2, 7)), torch.randint(0, 11, (2, 6)))):
        for fn in (m.loss, m.nll):
            with pytest.raises(ValueError, match="targets must be aligned with the inputs"):
                fn(inputs, targets=targets)
    mc = SSMLanguageModel(11, d_model=8, n_layers=1, d_input=2).double()
    with pytest.raises(ValueError, match="targets must be aligned"):
        mc.loss(torch.randn(2, 7, 2, dtype=torch.float64), targets=torch.randint(0, 11, (4, 4)))
    x = torch.randint(0, 11, (2, 7))
    assert torch.isfinite(m.loss(x)) and torch.isfinite(m.loss(x, targets=torch.randint(0, 11, (2, 7))))


@pytest.mark.parametrize("call", [
    lambda: SaShiMi(8, unet="no", layer="s4d"),
    lambda: SequenceClassifier(1, 2, prenorm="no"),
    lambda: ResidualBlock(S4D(8, 4), prenorm=None),
    lambda: ResidualBlock(S4D(8, 4), tie_dropout="no"),
    lambda: SSMLanguageModel(7, d_model=8, n_layers=1)(torch.randint(0, 7, (2, 5)), return_state="no"),
    lambda: SSMStack(8, n_layers=1)(torch.randn(2, 5, 8), return_state="no"),
    lambda: SaShiMi(8, n_layers=1, layer="s4d")(torch.randn(2, 16, 8), return_state="no"),
    lambda: SSMLanguageModel(7, d_model=8, n_layers=1).generate(torch.randint(0, 7, (2, 3)), 2, return_logits="no"),
])
def test_model_flags_must_be_bools(call):
    """Any truthy value was taken: unet='no' built a U-Net, return_state='no' returned a tuple."""
    with pytest.raises(TypeError, match="must be True or False"):
        call()


def test_forecaster_masked_input_checks_the_context():
    f = SSMForecaster(2, horizon=5, d_model=8, n_layers=1)
    for bad, err in ((torch.randn(3, 10, 3), ValueError), (torch.randn(10, 2), ValueError),
                     ([[1.0, 2.0]], TypeError), (torch.ones(3, 10, 2, dtype=torch.long), TypeError)):
        with pytest.raises(err, match="context"):
            f.masked_input(bad)
    out = f.masked_input(torch.randn(3, 10, 2))
    assert out.shape == (3, 15, 3) and out[:, 10:, -1].eq(1).all() and out[:, :10, -1].eq(0).all()


def test_model_stepper_input_is_checked_like_a_layer_stepper():
    st = SSMLanguageModel(7, d_model=8, n_layers=1).eval().stepper(2)
    for bad, err in ((torch.randn(2, 8, dtype=torch.complex64), TypeError),
                     (torch.ones(2, 8, dtype=torch.long), TypeError),
                     (torch.randn(2, 8, dtype=torch.float64), TypeError),
                     (torch.randn(2, 8, device="meta"), ValueError),
                     (torch.randn(3, 8), ValueError)):
        with pytest.raises(err, match="stepper input"):
            st(bad)
    assert st(torch.randn(2, 8)).shape == (2, 7)


def test_sashimi_checks_its_block_states_up_front():
    """A bad center state was accepted for 15 steps (its tier fires every 16), a short up_blocks list raised an
    IndexError and an extra entry was ignored."""
    net = SaShiMi(8, n_layers=1, pool=4, n_pools=2, layer="s4d").eval()
    x = torch.randn(2, 8)
    cases = [(lambda s: s["center"].__setitem__(0, torch.zeros(5)),
              r"state\['center'\]\[0\] must be a tensor of shape"),
             (lambda s: s.__setitem__("up_blocks", s["up_blocks"][:1]), r"state\['up_blocks'\] must be a list of 2"),
             (lambda s: s.__setitem__("center", s["center"] + [None]), r"state\['center'\] must be a list of 2 block"),
             (lambda s: s["down_blocks"].__setitem__(0, [torch.zeros(3, 8, 32, dtype=torch.complex64)]),
              r"state\['down_blocks'\]\[0\]")]
    for edit, match in cases:
        st = net.initial_state(2)
        edit(st)
        with pytest.raises(ValueError, match=match):
            net.step(x, st)
        with pytest.raises(ValueError, match=match):
            net(torch.randn(2, 16, 8), state=st)
    three = net.initial_state(3)                               # a batch-3 state, stepped with batch 2
    st = net.initial_state(2)
    st["center"] = three["center"]
    with pytest.raises(ValueError, match=r"state\['center'\]\[0\] must be .* of shape \(2, "):
        net.step(x, st)
    y, st = net.step(x, net.initial_state(2))                  # the right state still steps
    net.double()
    net.step(x.double(), net.initial_state(2))                  # .to() after a first check


def test_constructor_arguments_that_were_truncated_or_crashed_inside_torch():
    with pytest.raises(TypeError, match="d_model"):
        SequenceClassifier(1, 2, d_model=2.0)
    with pytest.raises(ValueError, match="stem_dilations must be a non-empty list of positive ints"):
        SequenceClassifier(3, 5, stem=3, stem_dilations=(1.5,))
    assert SequenceClassifier(3, 4, stem=3, stem_dilations=(1, 2)).encoder.dilations == (1, 2)
    with pytest.raises(ValueError, match=r"dropout probability must be in \[0, 1\)"):
        ResidualBlock(S4D(8, 4), dropout=1.0, tie_dropout=False)
    with pytest.raises(TypeError, match="dropout probability must be a number"):
        ResidualBlock(S4D(8, 4), dropout="0.1", tie_dropout=False)


def test_lengths_on_the_meta_device_are_refused_by_name():
    m = SequenceClassifier(1, 2, d_model=8, n_layers=1)
    with pytest.raises(ValueError, match="lengths is on the meta device"):
        m(torch.randn(4, 6, 1), lengths=torch.tensor([3, 4, 5, 6], device="meta"))
    lm = SSMLanguageModel(7, d_model=8, n_layers=1)
    with pytest.raises(ValueError, match="on the meta device"):
        lm.generate(torch.randint(0, 7, (2, 4)), 2, prompt_lengths=torch.tensor([2, 4], device="meta"))


def test_stepper_true_is_enforced_for_a_single_step():
    """generate(..., 1, stepper=True) on a model with no stepper used the eager step instead of refusing."""
    lm = SSMLanguageModel(7, d_model=8, n_layers=1, layer={"kind": "s4nd", "dims": 1, "bidirectional": False,
                                                           "d_state": 4})
    with pytest.raises(TypeError, match="has no stepper"):
        lm.generate(torch.randint(0, 7, (2, 3)), 1, stepper=True)
    assert lm.generate(torch.randint(0, 7, (2, 3)), 1).shape == (2, 1)


@pytest.mark.parametrize("kind", ["s4d", "linoss", "s5"])
def test_irregular_sampling_with_zero_padded_intervals_and_lengths(kind):
    """Zero-padded dt / timestamps (the usual padding) were refused as non-positive intervals although the padding
    is never read; with lengths, only the valid steps are checked and each sequence equals itself alone."""
    torch.manual_seed(0)
    size = "n_oscillators" if kind == "linoss" else "d_state"
    m = SequenceClassifier(2, 3, d_model=8, n_layers=1, layer={"kind": kind, size: 4}).double().eval()
    x = torch.randn(2, 7, 2, dtype=torch.float64)
    lengths = torch.tensor([7, 4])
    dt = torch.rand(2, 7, dtype=torch.float64) + 0.5
    dt[1, 4:] = 0.0
    ts = torch.cumsum(dt, 1)
    ts[1, 4:] = 0.0
    for kw in ({"dt": dt}, {"timestamps": ts}):
        both = m(x, lengths=lengths, **kw)
        alone = m(x[1:, :4], **{k: v[1:, :4] for k, v in kw.items()})
        torch.testing.assert_close(both[1:], alone, rtol=1e-12, atol=1e-12)
    bad = dt.clone()
    bad[1, 2] = 0.0                                           # a zero interval at a valid step is still refused
    with pytest.raises(ValueError, match="non-positive or non-finite intervals"):
        m(x, lengths=lengths, dt=bad)
    with pytest.raises(ValueError, match="non-positive or non-finite intervals"):
        m(x, dt=dt)                                           # without lengths every step is valid


def test_generation_and_backbone_messages_name_the_real_mistake():
    """A NaN from token_to_input read as "logits overflowed"; an unknown backbone_kwargs key gave Python's bare
    "unexpected keyword argument"; a state with lengths complained about a return_state the caller never passed."""
    mc = SSMLanguageModel(5, d_model=8, n_layers=1, d_input=2).eval()
    with pytest.raises(ValueError, match="token_to_input returned NaN or inf"):
        mc.generate(torch.randn(2, 3, 2), 2, token_to_input=lambda t: torch.full((t.shape[0], 2), float("nan")))
    with pytest.raises(ValueError, match=r"token_to_input must return \(batch, d_input=2\)"):
        mc.generate(torch.randn(2, 3, 2), 2, token_to_input=lambda t: [0.0, 1.0])
    for backbone, kw, options in (("flat", {"pool": 2}, "ff_expand, causal"), ("sashimi", {"poool": 2}, "pool, ")):
        with pytest.raises(TypeError, match=rf"backbone_kwargs \['\w+'\] are not options of the '{backbone}' "
                                            rf"backbone .*its options: {options}"):
            SSMLanguageModel(7, d_model=8, n_layers=1, backbone=backbone, backbone_kwargs=kw)
    lm = SSMLanguageModel(7, d_model=8, n_layers=1)
    tokens = torch.randint(0, 7, (2, 5))
    _, state = lm(tokens, return_state=True)
    with pytest.raises(ValueError, match=r"a state \(state= or return_state=True\) with a padding mask"):
        lm(tokens, state=state, lengths=torch.tensor([5, 3]))


def test_stepping_a_batchnorm_block_in_training_mode_warns_once():
    """The step of a BatchNorm block in training mode differed from forward by 0.9 without a word (dropout warned)."""
    import warnings

    block = ResidualBlock(S4D(4, 8, seed=0), norm="batch").train()
    state = block.initial_state(3)
    with pytest.warns(UserWarning, match="normalizes each step by the statistics of that step's batch"):
        _, state = block.step(torch.randn(3, 4), state)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        block.step(torch.randn(3, 4), state)                                   # once per block
        block.eval().step(torch.randn(3, 4), block.initial_state(3))           # eval: running statistics


def test_s4nd_options_that_could_never_run_are_refused_up_front():
    """S4ND offered discretization='gbt', whose alpha it has no argument for (construction always failed, naming an
    alpha S4ND does not take); ImageClassifier(layer='conv', d_model=0) built and then crashed inside torch."""
    from statespaces.layers import S4ND
    from statespaces.layers.s4nd import S4NDConfig
    from statespaces.models.image import ImageClassifier
    from statespaces.train.config import ConfigError

    with pytest.raises(ValueError, match="unknown discretization 'gbt'"):
        S4ND(3, d_state=8, discretization="gbt")
    with pytest.raises(ConfigError, match="s4nd.discretization: got 'gbt'"):
        S4NDConfig(discretization="gbt")
    with pytest.raises(ValueError, match="d_model must be an integer >= 1"):
        ImageClassifier(1, 10, d_model=0, layer="conv")
    assert S4ND(3, d_state=8, discretization="bilinear").axes[0].discretization == "bilinear"


def test_generation_and_audio_edges_found_by_the_lm_campaign(tmp_path):
    """A temperature of 1e-40 overflowed the float32 logits (NaN probabilities, torch's multinomial error); NaN audio
    became the code -2^63; audio_splits with two fractions raised an IndexError; from_pretrained returned a dropout
    model in training mode (two scorings, two losses)."""
    from statespaces.data.audio import audio_splits, linear_encode, mulaw_encode, synth_piano
    from statespaces.models.generate import sample_logits
    from statespaces.serialization import load_pretrained

    logits = torch.tensor([[2.0, 1.0, -1.0], [0.0, 5.0, 1.0]])
    for t in (1e-40, 1e-300):
        assert sample_logits(logits, temperature=t).tolist() == [0, 1]
    lm = SSMLanguageModel(7, d_model=8, n_layers=1).eval()
    p = torch.randint(0, 7, (2, 4))
    greedy = lm.generate(p, 5, top_k=1)
    assert torch.equal(lm.generate(p, 5, temperature=1e-300), greedy)
    for enc in (mulaw_encode, linear_encode):
        with pytest.raises(ValueError, match="NaN samples"):
            enc(torch.tensor([0.1, float("nan")]))
    with pytest.raises(TypeError, match="expects a float waveform"):
        linear_encode(torch.tensor([1, 2]))
    for fr in ((0.5, 0.3), (0.5, 0.3, 0.4), (0.5, -0.1, 0.2)):
        with pytest.raises(ValueError, match="fractions must be three numbers"):
            audio_splits(synth_piano(0.5), 100, fractions=fr)
    SSMLanguageModel(7, d_model=8, n_layers=1, dropout=0.2).save_pretrained(tmp_path / "m")
    m = load_pretrained(tmp_path / "m")
    x = torch.randint(0, 7, (2, 6))
    with torch.no_grad():
        assert not m.training and torch.equal(m.loss(x), m.loss(x))


# --- second campaign (2026-12-07) -------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind", ["s4d", "s4", "s5", "linoss"])
def test_a_model_cast_to_half_precision_is_refused_by_its_layers(kind, dtype):
    """The layers refuse half-precision parameters, but inside a model the check was skipped (a nested entry
    point): torch-internal errors (view_as_complex, ComplexHalf reciprocal) or, for LinOSS in float16, a run."""
    model = SequenceClassifier(3, 4, d_model=8, n_layers=1, layer=kind).to(dtype)
    with pytest.raises(TypeError, match=f"parameters are {dtype}.*torch.autocast"):
        model(torch.randn(2, 9, 3))


def test_saved_tensors_keep_their_own_dtype(tmp_path):
    from statespaces import load_pretrained

    model = SSMLanguageModel(11, d_model=8, n_layers=1)
    model.head.double()
    loaded = load_pretrained(model.save_pretrained(tmp_path / "m"))
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert a.dtype == b.dtype and torch.equal(a, b), name


def test_generation_and_input_messages_of_the_second_campaign():
    model = SSMLanguageModel(11, d_model=8, n_layers=1, max_len=8)
    prompt = torch.randint(0, 11, (2, 9))
    # the width of a right-padded prompt is not its length: only the shortest prompt runs as a convolution
    assert model.generate(prompt, 3, prompt_lengths=torch.tensor([3, 5])).shape == (2, 3)
    with pytest.raises(ValueError, match="more than the model's max_len=8"):
        model.generate(prompt, 3)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        model.generate(prompt[:, :3], 3, generator="x")
    assert model(torch.randint(0, 11, (2, 5), dtype=torch.int8)).shape == (2, 5, 11)   # an integer dtype too
    with pytest.raises(ValueError, match="expects d_input=3"):
        SequenceClassifier(3, 4, d_model=8, n_layers=1)(torch.randn(2, 5, 4))
    from statespaces.models.baselines import GatedRNNClassifier

    with pytest.raises(ValueError, match="unknown kind 'rnn'; valid choices are: lstm, gru"):
        GatedRNNClassifier("rnn", 2, 3)
