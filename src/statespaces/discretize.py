r"""Discretization of continuous SSMs (thesis §2.3.1, eq. 2.3-2.4; app. A.1.4).

A rule maps the continuous system ``x' = A x + B u`` and a step size ``dt`` to the discrete
recurrence ``x_k = dA x_{k-1} + dB u_k``. Every rule depends on ``(dt, A, B)`` only through
``(dt*A, dt*B)`` (Lemma 2.13), which the tests check.

Rules (alpha is the GBT parameter; app. A.1.4):

=================  ======================================================  ==========
name               dA                                                      alpha
=================  ======================================================  ==========
``forward_euler``  I + dt A                                                0
``backward_euler`` (I - dt A)^{-1}                                         1
``bilinear``       (I - dt A/2)^{-1} (I + dt A/2)                          1/2
``gbt``            (I - alpha dt A)^{-1} (I + (1 - alpha) dt A)            alpha
``zoh``            exp(dt A),  dB = A^{-1} (exp(dt A) - I) B               --
=================  ======================================================  ==========

For the GBT family ``dB = (I - alpha dt A)^{-1} dt B``. Two entry points:
:func:`discretize_diagonal` for diagonal (complex) ``A`` given as a vector of eigenvalues, and
:func:`discretize_dense` for a full matrix ``A``. :func:`undiscretize_diagonal` inverts the
eigenvalue map of a rule (used to build a layer from given discrete modes).

This module is the one home of the rule names (:data:`DISCRETIZATIONS`) and of the GBT alpha
table (:data:`GBT_ALPHA`, :func:`gbt_alpha`); layers and analysis import them from here.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch

from . import backend
from ._checks import check_choice

Tensor = torch.Tensor

#: Names accepted by ``discretize_*``.
DISCRETIZATIONS = ("zoh", "bilinear", "forward_euler", "backward_euler", "gbt")

#: alpha of the named GBT rules (app. A.1.4); ``zoh`` is no GBT rule, ``gbt`` takes alpha as an argument.
GBT_ALPHA = {"forward_euler": 0.0, "backward_euler": 1.0, "bilinear": 0.5}


def gbt_alpha(method: str, alpha: Optional[float] = None) -> Optional[float]:
    """The GBT parameter of ``method`` (None for ``zoh``), checking ``alpha`` against the rule (thesis
    app. A.1.4: alpha = 0, 1, 1/2 are forward Euler, backward Euler, bilinear).

    ``alpha`` must be given (in [0, 1]) exactly for ``gbt``; a named rule accepts None or its own
    value. Raises ValueError naming the rule and the alpha found otherwise.
    """
    method = check_choice("discretization", method, DISCRETIZATIONS)
    if method == "zoh":
        if alpha is not None:
            raise ValueError("alpha is only used by the 'gbt' discretization, not 'zoh'")
        return None
    if method == "gbt":
        if alpha is None or not (0.0 <= float(alpha) <= 1.0):
            raise ValueError(f"the 'gbt' discretization needs alpha in [0, 1], got {alpha!r}")
        return float(alpha)
    if alpha is not None and float(alpha) != GBT_ALPHA[method]:
        raise ValueError(f"{method!r} fixes alpha={GBT_ALPHA[method]}; use method='gbt' for alpha={alpha}")
    return GBT_ALPHA[method]


def _wide(x: Tensor) -> Tensor:
    """x in float64 / complex128 (the elementwise ZOH factors are (H, N)-sized: their precision is free)."""
    return x.to(torch.complex128 if x.is_complex() else torch.float64)


def _exp_phi(x: Tensor, wide: bool = False) -> Tuple[Tensor, Tensor]:
    """``(e^x, phi(x))`` with ``phi(x) = (e^x - 1)/x`` elementwise, ``1 + x/2`` where ``|x| < 1e-8`` (the ZOH
    input factor, ``dB = phi(dt A) dt B``, app. A.1.4), in x's dtype (``wide``: in float64).

    Computed in float64 with ``expm1``: ``(e^x - 1)/x`` with e^x rounded to float32 first has relative error
    ~2^-24/|x| (4.6e-2 just above the former series threshold 1e-6, 1.2e-4 at |x| = 1e-4; small dt |A| is
    the slow modes' normal case). The values are :func:`_exp_phi_values` of the widened argument."""
    e, phi = _exp_phi_values(_wide(x))
    return (e, phi) if wide else (e.to(x.dtype), phi.to(x.dtype))


def _exp_phi_table(x: Tensor) -> Tuple[Tensor, Tensor]:
    """``(e^x, phi(x))`` of :func:`_exp_phi` for a per-step table (:class:`_ExpPhiTable`); inside a ``torch.func``
    transform or forward-mode AD (no tangent rule in the Function) by :func:`_exp_phi` itself."""
    return _exp_phi(x) if backend.transforming() else _ExpPhiTable.apply(x)


def _exp_phi_values(x: Tensor) -> Tuple[Tensor, Tensor]:
    r"""``(e^x, phi(x))`` in x's own precision: ``e^x - 1`` by real parts, for ``x = u + iv``
    ``(expm1(u) cos v - 2 sin^2(v/2)) + i e^u sin v``, whose real part adds two terms of one sign wherever it is small
    (``u <= 0``, the stable half-plane; and near 0 for any u), so it keeps its digits where ``e^x - 1`` is near 0
    (a few ulps); ``phi = (e^x - 1) / x``, ``1 + x/2`` where ``|x| < 1e-8`` (a complex division by a number that
    small squares it to 0: NaN)."""
    if x.is_complex():
        u, v = x.real, x.imag
        eu, c, s, h = torch.exp(u), torch.cos(v), torch.sin(v), torch.sin(v / 2)
        im = eu * s
        e, em1 = torch.complex(eu * c, im), torch.complex(torch.expm1(u) * c - 2 * h * h, im)
    else:
        e, em1 = torch.exp(x), torch.expm1(x)
    small = x.abs() < 1e-8
    return e, torch.where(small, 1 + x / 2, em1 / torch.where(small, torch.ones_like(x), x))


#: ``phi'(x) = sum_k k x^(k-1) / (k+1)!``: the coefficients, and where :func:`_phi_prime` takes the series
#: (``|x| <`` bound) instead of ``(e^x - phi(x)) / x`` per precision. The direct form loses ``~2 eps / |x|`` (the
#: difference of two numbers near 1); the series left out weighs ``< 3e-8`` (float32, 6 terms, |x| < 0.2) and
#: ``< 1e-13`` (float64, 3 terms, |x| < 1e-4) of phi'. Against a 60-digit reference (mpmath, 48 angles): complex64
#: <= 6e-8 below the bound, <= 1.2e-6 at and above it (at a bound of 0.05, 9e-6 just above it); complex128
#: <= 8e-12.
_PHI_PRIME_SERIES = [k / math.factorial(k + 1) for k in range(1, 7)]
_PHI_PRIME_BOUND = {torch.float32: (0.2, 6), torch.float64: (1e-4, 3)}


def _phi_prime(x: Tensor, e: Tensor, phi: Tensor) -> Tensor:
    r"""``phi'(x) = (e^x - phi(x)) / x`` elementwise in x's own precision (float32 or float64, real or complex), from
    ``e = e^x`` and ``phi = phi(x)``, by its series near 0 (:data:`_PHI_PRIME_BOUND`): in float32 the direct form
    gave 0.14 relative error at ``x = 1e-6``. Differentiable (second derivatives)."""
    bound, terms = _PHI_PRIME_BOUND.get(x.real.dtype, _PHI_PRIME_BOUND[torch.float32])
    series = x.abs() < bound
    direct = (e - phi) / torch.where(series, torch.ones_like(x), x)
    poly = torch.full_like(x, _PHI_PRIME_SERIES[terms - 1])
    for c in reversed(_PHI_PRIME_SERIES[:terms - 1]):         # Horner
        poly = poly * x + c
    return torch.where(series, poly, direct)


class _ExpPhiTable(torch.autograd.Function):
    r"""``(e^x, phi(x))`` elementwise for the per-step ZOH factors of irregular sampling (B, L, H, N): the values in
    x's own precision (:func:`_exp_phi_values`, a few ulps), the derivatives ``e^x`` and ``phi'(x)``
    (:func:`_phi_prime`). Autograd through the complex128 ``expm1`` and division of :func:`_exp_phi` over the
    table was 2/3 of an irregular S4D layer's time; autograd through the float32 values lost the slow modes'
    gradient (0.14 relative error at ``dt |A| = 1e-6``). Backward ``conj(e^x) g_1 + conj(phi'(x)) g_2``, of
    differentiable ops (second derivatives work)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tuple[Tensor, Tensor]:
        e, phi = _exp_phi_values(x)
        ctx.save_for_backward(x, e, phi)
        return e, phi

    @staticmethod
    def backward(ctx, g_e: Tensor, g_phi: Tensor) -> Tensor:
        x, e, phi = ctx.saved_tensors
        return e.conj() * g_e + _phi_prime(x, e, phi).conj() * g_phi


def log_discrete_eigenvalues(dtA: Tensor, method: str = "bilinear", alpha: Optional[float] = None) -> Tensor:
    r"""``log dA`` of a diagonal rule, elementwise, from ``dtA = dt * A`` (..., N), without forming ``dA``.

    ZOH: ``dtA`` itself. GBT(alpha): ``log1p(x / (1 - alpha x))`` with ``x = dtA`` (``dA = 1 + x / (1 - alpha x)``,
    eq. 2.4). The log of a formed ``dA`` loses the digits of a slow mode (``dA`` rounded near 1), and is ``-inf``
    where ``dA`` underflows to 0 (ZOH with ``dt Re A < -745`` in float64), which turns the powers ``dA^0`` of a
    kernel into NaN. Used by the layers' kernel views (S4D, S5).
    """
    a = gbt_alpha(method, alpha)
    return dtA if a is None else torch.log1p(dtA / (1 - a * dtA))


#: Scaling threshold (1-norm) and Taylor degree of :func:`_expm_phi`: for ``||Y||_1 <= 1/2`` the terms of
#: ``phi(Y)`` left out weigh less than ``0.5^17 / 18! < 1.2e-21``.
_EXPM_THETA, _EXPM_DEGREE = 0.5, 16


def _expm_phi(X: Tensor) -> Tuple[Tensor, Tensor]:
    r"""``(e^X, phi(X))`` for square ``X`` (..., n, n), ``phi(X) = sum_k X^k / (k+1)! = X^{-1} (e^X - I)`` (also for
    singular X): the dense ZOH factors, ``dA = e^{dt A}``, ``dB = phi(dt A) dt B`` (app. A.1.4).

    Scaling and squaring: ``Y = X / 2^s`` with ``||Y||_1 <= 1/2`` (s per matrix), ``phi(Y)`` by its Taylor series
    (Horner, degree 16), ``e^Y = I + Y phi(Y)``, then s doublings ``phi(2Y) = phi(Y) (e^Y + I) / 2``,
    ``e^{2Y} = (e^Y)^2``. ``torch.linalg.matrix_exp`` of the block ``[[X, dt B], [0, 0]]`` (the former route) is
    accurate to ``eps ||e^X||`` but not in the small block ``dB``: 3.9e-10 relative error on a 2x2 block at
    ``||X|| ~ 0.03`` in float64; this route is within a few ulps of a 40-digit reference there.
    Differentiable by autograd (matrix products and ``where`` only)."""
    n = X.shape[-1]
    eye = torch.eye(n, dtype=X.dtype, device=X.device)
    norm = torch.linalg.matrix_norm(X, ord=1)
    s = torch.nan_to_num(torch.ceil(torch.log2(norm / _EXPM_THETA)), nan=0.0, posinf=0.0, neginf=0.0).clamp(min=0)
    Y = X / torch.exp2(s).to(X.dtype)[..., None, None]
    P = eye.expand_as(Y)
    for j in range(_EXPM_DEGREE + 1, 1, -1):
        P = eye + (Y @ P) / j
    E = eye + Y @ P
    for k in range(int(s.max()) if s.numel() else 0):
        more = (s > k)[..., None, None]
        P = torch.where(more, 0.5 * (P @ (E + eye)), P)
        E = torch.where(more, E @ E, E)
    return E, P


def discretize_diagonal(
    A: Tensor, B: Tensor, dt: Tensor, method: str = "bilinear", alpha: Optional[float] = None
) -> Tuple[Tensor, Tensor]:
    r"""Discretize a diagonal SSM elementwise (thesis eq. 2.3-2.4, app. A.1.4; §3.2.1).

    Args:
        A: eigenvalues, shape (..., N), complex or real.
        B: input vector, shape broadcastable to (..., N).
        dt: step sizes, one per system: a scalar, or a shape that broadcasts against ``A.shape[:-1]`` (e.g. (H,));
            extra leading dims make a batch of systems (per-step steps (B, L, H) for irregular sampling), so
            ``dt[:, None]`` of shape (H, 1) gives an (H, H, N) batch, not (H, N).
        method: one of :data:`DISCRETIZATIONS`.
        alpha: GBT parameter, only with ``method='gbt'``.

    Returns:
        ``(dA, dB)`` of the broadcast shape (..., N). For ZOH, ``dB = (exp(dt A) - 1)/A * B`` with the limit
        ``dt B`` where ``A = 0``.
    """
    a = gbt_alpha(method, alpha)
    for name, t in (("A", A), ("B", B)):
        if not isinstance(t, Tensor) or not (t.is_floating_point() or t.is_complex()):
            raise TypeError(f"discretize_diagonal: {name} must be a real floating or complex tensor, got "
                            f"{getattr(t, 'dtype', type(t).__name__)} (an integer A made dt 0: dA = 1, dB = 0)")
    dt = torch.as_tensor(dt, dtype=A.real.dtype, device=A.device)
    if dt.dim() > 0:                    # one step per system: dt must broadcast to A.shape[:-1]
        try:
            torch.broadcast_shapes(tuple(dt.shape) + (1,), tuple(A.shape))
        except RuntimeError:
            raise ValueError(f"discretize_diagonal: dt must be a scalar or broadcastable to A.shape[:-1] = "
                             f"{tuple(A.shape[:-1])} (one step per system), got shape {tuple(dt.shape)}") from None
    dtA = dt.unsqueeze(-1) * A if dt.dim() > 0 else dt * A
    dtB = (dt.unsqueeze(-1) if dt.dim() > 0 else dt) * B
    if a is None:                       # per-step steps (irregular sampling: dt (B, L, H)) make a table of
        dA, phi = _exp_phi_table(dtA) if dtA.numel() > A.numel() else _exp_phi(dtA)    # factors: own precision
        return dA, phi * dtB
    denom = 1 - a * dtA
    return (1 + (1 - a) * dtA) / denom, dtB / denom


def _broadcastable(a: Tuple[int, ...], b: Tuple[int, ...]) -> bool:
    try:
        torch.broadcast_shapes(a, b)
    except RuntimeError:
        return False
    return True


def discretize_dense(
    A: Tensor, B: Tensor, dt: Union[Tensor, float], method: str = "bilinear", alpha: Optional[float] = None
) -> Tuple[Tensor, Tensor]:
    r"""Discretize a dense SSM (thesis §2.3.1, eq. 2.3-2.4; app. A.1.4).

    Args:
        A: state matrix, shape (..., N, N).
        B: input matrix, shape (..., N) (single input) or (..., N, M). A B of A's rank minus one is read as one
            input vector per system when its last dim is N and its other dims broadcast against ``A.shape[:-2]``
            (so an (N, N) B with a batch of N systems is N vectors), else as one (N, M) matrix for every system;
            ``B[None]`` forces the matrix reading.
        dt: step sizes, shape broadcastable to ``A.shape[:-2]``.
        method: one of :data:`DISCRETIZATIONS`, as in :func:`discretize_diagonal`.
        alpha: GBT parameter, only with ``method='gbt'``, as in :func:`discretize_diagonal`.

    Returns:
        ``(dA, dB)`` with the shapes of ``(A, B)``. ZOH: ``dA = exp(dt A)``, ``dB = phi(dt A) dt B`` with
        ``phi(X) = X^{-1}(e^X - I)`` as a series (:func:`_expm_phi`), which stays valid for singular ``A``
        (the top right block of ``exp(dt [[A, B], [0, 0]])``).
    """
    a = gbt_alpha(method, alpha)
    for name, t in (("A", A), ("B", B)):
        if not isinstance(t, Tensor) or not (t.is_floating_point() or t.is_complex()):
            raise TypeError(f"discretize_dense: {name} must be a floating-point or complex tensor, got "
                            f"{getattr(t, 'dtype', type(t).__name__)}; convert it with .double()")
    if A.dim() < 2 or A.shape[-1] != A.shape[-2]:
        raise ValueError(f"A must be a (..., N, N) matrix, got shape {tuple(A.shape)}")
    vector = B.dim() == 1 or (B.dim() == A.dim() - 1 and B.shape[-1] == A.shape[-1]
                              and _broadcastable(B.shape[:-1], A.shape[:-2]))   # one vector per system
    Bm = B.unsqueeze(-1) if vector else B
    N = Bm.shape[-2]
    if Bm.shape[-2] != A.shape[-1]:
        raise ValueError(f"B has {N} rows, A is {A.shape[-1]}x{A.shape[-1]}: B must have one row per state")
    dtype = torch.promote_types(A.dtype, Bm.dtype)
    A, Bm = A.to(dtype), Bm.to(dtype)
    dt = torch.as_tensor(dt, dtype=A.real.dtype, device=A.device)
    dt = dt[..., None, None]
    dtA, dtB = dt * A, dt * Bm
    if a is None:
        dA, phi = _expm_phi(dtA)
        dB = phi @ dtB
    else:
        eye = torch.eye(N, dtype=A.dtype, device=A.device)
        lhs = eye - a * dtA
        dA = torch.linalg.solve(lhs, eye + (1 - a) * dtA)
        dB = torch.linalg.solve(lhs, dtB)
    return dA, (dB.squeeze(-1) if vector else dB)


def undiscretize_diagonal(
    log_dA: Tensor, dt: Tensor, method: str = "bilinear", alpha: Optional[float] = None
) -> Tensor:
    r"""Continuous eigenvalues ``A`` whose discretization at step ``dt`` has eigenvalues ``exp(log_dA)``.

    The inverse of the ``dA`` map of :func:`discretize_diagonal`: ZOH ``A = log_dA / dt``; GBT(alpha)
    ``A = (lambda - 1) / (dt (1 - alpha + alpha lambda))`` (solve eq. 2.4 for ``dt A``), lambda = exp(log_dA).

    Args:
        log_dA: complex logarithms of the discrete eigenvalues, shape (..., N).
        dt: step sizes, broadcastable to ``log_dA.shape[:-1]`` (e.g. (H,)), or a scalar.
        method: one of :data:`DISCRETIZATIONS`.
        alpha: GBT parameter, only with ``method='gbt'``.

    Returns:
        complex ``A`` (..., N). Where the rule cannot produce lambda (GBT with
        ``1 - alpha + alpha lambda = 0``) the entry is inf/nan; callers check ``Re A < 0``.
    """
    a = gbt_alpha(method, alpha)
    dt = torch.as_tensor(dt, dtype=log_dA.real.dtype, device=log_dA.device)
    dt = dt.unsqueeze(-1) if dt.dim() > 0 else dt
    if a is None:
        return log_dA / dt
    lam = torch.exp(log_dA)
    return (lam - 1) / ((1 - a + a * lam) * dt)


class _ZOHFactors(torch.autograd.Function):
    r"""``(log dA, scale C dB)`` of a diagonal SSM under ZOH as one autograd node (forward and a hand-written
    backward), for the kernel ``K_l = Re sum_m (scale C_m dB_m) dA_m^l`` (thesis eq. 3.2, app. A.1.4).

    With ``x = dt A`` and ``phi(x) = (e^x - 1)/x``: ``log dA = x``, ``dB = phi(x) dt B``. For a real loss
    PyTorch's gradient of a holomorphic map is ``conj(f') g``, so with ``g_dB = scale sum_k conj(C_k) g_coef``:
    ``g_C = scale conj(dB) g_coef``, ``g_B = conj(phi dt) g_dB``, ``g_x = g_log + conj(dt B phi'(x)) g_dB``
    with ``phi'(x) = (e^x - phi(x))/x`` (``1/2 + x/3 + x^2/8`` near 0; both in float64), ``g_A = dt g_x`` and
    ``g_dt = sum_m Re(conj(A) g_x + conj(phi B) g_dB)``. Against autograd through the elementwise ops this
    cuts the S4D layer's fwd+bwd on the CUDA path from 223 to 209 aten ops (``benchmarks/host_census.py``;
    the GPU was bound by op dispatch on an H200).
    """

    @staticmethod
    def forward(ctx, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, scale: float):
        x = dt.unsqueeze(-1) * A
        e64, phi64 = _exp_phi(x, wide=True)                   # (H, M) float64: phi' below cancels otherwise
        dB = phi64.to(x.dtype) * dt.unsqueeze(-1) * B
        ctx.save_for_backward(dt, A, B, C, x, e64, phi64, dB)
        ctx.scale = scale
        return x, scale * C * dB

    @staticmethod
    @backend.first_order
    def backward(ctx, g_log: Optional[Tensor], g_coef: Optional[Tensor]):
        dt, A, B, C, x, e64, phi64, dB = ctx.saved_tensors
        phi = phi64.to(x.dtype)
        s = ctx.scale
        g_dt = g_A = g_B = g_C = None
        g_x = g_log if g_log is not None else torch.zeros_like(x)
        if g_coef is not None:
            g_dB = s * (C.conj() * g_coef).sum_to_size(dB.shape)
            if ctx.needs_input_grad[3]:
                g_C = s * dB.conj() * g_coef
            dtc = dt.unsqueeze(-1)
            if ctx.needs_input_grad[2]:
                g_B = (phi * dtc).conj() * g_dB
            dphi = _phi_prime(_wide(x), e64, phi64).to(x.dtype)      # in float64: (e^x - phi)/x cancels
            g_x = g_x + (dtc * B * dphi).conj() * g_dB
            g_dt_B = ((phi * B).conj() * g_dB).real.sum(-1)
        else:
            g_dt_B = None
        if ctx.needs_input_grad[1]:
            g_A = dt.unsqueeze(-1) * g_x
        if ctx.needs_input_grad[0]:
            g_dt = (A.conj() * g_x).real.sum(-1)
            if g_dt_B is not None:
                g_dt = g_dt + g_dt_B
        return g_dt, g_A, g_B, g_C, None


def zoh_kernel_factors(dt: Tensor, A: Tensor, B: Tensor, C: Tensor, scale: float = 1.0) -> Tuple[Tensor, Tensor]:
    r"""``(log dA, scale * C * dB)`` of a ZOH-discretized diagonal SSM (app. A.1.4): the two factors of its
    Vandermonde kernel (thesis eq. 3.2, §3.2.1).

    Args:
        dt: (H,) real step sizes. A: (H, M) complex eigenvalues. B: (H, M) complex input vector.
        C: (K, H, M) complex output vectors (K = 2 for a bidirectional layer). scale: 2 for conjugate pairs.

    Returns:
        ``log_dA = dt A`` (H, M) and ``coef = scale C dB`` (K, H, M), ``dB = (e^{dt A} - 1)/A B``
        (the limit ``dt B`` at ``A = 0``), equal to :func:`discretize_diagonal` with ``method="zoh"``; one
        autograd node with a hand-written backward (:class:`_ZOHFactors`; gradcheck in tests/test_discretize.py).
    """
    check_zoh_system("zoh_kernel_factors", dt, A, B, C)
    if backend.get_backend() == "ref":        # plain autograd (derivatives of any order): the generic route
        dtA = dt.unsqueeze(-1) * A
        _, phi = _exp_phi(dtA)
        return dtA, scale * C * (phi * dt.unsqueeze(-1) * B)
    return _ZOHFactors.apply(dt, A, B, C, float(scale))


def check_zoh_system(op: str, dt: Tensor, A: Tensor, B: Tensor, C: Tensor) -> None:
    """ValueError naming ``op`` unless dt is (H,), A and B (H, M) and C (K, H, M)."""
    if A.dim() != 2 or A.shape != B.shape or A.shape[:-1] != dt.shape or C.dim() != 3 or C.shape[-2:] != A.shape:
        raise ValueError(f"{op}: expected dt (H,), A and B (H, M), C (K, H, M); got dt "
                         f"{tuple(dt.shape)}, A {tuple(A.shape)}, B {tuple(B.shape)}, C {tuple(C.shape)}")
