"""Autoregressive LM (statespaces.models.lm): recurrent generation equals re-running the
convolution on the growing sequence (thesis §7.4.2), causality, sampling and input validation."""
import pytest
import torch
from conftest import SMALL_LAYERS

from statespaces.models.generate import check_sampling, filter_logits, sample_logits
from statespaces.models.lm import SSMLanguageModel, SSMStack


pytestmark = pytest.mark.usefixtures("one_thread")
LAYERS = SMALL_LAYERS
BACKBONES = [("flat", {}), ("sashimi", dict(pool=(2, 2))), ("sashimi", dict(pool=(4,), unet=True))]


def _model(layer, lkw, backbone, bkw, n_streams=1, **kw):
    torch.manual_seed(1)
    return SSMLanguageModel(
        13, d_model=8, n_layers=1, layer={"kind": layer, **lkw}, backbone=backbone, backbone_kwargs=bkw,
        n_streams=n_streams, **kw,
    ).double().eval()


@pytest.mark.parametrize("layer,lkw", LAYERS, ids=[l for l, _ in LAYERS])
@pytest.mark.parametrize("backbone,bkw", BACKBONES, ids=["flat", "sashimi22", "sashimi4unet"])
def test_generation_logits_match_convolution(layer, lkw, backbone, bkw):
    m = _model(layer, lkw, backbone, bkw)
    prompt = torch.randint(0, 13, (2, 7))                  # 7: not a multiple of the pools
    steps = 10
    toks, logits = m.generate(prompt, steps, return_logits=True, generator=torch.Generator().manual_seed(0))
    assert toks.shape == (2, steps) and logits.shape == (2, steps, 13)
    seq = torch.cat([prompt, toks], 1)
    with torch.no_grad():
        for i in range(steps):                              # re-run the convolution on the growing sequence
            ref = m(seq[:, : 7 + i])[:, -1]
            torch.testing.assert_close(logits[:, i], ref, atol=1e-4, rtol=1e-4)


#: layers with no stepper (they step only through step()): S4ND with one causal axis
NO_STEPPER = [("s4nd", dict(d_state=8, dims=1, bidirectional=False), "S4ND")]


@pytest.mark.parametrize("layer,lkw,cls", NO_STEPPER, ids=[l for l, _, _ in NO_STEPPER])
@pytest.mark.parametrize("backbone,bkw", BACKBONES[:2], ids=["flat", "sashimi22"])
def test_default_generation_steps_layers_without_a_stepper_eagerly(layer, lkw, cls, backbone, bkw):
    """generate() with its defaults (stepper=None) on S4ND (and on S5 before it had a stepper) raised TypeError
    or AttributeError from the fused stepper; it now steps them eagerly and matches the teacher-forced convolution view. An
    explicit stepper=True still refuses, naming the layer and the way out."""
    m = _model(layer, lkw, backbone, bkw)
    prompt = torch.randint(0, 13, (2, 7))
    toks, logits = m.generate(prompt, 6, return_logits=True, generator=torch.Generator().manual_seed(0))
    assert toks.shape == (2, 6)
    with torch.no_grad():
        ref = m(torch.cat([prompt, toks], 1))[:, 6:12]      # logits of the generated prefix, one pass
    torch.testing.assert_close(logits, ref, atol=1e-10, rtol=0)
    same = m.generate(prompt, 6, generator=torch.Generator().manual_seed(0), stepper=False)
    assert torch.equal(same, toks)
    with pytest.raises(TypeError, match=rf"\({cls}\) has no stepper.*stepper=False"):
        m.generate(prompt, 3, stepper=True)
    with pytest.raises(TypeError, match=rf"\({cls}\) has no stepper"):
        m.stepper(2)


@pytest.mark.parametrize("backbone,bkw", BACKBONES[:2], ids=["flat", "sashimi22"])
def test_generation_multi_stream(backbone, bkw):
    m = _model("s4d", dict(d_state=8), backbone, bkw, n_streams=4)
    prompt = torch.randint(0, 13, (3, 5, 4))
    toks, logits = m.generate(prompt, 6, return_logits=True, top_k=5, generator=torch.Generator().manual_seed(0))
    assert toks.shape == (3, 6, 4) and logits.shape == (3, 6, 4, 13)
    full = m(torch.cat([prompt, toks], 1))
    torch.testing.assert_close(logits, full[:, 4:10], atol=1e-4, rtol=1e-4)
    # top_k=5: every sampled token is among the 5 largest logits of its stream
    kth = logits.topk(5, dim=-1).values[..., -1]
    assert bool((logits.gather(-1, toks.unsqueeze(-1)).squeeze(-1) >= kth).all())


