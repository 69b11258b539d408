# %% [markdown]
# # 1. The harmonic oscillator
#
# *Explains: seed 002 ("The no nonsense guide to state-space models", section "Simple harmonic
# motion"), and the state-space form of thesis §2.2 (eq. 2.1). Next: [damping](02_damping.md).*
#
# Every model in this library is, at heart, a collection of oscillators. So we start with the
# simplest one: a mass $m$ on a spring with stiffness $k$, sliding without friction. Call the
# displacement from rest $x(t)$. Hooke's law gives a restoring force $-kx$ (the first term of a
# Taylor expansion of any smooth restoring force around equilibrium, so it is accurate for small
# displacements), and Newton's second law $F = m\ddot x$ turns that into
#
# $$\ddot x(t) = -\omega_0^2\, x(t), \qquad \omega_0 = \sqrt{k/m}.$$
#
# We need a function whose second derivative is minus a constant times itself. Sine and cosine do
# that, and so does any combination of them:
#
# $$x(t) = x_0 \cos(\omega_0 t) + \frac{v_0}{\omega_0}\sin(\omega_0 t),$$
#
# where the two constants are fixed by the initial position $x_0 = x(0)$ and initial velocity
# $v_0 = \dot x(0)$ (differentiate once and set $t = 0$ to check). The motion repeats with period
# $T = 2\pi/\omega_0$, whatever the initial conditions: the frequency is a property of the system,
# the amplitude and phase are properties of how we started it.

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import torch

torch.set_default_dtype(torch.float64)

k, m = 10.0, 250.0                       # spring constant and mass (the seed's running example)
w0 = math.sqrt(k / m)                    # natural angular frequency, rad per unit time
x0, v0 = 0.0, 1.0                        # start at rest position, pushed with unit velocity


def position(t):
    return x0 * np.cos(w0 * t) + v0 / w0 * np.sin(w0 * t)


def velocity(t):
    return -x0 * w0 * np.sin(w0 * t) + v0 * np.cos(w0 * t)


t = np.linspace(0, 3 * 2 * math.pi / w0, 600)   # three periods
print(f"omega_0 = {w0:.4f} rad/s, period T = {2 * math.pi / w0:.2f} s, amplitude = {math.hypot(x0, v0 / w0):.3f}")

fig, ax = plt.subplots(1, 2, figsize=(10, 3.2))
ax[0].plot(t, position(t), label="position x(t)")
ax[0].plot(t, -k * position(t) / 40, label="restoring force -k x(t) (scaled 1/40)", ls="--")
ax[0].set(xlabel="t", title="simple harmonic motion")
ax[0].legend(fontsize=8)
ax[1].plot(position(t), velocity(t))
ax[1].set(xlabel="x", ylabel="dx/dt", title="phase portrait: a closed ellipse")
ax[1].set_aspect("equal", adjustable="datalim")
fig.tight_layout()

# %% [markdown]
# The phase portrait (position against velocity) is a closed curve: the oscillator never loses
# anything. The conserved quantity is the energy $E = \tfrac12 m \dot x^2 + \tfrac12 k x^2$, which
# is exactly the equation of that ellipse.
#
# ## Complex exponentials: the eigenfunctions of time-derivatives
#
# The seed's guide stops here, just after trying the *ansatz* $x(t) = c\,e^{st}$. Let us finish
# that step. Every derivative of $e^{st}$ is a multiple of itself, $\frac{d}{dt} e^{st} = s\,e^{st}$,
# so plugging it in turns the differential equation into an algebraic one:
#
# $$s^2 + \omega_0^2 = 0 \quad\Longrightarrow\quad s = \pm i\omega_0 .$$
#
# The general solution is $x(t) = c_+ e^{i\omega_0 t} + c_- e^{-i\omega_0 t}$. For $x$ to be
# real the two coefficients must be complex conjugates, $c_- = \overline{c_+}$, so
# $x(t) = 2\,\mathrm{Re}(c_+ e^{i\omega_0 t})$. Matching the initial conditions gives
# $c_+ = \tfrac12 (x_0 - i v_0/\omega_0)$; expanding with Euler's formula
# $e^{i\theta} = \cos\theta + i\sin\theta$ gives back the sine/cosine solution above.
#
# Two facts from this little computation carry through the whole tutorial:
#
# 1. **A real oscillator is a conjugate pair of complex exponentials.** Its frequency is the
#    imaginary part of $s$. The S4D layer stores only one member of each pair and doubles the real
#    part (that is the "$2\,\mathrm{Re}$" in its kernel, thesis §3.4.5).
# 2. **Amplitude and phase live in one complex number** $c_+$: $|c_+|$ is half the amplitude and
#    $\arg c_+$ the phase.

