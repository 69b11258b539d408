"""Every ```python block of the README and of the docs pages runs against the library as it is.

The pages show the API as short sessions: a page's blocks run in order in one namespace, the way a reader
would paste them. Where a block leaves its inputs to the prose (``x (B, L, H)``, a trained ``model``), the
inputs are made here (:data:`SETUP`, small sizes) before the block runs, and a few claims of the blocks'
comments are checked after it (:data:`CHECKS`). A renamed argument, a removed function or a wrong shape
in a page fails here. ``docs/deploy.md`` runs on its own in ``test_docs.py``; the tutorial in its script test.
"""
from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(text: str) -> List[str]:
    """The ```python fenced blocks of a Markdown page, in order."""
    return re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)


#: Pages with at least one python block.
PAGES = [page for page in ["README.md"] + sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")
                                                  if p.name != "deploy.md")
         if python_blocks((ROOT / page).read_text())]

#: (page, block index) -> code run before that block: the inputs its prose describes.
SETUP: Dict[Tuple[str, int], str] = {
    ("README.md", 2): "import statespaces\nfrom statespaces.models.lm import SSMLanguageModel\n"
                      "model = SSMLanguageModel(vocab_size=17, d_model=16, n_layers=2, layer='s4d')",
    ("docs/generation.md", 0): "import torch\ntokens = torch.randint(0, 256, (2, 32))\nprompt = tokens[:, :8]",
    ("docs/generation.md", 1): "prompts = torch.randint(0, 256, (3, 8))\nlengths = torch.tensor([8, 3, 5])",
    ("docs/generation.md", 2): "B = 2\nmodel.eval()\n"
                               "_, state = model.backbone(model.encode(prompt), return_state=True)\n"
                               "x_t = model.encode(prompt[:, -1:])[:, 0]",
    ("docs/generation.md", 3): "x = torch.randn(2, 64, 64)\nB, x_t = 2, x[:, 0]",
    ("docs/linoss.md", 0): "import torch\nB, L = 2, 64\nx = torch.randn(B, L, 128)\nx_t, x_chunk = x[:, 0], x[:, :16]",
    ("docs/linoss.md", 2): "H, P = 128, 64\nfrom statespaces.layers import DLinOSS, LinOSS",
    ("docs/linoss.md", 3): "from statespaces import S4D\nlayer = S4D(16, 32).double()\n"
                           "u = torch.randn(2, L, 16, dtype=torch.float64)",
    ("docs/s4.md", 0): "import torch\nB = 2\nx = torch.randn(B, 64, 256)\nx_t = x[:, 0]",
    ("docs/s4nd.md", 0): "import torch\nB, L1, L2 = 2, 16, 12\nx = torch.randn(B, L1, L2, 64)\n"
                         "x56 = torch.randn(B, 2 * L1, 2 * L2, 64)",
    ("docs/s4nd.md", 1): "batch, height, width, frames = 2, 6, 5, 4\n"
                         "video = torch.randn(batch, frames, height, width, 32)",
    ("docs/s5.md", 0): "import torch\nB, L = 2, 64\nx = torch.randn(B, L, 128)\nx_t, x_chunk = x[:, 0], x[:, :16]\n"
                       "intervals = torch.rand(B, L) + 0.5",
    ("docs/s5.md", 1): "t = torch.cumsum(intervals, 1)\ns = None",
}

#: (page, block index) -> code run after that block: what its comments promise.
CHECKS: Dict[Tuple[str, int], str] = {
    ("README.md", 0): "assert y.shape == (8, 1024, 16) and k.shape == (16, 1024) and y0.shape == (8, 16)\n"
                      "assert torch.allclose(y0, y[:, 0], atol=1e-5)",
    ("README.md", 2): "assert type(model).__name__ == 'SSMLanguageModel'",
    ("docs/generation.md", 0): "assert logits.shape == (2, 32, 256) and new.shape == (2, 100) and loss.dim() == 0",
    ("docs/generation.md", 1): "assert new.shape == (3, 50)\n"
                               "alone = model.generate(prompts[1:2, :3], steps=50, top_k=1)\n"
                               "assert torch.equal(model.generate(prompts, 50, top_k=1, prompt_lengths=lengths)[1], alone[0])",
    ("docs/generation.md", 2): "assert logits.shape == (2, 256)\n"
                               "ref = model.decode(model.backbone.step(x_t, state)[0])\n"
                               "assert torch.allclose(logits, ref, atol=1e-4)",
    ("docs/generation.md", 3): "assert y.shape == x.shape and y_t.shape == x_t.shape",
    ("docs/linoss.md", 0): "assert K.shape == (128, 128, L) and y_t.shape == x_t.shape\n"
                           "assert state.shape == (B, 2, 64) and state.is_complex()",
    ("docs/linoss.md", 3): "K = layer.kernel(L)\nassert torch.allclose(an.kernel(L), K, atol=1e-10)\n"
                           "assert torch.allclose(layer2.double().kernel(L), K, atol=1e-5)\n"
                           "assert torch.allclose(an.apply(u), layer(u), atol=1e-10)",
    ("docs/s4nd.md", 0): "assert K.shape == (64, 2 * L1, 2 * L2)",
    ("docs/s4nd.md", 1): "assert torch.allclose(y_t, block(video)[:, frames - 1], atol=1e-4)",
    ("docs/s5.md", 0): "assert K.shape == (128, 128, L) and y_t.shape == x_t.shape",
    ("docs/validation.md", 1): "model.zero_grad()\ntorch.nn.functional.cross_entropy(model(x[3:4]), y[3:4]).backward()\n"
                               "for n, p in model.named_parameters():\n"
                               "    assert per_sample[n].shape == (8, *p.shape)\n"
                               "    assert torch.allclose(per_sample[n][3], p.grad, atol=1e-6), n",
}


