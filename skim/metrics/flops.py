"""Analytic FLOPs of a BERT-shaped encoder from per-layer kept-token counts.

Per layer with ``n`` tokens, hidden ``d`` and FFN width ``f`` (multiply-accumulates):
QKV and output projections ``4 n d^2``, FFN ``2 n d f``, attention scores and weighted values ``2 n^2 d``; plus
the skim predictor (``strategy.predictor_macs``) and the task head. BERT, RoBERTa, DistilBERT and ALBERT layers all
have this cost; ALBERT (and ELECTRA with ``embedding_size != hidden_size``) also projects every input token from the
embedding width ``e`` to ``d`` before the first layer (``n e d``), and an ALBERT layer applied several times (shared
weights) costs its full price at every application. Embedding lookups, LayerNorm, softmax and
activations are not counted (like ``torch.utils.flop_counter``, which counts matmuls and convolutions only).
FLOPs = 2 x MACs. Counts are per example, with each example's own token counts, so padding is excluded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class EncoderShape:
    hidden: int
    ffn: int
    layers: int
    heads: int
    #: width of the embeddings projected to ``hidden`` before the first layer (ALBERT, ELECTRA-small); 0: none
    embed: int = 0

    @classmethod
    def of(cls, config) -> EncoderShape:
        """The shape from a HF config, in each architecture's own names."""
        model_type = getattr(config, "model_type", None)
        if model_type == "distilbert":
            # dim / hidden_dim / n_layers / n_heads (its attribute_map aliases all but the FFN width)
            return cls(config.dim, config.hidden_dim, config.n_layers, config.n_heads)
        layers, embed = config.num_hidden_layers, 0
        if model_type == "albert":
            # every application of a shared layer runs in full; embedding_hidden_mapping_in always exists
            layers *= config.inner_group_num
            embed = config.embedding_size
        elif model_type == "electra" and config.embedding_size != config.hidden_size:
            embed = config.embedding_size  # ElectraModel.embeddings_project
        return cls(config.hidden_size, config.intermediate_size, layers, config.num_attention_heads, embed)


def layer_macs(n: torch.Tensor, shape: EncoderShape) -> torch.Tensor:
    n = n.to(torch.float64)
    d, f = shape.hidden, shape.ffn
    return 4 * n * d * d + 2 * n * d * f + 2 * n * n * d


def encoder_macs(
    kept_per_layer: torch.Tensor,
    shape: EncoderShape,
    predictor_macs=None,
    predictor_tokens: torch.Tensor | None = None,
    input_tokens: torch.Tensor | None = None,
) -> torch.Tensor:
    """[num_layers, B] tokens entering each layer -> [B] encoder MACs (predictor included when given).

    ``predictor_macs(layer, tokens) -> tensor`` (``tokens``: [B] int64 counts, evaluated per layer, not per example)
    and ``predictor_tokens`` ([num_layers, B], tokens the predictor of each layer reads) add the skim predictors' cost;
    a strategy whose cost needs more per-example counts gives [num_layers, B, k] and gets [B, k] (Block-Skim's
    ``question_attention``: tokens and question tokens).
    ``input_tokens`` ([B]): tokens through the embedding projection (``shape.embed``), which runs before any skim
    decision; default ``kept_per_layer[0]``, short of it by the tokens a strategy drops before the first layer.
    """
    total = layer_macs(kept_per_layer, shape).sum(0)
    if shape.embed:
        tokens = kept_per_layer[0] if input_tokens is None else input_tokens
        total = total + tokens.to(device=total.device, dtype=torch.float64) * shape.embed * shape.hidden
    if predictor_macs is not None and predictor_tokens is not None:
        tokens = predictor_tokens.to(device=total.device, dtype=torch.int64)
        for i in range(tokens.shape[0]):
            total = total + torch.as_tensor(predictor_macs(i, tokens[i]), dtype=torch.float64, device=total.device)
    return total


def head_macs(task: str, final_tokens: torch.Tensor, shape: EncoderShape, num_labels: int = 2) -> torch.Tensor:
    """QA span head on the surviving tokens; classification pooler + classifier on [CLS]."""
    d = shape.hidden
    if task == "qa":
        return final_tokens.to(torch.float64) * d * 2
    return torch.full_like(final_tokens, d * d + d * num_labels, dtype=torch.float64)
