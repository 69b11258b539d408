# %% [markdown]
# # 8. LinOSS: forced oscillators, stabilized by the discretization
#
# *Explains: seed 001 (LinOSS, Rusch & Rus, ICLR 2025: the IM and IMEX schemes, their
# Proposition 3.1 on eigenvalues), with the corrections documented in the
# [LinOSS notes](../linoss.md) (the IM forcing term, and the IMEX stability bound the seed omits);
# the backward-Euler rule of thesis app. A.1. Previous: [S4D as oscillators](07_s4d_oscillators.md);
# next: [training](09_training.md).*
#
# S4D's oscillators are damped in continuous time. LinOSS goes back to part 1: $P$ **undamped**
# oscillators, driven by the input,
#
# $$y''(t) = -A\,y(t) + B\,u(t), \qquad \text{out}(t) = \mathrm{Re}\big(C\,y(t)\big) + D\,u(t),$$
#
# with a diagonal stiffness $A \ge 0$ (oscillator $p$ has natural frequency $\sqrt{A_p}$), and $B$,
# $C$ mixing the $H$ channels (LinOSS is multi-input multi-output, unlike S4D's independent
# channels). With velocity $z = y'$ the first-order state is $(z, y)$ and the continuous
# eigenvalues are $\pm i\sqrt{A_p}$: right on the imaginary axis, neither growing nor decaying.
# Whether the *discrete* recurrence decays or not is decided by the discretization, with step
# $\Delta$ per oscillator:
#
# * **IM** (implicit Euler; exactly the backward-Euler rule of thesis app. A.1 applied to the
#   first-order system): $\bar\lambda = S(1 \pm i\Delta\sqrt{A})$ with $S = 1/(1 + \Delta^2 A)$, so
#   $|\bar\lambda| = \sqrt S < 1$: the scheme adds damping, more for stiffer oscillators.
# * **IMEX** (symplectic Euler): $\det = 1$, $|\bar\lambda| = 1$ exactly, **but only while
#   $\Delta^2 A < 4$**. At $\Delta^2 A = 4$ the eigenvalue $-1$ is double, with a Jordan block (the response
#   grows linearly); beyond, the two eigenvalues become real with product 1, one of them larger than 1 in
#   modulus, and the recurrence explodes. The layer keeps $\Delta^2 A$ below 3.99
#   by construction.

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import torch

from statespaces import LinOSS
from statespaces.analysis import oscillators
from statespaces.kernels import oscillator_eigenvalues, oscillator_responses, oscillator_transition

torch.set_default_dtype(torch.float64)

A = torch.linspace(0.0, 1.0, 41)                   # stiffness values, as the paper's init U[0, 1]
circle = np.linspace(0, 2 * np.pi, 300)
fig, ax = plt.subplots(1, 3, figsize=(13, 4))
for a, scheme in zip(ax[:2], ("IM", "IMEX")):
    a.plot(np.cos(circle), np.sin(circle), color="0.7", lw=1)
    for i, dt in enumerate((0.25, 0.75, 1.5)):
        lam = oscillator_eigenvalues(A, torch.full_like(A, dt), scheme)      # one per oscillator
        a.scatter(lam.real, lam.imag, s=9, color=f"C{i}", label=f"$\\Delta$ = {dt}")
        a.scatter(lam.real, -lam.imag, s=9, color=f"C{i}", alpha=0.3)
    a.set_aspect("equal")
    a.set(title=f"LinOSS-{scheme} eigenvalues, A in [0, 1]", xlabel="Re", ylabel="Im")
    a.legend(fontsize=8, loc="lower left")

# IMEX past its bound: eigenvalues of the 2x2 transition for dt^2 A from 0 to 6
dt2A = torch.linspace(0.0, 6.0, 200)
M, _ = oscillator_transition(dt2A, torch.ones_like(dt2A), "IMEX", validate=False)   # dt = 1, A = dt2A
mods = []
for p in range(len(dt2A)):
    Mp = torch.tensor([[M[0, 0, p], M[0, 1, p]], [M[1, 0, p], M[1, 1, p]]])
    mods.append(torch.linalg.eigvals(Mp).abs().max())
lam_im = oscillator_eigenvalues(dt2A, torch.ones_like(dt2A), "IM").abs()
ax[2].plot(dt2A, torch.stack(mods), label="IMEX: max |eigenvalue|")
ax[2].plot(dt2A, lam_im, label="IM: |eigenvalue| = sqrt(S)")
ax[2].axvline(4.0, color="k", ls=":", lw=1)
ax[2].set(xlabel="$\\Delta^2 A$", ylabel="spectral radius", title="stability: IMEX only for $\\Delta^2 A \\leq 4$")
ax[2].legend(fontsize=8)
fig.tight_layout()