def test_python_blocks_parser():
    text = "a\n```python\nx = 1\n```\ntext ```python inline``` \n```bash\nls\n```\n```python\ny = 2\n```\n"
    assert python_blocks(text) == ["x = 1\n", "y = 2\n"]


def test_every_setup_and_check_names_a_block():
    """A key of SETUP/CHECKS that names no block (a block removed or moved) would silently check nothing."""
    assert len(PAGES) >= 8 and "README.md" in PAGES
    counts = {page: len(python_blocks((ROOT / page).read_text())) for page in PAGES}
    for page, i in [*SETUP, *CHECKS]:
        assert page in counts and i < counts[page], (page, i)


def _needs_fashion_mnist(block: str) -> bool:
    return "fashion_mnist" in block


@pytest.mark.parametrize("page", PAGES)
def test_page_python_blocks_run(page, tmp_path, monkeypatch):
    blocks = python_blocks((ROOT / page).read_text())
    monkeypatch.chdir(tmp_path)                     # blocks that save files write them here
    torch.manual_seed(0)
    ns: dict = {"__name__": "__main__"}
    for i, block in enumerate(blocks):
        if _needs_fashion_mnist(block):
            from statespaces.data.fashion_mnist import find_root

            try:
                find_root()
            except FileNotFoundError:
                pytest.skip("the Fashion-MNIST files are not installed (apt-get install dataset-fashion-mnist)")
        for code, what in ((SETUP.get((page, i)), "setup"), (block, "block"), (CHECKS.get((page, i)), "check")):
            if code is not None:
                exec(compile(code, f"{page} [python block {i + 1}, {what}]", "exec"), ns)


# --------------------------------------------------------------------------------------------------
# Every `statespaces train ...` command the pages show is accepted by the CLI (flags, values, presets)
# --------------------------------------------------------------------------------------------------
#: Placeholders of the pages' commands -> a value to try.
PLACEHOLDERS = {"<Problem>": "ArrowHead", "<k>": "0", "K": "0", "SEED": "0", "NAME": "digits", "PRESET": "digits-s4d"}


def train_commands() -> List[Tuple[str, List[str]]]:
    """``(page, argv)`` of every ``statespaces train`` command in a shell block or inline code of the README and
    docs pages, as the shell would pass it (comments and ``[optional]`` parts dropped, ``~`` expanded later), with
    each ``a|b`` preset alternative and placeholder filled in; ``--resume`` commands left out (they need a run)."""
    out = []
    for page in ["README.md"] + sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")):
        text = (ROOT / page).read_text()
        lines = [line.strip() for m in re.finditer(r"^```(?:bash|sh|shell|console)?\n(.*?)^```", text, re.S | re.M)
                 for line in m.group(1).replace("\\\n", " ").splitlines()]
        lines += [m.group(1).replace("\n", " ") for m in re.finditer(r"`(statespaces train [^`]*)`", text)]
        for line in lines:
            if not line.startswith("statespaces train"):
                continue
            argv = [PLACEHOLDERS.get(a, a) for a in shlex.split(re.sub(r"\[[^\]]*\]", "", line), comments=True)[1:]]
            if "--resume" in argv:
                continue
            variants = [argv]
            if "--preset" in argv and "|" in argv[argv.index("--preset") + 1]:
                i = argv.index("--preset") + 1
                variants = [argv[:i] + [p] + argv[i + 1:] for p in argv[i].split("|")]
            out += [(page, [a.replace("<Problem>", "ArrowHead") for a in v]) for v in variants]
    return out


def test_documented_train_commands_are_accepted(tmp_path, monkeypatch):
    """Each command parses and validates into a config (the run itself is replaced by a recorder: training every
    preset is the results tables' job). The `~/ucr/Wine/...` files of the README exist under a temporary home."""
    import statespaces.train.loop as loop
    from statespaces import cli

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    wine = tmp_path / "ucr" / "Wine"
    wine.mkdir(parents=True)
    for split in ("TRAIN", "TEST"):
        (wine / f"Wine_{split}.tsv").write_text("1\t0.1\t0.2\t0.3\n2\t0.3\t0.2\t0.1\n")
    for folder, name in (("my", "Sensor"), ("path/to", "Problem")):     # time-stamped files the docs name
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
        for split in ("TRAIN", "TEST"):
            (tmp_path / folder / f"{name}_{split}.ts").write_text(
                "@timeStamps true\n@classLabel true a b\n@data\n(0,1),(1,2),(3,3):a\n(0,3),(2,2),(3,1):b\n")
    for name in ("my_tokens.npz", "melodies.npz"):       # the token files the docs' commands name
        np.savez(tmp_path / name, train=np.zeros((4, 8), dtype=np.int64), test=np.ones((2, 8), dtype=np.int64))
    configs = []
    monkeypatch.setattr(loop, "train", lambda cfg, resume=False, progress=True, announce=None: configs.append(cfg) or {})
    commands = train_commands()
    assert len(commands) >= 20 and any(page == "README.md" for page, _ in commands)
    for page, argv in commands:
        argv = [os.path.expanduser(a) if a.startswith("~") else a for a in argv]   # as the shell does
        try:
            assert cli.main(argv) == 0
        except SystemExit as e:          # a user error: printed as one line on stderr
            pytest.fail(f"{page}: `statespaces {' '.join(argv)}` is refused (exit {e.code})")
    assert len(configs) == len(commands)
