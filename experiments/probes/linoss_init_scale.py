"""Diagnostic probe, not part of the library: the output scale of one SSM layer at init on ACSF1 (claim L1's data).

ACSF1's training series (the first 32, as the trainer loads them: globally normalised) go through a random
``Linear(1, 32)`` and a LayerNorm (the block's input, roughly) and one freshly initialised layer; printed: the rms
of its output, per seed (0-2; the encoder and the layer are drawn from the seed). An oscillator's response to a
constant input grows to about 1/A, so LinOSS's output at the paper's init (``A ~ U[0, 1]``) is dominated by the few
oscillators nearest A = 0, and more of them (larger P) reach nearer 0; a floor ``A ~ U[a, 1]`` bounds it.

    PYTHONPATH=src OMP_NUM_THREADS=1 python experiments/probes/linoss_init_scale.py

Prints a markdown table (layer, rms per seed). Used in docs/linoss.md (ACSF1 in L1's recipe).
"""
import torch

from statespaces.layers.linoss import LinOSS
from statespaces.layers.s4d import S4D
from statespaces.train import build_config
from statespaces.train.loop import load_data


def _floored(a: float, P: int = 32) -> LinOSS:
    layer = LinOSS(32, P, discretization="IM", mode="conv")
    with torch.no_grad():
        layer.A_hat.copy_(a + (1 - a) * layer.A_hat)        # U[0, 1] -> U[a, 1]
    return layer


def main() -> None:
    data = load_data(build_config(None, None, [("data.name", "ucr:ACSF1")]))
    x = data.train.tensors[0][:32].float()
    arms = {"S4D (N = 32 per channel)": lambda: S4D(32, 32)}
    for P in (32, 256, 512):
        arms[f"LinOSS-IM, P = {P}"] = lambda P=P: LinOSS(32, P, discretization="IM", mode="conv")
    for a in (0.1, 0.3):
        arms[f"LinOSS-IM, P = 32, A ~ U[{a}, 1]"] = lambda a=a: _floored(a)
    for P in (128, 256):
        arms[f"LinOSS-IM, P = {P}, A ~ U[0.1, 1]"] = lambda P=P: _floored(0.1, P)
    rms = {name: [] for name in arms}
    for seed in range(3):
        torch.manual_seed(seed)
        u = torch.nn.functional.layer_norm(torch.nn.Linear(1, 32)(x), (32,))
        for name, build in arms.items():
            torch.manual_seed(100 + seed)
            with torch.no_grad():
                rms[name].append(float(build()(u).pow(2).mean().sqrt()))
    print("| layer at init (H = 32, ACSF1) | output rms, seeds 0, 1, 2 |\n|---|---|")
    for name, v in rms.items():
        print(f"| {name} | {', '.join(f'{r:.2f}' for r in v)} |")


if __name__ == "__main__":
    main()
