r"""Closed forms for discretized harmonic oscillators (LinOSS, seed 001; notes Part 6.1).

One LinOSS oscillator ``y'' = -a y + (B u)`` (``a = A_kk >= 0``, state ``x = [z; y]`` with
``z = y'``) discretized with step ``dt`` gives the 2x2 recurrence ``x_n = M x_{n-1} + f (B u)_n``:

==========  =======================================================  ==========================
scheme      M                                                         f (corrected forcing)
==========  =======================================================  ==========================
``im``      [[S, -dt a S], [dt S, S]],  S = 1/(1 + dt^2 a)             [dt S, dt^2 S]
``imex``    [[1, -dt a], [dt, 1 - dt^2 a]]                             [dt, dt^2]
==========  =======================================================  ==========================

(the seed's ``F^IM = [dt B u; 0]`` is wrong, notes Part 6.1; in both schemes ``f = M [dt; 0]``).

Eigenvalues (seed Proposition 3.1, corrected for IMEX): ``lambda = r exp(+-i theta)`` with

* IM:   ``r = (1 + dt^2 a)^{-1/2} = sqrt(S) <= 1``, ``theta = arctan(dt sqrt(a))``;
* IMEX: ``r = 1``, ``cos theta = 1 - dt^2 a / 2``, i.e. ``theta = 2 arcsin(dt sqrt(a) / 2)``,
  valid (|lambda| = 1) only while ``dt^2 a <= 4``; beyond, the eigenvalues are real with product 1
  and one has modulus > 1.

Powers of a 2x2 matrix with eigenvalues ``r e^{+-i theta}`` (Cayley-Hamilton):
``M^l = s_l M - r^2 s_{l-1} I`` with ``s_l = r^{l-1} sin(l theta) / sin(theta)``
(``s_l -> l r^{l-1}`` as theta -> 0). Hence the impulse response of the position:

    kappa_l = e_2^T M^l f = dt M_21 s_{l+1} = dt M_21 r^l sin((l+1) theta) / sin(theta),

which is the notes' ``C dt B r^{k+1} sin((k+1) theta)/sqrt(a)`` (IM) and
``C dt^2 B sin((k+1) phi)/sin(phi)`` (IMEX). The trigonometric evaluation is done in float64.

Shapes: P oscillators, H channels, L length; ``a``, ``dt``: (P,); kernels (P, L) or (H, H, L).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .. import backend
from .._checks import check_choice, check_length, check_real_float, tracing

Tensor = torch.Tensor

#: Schemes (seed 001): implicit (``im``) and implicit-explicit / symplectic Euler (``imex``).
OSCILLATOR_SCHEMES = ("im", "imex")

#: Largest ``dt^2 A`` allowed for IMEX. At 4 the two eigenvalues merge at -1 (Jordan block, linear
#: growth); just below it ``1/sin(theta)`` (the kernel's gain) is ~10. See :class:`LinOSS`.
IMEX_MAX_DT2A = 3.99

_TINY_A = 1e-30  # keeps d sqrt(a)/da finite at a = 0 (the value change is O(1e-15) in theta)


def check_scheme(discretization: str) -> str:
    return check_choice("LinOSS discretization", discretization, OSCILLATOR_SCHEMES)


def _check_float(fn: str, A: Tensor) -> None:
    """:func:`check_real_float` of A, saying why an integer A misleads: dt is cast to A's dtype."""
    try:
        check_real_float(f"{fn}: A", A)
    except TypeError as e:
        raise TypeError(f"{e}; dt is cast to A's dtype, so an integer A made it 0") from None


