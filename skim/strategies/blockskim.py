"""Block-Skim (Guan et al., AAAI 2022): a CNN per layer reads the diagonal attention blocks and drops
32-token blocks that do not hold the answer. See ``../shared/docs/algorithms.md`` §1 for the original code.

Faithful defaults; the original code's quirks are flags:

* ``min_answer_tokens`` – a block is positive iff it holds at least this many answer tokens. The original
  uses ``sum > 1`` (2, faithful): single-token answers never give a positive block. 1 is the fix.
* ``protect_special`` – the original protects nothing; True always keeps the blocks that hold [CLS],
  question or [SEP] tokens.
* ``batch_align`` – the original keeps the batch's top-m blocks for every example (m = the largest kept count
  in the batch); False (default) lets every example keep exactly its own blocks.
* ``ignore_padding_blocks`` – the original computes the block loss over every block of the padded input.

Not in the original: ``question_attention`` also gives the predictor, per head, the attention that the protected
tokens ([CLS], question, [SEP]) give each block and that the block's tokens give them. A diagonal block holds no
question–context attention; on real SQuAD a linear probe ranks answer blocks best with it in layers 0–2 (``python -m
skim.block_probe``), though the trained predictor gains far less (README, "Giving the predictor the question
attention").

The predictor reads attention probabilities after dropout (as the original). Training computes them with eager
attention inside the strategy's attention function. At inference on CPU the [n, n] probabilities are never
materialised: the fused kernel returns each row's log-sum-exp, and only the diagonal blocks that hold a live token are
computed, as ``exp(Q_b K_b^T * scale - lse_b)`` (O(n * bs * d) per head instead of O(n^2 * d)). On CUDA the
memory-efficient kernel returns it (its agreement with the exact one was measured on an H200); on other devices, or
where that kernel cannot take the inputs, it comes from the full scores (exact, O(n^2)). Layers without a predictor run
plain SDPA. ``model.attn_implementation=eager`` keeps HF's eager attention everywhere (the reference).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from skim.errors import ConfigError
from skim.metrics.answers import answer_mask
from skim.state import AttachedEncoder, EncoderOutput, SkimState
from skim.strategies.base import SkimStrategy, StrategyConfig, register


@dataclass
class BlockSkimConfig(StrategyConfig):
    name: str = "blockskim"
    block_size: int = 32
    #: weight of the block-classification loss (summed over layers), paper SQuAD recipe
    skim_factor: float = 0.1
    #: class weight of positive (answer) blocks in the CE, [1, balance_factor]; 20 for SQuAD
    balance_factor: float = 20.0
    #: keep a block iff P(keep) >= threshold (0.01: the original's BERT-base SQuAD eval scripts)
    threshold: float = 0.01
    #: not in the original: one threshold per skim layer (ascending layers), in place of ``threshold``. The
    #: layers' P(keep) are not calibrated alike, and the last layer's skim saves no compute (README, "One threshold
    #: per layer")
    layer_thresholds: list[float] | None = None
    min_answer_tokens: int = 2
    protect_special: bool = False
    batch_align: bool = False
    #: layers whose predictor skims (None = every layer, as the original)
    skim_layers: list[int] | None = None
    #: apply decisions during training too (the released recipe trains dense: False)
    skim_in_training: bool = False
    ignore_padding_blocks: bool = False
    skimmed_logit: float = -100.0
    #: not in the original: the predictor also reads the question-context attention of every block (module docstring)
    question_attention: bool = False


class BlockPredictor(nn.Module):
    """2 x [Conv3x3 - BN - ReLU - AvgPool2] + Linear(H*bs*bs/16 -> 2) over one diagonal block (heads = channels);
    with ``question_features``, those features of the block (batch-normalised) join the CNN's before the Linear."""

    def __init__(self, num_heads: int, block_size: int, question_features: int = 0):
        super().__init__()
        if block_size % 4:
            raise ConfigError(f"skim.block_size must be a multiple of 4 (two 2x2 poolings), got {block_size}")
        self.conv1 = nn.Conv2d(num_heads, num_heads, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(num_heads)
        self.conv2 = nn.Conv2d(num_heads, num_heads, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(num_heads)
        self.pool = nn.AvgPool2d(2, 2)
        self.question_norm = nn.BatchNorm1d(question_features) if question_features else None
        self.fc = nn.Linear(num_heads * (block_size // 4) ** 2 + question_features, 2)
        nn.init.normal_(self.fc.weight, std=0.02)  # HF init_weights re-inits Linear layers like this
        nn.init.zeros_(self.fc.bias)
        # inference only: the convolutions with the batch norms folded in, and the logits of an all-zero block
        self._folded: tuple[tuple, list[tuple[torch.Tensor, torch.Tensor]]] | None = None
        self._zero_logits: torch.Tensor | None = None
        self.register_load_state_dict_post_hook(lambda module, incompatible: module._drop_folded())

    def _drop_folded(self) -> None:
        self._folded = self._zero_logits = None

    def train(self, mode: bool = True) -> BlockPredictor:
        self._drop_folded()  # weights only change in training (or through load_state_dict / .to(), also dropped)
        return super().train(mode)

    def _apply(self, fn, recurse=True):
        self._drop_folded()
        return super()._apply(fn, recurse)

    def forward(self, blocks: torch.Tensor, question: torch.Tensor | None = None) -> torch.Tensor:
        """[N, H, bs, bs] blocks (and [N, F] question features) -> [N, 2] logits."""
        x = blocks
        if self.training or torch.is_grad_enabled():
            # (channels-last is slower here: 177 vs 123 ms forward + backward for 384 blocks in a one-off profile, 2 cores)
            for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2)):
                x = self.pool(F.relu(bn(conv(x)), inplace=True))
        else:  # inference: batch norm with running statistics is affine, so it folds into the convolution
            # channels-last (heads innermost): oneDNN runs these 3x3 convolutions over few channels ~2x faster on CPU
            x = x.contiguous(memory_format=torch.channels_last)
            for (w, b), conv in zip(self._folded_convs(), (self.conv1, self.conv2)):
                x = self.pool(F.relu(F.conv2d(x, w, b, padding=conv.padding), inplace=True))
        x = x.flatten(1)
        if self.question_norm is not None:
            x = torch.cat([x, self.question_norm(question.to(x.dtype))], 1)
        return self.fc(x)

    def _folded_convs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Convolution weights with the batch norms folded in (channels-last). Cached in eval mode: ``train()``,
        ``load_state_dict`` and ``.to()`` drop the cache, and an in-place update in between (an optimiser step, a
        ``copy_``) bumps a tensor's version, which the cache key holds. (A write through ``.data`` bumps nothing:
        switch to ``train()`` and back after one.) Parameters made under ``inference_mode`` are folded every call."""
        pairs = ((self.conv1, self.bn1), (self.conv2, self.bn2))
        tensors = [t for conv, bn in pairs for t in (conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var)]
        tensors += [self.fc.weight, self.fc.bias]  # not folded, but the cached zero-block logits depend on them
        if self.question_norm is not None:
            q = self.question_norm
            tensors += [q.weight, q.bias, q.running_mean, q.running_var]
        cacheable = not any(t.is_inference() for t in tensors)  # inference tensors have no version counter
        key = tuple((t.data_ptr(), t._version) for t in tensors) if cacheable else None
        if cacheable and self._folded is not None and self._folded[0] == key:
            return self._folded[1]
        folded = []
        for conv, bn in pairs:
            w, b = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
            folded.append((w.detach().contiguous(memory_format=torch.channels_last), b.detach()))
        if cacheable:
            self._folded, self._zero_logits = (key, folded), None
        return folded

    def block_logits(self, blocks: DiagonalBlocks) -> torch.Tensor:
        """[B, K, 2] logits of every block. Blocks without a live token are all zero, and in eval mode (batch norm with
        running statistics, per block) the CNN maps every such block to the same logits: computed once."""
        x = self(blocks.values.to(self.fc.weight.dtype), blocks.question)
        B, K = blocks.batch, blocks.num_blocks
        if blocks.index is None:
            return x.view(B, K, 2)
        if x.shape[0] == B * K:  # every block live, but in the order of ``index`` (length groups stack longest first)
            return torch.empty_like(x).index_copy_(0, blocks.index, x).view(B, K, 2)
        zero = self._zero_logits
        if zero is None or zero.dtype != x.dtype:
            # a block without a live token has all-zero question features too
            question = None if blocks.question is None else blocks.question.new_zeros((1, blocks.question.shape[1]))
            zero = self(blocks.values.new_zeros((1, *blocks.values.shape[1:]), dtype=self.fc.weight.dtype), question)
            self._zero_logits = zero if self._folded is not None else None
        return zero.expand(B * K, 2).index_copy(0, blocks.index, x).view(B, K, 2)


ATTN_NAME = "skim_blockskim"


@dataclass
class DiagonalBlocks:
    """One layer's diagonal ``bs`` x ``bs`` attention-probability blocks, heads as channels: the predictor's input.

    ``values`` [N, H, bs, bs] (channels-last at inference, the layout the CNN runs fastest in); rows and columns of
    dead tokens (padding, skimmed) are zero and a ragged last block is zero-padded, so a block's input is the same
    whether its sequence was masked (full length) or packed (prune mode). ``index`` [N] is the flat ``b * K + k``
    position of each block when only the blocks holding a live token are present (inference), None when all ``B * K``
    are (training: the original's batch norm sees every block of the padded batch). ``question`` [N, 2H]: the blocks'
    question-attention features (:func:`question_block_features`), with ``question_attention`` only.
    """

    values: torch.Tensor
    index: torch.Tensor | None
    batch: int
    num_blocks: int
    question: torch.Tensor | None = None

    @staticmethod
    def stack_rows(parts: list[tuple[torch.Tensor, DiagonalBlocks]], batch: int, width: int) -> DiagonalBlocks:
        """The blocks of a ``batch`` x ``width`` batch whose layer ran in row groups (the encoder's length groups):
        ``parts`` holds each group's rows of the batch and its blocks (live blocks only: inference)."""
        bs = parts[0][1].values.shape[-1]
        K = -(-width // bs)
        index = torch.cat([rows[p.index // p.num_blocks] * K + p.index % p.num_blocks for rows, p in parts])
        question = None if parts[0][1].question is None else torch.cat([p.question for _, p in parts])
        return DiagonalBlocks(torch.cat([p.values for _, p in parts]), index, batch, K, question)


def block_liveness(alive: torch.Tensor, block_size: int) -> tuple[torch.Tensor, int]:
    """[B, n] bool -> ([B * K, bs] bool: the tokens of every block, a ragged last block padded with False; K)."""
    B, n = alive.shape
    K = -(-n // block_size)
    return F.pad(alive, (0, K * block_size - n)).view(B * K, block_size), K


def _live_index(live: torch.Tensor) -> torch.Tensor:
    """[B * K, bs] block liveness -> [N] flat indices of the blocks holding a live token (a host sync on CUDA)."""
    return live.any(-1).nonzero().squeeze(1)


def diagonal_blocks(probs: torch.Tensor, alive: torch.Tensor, block_size: int, live_only: bool = False) -> DiagonalBlocks:
    """[B, H, n, n] attention probabilities -> their diagonal blocks (K = ceil(n / bs) per example), copying only the
    blocks (1/K of the tensor: the full ones are a strided view, the ragged last one is padded on its own) and masking
    only them. ``live_only``: just the blocks that hold a live token (gathered from the view, nothing else copied)."""
    return mask_blocks(_diagonal_of(probs, block_size), alive, block_size, live_only)


def mask_blocks(blocks: torch.Tensor, alive: torch.Tensor, block_size: int, live_only: bool = False) -> DiagonalBlocks:
    """[B, K, H, bs, bs] diagonal blocks -> :class:`DiagonalBlocks` with the rows and columns of dead tokens zeroed."""
    B = alive.shape[0]
    live, K = block_liveness(alive, block_size)
    if live_only:
        index = _live_index(live)
        blocks, live = blocks[index // K, index % K], live.index_select(0, index)
    else:
        index, blocks = None, blocks.flatten(0, 1)
    return DiagonalBlocks(blocks * (live[:, None, :, None] & live[:, None, None, :]), index, B, K)


def _diagonal_of(probs: torch.Tensor, bs: int) -> torch.Tensor:
    """[B, H, n, n] -> its diagonal [B, K, H, bs, bs] blocks (a view of the full ones + the padded ragged one)."""
    B, H, n, _ = probs.shape
    full = n // bs
    s0, s1, s2, s3 = probs.stride()
    blocks = probs.as_strided((B, H, full, bs, bs), (s0, s1, bs * (s2 + s3), s2, s3), probs.storage_offset())
    if full * bs < n:
        rest = bs - (n - full * bs)
        tail = F.pad(probs[..., full * bs :, full * bs :], (0, rest, 0, rest))
        blocks = torch.cat([blocks, tail[:, :, None]], dim=2)
    return blocks.permute(0, 2, 1, 3, 4)


class AttendWithDiagonalBlocks(torch.autograd.Function):
    """``probs @ value`` and ``probs``' diagonal blocks [B, K, H, bs, bs] as one autograd node (training).

    Autograd would give the blocks' strided view a backward that allocates a zero [B, H, n, n] gradient, scatters
    the blocks' gradient into it and adds it to the matmul's: here the blocks' gradient is added into the diagonal
    of the matmul's gradient in place (1/K of the tensor)."""

    @staticmethod
    def forward(ctx, probs: torch.Tensor, value: torch.Tensor, bs: int):
        ctx.save_for_backward(probs, value)
        ctx.bs = bs
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None: no zero tensor, no matmul with it
        return torch.matmul(probs, value), _diagonal_of(probs, bs).clone()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor | None, grad_blocks: torch.Tensor | None):
        probs, value = ctx.saved_tensors
        grad_probs = grad_value = None
        # under autocast the forward matmul ran in the autocast dtype (grad_out's): so do its gradients, each returned
        # in its input's dtype (float32 probabilities from the softmax, bf16 values from the projection)
        compute = grad_out.dtype if grad_out is not None else probs.dtype
        if grad_out is not None and ctx.needs_input_grad[1]:
            grad_value = torch.matmul(probs.transpose(-1, -2).to(compute), grad_out).to(value.dtype)
        if ctx.needs_input_grad[0]:
            if grad_out is not None:
                grad_probs = torch.matmul(grad_out, value.transpose(-1, -2).to(compute)).to(probs.dtype)
            else:
                grad_probs = torch.zeros_like(probs)
            if grad_blocks is not None:
                bs, n = ctx.bs, probs.shape[-1]
                full = n // bs
                g = grad_blocks.permute(0, 2, 1, 3, 4)  # [B, H, K, bs, bs]
                s0, s1, s2, s3 = grad_probs.stride()
                diag = grad_probs.as_strided((*grad_probs.shape[:2], full, bs, bs), (s0, s1, bs * (s2 + s3), s2, s3))
                diag.add_(g[:, :, :full])
                if full * bs < n:
                    r = n - full * bs
                    grad_probs[..., full * bs :, full * bs :].add_(g[:, :, full, :r, :r])
        return grad_probs, grad_value, None


_CPU_FLASH = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
_CUDA_EFFICIENT = getattr(torch.ops.aten, "_scaled_dot_product_efficient_attention", None)
# the CUDA memory-efficient kernel reads 128-bit aligned rows: head dimension and every stride of the bias but the last a
# multiple of 8 elements (SDPA's own preprocess_mask pads the bias the same way)
_CUDA_ALIGN = 8
_CUDA_FALLBACK: list[str] = []  # why the kernel was not used, reported once


def _cuda_efficient_with_lse(query, key, value, additive_mask, scaling):
    """The memory-efficient kernel's output and its own row log-sum-exp (float32; the kernel pads it along the queries
    to a multiple of 32, sliced off here), or None where the kernel cannot take the inputs."""
    B, H, n, d = query.shape
    if _CUDA_EFFICIENT is None or d % _CUDA_ALIGN or query.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        return None
    bias = F.pad(additive_mask, (0, -n % _CUDA_ALIGN))[..., :n].expand(B, H, n, n)
    try:
        out, lse = _CUDA_EFFICIENT(query, key, value, bias, True, 0.0, False, scale=scaling)[:2]
    except torch.OutOfMemoryError:
        raise
    except RuntimeError as err:  # a private kernel: an unsupported GPU or layout must cost speed, not the run
        if not _CUDA_FALLBACK:
            _CUDA_FALLBACK.append(str(err).splitlines()[0])
            warnings.warn(f"Block-Skim: CUDA efficient attention kernel unavailable ({_CUDA_FALLBACK[0]}); the "
                          "row log-sum-exp comes from the full scores (exact, O(n^2))", stacklevel=2)  # fmt: skip
        return None
    return out, lse[..., :n].float()


def _fused_attention_with_lse(query, key, value, additive_mask, scaling):
    """SDPA output [B, H, n, d] and each query's log-sum-exp over the keys [B, H, n] (float32), from a fused kernel
    that returns both (CPU flash, CUDA memory-efficient)."""
    if query.device.type == "cpu" and _CPU_FLASH is not None:
        out, lse = _CPU_FLASH(query, key, value, 0.0, False, attn_mask=additive_mask, scale=scaling)
        return out, lse.float()
    if query.device.type == "cuda" and (fused := _cuda_efficient_with_lse(query, key, value, additive_mask, scaling)):
        return fused
    # elsewhere: SDPA for the output; the row log-sum-exp from the full scores in float32 (exact, but O(n^2))
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=additive_mask, scale=scaling)
    with torch.autocast(query.device.type, enabled=False):
        scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) * scaling + additive_mask.float()
        return out, torch.logsumexp(scores, dim=-1)


def live_diagonal_blocks(query, key, lse, alive, scaling: float, bs: int) -> DiagonalBlocks:
    """The diagonal blocks that hold a live token, from queries, keys and each query's log-sum-exp:
    ``exp(Q_b K_b^T * scale - lse_b)`` with dead rows and columns at zero; O(n * bs * d) per head, no [n, n] matrix.
    Computed in float32 whatever the model's dtype or autocast (the blocks are small; bf16 rounding of the exponent
    would move probabilities by percents).

    ``query``/``key`` [B, H, n, d], ``lse`` [B, H, n], ``alive`` [B, n] bool."""
    B, H, n, _ = query.shape
    live, K = block_liveness(alive, bs)
    index = _live_index(live)
    N = index.numel()
    # each block row's token as a row of [B * n]; a ragged block's padding rows read the example's last token (masked)
    tok = (((index % K) * bs)[:, None] + torch.arange(bs, device=query.device)).clamp_max(n - 1)
    rows = (tok + (index // K * n)[:, None]).view(-1)
    tok_live = live.index_select(0, index)  # [N, bs]

    def head_rows(x: torch.Tensor) -> torch.Tensor:
        # [B, H, n, d'] -> [N * H, bs, d'] float32: whole token rows are gathered (HF's projections interleave heads
        # per token, so this reads a view of contiguous rows), then transposed in one copy
        width = x.shape[-1]
        gathered = x.transpose(1, 2).reshape(B * n, H * width).index_select(0, rows).view(N, bs, H, width)
        return gathered.transpose(1, 2).reshape(N * H, bs, width).float()

    with torch.autocast(query.device.type, enabled=False):
        # the bias of every score: -lse of its row, -inf in a dead row or column (exp() then zeroes them), built in one
        # pass; the matmul then accumulates into it in place
        dead = torch.zeros(tok_live.shape, dtype=torch.float32, device=query.device).masked_fill_(~tok_live, float("-inf"))
        neg_lse = head_rows(lse[..., None]).view(N, H, bs, 1).neg_().add_(dead[:, None, :, None])
        scores = (neg_lse + dead[:, None, None, :]).view(N * H, bs, bs)
        scores.baddbmm_(head_rows(query), head_rows(key).transpose(1, 2), alpha=scaling)
    return DiagonalBlocks(scores.view(N, H, bs, bs).exp_().contiguous(memory_format=torch.channels_last), index, B, K)


def question_attention_from_probs(probs: torch.Tensor, question: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, H, n, n] probabilities and the [B, n] bool question tokens -> [B, H, n] attention each token receives from the
    question's tokens (their mean) and [B, H, n] attention each token gives the question's tokens (their sum)."""
    with torch.autocast(probs.device.type, enabled=False):  # float32 as on the fused path, whatever the autocast
        probs, q = probs.float(), question.float()
        received = torch.matmul(q[:, None, None, :], probs).squeeze(2) / q.sum(1).clamp_min(1)[:, None, None]
        return received, torch.matmul(probs, q[:, None, :, None]).squeeze(-1)


def question_attention_from_lse(query, key, lse, question: torch.Tensor, alive: torch.Tensor, scaling: float):
    """:func:`question_attention_from_probs` from queries, keys and each query's log-sum-exp (the fused path): only the
    question's rows and columns of the probabilities, O(n * q * d) per head for q question tokens, in float32."""
    B, H, _, d = query.shape
    counts = question.sum(1)
    m = max(int(counts.max()), 1)
    # each example's question positions first, in order; the padding columns after them are zeroed
    pos = torch.sort(question.to(torch.int8), dim=1, descending=True, stable=True).indices[:, :m]
    valid = (torch.arange(m, device=query.device) < counts[:, None]).float()
    at = pos[:, None, :, None].expand(B, H, m, d)
    with torch.autocast(query.device.type, enabled=False):
        q_rows, q_keys = query.gather(2, at).float(), key.gather(2, at).float()
        rows = torch.matmul(q_rows, key.float().transpose(-1, -2)).mul_(scaling)
        rows = rows.sub_(lse.gather(2, pos[:, None, :].expand(B, H, m))[..., None]).exp_()
        rows = rows * alive[:, None, None, :] * valid[:, None, :, None]  # dead keys had no weight in the layer
        cols = torch.matmul(query.float(), q_keys.transpose(-1, -2)).mul_(scaling).sub_(lse[..., None]).exp_()
        return rows.sum(2) / counts.clamp_min(1)[:, None, None], (cols * valid[:, None, None, :]).sum(-1)


def question_block_features(
    received: torch.Tensor, given: torch.Tensor, alive: torch.Tensor, bs: int, index: torch.Tensor | None = None
) -> torch.Tensor:
    """[B, H, n] question attention per token -> [B * K, 2H] per block and head: what the question gives the block
    (summed over its live tokens) and what the block gives the question (averaged over them); the rows ``index``
    only, when given. A block without a live token has all-zero features."""
    B, H, n = received.shape
    live, K = block_liveness(alive, bs)
    live = live.view(B, K, 1, bs).float()

    def per_block(v: torch.Tensor) -> torch.Tensor:  # [B, H, n] -> [B, K, H, bs]
        return F.pad(v.float(), (0, K * bs - n)).view(B, H, K, bs).transpose(1, 2)

    to_block = (per_block(received) * live).sum(-1)
    from_block = (per_block(given) * live).sum(-1) / live.sum(-1).clamp_min(1)
    out = torch.cat([to_block, from_block], -1).view(B * K, 2 * H)
    return out if index is None else out.index_select(0, index)


def blockskim_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention that also returns the diagonal ``skim_block_size`` blocks of its probabilities
    (:class:`DiagonalBlocks`) instead of the full [B, H, n, n] weights.

    Without ``skim_block_size`` it is plain SDPA. In training the blocks come from eager attention after dropout
    (gradients reach the backbone through them, as in the original); otherwise from the fused kernel's log-sum-exp,
    for every input size (at bs 1 and n ~ 170 as fast as eager probabilities on CPU, far faster beyond). Both are exact.
    ``attention_mask`` is the encoder's [B, 1, 1, n] bool key mask. ``skim_question_mask`` ([B, n] bool, with
    ``question_attention``): the blocks also get their question-attention features.
    """
    bs = kwargs.pop("skim_block_size", None)
    question = kwargs.pop("skim_question_mask", None)
    if bs is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    additive = torch.zeros(attention_mask.shape, dtype=query.dtype, device=query.device).masked_fill(
        ~attention_mask, torch.finfo(query.dtype).min
    )
    alive = attention_mask[:, 0, 0, :]
    if module.training or torch.is_grad_enabled():
        probs = (torch.matmul(query, key.transpose(-1, -2)) * scaling + additive).softmax(-1)
        probs = F.dropout(probs, p=dropout, training=module.training)
        out, blocks = AttendWithDiagonalBlocks.apply(probs, value, bs)
        blocks = mask_blocks(blocks, alive, bs)
        if question is not None:
            blocks.question = question_block_features(*question_attention_from_probs(probs, question), alive, bs)
        return out.transpose(1, 2).contiguous(), blocks
    out, lse = _fused_attention_with_lse(query, key, value, additive, scaling)
    blocks = live_diagonal_blocks(query, key, lse, alive, scaling, bs)
    if question is not None:
        received_given = question_attention_from_lse(query, key, lse, question, alive, scaling)
        blocks.question = question_block_features(*received_given, alive, bs, blocks.index)
    return out.transpose(1, 2).contiguous(), blocks


AttentionInterface.register(ATTN_NAME, blockskim_attention)


def block_labels(
    start: torch.Tensor, end: torch.Tensor, length: int, block_size: int, min_answer_tokens: int
) -> torch.Tensor:
    """[B] gold start/end token indices -> [B, K] long labels (1 = block holds >= min_answer_tokens answer tokens)."""
    K = -(-length // block_size)
    counts = answer_mask(start, end, K * block_size).view(-1, K, block_size).sum(-1)
    return (counts >= min_answer_tokens).long()


@register
class BlockSkim(SkimStrategy):
    name = "blockskim"
    config_class = BlockSkimConfig
    supported_tasks = ("qa",)
    requires_attention_probs = True
    attn_implementation = ATTN_NAME

    def __init__(self, cfg: BlockSkimConfig):
        super().__init__(cfg)
        if cfg.min_answer_tokens < 1:
            raise ConfigError(f"skim.min_answer_tokens must be >= 1, got {cfg.min_answer_tokens}")
        for name, values in (("threshold", [cfg.threshold]), ("layer_thresholds", cfg.layer_thresholds or [])):
            if not all(0.0 <= t <= 1.0 for t in values):
                raise ConfigError(f"skim.{name} holds probabilities in [0, 1], got {getattr(cfg, name)}")
        layers = cfg.skim_layers
        if cfg.layer_thresholds is not None and layers is not None and list(layers) != sorted(set(layers)):
            raise ConfigError(f"skim.layer_thresholds pairs with skim.skim_layers in ascending order without repeats, "
                              f"got skim_layers={list(layers)}")  # fmt: skip
        self.skimmed_logit = cfg.skimmed_logit
        self.predictors = nn.ModuleDict()
        self.skim_layers: list[int] = []

    def attach(self, encoder: AttachedEncoder) -> None:
        super().attach(encoder)
        self.skim_layers = self.resolve_layers(self.cfg.skim_layers, encoder.num_layers)
        if self.cfg.layer_thresholds is not None and len(self.cfg.layer_thresholds) != len(self.skim_layers):
            raise ConfigError(f"skim.layer_thresholds needs one threshold per skim layer ({len(self.skim_layers)}: "
                              f"{self.skim_layers}), got {len(self.cfg.layer_thresholds)}")  # fmt: skip
        heads = encoder.backbone.config.num_attention_heads
        question = 2 * heads if self.cfg.question_attention else 0
        for i in self.skim_layers:
            self.predictors[str(i)] = BlockPredictor(heads, self.cfg.block_size, question)

    @classmethod
    def check_compatible(cls, task: str, attn_implementation: str) -> None:
        if attn_implementation == ATTN_NAME:
            attn_implementation = "auto"
        super().check_compatible(task, attn_implementation)

    def threshold(self, layer: int) -> float:
        """Keep a block of ``layer`` iff its P(keep) >= this."""
        if self.cfg.layer_thresholds is None:
            return self.cfg.threshold
        return self.cfg.layer_thresholds[self.skim_layers.index(layer)]

    def needs_attention_probs(self, layer: int) -> bool:
        return layer in self.skim_layers

    def layer_kwargs(self, state: SkimState) -> dict[str, Any]:
        # read by blockskim_attention (ignored by HF's eager attention, which returns the full probabilities)
        if state.layer not in self.skim_layers:
            return {}
        if self.cfg.question_attention:
            return {"skim_block_size": self.cfg.block_size, "skim_question_mask": self._question(state)}
        return {"skim_block_size": self.cfg.block_size}

    @staticmethod
    def _question(state: SkimState) -> torch.Tensor:
        """[B, n] bool: the live protected tokens ([CLS], question, [SEP]) of the current sequence."""
        return state.gather_full(state.protect_full) & state.alive

    def _skimming(self) -> bool:
        return (not self.training) or self.cfg.skim_in_training

    def after_layer(self, state: SkimState, attn_probs: torch.Tensor | None) -> torch.Tensor | None:
        i = state.layer
        if i not in self.skim_layers:
            return None
        bs = self.cfg.block_size
        blocks = attn_probs
        if not isinstance(blocks, DiagonalBlocks):  # HF eager attention: the full [B, H, n, n] probabilities
            blocks = diagonal_blocks(attn_probs, state.alive, bs, live_only=not self.training)
            if self.cfg.question_attention:
                received_given = question_attention_from_probs(attn_probs, self._question(state))
                blocks.question = question_block_features(*received_given, state.alive, bs, blocks.index)
        logits = self.predictors[str(i)].block_logits(blocks)
        B, K = blocks.batch, blocks.num_blocks
        n = state.alive.shape[1]
        pad = K * bs - n
        valid = block_liveness(state.alive, bs)[0].any(-1).view(B, K)  # blocks with at least one live token
        # original block index of each chunk: the position of its first live token
        pos_b = F.pad(state.pos, (0, pad)).view(B, K, bs)[..., 0] // bs
        state.extras.setdefault("block_logits", {})[i] = (logits, pos_b, valid)
        if not self._skimming():
            return None

        p_keep = logits.float().softmax(-1)[..., 1]
        keep = p_keep >= self.threshold(i)
        if self.cfg.protect_special:
            prot = F.pad(state.gather_full(state.protect_full), (0, pad)).view(B, K, bs).any(-1)
            keep = keep | prot
        if self.cfg.batch_align:
            # the original: every example keeps its top-m blocks, m = the largest kept count in the batch
            m = int((keep & valid).sum(1).max())
            score = torch.where(valid, p_keep, torch.full_like(p_keep, -1.0))
            if self.cfg.protect_special:
                score = torch.where(prot, torch.full_like(score, 2.0), score)
            top = score.topk(max(m, 1), dim=1).indices
            keep = torch.zeros_like(keep).scatter(1, top, True)
        state.extras.setdefault("block_keep", {})[i] = keep
        return keep.repeat_interleave(bs, dim=1)[:, :n]

    def predictor_tokens(self, out: EncoderOutput) -> torch.Tensor:
        """The layer's tokens [L, B]; with ``question_attention`` [L, B, 2]: also its live protected tokens, whose rows
        and columns of the probabilities the question features are computed from."""
        tokens = super().predictor_tokens(out)
        return torch.stack([tokens, out.special_per_layer], -1) if self.cfg.question_attention else tokens

    def predictor_macs(self, layer: int, tokens: torch.Tensor, hidden: int) -> torch.Tensor | int:
        """CNN cost on the ceil(tokens / bs) blocks that enter layer ``layer``'s predictor (BN/ReLU/pool ignored); with
        ``question_attention`` (``tokens`` [B, 2]: tokens, question tokens q) also the question's rows and columns of
        the attention scores, 2 * q * tokens * hidden over all heads, and the Linear's share of the 2H features."""
        if layer not in self.skim_layers:
            return 0
        question = None
        if self.cfg.question_attention:
            tokens, question = tokens[..., 0], tokens[..., 1]
        bs = self.cfg.block_size
        heads = self.predictors[str(layer)].conv1.in_channels
        per_block = heads * heads * 9 * bs * bs + heads * heads * 9 * (bs // 2) ** 2 + heads * (bs // 4) ** 2 * 2
        if question is None:
            return -(-tokens // bs) * per_block
        return -(-tokens // bs) * (per_block + 2 * heads * 2) + 2 * question * tokens * hidden

    # ---- training loss -----------------------------------------------------------------------------------
    def _labels_for(self, batch: dict[str, torch.Tensor], length: int) -> torch.Tensor:
        if "start_positions" not in batch:
            raise ConfigError("skim=blockskim needs answer spans (start_positions/end_positions) in the batch")
        return block_labels(
            batch["start_positions"], batch["end_positions"], length, self.cfg.block_size, self.cfg.min_answer_tokens
        )

    def _labelled_blocks(self, out: EncoderOutput, batch: dict[str, torch.Tensor]):
        """(layer, [B, K, 2] logits, [B, K] labels, [B, K] valid) for every layer whose predictor ran."""
        found = out.extras.get("block_logits")
        if not found or "start_positions" not in batch:
            return []
        labels_full = self._labels_for(batch, out.final_keep.shape[1])
        last = labels_full.shape[1] - 1
        return [(i, logits, labels_full.gather(1, pos_b.clamp_max(last)), valid) for i, (logits, pos_b, valid) in found.items()]

    def aux_losses(self, out: EncoderOutput, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        found = self._labelled_blocks(out, batch)
        if not found:
            return {}
        weight = torch.tensor([1.0, self.cfg.balance_factor], device=out.final_keep.device)
        total = 0.0
        for _i, logits, labels, valid in found:
            if self.cfg.ignore_padding_blocks:
                labels = labels.masked_fill(~valid, -100)
            # the original: SUM over layers of a class-weighted mean CE
            total = total + F.cross_entropy(logits.float().reshape(-1, 2), labels.reshape(-1), weight=weight, ignore_index=-100)
        return {"skim_loss": self.cfg.skim_factor * total}

    def train_diagnostics(self, out: EncoderOutput, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per layer, on blocks holding real tokens: unweighted CE, mean P(keep) of answer and other blocks, and
        precision / recall of ``P(keep) >= threshold``: does the predictor separate answer blocks while training?"""
        res: dict[str, torch.Tensor] = {}
        for i, logits, labels, valid in self._labelled_blocks(out, batch):
            logits, labels, pos = logits.float()[valid], labels[valid], labels[valid].bool()
            p = logits.softmax(-1)[:, 1]
            pred = p >= self.threshold(i)
            res[f"block_ce_layer{i}"] = F.cross_entropy(logits, labels)
            res[f"block_p_answer_layer{i}"] = p[pos].mean() if pos.any() else p.new_tensor(float("nan"))
            res[f"block_p_other_layer{i}"] = p[~pos].mean() if (~pos).any() else p.new_tensor(float("nan"))
            res[f"block_precision_layer{i}"] = (pred & pos).sum() / pred.sum().clamp_min(1)
            res[f"block_recall_layer{i}"] = (pred & pos).sum() / pos.sum().clamp_min(1)
        return res

    # ---- evaluation: block-classifier statistics per layer -----------------------------------------------
    #: P(keep) histogram edges: the ranking quality (AUC) and the kept share at any threshold follow from them
    P_EDGES = (0.0, 1e-4, 1e-3, 3e-3, 0.01, 0.03, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999)
    _STATS = 4 + 2 * len(P_EDGES)  # TP, FP, FN, TN, then the histograms of answer and of other blocks

    def eval_stat_size(self) -> int:
        return self._STATS * self.num_layers

    def eval_stats(self, out: EncoderOutput, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        stats = torch.zeros(self._STATS * self.num_layers, device=out.final_keep.device)
        edges = torch.tensor(self.P_EDGES, device=stats.device)
        nb = len(self.P_EDGES)
        for i, logits, labels, valid in self._labelled_blocks(out, batch):
            p = logits.float().softmax(-1)[..., 1][valid]
            labels = labels.bool()[valid]
            pred = p >= self.threshold(i)
            o = self._STATS * i
            stats[o + 0] = (pred & labels).sum()
            stats[o + 1] = (pred & ~labels).sum()
            stats[o + 2] = (~pred & labels).sum()
            stats[o + 3] = (~pred & ~labels).sum()
            bins = torch.bucketize(p, edges, right=True) - 1
            stats[o + 4 : o + 4 + nb] = torch.bincount(bins[labels], minlength=nb)[:nb].float()
            stats[o + 4 + nb : o + 4 + 2 * nb] = torch.bincount(bins[~labels], minlength=nb)[:nb].float()
        return stats

    def format_eval_stats(self, totals: torch.Tensor) -> dict[str, float]:
        res: dict[str, float] = {}
        nb = len(self.P_EDGES)
        for i in self.skim_layers:
            o = self._STATS * i
            tp, fp, fn, _tn = (float(x) for x in totals[o : o + 4])
            res[f"block_precision_layer{i}"] = tp / (tp + fp) if tp + fp else 0.0
            res[f"block_recall_layer{i}"] = tp / (tp + fn) if tp + fn else 0.0
            res[f"block_answer_share_layer{i}"] = (tp + fn) / max(float(totals[o : o + 4].sum()), 1.0)
            auc = histogram_auc(totals[o + 4 : o + 4 + nb], totals[o + 4 + nb : o + 4 + 2 * nb])
            if auc is not None:
                res[f"block_auc_layer{i}"] = auc
        return res

    def eval_report(self, totals: torch.Tensor) -> dict[str, Any]:
        """Per layer: P(keep) histograms of answer and of other real blocks (bins start at ``P_EDGES``)."""
        nb = len(self.P_EDGES)
        per_layer = self.cfg.layer_thresholds is not None
        out: dict[str, Any] = {"threshold": None if per_layer else self.cfg.threshold, "p_edges": list(self.P_EDGES)}
        if per_layer:
            out["layer_thresholds"] = dict(zip(self.skim_layers, self.cfg.layer_thresholds))
        for i in self.skim_layers:
            o = self._STATS * i
            out[f"layer{i}"] = {
                "answer": totals[o + 4 : o + 4 + nb].tolist(),
                "other": totals[o + 4 + nb : o + 4 + 2 * nb].tolist(),
            }
        return out


def histogram_auc(pos: torch.Tensor, neg: torch.Tensor) -> float | None:
    """ROC AUC from two histograms over the same ascending bins (ties within a bin count one half)."""
    pos, neg = pos.double(), neg.double()
    if pos.sum() == 0 or neg.sum() == 0:
        return None
    neg_below = torch.cumsum(neg, 0) - neg
    return float((pos * (neg_below + 0.5 * neg)).sum() / (pos.sum() * neg.sum()))
