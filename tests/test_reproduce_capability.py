"""Quick profile of the capability claims C2, C3, C5, C6, L1, L2 (smoke runs: no pass asserted, except
L2's eigenvalue bound, which holds by construction), plus the exact pieces they are built on."""
import math
from pathlib import Path

import pytest
import torch

from statespaces.layers.linoss import LinOSS
from statespaces.reproduce import CLAIMS, run_claims
from statespaces.reproduce.claims_linoss import block_eigenvalues, random_parameter_checks
from statespaces.data.trajectories import TRAJ_DESIGN, resample, synthetic_trajectories, trajectory_positions
from statespaces.models.baselines import LegSRNN

IDS = ["C2", "C3", "C5", "C6", "L1", "L2"]


def _has_fashion_mnist() -> bool:
    try:
        from statespaces.data.fashion_mnist import find_root

        find_root()
        return True
    except (FileNotFoundError, ImportError):
        return False


@pytest.mark.slow   # > 3 s: the fast tier stays under 3 min
def test_quick_profile_rows(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    ids = IDS if _has_fashion_mnist() else ["C5", "L1", "L2"]
    table = tmp_path / "REPRODUCTION.md"
    rows = run_claims(ids, True, tmp_path / "runs", table)
    text = table.read_text()
    assert [r["id"] for r in rows] == ids
    for row in rows:
        assert not row["ours"].startswith("error"), row
        assert row["thesis"] and row["criterion"] and isinstance(row["passed"], bool)
        for key in ("title", "thesis", "ours", "criterion"):
            assert "|" not in row[key], (key, row[key])  # a pipe would break the markdown table
        assert f"| {row['id']}: " in text
        if row["figure"]:
            assert Path(row["figure"]).is_file(), row["figure"]
    by_id = {r["id"]: r for r in rows}
    assert by_id["L2"]["passed"], by_id["L2"]  # the bound holds by construction, even in the quick run


def test_claims_registered():
    for cid in IDS:
        assert cid in CLAIMS and CLAIMS[cid].tier == "C"


# the LegS memory's exact pieces (per-step transitions, constant input) are tested with the library cell
# in tests/test_hippo_rnn.py


def test_resample_doubles_and_halves_the_rate():
    x = torch.arange(5.0).view(1, 5, 1).repeat(2, 1, 1)
    lens = torch.tensor([5, 3])
    up, lu = resample(x, lens, 2.0)
    assert lu.tolist() == [9, 5]
    torch.testing.assert_close(up[0, :, 0], torch.arange(9.0) / 2)
    down, ld = resample(x, lens, 0.5)
    assert ld.tolist() == [3, 2]
    torch.testing.assert_close(down[0, :, 0], torch.tensor([0.0, 2.0, 4.0]))
    torch.testing.assert_close(down[1, :2, 0], torch.tensor([0.0, 2.0]))


def test_synthetic_trajectories_deterministic_balanced():
    a, b = synthetic_trajectories(2, seed=3), synthetic_trajectories(2, seed=3)
    for ta, tb in zip(a.tensors, b.tensors):
        assert torch.equal(ta, tb)
    x, y, lens = a.tensors
    C = TRAJ_DESIGN["classes"]
    assert x.shape == (2 * C, int(lens.max()), 3) and x.dtype == torch.float32
    assert torch.bincount(y, minlength=C).tolist() == [2] * C
    lo, hi = TRAJ_DESIGN["length"]
    assert lens.min() >= 0.8 * lo and lens.max() <= 1.2 * hi
    for i, n in enumerate(lens.tolist()):
        assert x[i, n:].abs().sum() == 0  # right-padded
    assert not torch.equal(x, synthetic_trajectories(2, seed=4).tensors[0])  # the seed matters


def test_synthetic_trajectories_2x_traces_the_same_curve():
    native = synthetic_trajectories(1, seed=5, noise=0.0)
    dense = synthetic_trajectories(1, seed=5, rate=2.0, noise=0.0)
    x1, _, l1 = native.tensors
    x2, _, l2 = dense.tensors
    assert (l2 == 2 * l1 - 1).all()
    torch.testing.assert_close(x2[:, ::2][:, : int(l1.max())], x1)  # every other 2x sample is a native one
    up, lu = resample(x1, l1, 2.0)  # the test-time 2x protocol: linear interpolation
    assert torch.equal(lu, l2)
    assert (up - x2[:, : up.shape[1]]).abs().max() < 0.1 * x1[..., :2].abs().max()
    for i in range(len(l1)):
        p1 = trajectory_positions(x1[i], int(l1[i]))
        p2 = trajectory_positions(x2[i], int(l2[i]), rate=2.0)
        pu = trajectory_positions(up[i], int(lu[i]), rate=2.0)
        extent = p1.abs().max()
        assert (p2[::2] - p1).abs().max() < 0.01 * extent and (pu[::2] - p1).abs().max() < 0.01 * extent


def test_legs_rnn_ignores_padding():
    torch.manual_seed(0)
    m = LegSRNN(3, 4, hidden=8, order=4).eval()
    x = torch.randn(1, 5, 3)
    padded = torch.cat([x, torch.randn(1, 4, 3)], 1)
    torch.testing.assert_close(m(x), m(padded, torch.tensor([5])))


@pytest.mark.parametrize("disc", ["IM", "IMEX"])
def test_linoss_bound_numeric(disc):
    bad, worst = random_parameter_checks(disc, draws=20, P=64)
    assert bad == 0 and worst <= 1 + 1e-6
    layer = LinOSS(4, 16, discretization=disc).double()
    mods = block_eigenvalues(layer)
    if disc == "IM":
        S = 1 / (1 + layer.dt() ** 2 * layer.stiffness())
        torch.testing.assert_close(mods.view(16, 2), S.sqrt().detach().unsqueeze(-1).expand(16, 2))
    else:
        assert math.isclose(float(mods.min()), 1.0, abs_tol=1e-9)


def test_repeat_pixels_is_nearest_upsampling():
    from statespaces.reproduce.claims_robustness import repeat_pixels

    x = torch.arange(2 * 3 * 4 * 2, dtype=torch.float32).view(2, 3, 4, 2)
    up = repeat_pixels(x, 2)
    assert up.shape == (2, 6, 8, 2)
    for a in (0, 1):
        for b in (0, 1):
            torch.testing.assert_close(up[:, a::2, b::2], x, rtol=0, atol=0)


def test_c6_repeated_pixels_at_half_rate_keep_the_coarse_logits():
    """C6's third test set: an S4ND image model run at rate 0.5 on the 14x14 images with each pixel
    repeated 2x2 computes nearly its 14x14 logits (the kernel's taps pair up to the coarse ZOH taps,
    up to half a fine step at every other pixel); the same images at rate 1 do not."""
    from statespaces.models.image import ImageClassifier
    from statespaces.reproduce.claims_robustness import repeat_pixels

    torch.manual_seed(0)
    m = ImageClassifier(d_input=1, n_classes=10, dims=2, d_model=8, n_layers=2,
                        layer=dict(kind="s4nd", d_state=16, seed=0)).double()
    x = torch.rand(4, 14, 14, 1, dtype=torch.float64)
    coarse = m(x)
    rel = lambda y: ((y - coarse).norm() / coarse.norm()).item()  # noqa: E731
    assert rel(m(repeat_pixels(x, 2), rate=0.5)) < 2e-3
    assert rel(m(repeat_pixels(x, 2), rate=1.0)) > 1e-2


def test_c6_scores_its_third_test_set_on_repeated_pixels_at_half_rate(tmp_path, monkeypatch):
    """How C6 builds its test sets, with the data, the training and the scoring stubbed: 14x14 at rate 1, the
    original 28x28 at rate 0.5, and the 14x14 images with every pixel repeated 2x2 at rate 0.5."""
    from types import SimpleNamespace

    import statespaces.data.fashion_mnist as fm
    from statespaces.reproduce import claims_robustness as cr

    g = torch.Generator().manual_seed(0)
    xtr, xte = torch.rand(8, 28, 28, 1, generator=g), torch.rand(6, 28, 28, 1, generator=g)
    ytr, yte = torch.randint(0, 10, (8,), generator=g), torch.randint(0, 10, (6,), generator=g)
    monkeypatch.setattr(fm, "load_fashion_mnist_images", lambda **kw: SimpleNamespace(
        train=SimpleNamespace(tensors=(xtr, ytr)), test=SimpleNamespace(tensors=(xte, yte))))
    monkeypatch.setattr(cr, "fit_dataset", lambda *a, **k: None)
    monkeypatch.setattr(cr, "_c6_plot", lambda acc, path: None)
    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x, rate=1.0):
            seen.append((x, rate))
            return x

    def score(model, ds, task, batch_size=250):
        if not isinstance(task, str):                        # the S4ND models' tasks pass the rate on
            task.forward(Probe(), ds.tensors[0], None)
        return 0.5

    monkeypatch.setattr(cr, "score", score)
    cr.c6(True, tmp_path)
    (x0, r0), (x1, r1), (x2, r2) = seen[:3]                  # the first S4ND model's three test sets
    as_rates = lambda r: torch.as_tensor(r, dtype=torch.float64).expand(2)   # noqa: E731
    assert torch.equal(as_rates(r0), as_rates(1.0)) and torch.equal(x0, cr.resize_images(xte, 14))
    assert torch.equal(as_rates(r1), as_rates(0.5)) and torch.equal(x1, xte)
    assert torch.equal(as_rates(r2), as_rates(0.5)) and torch.equal(x2, cr.repeat_pixels(cr.resize_images(xte, 14), 2))