def check_oscillator_params(A: Tensor, dt: Tensor, discretization: str) -> str:
    """Validate ``A >= 0``, ``dt > 0`` (finite) and, for IMEX, ``dt^2 A <= IMEX_MAX_DT2A``."""
    _check_float("oscillator parameters", A)
    scheme = check_scheme(discretization)
    if not bool(torch.isfinite(A).all()) or bool((A < 0).any()):
        raise ValueError(
            f"oscillator stiffness A must be finite and >= 0 (squared frequencies), found min {float(A.min()):.4g}; "
            "use A_param='relu' or 'square' to keep it nonnegative by construction"
        )
    if not bool(torch.isfinite(dt).all()) or bool((dt <= 0).any()):
        raise ValueError(f"step size dt must be finite and > 0, found min {float(dt.min()):.4g}")
    if scheme == "imex":
        worst = float((dt * dt * A).max())
        if worst > IMEX_MAX_DT2A:
            raise ValueError(
                f"LinOSS-IMEX needs dt^2 A <= {IMEX_MAX_DT2A} (its margin below 4, past which it is unstable: the "
                f"eigenvalues turn real, one with |lambda| > 1; at 4 itself a Jordan block at -1 grows linearly); "
                f"found max dt^2 A = "
                f"{worst:.4g}. Lower dt/rate or A, or use discretization='IM'"
            )
    return scheme


def oscillator_transition(A: Tensor, dt: Tensor, discretization: str, validate: bool = True) -> Tuple[Tensor, Tensor]:
    r"""Transition and forcing coefficients of P oscillators (seed 001; corrected F, notes 6.1).

    Args:
        A: stiffness (squared frequency) per oscillator, (P,), ``>= 0``.
        dt: step size, (P,) or scalar, ``> 0``.
        discretization: ``"IM"`` or ``"IMEX"`` (case-insensitive).
        validate: check the arguments (raises ``ValueError``).

    Returns:
        ``(M, f)``: M (2, 2, P) real with ``M[i, j]`` the diagonal of block (i, j) acting on
        ``[z; y]``, and f (2, P) such that ``F_n = f * (B u_n)``.
    """
    dt = torch.as_tensor(dt, dtype=A.dtype, device=A.device).expand_as(A)
    scheme = check_oscillator_params(A, dt, discretization) if validate else check_scheme(discretization)
    if backend.get_backend() == "ref":          # plain autograd (derivatives of any order)
        return oscillator_transition_ref(A, dt, scheme)
    if torch.is_grad_enabled() and (A.requires_grad or dt.requires_grad):
        M, f = JacobianNode.apply(transition_with_jacobian, scheme, A, dt)
        return M, f
    fused = _transition_fused(A, dt, scheme)
    return (fused[0], fused[1]) if fused is not None else oscillator_transition_ref(A, dt, scheme)


def _transition_fused(A: Tensor, dt: Tensor, scheme: str) -> Optional[Tuple[Tensor, Tensor, Tensor]]:
    """``(M, f, J)`` by the Triton kernel (:mod:`statespaces.ops.triton.oscillator`) where
    :mod:`statespaces.backend` picks it (CUDA float64, one oscillator axis), else None."""
    if A.dim() != 1 or backend.choose("oscillator_transition", A, dt, dtypes=(torch.float64,)) != "triton":
        return None
    return backend.attempt("oscillator_transition", _transition_triton, A.detach(), dt.detach(), scheme)


def _transition_triton(A: Tensor, dt: Tensor, scheme: str) -> Tuple[Tensor, Tensor, Tensor]:
    from ..ops.triton.oscillator import transition_triton

    return transition_triton(A, dt, scheme)


def oscillator_transition_ref(A: Tensor, dt: Tensor, discretization: str) -> Tuple[Tensor, Tensor]:
    """Twin of :func:`oscillator_transition` by plain autograd through the formulas (no validation); A and dt
    of the same shape, e.g. (P,). The IM/IMEX blocks of seed 001 with the corrected forcing (notes Part 6.1)."""
    one = torch.ones_like(A)
    if check_scheme(discretization) == "im":
        S = 1.0 / (1.0 + dt * dt * A)
        M = torch.stack([torch.stack([S, -dt * A * S]), torch.stack([dt * S, S])])
        f = torch.stack([dt * S, dt * dt * S])
    else:
        M = torch.stack([torch.stack([one, -dt * A]), torch.stack([dt * one, 1.0 - dt * dt * A])])
        f = torch.stack([dt * one, dt * dt * one])
    return M, f


