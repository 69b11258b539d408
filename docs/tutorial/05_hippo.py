# %% [markdown]
# # 5. HiPPO: the state as an optimal online memory
#
# *Explains: thesis ch. 4 (§4.2 the HiPPO framework, Theorems 4.2-4.3 LegT and LegS, §4.4.2 the
# reconstruction experiment), ch. 5 (§5.1, Table 5.1: HiPPO as orthogonal SSMs) and §6.3
# (S4D-LegS). The library's notes with every measured number: [HiPPO notes](../hippo.md).
# Previous: [three views](04_three_views.md); next: [S4, diagonal plus low rank](06_s4_dplr.md).*
#
# Parts 1-4 took the matrix $A$ as given. Where should a good one come from? HiPPO answers with a
# memory problem:
#
# > While a signal $f(t)$ streams in, keep $N$ numbers $c(t)$ from which the **whole history**
# > $f(s),\ s \le t$ can be reconstructed as well as possible.
#
# "As well as possible" needs a notion of which parts of the past matter: a *measure*
# $\mu^{(t)}$ on $(-\infty, t]$. HiPPO approximates the history by a polynomial of degree $< N$
# that is optimal in the weighted least-squares sense of $\mu^{(t)}$; $c(t)$ holds its coefficients
# in the orthogonal polynomial basis of the measure. The theorem (thesis §4.2) is that these
# coefficients obey a **linear ODE**, $c'(t) = A(t)c(t) + B(t)f(t)$: an SSM whose state is a
# compressed, continuously updated picture of the past. Two measures matter most:
#
# * **LegT** (translated Legendre): uniform weight on the last $\theta$ time units, a sliding
#   window. $A, B$ are constant: an LTI SSM (Theorem 4.2).
# * **LegS** (scaled Legendre): uniform weight on all of $[0, t]$, the window grows with time, so
#   the system is $c' = \tfrac1t(Ac + Bf)$ (Theorem 4.3). It has no timescale to tune.
#
# Sign convention: the library writes every SSM as $x' = Ax + Bu$ (thesis ch. 2 and 5), so
# its HiPPO $A$ has a negative diagonal; chapter 4 of the thesis writes $c' = -Ac + Bf$.

# %%
import math
import os
import warnings

import matplotlib.pyplot as plt
import torch

from statespaces.hippo import HiPPO, basis, diagonal_init, transition
from statespaces.data.signals import benchmark_function

torch.set_default_dtype(torch.float64)
FAST = os.environ.get("STATESPACES_DOCS_FAST") == "1"

N = 8
fig, ax = plt.subplots(1, 2, figsize=(9, 3.6))
for a, measure in zip(ax, ("legs", "legt")):
    A, B = transition(measure, N)
    im = a.imshow(A, cmap="RdBu_r", vmin=-abs(A).max(), vmax=abs(A).max())
    a.set_title(f"HiPPO-{measure} A (N = {N})")
    fig.colorbar(im, ax=a, shrink=0.8)
fig.tight_layout()
A, B = transition("legs", N)
print("LegS B =", B.numpy().round(3), "\nLegS diagonal of A =", torch.diag(A).numpy(), "(eigenvalues -1..-N)")

# %% [markdown]
# ## Online reconstruction
#
# The benchmark of thesis §4.4.2: $f(x) = \tfrac14\sin x + \tfrac12\sin(x/3) + \sin(x/7)$ on
# $[0, 100]$, sampled at 1000 points. `HiPPO(N, "legs")` runs the discretized LegS recurrence
# (bilinear rule; by default with the $O(N)$ update of Lemma 4.6, `fast=True`; we pass `fast=False`,
# the dense step, which is faster below $N \approx 1000$) and returns the coefficient history, one
# $N$-vector per time step. `reconstruct(c, length)` turns *one* of these vectors back into a
# curve over the whole past. Below, the memory at three moments: each reconstruction uses only
# the 64 numbers held at that moment.

# %%
L, T = 1000, 100.0
dt = T / L
x = (torch.arange(L) + 0.5) * dt
f = benchmark_function(x)[None]                       # (1, L)

legs = HiPPO(64, "legs", fast=False)     # fast=True: the O(N) update, which pays off for N >~ 1000
c = legs(f)                                           # (1, L, 64): the state after each sample
fig, ax = plt.subplots(1, 3, figsize=(12, 3), sharey=True)
for a, k in zip(ax, (249, 599, 999)):
    rec = legs.reconstruct(c[0, k], length=k + 1)     # the whole history [0, t_k] from 64 numbers
    err = float(((rec - f[0, : k + 1]) ** 2).mean())
    a.plot(x[: k + 1], f[0, : k + 1], color="k", lw=1.2, label="signal so far")
    a.plot(x[: k + 1], rec, "--", color="C3", label="from the current state")
    a.set(title=f"t = {x[k]:.0f}: MSE {err:.1e}", xlabel="x")
ax[0].legend(fontsize=8)
fig.suptitle("HiPPO-LegS (N = 64): the state remembers the entire history")
fig.tight_layout()

# %% [markdown]
# The sliding-window measure forgets on purpose: LegT with a window of $\theta = 30$ time units
# reconstructs the last 30 units sharply and knows nothing before. The LTI memories need the
# sampling step `dt` (they are ordinary SSMs discretized with `statespaces.discretize`).

