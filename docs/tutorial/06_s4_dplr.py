# %% [markdown]
# # 6. S4: diagonal plus low rank
#
# *Explains: thesis §3.3 (S4's DPLR parameterization, Theorems 3.5-3.6, Algorithm 1), §6.2
# (Lemma 6.6: HiPPO cannot be diagonalized stably; Theorem 6.7 and Corollary 6.8: normal plus
# low rank), app. C.1 (Lemmas C.2-C.4, Definition C.5: generating function, Woodbury identity,
# Cauchy kernel) and app. F.2. Library notes with the measured numbers: [S4, the DPLR layer](../s4.md).
# Previous: [HiPPO](05_hippo.md); next: [S4D as oscillators](07_s4d_oscillators.md).*
#
# Part 5 ended with the HiPPO-LegS matrix $A$, a good state matrix, and part 4 with the cost of
# using a *dense* $A$: the kernel $\bar K_\ell = C\bar A^\ell\bar B$ needs $L$ matrix-vector
# products with an $N\times N$ matrix, $O(N^2L)$, and a recurrent step costs $O(N^2)$. A
# *diagonal* state matrix makes both $O(NL)$ and $O(N)$ (part 4's Vandermonde product). And
# conjugation does not change the SSM (thesis Lemma 3.3): for any invertible $V$,
#
# $$(A, B, C) \quad\text{and}\quad (V^{-1}AV,\ V^{-1}B,\ CV)$$
#
# map inputs to the same outputs, because $x = V\tilde x$ is just another coordinate system for the
# state. So why not diagonalize HiPPO, $A = V\Lambda V^{-1}$, and be done? This part shows why
# that fails, what S4 does instead, and how its kernel is computed (Algorithm 1). Everything is in
# float64.

# %%
import math

import matplotlib.pyplot as plt
import torch

from statespaces.hippo import transition
from statespaces.hippo.eigen import legs_eigenvectors_exact
from statespaces.hippo.forms import dplr, low_rank, nplr
from statespaces.kernels.cauchy import cauchy
from statespaces.kernels.dplr import dplr_kernel
from statespaces.kernels.reference import power_kernel
from statespaces.layers.s4 import S4

torch.set_default_dtype(torch.float64)


def bilinear(A, B, dt):
    """Dense bilinear discretization (thesis eq. 2.4): the reference every route is checked against."""
    eye = torch.eye(A.shape[-1], dtype=A.dtype)
    M = eye - dt / 2 * A
    return torch.linalg.solve(M, eye + dt / 2 * A), torch.linalg.solve(M, dt * B)


def rel(a, b):
    return float((a - b).norm() / b.norm())


# %% [markdown]
# ## Diagonalizing HiPPO: exact in theory, useless in floating point
#
# LegS is lower triangular with diagonal $-1, -2, \dots, -N$: its eigenvalues are distinct, so it
# *is* diagonalizable. The catch is the eigenvector matrix. Thesis Lemma 6.6 writes it in closed
# form (after a sign and diagonal rescaling): $V_{ij} = \binom{i+j}{i-j}$, so
# $V_{3i,i} = \binom{4i}{2i} \approx 2^{4i}$ and $V$ has entries of order $2^{4N/3}$. Conjugating by
# such a $V$ multiplies rounding errors by its condition number. Below we diagonalize LegS
# numerically (`torch.linalg.eig`), compute the kernel of the diagonal system
# $(\Lambda, V^{-1}B, CV)$ with a random $C$, and compare with the dense kernel of $(A, B, C)$
# (bilinear, $\Delta = 0.01$, $L = 1000$).

# %%
dt, L = 0.01, 1000
gen = torch.Generator().manual_seed(0)
Ns = (4, 8, 16, 32, 64)
rows = []
for N in Ns:
    A, B = transition("legs", N)
    C = torch.randn(N, generator=gen)
    K_dense = power_kernel(*bilinear(A, B, dt), C, L)             # the truth, O(N^2 L)

    lam, V = torch.linalg.eig(A)                                  # A = V diag(lam) V^-1, numerically
    B_d = torch.linalg.solve(V, B.to(V.dtype))                    # V^-1 B
    C_d = C.to(V.dtype) @ V                                       # C V
    dlam = (1 + dt * lam / 2) / (1 - dt * lam / 2)                # bilinear, elementwise
    dB_d = dt * B_d / (1 - dt * lam / 2)
    K_diag = ((C_d * dB_d)[:, None] * dlam[:, None] ** torch.arange(L)).sum(0).real   # Vandermonde

    V_exact = legs_eigenvectors_exact(N)                          # Lemma 6.6, Python integers
    log2_max = math.log2(max(max(row) for row in V_exact))
    eig_err = float((lam.real.sort().values - torch.arange(-N, 0)).abs().max())
    rows.append((N, eig_err, log2_max, float(torch.linalg.cond(V)), rel(K_diag, K_dense)))