def transition_with_jacobian(A: Tensor, dt: Tensor, scheme: str) -> Tuple[Tensor, Tensor, Tensor]:
    r"""``(M, f, J)``: the blocks of :func:`oscillator_transition_ref` and their Jacobian J (2, 6, ...) of the six
    outputs ``(M_00, M_01, M_10, M_11, f_0, f_1)`` by ``(A, dt)``: one Triton launch on CUDA
    (:func:`statespaces.ops.triton.oscillator.transition_triton`), else these formulas.

    IMEX: ``d/dA = (0, -dt, 0, -dt^2, 0, 0)``, ``d/d dt = (0, -A, 1, -2 dt A, 1, 2 dt)``. IM, with
    ``S = 1/(1 + dt^2 A)`` and ``q = 1 - dt^2 A``: ``d/dA = -S^2 (dt^2, dt, dt^3, dt^2, dt^3, dt^4)``,
    ``d/d dt = S^2 (-2 dt A, -A q, q, -2 dt A, q, 2 dt)``. Derivatives of the seed 001 blocks (notes Part 6.1).
    """
    fused = _transition_fused(A, dt, scheme)
    if fused is not None:
        return fused
    M, f = oscillator_transition_ref(A, dt, scheme)
    zero, one = torch.zeros_like(A), torch.ones_like(A)
    if scheme == "imex":
        J = torch.stack([torch.stack([zero, -dt, zero, -dt * dt, zero, zero]),
                         torch.stack([zero, -A, one, -2 * dt * A, one, 2 * dt])])
    else:
        S2 = M[0, 0] * M[0, 0]                                      # S^2
        dt2 = dt * dt
        q = 1 - dt2 * A
        J = torch.stack([-S2 * torch.stack([dt2, dt, dt2 * dt, dt2, dt2 * dt, dt2 * dt2]),
                         S2 * torch.stack([-2 * dt * A, -A * q, q, -2 * dt * A, q, 2 * dt])])
    return M, f, J


class JacobianNode(torch.autograd.Function):
    r"""``outputs = fn(*inputs, scheme)`` (all but fn's last return) as one autograd node whose backward is one
    contraction (:func:`transition_vjp`) with the Jacobian J (I, K, ...) that ``fn`` returns last, K the rows of
    the outputs stacked (the LinOSS transition, :func:`transition_with_jacobian`: (M, f), K = 6; D-LinOSS's with
    its projection and normal form, :func:`statespaces.ops.triton.oscillator.damped_transition_triton`:
    (M', f', T), K = 8).
    Plain autograd through the LinOSS formulas costs about 15 forward and 45 backward ops (D-LinOSS's about
    120 backward), which a GPU bound by dispatch pays for once per forward; here one contraction.
    """

    @staticmethod
    def forward(ctx, fn, scheme: str, *inputs: Tensor):
        *outs, J = fn(*inputs, scheme)
        ctx.save_for_backward(J)
        ctx.shapes = [o.shape for o in outs]
        # the fused kernels write every output into one buffer: a view made inside a Function could not be
        # edited in place by the caller, so those (tiny, (2, 2, P)) outputs are copied out
        return tuple(o if o._base is None else o.clone() for o in outs)

    @staticmethod
    @backend.first_order
    def backward(ctx, *grads: Optional[Tensor]):
        (J,) = ctx.saved_tensors
        filled = [J.new_zeros(s) if g is None else g for g, s in zip(grads, ctx.shapes)]
        return (None, None, *transition_vjp(J, *filled))


def transition_vjp(J: Tensor, *grads: Tensor) -> Tensor:
    """The gradients of a transition's inputs, (I, ...), from its Jacobian J (I, K, ...) and the gradients of its
    outputs (each (k_i, ..., ...) with the trailing shape of J; K = sum of their rows): one contraction."""
    shape = J.shape[2:]
    return (J * torch.cat([g.reshape(-1, *shape) for g in grads]).unsqueeze(0)).sum(1)


#: Largest shear ``|q|`` that :func:`normal_form` applies to a block near a double eigenvalue (``x = [[1, q], [0, 1]]
#: x'``; the basis change's condition number grows like ``q^2``); beyond it the block keeps its own basis.
MAX_SHEAR = 1e3


