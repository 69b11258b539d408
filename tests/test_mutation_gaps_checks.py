"""Tests from a mutation audit (round 11e) of the validation contract and the mixed-precision rule.

Modules: ``statespaces/_checks.py`` (shape/dtype/finiteness/length checks, error messages) and
``statespaces/ops/_amp.py`` (custom autograd Functions run in float32 under ``torch.autocast``).
44 mutants: 32 killed by the existing suite; 12 survived: 1 equivalent (skipping the NaN test of
``check_real``: ``not v > 0`` refuses NaN too, and no caller passes ``positive=False``), 1 misleading message
(a bfloat16 overflow was told to "pass it in float32", a dtype of the same range: fixed, its advice is float64 now,
pinned by the last test), and 10 gaps pinned below (three of them the same behaviour: the early finiteness check
of a model's input).
"""
from __future__ import annotations

import pytest
import torch

from statespaces import S4D
from statespaces._checks import MAX_SEED, all_finite_many
from statespaces.models import SequenceClassifier


def test_nan_in_the_padded_tail_is_refused_by_a_pooled_classifier():
    """NaN/inf in the input is refused up front (check_sequence's finiteness check), even where the padding
    mask would keep it out of the pooled logits: it must not be silently accepted."""
    torch.manual_seed(0)
    m = SequenceClassifier(3, 2, d_model=4, n_layers=1, layer={"kind": "s4d", "d_state": 4}, pool="mean")
    x = torch.randn(2, 6, 3)
    x[0, 5] = float("nan")                       # beyond lengths[0] = 4: in the padding
    with pytest.raises(ValueError, match="input contains NaN or inf"):
        m(x, lengths=torch.tensor([4, 6]))


def test_all_finite_many_sees_the_last_tensor():
    """The one-sync fused sum over several outputs covers every tensor, the last one included, and the exact
    fallback requires all of them to be finite (not any)."""
    ok = torch.ones(3)
    assert all_finite_many([ok, ok])
    assert not all_finite_many([ok, torch.tensor([1.0, float("nan")])])
    big = torch.full((4,), 3e38)                 # finite, but its float32 sum overflows: the exact test decides
    assert all_finite_many([big, ok])
    assert not all_finite_many([big, torch.tensor([float("inf")])])


def test_nan_message_counts_the_bad_entries_out_of_the_total():
    """The NaN/inf message says how many entries are bad out of how many: '(1 of 24 entries)'."""
    m = S4D(3, 4, seed=0)
    x = torch.randn(2, 4, 3)
    x[0, 1, 0] = float("nan")
    with pytest.raises(ValueError, match=r"input contains NaN or inf values \(1 of 24 entries\)"):
        m(x)


def test_nan_messages_give_the_hint_for_inputs_and_for_states():
    """A non-finite input is told to clean/mask it; a non-finite state to restart from initial_state."""
    m = S4D(3, 4, seed=0)
    x = torch.randn(2, 4, 3)
    x[1, 0, 2] = float("inf")
    with pytest.raises(ValueError, match="nan_to_num") as e:
        m(x)
    assert "initial_state" not in str(e.value)
    state = m.initial_state(2)
    state[0, 0, 0] = complex(float("nan"), 0.0)
    with pytest.raises(ValueError, match=r"state contains NaN.*start again from initial_state") as e:
        m.step(torch.randn(2, 3), state)
    assert "nan_to_num" not in str(e.value)


def test_a_nan_buffer_is_named_like_a_nan_parameter():
    """A non-trainable B (a buffer) holding NaN is named as the culprit, not reported as an overflow."""
    m = S4D(3, 4, seed=0, trainable_B=False)
    with torch.no_grad():
        m.B.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match=r"parameters are not: \['B'\]") as e:
        m(torch.randn(2, 4, 3))
    assert "overflow" not in str(e.value)


def test_the_largest_seed_is_accepted_and_the_next_refused():
    """seed = MAX_SEED is valid (the bound is inclusive); MAX_SEED + 1 is a ValueError naming the bound."""
    a = S4D(3, 4, seed=MAX_SEED)
    b = S4D(3, 4, seed=MAX_SEED)
    torch.testing.assert_close(a.C, b.C)
    with pytest.raises(ValueError, match=f"seed must be at most {MAX_SEED}"):
        S4D(3, 4, seed=MAX_SEED + 1)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)], ids=["float32", "float64"])
def test_compiled_layer_under_autocast_computes_in_full_precision(dtype, tol):
    """While torch.compile traces, the fp32 rule is applied inline: the Functions run with autocast disabled and
    float64 inputs are not cast down, so the compiled layer under bf16 autocast matches the eager layer without
    autocast (float32: to 1e-5; a float64 module: to 1e-10)."""
    torch.manual_seed(0)
    m = S4D(3, 8, seed=0).to(dtype)
    x = torch.randn(2, 16, 3, dtype=dtype)
    ref = m(x).detach()
    torch._dynamo.reset()
    cm = torch.compile(m, backend="eager")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = cm(x)
    assert y.dtype == dtype
    torch.testing.assert_close(y.detach(), ref, atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype,advice", [(torch.float16, "pass it in float32"), (torch.bfloat16, "in float64"),
                                          (torch.float32, "in float64")])
def test_overflow_advice_names_a_wider_range(dtype, advice):
    """An output that overflows its dtype is refused with advice that helps: float32 for float16 (whose range it
    exceeds), float64 for bfloat16 and float32 (bfloat16 has float32's exponent range: passing float32 cannot
    help; the audit found the bfloat16 advice saying so)."""
    m = S4D(3, 4, seed=0)
    with torch.no_grad():
        m.D.fill_(10.0)                          # the skip alone takes the output past the dtype's largest value
    big = {torch.float16: 6e4, torch.bfloat16: 3e38, torch.float32: 3e38}[dtype]
    with pytest.raises(FloatingPointError, match=f"overflowed {dtype}.*{advice}"):
        m(torch.full((2, 4, 3), big).to(dtype))
