"""A layer-by-layer runner over Hugging Face encoders (BERT, RoBERTa, DistilBERT, ALBERT, ELECTRA) that lets a skim
strategy drop tokens.

The encoder never copies transformers code: it calls the backbone's own embedding module and layer modules,
and only owns the loop between layers; an adapter per architecture (``ADAPTERS``, keyed by ``config.model_type``)
knows where those modules are and how they are called. Two execution modes share every decision:

* ``mask``  – the sequence keeps its full length; skimmed tokens are excluded as attention *keys* by an additive
  mask before the softmax, and their outputs are discarded (differentiable; used in training).
* ``prune`` – skimmed tokens are physically removed. Each example keeps its own tokens, packed to the longest
  kept length in the batch with a padding mask, so batch size > 1 is real. Used at inference. With
  ``length_groups`` each layer runs on groups of examples of similar kept length, each only as wide as its longest
  example, instead of the whole batch at the width of the longest one (the dense model's padding included).

Because masking is applied to keys before the softmax, a kept token sees exactly the same keys in both modes, so
the two modes give the same hidden states on kept positions (tested).

Bookkeeping is in *original* coordinates: ``state.pos[b, j]`` is the original position of the j-th token of the
current (possibly packed) sequence, and ``state.forwarded`` is a full-length ``[B, L, D]`` tensor that holds, for every
token, the output of the last layer it took part in (Transkimmer's "forwarding"; Block-Skim's head then fills the
positions that did not survive with -100 logits).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from skim.errors import ConfigError
from skim.state import EncoderOutput, SkimState

if TYPE_CHECKING:  # pragma: no cover
    from skim.strategies.base import SkimStrategy

MODES = ("mask", "prune")
#: length groups: an example joins the current group while its length is at least this share of the group's longest
GROUP_RATIO = 0.75
#: ... and grouping is used only if it cuts the padded tokens a layer runs on below this share of the batch's
GROUP_GAIN = 0.85


class BertFamilyAdapter:
    """Access to the pieces of a BERT-shaped HF encoder: ``embeddings`` -> ``encoder.layer[i]``, each layer's attention
    function called by ``attention.self`` (BERT, MiniLM; the other architectures subclass it).

    An adapter is the only place that knows an architecture's module names. Every HF module is used unmodified;
    ``layer(i)`` is the module that runs *application* i of the encoder (``num_layers`` applications), and
    ``self_attention(i)`` is the module whose forward returns ``(output, attention probabilities)`` in it: the encoder's
    probability hook sits there, and the layer's ``**kwargs`` reach the attention function (HF's
    ``ALL_ATTENTION_FUNCTIONS``) through it, which is how Block-Skim's and Transkimmer's attention functions get theirs.
    """

    supported_model_types: tuple[str, ...] = ("bert",)
    #: whether the HF model's constructor takes ``add_pooling_layer``
    takes_pooling_layer: bool = True
    #: the architecture's own sequence-classification head over the first token: None = the backbone's pretrained
    #: pooler, then dropout and a linear classifier (``BertForSequenceClassification``); otherwise the activation of a
    #: dense layer that the head owns (``RobertaClassificationHead``: tanh, DistilBERT: relu, ELECTRA: gelu)
    cls_head_activation: str | None = None
    #: whether that head also applies dropout before its dense layer (RoBERTa, ELECTRA)
    cls_dropout_before_dense: bool = False

    def __init__(self, model: nn.Module):
        self.model = model

    @property
    def config(self):
        return self.model.config

    @property
    def layers(self) -> nn.ModuleList:
        return self.model.encoder.layer

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def layer(self, i: int) -> nn.Module:
        return self.layers[i]

    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        return self.model.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)

    def self_attention(self, i: int) -> nn.Module:
        return self.layer(i).attention.self

    def run_layer(self, i: int, hidden: torch.Tensor, attn_mask: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        out = self.layer(i)(hidden, attention_mask=attn_mask, **kwargs)
        return out[0] if isinstance(out, tuple) else out

    def pool(self, first: torch.Tensor) -> torch.Tensor:
        """The backbone's pooler on the first token's output [B, D] (``cls_head_activation is None`` only)."""
        pooler = self.model.pooler
        return pooler.activation(pooler.dense(first))

    def classifier_dropout(self) -> float:
        config = self.config
        dropout = getattr(config, "classifier_dropout", None)
        return config.hidden_dropout_prob if dropout is None else dropout


class ElectraAdapter(BertFamilyAdapter):
    """ELECTRA: BERT's layout, plus ``embeddings_project`` when ``embedding_size != hidden_size``; no pooler."""

    supported_model_types = ("electra",)
    takes_pooling_layer = False
    cls_head_activation = "gelu"  # ElectraClassificationHead
    cls_dropout_before_dense = True

    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        hidden = super().embed(input_ids, token_type_ids)
        project = getattr(self.model, "embeddings_project", None)
        return project(hidden) if project is not None else hidden