def normal_form(M: Tensor, f: Tensor, tol: float = 1e-6) -> Tuple[Tensor, Tensor, Tensor]:
    r"""The blocks in the basis where they are normal: ``(M', f', T)`` with ``x = [[p, q], [0, 1]] x'``, T = (p, q).
    A change of state basis, which leaves the SSM unchanged (thesis Lemma 3.3).

    For a block with eigenvalues ``alpha +- i beta``: ``p = beta / M10``, ``q = (M00 - M11) / (2 M10)``, then
    ``M' = T^-1 M T = [[alpha, -beta], [beta, alpha]]`` and ``f' = T^-1 f = ((f0 - q f1) / p, f1)``; the position
    (second) coordinate is the same in both bases. Rounded to fp32, a normal block moves its eigenvalues by about
    2^-24, while a block far from normal (near a double eigenvalue: D-LinOSS with theta near 0 or pi) moves them
    by up to about 2^-12, which a scan then accumulates.

    Near a double eigenvalue (``beta^2 <= tol det M``, beta / r below ``sqrt(tol)``), where ``p = beta / M10`` would
    make the basis change singular, the block is only sheared: ``p = 1``, the same q, so that
    ``M' = [[alpha, M01 + q^2 M10], [M10, alpha]]`` (equal diagonal entries, almost a Jordan block: ``M01 + q^2 M10
    = -beta^2 / M10``, formed without the cancellation of ``det M - alpha^2``; eigenvalues
    ``alpha +- sqrt(-beta^2)``, real ones included). Its powers then have no cancellation between diagonal entries
    of opposite sign: a D-LinOSS-IM block with eigenvalues ``-0.99926 +- 0.00042 i`` (M00 = 1.0, M11 = -3.0) gave a
    float32 scan 2e-2 relative error at L = 1000 in its own basis, 3e-5 sheared. Where ``M10 = 0`` or
    ``|q| >`` :data:`MAX_SHEAR`, T = I and the block is returned as is. Differentiable (where-guarded). The fused
    kernel's twin (:func:`statespaces.ops.triton.oscillator._normal_form`).

    Args:
        M: (2, 2, ...) real blocks. f: (2, ...) forcing. tol: threshold on ``beta^2 / det M``.

    Returns:
        ``(M', f', T)``: (2, 2, ...), (2, ...), (2, ...).
    """
    if M.dim() < 2 or M.shape[:2] != (2, 2) or f.shape != (2, *M.shape[2:]):
        raise ValueError(f"normal_form: expected M (2, 2, ...) and f (2, ...) with the same trailing shape, got M "
                         f"{tuple(M.shape)} and f {tuple(f.shape)}")
    al = (M[0, 0] + M[1, 1]) / 2
    det = M[0, 0] * M[1, 1] - M[0, 1] * M[1, 0]
    b2 = det - al * al
    nz = M[1, 0] != 0
    d = torch.where(nz, M[1, 0], torch.ones_like(b2))
    q = (M[0, 0] - M[1, 1]) / (2 * d)
    ok = (b2 > tol * det) & nz                                  # rotated and scaled to [[al, -be], [be, al]]
    shear = nz & ~ok & (q.abs() <= MAX_SHEAR)                   # near a double eigenvalue: sheared only
    be = torch.sqrt(torch.where(ok, b2, torch.ones_like(b2)))
    p = torch.where(ok, be / d, torch.ones_like(b2))
    q = torch.where(ok | shear, q, torch.zeros_like(b2))
    Mn = torch.where(ok, torch.stack([torch.stack([al, -be]), torch.stack([be, al])]),
                     torch.where(shear, torch.stack([torch.stack([al, M[0, 1] + q * q * M[1, 0]]),
                                                     torch.stack([M[1, 0], al])]), M))
    T = torch.stack([p, q])
    return Mn, to_normal_basis(f, T, dim=0), T