print("   N   eigenvalue error   log2 max V_ij (Lemma 6.6)   4N/3   cond(V) numerical   kernel error")
for N, eig_err, log2_max, cond, err in rows:
    print(f"{N:4d}   {eig_err:14.1e}   {log2_max:23.1f}   {4 * N / 3:6.1f}   {cond:17.1e}   {err:12.1e}")

errors = {N: err for N, *_, err in rows}
assert all(r[1] < 1e-9 for r in rows)                          # the eigenvalues are found exactly
assert all(4 * N / 3 - math.log2(N) - 2 <= l2 <= 4 * N / 3 + 2 for N, _, l2, _, _ in rows)
assert errors[8] < 1e-10 and 1e-8 < errors[16] < 1e-2 and errors[32] > 1.0 and errors[64] > 1e10
assert rows[3][3] > 1 / torch.finfo(torch.float64).eps           # cond(V) at N = 32

fig, ax = plt.subplots(1, 2, figsize=(10, 3.4))
ax[0].semilogy(Ns, [r[3] for r in rows], "o-", label="cond(V), numerical eigenvectors")
ax[0].semilogy(Ns, [2.0 ** r[2] for r in rows], "s--", label="max $V_{ij}$ of Lemma 6.6 (exact)")
ax[0].semilogy(Ns, [2.0 ** (4 * N / 3) for N in Ns], ":", color="0.5", label="$2^{4N/3}$")
ax[0].set(xlabel="state size N", title="HiPPO-LegS eigenvectors")
ax[0].legend(fontsize=8)
ax[1].semilogy(Ns, [r[4] for r in rows], "o-", color="C3")
ax[1].axhline(1.0, color="0.6", lw=0.8)
ax[1].set(xlabel="state size N", ylabel="relative kernel error",
          title="kernel through the diagonalization vs dense")
fig.tight_layout()

# %% [markdown]
# The eigenvalues come out exact (the matrix is triangular); the eigenvectors do not. The
# diagonalized kernel is right to better than $10^{-10}$ at $N = 8$, has lost most of its 16
# digits at $N = 16$, and from $N = 32$ on it is numerically meaningless (relative error far above
# 1): the computed condition number of $V$ is far above $1/\varepsilon_{\text{float64}} \approx 4.5\cdot 10^{15}$
# ($10^{19}$ to $10^{20}$ in the table) and no longer grows like the exact entries, which keep growing like
# $2^{4N/3}$: past $1/\varepsilon$ the computed figure only says "singular to working precision". S4 uses $N = 64$ or more. A diagonal S4 must give
# up HiPPO's matrix (that is S4D, [part 7](07_s4d_oscillators.md)); S4 keeps it and changes the
# structure instead.
#
# ## Normal plus low rank (thesis Theorem 6.7, Corollary 6.8)
#
# The trouble is that $A$ is far from *normal* ($AA^\top \ne A^\top A$); only normal matrices are
# diagonalized by a unitary $V$, whose condition number is exactly 1. HiPPO-LegS is normal up to a
# rank-1 term:
#
# $$A = A^{(N)} - PP^\top,\qquad P_n = \sqrt{n + \tfrac12},\qquad
# A^{(N)} = -\tfrac12 I - S,\quad S_{nk} = \operatorname{sign}(n-k)\sqrt{(n+\tfrac12)(k+\tfrac12)} .$$
#
# $S$ is skew-symmetric, so $A^{(N)}$ is normal with eigenvalues $-\tfrac12 + i\omega_n$ and a
# unitary eigenvector matrix $V$. Conjugating by that $V$,
#
# $$A = V\big(\Lambda - \tilde P\tilde P^{*}\big)V^{*}, \qquad \tilde P = V^*P,$$
#
# turns the SSM $(A, B, C)$ into $(\Lambda - \tilde P\tilde P^*,\ V^*B,\ CV)$: **diagonal plus low
# rank** (DPLR), reached by a perfectly conditioned change of basis. `hippo.low_rank` gives $P$,
# `hippo.forms.nplr` the factorization.