# %%
theta = 30.0
legt = HiPPO(64, "legt", dt=dt, theta=theta)
c_t = legt(f, return_history=False)                   # final state only, (1, 64)
window = legt.reconstruct(c_t[0])                     # last theta/dt samples, oldest first
c_s = legs(f, return_history=False)
full = legs.reconstruct(c_s[0], length=L)
fig, ax = plt.subplots(figsize=(10, 3))
ax.plot(x, f[0], color="k", lw=1.2, label="signal")
ax.plot(x, full, "--", label="LegS: all of [0, t]")
ax.plot(x[-len(window):], window, ":", lw=2.5, label=f"LegT: last {theta:.0f} time units")
ax.axvspan(T - theta, T, color="C2", alpha=0.08)
ax.set(xlabel="x", title="what each memory holds at the final time")
ax.legend(fontsize=8)
fig.tight_layout()

# %% [markdown]
# ## More state, better memory
#
# The approximation error falls quickly with $N$ for a smooth signal (thesis Proposition 4.8:
# faster the smoother the signal), and the discretization rule matters (thesis Fig. 4.4: bilinear
# is far better than Euler). The full table over measures and $N$ is produced by
# `experiments/hippo_reconstruction.py` and recorded in the [HiPPO notes](../hippo.md).

# %%
Ns = (8, 16, 32, 64) if not FAST else (16, 64)
for N in Ns:
    errs = []
    for rule in ("forward_euler", "bilinear"):
        with warnings.catch_warnings():       # HiPPO warns that forward Euler amplifies the first steps: shown here
            warnings.simplefilter("ignore", RuntimeWarning)
            m = HiPPO(N, "legs", discretization=rule, fast=False)
        rec = m.reconstruct(m(f, return_history=False)[0], length=L)
        errs.append(float(((rec - f[0]) ** 2).mean()))
    print(f"LegS N = {N:3d}: MSE forward Euler {errs[0]:.2e}   bilinear {errs[1]:.2e}")

# %% [markdown]
# While $N$ is too small to represent the signal, the projection error dominates and both rules
# are equally poor; once $N$ is large enough (64 here), the discretization error is what is left
# and the bilinear rule wins by four orders of magnitude.

# %% [markdown]
# ## From memory to SSM basis (thesis ch. 5)
#
# Run LegS as a *time-invariant* system $x' = Ax + Bu$ (drop the $1/t$) and look at its impulse
# responses, the **SSM basis** $K_n(t) = e_n^\top e^{tA}B$ (thesis Definition 2.18). For LegS
# they have a closed form, $K_n(t) = L_n(e^{-t})e^{-t}$ with $L_n$ the Legendre polynomials on
# $[0, 1]$ (thesis Table 5.1, exact for every $N$): $K_n = p_n\,\omega$ with
# $p_n(t) = L_n(e^{-t})$ orthonormal under the exponentially decaying measure $\omega(t) = e^{-t}$ (the
# $K_n$ themselves are not orthogonal). `hippo.basis` evaluates the closed form; we compare with the
# matrix exponential.

# %%
N = 6
A, B = transition("legs", N)
t = torch.linspace(0, 6, 400)
K_exp = (torch.linalg.matrix_exp(t[:, None, None] * A) @ B).T          # (N, len(t))
K_closed = basis("legs", N, t, kind="kernel")
print(f"max |e^(tA)B - L_n(e^-t) e^-t| = {(K_exp - K_closed).abs().max():.1e}")
fig, ax = plt.subplots(figsize=(7, 3))
for n in range(N):
    ax.plot(t, K_closed[n], label=f"$K_{n}$")
ax.set(xlabel="t", title="HiPPO-LegS SSM basis $e^{tA}B$ (LTI)")
ax.legend(fontsize=8, ncol=3)
fig.tight_layout()

# %% [markdown]
# ## From HiPPO to S4 and S4D
#
# S4 initializes its state matrix with the LTI HiPPO-LegS $(A, B)$ and learns from there. $A$
# cannot be diagonalized stably (its eigenvector matrix has entries growing like $2^{4N/3}$,
# thesis Lemma 6.6), but it is *normal plus low-rank*: $A = A^{(N)} - PP^\top$. S4 keeps that
# structure (DPLR); **S4D-LegS** drops the low-rank part and diagonalizes the normal part
# $A^{(N)}$ (thesis §6.3, Theorem 6.9 says this still approximates the same basis as
# $N\to\infty$). `hippo.diagonal_init("legs", N)` returns those $N/2$ eigenvalues; every one has
# real part exactly $-\tfrac12$, and the imaginary parts spread out up to about $N^2/\pi$.
# This is the default initialization of the `S4D` layer: `S4D(..., init="legs")`.

# %%
N = 64
lam, B_diag = diagonal_init("legs", N)
print("first eigenvalues:", lam[:4].numpy().round(3))
print(f"Re range: [{lam.real.min():.6f}, {lam.real.max():.6f}];  max Im {lam.imag.max():.1f}"
      f"  vs N^2/pi - pi/6 = {N**2 / math.pi - math.pi / 6:.1f}")

# %% [markdown]
# Each of these eigenvalues is a damped oscillator, exactly as in [part 2](02_damping.md): decay
# rate $\tfrac12$, frequencies spread from slow to fast. [Part 6](06_s4_dplr.md) shows why the
# full LegS matrix cannot simply be diagonalized and how S4 computes with it anyway;
# [part 7](07_s4d_oscillators.md) takes the oscillators of the diagonal literally.