# %%
c_plus = 0.5 * (x0 - 1j * v0 / w0)
x_from_exponentials = 2 * np.real(c_plus * np.exp(1j * w0 * t))
print("max |closed form - 2 Re(c e^{i w0 t})| =", np.abs(x_from_exponentials - position(t)).max())

# %% [markdown]
# ## The same oscillator as a first-order system
#
# A state space model (SSM) is a *first-order* linear ODE for a state vector (thesis §2.2, eq. 2.1; the
# skip term $Du$ is its Remark 2.1):
#
# $$x'(t) = A x(t) + B u(t), \qquad y(t) = C x(t) + D u(t).$$
#
# Any higher-order linear ODE fits this form if we put enough derivatives in the state. For the
# oscillator take the state $\big(x, \dot x\big)$; then
#
# $$\frac{d}{dt}\begin{pmatrix} x \\ \dot x\end{pmatrix} =
# \underbrace{\begin{pmatrix} 0 & 1 \\ -\omega_0^2 & 0\end{pmatrix}}_{A}
# \begin{pmatrix} x \\ \dot x\end{pmatrix}.$$
#
# With no input ($u = 0$) the solution is the matrix exponential, $\mathbf x(t) = e^{tA}\mathbf x(0)$,
# and the numbers $s$ we found above are now the **eigenvalues of $A$**. Let us check both claims with
# torch.

# %%
A = torch.tensor([[0.0, 1.0], [-w0**2, 0.0]])
print("eigenvalues of A:", torch.linalg.eigvals(A).numpy(), " (expected +-i*omega_0 =", f"+-{w0:.4f}i)")

state0 = torch.tensor([x0, v0])
ts = torch.linspace(0, 3 * 2 * math.pi / w0, 50)
traj = torch.stack([torch.linalg.matrix_exp(s * A) @ state0 for s in ts])      # (50, 2)
err = (traj[:, 0].numpy() - position(ts.numpy())).__abs__().max()
print(f"max |e^(tA) x(0) - closed form| over 3 periods = {err:.2e}")

fig, ax = plt.subplots(figsize=(7, 2.8))
ax.plot(t, position(t), color="0.6", lw=3, label="closed form")
ax.plot(ts, traj[:, 0], "o", ms=3, label="first component of $e^{tA}x(0)$")
ax.set(xlabel="t", ylabel="x(t)", title="matrix exponential = closed-form solution")
ax.legend(fontsize=8)
fig.tight_layout()

# %% [markdown]
# ## Summary
#
# * The frictionless oscillator $\ddot x = -\omega_0^2 x$ rings forever at frequency $\omega_0$.
# * Its solutions are sums of $e^{\pm i\omega_0 t}$; a real signal needs both members of the
#   conjugate pair.
# * Written as a first-order system $\mathbf x' = A\mathbf x$, the frequencies are the eigenvalues
#   of $A$ and the solution is $e^{tA}\mathbf x(0)$.
#
# Real systems lose energy. [Part 2](02_damping.md) adds friction and an input signal, which is
# where the eigenvalues leave the imaginary axis and where convolution appears.