# %%
N = 64
A, B = transition("legs", N)
P = low_rank("legs", N)[0]                                        # (N,), P_n = sqrt(n + 1/2)
A_N = A + torch.outer(P, P)                                       # the normal part


def non_normality(M):
    return float((M @ M.T - M.T @ M).norm() / M.norm() ** 2)


Lam, P_t, B_t, V = nplr("legs", N)                                # A = V (diag(Lam) - P_t^T conj(P_t)) V^*
A_back = V @ (torch.diag(Lam) - torch.outer(P_t[0], P_t[0].conj())) @ V.conj().T
checks = {
    "non-normality of A": non_normality(A),
    "non-normality of A + P P^T": non_normality(A_N),
    "|V^* V - I| (V unitary)": float((V.conj().T @ V - torch.eye(N)).abs().max()),
    "cond(V)": float(torch.linalg.cond(V)),
    "max |Re(Lambda) + 1/2|": float((Lam.real + 0.5).abs().max()),
    "|A - V(Lambda - P~P~^*)V^*| / |A|": rel(A_back, A.to(A_back.dtype)),
    "|V^* B - B~| / |B|": rel(V.conj().T @ B.to(V.dtype), B_t),
}
for name, value in checks.items():
    print(f"{name:36s} {value:.2e}")
assert checks["non-normality of A"] > 0.1 and checks["non-normality of A + P P^T"] < 1e-13
assert checks["|V^* V - I| (V unitary)"] < 1e-13 and abs(checks["cond(V)"] - 1) < 1e-12
assert checks["max |Re(Lambda) + 1/2|"] < 1e-12
assert checks["|A - V(Lambda - P~P~^*)V^*| / |A|"] < 1e-13 and checks["|V^* B - B~| / |B|"] < 1e-13

# %% [markdown]
# All $N$ eigenvalues of the normal part have real part exactly $-\tfrac12$ (Corollary 6.8); the
# rounding errors of this change of basis are at the level of $10^{-15}$, for any $N$. The price is
# the rank-1 term $\tilde P\tilde P^*$: $\Lambda - \tilde P\tilde P^*$ is not diagonal, so its
# powers are not elementwise powers and the Vandermonde trick of S4D does not apply.
#
# ## The kernel without powers: generating function, Woodbury, Cauchy (Algorithm 1)
#
# S4 never forms $\bar A^\ell$. It combines three identities (thesis app. C.1):
#
# 1. **Generating function at the roots of unity** (Lemma C.2, met in [part 3](03_laplace_fourier.md)):
#    $\hat K(z) = \tilde C(I - \bar A z)^{-1}\bar B$ with $\tilde C = C(I - \bar A^L)$, evaluated at
#    $z = \omega_k = e^{-2\pi i k/L}$, gives the DFT of $\bar K$; an inverse FFT returns the kernel.
# 2. **Bilinear resolvent** (Lemma C.4): for the bilinear rule,
#    $(I - \bar A z)^{-1}\bar B = \frac{2}{1+z}\,\big(g(z) - A\big)^{-1}B$ with
#    $g(z) = \frac{2}{\Delta}\frac{1-z}{1+z}$, so every node needs one resolvent of the
#    *continuous* $A = \Lambda - \tilde P\tilde P^*$.
# 3. **Woodbury identity** (Lemma C.3): with the diagonal $R(z) = (g(z) - \Lambda)^{-1}$,
#    $(g - \Lambda + \tilde P\tilde P^*)^{-1} = R - R\tilde P\,(1 + \tilde P^*R\tilde P)^{-1}\,\tilde P^*R$.
#
# Put together, in the eigenbasis ($c = \tilde CV$, $b = V^*B$, $p = \tilde P$):
#
# $$\hat K(\omega_k) = \frac{2}{1+\omega_k}\Big[k_{00} - \frac{k_{01}\,k_{10}}{1 + k_{11}}\Big],
# \qquad k_{00} = \sum_n \frac{c_n b_n}{g_k - \lambda_n},\ \ k_{01} = \sum_n \frac{c_n p_n}{g_k - \lambda_n},\ \
# k_{10} = \sum_n \frac{\bar p_n b_n}{g_k - \lambda_n},\ \ k_{11} = \sum_n \frac{\bar p_n p_n}{g_k - \lambda_n}.$$
#
# Each $k_{ab}$ is a product of the **Cauchy matrix** $M_{kn} = 1/(g_k - \lambda_n)$ with a vector
# (Definition C.5): $O(NL)$ work for all $L$ nodes, like S4D's Vandermonde product, and no power
# of a matrix anywhere except the single $\bar A^L$ in $\tilde C$ (which the layer computes by
# repeated squaring). We take $L$ odd here so that no node sits at $z = -1$, where $2/(1+z)$ and
# $g$ are infinite (the library evaluates that node by its finite limit,
# $\hat K(-1) = \tfrac{\Delta}{2}\tilde C B$).

