# %% [markdown]
# # 4. One SSM, three views: continuous, recurrent, convolutional
#
# *Explains: thesis §2.2 (eq. 2.1), §2.3.1-2.3.3 (discretization, recurrence eq. 2.5, kernel
# eq. 2.7-2.8, Figure 2.1), §2.4.1 (Δ as a timescale, sampling-rate change), §3.2 (the diagonal
# S4D kernel, eq. 3.2). Previous: [the frequency view](03_laplace_fourier.md); next:
# [HiPPO](05_hippo.md).*
#
# So far the state had two entries. A **state space model** lets it have $N$:
#
# $$x'(t) = A x(t) + B u(t), \qquad y(t) = C x(t) + D u(t),
# \qquad A \in \mathbb R^{N\times N},\ B \in \mathbb R^{N},\ C \in \mathbb R^{1\times N}.$$
#
# A sequence model built on it maps an input sequence $u_0, u_1, \dots$ to an output sequence, and
# the thesis' central observation (Figure 2.1) is that the *same* map can be computed in three
# ways, each good at something different:
#
# | view | formula | good for |
# |---|---|---|
# | continuous | ODE with step size $\Delta$ | irregular or resampled data, changing the rate |
# | recurrent | $x_k = \bar A x_{k-1} + \bar B u_k$, $y_k = C x_k + D u_k$ | generation / online inference, $O(N)$ or $O(N^2)$ per step |
# | convolutional | $y = \bar K * u + D u$, $\bar K_\ell = C \bar A^\ell \bar B$ | parallel training with the FFT |
#
# We first do it by hand with the library's reference functions, on a small random SSM, and then
# show that an `S4D` layer exposes exactly these three views.

# %%
import matplotlib.pyplot as plt
import torch

from statespaces import S4D, discretize_dense, discretize_diagonal
from statespaces.kernels import direct_causal_conv, power_kernel, recurrence
from statespaces.ops import fftconv

torch.set_default_dtype(torch.float64)
torch.manual_seed(0)

N, L = 6, 200
M = torch.randn(N, N) / N**0.5
A = M - (torch.linalg.eigvals(M).real.max() + 0.2) * torch.eye(N)       # shift: all Re(eig) <= -0.2
B, C = torch.randn(N), torch.randn(N)
print("eigenvalues of A:", torch.linalg.eigvals(A).numpy().round(3))

# %% [markdown]
# ## 1. The continuous view and discretization
#
# The continuous system has the impulse response $K(t) = Ce^{tA}B$. To apply it to samples spaced
# $\Delta$ apart we *discretize*: a rule turns $(\Delta, A, B)$ into $(\bar A, \bar B)$. The two
# rules the thesis uses (eq. 2.4) are zero-order hold, $\bar A = e^{\Delta A}$, and the bilinear
# (Tustin) rule, $\bar A = (I - \Delta A/2)^{-1}(I + \Delta A/2)$. Both are in
# `statespaces.discretize` (with forward/backward Euler and the generalized bilinear transform,
# app. A.1). ZOH is exact for inputs held constant over each step, and its kernel entry
# $\bar K_\ell = C\bar A^\ell\bar B$ is exactly the integral of $K$ over one step,
# $\int_{\ell\Delta}^{(\ell+1)\Delta} K(s)\,ds \approx \Delta\, K\big((\ell+\tfrac12)\Delta\big)$.

# %%
dt = 0.1
dA, dB = discretize_dense(A, B, dt, method="zoh")
dA_bil, dB_bil = discretize_dense(A, B, dt, method="bilinear")
t = torch.arange(L) * dt
K_cont = C @ torch.linalg.matrix_exp(t[:, None, None] * A) @ B           # continuous kernel K(t)
K_zoh = power_kernel(dA, dB, C, L)                                       # discrete kernel, eq. (2.8)
K_bil = power_kernel(dA_bil, dB_bil, C, L)
K_mid = C @ torch.linalg.matrix_exp((t[:, None, None] + dt / 2) * A) @ B    # K((l + 1/2) dt)
print(f"max |K_zoh / dt - K((l+1/2) dt)| / max|K| = {(K_zoh / dt - K_mid).abs().max() / K_cont.abs().max():.1e}")
print(f"max |K_bilinear - K_zoh| / max|K| = {(K_bil - K_zoh).abs().max() / K_zoh.abs().max():.2e}")

