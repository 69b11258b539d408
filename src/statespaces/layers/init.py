r"""Initializations of diagonal SSMs and of the step size (thesis §6.3.2, Table 6.1, §7.5.4; §5.4).

All diagonal inits return continuous-time eigenvalues ``A`` and input vectors ``B`` of shape
(H, M). With conjugate symmetry (every init but ``real``) the M = N/2 modes stand for N/2
conjugate pairs, i.e. a real state of size N.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import torch

from .._checks import check_choice, check_positive_int, check_real, tracing

Tensor = torch.Tensor

#: Diagonal (S4D) initializations: thesis names (6.5)-(6.6), (7.1)-(7.4), Table 6.1.
S4D_INITS = ("legs", "inv", "lin", "real", "rand", "inv2", "quad")


def s4d_init(name: str, N: int, H: int, generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor, bool]:
    r"""Diagonal state matrix and input vector of an S4D layer.

    ============  ==================================================  ====================
    name          A_n (n = 0 .. N/2-1 unless stated)                   source
    ============  ==================================================  ====================
    ``legs``      eigenvalues of the normal part of HiPPO-LegS,         (6.4), Thm 6.9
                  with ``B = V^* (B_LegS / 2)``
    ``inv``       -1/2 + i (N/pi) (N/(2n+1) - 1)                        (6.5)
    ``lin``       -1/2 + i pi n                                         (6.6)
    ``inv2``      -1/2 + i (N/pi) (N/(n+1) - 1)                         (7.3)
    ``quad``      -1/2 + i (1+2n)^2 / pi                                (7.4), read as Im
    ``real``      -(n+1), n = 0 .. N-1, real modes (no conjugate pairs) §7.5.4
    ``rand``      -1/2 + i pi (N/2) u, u ~ U[0,1] per channel, sorted   our choice (*)
    ============  ==================================================  ====================

    (*) The thesis names S4D-Rand without a formula. We keep the decay -1/2 that §6.3.2 argues
    for and draw the frequencies uniformly over the range S4D-Lin spans.
    ``B`` is 1 except for ``legs``.

    Returns:
        ``(A, B, conjugate)``: complex128 tensors (H, M) and whether modes are conjugate pairs.
    """
    name = check_choice("S4D init", name, S4D_INITS)
    if name == "real":
        A = -(torch.arange(N, dtype=torch.float64) + 1).to(torch.complex128)
        return A.expand(H, N).clone(), torch.ones(H, N, dtype=torch.complex128), False
    M = N // 2
    n = torch.arange(M, dtype=torch.float64)
    if name == "legs":
        from ..hippo.forms import diagonal_init

        A, B = diagonal_init("legs", N)
        return A.expand(H, M).clone(), B.expand(H, M).clone(), True
    if name == "rand":
        u = torch.rand(H, M, dtype=torch.float64, generator=generator).sort(-1).values
        imag = math.pi * (N / 2) * u
    else:
        imag = {
            "inv": (N / math.pi) * (N / (2 * n + 1) - 1),
            "lin": math.pi * n,
            "inv2": (N / math.pi) * (N / (n + 1) - 1),
            "quad": (1 + 2 * n) ** 2 / math.pi,
        }[name].expand(H, M)
    A = torch.complex(torch.full_like(imag, -0.5), imag)
    return A, torch.ones(H, M, dtype=torch.complex128), True


def log_dt_init(H: int, dt_min: float, dt_max: float, generator: Optional[torch.Generator] = None) -> Tensor:
    r"""``log dt ~ U[log dt_min, log dt_max]``, one per channel (Remark 5.6; default (1e-3, 1e-1)).

    Returns float64 (H,).
    """
    dt_min = check_real("dt_min", dt_min, what="positive finite number (the smallest initial step)")
    dt_max = check_real("dt_max", dt_max, what="positive finite number (the largest initial step)")
    if not dt_min <= dt_max:
        raise ValueError(f"need 0 < dt_min <= dt_max < inf, got dt_min={dt_min}, dt_max={dt_max}")
    u = torch.rand(H, dtype=torch.float64, generator=generator)
    return u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)


def c_init(shape: Tuple[int, ...], generator: Optional[torch.Generator] = None) -> Tensor:
    r"""Output vector: i.i.d. complex normal with variance 1 per entry, ``(x + i y)/sqrt(2)``.

    The thesis asks for unit variance without the Xavier ``N^{-1/2}`` factor (Remark 5.5, Cor 5.16);
    Listing 1's ``randn + i randn`` has variance 2, so we halve it (notes on Cor 5.16).
    """
    re = torch.randn(*shape, dtype=torch.float64, generator=generator)
    im = torch.randn(*shape, dtype=torch.float64, generator=generator)
    return torch.complex(re, im) / math.sqrt(2)


def load_diagonal_system(layer: Any, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor) -> None:
    """Write a diagonal layer's parameters from a continuous system, in place and without autograd: ``log_dt``
    from the steps ``dt``, ``A_real`` / ``A_imag`` from ``A`` (``Re A < 0``, through the layer's
    ``real_transform``), and the complex ``B``, ``C`` and real ``D`` (the ``from_modes`` of S4D and S5)."""
    with torch.no_grad():
        layer.log_dt.copy_(torch.log(dt))
        layer.A_real.copy_(real_inverse(-A.real, layer.real_transform))
        layer.A_imag.copy_(A.imag)
        layer.B.copy_(torch.view_as_real(B))
        layer.C.copy_(torch.view_as_real(C))
        layer.D.copy_(D)


# --- shared SSMs across channels (§7.2.2) ------------------------------------------------
def check_n_ssm(n_ssm, H: int) -> int:
    """``n_ssm`` of a layer with H channels: None means H (one SSM per channel); else an integer
    >= 1 that divides H (each SSM is shared by a group of ``H / n_ssm`` consecutive channels)."""
    if n_ssm is None:
        return H
    n_ssm = check_positive_int("n_ssm", n_ssm)
    if H % n_ssm:
        raise ValueError(
            f"n_ssm={n_ssm} does not divide d_model={H}: the (A, B) of each SSM are shared by H / n_ssm "
            f"channels, so use a divisor of {H} (n_ssm={H} is one SSM per channel, 1 shares one SSM)"
        )
    return n_ssm


def tie_channels(p: Tensor, H: int, dim: int = 0) -> Tensor:
    r"""Broadcast a shared parameter with ``n_ssm`` rows along ``dim`` to the H channels (§7.2.2).

    Channel h uses SSM ``h // (H / n_ssm)`` (groups of consecutive channels). With ``n_ssm = H``
    the tensor is returned as is (no copy: the untied layer is bit-identical).
    """
    n = p.shape[dim]
    if n == H:
        return p
    return p.repeat_interleave(H // n, dim=dim)


# --- transforms that keep Re(A) < 0 (§3.4.2, Table 7.11) -----------------------------------
REAL_TRANSFORMS = ("exp", "softplus", "relu", "none")
_RELU_FLOOR = 1e-4


def real_forward(p: Tensor, transform: str) -> Tensor:
    """Map the unconstrained parameter to the decay rate ``-Re(A) >= 0``."""
    if transform == "exp":
        return torch.exp(p)
    if transform == "softplus":     # log(1 + e^p), exactly (torch's softplus returns p itself above p = 20)
        return torch.clamp(p, min=0) + torch.log1p(torch.exp(-p.abs()))
    if transform == "relu":
        return torch.clamp(p, min=_RELU_FLOOR)
    return p


def real_inverse(x: Tensor, transform: str) -> Tensor:
    """Inverse of :func:`real_forward` for ``x = -Re(A) > 0``."""
    if transform == "exp":
        return torch.log(x)
    if transform == "softplus":
        return x + torch.log(-torch.expm1(-x))
    if transform == "relu" and bool((x < _RELU_FLOOR).any()):
        slow = int((x < _RELU_FLOOR).sum())
        raise ValueError(f"real_transform='relu' floors the decay rate -Re(A) at {_RELU_FLOOR:g}, and {slow} modes "
                         f"decay slower (smallest {float(x.min()):.3g}): they would be changed; use real_transform="
                         "'exp', 'softplus' or 'none' for them")
    return x.clone()


def as_complex(p: Tensor) -> Tensor:
    """Complex view of a parameter stored as ``(..., 2)`` real pairs.

    ``torch.view_as_complex`` needs an even storage offset and unit last stride; parameters
    rebound by ``vector_to_parameters`` (views into one flat vector) or sliced by a user may
    not have them, so those are assembled with ``torch.complex`` (a copy, same gradient).
    """
    if tracing():   # compiled graphs fuse the copy; storage offsets are not traceable
        return torch.complex(p[..., 0], p[..., 1])
    if p.stride(-1) == 1 and p.storage_offset() % 2 == 0 and all(s % 2 == 0 for s in p.stride()[:-1]):
        return torch.view_as_complex(p)
    return torch.complex(p[..., 0], p[..., 1])