class RobertaAdapter(BertFamilyAdapter):
    """RoBERTa (and XLM-R, CamemBERT): BERT's module names; no token types and its own classification head.

    * Token types: RoBERTa was pretrained without segments (``type_vocab_size`` 1) and its tokenizer returns no
      ``token_type_ids``; the data modules then send zeros, but a BERT tokenizer's pair ids (1 on the second segment)
      would index past the one-row table, so they are dropped unless the config really has several types.
    * Position ids: ``RobertaEmbeddings`` numbers the non-padding tokens from ``pad_token_id + 1`` itself, from
      ``input_ids`` and ``config.pad_token_id`` (hence 514 positions for 512 tokens); the embedding runs before any
      skimming decision, so pruned tokens keep their original positions.
    * Classification: ``RobertaClassificationHead`` (dropout, dense, tanh, dropout, linear on ``<s>``), not the pooler,
      which RoBERTa's checkpoints do not train.
    """

    supported_model_types = ("roberta", "xlm-roberta", "camembert")
    cls_head_activation = "tanh"
    cls_dropout_before_dense = True

    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        if getattr(self.config, "type_vocab_size", 1) < 2:
            token_type_ids = None
        return super().embed(input_ids, token_type_ids)


class DistilBertAdapter(BertFamilyAdapter):
    """DistilBERT: ``transformer.layer[i]``, attention in ``attention`` (``DistilBertSelfAttention``), no token
    types, no pooler; config names ``dim``/``n_layers``/``n_heads`` (``hidden_size`` etc. through its attribute_map)."""

    supported_model_types = ("distilbert",)
    takes_pooling_layer = False
    cls_head_activation = "relu"  # DistilBertForSequenceClassification: pre_classifier, ReLU, dropout, classifier

    @property
    def layers(self) -> nn.ModuleList:
        return self.model.transformer.layer

    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        return self.model.embeddings(input_ids=input_ids)

    def self_attention(self, i: int) -> nn.Module:
        return self.layer(i).attention

    def classifier_dropout(self) -> float:
        return self.config.seq_classif_dropout


class AlbertAdapter(BertFamilyAdapter):
    """ALBERT: factorised embeddings (``embedding_size`` -> ``hidden_size`` through the encoder's
    ``embedding_hidden_mapping_in``) and layer weights shared across applications.

    Skimming is per *application*, not per parameter set: ``layer(i)`` is the shared ``AlbertLayer`` that application i
    runs, chosen by ``AlbertTransformer.forward``'s own rule (group ``int(i / (num_hidden_layers / num_hidden_groups))``),
    so a strategy sees ``num_hidden_layers`` layers and builds one predictor per application index. With
    ``inner_group_num`` > 1 (no public checkpoint has it) every inner layer of a group application counts as one
    application. The pooler is a plain ``Linear`` + ``pooler_activation`` (trained by sentence-order prediction).
    """

    supported_model_types = ("albert",)

    @property
    def layers(self) -> list[nn.Module]:
        # a plain list: the same module appears once per application
        return [self.layer(i) for i in range(self.num_layers)]

    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers * self.config.inner_group_num

    def layer(self, i: int) -> nn.Module:
        config = self.config
        application, inner = divmod(i, config.inner_group_num)
        group = int(application / (config.num_hidden_layers / config.num_hidden_groups))
        return self.model.encoder.albert_layer_groups[group].albert_layers[inner]

    def embed(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None) -> torch.Tensor:
        hidden = self.model.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        return self.model.encoder.embedding_hidden_mapping_in(hidden)

    def self_attention(self, i: int) -> nn.Module:
        return self.layer(i).attention

    def pool(self, first: torch.Tensor) -> torch.Tensor:
        return self.model.pooler_activation(self.model.pooler(first))

    def classifier_dropout(self) -> float:
        return self.config.classifier_dropout_prob


