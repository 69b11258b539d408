r"""The contract every SSM layer shares, and its implementation for diagonal SSMs.

Three views of one linear time-invariant layer, per channel ``y = K * u + D u``:

* convolution: ``layer(x)`` with x (B, L, H) -> y (B, L, H) via FFT (thesis §2.3.3);
* recurrence: ``state = layer.initial_state(B)``; ``y_t, state = layer.step(x_t, state)`` with
  x_t (B, H) (thesis §2.3.2), and the stateful chunked forward
  ``y, state = layer(x, state=state, return_state=True)``;
* continuous time: ``rate`` multiplies the step size dt, so a signal sampled ``rate`` times more
  coarsely is processed by the same continuous system (thesis §2.4.1, §7.4.1).

A layer is only the linear SSM: activation, mixing, normalization and residual belong to
:class:`statespaces.blocks.ResidualBlock`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Tuple, Union

import torch
from torch import nn

from .._checks import (
    check_batch_size,
    check_length,
    check_rate,  # re-exported: layers and analysis import it from here
    check_result,
    check_sequence,
    check_state,
    check_step_input,
    public,
)
from ..kernels import dispatch
from ..kernels.vandermonde import exp_scaled, vandermonde, vandermonde_transpose
from ..ops.fftconv import fftconv
from ..serialization import Pretrained
from .step_cache import StepCache

Tensor = torch.Tensor


def freeze_ssm(layer: "SSMLayer", trainable: bool) -> None:
    """With ``trainable=False``, stop gradients to the state equation (``layer.ssm_parameters()``:
    dt, A, B and, for S4, P) so that only C and D train ("frozen (A, B)", thesis Fig. 7.9). The
    parameters stay parameters (same ``state_dict``); ``trainable=True`` leaves the layer as it is."""
    if not isinstance(trainable, bool):
        raise TypeError(f"trainable_ssm={trainable!r}: expected True or False")
    if not trainable:
        for p in layer.ssm_parameters():
            p.requires_grad_(False)


class SSMLayer(Pretrained, nn.Module):
    """Base class of the linear SSM layers. Subclasses implement :meth:`kernel`, :meth:`initial_state`,
    :meth:`step`, and the two state maps used by the chunked forward."""

    d_model: int
    bidirectional: bool

    # ---- to implement -------------------------------------------------------------------
    def kernel(self, L: int, rate: float = 1.0) -> Tensor:  # pragma: no cover - abstract
        """Convolution kernel (H, L), or (2, H, L) if bidirectional."""
        raise NotImplementedError

    def initial_state(self, batch_size: int) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def step(self, x: Tensor, state: Tensor, rate: float = 1.0) -> Tuple[Tensor, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def _zero_input_response(self, state: Tensor, L: int, rate: float) -> Tensor:  # pragma: no cover
        """Output (B, L, H) produced by ``state`` alone over the next L steps."""
        raise NotImplementedError

    def _advance_state(self, state: Optional[Tensor], x: Tensor, rate: float) -> Tensor:  # pragma: no cover
        """State after consuming x (B, L, H) starting from ``state`` (zeros if None)."""
        raise NotImplementedError

    def ssm_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the state equation (A, B, dt) that get their own optimizer settings (§7.1)."""
        return iter(())

    # ---- shared -------------------------------------------------------------------------
    @property
    def param_dtype(self) -> torch.dtype:
        return self.D.dtype

    @public
    def forward(
        self, x: Tensor, state: Optional[Tensor] = None, return_state: bool = False, rate: float = 1.0
    ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        """Apply the layer to x (B, L, H).

        Args:
            x: input sequence, batch first (B, L, H).
            state: state before the first step, from :meth:`initial_state` or a previous call
                with ``return_state=True``; None means zeros. Not allowed when bidirectional.
            return_state: also return the state after the last step (for chunked processing).
            rate: step-size multiplier (continuous-time view); 2 means x is sampled half as often.

        Returns:
            y (B, L, H) in the dtype of x, and the new state if ``return_state``.
        """
        check_sequence(x, self.d_model, self.param_dtype, device=self.D.device, finite=False)
        rate = check_rate(rate)
        if self.bidirectional and (state is not None or return_state):
            raise ValueError("a bidirectional layer is not causal: it has no recurrent state")
        if state is not None:
            self._check_state(state, x.shape[0])
        in_dtype = x.dtype
        u = x.to(self.param_dtype)
        L = u.shape[1]
        y = fftconv(u, self._with_skip(self.kernel(L, rate)), self.bidirectional)
        if state is not None:
            y = y + self._zero_input_response(state, L, rate)
        new_state = self._advance_state(state, u, rate) if return_state else None
        check_result(self, (y, new_state), input=x, state=state)     # NaN/inf: names input, state or parameters
        y = y.to(in_dtype)
        if return_state:
            return y, new_state
        return y

    def _with_skip(self, k: Tensor) -> Tensor:
        """The kernel with the skip term folded into lag 0: ``y = k * u + D u = (k + D delta) * u``.

        One (H, L) addition instead of two (B, L, H) passes forward and three backward; the
        gradient of D comes out of the convolution's kernel gradient at lag 0. k: (H, L) or (2, H, L)
        (the causal direction, ``k[0]``, holds lag 0).
        """
        if k.dim() == 3:
            return torch.stack([self._with_skip(k[0]), k[1]])
        return torch.cat([k[:, :1] + self.D[:, None], k[:, 1:]], -1)

    def _check_state(self, state: Tensor, batch: int) -> None:
        """``state`` must have the shape, dtype and device of ``initial_state(batch)``."""
        specs = self.__dict__.setdefault("_state_specs", {})       # learned once per batch/dtype/device
        key = (batch, self.param_dtype, self.D.device)
        spec = specs.get(key)
        if spec is None:
            s0 = self.initial_state(batch)
            spec = specs[key] = (tuple(s0.shape), s0.dtype, s0.device)
        check_state(state, spec[0], spec[1], spec[2], batch)

    @property
    def _step_cache(self) -> StepCache:
        """The discretized step system, cached for generation (see :mod:`.step_cache`)."""
        cache = self.__dict__.get("_step_cache_obj")
        if cache is None:
            cache = self.__dict__["_step_cache_obj"] = StepCache()
        return cache

    def _check_step_input(self, x: Tensor, state: Tensor) -> None:
        """Static checks of ``step(x, state)``; NaN/inf are caught on the result (:func:`check_result`)."""
        if self.bidirectional:
            raise ValueError("a bidirectional layer is not causal and cannot be stepped")
        check_step_input(x, self.d_model, self.param_dtype, self.D.device)
        self._check_state(state, x.shape[0])


@dataclass
class DiagonalSystem:
    """A discretized diagonal SSM with M complex modes per channel.

    ``log_dA`` (H, M): logarithms of the discrete eigenvalues; ``dB`` (H, M); ``C`` (K, H, M) with
    K = 1, or 2 for the two directions of a bidirectional layer; ``scale``: 2 when each mode
    stands for a conjugate pair (output ``2 Re``, §3.4.5), else 1.
    """

    log_dA: Tensor
    dB: Tensor
    C: Tensor
    scale: float


class DiagonalSSM(SSMLayer):
    """Convolution, recurrence and chunked views for any diagonal SSM. Subclasses provide
    :meth:`diagonal_system`; the state is complex, shape (B, H, M)."""

    def diagonal_system(self, rate: float = 1.0) -> DiagonalSystem:  # pragma: no cover - abstract
        raise NotImplementedError

    def _step_system(self, rate: float) -> Tuple[Tensor, Tensor, Tensor, float]:
        """``(dA, dB, C, scale)`` for stepping. Without autograd (generation), the discretization is
        cached until a parameter or buffer changes value (:mod:`.step_cache`), so a step is O(HN)
        multiply-adds with no transcendental functions."""
        def build():
            sys = self.diagonal_system(rate)
            return (torch.exp(sys.log_dA), sys.dB, (sys.scale * sys.C[0]).conj().resolve_conj(), sys.scale)

        return self._step_cache.get(self, rate, build)

    @public
    def kernel(self, L: int, rate: float = 1.0) -> Tensor:
        """Kernel ``K_l = scale * Re sum_n C_n dB_n dA_n^l`` (eq. 3.2): (H, L) or (2, H, L) if bidirectional."""
        L = check_length(L)
        sys = self.diagonal_system(check_rate(rate))
        K = sys.scale * vandermonde(sys.C * sys.dB, sys.log_dA, L)
        check_result(self, K, "kernel")
        return K if self.bidirectional else K[0]

    @public
    def initial_state(self, batch_size: int) -> Tensor:
        """Zero state (B, H, M), complex."""
        batch_size = check_batch_size(batch_size)
        M = self.n_modes
        cdtype = torch.complex128 if self.param_dtype == torch.float64 else torch.complex64
        return torch.zeros(batch_size, self.d_model, M, dtype=cdtype, device=self.D.device)

    @public
    def step(self, x: Tensor, state: Tensor, rate: float = 1.0) -> Tuple[Tensor, Tensor]:
        """One recurrent step: ``state' = dA state + dB x``, ``y = scale Re(C state') + D x``.

        Args:
            x: (B, H). state: (B, H, M) complex.

        Returns:
            ``(y, state')`` with y (B, H).
        """
        self._check_step_input(x, state)
        dA, dB, Cc, _ = self._step_system(check_rate(rate))      # Cc = conj(scale C), for vecdot
        u = x.to(self.param_dtype)
        # fused Triton step on CUDA at inference; otherwise (autograd, CPU) the same math in PyTorch
        y, new_state = dispatch.diagonal_step(dA, dB, Cc, self.D, u, state)
        check_result(self, (y, new_state), "step output", x=x, state=state)
        return y.to(x.dtype), new_state

    def _zero_input_response(self, state: Tensor, L: int, rate: float) -> Tensor:
        sys = self.diagonal_system(rate)
        coef = sys.C[0] * torch.exp(sys.log_dA) * state                 # (B, H, M)
        return (sys.scale * vandermonde(coef, sys.log_dA, L)).transpose(1, 2)

    def _advance_state(self, state: Optional[Tensor], x: Tensor, rate: float) -> Tensor:
        sys = self.diagonal_system(rate)
        L = x.shape[1]
        new = sys.dB * vandermonde_transpose(x.transpose(1, 2).flip(-1), sys.log_dA)
        if state is not None:
            new = new + exp_scaled(sys.log_dA, L) * state       # a^L, exponent in float64
        return new
