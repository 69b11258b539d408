# %% [markdown]
# # 3. The frequency view: Laplace, Fourier and poles
#
# *Explains: the sections the seed 002 guide announces but never wrote ("Fourier transform",
# "Laplace transform"), told in our own words; the transfer function of an SSM (thesis app. E.4.4,
# Theorem 5.14 uses it for LegT) and the SSM generating function that S4 evaluates at roots of
# unity (thesis app. C.1, Definition C.1, Lemma C.2). Previous: [damping](02_damping.md); next:
# [three views of an SSM](04_three_views.md).*
#
# ## From a differential equation to a fraction
#
# The **Laplace transform** $\hat f(s) = \int_0^\infty f(t) e^{-st} dt$ turns differentiation into
# multiplication: $\widehat{\dot f}(s) = s\hat f(s) - f(0)$. Starting from rest, the forced
# oscillator $\ddot x + 2\zeta\omega_0 \dot x + \omega_0^2 x = u$ becomes
#
# $$(s^2 + 2\zeta\omega_0 s + \omega_0^2)\,\hat x(s) = \hat u(s)
# \quad\Longrightarrow\quad
# \hat x(s) = H(s)\,\hat u(s), \qquad H(s) = \frac{1}{s^2 + 2\zeta\omega_0 s + \omega_0^2}.$$
#
# $H$ is the **transfer function**. Convolution in time became multiplication by $H$, and indeed
# $H$ is the Laplace transform of the impulse response $K$ of [part 2](02_damping.md).
# For a general SSM $x' = Ax + Bu$, $y = Cx + Du$, the same computation gives
#
# $$H(s) = C(sI - A)^{-1}B + D .$$
#
# $(sI - A)^{-1}$ blows up exactly when $s$ is an eigenvalue of $A$: **the poles of the transfer
# function are the eigenvalues of the state matrix.** For the oscillator these are the roots
# $s_\pm$ we met in part 2. Let us verify both formulas numerically.

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import torch

from statespaces import discretize_dense
from statespaces.kernels import power_kernel, recurrence

torch.set_default_dtype(torch.float64)

w0, zeta = 1.0, 0.15
A = torch.tensor([[0.0, 1.0], [-w0**2, -2 * zeta * w0]], dtype=torch.complex128)
B = torch.tensor([0.0, 1.0], dtype=torch.complex128)
C = torch.tensor([1.0, 0.0], dtype=torch.complex128)


def H_state_space(s):
    """C (sI - A)^{-1} B for a batch of complex s."""
    eye = torch.eye(2, dtype=torch.complex128)
    return torch.stack([C @ torch.linalg.solve(si * eye - A, B) for si in s])


def H_polynomial(s):
    return 1.0 / (s**2 + 2 * zeta * w0 * s + w0**2)


s_test = torch.tensor([0.3 + 0.2j, -0.5 + 2j, 1.7j], dtype=torch.complex128)
print("C(sI-A)^-1 B      :", np.round(H_state_space(s_test).numpy(), 6))
print("1/(s^2+2z w0 s+w0^2):", np.round(H_polynomial(s_test).numpy(), 6))
print("eigenvalues of A (= poles):", np.round(torch.linalg.eigvals(A).numpy(), 6))

# %% [markdown]
# ## The frequency response is the Fourier transform of the kernel
#
# On the imaginary axis $s = i\omega$ the Laplace transform becomes the **Fourier transform**, and
# $H(i\omega)$ is the **frequency response**: feed in $\sin(\omega t)$ and, once the transient has
# died out, you get a sinusoid of the same frequency, scaled by $|H(i\omega)|$ and shifted by
# $\arg H(i\omega)$. (That is the whole reason complex exponentials are so useful: an LTI system
# can only rescale them.) A lightly damped oscillator **resonates**: the gain peaks near
# $\omega_0$, and the peak gets higher and narrower as $\zeta \to 0$, because the pole comes
# closer to the imaginary axis.
#
# Below: the magnitude for several damping ratios, and a check of the sinusoid claim by
# simulating the oscillator (exact ZOH recurrence from part 2) driven at three frequencies.

# %%
w = torch.linspace(0.01, 3, 600)
fig, ax = plt.subplots(1, 2, figsize=(11, 3.5))
for z in (0.05, 0.15, 0.4, 1.0):
    Hz = 1.0 / ((1j * w) ** 2 + 2 * z * w0 * (1j * w) + w0**2)
    ax[0].semilogy(w, Hz.abs(), label=f"zeta = {z}")
ax[0].set(xlabel="input frequency $\\omega$", ylabel="$|H(i\\omega)|$", title="gain: resonance near $\\omega_0$ = 1")
ax[0].legend(fontsize=8)

