r"""SaShiMi: a multi-scale causal U-Net of residual SSM blocks (thesis ch. 8, §8.3, Fig. 8.1).

Tiers ``i = 0..n`` run at rates ``T, T/p_1, T/(p_1 p_2), ...`` with widths ``H, qH, q^2 H, ...``:

* **DownPool** (§8.3.2): ``(T, H) -> reshape (T/p, p H) -> linear -> (T/p, q H)``.
* **UpPool**: ``(T, qH) -> linear -> (T, p H) -> shift right by one coarse step -> reshape (pT, H)``.
  The shift (zeros in the first group) keeps the model causal: fine output ``j p + r`` only sees
  coarse outputs ``< j``, i.e. fine inputs ``< j p``.
* **Stages**: each tier is a stack of ``n_layers`` pairs (residual SSM block, residual FF block);
  the SSM block is :class:`statespaces.blocks.ResidualBlock` (§7.2), the FF block is
  ``x + Linear(eH -> H)(GELU(Linear(H -> eH)(LayerNorm(x))))`` with expansion e = 2.

Wiring of the autoregressive model (tier ``i`` input x, the "long" residuals of Fig. 8.1)::

    tier(i, x):  [x = down_blocks_i(x) if unet]
                 y = tier(i + 1, DownPool_i(x))               (center: y = c + blocks(c))
                 z = UpPool_i(y) + x
                 return z + up_blocks_i(z)

followed by a final LayerNorm on tier 0. The thesis uses p = 4, q = 2, two pools, 8 blocks per tier,
H = 64 and S4 with the Hurwitz (``Lambda - P P^*``) parameterization for stable generation
(§8.4.2): pass ``layer="s4"`` once available; any registry layer name works.

**Recurrent mode** (§8.3, "generation"): :meth:`SaShiMi.step` consumes one fine step. DownPool_i
buffers p inputs and emits one coarse input every p steps, which advances tier i+1 by one step;
UpPool_i holds the p outputs computed from the previous coarse output and releases one per step.
Every tier therefore steps at its own rate and the cost per fine step is O(1) amortized. The step
outputs equal the convolution-mode outputs exactly (tested to 1e-4).
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union, cast

import torch
from torch import nn

from .._checks import (
    check_batch_size,
    check_flag,
    check_int,
    check_positive_int,
    check_result,
    check_sequence,
    check_step_input,
    public,
)
from ..blocks import DropoutNd, ResidualBlock, check_causal, length_mask
from ..layers.base import SSMLayer
from ..layers.config import LayerSpec, sequence_layer, upgrade_layer_arguments
from ..layers.s4nd import S4ND
from ..serialization import Pretrained

Tensor = torch.Tensor
State = Dict[str, Any]


class FFBlock(Pretrained, nn.Module):
    """Residual position-wise feed-forward block ``x + drop(W2 drop(GELU(W1 LN(x))))`` (§8.3, Fig. 8.1).

    Shapes: (B, L, H) -> (B, L, H); ``step``: (B, H) -> (B, H). Stateless (its state is ``None``)."""

    def __init__(self, d_model: int, expand: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        check_positive_int("d_model", d_model)
        check_positive_int("expand", expand)
        self.d_model, self.expand = d_model, expand
        self.norm = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, expand * d_model)
        self.fc2 = nn.Linear(expand * d_model, d_model)
        self.activation = nn.GELU()
        self.dropout = DropoutNd(dropout)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, expand={self.expand}"

    def forward(self, x: Tensor, state: None = None, return_state: bool = False) -> Union[Tensor, Tuple[Tensor, None]]:
        """(B, T, H) -> (B, T, H): ``x + MLP(norm(x))`` per step (stateless; ``state`` is None)."""
        y = self.dropout(self.fc2(self.dropout(self.activation(self.fc1(self.norm(x))))))
        return (x + y, None) if return_state else x + y

    def initial_state(self, batch_size: int) -> None:
        """None: the block has no state."""
        return None

    def step(self, x: Tensor, state: None = None) -> Tuple[Tensor, None]:
        """(B, H) -> ((B, H), None): :meth:`forward` on one step."""
        return cast(Tensor, self.forward(x.unsqueeze(1))).squeeze(1), None


class DownPool(nn.Module):
    """``(B, T, H) -> (B, T/p, qH)``: group p consecutive steps, then a linear map (§8.3.2).

    In recurrent mode the caller buffers p inputs (B, p, H) and calls :meth:`pool_group`."""

    def __init__(self, d_in: int, pool: int, expand: int) -> None:
        super().__init__()
        self.d_in, self.pool, self.d_out = d_in, pool, d_in * expand
        self.linear = nn.Linear(pool * d_in, self.d_out)

    def extra_repr(self) -> str:
        return f"d_in={self.d_in}, pool={self.pool}, d_out={self.d_out}"

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, H) -> (B, T / pool, expand H), T a multiple of ``pool``."""
        B, T, H = x.shape
        if T % self.pool:
            raise ValueError(f"DownPool needs a length divisible by pool={self.pool}, got {T}")
        return self.linear(x.reshape(B, T // self.pool, self.pool * H))

    def pool_group(self, group: Tensor) -> Tensor:
        """One coarse output (B, qH) from the p buffered inputs (B, p, H)."""
        return self.linear(group.reshape(group.shape[0], -1))


class UpPool(nn.Module):
    """``(B, T, qH) -> (B, pT, H)``: linear to p H, shift right by one coarse step, reshape (§8.3.2).

    ``first`` (B, p, H) fills the first group (zeros at the start of a sequence, or the group left
    over from the previous chunk); :meth:`expand_group` gives the group one coarse output produces."""

    def __init__(self, d_out: int, pool: int, expand: int) -> None:
        super().__init__()
        self.d_out, self.pool, self.d_in = d_out, pool, d_out * expand
        self.linear = nn.Linear(self.d_in, pool * d_out)

    def extra_repr(self) -> str:
        return f"d_in={self.d_in}, pool={self.pool}, d_out={self.d_out}"

    def expand_group(self, y: Tensor) -> Tensor:
        """(B, ..., qH) -> (B, ..., p, H) before the shift."""
        return self.linear(y).unflatten(-1, (self.pool, self.d_out))

    def forward(self, y: Tensor, first: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Returns the shifted fine sequence (B, pT, H) and the last group (B, p, H) (for the next chunk)."""
        groups = self.expand_group(y)                                    # (B, T, p, H)
        if first is None:
            first = torch.zeros_like(groups[:, 0])
        shifted = torch.cat([first.unsqueeze(1), groups[:, :-1]], 1)
        B, T = y.shape[:2]
        return shifted.reshape(B, T * self.pool, self.d_out), groups[:, -1]


def _stage(stages: nn.ModuleList, i: int) -> nn.ModuleList:
    """Stage i of ``down_blocks`` / ``up_blocks`` (a ModuleList of ModuleLists)."""
    return cast(nn.ModuleList, stages[i])


def _meta(t: Optional[Tensor]) -> Optional[Tuple[Tuple[int, ...], torch.dtype, torch.device]]:
    return None if t is None else (tuple(t.shape[1:]), t.dtype, t.device)


def _blocks_initial(blocks: nn.ModuleList, batch: int) -> List[Any]:
    return [b.layer.initial_state(batch) if isinstance(b, ResidualBlock) else None for b in blocks]


def _blocks_forward(blocks: nn.ModuleList, x: Tensor, states: Optional[List[Any]], return_state: bool,
                    mask: Optional[Tensor] = None):
    """Run a stack of ResidualBlock / FFBlock; ``mask`` (B, L) bool (True = valid step) goes to every
    ResidualBlock (FF blocks act per step and need none)."""
    new_states = []
    for k, b in enumerate(blocks):
        s = None if states is None else states[k]
        kw = {"mask": mask} if mask is not None and isinstance(b, ResidualBlock) else {}
        if return_state or s is not None:
            x, s = b(x, state=s, return_state=True, **kw)
            new_states.append(s)
        else:
            x = b(x, **kw)
    return x, (new_states if return_state else None)


def _blocks_step(blocks: nn.ModuleList, x: Tensor, states: List[Any]) -> Tuple[Tensor, List[Any]]:
    new_states = []
    for b, s in zip(blocks, states):
        x, s = cast(Union[ResidualBlock, FFBlock], b).step(x, s)
        new_states.append(s)
    return x, new_states


def pool_factors(pool: Any, n_pools: Any) -> Tuple[int, ...]:
    """SaShiMi's pooling factors, top tier first, from its ``pool`` and ``n_pools`` arguments.

    ``pool`` is an integer p >= 2 (``n_pools`` pools of factor p) or a sequence of such integers (one
    per pool; ``n_pools`` is then unused). Anything else (a float, a bool, a string) raises
    ``TypeError`` naming ``pool``, instead of failing later inside the pooling layers."""
    if isinstance(pool, numbers.Integral) and not isinstance(pool, bool):
        return (check_int("pool", pool, 2),) * check_int("n_pools", n_pools, 0)
    hint = "an integer >= 2 (with n_pools) or a sequence of such integers, one per pool (e.g. (4, 4))"
    if isinstance(pool, (str, bytes, bool, float, torch.Tensor)) or not isinstance(pool, Iterable):
        raise TypeError(f"pool must be {hint}, got {pool!r} ({type(pool).__name__})")
    return tuple(check_int(f"pool[{i}]", p, 2) for i, p in enumerate(pool))


class SaShiMi(Pretrained, nn.Module):
    r"""Causal multi-scale SSM backbone (thesis ch. 8). Maps (B, T, H) -> (B, T, H).

    Args:
        d_model: width H of the top (full-rate) tier.
        n_layers: (SSM block, FF block) pairs per tier (thesis: 8; 2-8 in Table 8.5).
        pool: pooling factor of each DownPool/UpPool pair, top to bottom (integers >= 2); an int p
            means ``n_pools`` pools of factor p (thesis: p = 4, two pools, 3 tiers).
        expand: width expansion q per pool (thesis: 2).
        n_pools: number of pools when ``pool`` is an int.
        ff_expand: FF-block expansion (thesis: 2); 0 disables the FF blocks.
        layer: the SSM layer: a kind (``"s4d"``, ``"s4"``, ``"linoss"``, ``"dlinoss"``, ``"s4nd"``) with
            its defaults, a config (``S4DConfig(d_state=32)``) or a mapping
            ``{"kind": "s4", "d_state": 32}`` (see :mod:`statespaces.layers.config`).
            Default ``"s4"``: DPLR with the Hurwitz form Lambda - P P^*, the thesis's choice for
            stable generation, §8.4.2. The layer must be causal: a bidirectional one raises
            ``ValueError`` (:func:`~statespaces.blocks.check_causal`).
        unet: also put ``n_layers`` pairs on the down path before each pool (the "symmetric U-Net"
            of the footnote to Table 8.6; still causal here).
        dropout: passed to the residual blocks (thesis: no dropout).
        mixing: passed to the residual blocks (thesis: linear mixing, GLU only on SC09).
        norm: passed to the residual blocks; ``"batch"`` warns (its training-mode statistics include
            later steps, so the model is causal in eval mode only).

    Shapes:
        forward: (B, T, H) -> (B, T, H) for any T (internally padded on the right to a multiple of
        ``prod(pool)``; the padding is masked, so it cannot reach valid steps even through BatchNorm's
        training-mode statistics); ``forward(x, lengths=...)`` for right-padded batches; with ``return_state=True`` the
        aligned prefix runs in convolution mode and the remainder in recurrent mode. ``step``: (B, H) ->
        (B, H). The state is a dict of tensors and lists (see :meth:`initial_state`).
    """

    upgrade_config = staticmethod(upgrade_layer_arguments)    # reads models saved with layer_kwargs

    def __init__(
        self,
        d_model: int = 64,
        n_layers: int = 2,
        pool: Union[int, Sequence[int]] = 4,
        expand: int = 2,
        n_pools: int = 2,
        ff_expand: int = 2,
        layer: LayerSpec = "s4",
        unet: bool = False,
        dropout: float = 0.0,
        mixing: str = "linear",
        norm: str = "layer",
    ) -> None:
        super().__init__()
        self.d_model = check_positive_int("d_model", d_model)
        check_positive_int("n_layers", n_layers)
        check_positive_int("expand", expand)
        pools = pool_factors(pool, n_pools)
        check_int("ff_expand", ff_expand, 0)      # 0: no feed-forward blocks
        self.pools = pools
        self.expand = expand
        self.unet = unet = check_flag("unet", unet)
        self.length_multiple = math.prod(self.pools) if self.pools else 1
        widths = [d_model * expand**i for i in range(len(pools) + 1)]
        self.widths = tuple(widths)
        self.layer_config = sequence_layer(layer)

        built = [0]                           # SSM layers built so far: a seeded config seeds each with its own offset

        def stage(H: int) -> nn.ModuleList:
            mods: List[nn.Module] = []
            for _ in range(n_layers):
                # build() is typed nn.Module; ResidualBlock checks at run time that it is an SSM layer
                ssm = cast(Union[SSMLayer, S4ND], self.layer_config.build(H, built[0]))
                built[0] += 1
                mods.append(ResidualBlock(ssm, norm=norm, dropout=dropout, mixing=mixing))
                if ff_expand:
                    mods.append(FFBlock(H, ff_expand, dropout))
            return nn.ModuleList(mods)

        n = len(pools)
        self.down_pools = nn.ModuleList(DownPool(widths[i], pools[i], expand) for i in range(n))
        self.up_pools = nn.ModuleList(UpPool(widths[i], pools[i], expand) for i in range(n))
        self.down_blocks = nn.ModuleList(stage(widths[i]) if unet else nn.ModuleList() for i in range(n))
        self.up_blocks = nn.ModuleList(stage(widths[i]) for i in range(n))
        self.center = stage(widths[n])
        self.final_norm = nn.LayerNorm(d_model)
        check_causal(self, "SaShiMi")             # an autoregressive backbone: refuse non-causal layers

    # ---- state ---------------------------------------------------------------------------------
    def _zeros(self, *shape: int) -> Tensor:
        w = self.final_norm.weight
        return torch.zeros(*shape, dtype=w.dtype, device=w.device)

    @public
    def initial_state(self, batch_size: int) -> State:
        """State before the first step: ``t`` (steps consumed), per tier the DownPool input buffer
        ``down_buf[i]`` and UpPool output buffer ``up_buf[i]`` (B, p_i, H_i), and the SSM states of
        ``down_blocks`` / ``up_blocks`` / ``center``."""
        batch_size = check_batch_size(batch_size)
        n = len(self.pools)
        return {
            "t": 0,
            "down_buf": [self._zeros(batch_size, self.pools[i], self.widths[i]) for i in range(n)],
            "up_buf": [self._zeros(batch_size, self.pools[i], self.widths[i]) for i in range(n)],
            "down_blocks": [_blocks_initial(_stage(self.down_blocks, i), batch_size) for i in range(n)],
            "up_blocks": [_blocks_initial(_stage(self.up_blocks, i), batch_size) for i in range(n)],
            "center": _blocks_initial(self.center, batch_size),
        }

    @staticmethod
    def _copy_state(state: State) -> State:
        return {k: (list(v) if isinstance(v, list) else v) for k, v in state.items()}

    def _check_state(self, state: State, batch: int) -> None:
        keys = {"t", "down_buf", "up_buf", "down_blocks", "up_blocks", "center"}
        if not isinstance(state, dict) or set(state) != keys:
            raise ValueError("state must come from SaShiMi.initial_state() or a call with return_state=True")
        check_int("state['t']", state["t"], 0)
        w = self.final_norm.weight
        for key in ("down_buf", "up_buf"):
            bufs = state[key]
            if not isinstance(bufs, list) or len(bufs) != len(self.pools):
                raise ValueError(f"state[{key!r}] must be a list of {len(self.pools)} tensors (from initial_state)")
            for i, buf in enumerate(bufs):
                if not isinstance(buf, torch.Tensor) or buf.shape != (batch, self.pools[i], self.widths[i]):
                    got = tuple(buf.shape) if isinstance(buf, torch.Tensor) else type(buf).__name__
                    raise ValueError(
                        f"state is for another batch size or model: {key}[{i}] has shape {got}, "
                        f"expected {(batch, self.pools[i], self.widths[i])}"
                    )
                if buf.dtype != w.dtype or buf.device != w.device:
                    raise TypeError(
                        f"state[{key!r}][{i}] is {buf.dtype} on {buf.device}, the model is {w.dtype} on {w.device}; "
                        "use the state from initial_state() or the model's own return_state"
                    )
        self._check_block_states(state, batch)

    def _check_block_states(self, state: State, batch: int) -> None:
        """The SSM block states (metadata only): one entry per block of each tier, None for an FF block, else a
        tensor shaped, typed and placed like ``initial_state``'s. A tier fires every ``prod(pools)`` steps at the
        coarsest, so a bad entry would otherwise surface many steps later, or as an IndexError."""
        # (shape after the batch, dtype, device) of initial_state(1)'s block states: small tensors, built per call
        # rather than cached (a cache would go stale under .to() or when export swaps the layers)
        ref = {"down_blocks": [_blocks_initial(_stage(self.down_blocks, i), 1) for i in range(len(self.pools))],
               "up_blocks": [_blocks_initial(_stage(self.up_blocks, i), 1) for i in range(len(self.pools))],
               "center": [_blocks_initial(self.center, 1)]}
        spec = {k: [[_meta(t) for t in tier] for tier in v] for k, v in ref.items()}
        for key, tiers in spec.items():
            given = [state[key]] if key == "center" else state[key]
            if not isinstance(given, list) or len(given) != len(tiers):
                raise ValueError(f"state[{key!r}] must be a list of {len(tiers)} entries (from initial_state)")
            for i, (got, want) in enumerate(zip(given, tiers)):
                where = f"state[{key!r}]" + ("" if key == "center" else f"[{i}]")
                if not isinstance(got, list) or len(got) != len(want):
                    raise ValueError(f"{where} must be a list of {len(want)} block states (from initial_state)")
                for j, (t, m) in enumerate(zip(got, want)):
                    if m is None and t is None:
                        continue
                    hint = "; use initial_state() or the model's own return_state"
                    if m is None or not isinstance(t, torch.Tensor) or tuple(t.shape) != (batch,) + m[0]:
                        got_s = f"shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
                        want_s = "None (an FF block)" if m is None else f"a tensor of shape {(batch,) + m[0]}"
                        raise ValueError(f"{where}[{j}] must be {want_s}, got {got_s}{hint}")
                    if t.dtype != m[1]:
                        raise TypeError(f"{where}[{j}] must be {m[1]}, got {t.dtype}{hint}")
                    if t.device != m[2]:
                        raise ValueError(f"{where}[{j}] is on {t.device}, the model on {m[2]}{hint}")

    # ---- convolution mode ------------------------------------------------------------------------
    def _tier_conv(self, i: int, x: Tensor, st: Optional[State], out: Optional[State],
                   mask: Optional[Tensor] = None) -> Tensor:
        """Tier i on an aligned chunk x (B, T_i, H_i); fills ``out`` with the state after it.

        ``mask`` (B, T_i) bool, True at valid steps: masked steps are zeroed before each SSM layer
        and before the DownPool, and a coarse step is valid when any of its p fine steps is, so
        masked steps never reach valid ones (nor BatchNorm's batch statistics)."""
        want = out is not None
        if i == len(self.pools):
            y, s = _blocks_forward(self.center, x, None if st is None else st["center"], want, mask)
            if out is not None:
                out["center"] = s
            return x + y
        x, s = _blocks_forward(_stage(self.down_blocks, i), x, None if st is None else st["down_blocks"][i], want,
                               mask)
        if out is not None:
            out["down_blocks"][i] = s
            out["down_buf"][i] = x[:, -self.pools[i]:]
        if mask is None:
            yc = self._tier_conv(i + 1, self.down_pools[i](x), st, out)
        else:
            coarse = mask.unflatten(1, (-1, self.pools[i])).any(-1)
            xin = x.masked_fill(~mask.unsqueeze(-1), 0.0)
            yc = self._tier_conv(i + 1, self.down_pools[i](xin), st, out, coarse)
        u, last = self.up_pools[i](yc, None if st is None else st["up_buf"][i])
        if out is not None:
            out["up_buf"][i] = last
        z = u + x
        y, s = _blocks_forward(_stage(self.up_blocks, i), z, None if st is None else st["up_blocks"][i], want, mask)
        if out is not None:
            out["up_blocks"][i] = s
        return z + y

    def _conv(self, x: Tensor, state: Optional[State], return_state: bool) -> Tuple[Tensor, Optional[State]]:
        out = None
        if return_state:
            out = self.initial_state(x.shape[0]) if state is None else self._copy_state(state)
            out["t"] = (0 if state is None else state["t"]) + x.shape[1]
        y = self._tier_conv(0, x, state, out)
        return y, out

    @public
    def forward(self, x: Tensor, state: Optional[State] = None, return_state: bool = False,
                lengths: Optional[Tensor] = None) -> Union[Tensor, Tuple[Tensor, State]]:
        """Apply the backbone to x (B, T, H); see the class docstring for the modes used.

        ``lengths`` (B,) (right-padded batch, convolution mode only): steps ``t >= lengths[b]`` never
        influence the outputs at valid steps, whatever the layers (see
        :class:`~statespaces.blocks.ResidualBlock`); outputs at padded steps are unspecified.

        Returns y (B, T, H) (after the final LayerNorm), and the state after the last step if
        ``return_state``.
        """
        check_sequence(x, self.d_model, self.final_norm.weight.dtype, device=self.final_norm.weight.device)
        return_state = check_flag("return_state", return_state)
        x = x.to(self.final_norm.weight.dtype)         # half precision: computed in the module's precision
        B, T, _ = x.shape
        m = self.length_multiple
        mask = length_mask(lengths, B, T, x.device)
        if mask is not None and (state is not None or return_state):
            raise ValueError("lengths is only supported without state / return_state (a padded batch has no "
                             "common state after its last step)")
        if state is not None:
            self._check_state(state, B)
        if state is None and not return_state:
            pad = (-T) % m
            if pad:   # the alignment padding is masked too: BatchNorm's training statistics would read it
                x = torch.cat([x, x.new_zeros(B, pad, x.shape[2])], 1)
                if mask is None:
                    mask = torch.ones(B, T, dtype=torch.bool, device=x.device)
                mask = torch.cat([mask, mask.new_zeros(B, pad)], 1)
            y = self._tier_conv(0, x, None, None, mask)
            y = self.final_norm(y[:, :T])
            check_result(self, y, input=x)           # NaN/inf: names the parameters or an overflow
            return y
        t0 = 0 if state is None else state["t"]
        head = min((-t0) % m, T)                      # steps until the pools are aligned
        mid = (T - head) // m * m
        ys: List[Tensor] = []
        st = state
        for t in range(head):
            st = self.initial_state(B) if st is None else st
            y_t, st = self._step_raw(x[:, t], st)
            ys.append(y_t.unsqueeze(1))
        if mid:
            y_mid, st = self._conv(x[:, head:head + mid], st, True)
            ys.append(y_mid)
        for t in range(head + mid, T):
            st = self.initial_state(B) if st is None else st
            y_t, st = self._step_raw(x[:, t], st)
            ys.append(y_t.unsqueeze(1))
        y = self.final_norm(torch.cat(ys, 1))
        check_result(self, (y, st if return_state else None), input=x, state=state)
        return (y, cast(State, st)) if return_state else y

    # ---- recurrent mode --------------------------------------------------------------------------
    def _tier_step(self, i: int, x: Tensor, t_i: int, st: State) -> Tensor:
        if i == len(self.pools):
            y, st["center"] = _blocks_step(self.center, x, st["center"])
            return x + y
        x, st["down_blocks"][i] = _blocks_step(_stage(self.down_blocks, i), x, st["down_blocks"][i])
        p = self.pools[i]
        r = t_i % p
        buf = st["down_buf"][i].clone()
        buf[:, r] = x
        st["down_buf"][i] = buf
        u = st["up_buf"][i][:, r]                     # released before the buffer is refilled
        if r == p - 1:
            yc = self._tier_step(i + 1, cast(DownPool, self.down_pools[i]).pool_group(buf), t_i // p, st)
            st["up_buf"][i] = cast(UpPool, self.up_pools[i]).expand_group(yc)
        z = u + x
        y, st["up_blocks"][i] = _blocks_step(_stage(self.up_blocks, i), z, st["up_blocks"][i])
        return z + y

    def _step_raw(self, x: Tensor, state: State) -> Tuple[Tensor, State]:
        st = self._copy_state(state)
        y = self._tier_step(0, x, state["t"], st)
        st["t"] = state["t"] + 1
        return y, st

    @public
    def step(self, x: Tensor, state: State) -> Tuple[Tensor, State]:
        """One fine step: x (B, H) -> y (B, H) and the new state (the input state is not modified)."""
        check_step_input(x, self.d_model, self.final_norm.weight.dtype, self.final_norm.weight.device)
        self._check_state(state, x.shape[0])
        y, st = self._step_raw(x, state)
        y = self.final_norm(y)
        check_result(self, (y, st), "step output", x=x, state=state)   # NaN/inf: names the culprit
        return y, st

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, pools={self.pools}, expand={self.expand}, widths={self.widths}, "
                f"unet={self.unet}")