def test_generation_continuous_inputs():
    torch.manual_seed(0)
    m = SSMLanguageModel(16, d_model=8, n_layers=2, layer=dict(kind="s4d", d_state=8), d_input=1).double().eval()
    to_in = lambda tok: (tok.double() / 15 * 2 - 1).unsqueeze(-1)
    prompt = torch.rand(2, 6, 1, dtype=torch.float64)
    toks, logits = m.generate(prompt, 5, return_logits=True, token_to_input=to_in)
    x = torch.cat([prompt, to_in(toks)], 1)
    torch.testing.assert_close(logits, m(x)[:, 5:10], atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="token_to_input"):
        m.generate(prompt, 2)


@pytest.mark.parametrize("layer,lkw", LAYERS, ids=[l for l, _ in LAYERS])
@pytest.mark.parametrize("backbone,bkw", BACKBONES, ids=["flat", "sashimi22", "sashimi4unet"])
def test_lm_is_causal(layer, lkw, backbone, bkw):
    m = _model(layer, lkw, backbone, bkw)
    x = torch.randint(0, 13, (2, 16))
    y = m(x)
    for t0 in (1, 5, 8, 13):
        x2 = x.clone()
        x2[:, t0:] = torch.randint(0, 13, (2, 16 - t0))
        y2 = m(x2)
        torch.testing.assert_close(y2[:, :t0], y[:, :t0], atol=1e-12, rtol=0)


