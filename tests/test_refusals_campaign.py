"""Refusals a combinatorial fuzz of the layers' views met (2026-12-07): the same clear message for the same mistake
whichever layer gets it."""
from __future__ import annotations

import pytest
import torch

from statespaces import S4ND, ResidualBlock
from statespaces.layers import S5


def test_s5_names_what_bidirectional_means():
    with pytest.raises(TypeError, match=r"got 'sum' \(str\); True sums a causal and an anti-causal kernel"):
        S5(2, 4, bidirectional="sum")


@pytest.mark.parametrize("kw", ["dt", "timestamps"])
def test_s4nd_refuses_irregular_steps_as_the_block_does(kw):
    x, steps = torch.randn(1, 5, 2), torch.arange(1.0, 6.0).expand(1, 5)
    layer = S4ND(2, dims=1, d_state=4, seed=0)
    with pytest.raises(ValueError, match=r"S4ND has no irregular-sampling path \(dt/timestamps\)") as direct:
        layer(x, **{kw: steps})
    with pytest.raises(ValueError) as through_block:
        ResidualBlock(layer)(x, **{kw: steps})
    assert str(direct.value) == str(through_block.value)