fig, ax = plt.subplots(figsize=(8, 3))
ax.plot(t, K_cont, color="0.7", lw=3, label="continuous $K(t) = Ce^{tA}B$")
ax.plot(t, K_zoh / dt, "--", label="ZOH kernel / $\\Delta$")
ax.plot(t, K_bil / dt, ":", label="bilinear kernel / $\\Delta$")
ax.set(xlabel="t", title="impulse response of a random 6-dimensional SSM")
ax.legend(fontsize=8)
fig.tight_layout()

# %% [markdown]
# ## 2. The recurrent view and 3. the convolutional view
#
# Unrolling the recurrence from $x_{-1} = 0$ gives
# $y_k = \sum_{j \le k} C\bar A^{k-j}\bar B\, u_j$ (thesis eq. 2.6): a causal convolution with the
# kernel $\bar K$. `kernels.recurrence` runs the loop step by step; the convolution can be done
# literally (`kernels.direct_causal_conv`, $O(L^2)$) or with the FFT (`ops.fftconv`,
# $O(L\log L)$; pad to $2L$ so that the circular FFT convolution becomes a causal one).

# %%
u = torch.randn(2, L, 1)                                        # (batch, length, channels)
y_rec, x_last = recurrence(dA[None], dB[None], C[None], u)      # recurrent view
y_direct = direct_causal_conv(u, K_zoh[None])                   # convolution, by definition
y_fft = fftconv(u, K_zoh[None])                                 # convolution, by FFT
print(f"recurrence vs direct convolution: {(y_rec - y_direct).abs().max():.1e}")
print(f"recurrence vs FFT convolution:    {(y_rec - y_fft).abs().max():.1e}")

# %% [markdown]
# ## The continuous view pays off: changing the sampling rate
#
# Because the model is an ODE, the step size is a knob. Sample the same held signal twice as
# often and halve $\Delta$: with ZOH the state at the shared time points is *identical*
# (thesis §2.4.1: "up to discretization error; the equality is exact for ZOH").

# %%
u1 = torch.randn(1, 50, 1)                                     # a signal, one sample per 2*dt
u2 = u1.repeat_interleave(2, dim=1)                            # the same signal sampled every dt
dA2, dB2 = discretize_dense(A, B, 2 * dt, method="zoh")
y1, _ = recurrence(dA2[None], dB2[None], C[None], u1)          # coarse: step 2*dt
y2, _ = recurrence(dA[None], dB[None], C[None], u2)            # fine: step dt
print(f"coarse output vs every second fine output: {(y1 - y2[:, 1::2]).abs().max():.1e}")

# %% [markdown]
# ## The same three views on an S4D layer
#
# An S4D layer (thesis §3.2) is $H$ independent copies of this construction, one per channel,
# with a **diagonal** complex $A$: then $\bar A^\ell$ is just elementwise powers and the kernel is
# a Vandermonde product (eq. 3.2),
# $\bar K_\ell = 2\,\mathrm{Re}\sum_{n} C_n \bar B_n \bar\lambda_n^{\ell}$, with $N/2$ complex
# modes standing for $N/2$ conjugate pairs (recall part 1: a real oscillator is a conjugate pair).
# The layer exposes the three views directly:
#
# * `layer(x)`: convolution view, $x$ of shape (batch, length, H); `layer.kernel(L)` is the kernel;
# * `layer.initial_state(B)` and `layer.step(x_t, state)`: recurrent view;
# * `layer(x, rate=r)`: continuous view, the step size multiplied by $r$.
#
# We check each against the others, and against the dense reference functions used above.

