r"""Autoregressive SSM models: a causal backbone between an input encoder and an LM head.

    tokens (B, L[, S]) -> embedding (sum over the S streams) -> backbone -> head -> logits (B, L[, S], V)

``logits[:, t]`` is the distribution of the token at position ``t + 1`` given positions ``<= t``.

Two backbones share one interface (``forward(x, state=None, return_state=False)``,
``initial_state(B)``, ``step(x_t, state)``):

* :class:`SSMStack`: the flat ("isotropic") stack of residual SSM blocks of thesis §7.2 (optionally
  interleaved with FF blocks, the "isotropic S4" of Table 8.5), final LayerNorm;
* :class:`~statespaces.models.sashimi.SaShiMi`: the multi-scale U-Net of thesis ch. 8.

Generation (thesis §7.4.2, §2.3): :meth:`SSMLanguageModel.generate` runs the prompt through the
backbone **once** in convolution mode with ``return_state=True`` (every layer returns its state
after the prompt), then produces each new token with one recurrent step: O(1) time and memory per
token in the sequence length, instead of the O(L log L) of re-running the convolution.

Several tokens per step (``n_streams = S``, e.g. the 4 voices of a chorale): the S token embeddings
are summed into one input vector and S independent heads predict the S tokens of the next step.
At generation the S tokens of one step are sampled **independently** given the past (the joint
distribution of one step factorizes over voices); this is a modelling simplification, not the
voice-by-voice ordering of a fully autoregressive model.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple, Union, cast

import torch
from torch import nn
from torch.nn import functional as F

from .._checks import (
    check_batch,
    check_batch_size,
    check_choice,
    check_flag,
    check_int,
    check_positive_int,
    check_result,
    check_sequence,
    check_step_input,
    public,
    tracing,
)
from ..blocks import ResidualBlock, check_causal, check_lengths, length_mask
from ..layers.base import SSMLayer
from ..layers.config import LayerSpec, layer_config, sequence_layer, upgrade_layer_arguments
from ..layers.s4nd import S4ND
from ..ops._amp import upcast_half
from ..serialization import Pretrained
from .generate import check_sampling, sample_logits
from .sashimi import FFBlock, SaShiMi, _blocks_forward, _blocks_initial, _blocks_step

if TYPE_CHECKING:
    from .stepper import ModelStepper

Tensor = torch.Tensor

__all__ = ["SSMStack", "SSMLanguageModel"]


class SSMStack(Pretrained, nn.Module):
    """Flat stack of residual SSM blocks (thesis §7.2), then a final LayerNorm; causal by default.

    Args:
        d_model: width H.
        n_layers: number of residual SSM blocks.
        layer: the SSM layer: a kind (``"s4d"``, ``"s4"``, ``"linoss"``, ``"dlinoss"``, ``"s4nd"``) with
            its defaults, a config (``S4DConfig(d_state=32)``) or a mapping
            ``{"kind": "s4d", "d_state": 32}`` (see :mod:`statespaces.layers.config`).
        ff_expand: if > 0, a residual FF block (expansion ``ff_expand``) follows every SSM block, as
            in SaShiMi's stages (§8.3) -- the "isotropic" model of Table 8.5.
        norm: passed to every :class:`~statespaces.blocks.ResidualBlock`.
        dropout: passed to every :class:`~statespaces.blocks.ResidualBlock`.
        mixing: passed to every :class:`~statespaces.blocks.ResidualBlock`.
        causal: True (default): the output at step t depends on steps <= t only, as next-step
            prediction needs; a bidirectional layer raises ``ValueError`` and ``norm="batch"`` warns
            (its training-mode statistics include later steps), see
            :func:`~statespaces.blocks.check_causal`. False: any layer, for models that see the whole
            window at once (:class:`~statespaces.models.forecast.SSMForecaster`).

    Shapes: (B, L, H) -> (B, L, H); ``step``: (B, H) -> (B, H); state: list of per-block states.
    """

    length_multiple = 1
    upgrade_config = staticmethod(upgrade_layer_arguments)    # reads models saved with layer_kwargs

    def __init__(
        self,
        d_model: int,
        n_layers: int = 4,
        layer: LayerSpec = "s4d",
        ff_expand: int = 0,
        norm: str = "layer",
        dropout: float = 0.0,
        mixing: str = "glu",
        causal: bool = True,
    ) -> None:
        super().__init__()
        self.d_model = check_positive_int("d_model", d_model)
        check_positive_int("n_layers", n_layers)
        if not isinstance(causal, bool):
            raise TypeError(f"causal must be True or False, got {causal!r}")
        self.causal = causal
        self.layer_config = sequence_layer(layer)
        mods: List[nn.Module] = []
        for i in range(n_layers):
            # build() is typed nn.Module; ResidualBlock checks at run time that it is an SSM layer (a seeded
            # config seeds block i with its own offset: build(d_model, i))
            ssm = cast(Union[SSMLayer, S4ND], self.layer_config.build(d_model, i))
            mods.append(ResidualBlock(ssm, norm=norm, dropout=dropout, mixing=mixing))
            if ff_expand:
                mods.append(FFBlock(d_model, ff_expand, dropout))
        self.blocks = nn.ModuleList(mods)
        self.final_norm = nn.LayerNorm(d_model)
        if causal:
            check_causal(self, "SSMStack")

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, n_layers={sum(isinstance(b, ResidualBlock) for b in self.blocks)}, "
                f"layer={self.layer_config.kind!r}" + ("" if self.causal else ", causal=False"))

    @public
    def initial_state(self, batch_size: int) -> List[Any]:
        """One state per block (each the zero state of its layer for a batch of B)."""
        return _blocks_initial(self.blocks, check_batch_size(batch_size))

    @public
    def forward(self, x: Tensor, state: Optional[List[Any]] = None, return_state: bool = False,
                lengths: Optional[Tensor] = None) -> Union[Tensor, Tuple[Tensor, List[Any]]]:
        """x (B, L, H) -> y (B, L, H) [, state after the last step].

        ``lengths`` (B,): right-padded batch; steps ``t >= lengths[b]`` never influence valid steps
        (also with bidirectional layers or BatchNorm); outputs at padded steps are unspecified.
        """
        check_sequence(x, self.d_model, self.final_norm.weight.dtype, device=self.final_norm.weight.device)
        return_state = check_flag("return_state", return_state)
        if state is not None and (not isinstance(state, list) or len(state) != len(self.blocks)):
            raise ValueError("state must come from SSMStack.initial_state() or a call with return_state=True")
        mask = length_mask(lengths, x.shape[0], x.shape[1], x.device)
        y, st = _blocks_forward(self.blocks, x, state, return_state, mask)
        y = self.final_norm(y)
        check_result(self, (y, st), input=x, state=state)     # NaN/inf: names the culprit
        return (y, st) if return_state else y

    @public
    def step(self, x: Tensor, state: List[Any]) -> Tuple[Tensor, List[Any]]:
        """x (B, H) -> y (B, H), new state."""
        check_step_input(x, self.d_model, self.final_norm.weight.dtype, self.final_norm.weight.device)
        if not isinstance(state, list) or len(state) != len(self.blocks):
            raise ValueError("state must come from SSMStack.initial_state() or a call with return_state=True")
        y, st = _blocks_step(self.blocks, x, state)
        y = self.final_norm(y)
        check_result(self, (y, st), "step output", x=x, state=state)
        return y, st


def _check_predictable_length(L: int, what: str) -> None:
    """Next-step prediction scores L - 1 steps: a length below 2 leaves nothing to predict."""
    if L < 2:
        raise ValueError(f"{what} has length {L}: next-step prediction needs sequences of at least 2 tokens "
                         "(the first is only context) to score one step; drop shorter sequences from the batch")


def _check_backbone_kwargs(kind: str, cls: Any, given: Dict[str, Any], taken: set) -> None:
    """backbone_kwargs must be arguments of the backbone class that the model does not set itself (an unknown one
    failed with Python's bare "unexpected keyword argument")."""
    import inspect

    accepted = [p for p in inspect.signature(cls.__init__).parameters if p not in taken | {"self"}]
    unknown = sorted(set(given) - set(accepted))
    if unknown:
        raise TypeError(f"backbone_kwargs {unknown} are not options of the {kind!r} backbone ({cls.__name__}); "
                        f"its options: {', '.join(accepted)}")


def _checked_causal(backbone: nn.Module) -> bool:
    """Whether ``backbone`` checked its own causality when it was built (SaShiMi, an SSMStack with
    ``causal=True``), so :class:`SSMLanguageModel` need not check (and warn) again."""
    return isinstance(backbone, SaShiMi) or (isinstance(backbone, SSMStack) and backbone.causal)


class SSMLanguageModel(Pretrained, nn.Module):
    r"""Causal sequence model over discrete tokens (thesis §7.3.6 / Tables 7.6-7.7, ch. 8).

    Args:
        vocab_size: V, the number of token values (per stream).
        d_model: backbone width H.
        n_layers: blocks of the flat stack, or (SSM, FF) pairs per tier for SaShiMi.
        layer: the SSM layer: a kind (``"s4d"``, ``"s4"``, ``"linoss"``, ``"dlinoss"``, ``"s4nd"``) with
            its defaults, a config (``S4DConfig(d_state=32)``) or a mapping
            ``{"kind": "s4d", "d_state": 32}`` (see :mod:`statespaces.layers.config`).
        backbone: ``"flat"`` (:class:`SSMStack`), ``"sashimi"`` (:class:`~statespaces.models.sashimi.SaShiMi`),
            or a module following the backbone interface (``d_model``, ``forward(x, state, return_state)``,
            ``initial_state``, ``step``).
        backbone_kwargs: extra arguments of the backbone (e.g. ``pool``, ``expand``, ``ff_expand``).
        n_streams: S tokens per time step (e.g. 4 chorale voices); 1 gives plain (B, L) token sequences.
        d_input: if given, the encoder is ``Linear(d_input, H)`` on continuous inputs (B, L, d_input)
            instead of an embedding; targets stay discrete.
        max_len: optional fixed maximum length of a convolution-mode pass (e.g. a layer with a fixed
            kernel length); longer inputs / prompts raise ``ValueError``. ``None``: unlimited.
        dropout: residual-block option.
        mixing: residual-block option.
        norm: residual-block option; ``"batch"`` warns (in training mode its statistics include later
            steps, so the model is causal in eval mode only).

    The model must be causal (``logits[:, t]`` may not see tokens after t): a bidirectional layer
    (e.g. ``layer={"kind": "s4d", "bidirectional": True}``) raises ``ValueError`` when the model is
    built, whatever the backbone (:func:`~statespaces.blocks.check_causal`).

    Shapes:
        forward(tokens (B, L) or (B, L, S) int64 | inputs (B, L, d_input) float)
        -> logits (B, L, V) or (B, L, S, V).
    """

    stream_offset: Tensor          # buffer (registered when d_input is None)

    upgrade_config = staticmethod(upgrade_layer_arguments)    # reads models saved with layer_kwargs

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 64,
        n_layers: int = 4,
        layer: LayerSpec = "s4d",
        backbone: Union[str, nn.Module] = "flat",
        backbone_kwargs: Optional[Dict[str, Any]] = None,
        n_streams: int = 1,
        d_input: Optional[int] = None,
        max_len: Optional[int] = None,
        dropout: float = 0.0,
        mixing: Optional[str] = None,
        norm: str = "layer",
    ) -> None:
        super().__init__()
        self.vocab_size = check_positive_int("vocab_size", vocab_size, 2)
        self.n_streams = check_positive_int("n_streams", n_streams)
        self.d_model = check_positive_int("d_model", d_model)
        self.max_len = None if max_len is None else check_positive_int("max_len", max_len)
        self.d_input = None if d_input is None else check_positive_int("d_input", d_input)
        bkw = dict(backbone_kwargs or {})
        if isinstance(backbone, nn.Module):
            if getattr(backbone, "d_model", None) != d_model:
                raise ValueError(f"backbone.d_model must equal d_model={d_model}")
            self.backbone = backbone
        else:
            kind = check_choice("backbone", backbone, ("flat", "sashimi"))
            common: Dict[str, Any] = dict(layer=layer_config(layer, dims=1), dropout=dropout, norm=norm)
            cls: Any = SSMStack if kind == "flat" else SaShiMi
            _check_backbone_kwargs(kind, cls, bkw, set(common) | {"d_model", "n_layers", "mixing"})
            self.backbone = cls(d_model, n_layers, mixing=mixing or ("glu" if kind == "flat" else "linear"),
                                **common, **bkw)
        if not _checked_causal(self.backbone):     # a custom module, or an SSMStack built with causal=False
            check_causal(self.backbone, "SSMLanguageModel's backbone")
        if self.d_input is None:
            # one table for all streams; stream s uses rows s*V .. s*V + V - 1 (= S separate tables)
            self.embedding = nn.Embedding(self.n_streams * vocab_size, d_model)
            self.register_buffer("stream_offset", torch.arange(self.n_streams) * vocab_size, persistent=False)
        else:
            self.encoder = nn.Linear(self.d_input, d_model)
        self.head = nn.Linear(d_model, self.n_streams * vocab_size)

    # ---- pieces --------------------------------------------------------------------------------
    @property
    def _dtype(self) -> torch.dtype:
        return self.head.weight.dtype

    def _check_tokens(self, tokens: Tensor, name: str = "tokens") -> Tensor:
        """Validate (B, L) / (B, L, S) integer tokens in [0, V); return them as (B, L, S)."""
        if not isinstance(tokens, torch.Tensor) or tokens.dtype not in (
                torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
            raise TypeError(f"{name} must be an integer tensor of token ids, "
                            f"got {getattr(tokens, 'dtype', type(tokens))}")
        want = "(batch, length)" if self.n_streams == 1 else f"(batch, length, n_streams={self.n_streams})"
        if self.n_streams == 1 and tokens.dim() == 2:
            tokens = tokens.unsqueeze(-1)
        if tokens.dim() != 3 or tokens.shape[-1] != self.n_streams:
            raise ValueError(f"{name} must have shape {want}, got {tuple(tokens.shape)}")
        check_batch(name, tokens)
        if tokens.shape[1] == 0:
            raise ValueError(f"{name} has length 0; pass at least one token per sequence")
        if tokens.device != self.head.weight.device:
            raise ValueError(f"{name} is on {tokens.device} but the model is on {self.head.weight.device}; "
                             "move one with .to(device)")
        if tokens.numel() and not tracing() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size):
            raise ValueError(f"{name} must lie in [0, vocab_size={self.vocab_size}), got range "
                             f"[{int(tokens.min())}, {int(tokens.max())}]")
        return tokens.long()

    def encode(self, inputs: Tensor) -> Tensor:
        """Inputs (B, L[, S]) tokens or (B, L, d_input) floats -> (B, L, H)."""
        if self.d_input is None:
            tok = self._check_tokens(inputs)
            return self.embedding(tok + self.stream_offset).sum(-2)
        check_sequence(inputs, self.d_input, self._dtype, "inputs", device=self.head.weight.device,
                       channels="d_input")
        return self.encoder(inputs.to(self._dtype))

    def decode(self, h: Tensor) -> Tensor:
        """Backbone output (..., H) -> logits (..., V) or (..., S, V)."""
        logits = self.head(h).unflatten(-1, (self.n_streams, self.vocab_size))
        return logits.squeeze(-2) if self.n_streams == 1 else logits

    def _check_len(self, L: int, what: str) -> None:
        if self.max_len is not None and L > self.max_len:
            raise ValueError(f"{what} has length {L}, more than the model's max_len={self.max_len}")

    # ---- training / scoring ------------------------------------------------------------------
    @public
    def forward(self, inputs: Tensor, state: Any = None, return_state: bool = False,
                lengths: Optional[Tensor] = None) -> Union[Tensor, Tuple[Tensor, Any]]:
        """Logits (B, L, V) or (B, L, S, V); ``logits[:, t]`` predicts the token at t + 1.

        ``lengths`` (B,): right-padded batch; padded steps never influence valid ones (passed to the
        backbone, which must accept ``lengths=``); logits at padded steps are unspecified."""
        self._check_len(inputs.shape[1] if isinstance(inputs, torch.Tensor) and inputs.dim() > 1 else 0, "input")
        return_state = check_flag("return_state", return_state)
        h = self.encode(inputs)
        kw = {} if lengths is None else {"lengths": lengths}
        out = self.backbone(h, state=state, return_state=return_state, **kw)
        logits = self.decode(out[0] if return_state else out)
        check_result(self, (logits, out[1] if return_state else None), "logits", inputs=inputs, state=state)
        if return_state:
            return logits, out[1]
        return logits

    def nll(self, inputs: Tensor, targets: Optional[Tensor] = None,
            lengths: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Summed next-step negative log-likelihood (nats) and the number of predicted steps.

        Args:
            inputs: tokens (B, L[, S]) (or continuous inputs with ``d_input``).
            targets: tokens (B, L[, S]) aligned with ``inputs``; default ``inputs``. Position t + 1 is
                predicted from inputs <= t, so L - 1 steps per sequence are scored.
            lengths: (B,) valid lengths for right-padded batches (steps >= length are ignored).

        Returns:
            ``(total, count)``: NLL summed over scored steps and streams, and the number of scored
            steps; ``total / count`` is the NLL per time step (per S-token step).

        Raises:
            ValueError: nothing to predict (length 1, or every ``lengths`` 1): a sum of 0 over 0 steps
                would pass for a perfect fit.
        """
        tgt, lengths = self._scored_targets(inputs, targets, lengths)
        return self._nll(cast(Tensor, self.forward(inputs, lengths=lengths)), tgt, lengths)

    def _scored_targets(self, inputs: Tensor, targets: Optional[Tensor],
                        lengths: Optional[Tensor]) -> Tuple[Tensor, Optional[Tensor]]:
        """``targets`` (default ``inputs``) checked as tokens aligned with ``inputs``, and ``lengths`` as a tensor."""
        if targets is None:
            if self.d_input is not None:
                raise ValueError("targets are required with continuous inputs (d_input)")
            targets = inputs
        tgt = self._check_tokens(targets, "targets")
        _check_predictable_length(tgt.shape[1], "targets")
        if isinstance(inputs, torch.Tensor) and tuple(tgt.shape[:2]) != tuple(inputs.shape[:2]):
            raise ValueError(f"targets must be aligned with the inputs (the same batch and length), got targets "
                             f"{tuple(targets.shape)} for inputs {tuple(inputs.shape)}")
        return tgt, (None if lengths is None else torch.as_tensor(lengths))

    def nll_of_logits(self, logits: Tensor, targets: Tensor,
                      lengths: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """:meth:`nll` from logits already computed (``forward``'s, e.g. through a ``DistributedDataParallel``
        wrapper, whose forward must run for the gradients to be synchronised): ``targets`` tokens (B, L[, S])."""
        return self._nll(logits, self._check_tokens(targets, "targets"), lengths)

    def _nll(self, logits: Tensor, tgt: Tensor, lengths: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        """:meth:`nll_of_logits` of targets already checked (B, L, S) int64 (one token check per call: on CUDA each
        reads the tokens' range on the host)."""
        if tuple(logits.shape[:2]) != tuple(tgt.shape[:2]):
            raise ValueError(f"logits {tuple(logits.shape)} are not aligned with the targets {tuple(tgt.shape)}")
        if logits.dim() == 3:
            logits = logits.unsqueeze(-2)
        B, L = tgt.shape[:2]
        nll = F.cross_entropy(upcast_half(logits[:, :-1].flatten(0, 2)), tgt[:, 1:].flatten(), reduction="none")
        nll = nll.view(B, L - 1, self.n_streams).sum(-1)
        if lengths is None:
            return nll.sum(), torch.tensor(B * (L - 1), device=nll.device)
        lengths = torch.as_tensor(lengths, device=nll.device)
        mask = torch.arange(1, L, device=nll.device)[None, :] < lengths[:, None]
        if not tracing():        # forward has already read lengths on the host (length_mask)
            _check_predictable_length(int(lengths.max()), "the longest sequence (lengths.max())")
        return (nll * mask).sum(), mask.sum()

    def loss(self, inputs: Tensor, targets: Optional[Tensor] = None, lengths: Optional[Tensor] = None) -> Tensor:
        """Mean next-step NLL per time step (nats, summed over streams); see :meth:`nll`, which raises
        ``ValueError`` when there is no step to predict."""
        total, count = self.nll(inputs, targets, lengths)
        return total / count

    def wrapped_loss(self, net: nn.Module, inputs: Tensor, targets: Optional[Tensor] = None,
                     lengths: Optional[Tensor] = None) -> Tensor:
        """:meth:`loss` with the forward pass run by ``net``, a wrapper of this model (``DistributedDataParallel``,
        a compiled module) whose own forward must run (DDP synchronises gradients only through it)."""
        tgt, lengths = self._scored_targets(inputs, targets, lengths)
        kw = {} if lengths is None else {"lengths": lengths}
        total, count = self._nll(net(inputs, **kw), tgt, lengths)
        return total / count

    def extra_repr(self) -> str:
        s = f"vocab_size={self.vocab_size}, n_streams={self.n_streams}, max_len={self.max_len}"
        return s if self.d_input is None else s + f", d_input={self.d_input}"

    # ---- generation ----------------------------------------------------------------------------
    @public
    @torch.no_grad()
    def generate(
        self,
        prompt: Tensor,
        steps: int,
        temperature: float = 1.0,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        generator: Optional[torch.Generator] = None,
        return_logits: bool = False,
        token_to_input: Optional[Callable[[Tensor], Tensor]] = None,
        stepper: Optional[bool] = None,
        prompt_lengths: Optional[Tensor] = None,
    ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
        r"""Sample ``steps`` new tokens after ``prompt`` (thesis §7.4.2: recurrent generation).

        The prompt goes through the backbone once in convolution mode with ``return_state=True``
        (one parallel pass yielding every layer's state); each new token then costs one recurrent
        :meth:`step` of the backbone, O(1) time and memory per token. The model is put in eval mode
        for the call (and restored afterwards).

        Args:
            prompt: tokens (B, Lp) or (B, Lp, S) with Lp >= 1 (or (B, Lp, d_input) floats with
                ``d_input``, then ``token_to_input`` maps sampled tokens (B[, S]) to inputs (B, d_input)).
            steps: number of tokens to generate (>= 1).
            temperature: > 0; logits are divided by it.
            top_k: keep only the k most likely tokens (>= 1; exactly k even when logits tie, see
                :func:`~statespaces.models.generate.filter_logits`), or None.
            top_p: nucleus sampling mass in (0, 1], or None.
            generator: a ``torch.Generator`` for reproducible sampling.
            return_logits: also return the logits each new token was drawn from.
            stepper: step through a :class:`~statespaces.models.stepper.ModelStepper` (validated once,
                static buffers, a CUDA graph on CUDA); None (default) = when the model has one (a flat
                or SaShiMi backbone whose layers all have a stepper: not S4ND), False = the eager
                ``backbone.step``. Both give the same tokens. True on a model with no stepper: TypeError.
            prompt_lengths: integer tensor (B,) in [1, Lp] for a right-padded batch of prompts of different
                lengths (what is beyond ``prompt[b, :prompt_lengths[b]]`` is never read), or None (all Lp).
                The common part runs in convolution mode; from the shortest prompt's end each step feeds a
                sequence its next prompt token while it has one and its sample after: every sequence gets
                ``steps`` new tokens after its own prompt, as if generated alone. (With sampling, the draws
                are those of the batch: a batch row does not reproduce the draws of a call with that
                sequence alone.)

        Returns:
            (Tensor | tuple[Tensor, Tensor]): new tokens (B, steps[, S]) int64 (the prompt is not
                included; row b starts after ``prompt_lengths[b]``), and, if ``return_logits``, logits
                (B, steps[, S], V): ``logits[:, i]`` is the (unfiltered) next-token distribution the i-th
                new token was sampled from.
        """
        check_sampling(temperature, top_k, top_p)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator (or None), got {type(generator).__name__}")
        steps = check_int("steps", steps, 1)
        return_logits = check_flag("return_logits", return_logits)
        if self.d_input is not None and token_to_input is None:
            raise ValueError("a model with continuous inputs (d_input) needs token_to_input to feed samples back")
        if not isinstance(prompt, torch.Tensor) or prompt.dim() < 2:
            raise ValueError("prompt must be a (batch, length[, ...]) tensor with at least one step")
        starts = self._prompt_starts(prompt, prompt_lengths)        # (B,) on the host, or None: all Lp
        common = prompt.shape[1] if starts is None else int(starts.min())
        self._check_len(common, "prompt")      # the convolution pass reads the shortest prompt; the rest are steps
        extra = 0 if starts is None else int(starts.max()) - common   # forced steps beyond the shortest prompt
        if starts is not None:            # padding never read: zeros, so that it passes the input checks
            valid = length_mask(starts, prompt.shape[0], prompt.shape[1], prompt.device)
            assert valid is not None
            prompt = torch.where(valid.view(*valid.shape, *([1] * (prompt.dim() - 2))), prompt,
                                 torch.zeros((), dtype=prompt.dtype, device=prompt.device))
        was_training = self.training
        self.eval()
        try:
            h = self.encode(prompt)                             # (B, Lp, H): also the inputs of the forced steps
            y, state = self.backbone(h[:, :common], return_state=True)
            logits = self.decode(y[:, -1])
            check_result(self, logits, "next-token logits")     # NaN/inf: names the parameters or an overflow
            st = self._generation_stepper(prompt.shape[0], stepper, steps + extra)
            if st is not None:
                st.load_state(state)
            # per-step NaN/inf check of the logits: always on the eager path; with the stepper only off
            # CUDA, where it costs no device sync (the stepper validated the parameters at build time)
            check_each = st is None or logits.device.type != "cuda"
            tokens, all_logits = [], []
            for t in range(common, common + extra + steps):
                if return_logits:
                    all_logits.append(logits.clone() if st is not None else logits)   # st.logits is reused
                tok = sample_logits(logits, temperature, top_k, top_p, generator)     # (B[, S])
                tokens.append(tok)   # a row still inside its prompt: a draw that is dropped below
                if t == common + extra + steps - 1:
                    break
                x = self._encode_step(tok, token_to_input)
                if starts is not None and t < prompt.shape[1]:      # rows inside their prompt take its step t
                    x = torch.where((t < starts).to(x.device)[:, None], h[:, t], x)
                if st is None:
                    y, state = cast(Any, self.backbone).step(x, state)   # any module with the backbone API
                    logits = self.decode(y)
                else:
                    logits = st(x)
                if check_each:
                    check_result(self, logits, "next-token logits")
        finally:
            self.train(was_training)
        out = torch.stack(tokens, 1)
        lg = torch.stack(all_logits, 1) if return_logits else None
        if starts is not None:              # row b's new tokens start at its own prompt's end
            idx = (starts - common).to(out.device).view(-1, 1) + torch.arange(steps, device=out.device)

            def own_steps(t: Tensor) -> Tensor:
                return t.gather(1, idx.view(*idx.shape, *([1] * (t.dim() - 2))).expand(-1, -1, *t.shape[2:]))

            out, lg = own_steps(out), (None if lg is None else own_steps(lg))
        if lg is not None:
            return out, lg
        return out

    def _prompt_starts(self, prompt: Tensor, lengths: Optional[Tensor]) -> Optional[Tensor]:
        """``prompt_lengths`` of :meth:`generate` checked: a CPU int64 tensor (B,) in [1, Lp], or None."""
        if lengths is None:
            return None
        return check_lengths(lengths, prompt.shape[0], prompt.shape[1], "cpu", "prompt_lengths").to(torch.int64)

    def stepper(self, batch_size: int, cuda_graph: Optional[bool] = None) -> "ModelStepper":
        """A :class:`~statespaces.models.stepper.ModelStepper` (backbone + head, one step, static buffers,
        CUDA graph on CUDA) for ``batch_size`` sequences; the model must be in eval mode."""
        from .stepper import ModelStepper

        return ModelStepper(self, batch_size, cuda_graph)

    def _generation_stepper(self, batch_size: int, use: Optional[bool], steps: int):
        """The stepper :meth:`generate` uses, or None for the eager ``backbone.step``."""
        if use is not None and not isinstance(use, bool):
            raise TypeError(f"stepper must be True, False or None, got {use!r}")
        if use is False or (use is None and steps == 1):
            return None
        from .stepper import layer_without_stepper

        if use is None and (not isinstance(self.backbone, (SSMStack, SaShiMi))
                            or self._dtype not in (torch.float32, torch.float64)
                            or layer_without_stepper(self) is not None):
            return None             # a custom backbone, half precision or an S5/S4ND layer: the eager step
        return self.stepper(batch_size)

    def _encode_step(self, tok: Tensor, token_to_input: Optional[Callable[[Tensor], Tensor]]) -> Tensor:
        """Sampled tokens (B[, S]) -> backbone input (B, H)."""
        if self.d_input is None:
            t = tok.view(tok.shape[0], self.n_streams)
            return self.embedding(t + self.stream_offset).sum(-2)
        assert token_to_input is not None       # generate() requires it when d_input is set
        x = token_to_input(tok)
        if not isinstance(x, Tensor) or x.shape != (tok.shape[0], self.d_input):
            raise ValueError(f"token_to_input must return (batch, d_input={self.d_input}), got "
                             f"{tuple(getattr(x, 'shape', ())) or type(x).__name__}")
        x = x.to(self._dtype)
        if x.device.type == "cpu" and not tracing() and not bool(torch.isfinite(x).all()):
            # off CUDA (no sync there), as the logits check: NaN fed back read as an overflow of the logits
            raise ValueError("token_to_input returned NaN or inf for a sampled token; it must map every token to a "
                             "finite input")
        return self.encoder(x)