# %%
C = torch.randn(N, generator=gen)
L = 999
dA, dB = bilinear(A, B, dt)
K_dense = power_kernel(dA, dB, C, L)                              # powers of the dense matrix

C_trunc = C @ (torch.eye(N) - torch.linalg.matrix_power(dA, L))  # step 1: C~ = C (I - dA^L)
c, b, p = C_trunc.to(V.dtype) @ V, B_t, P_t[0]                    # the eigenbasis of the normal part
omega = torch.exp(-2j * math.pi * torch.arange(L) / L)           # the L-th roots of unity
g = (2 / dt) * (1 - omega) / (1 + omega)                          # step 2: g(omega)
R = 1 / (g[:, None] - Lam[None, :])                               # (L, N) Cauchy matrix
k00, k01 = R @ (c * b), R @ (c * p)
k10, k11 = R @ (p.conj() * b), R @ (p.conj() * p)
K_hat = 2 / (1 + omega) * (k00 - k01 * k10 / (1 + k11))          # step 3: Woodbury
K_alg1 = torch.fft.ifft(K_hat)                                    # inverse DFT -> kernel

# the library's Cauchy product computes the four sums in one call, without storing the (L, N) matrix
sums = cauchy(torch.stack([c * b, c * p, p.conj() * b, p.conj() * p]), g, Lam)
err_cauchy = float((sums - torch.stack([k00, k01, k10, k11])).abs().max() / k00.abs().max())

# the library's kernel: the conjugate-symmetric half (N/2 modes) that S4 stores, even L allowed
Lam_h, P_h, B_h, V_h = dplr("legs", N)
C_h = C.to(V_h.dtype) @ V_h
err_lib = {}
for L_lib in (L, 1000):
    K_lib = dplr_kernel(Lam_h[None], P_h[:, None], B_h[None], C_h[None, None], torch.tensor([dt]), L_lib)[0, 0]
    err_lib[L_lib] = rel(K_lib, power_kernel(dA, dB, C, L_lib))

err_alg1 = rel(K_alg1.real, K_dense)
print(f"Algorithm 1 written out  vs dense powers: relative error {err_alg1:.1e} "
      f"(imaginary part {K_alg1.imag.abs().max():.1e})")
print(f"statespaces.kernels.cauchy vs the explicit sums: {err_cauchy:.1e}")
print(f"dplr_kernel (N/2 conjugate pairs) vs dense powers: L = 999: {err_lib[999]:.1e}, "
      f"L = 1000: {err_lib[1000]:.1e}")
assert err_alg1 < 1e-12 and K_alg1.imag.abs().max() < 1e-12 * K_dense.abs().max()
assert err_cauchy < 1e-12 and max(err_lib.values()) < 1e-12

fig, ax = plt.subplots(1, 2, figsize=(10, 3.3))
t = torch.arange(L) * dt
ax[0].plot(t, K_dense, color="k", lw=2.5, alpha=0.35, label="dense powers $C\\bar A^\\ell\\bar B$")
ax[0].plot(t, K_alg1.real, "--", color="C3", lw=1, label="Cauchy + Woodbury + iFFT")
ax[0].set(xlabel="time $\\ell\\Delta$", title=f"HiPPO-LegS kernel, N = {N}, random C")
ax[0].legend(fontsize=8)
ax[1].semilogy(t, (K_alg1.real - K_dense).abs() + 1e-30, color="C3", lw=0.8)
ax[1].set(xlabel="time $\\ell\\Delta$", title="absolute difference")
fig.tight_layout()

