"""A layer of your own (``statespaces.layers.register_layer``): built from a config, inside the models, trained,
saved and loaded; the contract's errors name what is missing (found by an extender campaign, 2026-12-07)."""
import dataclasses
import math
from typing import Optional

import pytest
import torch
from torch import nn

from statespaces.layers import DiagonalSSM, DiagonalSystem, LayerConfig, register_layer
from statespaces.layers.config import LAYERS, setting
from statespaces.serialization import REGISTRY

pytestmark = pytest.mark.usefixtures("one_thread")


class RelaxSSM(DiagonalSSM):
    """M real relaxation modes per channel, ``x_t = exp(-dt r) x_{t-1} + dt u_t``, ``y = sum_m c_m x_m + D u``,
    with ``r = softplus(r_raw)`` (ZOH of ``x' = -r x + u`` to first order in the input)."""

    def __init__(self, d_model: int, n_modes: int = 4, seed: Optional[int] = None) -> None:
        super().__init__()
        g = None if seed is None else torch.Generator().manual_seed(seed)
        self.d_model, self.n_modes, self.bidirectional = d_model, n_modes, False
        self.r_raw = nn.Parameter(torch.linspace(-2.0, 1.0, n_modes).repeat(d_model, 1))
        self.log_dt = nn.Parameter(torch.full((d_model, 1), math.log(0.1)))
        self.c = nn.Parameter(torch.randn(d_model, n_modes, generator=g))
        self.D = nn.Parameter(torch.randn(d_model, generator=g))

    def diagonal_system(self, rate: float = 1.0) -> DiagonalSystem:
        dt = torch.exp(self.log_dt) * rate
        zero = torch.zeros_like(self.c)
        log_dA = torch.complex(-dt * nn.functional.softplus(self.r_raw), zero)
        return DiagonalSystem(log_dA=log_dA, dB=torch.complex(dt.expand_as(self.c), zero),
                              C=torch.complex(self.c, zero)[None], scale=1.0)


@dataclasses.dataclass(frozen=True)
class RelaxConfig(LayerConfig):
    kind = "relax"
    n_modes: int = setting(4, "int", "real modes per channel", lo=1)
    seed: Optional[int] = setting(None, "int", "seed of the init", lo=0, nullable=True)


@pytest.fixture
def registered():
    register_layer("relax", RelaxSSM, RelaxConfig)
    yield
    LAYERS.pop("relax", None)
    REGISTRY.pop("RelaxSSM", None)


def test_a_registered_layer_runs_in_models_saves_and_trains(registered, tmp_path):
    from statespaces import load_pretrained
    from statespaces.models import SequenceClassifier, SSMLanguageModel
    from statespaces.train import build_config, train

    layer = RelaxSSM(3, seed=0).double()
    x = torch.randn(2, 12, 3, dtype=torch.float64)
    state, ys = layer.initial_state(2), []
    for t in range(12):
        y, state = layer.step(x[:, t], state)
        ys.append(y)
    torch.testing.assert_close(torch.stack(ys, 1), layer(x))          # the base class's views agree
    register_layer("relax", RelaxSSM, RelaxConfig)                     # again, the same classes: nothing changes
    model = SequenceClassifier(3, 4, d_model=8, n_layers=2, layer={"kind": "relax", "n_modes": 3, "seed": 1})
    loaded = load_pretrained(model.save_pretrained(tmp_path / "m"))
    assert type(loaded.blocks[0].layer) is RelaxSSM
    probe = torch.randn(2, 5, 3)
    torch.testing.assert_close(loaded(probe), model.eval()(probe), rtol=0, atol=0)       # bit-exact
    lm = SSMLanguageModel(7, d_model=8, n_layers=1, layer="relax")
    tokens = torch.randint(0, 7, (1, 4))
    assert lm.generate(tokens, 3).shape == (1, 3)
    summary = train(build_config(overrides=[("model.layer", "relax"), ("model.d_model", "8"), ("model.n_layers", "1"),
                                            ("trainer.epochs", "1"), ("trainer.batch_size", "256"),
                                            ("trainer.out", str(tmp_path / "run")), ("trainer.tensorboard", "off")]),
                    progress=False)
    assert summary["test_acc"] is not None


def test_register_layer_refuses_what_it_cannot_keep(registered):
    class Other(RelaxSSM):
        pass

    with pytest.raises(ValueError, match="kind 'relax' is taken"):
        register_layer("relax", Other, RelaxConfig)
    with pytest.raises(ValueError, match="kind 's4d' is taken"):
        register_layer("s4d", RelaxSSM, dataclasses.make_dataclass("C", [], bases=(RelaxConfig,), frozen=True,
                                                                    namespace={"kind": "s4d"}))

    @dataclasses.dataclass(frozen=True)
    class Plain(LayerConfig):
        kind = "plain"
        width: int = 3                                   # not a setting(): no rule to check it

    with pytest.raises(TypeError, match=r"Plain.width: every field of a LayerConfig is declared with setting"):
        register_layer("plain", RelaxSSM, Plain)
    with pytest.raises(ValueError, match="lower-case identifier"):
        register_layer("Relax-2", RelaxSSM, RelaxConfig)


