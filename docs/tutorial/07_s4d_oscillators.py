# %% [markdown]
# # 7. S4D as a bank of damped oscillators
#
# *Explains: seed 000 (the "explicit operator": a diagonal SSM as a network of damped
# oscillators, with the corrections in the [LinOSS/oscillator notes](../linoss.md)), thesis §3.2
# (S4D, eq. 3.2), §3.4.5 (conjugate symmetry) and §6.3 (S4D initializations, Table 6.1).
# Previous: [S4](06_s4_dplr.md); next: [LinOSS](08_linoss.md).*
#
# Put parts 1-5 together. An S4D channel is a diagonal SSM whose $N/2$ complex eigenvalues
# $s_n$ each stand for a conjugate pair, and a conjugate pair with $\mathrm{Re}\,s_n < 0$ *is* a
# damped oscillator (part 2). After discretization with step $\Delta$ the channel's kernel is
#
# $$\bar K_\ell = \sum_{n} 2\,\mathrm{Re}\big(c_n \bar\lambda_n^{\ell}\big), \qquad
# \bar\lambda_n = e^{\Delta s_n}\ (\text{ZOH}),\quad c_n = C_n \bar B_n ,$$
#
# a sum of sampled damped sinusoids $|2c_n|\, e^{-\zeta_n\omega_n t}\cos(\omega_{d,n} t + \arg c_n)$
# at $t = \ell\Delta$. Everything about the layer's linear map is in the list of
# $(\bar\lambda_n, c_n)$ plus the skip $D$. `statespaces.analysis.oscillators(layer)` extracts
# that list from any S4D or LinOSS layer (trained or not) and translates it into physics:
# natural frequency $\omega_0 = |s|$, damping ratio $\zeta = -\mathrm{Re}\,s/|s|$, damped frequency
# $\mathrm{Im}\,s$, decay time $-1/\mathrm{Re}\,s$, amplitude and phase.
#
# ## Where the initializations put the oscillators
#
# S4D's initializations (thesis Table 6.1) all use damping rate $\tfrac12$ and differ in how they
# spread the frequencies: **LegS** (part 5: eigenvalues of the normal HiPPO matrix), **Inv**
# (a closed-form fit of LegS, eq. 6.5), **Lin** ($s_n = -\tfrac12 + i\pi n$: a damped Fourier basis,
# eq. 6.6). **Real** ($s_n = -(n+1)$) has no oscillation at all, and the thesis finds it trains
# much worse (Table 7.12).

# %%
import os

import matplotlib.pyplot as plt
import torch

from statespaces import S4D
from statespaces.analysis import green_kernel, oscillators, plot_eigenvalues, s4d_from_oscillators

torch.set_default_dtype(torch.float64)
FIGURES = os.environ.get("STATESPACES_DOCS_FIGURES", "build/docs/figures")   # set by docs/build.py
os.makedirs(FIGURES, exist_ok=True)

fig, ax = plt.subplots(figsize=(7, 3.5))
for i, init in enumerate(("legs", "inv", "lin", "real")):
    s = S4D(d_model=1, d_state=32, init=init).continuous_A().detach()[0]
    ax.scatter(s.real, s.imag.clamp_min(0) + 0.1, s=14, label=init, marker="os^x"[i])
ax.set_yscale("log")
ax.set(xlabel="Re s  (minus decay rate)", ylabel="Im s + 0.1  (frequency)",
       title="continuous eigenvalues of the S4D initializations (N = 32: 16 complex modes; real: 32 real)")
ax.legend(fontsize=8)
fig.tight_layout()

# %% [markdown]
# ## The oscillators of one layer
#
# Take a small layer, 2 channels with 8 modes each, and analyze it. `plot_eigenvalues` draws the
# discrete eigenvalues (inside the unit circle: stable) and the continuous ones; the two views
# differ only by the map $\bar\lambda = e^{\Delta s}$, whose $\Delta$ differs per channel.

# %%
layer = S4D(d_model=2, d_state=16, init="legs", dt_min=0.01, dt_max=0.1, seed=1).double()
an = oscillators(layer, name="demo")
plot_eigenvalues(an, os.path.join(FIGURES, "06_demo_eigenvalues.png"))

rows = sorted(an.table(), key=lambda r: -r["amplitude"])
print(f"{'ch':>2} {'mode':>4} {'w0 (rad/t)':>11} {'zeta':>7} {'w_d':>9} {'decay t':>8} {'amplitude':>9}")
for r in rows[:8]:
    print(f"{r['channel']:>2} {r['mode']:>4} {r['natural_frequency']:11.2f} {r['damping_ratio']:7.4f} "
          f"{r['damped_frequency']:9.2f} {r['decay_time']:8.2f} {r['amplitude']:9.4f}")

# %% [markdown]
# The "time" in these units is the one $\Delta$ is measured in: one step of the sequence is
# $\Delta$ time units, so a mode with damped frequency $\omega_d$ turns by $\omega_d\Delta$ radians
# per step and its envelope lasts about $1/(\zeta\omega_0\Delta)$ steps.
#
# ## Per-mode kernels add up to the layer's kernel
#
# Each mode contributes one damped sinusoid, $2\,\mathrm{Re}(c_n\bar\lambda_n^\ell)$
# (`analysis.green_kernel` evaluates it). Their sum is exactly `layer.kernel(L)`.