# %% [markdown]
# ## Impulse responses: the discrete Green's functions
#
# One oscillator's position after a unit kick has a closed form in both schemes,
# $\kappa_\ell \propto r^\ell \sin((\ell+1)\theta)$ with $\bar\lambda = r e^{\pm i\theta}$
# (`kernels.oscillator_responses`). As $\Delta \to 0$ both approach the continuous Green's
# function $\sin(\sqrt A\, t)/\sqrt A$ of the undamped oscillator (part 2 with $\zeta = 0$), scaled by
# $\Delta$. IM decays (numerical damping, roughly $e^{-\Delta A t/2}$), IMEX rings forever.

# %%
a_val, dt, L = 0.6, 0.5, 120
resp_im = oscillator_responses(torch.tensor([a_val]), torch.tensor([dt]), "IM", L)[1, 0]     # position
resp_imex = oscillator_responses(torch.tensor([a_val]), torch.tensor([dt]), "IMEX", L)[1, 0]
t = (torch.arange(L) + 1) * dt
green = torch.sin(math.sqrt(a_val) * t) / math.sqrt(a_val)
fig, ax = plt.subplots(figsize=(9, 3))
ax.plot(t, green, color="0.7", lw=3, label="continuous: sin($\\sqrt{A}$ t)/$\\sqrt{A}$")
ax.plot(t, resp_im / dt, label="IM / $\\Delta$ (damped)")
ax.plot(t, resp_imex / dt, "--", label="IMEX / $\\Delta$ (undamped)")
ax.set(xlabel="t", title=f"one oscillator, A = {a_val}, $\\Delta$ = {dt}")
ax.legend(fontsize=8)
fig.tight_layout()

# %% [markdown]
# ## The layer: four views that agree
#
# `LinOSS(d_model, n_oscillators)` has $P$ = `n_oscillators` oscillators shared by all channels
# (each with a velocity and a position: 2P complex state entries). Its forward
# pass can use a **parallel associative scan** over the 2×2 recurrences (`mode="scan"`, the paper's
# choice, $O(\log L)$ depth); it also offers a convolution with the closed-form Green's
# functions (`mode="conv"`), a chunked form (`mode="chunked"`), a plain loop (`mode="loop"`) and
# single steps. The default `mode="auto"` picks the fastest for the device (the chunked form on a
# CPU); below, each view is asked for by name.

# %%
layer = LinOSS(d_model=3, n_oscillators=8, discretization="IM", seed=0).double()
x = torch.randn(2, 256, 3)
with torch.no_grad():
    y_scan = layer(x, mode="scan")
    y_conv = layer(x, mode="conv")
    y_loop = layer(x, mode="loop")
    state = layer.initial_state(2)
    y_step = []
    for k in range(x.shape[1]):
        y_k, state = layer.step(x[:, k], state)
        y_step.append(y_k)
    y_step = torch.stack(y_step, 1)
for name, y in (("conv", y_conv), ("loop", y_loop), ("step", y_step)):
    print(f"scan vs {name}: {(y_scan - y).abs().max():.1e}")
print("kernel shape (H_out, H_in, L):", tuple(layer.kernel(64).shape))

# %% [markdown]
# ## The same analysis as S4D
#
# `statespaces.analysis.oscillators` handles LinOSS too. The *nominal* eigenvalues
# $i\sqrt{A_p}$ sit on the imaginary axis (undamped ODE); the *effective* ones of the IM layer have
# moved into the left half-plane, by an amount that grows with $\Delta^2 A$: that is the
# numerical damping. An IMEX layer stays on the axis.

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.6))
for i, scheme in enumerate(("IM", "IMEX")):
    lay = LinOSS(d_model=3, n_oscillators=32, discretization=scheme, seed=0).double()
    an = oscillators(lay)
    s = an.eig_continuous
    ax.scatter(s.real, s.imag, s=14, color=f"C{i}", label=f"{scheme}: effective log($\\lambda$)/$\\Delta$")
    print(f"{scheme:4s}: damping ratio in [{an.damping_ratio.min():.3f}, {an.damping_ratio.max():.3f}], "
          f"max |lambda| = {an.eig.abs().max():.6f}")
nominal = an.eig_nominal
ax.scatter(nominal.real, nominal.imag, s=30, facecolors="none", edgecolors="k", label="nominal $i\\sqrt{A}$")
ax.axvline(0, color="0.6", lw=0.8)
ax.set(xlabel="Re s", ylabel="Im s", title="LinOSS: where the discretization puts the oscillators")
ax.legend(fontsize=8)
fig.tight_layout()

# %% [markdown]
# ## Summary
#
# * LinOSS = undamped forced oscillators + a discretization that decides stability.
# * IM is backward Euler: always stable, adds damping $|\bar\lambda| = (1+\Delta^2A)^{-1/2}$.
# * IMEX is symplectic: $|\bar\lambda| = 1$ while $\Delta^2 A < 4$, unstable from 4 on (the layer
#   clamps the stiffness to stay inside).
# * Its kernel, analysis and views are the same machinery as S4D's; the details and the seed's
#   errors are in the [LinOSS notes](../linoss.md).
#
# [Part 9](09_training.md) trains these layers on a real task.