dt, L = 0.05, 4000
dA, dB = discretize_dense(A.real, B.real, dt, method="zoh")
for i, w_in in enumerate((0.5, 1.0, 2.0)):
    t = torch.arange(L) * dt
    u = torch.sin(w_in * t)
    # kernels.recurrence runs x_k = dA x_{k-1} + dB u_k, y_k = C x_k for H channels:
    # dA (H, N, N), dB (H, N), C (H, N), u (batch, L, H); here H = 1, batch = 1
    y, _ = recurrence(dA[None], dB[None], C.real[None], u[None, :, None])      # (1, L, 1)
    y = y[0, :, 0]
    measured = y[L // 2:].abs().max().item()                                   # steady-state amplitude
    predicted = H_polynomial(torch.tensor(1j * w_in)).abs().item()
    print(f"input sin({w_in} t): steady-state amplitude {measured:.4f}, |H(i w)| = {predicted:.4f}")
    ax[1].plot(t[:1200], y[:1200], lw=1, label=f"$\\omega$ = {w_in}", color=f"C{i}")
ax[1].set(xlabel="t", title="response to sin($\\omega$ t): transient, then steady state")
ax[1].legend(fontsize=8)
fig.tight_layout()

# %% [markdown]
# ## The discrete world: z-transform, unit circle, generating function
#
# After discretization the system is the recurrence $x_k = \bar A x_{k-1} + \bar B u_k$ and its
# kernel is the sequence $\bar K_\ell = C\bar A^\ell \bar B$. The discrete analogue of the Laplace
# transform is the **z-transform**; the thesis (app. C.1) writes it in powers of $z$ rather than the
# usual $z^{-1}$ and calls it the *SSM generating function*, and we follow the thesis:
#
# $$\hat K(z) = \sum_{\ell \ge 0} \bar K_\ell\, z^\ell = C (I - \bar A z)^{-1} \bar B .$$
#
# Its poles sit at $z = 1/\bar\lambda$ for the eigenvalues $\bar\lambda$ of $\bar A$ (in the usual
# convention, $\sum_\ell \bar K_\ell z^{-\ell}$, the poles are the $\bar\lambda$ themselves). With ZOH,
# $\bar\lambda = e^{\Delta s}$: the left half-plane (stable, decaying) is mapped inside the unit
# circle, the imaginary axis (undamped) onto it. The discrete frequency response is $\hat K$ on
# the unit circle, $z = e^{-i\omega}$, which is just the Fourier transform of the kernel sequence.
#
# This is also how S4 computes long kernels (thesis Lemma C.2). Truncated to $L$ terms, the
# generating function is
# $\hat K_L(z) = C(I - \bar A^L z^L)(I - \bar A z)^{-1}\bar B$; at the $L$-th roots of unity
# $z^L = 1$, so $\hat K_L$ needs one matrix *inverse* per node instead of $L$ matrix *powers*, and
# an inverse FFT of the $L$ values returns the kernel. The library's `power_kernel` is the
# literal definition $(C\bar B, C\bar A\bar B, \dots)$; let us check that the two agree.

# %%
dt, L = 0.5, 64
dA, dB = discretize_dense(A, B, dt, method="zoh")
K_powers = power_kernel(dA, dB, C, L)                       # (L,) by explicit powers, eq. (2.8)

nodes = torch.exp(-2j * math.pi * torch.arange(L) / L)      # roots of unity, Lemma C.2 convention
eye = torch.eye(2, dtype=torch.complex128)
C_tilde = C @ (eye - torch.linalg.matrix_power(dA, L))      # C (I - A^L): truncation to L terms
K_hat = torch.stack([C_tilde @ torch.linalg.solve(eye - dA * z, dB) for z in nodes])
K_fft = torch.fft.ifft(K_hat)                               # kernel = inverse DFT of the spectrum
print(f"max |ifft(generating function at roots of unity) - powers| = {(K_fft - K_powers).abs().max():.2e}")

lam = torch.linalg.eigvals(dA)
fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
circle = np.linspace(0, 2 * np.pi, 300)
ax[0].plot(np.cos(circle), np.sin(circle), color="0.7", lw=1)
ax[0].plot(lam.real, lam.imag, "x", ms=9, mew=2, label="eigenvalues of $\\bar A$ = exp($\\Delta s_\\pm$)")
ax[0].set_aspect("equal")
ax[0].set(title="eigenvalues of $\\bar A$: inside the unit circle", xlabel="Re", ylabel="Im")
ax[0].legend(fontsize=8, loc="lower left")
omega = torch.linspace(0, math.pi, 400)
H_disc = torch.stack([C @ torch.linalg.solve(eye - dA * torch.exp(-1j * om), dB) for om in omega])
ax[1].semilogy(omega / dt, H_disc.abs(), label="$|\\hat K(e^{-i\\omega})|$ (discrete, ZOH)")
ax[1].semilogy(omega / dt, H_polynomial(1j * omega / dt).abs(), "--", label="$|H(i\\omega)|$ (continuous)")
ax[1].set(xlabel="frequency (rad per unit time)", title="discrete vs continuous response")
ax[1].legend(fontsize=8)
fig.tight_layout()

# %% [markdown]
# The discrete frequency $\omega$ (radians per *step*) corresponds to $\omega/\Delta$ radians per
# unit of time. Up to the Nyquist frequency $\pi/\Delta$ the discrete response follows the
# continuous one (no extra factor: ZOH's $\bar B \approx \Delta B$ turns the kernel's sum into the
# integral's Riemann sum); towards Nyquist the two part ways, because sampling folds frequencies
# above $\pi/\Delta$ back into the band (*aliasing*) and the zero-order hold filters the input.
#
# ## Summary
#
# | continuous time | discrete time |
# |---|---|
# | $H(s) = C(sI-A)^{-1}B + D$ | $\hat K(z) = C(I-\bar A z)^{-1}\bar B$ (+ $D$) |
# | poles = eigenvalues $s$ of $A$ | poles at $1/\bar\lambda$, $\bar\lambda = e^{\Delta s}$ (ZOH) |
# | stable: $\mathrm{Re}\, s < 0$ | stable: $\lvert\bar\lambda\rvert < 1$ |
# | frequency response $H(i\omega)$ | $\hat K(e^{-i\omega})$ = DFT of the kernel |
#
# The S4 family lives in this picture: an SSM layer *is* a transfer function with $N$ poles
# per channel, and training moves the poles. [Part 4](04_three_views.md) builds a general SSM
# and computes it three ways.