ADAPTERS: dict[str, type[BertFamilyAdapter]] = {
    t: cls
    for cls in (BertFamilyAdapter, ElectraAdapter, RobertaAdapter, DistilBertAdapter, AlbertAdapter)
    for t in cls.supported_model_types
}


def adapter_class(model_type: str | None) -> type[BertFamilyAdapter]:
    if model_type not in ADAPTERS:
        raise ConfigError(
            f"model type {model_type!r} is not supported by the skim encoder "
            f"(supported: {', '.join(sorted(ADAPTERS))}); another architecture needs an adapter in "
            "skim/encoders/skim_encoder.py (its module names, embedding and layer call)"
        )
    return ADAPTERS[model_type]


def adapter_for(model: nn.Module) -> BertFamilyAdapter:
    return adapter_class(getattr(model.config, "model_type", None))(model)


class SkimEncoder(nn.Module):
    """Runs a HF encoder layer by layer and applies a :class:`SkimStrategy`'s keep decisions."""

    def __init__(self, backbone: nn.Module, strategy: SkimStrategy):
        super().__init__()
        self.backbone = backbone
        self.strategy = strategy
        self.adapter = adapter_for(backbone)
        self.num_layers = self.adapter.num_layers
        # what the hook captured in the layer that runs now (taken by ``_take_capture``)
        self._captured: Any = None
        # the layer whose attention probabilities the hook stores (None: none wanted now)
        self._capture_layer: int | None = None
        #: also return which tokens enter each layer, in original coordinates (``EncoderOutput.alive_per_layer``)
        self.record_alive = False
        #: prune mode without gradients: run each layer on groups of examples of similar length (``length_groups``)
        self.length_groups = False
        # one hook per attention module: ALBERT runs the same module in several layers (applications)
        hooked: set[int] = set()
        for i in range(self.num_layers):
            attention = self.adapter.self_attention(i)
            if id(attention) not in hooked:
                hooked.add(id(attention))
                attention.register_forward_hook(self._hook)
        strategy.attach(self)

    # ---- attention probabilities -------------------------------------------------------------------------
    def _hook(self, module, args, output) -> None:
        i = self._capture_layer
        if i is None:
            return
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if weights is None:
            raise ConfigError(
                f"strategy {self.strategy.name!r} needs attention probabilities, but the backbone's attention "
                f"implementation {self.attn_implementation!r} does not return them; use "
                "model.attn_implementation=eager"
            )
        self._captured = weights

    def _take_capture(self) -> Any:
        captured, self._captured = self._captured, None
        return captured

    @property
    def attn_implementation(self) -> str:
        return getattr(self.backbone.config, "_attn_implementation", None) or "eager"

    @property
    def hidden_size(self) -> int:
        return self.backbone.config.hidden_size

    # ---- masks -------------------------------------------------------------------------------------------
    def _attention_mask(self, alive: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Key mask [B, 1, 1, n] in the form the attention implementation expects."""
        if self.attn_implementation == "eager":
            # additive, before the softmax: masked keys get exactly zero probability
            return (~alive)[:, None, None, :].to(dtype) * torch.finfo(dtype).min
        return alive[:, None, None, :]

    # ---- prune-mode packing ------------------------------------------------------------------------------
    @staticmethod
    def _pack(state: SkimState) -> None:
        """Physically remove dead tokens: keep each example's alive tokens in order, pad to the longest."""
        counts = state.alive.sum(1)
        width = int(counts.max().clamp_min(1))
        if not bool((state.alive[:, 1:] & ~state.alive[:, :-1]).any()):
            # already packed (every example's alive tokens are a prefix: nothing dropped, or only trailing tokens):
            # trimming the common dead tail is a view, no sort and no copy of the hidden states
            if width < state.alive.shape[1]:
                state.hidden, state.pos, state.alive = state.hidden[:, :width], state.pos[:, :width], state.alive[:, :width]
            return
        # stable sort puts alive tokens first in their original order
        order = torch.sort((~state.alive).to(torch.int8), dim=1, stable=True).indices[:, :width]
        state.hidden = state.hidden.gather(1, order[..., None].expand(-1, -1, state.hidden.shape[-1]))
        state.pos = state.pos.gather(1, order)
        state.alive = state.alive.gather(1, order)

    def apply_keep(self, state: SkimState, keep: torch.Tensor) -> None:
        """Intersect the alive set with ``keep`` ([B, n] bool, current coordinates); prune mode packs at once."""
        if state.mode == "prune":
            leaving = state.alive & ~keep
            if not bool(leaving.any()):  # a decision that drops nothing leaves the packed state as it is
                return
            # the tokens leaving now keep their current state as their output: written once, here
            self._write_forward(state, leaving)
        state.alive = state.alive & keep
        if state.mode == "prune":
            self._pack(state)

    # ---- forward -----------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def recording_alive(self) -> Iterator[None]:
        """Inside the block, outputs carry ``alive_per_layer`` (which tokens enter each layer)."""
        was, self.record_alive = self.record_alive, True
        try:
            yield
        finally:
            self.record_alive = was

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        *,
        mode: str = "mask",
        protect_mask: torch.Tensor | None = None,
    ) -> EncoderOutput:
        if mode not in MODES:
            raise ConfigError(f"unknown skim mode {mode!r}; expected one of {MODES}")
        B, L = input_ids.shape
        real = attention_mask.bool()
        hidden = self.adapter.embed(input_ids, token_type_ids)
        state = SkimState(
            mode=mode,
            hidden=hidden,
            pos=torch.arange(L, device=input_ids.device).expand(B, L).contiguous(),
            alive=real.clone(),
            forwarded=hidden,
            real_full=real,
            protect_full=(protect_mask.bool() & real) if protect_mask is not None else torch.zeros_like(real),
        )
        strategy = self.strategy
        before: list[torch.Tensor] = []
        alive_layers: list[torch.Tensor] = []
        for i in range(self.num_layers):
            state.layer = i
            before.append(state.alive.sum(1))
            keep = strategy.before_layer(state)
            if keep is not None:
                self.apply_keep(state, keep)
            state.kept_per_layer.append(state.alive.sum(1))
            state.special_per_layer.append((state.alive & state.gather_full(state.protect_full)).sum(1))
            if self.record_alive:
                alive_layers.append(state.alive_full)

            self._capture_layer = i if strategy.needs_attention_probs(i) else None
            try:
                out, probs = self._run_layer(i, state)
            finally:
                self._capture_layer = None

            state.hidden = out
            if mode == "mask":
                # tokens that took part in this layer overwrite their forwarded state; dead ones keep their last one
                state.forwarded = self._merge_forward(state, out, strategy.forwarded_state_gradient)
            keep = strategy.after_layer(state, probs)
            if keep is not None:
                self.apply_keep(state, keep)

        if mode == "prune":
            # prune mode writes a token's output once: when it is dropped (apply_keep) or, for survivors, here
            self._write_forward(state, state.alive)
        final_keep = state.alive_full
        return EncoderOutput(
            last_hidden_state=state.forwarded,
            final_keep=final_keep,
            kept_per_layer=torch.stack(state.kept_per_layer),
            tokens_before_decision=torch.stack(before),
            real_tokens=real.sum(1),
            special_per_layer=torch.stack(state.special_per_layer),
            special_tokens=state.protect_full.sum(1),
            extras=state.extras,
            final_keep_weight=state.keep_weight if mode == "mask" else None,
            alive_per_layer=torch.stack(alive_layers) if alive_layers else None,
        )

    def _run_layer(self, i: int, state: SkimState) -> tuple[torch.Tensor, Any]:
        """Layer ``i`` on the current state: (its output, what the attention hook captured, if anything)."""
        kwargs = self.strategy.layer_kwargs(state)
        groups = self._length_groups(state, kwargs)
        if groups is None:
            out = self.adapter.run_layer(i, state.hidden, self._attention_mask(state.alive, state.hidden.dtype), **kwargs)
            return out, self._take_capture()
        # positions past a group's width hold no live token: what the layer would write there is never read
        out = state.hidden.new_zeros(state.hidden.shape)
        parts = []
        for rows, width in groups:
            alive = state.alive[rows, :width]
            out[rows, :width] = self.adapter.run_layer(
                i, state.hidden[rows, :width], self._attention_mask(alive, state.hidden.dtype), **kwargs
            )
            parts.append((rows, self._take_capture()))
        capture = parts[0][1]
        if capture is None:
            return out, None
        if not hasattr(type(capture), "stack_rows"):  # a capture that cannot be put together from row groups
            out = self.adapter.run_layer(i, state.hidden, self._attention_mask(state.alive, state.hidden.dtype), **kwargs)
            return out, self._take_capture()
        # a capture that comes in row groups knows how to put them together (Block-Skim's DiagonalBlocks)
        return out, type(capture).stack_rows(parts, state.alive.shape[0], state.alive.shape[1])

    def _length_groups(self, state: SkimState, kwargs: dict[str, Any]) -> list[tuple[torch.Tensor, int]] | None:
        """Rows of the batch in groups of similar length and each group's width, longest first; None to run the batch
        whole: outside prune mode without gradients, when per-token tensors go to the layer, when the layer returns
        full attention probabilities (which cannot be put back together cheaply), or when grouping saves little."""
        alive = state.alive
        B, width = alive.shape
        if not self.length_groups or state.mode != "prune" or torch.is_grad_enabled() or B < 2:
            return None
        if any(torch.is_tensor(v) for v in kwargs.values()):
            return None
        if self._capture_layer is not None and self.attn_implementation != self.strategy.attn_implementation:
            return None
        if bool((alive[:, 1:] & ~alive[:, :-1]).any()):  # not packed (every example's live tokens a prefix)
            return None
        counts, order = alive.sum(1).sort(descending=True)
        counts = counts.tolist()
        groups, start = [], 0
        for j in range(1, B + 1):
            if j == B or counts[j] < GROUP_RATIO * counts[start]:
                groups.append((order[start:j], max(counts[start], 1)))
                start = j
        if len(groups) == 1 or sum(len(r) * w for r, w in groups) > GROUP_GAIN * B * width:
            return None
        return groups

    @staticmethod
    def _merge_forward(state: SkimState, out: torch.Tensor, gradient: bool = True) -> torch.Tensor:
        """Mask mode: the full-length forwarded state after a layer (alive tokens take the layer's output)."""
        if state.keep_weight is not None:
            # differentiable merge (straight-through keep weights, Transkimmer training)
            w = state.keep_weight if gradient else state.keep_weight.detach()
            w = w[..., None].to(out.dtype)
            return state.forwarded * (1 - w) + out * w
        return torch.where(state.alive[..., None], out, state.forwarded)

    @staticmethod
    def _write_forward(state: SkimState, rows: torch.Tensor) -> None:
        """Prune mode: store the current state of the tokens in ``rows`` ([B, n] bool, current coordinates) as their
        output in the full-length ``state.forwarded``."""
        # rows of ``pos`` are distinct (a prefix of a permutation), so the scatter has no collisions
        idx = state.pos[..., None].expand_as(state.hidden)
        src = torch.where(rows[..., None], state.hidden, state.forwarded.gather(1, idx))
        state.forwarded = state.forwarded.scatter(1, idx, src)
