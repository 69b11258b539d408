# %% [markdown]
# # 2. Damping, forcing and the impulse response
#
# *Explains: the damped oscillator behind every S4D mode (seed 000, notes Part 6.2), the impulse
# response / convolution form of an SSM (thesis §2.2.1, Definition 2.7, eq. 2.2) and exact
# zero-order-hold discretization (thesis §2.3.1, eq. 2.4). Previous: [the harmonic
# oscillator](01_harmonic_oscillator.md); next: [the frequency domain](03_laplace_fourier.md).*
#
# ## Friction moves the eigenvalues to the left
#
# Add a friction force proportional to velocity. It is customary to write the result with the
# natural frequency $\omega_0$ and a dimensionless **damping ratio** $\zeta \ge 0$:
#
# $$\ddot x + 2\zeta\omega_0\,\dot x + \omega_0^2 x = 0 .$$
#
# The exponential ansatz $x = e^{st}$ now gives the *characteristic polynomial*
# $s^2 + 2\zeta\omega_0 s + \omega_0^2 = 0$ with roots
#
# $$s_\pm = -\zeta\omega_0 \pm i\,\omega_0\sqrt{1-\zeta^2}.$$
#
# * $0 < \zeta < 1$ (**underdamped**): a conjugate pair with real part $-\zeta\omega_0$. The motion
#   is a sinusoid at the *damped frequency* $\omega_d = \omega_0\sqrt{1-\zeta^2}$ inside an
#   envelope $e^{-\zeta\omega_0 t}$. Note $|s_\pm| = \omega_0$: the pair slides along a circle
#   of radius $\omega_0$ as the damping grows.
# * $\zeta = 1$ (**critically damped**): a double real root $-\omega_0$; fastest return without
#   overshoot.
# * $\zeta > 1$ (**overdamped**): two real negative roots; pure decay, no oscillation.
#
# Reading it backwards: a complex number $s$ with negative real part *is* a damped oscillator,
# with $\omega_0 = |s|$, $\zeta = -\mathrm{Re}\,s/|s|$ and $\omega_d = \mathrm{Im}\,s$.
# That dictionary is what `statespaces.analysis` applies to trained layers in
# [part 7](07_s4d_oscillators.md).

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import torch

from statespaces import discretize_dense

torch.set_default_dtype(torch.float64)
w0 = 1.0


def companion(w0, zeta):
    """State matrix of x'' + 2 zeta w0 x' + w0^2 x = u for the state (x, x')."""
    return torch.tensor([[0.0, 1.0], [-w0**2, -2 * zeta * w0]])


t = torch.linspace(0, 25, 500)
zetas = [0.0, 0.1, 0.3, 1.0, 2.0]
fig, ax = plt.subplots(1, 2, figsize=(11, 3.5))
for zeta in zetas:
    A = companion(w0, zeta)
    x = (torch.linalg.matrix_exp(t[:, None, None] * A) @ torch.tensor([1.0, 0.0]))[:, 0]   # e^{tA} x(0)
    ax[0].plot(t, x, label=f"zeta = {zeta}")
    ev = torch.linalg.eigvals(A)
    ax[1].plot(ev.real, ev.imag, "o", ms=6, label=f"zeta = {zeta}")
    print(f"zeta = {zeta:3.1f}: eigenvalues {np.round(ev.numpy(), 4)}")
circle = np.linspace(0, 2 * np.pi, 200)
ax[1].plot(w0 * np.cos(circle), w0 * np.sin(circle), color="0.8", lw=1, zorder=0)
ax[1].axvline(0, color="0.5", lw=0.8)
ax[0].set(xlabel="t", ylabel="x(t)", title="released from x = 1 at rest")
ax[1].set(xlabel="Re s", ylabel="Im s", title="eigenvalues of A (circle of radius $\\omega_0$)")
ax[1].set_aspect("equal")
ax[0].legend(fontsize=8)
fig.tight_layout()