# %%
H, N_state, L = 3, 16, 256
layer = S4D(d_model=H, d_state=N_state, init="legs", discretization="zoh", seed=0).double()
x = torch.randn(2, L, H)

y_conv = layer(x)                                              # convolution view
state = layer.initial_state(2)
y_step = []
for k in range(L):                                             # recurrent view
    y_k, state = layer.step(x[:, k], state)
    y_step.append(y_k)
y_step = torch.stack(y_step, 1)
print(f"S4D convolution vs step-by-step recurrence: {(y_conv - y_step).abs().max():.1e}")

# the layer's own discretization is discretize_diagonal on its eigenvalues
with torch.no_grad():
    lam = layer.continuous_A()                                 # (H, N/2) complex
    Bc = torch.view_as_complex(layer.B)
    Cc = torch.view_as_complex(layer.C)[0]
    dtv = torch.exp(layer.log_dt)
    dA_d, dB_d = discretize_diagonal(lam, Bc, dtv, method="zoh")
    # channel 0 as a dense 16-dimensional system: the modes and their conjugates
    h = 0
    dA_full = torch.diag(torch.cat([dA_d[h], dA_d[h].conj()]))
    dB_full = torch.cat([dB_d[h], dB_d[h].conj()])
    C_full = torch.cat([Cc[h], Cc[h].conj()])
    K_ref = power_kernel(dA_full, dB_full, C_full, L).real
    K_layer = layer.kernel(L)
print(f"layer.kernel vs power_kernel of the dense equivalent: {(K_layer[h] - K_ref).abs().max():.1e}")

# %% [markdown]
# And the continuous view: feed the layer a signal at half the sampling rate together with
# `rate=2.0` (every step now covers twice the time) and it reproduces, at the shared time points,
# what it computes on the full-rate signal.

# %%
x_coarse = torch.randn(1, 128, H)
x_fine = x_coarse.repeat_interleave(2, dim=1)
with torch.no_grad():
    y_fine = layer(x_fine)
    y_coarse = layer(x_coarse, rate=2.0)
print(f"layer(x_coarse, rate=2) vs layer(x_fine)[1::2]: {(y_coarse - y_fine[:, 1::2]).abs().max():.1e}")

fig, ax = plt.subplots(1, 2, figsize=(11, 3.2))
for c in range(H):
    ax[0].plot(K_layer[c].detach(), label=f"channel {c}, $\\Delta$ = {dtv[c]:.3g}")
ax[0].set(xlabel="lag $\\ell$", title="S4D-LegS kernels: one per channel")
ax[0].legend(fontsize=8)
ax[1].plot(torch.arange(256), y_fine[0, :, 0], lw=1, label="full rate")
ax[1].plot(torch.arange(1, 256, 2), y_coarse[0, :, 0], ".", ms=4, label="half rate, rate=2.0")
ax[1].set(xlabel="fine time step", title="same continuous system, two sampling rates")
ax[1].legend(fontsize=8)
fig.tight_layout()

# %% [markdown]
# Chunked processing is the recurrent view at the granularity of blocks:
# `y, state = layer(x_chunk, state=state, return_state=True)` continues where the last chunk
# stopped (used for long-sequence generation, see the [generation notes](../generation.md)).

# %%
with torch.no_grad():
    y_a, st = layer(x[:, :100], return_state=True)
    y_b = layer(x[:, 100:], state=st)
print(f"two chunks vs one pass: {(torch.cat([y_a, y_b], 1) - y_conv).abs().max():.1e}")

# %% [markdown]
# ## Summary
#
# * Discretize once (`discretize_dense` / `discretize_diagonal`), then compute either by
#   recurrence (`kernels.recurrence`, `layer.step`) or by convolution (`kernels.power_kernel`,
#   `ops.fftconv`, `layer.kernel`, `layer(x)`): the outputs agree to rounding error.
# * The step size is a parameter of a continuous system; `rate` changes it at inference.
#
# Which $A$ should we choose? [Part 5](05_hippo.md) derives one from a memory problem.