# %% [markdown]
# Both routes agree to rounding error at $N = 64$, where the diagonalization of the first section
# was off by more than ten orders of magnitude. The structure did all the work: a unitary change of basis (no
# error amplification), then a rank-1 correction handled exactly by Woodbury.
#
# The layer stores only half of the modes: the spectrum of the real matrix $A$ comes in conjugate
# pairs, so $N/2$ eigenvalues with positive imaginary part (`hippo.forms.dplr`) determine the rest.
# Unlike S4D, the kernel is then *not* $2\,\mathrm{Re}$ of an $N/2$-mode sum, because the low-rank
# term couples each mode with its conjugate; `dplr_kernel` sums the Cauchy products over all $N$
# poles (`cauchy(..., conj=True)`), and it handles even $L$ (the node $z = -1$) by the limit above.
#
# ## The S4 layer
#
# `statespaces.S4` learns $\Lambda$ (with $\mathrm{Re}\,\Lambda < 0$ enforced), $\tilde P$, $B$, $C$
# and $\Delta$ per channel, initialized from HiPPO-LegS as above (`init="legs"`; also `legt`,
# `fout`, `lagt`, `rand`). Its `kernel(L)` is Algorithm 1; its recurrent `step` is the bilinear
# step of thesis Theorem 3.5, whose two factors $I + \tfrac\Delta2 A$ and
# $(I - \tfrac\Delta2 A)^{-1}$ are again diagonal plus low rank (the inverse by Woodbury), so one
# step costs $O(N)$ too. The same three views as S4D in [part 4](04_three_views.md) must agree:

# %%
torch.manual_seed(0)
layer = S4(d_model=2, d_state=64, init="legs", seed=0)           # float64 here (the default dtype)
L = 256
dA_l, dB_l, C_l, _ = layer.dense_system()                         # the equivalent real (H, N, N) system
with torch.no_grad():
    K_layer = layer.kernel(L)                                     # Algorithm 1, (H, L)
    K_ref = power_kernel(dA_l, dB_l, C_l, L)
    x = torch.randn(1, L, 2)
    y_conv = layer(x)                                             # FFT convolution with K_layer (+ D u)
    state = layer.initial_state(1)
    y_step = []
    for k in range(L):                                            # O(N) per step, Theorem 3.5
        y_k, state = layer.step(x[:, k], state)
        y_step.append(y_k)
    y_step = torch.stack(y_step, 1)
err_kernel, err_step = rel(K_layer, K_ref), rel(y_step, y_conv)
print(f"S4 layer: kernel vs dense powers {err_kernel:.1e}; step-by-step vs convolution {err_step:.1e}")
assert err_kernel < 1e-10 and err_step < 1e-10

fig, ax = plt.subplots(figsize=(7, 3))
for h in range(2):
    ax.plot(K_layer[h], label=f"channel {h} (dt = {float(layer.log_dt.detach().exp()[h]):.3f})")
ax.set(xlabel="lag $\\ell$", title="kernels of an S4 layer at initialization (HiPPO-LegS)")
ax.legend(fontsize=8)
fig.tight_layout()

# %% [markdown]
# The two channels share the HiPPO state matrix and differ in their step size $\Delta$ (the same
# memory run at two timescales, part 4 and thesis §2.4.1) and in their random output vector $C$.
#
# **S4 or S4D?** S4D ([part 7](07_s4d_oscillators.md)) drops $\tilde P\tilde P^*$ and keeps the
# diagonal $\Lambda$ of the normal part ("S4D-LegS"); thesis Theorem 6.9 shows that this still
# approximates the same basis functions as $N\to\infty$, and in practice the two perform about the
# same (thesis ch. 7). S4D is simpler and allows any discretization (the exponential of a DPLR
# matrix is not DPLR, so S4 is restricted to the bilinear rule); S4 keeps the exact HiPPO operator.
# The measured costs and the numerics of the layer (float32 Woodbury near the imaginary axis, the
# truncation term $\tilde C$) are in the [S4 notes](../s4.md).