def _pair(x: Tensor, T: Tensor, dim: int) -> Tuple[Tensor, Tensor]:
    if x.dim() == 0 or x.shape[dim] != 2 or T.dim() == 0 or T.shape[0] != 2:
        raise ValueError(f"normal basis: x needs size 2 along dim {dim} and T = (p, q) size 2 first, got x "
                         f"{tuple(x.shape)} and T {tuple(T.shape)}")
    z, y = x.unbind(dim)
    return z, y


def to_normal_basis(x: Tensor, T: Tensor, dim: int = -2) -> Tensor:
    r"""``x' = T^-1 x`` for ``T = [[p, q], [0, 1]]`` (:func:`normal_form`): states or forcings with their
    (velocity, position) pair along ``dim`` and the oscillators last, T (2, ...) broadcasting against the rest.
    The state map of thesis Lemma 3.3."""
    z, y = _pair(x, T, dim)
    return torch.stack([(z - T[1] * y) / T[0], y], dim)


def from_normal_basis(x: Tensor, T: Tensor, dim: int = -2) -> Tensor:
    r"""``x = T x'`` (the inverse of :func:`to_normal_basis`): the position is the same in both bases. Shapes as
    there; thesis Lemma 3.3."""
    z, y = _pair(x, T, dim)
    return torch.stack([T[0] * z + T[1] * y, y], dim)


def oscillator_polar(A: Tensor, dt: Tensor, discretization: str) -> Tuple[Tensor, Tensor]:
    r"""Modulus (as ``log r``) and angle ``theta`` of the eigenvalues ``r e^{+-i theta}`` (Prop. 3.1).

    IM: ``log r = -log(1 + dt^2 A)/2``, ``theta = arctan(dt sqrt(A))``. IMEX: ``log r = 0``,
    ``theta = 2 arcsin(dt sqrt(A)/2)`` (argument clamped to 1: callers keep ``dt^2 A <= 4``).
    Returns two real tensors of the broadcast shape of ``A`` and ``dt``.
    """
    scheme = check_scheme(discretization)
    w = dt * torch.sqrt(torch.clamp(A, min=_TINY_A))           # dt sqrt(A)
    if scheme == "im":
        return -0.5 * torch.log1p(w * w), torch.atan(w)
    return torch.zeros_like(w), 2.0 * torch.asin(torch.clamp(0.5 * w, max=1.0))


def oscillator_eigenvalues(A: Tensor, dt: Tensor, discretization: str) -> Tensor:
    r"""Discrete eigenvalue ``r e^{+i theta}`` of each oscillator (the other one is its conjugate). (P,) complex.
    Seed 001 Prop. 3.1 (IM); IMEX as corrected in notes Part 6.1."""
    log_r, theta = oscillator_polar(A, dt, discretization)
    return torch.polar(torch.exp(log_r), theta)


def _sin_ratio(l: Tensor, theta: Tensor) -> Tensor:
    """``sin(l theta)/sin(theta)``, equal to ``l`` in the limit theta -> 0."""
    s = torch.sin(theta)
    tiny = s.abs() < 1e-300
    safe = torch.where(tiny, torch.ones_like(s), s)
    return torch.where(tiny, l * torch.ones_like(s), torch.sin(l * theta) / safe)


def power_coefficients(log_r: Tensor, theta: Tensor, l: Tensor) -> Tuple[Tensor, Tensor]:
    r"""``(s_l, r^2 s_{l-1})`` such that ``M^l = s_l M - r^2 s_{l-1} I`` (Cayley-Hamilton): the factors of the
    closed-form LinOSS impulse responses (notes Part 6.1).

    Args:
        log_r: (P,) log-modulus, from :func:`oscillator_polar`.
        theta: (P,) argument (angle), from :func:`oscillator_polar`.
        l: integer powers, (L,) (any real dtype).

    Returns:
        two tensors (P, L) in the dtype of ``log_r``.
    """
    lr, th = log_r.unsqueeze(-1), theta.unsqueeze(-1)
    l = l.to(log_r.dtype)
    s_l = torch.exp((l - 1) * lr) * _sin_ratio(l, th)
    s_prev = torch.exp(l * lr) * _sin_ratio(l - 1, th)        # = r^2 s_{l-1}
    return s_l, s_prev