# %%
L, h = 300, 0
modes = [green_kernel(an.log_eig[h, m:m + 1], an.residue[h, m:m + 1], L) for m in range(an.log_eig.shape[1])]
total = torch.stack(modes).sum(0)
K = layer.kernel(L)[h].detach()
print(f"sum of the {len(modes)} mode kernels vs layer.kernel: max diff {(total - K).abs().max():.1e}")

fig, ax = plt.subplots(1, 2, figsize=(12, 3.6))
order = torch.argsort(an.log_eig[h].imag.abs())                     # slowest first
for j, m in enumerate(order.tolist()):
    ax[0].plot(modes[m] - 0.6 * j * float(K.abs().max()), lw=1)
ax[0].set(xlabel="lag $\\ell$", yticks=[], title=f"channel {h}: the {len(modes)} damped oscillators (offset)")
ax[1].plot(K, color="k", lw=2.5, label="layer.kernel(L)")
ax[1].plot(total, "--", color="C3", label="sum of the oscillators")
ax[1].set(xlabel="lag $\\ell$", title="their sum is the kernel")
ax[1].legend(fontsize=8)
fig.tight_layout()

# %% [markdown]
# ## The explicit operator and the frequency response
#
# With the list of oscillators the layer can be applied without the layer:
# `an.apply(u)` computes $y = \bar K * u + D u$ by direct sums, a slow but transparent reference.
# `an.frequency_response()` evaluates $D + \sum_\ell \bar K_\ell e^{-i\omega\ell}$, the discrete
# transfer function of part 3 on the unit circle: each oscillator adds a resonance bump.

# %%
u = torch.randn(2, 200, 2)
with torch.no_grad():
    y_layer = layer(u)
print(f"explicit operator vs layer forward: {(an.apply(u) - y_layer).abs().max():.1e}")

w, Hf = an.frequency_response(L=2048)
fig, ax = plt.subplots(figsize=(7, 3))
for c in range(2):
    ax.semilogx(w[1:], 20 * torch.log10(Hf[c, 1:].abs()), label=f"channel {c}")
ax.set(xlabel="frequency (rad per step)", ylabel="gain (dB)", title="frequency response of the layer")
ax.legend(fontsize=8)
fig.tight_layout()

# %% [markdown]
# ## Back again: an S4D layer from a list of oscillators
#
# The map is invertible: `s4d_from_oscillators` builds an S4D layer with a prescribed set of
# oscillators. Round-tripping the demo layer returns the same kernel; and we can also design a
# filter by hand, here a channel with two resonances.

# %%
rebuilt = s4d_from_oscillators(an.to_oscillators(), dtype=torch.float64, D=layer.D.detach())
print(f"round trip: kernel difference {(rebuilt.kernel(L) - layer.kernel(L)).abs().max():.1e}")

from statespaces.analysis import Oscillator

designed = s4d_from_oscillators(
    [Oscillator(channel=0, frequency=0.3, damping=0.02, amplitude=1.0, phase=0.0, dt=1.0),
     Oscillator(channel=0, frequency=1.2, damping=0.05, amplitude=0.5, phase=0.0, dt=1.0)],
    dtype=torch.float64,
)
fig, ax = plt.subplots(figsize=(7, 2.6))
ax.plot(designed.kernel(200)[0].detach())
ax.set(xlabel="lag $\\ell$", title="a hand-designed S4D kernel: two damped oscillators")
fig.tight_layout()

# %% [markdown]
# ## A caveat: which eigenvalue is "the" frequency
#
# With ZOH, $\bar\lambda = e^{\Delta s}$ and the analysis recovers the layer's own $s$ exactly.
# Other rules change the dynamics: the bilinear rule maps $s$ to
# $\bar\lambda = (1 + \Delta s/2)/(1 - \Delta s/2)$, which compresses high frequencies
# ("tan-warping"). The analysis always reports the *effective* continuous eigenvalue
# $\log(\bar\lambda)/\Delta$ (what the kernel actually does) and keeps the layer's own value as
# `eig_nominal`.

# %%
bil = S4D(d_model=1, d_state=8, init="lin", discretization="bilinear", dt_min=0.5, dt_max=0.5).double()
an_b = oscillators(bil)
print("nominal Im s  :", an_b.eig_nominal.imag[0].numpy().round(3))
print("effective Im s:", an_b.eig_continuous.imag[0].numpy().round(3))

# %% [markdown]
# ## Summary
#
# * An S4D channel is $N/2$ damped oscillators; its kernel is their sum, its transfer function
#   has their eigenvalues as poles.
# * `statespaces.analysis.oscillators(layer)` gives the list, `table()` the physics,
#   `kernel`/`apply`/`frequency_response` the operator; `statespaces analyze CKPT` does this for
#   every layer of a trained checkpoint (see [part 9](09_training.md)).
#
# S4D's oscillators are damped by design. [Part 8](08_linoss.md) looks at a layer built from
# *undamped* forced oscillators, where stability comes from the discretization.
