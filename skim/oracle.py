"""``python -m skim.oracle``: what block skimming can gain on a QA dev set, and what its labels ask of a predictor.

Reads the evaluation features of ``data`` (no model is run) and writes ``oracle.json`` / ``oracle.md`` into the run
directory:

* **Labels**: share of features whose answer lies in the window, of one-token answers, of features with a positive
  block under the faithful rule (a block needs 2 answer tokens) and the fixed one (1), and the share of real
  blocks that are answer blocks (what a predictor with recall 1 must keep at least).
* **Analytic encoder speed-ups** for block-level oracles, per encoder shape, against the dense model with dynamic
  padding and padded to ``max_seq_length``:
  ``answer_after_k`` keeps the [CLS]/question blocks and the gold answer blocks from layer k on;
  ``padding_after_k`` keeps every block holding a real token: the dense model minus padding blocks, the whole
  gain of a predictor that has only learnt "padding is not the answer".
"""

from __future__ import annotations

import hydra
import torch
from omegaconf import DictConfig

import skim  # noqa: F401
from skim.errors import ConfigError
from skim.metrics.flops import EncoderShape, layer_macs
from skim.tasks.base_module import check_targets
from skim.utils.config_store import register_configs
from skim.utils.run import git_commit, hydra_overrides, run_cli, task_wrapper, write_report

register_configs()


def feature_blocks(feat: dict, block_size: int) -> dict[str, torch.Tensor]:
    """Per 32-token block of one feature: real tokens, holds a protected token, answer tokens it holds."""
    mask = torch.tensor(feat["attention_mask"])
    n = len(mask)
    K = -(-n // block_size)
    pad = K * block_size - n
    real = torch.nn.functional.pad(mask, (0, pad)).view(K, block_size).sum(1)
    question = torch.tensor(feat["protect_mask"])
    question[int(mask.sum()) - 1] = 0  # the closing [SEP] alone does not make the last block worth keeping
    protect = torch.nn.functional.pad(question, (0, pad)).view(K, block_size).any(1)
    t = torch.arange(K * block_size)
    s, e = feat["start_positions"], feat["end_positions"]
    in_window = not (s == e == 0)  # features without the answer are labelled at [CLS] (position 0)
    answer = ((t >= s) & (t <= e) & in_window).view(K, block_size).sum(1)
    return {"real": real, "protect": protect, "answer": answer, "in_window": torch.tensor(in_window), "span": torch.tensor(e - s + 1)}


def oracle_report(features, shapes: dict[str, EncoderShape], max_len: int, block_size: int, after: list[int]) -> dict:
    blocks = [feature_blocks(f, block_size) for f in features]
    n_feat = len(blocks)
    in_win = [b for b in blocks if bool(b["in_window"])]
    real_blocks = sum(int((b["real"] > 0).sum()) for b in blocks)
    labels = {
        "features": n_feat,
        "real_tokens_mean": sum(int(b["real"].sum()) for b in blocks) / n_feat,
        "real_blocks_mean": real_blocks / n_feat,
        "padded_blocks": -(-max_len // block_size),
        "answer_in_window": len(in_win) / n_feat,
        "one_token_answers": sum(int(b["span"]) == 1 for b in in_win) / max(len(in_win), 1),
    }
    for rule in (1, 2):
        labels[f"features_with_positive_block_rule{rule}"] = sum(bool((b["answer"] >= rule).any()) for b in in_win) / max(len(in_win), 1)
        labels[f"positive_share_of_real_blocks_rule{rule}"] = sum(int((b["answer"] >= rule).sum()) for b in blocks) / real_blocks
    labels["protected_share_of_real_blocks"] = sum(int(b["protect"].sum()) for b in blocks) / real_blocks

    real_n = torch.tensor([float(b["real"].sum()) for b in blocks])
    answer_n = torch.tensor([float(b["real"][b["protect"] | (b["answer"] > 0)].sum()) for b in blocks])
    # the original skims whole blocks: a kept ragged last block still carries its padding
    block_n = torch.tensor([float(block_size * int((b["real"] > 0).sum())) for b in blocks]).clamp(max=max_len)
    padded_n = torch.full_like(real_n, float(max_len))
    speedups: dict[str, dict[str, float]] = {}
    for name, shape in shapes.items():
        L = shape.layers
        dense_dyn = L * layer_macs(real_n, shape).sum()
        dense_pad = L * layer_macs(padded_n, shape).sum()
        res = {}
        for k in after:
            if not 1 <= k < L:
                raise ConfigError(f"oracle_after must hold layers in 1..{L - 1} for {name}, got {k}")
            # each oracle is fed what its dense reference is fed: real tokens, or inputs padded to max_seq_length
            answer = (L - k) * layer_macs(answer_n, shape).sum()
            res[f"answer_after_{k}_vs_dynamic"] = float(dense_dyn / (k * layer_macs(real_n, shape).sum() + answer))
            res[f"answer_after_{k}_vs_padded"] = float(dense_pad / (k * layer_macs(padded_n, shape).sum() + answer))
            # the original's setting: padding blocks dropped after layer k, every real block kept
            pad_only = k * layer_macs(padded_n, shape).sum() + (L - k) * layer_macs(block_n, shape).sum()
            res[f"padding_after_{k}_vs_padded"] = float(dense_pad / pad_only)
        speedups[name] = res
    return {"labels": labels, "speedups": speedups}


def to_markdown(report: dict, max_len: int) -> str:
    lines = [f"# Block-skim oracle (max_seq_length {max_len})", "", "| label statistic | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" if isinstance(v, int) else f"| {k} | {v:.4f} |" for k, v in report["labels"].items()]
    lines += ["", "| shape | oracle | analytic encoder speed-up |", "|---|---|---|"]
    for name, res in report["speedups"].items():
        lines += [f"| {name} | {k} | {v:.2f}x |" for k, v in res.items()]
    return "\n".join(lines) + "\n"


def run_oracle(cfg: DictConfig) -> dict:
    from hydra.utils import instantiate
    from transformers import AutoConfig

    check_targets(cfg)
    dm = instantiate(cfg.data)
    if dm.task != "qa":
        raise ConfigError(f"skim.oracle needs an extractive-QA data config (data.task=qa), got data.task={dm.task!r}")
    dm.setup("validate")
    shapes = {cfg.model.name: EncoderShape.of(AutoConfig.from_pretrained(cfg.model.pretrained_name_or_path))}
    for name, dims in (cfg.get("extra_shapes") or {}).items():
        shapes[name] = EncoderShape(*dims)
    feats = dm.eval_dataset.select_columns(["attention_mask", "protect_mask", "start_positions", "end_positions"])
    report = oracle_report(list(feats), shapes, dm.max_seq_length, cfg.block_size, list(cfg.oracle_after))
    record = {"overrides": hydra_overrides(), "git_commit": git_commit(), "data_info": dm.describe(), **report}
    write_report(cfg.paths.output_dir, "oracle", record, to_markdown(report, dm.max_seq_length))
    return {}


@hydra.main(version_base="1.3", config_path="../conf", config_name="oracle")
def main(cfg: DictConfig) -> None:
    task_wrapper(run_oracle)(cfg)


if __name__ == "__main__":
    run_cli(main)