def matrix_powers(M: Tensor, A: Tensor, dt: Tensor, discretization: str, l: Tensor) -> Tensor:
    r"""``M^l`` for each oscillator and each power in ``l``, in closed form: (2, 2, P, L). The powers of the
    kernel (thesis eq. 2.7) for the seed 001 transition; M (2, 2, P), A and dt (P,), l (L,).

    Computed in float64 and returned in the dtype of ``M``.
    """
    dt = torch.as_tensor(dt, dtype=A.dtype, device=A.device).expand_as(A)
    log_r, theta = oscillator_polar(A.double(), dt.double(), discretization)
    s_l, s_prev = power_coefficients(log_r, theta, l)
    Md = M.double().unsqueeze(-1)                               # (2, 2, P, 1)
    eye = torch.eye(2, dtype=torch.float64, device=M.device)[:, :, None, None]
    return (s_l * Md - s_prev * eye).to(M.dtype)


def oscillator_responses(A: Tensor, dt: Tensor, discretization: str, L: int) -> Tensor:
    r"""Impulse responses of velocity and position to a unit forcing ``(B u)_0 = 1``.

    ``[zeta_l; kappa_l] = M^l f`` for ``l < L``; by ``f = M [dt; 0]`` this is
    ``dt (M^{l+1})_{:, 0}`` = ``dt [s_{l+1} M_11 - r^2 s_l ; s_{l+1} M_21]``.

    Args:
        A: (P,); no validation here (see :func:`oscillator_transition`).
        dt: (P,) or a scalar; no validation here (see :func:`oscillator_transition`).
        L: number of lags.

    Returns:
        (2, P, L) real in the dtype of ``A``: index 0 velocity ``z``, index 1 position ``y``.
    """
    L = check_length(L, "oscillator_responses: L")
    _check_float("oscillator_responses", A)
    dt = torch.as_tensor(dt, dtype=A.dtype, device=A.device).expand_as(A)
    M, _ = oscillator_transition(A, dt, discretization, validate=False)
    Ad, dtd = A.double(), dt.double()
    log_r, theta = oscillator_polar(Ad, dtd, discretization)
    l = torch.arange(1, L + 1, device=A.device, dtype=torch.float64)
    s_next, s_cur = power_coefficients(log_r, theta, l)         # s_{l+1}, r^2 s_l
    Md = M.double()
    dtc = dtd.unsqueeze(-1)
    vel = dtc * (s_next * Md[0, 0].unsqueeze(-1) - s_cur)
    pos = dtc * s_next * Md[1, 0].unsqueeze(-1)
    return torch.stack([vel, pos]).to(A.dtype)


def oscillator_kernel(A: Tensor, dt: Tensor, discretization: str, L: int) -> Tensor:
    r"""Position impulse response ``kappa_l`` of each oscillator (its Green's function), (P, L); A (P,).
    The kernel (thesis eq. 2.7) of one seed 001 oscillator, in the closed form of notes Part 6.1.

    Validates its arguments as :func:`oscillator_transition` does (``A >= 0``, ``dt > 0``, IMEX ``dt^2 A <= 3.99``:
    past 4 the closed form describes another system than the recurrence). Its gradient in A misses the angle's
    share below A ~ 1e-10 / dt^2 (d theta / dA is infinite at A = 0, and the cancelling factor is lost to rounding):
    differentiate the recurrence (:func:`oscillator_transition`) there."""
    _check_float("oscillator_kernel", A)
    dt = torch.as_tensor(dt, dtype=A.dtype, device=A.device).expand_as(A)
    if not (tracing() or backend.transforming()):       # host values: none under vmap, compile or export
        check_oscillator_params(A.detach(), dt.detach(), discretization)
    return oscillator_responses(A, dt, discretization, L)[1]