# %% [markdown]
# ## Forcing: the response is a convolution
#
# Now push the mass with an external force $u(t)$ (per unit mass):
# $\ddot x + 2\zeta\omega_0\dot x + \omega_0^2 x = u(t)$. In state-space form this is
# $\mathbf x' = A\mathbf x + B u$ with $B = (0, 1)^\top$, and we read the position with
# $C = (1, 0)$.
#
# Because the system is **linear and time-invariant** (LTI), its response to any input is fixed by
# its response to a single sharp kick $u = \delta(t)$, the **impulse response** $K(t)$. A general
# input is a superposition of kicks $u(s)\,\delta(t-s)\,ds$, and each produces a shifted, scaled
# copy of $K$, so
#
# $$y(t) = \int_0^\infty K(s)\,u(t-s)\,ds = (K * u)(t), \qquad K(t) = C e^{tA} B .$$
#
# This is the convolution form of an SSM (thesis Definition 2.7). For the underdamped oscillator
# the integral has a closed form,
# $K(t) = e^{-\zeta\omega_0 t}\sin(\omega_d t)/\omega_d$ (a *Green's function*): a kick
# sets the mass ringing and the ringing decays.

# %%
zeta = 0.15
A = companion(w0, zeta)
B = torch.tensor([0.0, 1.0])
C = torch.tensor([1.0, 0.0])
wd = w0 * math.sqrt(1 - zeta**2)
K_matrix = C @ torch.linalg.matrix_exp(t[:, None, None] * A) @ B                # C e^{tA} B, all t at once
K_closed = torch.exp(-zeta * w0 * t) * torch.sin(wd * t) / wd
print(f"max |C e^(tA) B - closed-form Green's function| = {(K_matrix - K_closed).abs().max():.2e}")

# %% [markdown]
# ## Sampling the system exactly: zero-order hold
#
# On a computer we only see samples $u_k = u(k\Delta)$. If the input is held constant between
# samples, the state after one step is exactly $x_k = \bar A x_{k-1} + \bar B u_k$ with
# $\bar A = e^{\Delta A}$ and $\bar B = A^{-1}(e^{\Delta A} - I)B$: this is the **zero-order hold**
# (ZOH) rule of thesis eq. (2.4). `statespaces.discretize_dense` implements it (and the bilinear,
# Euler and GBT rules). Let us drive the oscillator with a rectangular pulse and compare the
# discrete recurrence against the continuous convolution integral, evaluated on a very fine grid.

# %%
dt = 0.25
L = 100
tk = torch.arange(L) * dt
u = ((tk >= 2.0) & (tk < 6.0)).double()                 # a pulse of length 4, held between samples

dA, dB = discretize_dense(A, B, dt, method="zoh")
x = torch.zeros(2)
y_rec = []
for k in range(L):
    x = dA @ x + dB * u[k]
    y_rec.append(C @ x)
y_rec = torch.stack(y_rec)

# the continuous convolution (K * u)(t), by the midpoint rule on a fine grid of step h whose
# cells never straddle a jump of the held input
fine = 40
h = dt / fine
tf = torch.arange(L * fine + 1) * h
mid = (torch.arange(L * fine) + 0.5) * h
K_mid = torch.exp(-zeta * w0 * mid) * torch.sin(wd * mid) / wd
u_mid = ((mid > 2.0 - dt) & (mid <= 6.0 - dt)).double()   # sample u_k acts during (t_{k-1}, t_k]
y_conv = torch.zeros(len(tf))
y_conv[1:] = torch.from_numpy(np.convolve(K_mid.numpy(), u_mid.numpy())[: L * fine]) * h
y_conv_at_samples = y_conv[::fine][:L]
print(f"ZOH recurrence vs continuous convolution: max diff {(y_rec - y_conv_at_samples).abs().max():.1e} "
      f"(the quadrature error of the fine grid: it shrinks like h^2)")

fig, ax = plt.subplots(figsize=(9, 3))
ax.plot(tf, y_conv, color="0.7", lw=3, label="continuous: (K * u)(t)")
ax.plot(tk, y_rec, ".", color="C3", label="discrete ZOH recurrence, every $\\Delta$")
ax.step(tk, u * 0.5, where="pre", color="C0", lw=1, label="input u (scaled)")
ax.set(xlabel="t", title="forced damped oscillator: kicked by a pulse, then ringing down")
ax.legend(fontsize=8)
fig.tight_layout()

# %% [markdown]
# ## Summary
#
# * Damping pushes the eigenvalues into the left half-plane: real part = decay rate, imaginary part
#   = oscillation frequency, modulus = natural frequency.
# * A forced LTI system is a convolution with its impulse response $K(t) = Ce^{tA}B$.
# * Zero-order hold turns the ODE into an exact recurrence for piecewise-constant inputs.
#
# [Part 3](03_laplace_fourier.md) looks at the same system through its frequencies.
