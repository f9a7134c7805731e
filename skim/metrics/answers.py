"""What skimming left of the gold answers in extractive QA, for any strategy: a validation statistic beside EM/F1 that
says how much of a speed-up's cost in F1 is answers removed before the span head could score them."""

from __future__ import annotations

import torch

from skim.state import EncoderOutput


def answer_mask(start: torch.Tensor, end: torch.Tensor, length: int) -> torch.Tensor:
    """[B] gold start/end token indices -> [B, length] bool: the tokens of each gold answer span."""
    pos = torch.arange(length, device=start.device)
    return (pos[None] >= start[:, None]) & (pos[None] <= end[:, None])


def answer_reached(keep: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """[B] bool: whether each gold answer's first and last tokens are both in ``keep`` ([B, L] bool); for a feature
    without its answer (start = end = 0) that is whether [CLS] was kept."""
    return keep.gather(1, torch.stack([start, end], 1)).all(1)


def answer_survival(out: EncoderOutput, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """Counts of what skimming left of the gold answers, over the features that hold theirs (start > 0; [CLS] marks
    a feature without its answer): [answer tokens entering each layer..., answer tokens after the last layer, all
    answer tokens, features, features whose answer's first and last tokens both reached the output]. The span read
    off those two covers the answer whatever skimming did between them; where skimmed tokens cannot be the answer
    (``skimmed_logit``: Block-Skim, Transkimmer ``exclude``, PoWER-BERT, LTP) a feature without them cannot give
    its exact gold span."""
    has = start > 0
    span = answer_mask(start, end, out.final_keep.shape[1]) & has[:, None]  # [B, L]
    entering = (out.alive_per_layer & span).sum((1, 2))  # [layers]
    reached = (out.final_keep & span).sum()
    ends = answer_reached(out.final_keep, start, end) & has
    return torch.cat([entering, torch.stack([reached, span.sum(), has.sum(), ends.sum()])])


def answer_recall(counts: torch.Tensor) -> dict[str, float]:
    """``answer_kept_layer{i}``: the share of gold-answer tokens entering layer i (``answer_kept_output``: after the
    last layer); ``answer_reachable``: the share of answer-holding features whose answer's first and last tokens
    reached the output."""
    *entering, reached, tokens, features, reachable = counts.tolist()
    if not tokens:
        return {}
    return {**{f"answer_kept_layer{i}": n / tokens for i, n in enumerate(entering)},
            "answer_kept_output": reached / tokens, "answer_reachable": reachable / features}  # fmt: skip