def mimo_kernel(kappa: Tensor, B: Tensor, C: Tensor) -> Tensor:
    r"""LinOSS MIMO convolution kernel ``K[h, k, l] = Re(sum_p C_hp kappa_pl B_pk)`` (seed 001's MIMO
    ``B``, ``C``; the (out, in) kernel layout of thesis Remark 2.8).

    Since ``kappa`` is real, ``K = sum_p Re(C_hp B_pk) kappa_pl``: each oscillator contributes a
    real rank-<=2 channel-mixing matrix ``Re(C_:p B_p:)`` times its scalar Green's function.

    Args:
        kappa: (P, L) real. B: (P, H_in) complex. C: (H_out, P) complex.

    Returns:
        (H_out, H_in, L) real.
    """
    W = torch.einsum("hp,pk->phk", C.real, B.real) - torch.einsum("hp,pk->phk", C.imag, B.imag)
    return torch.einsum("phk,pl->hkl", W, kappa)


def oscillator_step_ref(M: Tensor, f: Tensor, Bt: Tensor, Ct: Tensor, D: Tensor, u: Tensor,
                        state: Tensor) -> Tuple[Tensor, Tensor]:
    r"""Reference twin of :func:`oscillator_step`, also its PyTorch path (autograd, CPU, any dtype). The
    seed 001 recurrence ``x_n = M x_{n-1} + F_n`` in step mode (thesis §2.3.2).

    One step of P oscillators (the body of :meth:`statespaces.layers.linoss.LinOSS.step` and of its generation
    stepper, :mod:`statespaces.layers.stepper`): ``state' = M state + f (B u)``, ``out = Re(C y') + D u``.

    Args:
        M: (2, 2, P) blocks and f (2, P) forcing, in the wide precision (float64: the 2x2 update
            runs in it and is rounded once; a float32 M is off by ~2^-24, which IMEX (|lambda| = 1)
            turns into a drift ~ L 2^-24).
        Bt: (H, P) complex, ``B^T``. Ct: (P, H) complex, ``C^T``. D: (H,) real.
        u: (B, H) real. state: (B, 2, P) complex (velocity, position).

    Returns:
        ``(out (B, H), state' (B, 2, P))``.
    """
    wide = torch.complex128 if M.dtype == torch.float64 else state.dtype
    v = (u.to(state.dtype) @ Bt).to(wide)                        # (B, P)
    z, y = state[:, 0].to(v.dtype), state[:, 1].to(v.dtype)
    z2 = (M[0, 0] * z + M[0, 1] * y + f[0] * v).to(state.dtype)
    y2 = (M[1, 0] * z + M[1, 1] * y + f[1] * v).to(state.dtype)
    out = (y2 @ Ct).real + D * u
    return out, torch.stack([z2, y2], 1)


def oscillator_step(M: Tensor, f: Tensor, Bt: Tensor, Ct: Tensor, D: Tensor, u: Tensor, state: Tensor,
                    out: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tensor]:
    r"""One step of P oscillators, ``state' = M state + f (B u)``, ``out = Re(C y') + D u``: arguments and
    result as :func:`oscillator_step_ref` (seed 001 recurrence; thesis §2.3.2).

    On CUDA tensors (or under :func:`statespaces.backend.force_triton`) with no gradient needed, the two
    fused Triton kernels of :mod:`statespaces.ops.triton.oscillator_step` run (fp32 or fp64 states,
    float64 ``M``, ``f``); otherwise the PyTorch expression :func:`oscillator_step_ref`. With ``out``
    (``(out, state')`` buffers; ``state'`` may be ``state``) the results are written there, so the
    generation stepper allocates nothing per step on the fused path.
    """
    if u.is_cuda or backend.FORCE_TRITON:
        needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (M, f, Bt, Ct, D, u, state))
        path = backend.choose("oscillator_step", u, D, dtypes=backend.REAL + (torch.float64,))
        if not needs_grad and path == "triton":
            from ..ops.triton import oscillator_step as tos

            if tos.fits(M, f, Bt, Ct, D, u, state):
                res = backend.attempt("oscillator_step", tos.launch_step, M, f, Bt, Ct, D, u, state, out=out)
                if res is not None:
                    return res
    y, new = oscillator_step_ref(M, f, Bt, Ct, D, u, state)
    if out is None:
        return y, new
    out[1].copy_(new)
    out[0].copy_(y)
    return out[0], out[1]