def test_an_unregistered_kind_is_refused_when_saved_not_when_loaded(tmp_path):
    from statespaces.models import SequenceClassifier

    @dataclasses.dataclass(frozen=True)
    class Loose(RelaxConfig):
        kind = "loose"

        def build(self, d_model: int, block: int = 0) -> nn.Module:     # builds without a registry entry
            return RelaxSSM(d_model, self.n_modes, self.seed)

    model = SequenceClassifier(3, 4, d_model=8, n_layers=1, layer=Loose())
    with pytest.raises(TypeError, match="kind 'loose', which is not registered"):
        model.save_pretrained(tmp_path / "m")


def test_the_contract_names_what_a_layer_lacks():
    class Half(DiagonalSSM):
        def __init__(self) -> None:
            super().__init__()
            self.d_model, self.n_modes, self.bidirectional = 2, 2, False
            self.D = nn.Parameter(torch.zeros(2))

    with pytest.raises(NotImplementedError, match=r"Half does not implement diagonal_system\(rate\)"):
        Half()(torch.randn(1, 4, 2))
    with pytest.raises(ValueError, match=r"C \(K, H, M\).*got log_dA \(2, 3\), dB \(2, 3\), C \(2, 3\)"):
        DiagonalSystem(log_dA=torch.zeros(2, 3, dtype=torch.complex64), dB=torch.zeros(2, 3, dtype=torch.complex64),
                       C=torch.zeros(2, 3, dtype=torch.complex64), scale=1.0)


def test_register_layer_checks_the_defaults_now_and_frees_the_kind(registered):
    @dataclasses.dataclass(frozen=True)
    class Wrong(LayerConfig):
        kind = "wrong"
        n_modes: int = setting(4, "int", "modes", lo=1)
        extra: int = setting(1, "int", "a setting RelaxSSM does not take", lo=0)

    with pytest.raises(ValueError, match=r"register_layer\('wrong'\): Wrong does not fit RelaxSSM.*takes no extra"):
        register_layer("wrong", RelaxSSM, Wrong)
    assert "wrong" not in LAYERS                         # free again: a corrected config can take the name
    with pytest.raises(TypeError, match="subclass of statespaces.layers.SSMLayer"):
        register_layer("plainmodule", nn.Linear, RelaxConfig)


def test_an_unknown_kind_names_register_layer():
    from statespaces.layers.config import ConfigError, layer_config

    with pytest.raises(ConfigError, match="got 'mine'.*valid: s4d.*register_layer"):
        layer_config({"kind": "mine"})


def test_language_models_take_s4nd_as_its_1d_form():
    from statespaces.models import SSMLanguageModel

    for backbone in ("flat", "sashimi"):
        lm = SSMLanguageModel(7, d_model=8, n_layers=1, layer={"kind": "s4nd", "bidirectional": False},
                              backbone=backbone)
        assert lm(torch.randint(0, 7, (2, 16))).shape == (2, 16, 7)


def test_register_layer_does_not_build_a_one_channel_layer(registered):
    """The registration check built the defaults at d_model=1, refusing layers that need an even width."""
    class Paired(RelaxSSM):
        def __init__(self, d_model: int, n_modes: int = 4, seed: Optional[int] = None, heads: int = 2) -> None:
            if d_model % heads:
                raise ValueError(f"d_model={d_model} must be divisible by heads={heads}")
            super().__init__(d_model, n_modes, seed)

    @dataclasses.dataclass(frozen=True)
    class PairedConfig(RelaxConfig):
        kind = "paired"
        heads: int = setting(2, "int", "heads", lo=1)

    @dataclasses.dataclass(frozen=True)
    class BadDefault(RelaxConfig):
        kind = "baddefault"
        n_modes: int = setting(0, "int", "modes", lo=1)       # its own default breaks its rule

    try:
        register_layer("paired", Paired, PairedConfig)
        from statespaces.models import SequenceClassifier

        assert SequenceClassifier(3, 4, d_model=8, n_layers=1, layer="paired")(torch.randn(2, 5, 3)).shape == (2, 4)
    finally:
        LAYERS.pop("paired", None)
        REGISTRY.pop("Paired", None)
    with pytest.raises(ValueError, match="BadDefault does not fit"):
        register_layer("baddefault", RelaxSSM, BadDefault)
