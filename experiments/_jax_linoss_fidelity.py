"""Trains the official tk-rusch/linoss LinOSS (``models/LinOSS.py``, imported unchanged) on arrays
written by experiments/linoss_fidelity.py, with the official recipe: plain Adam at a constant lr,
batch 32 drawn without replacement per step, a time channel in [0, 1] prepended to the input, the
official block (BatchNorm without affine, LinOSS, GELU, dropout 0.05, GLU, dropout, residual),
mean pooling, softmax + NLL. Model selection on the validation split, every ``eval_every`` steps.

Run with a Python that has jax, equinox and optax (never imported by statespaces):

    JAXPY experiments/_jax_linoss_fidelity.py LinOSS.py DATA.npz STEPS H P BLOCKS LR SEED DISC EVAL_EVERY

Prints one JSON line.
"""
import importlib.util
import json
import sys
import time

import numpy as np


def main() -> None:
    path, npz = sys.argv[1], sys.argv[2]
    steps, H, P, blocks = (int(v) for v in sys.argv[3:7])
    lr, seed, disc, eval_every = float(sys.argv[7]), int(sys.argv[8]), sys.argv[9], int(sys.argv[10])
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import jax.random as jr
    import optax

    spec = importlib.util.spec_from_file_location("official_linoss", path)
    lo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lo)
    d = np.load(npz)

    def with_time(x):
        t = np.broadcast_to(np.linspace(0, 1, x.shape[1], dtype=np.float32)[None, :, None], x.shape[:2] + (1,))
        return np.concatenate([t, x], -1).astype(np.float32)

    xtr, xva, xte = with_time(d["xtr"]), with_time(d["xva"]), with_time(d["xte"])
    ytr, yva, yte = d["ytr"], d["yva"], d["yte"]
    n_classes = int(max(ytr.max(), yva.max(), yte.max())) + 1
    key = jr.PRNGKey(seed)
    mkey, key = jr.split(key)
    model, state = eqx.nn.make_with_state(lo.LinOSS)(blocks, xtr.shape[-1], P, H, n_classes, True, 1, disc, key=mkey)
    opt = optax.adam(lr)
    opt_state = opt.init(eqx.filter(model, eqx.is_inexact_array))

    def loss_fn(model, state, x, y, key):
        keys = jr.split(key, x.shape[0])
        out, state = jax.vmap(model, axis_name="batch", in_axes=(0, None, 0), out_axes=(0, None))(x, state, keys)
        return jnp.mean(-jnp.log(out[jnp.arange(y.shape[0]), y] + 1e-8)), state

    @eqx.filter_jit
    def step(model, state, opt_state, x, y, key):
        (loss, state), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(model, state, x, y, key)
        updates, opt_state = opt.update(grads, opt_state)
        return eqx.apply_updates(model, updates), state, opt_state, loss

    @eqx.filter_jit
    def predict(model, state, x):
        inf = eqx.nn.inference_mode(model)
        out, _ = jax.vmap(inf, axis_name="batch", in_axes=(0, None, None), out_axes=(0, None))(x, state, jr.PRNGKey(0))
        return jnp.argmax(out, -1)

    rng = np.random.default_rng(seed)
    best, curve, t0 = (-1.0, 0.0, 0), [], time.time()
    for s in range(1, steps + 1):
        idx = rng.choice(len(ytr), 32, replace=False)
        key, sk = jr.split(key)
        model, state, opt_state, loss = step(model, state, opt_state, jnp.asarray(xtr[idx]), jnp.asarray(ytr[idx]), sk)
        if s % eval_every == 0 or s == steps:
            va = float((np.asarray(predict(model, state, jnp.asarray(xva))) == yva).mean())
            curve.append((s, round(va, 4)))
            if va > best[0]:
                te = float((np.asarray(predict(model, state, jnp.asarray(xte))) == yte).mean())
                best = (va, te, s)
    test_last = float((np.asarray(predict(model, state, jnp.asarray(xte))) == yte).mean())
    print(json.dumps({"impl": "official-jax", "steps": steps, "H": H, "P": P, "blocks": blocks, "lr": lr, "seed": seed,
                      "disc": disc, "best_val": best[0], "test_at_best_val": best[1], "best_step": best[2],
                      "test_last": test_last, "val_curve": curve, "seconds": round(time.time() - t0, 1)}))


if __name__ == "__main__":
    main()