def test_generation_reproducible_and_restores_mode():
    m = _model("s4d", dict(d_state=8), "flat", {}).train()
    p = torch.randint(0, 13, (2, 3))
    a = m.generate(p, 8, top_p=0.9, generator=torch.Generator().manual_seed(5))
    b = m.generate(p, 8, top_p=0.9, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and m.training


@pytest.mark.parametrize(
    "kw", [dict(temperature=0), dict(temperature=-1.0), dict(temperature=float("nan")), dict(top_k=0),
           dict(top_k=2.5), dict(top_p=0.0), dict(top_p=1.5)]
)

def test_invalid_sampling_parameters(kw):
    m = _model("s4d", dict(d_state=8), "flat", {})
    with pytest.raises((ValueError, TypeError)):        # top_k=2.5: TypeError (a float where an int is expected)
        m.generate(torch.zeros(1, 2, dtype=torch.long), 3, **kw)


def test_bad_inputs():
    m = _model("s4d", dict(d_state=8), "flat", {}, max_len=16)
    with pytest.raises(ValueError, match="max_len"):
        m.generate(torch.zeros(1, 17, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="max_len"):
        m(torch.zeros(1, 17, dtype=torch.long))
    m.generate(torch.zeros(1, 16, dtype=torch.long), 4)     # recurrent steps beyond max_len are fine
    with pytest.raises(ValueError, match="vocab_size"):
        m(torch.full((1, 4), 13))
    with pytest.raises(TypeError):
        m(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="steps"):
        m.generate(torch.zeros(1, 2, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="backbone"):
        SSMLanguageModel(13, backbone="transformer")


def test_sampling_filters():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    f = filter_logits(logits, top_k=2)
    assert torch.isinf(f).tolist() == [[True, False, False, True]]
    # probs ~ [0.087, 0.644, 0.237, 0.032]: top_p=0.7 keeps the two largest, 0.5 only the first
    assert torch.isinf(filter_logits(logits, top_p=0.7)).tolist() == [[True, False, False, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.5)).tolist() == [[True, False, True, True]]
    assert sample_logits(logits, temperature=1e-4).item() == 1
    assert sample_logits(logits.expand(100, 4), top_k=1).eq(1).all()
    check_sampling(1.0, None, 1.0)


@pytest.mark.parametrize("V", [10, 1000])
def test_top_p_ties_keep_the_lower_indices(V):
    # V - 1 equally likely tokens and one less likely: the nucleus of half the mass is the first half of the
    # tied tokens in index order, on every row (an unstable sort kept a scattered set from V ~ 100 on)
    logits = torch.zeros(3, V)
    logits[:, -1] = -1.0
    kept = ~torch.isinf(filter_logits(logits, top_p=0.5))
    n = int(kept[0].sum())
    assert 0 < n < V - 1
    assert kept[:, :n].all() and not kept[:, n:].any()


def test_nll_masks_padding():
    m = _model("s4d", dict(d_state=8), "flat", {})
    x = torch.randint(0, 13, (2, 10))
    tot, cnt = m.nll(x, lengths=torch.tensor([10, 6]))
    t0, c0 = m.nll(x[:1])
    t1, c1 = m.nll(x[1:, :6])
    assert int(cnt) == 9 + 5 and int(c0) == 9 and int(c1) == 5
    torch.testing.assert_close(tot, t0 + t1)


def test_stack_chunked_state():
    s = SSMStack(8, 2, layer=dict(kind="s4d", d_state=8), ff_expand=2).double()
    x = torch.randn(2, 20, 8, dtype=torch.float64)
    y = s(x)
    y1, st = s(x[:, :9], return_state=True)
    y2 = s(x[:, 9:], state=st)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y)


def test_nll_of_a_float64_model_is_float64():
    """A float64 LM's nll was computed on logits cast to float32 (5e-8 relative; finite differences at 1e-7 read 0)."""
    m = _model("s4d", dict(d_state=8), "flat", {}).double()
    x = torch.randint(0, 13, (2, 10))
    tot, _ = m.nll(x)
    assert tot.dtype == torch.float64
    logits = m(x)
    ref = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                            reduction="sum")
    torch.testing.assert_close(tot, ref, rtol=1e-14, atol=0)


def test_top_p_keeps_the_smallest_set_that_reaches_top_p():
    """Nucleus sampling against brute force over every subset: the kept tokens are the most probable ones, as few as
    possible, whose mass reaches top_p (>=: exactly at the boundary [.5, .25, .25] with p = .5 keeps one token)."""
    import itertools

    from statespaces.models.generate import filter_logits

    cases = [([0.5, 0.25, 0.25], 0.5), ([0.5, 0.25, 0.25], 0.75), ([0.5, 0.25, 0.25], 0.7),
             ([0.1, 0.2, 0.3, 0.4], 0.39), ([0.1, 0.2, 0.3, 0.4], 0.41), ([0.1, 0.2, 0.3, 0.4], 0.69),
             ([0.1, 0.2, 0.3, 0.4], 0.71), ([0.125] * 8, 0.25), ([0.6, 0.3, 0.1], 0.95)]   # boundaries exact in binary
    for probs, p in cases:
        prob = torch.tensor(probs, dtype=torch.float64)
        kept = torch.isfinite(filter_logits(prob.log(), top_p=p))
        best = None
        for size in range(1, len(probs) + 1):
            for subset in itertools.combinations(range(len(probs)), size):
                if float(prob[list(subset)].sum()) >= p - 1e-12:
                    best = size
                    break
            if best is not None:
                break
        assert int(kept.sum()) == best, (probs, p, kept.tolist())
        assert float(prob[kept].min()) >= float(prob[~kept].max()) if bool((~kept).any()) else True


# ---- prompts of different lengths (prompt_lengths) ------------------------------------------------
@pytest.mark.parametrize("layer,lkw", LAYERS, ids=[l for l, _ in LAYERS])
@pytest.mark.parametrize("backbone,bkw", BACKBONES[:2], ids=["flat", "sashimi22"])
@pytest.mark.parametrize("stepper", [None, False])
def test_ragged_prompts_generate_as_each_prompt_alone(layer, lkw, backbone, bkw, stepper):
    """A right-padded batch of prompts with ``prompt_lengths``: each row's tokens and logits equal those of its
    prompt generated alone (greedy, so the draws do not depend on the batch), whatever fills the padding."""
    m = _model(layer, lkw, backbone, bkw)
    torch.manual_seed(2)
    lengths = torch.tensor([3, 7, 5])
    prompt = torch.randint(0, 13, (3, 7))
    steps = 6
    toks, logits = m.generate(prompt, steps, top_k=1, return_logits=True, prompt_lengths=lengths, stepper=stepper)
    assert toks.shape == (3, steps) and logits.shape == (3, steps, 13)
    for b, n in enumerate(lengths.tolist()):
        alone, lg = m.generate(prompt[b:b + 1, :n], steps, top_k=1, return_logits=True, stepper=stepper)
        assert torch.equal(toks[b], alone[0]), b
        torch.testing.assert_close(logits[b], lg[0], atol=1e-10, rtol=1e-10)
    padded = prompt.clone()
    for b, n in enumerate(lengths.tolist()):
        padded[b, n:] = -1                                   # padding is never read (not even checked)
    again = m.generate(padded, steps, top_k=1, prompt_lengths=lengths, stepper=stepper)
    assert torch.equal(again, toks)


def test_ragged_prompts_multi_stream_and_continuous_inputs():
    """Multi-stream token prompts and continuous-input prompts of different lengths, against each alone."""
    m = _model("s4d", dict(d_state=8), "flat", {}, n_streams=3)
    torch.manual_seed(3)
    prompt, lengths = torch.randint(0, 13, (2, 6, 3)), torch.tensor([6, 2])
    toks, logits = m.generate(prompt, 4, top_k=1, return_logits=True, prompt_lengths=lengths)
    for b, n in enumerate(lengths.tolist()):
        alone, lg = m.generate(prompt[b:b + 1, :n], 4, top_k=1, return_logits=True)
        assert torch.equal(toks[b], alone[0])
        torch.testing.assert_close(logits[b], lg[0], atol=1e-10, rtol=1e-10)

    torch.manual_seed(0)
    mc = SSMLanguageModel(16, d_model=8, n_layers=2, layer=dict(kind="s4d", d_state=8), d_input=1).double().eval()
    to_in = lambda tok: (tok.double() / 15 * 2 - 1).unsqueeze(-1)   # noqa: E731
    prompt = torch.rand(3, 6, 1, dtype=torch.float64)
    lengths = torch.tensor([4, 1, 6])
    prompt[1, 1:] = float("nan")                             # padding: never read
    toks, logits = mc.generate(prompt, 5, top_k=1, return_logits=True, token_to_input=to_in, prompt_lengths=lengths)
    for b, n in enumerate(lengths.tolist()):
        alone, lg = mc.generate(prompt[b:b + 1, :n], 5, top_k=1, return_logits=True, token_to_input=to_in)
        assert torch.equal(toks[b], alone[0])
        torch.testing.assert_close(logits[b], lg[0], atol=1e-10, rtol=1e-10)


def test_equal_prompt_lengths_change_nothing():
    """``prompt_lengths`` all equal to the prompt's length: the same tokens as without it, draw for draw."""
    m = _model("s4d", dict(d_state=8), "flat", {})
    prompt = torch.randint(0, 13, (4, 5), generator=torch.Generator().manual_seed(4))
    a = m.generate(prompt, 8, generator=torch.Generator().manual_seed(5))
    b = m.generate(prompt, 8, generator=torch.Generator().manual_seed(5), prompt_lengths=torch.full((4,), 5))
    assert torch.equal(a, b)


def test_ragged_prompts_sample_after_their_own_end():
    """With sampling, each row's logits are still those of its own prompt followed by its own draws: the
    convolution of the concatenated sequence."""
    m = _model("s4d", dict(d_state=8), "flat", {})
    prompt = torch.randint(0, 13, (3, 6), generator=torch.Generator().manual_seed(6))
    lengths = torch.tensor([6, 2, 4])
    toks, logits = m.generate(prompt, 5, return_logits=True, prompt_lengths=lengths,
                              generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        for b, n in enumerate(lengths.tolist()):
            seq = torch.cat([prompt[b:b + 1, :n], toks[b:b + 1]], 1)
            torch.testing.assert_close(logits[b], m(seq)[0, n - 1:n + 4], atol=1e-10, rtol=1e-10)


def test_prompt_lengths_validation():
    m = _model("s4d", dict(d_state=8), "flat", {})
    prompt = torch.randint(0, 13, (2, 5))
    with pytest.raises(TypeError, match="prompt_lengths must be an integer tensor"):
        m.generate(prompt, 2, prompt_lengths=torch.tensor([2.0, 3.0]))
    with pytest.raises(TypeError, match="prompt_lengths must be an integer tensor"):
        m.generate(prompt, 2, prompt_lengths=[2, 3])
    with pytest.raises(TypeError, match="prompt_lengths must be an integer tensor"):
        m.generate(prompt, 2, prompt_lengths=torch.tensor([True, True]))       # not read as lengths of 1
    for bad in ([0, 3], [2, 6], [2, 3, 4]):
        with pytest.raises(ValueError, match=r"prompt_lengths must be \(B=2,\) integers in \[1, L=5\]"):
            m.generate(prompt, 2, prompt_lengths=torch.tensor(bad))
    with pytest.raises(ValueError, match="must lie in"):         # a valid position out of the vocabulary
        m.generate(torch.tensor([[1, 2, 99], [1, 2, 3]]), 2, prompt_lengths=torch.tensor([3, 2]))
