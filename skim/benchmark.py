"""``python -m skim.benchmark``: time a skimming model against the dense model on the same real batches.

Both models share the backbone weights and run in one process on the same evaluation batches (the data config's
padding policy). For every batch size, dtype and dense attention kernel it reports sequences/s, latency p50/p90,
analytic FLOPs, the measured speed-up (dense time / skim time) and realised/analytic ratio, and writes
``benchmark.json`` and ``benchmark.md`` into the run directory (device name, library versions, padding policy).

Model: a trained checkpoint (``ckpt_path=...``), or a model shape with random weights and a fixed keep schedule:
    python -m skim.benchmark model=bert-base model.random_init=true skim=truncate skim.keep_after=1 skim.keep_ratio=0.333
"""

from __future__ import annotations

import copy
import logging
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

import skim
from skim.errors import ConfigError
from skim.metrics.flops import EncoderShape, encoder_macs, head_macs
from skim.tasks.base_module import validate_config
from skim.tasks.checkpoint import load_task_module, read_checkpoint
from skim.utils.config_store import register_configs
from skim.utils.run import append_result, run_cli, run_record, task_wrapper, write_json

log = logging.getLogger("skim.benchmark")
register_configs()

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but no CUDA device is available")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def build_modules(cfg: DictConfig, datamodule) -> tuple[Any, Any]:
    """(skim module, dense module) sharing weights; from a checkpoint or from the model/skim configs."""
    from hydra.utils import get_class, instantiate

    extra = {}
    if datamodule.task == "cls":
        extra = {"num_labels": datamodule.num_labels, "is_regression": datamodule.is_regression, "metric_names": datamodule.metric_names}
    if cfg.get("ckpt_path"):
        skim_mod = load_task_module(cfg)
    else:
        skim_mod = instantiate(cfg.module, **extra)
    dense_cfg = copy.deepcopy(OmegaConf.to_container(cfg.module, resolve=True))
    dense_cfg["skim"] = {"name": "none"}
    dense_cfg["model"] = dict(skim_mod.hparams["model"])
    dense_cfg["model"]["attn_implementation"] = "sdpa"
    dense_cfg["model"]["random_init"] = True  # weights are copied below: never load them twice
    dense_cfg.pop("_convert_", None)
    dense_mod = get_class(dense_cfg.pop("_target_"))(**dense_cfg, **extra)
    missing, _ = dense_mod.load_state_dict(skim_mod.state_dict(), strict=False)
    if missing:
        raise RuntimeError(f"dense model misses weights of the skim model: {missing[:5]}")
    return skim_mod.eval(), dense_mod.eval()


def set_attn(module, impl: str) -> None:
    module.encoder.backbone.config._attn_implementation = impl


@torch.inference_mode()
def time_models(runs: list[tuple], batches: list[dict], device, dtype, warmup: int, repeats: int = 1) -> list[dict[str, Any]]:
    """Time every run ``(module, attention implementation, mode)`` on every batch.

    Each batch is timed ``repeats`` times per run, the runs taking turns batch by batch, and its fastest time is kept:
    a shared machine's slow phases then fall on all runs alike and a repeat outside them is what counts. ``repeats=1``
    is one timed call per batch and run."""
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else torch.autocast(device.type, enabled=False)
    best = [[float("inf")] * len(batches) for _ in runs]
    outputs: list[list] = [[] for _ in runs]
    with autocast:
        # whole passes over the timed batches: every shape the timing sees has had its shape-specific kernels built
        # (oneDNN convolution primitives, cuDNN autotuning), so first-call costs are not timed for either model
        for module, impl, mode in runs:
            set_attn(module, impl)
            for _ in range(max(warmup, 0)):
                for b in batches:
                    module(b, mode=mode)
        _sync(device)
        for repeat in range(repeats):
            for j, b in enumerate(batches):
                for r, (module, impl, mode) in enumerate(runs):
                    set_attn(module, impl)
                    t0 = time.perf_counter()
                    out = module(b, mode=mode)
                    _sync(device)
                    best[r][j] = min(best[r][j], time.perf_counter() - t0)
                    if repeat == 0:
                        outputs[r].append((out[-1], b))
    n_seq = sum(b["input_ids"].shape[0] for b in batches)
    timed = []
    for lat, rows in zip(best, outputs):
        q = statistics.quantiles(lat, n=10) if len(lat) >= 2 else [lat[0]] * 9
        timed.append({
            "seconds": sum(lat), "sequences_per_s": n_seq / sum(lat),
            "latency_p50_ms": 1e3 * statistics.median(lat), "latency_p90_ms": 1e3 * q[8], "outputs": rows,
        })  # fmt: skip
    return timed


def analytic_gflops(module, rows, mode: str = "prune") -> tuple[float, float, list[float], float]:
    """Per-example analytic GFLOPs of the skim model and of the dense model on the same examples; kept ratios; and the
    analytic speed-up *as the batches run*: every example of a batch costs the batch's width at each layer (the dense
    model its padded length, the skim model the longest kept example, since prune mode packs to it), so the speed-up a
    batched pruned model can reach, and realised / this factor is the implementation's own efficiency."""
    shape = EncoderShape.of(module.encoder.backbone.config)
    strategy, task, hidden = module.strategy, module.task, shape.hidden
    num_labels = getattr(module, "num_labels", None) or 2
    skim_total = dense_total = skim_padded = dense_padded = 0.0
    n = 0
    kept_sum = None
    real_sum = 0.0
    for out, batch in rows:
        kept = out.kept_per_layer.cpu()
        real = out.real_tokens.cpu()
        layers = encoder_macs(kept, shape, input_tokens=real)
        # the predictors run on live blocks / tokens only, so they cost the same as counted and as run
        predictors_and_head = (
            encoder_macs(kept, shape, lambda i, t: strategy.predictor_macs(i, t, hidden), strategy.predictor_tokens(out).cpu(), input_tokens=real)
            - layers + head_macs(task, out.final_keep.sum(1).cpu(), shape, num_labels)
        )
        skim = layers + predictors_and_head
        dense = encoder_macs(real[None].expand_as(kept), shape) + head_macs(task, real, shape, num_labels)
        padded = torch.full_like(real, batch["input_ids"].shape[1])
        # mask mode keeps the full length; prune mode packs every layer to the longest kept example
        width = kept.max(1, keepdim=True).values.expand_as(kept) if mode == "prune" else padded[None].expand_as(kept)
        skim_padded += 2 * float((encoder_macs(width, shape, input_tokens=padded) + predictors_and_head).sum())
        dense_padded += 2 * float((encoder_macs(padded[None].expand_as(kept), shape) + head_macs(task, padded, shape, num_labels)).sum())
        skim_total += 2 * float(skim.sum())
        dense_total += 2 * float(dense.sum())
        n += real.numel()
        k = kept.double().sum(1)
        kept_sum = k if kept_sum is None else kept_sum + k
        real_sum += float(real.sum())
    return skim_total / n / 1e9, dense_total / n / 1e9, (kept_sum / real_sum).tolist(), dense_padded / skim_padded


def make_batches(datamodule, batch_size: int, num_batches: int, device) -> list[dict]:
    ds = datamodule.eval_dataset
    loader = datamodule.benchmark_loader(batch_size) if hasattr(datamodule, "benchmark_loader") else None
    if loader is None:
        raise ConfigError(f"{type(datamodule).__name__} cannot build benchmark batches")
    batches = []
    for b in loader:
        if b["input_ids"].shape[0] < batch_size:
            break
        batches.append({k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()})
        if len(batches) >= num_batches:
            break
    if not batches:
        raise ConfigError(f"the evaluation set has fewer than {batch_size} features ({len(ds)}); lower batch_sizes")
    return batches


def check_options(cfg: DictConfig) -> None:
    """The benchmark's own options, checked before any data or model is built."""
    for key in ("batch_sizes", "dtypes", "dense_attention"):
        if not OmegaConf.is_list(cfg[key]) or not len(cfg[key]):
            raise ConfigError(f"{key} must be a non-empty list, e.g. {key}=[a,b], got {cfg[key]!r}")
    for key, values in (("batch_sizes", list(cfg.batch_sizes)), ("num_batches", [cfg.num_batches]), ("warmup", [cfg.warmup]), ("repeats", [cfg.repeats])):
        low = 0 if key == "warmup" else 1
        bad = [v for v in values if not isinstance(v, int) or isinstance(v, bool) or v < low]
        if bad:
            raise ConfigError(f"{key}: {bad[0]!r} is not an integer >= {low}")
    for dt in cfg.dtypes:
        if dt not in DTYPES:
            raise ConfigError(f"dtypes: unknown {dt!r}; use {sorted(DTYPES)}")
    for impl in cfg.dense_attention:
        if impl not in ("eager", "sdpa"):
            raise ConfigError(f"dense_attention: unknown {impl!r}; use eager and/or sdpa")
    if not OmegaConf.is_list(cfg.skim_attention) or not len(cfg.skim_attention):
        raise ConfigError(f"skim_attention must be a non-empty list, e.g. skim_attention=[auto,eager], got {cfg.skim_attention!r}")
    for impl in cfg.skim_attention:
        if impl not in ("auto", "eager", "sdpa"):
            raise ConfigError(f"skim_attention: unknown {impl!r}; use auto (the strategy's own), eager and/or sdpa")
    keep = cfg.get("calibrate_keep_ratio")
    if keep is not None and not (isinstance(keep, (int, float)) and not isinstance(keep, bool) and 0 < keep < 1):
        raise ConfigError(f"calibrate_keep_ratio must be a number in (0, 1), got {keep!r}")
    if keep is not None and cfg.get("ckpt_path"):
        raise ConfigError("calibrate_keep_ratio is for untrained predictors; a trained checkpoint keeps its own threshold")
    if keep is not None and cfg.skim.get("layer_thresholds") is not None:
        raise ConfigError("calibrate_keep_ratio sets one threshold for every layer: unset skim.layer_thresholds")



def resolve_skim_attention(module, requested: str) -> str:
    """``auto``: the attention the skim model was built with (a strategy's own attention function, if it has one)."""
    if requested == "auto":
        return module.encoder.backbone.config._attn_implementation
    module.strategy.check_compatible(module.task, requested)
    return requested


@torch.inference_mode()
def calibrate_threshold(module, batch: dict, keep_ratio: float) -> float:
    """Untrained Block-Skim predictors: the threshold at which the first skim layer keeps ``keep_ratio`` of the real
    blocks of ``batch`` (midway between two blocks' P(keep), so no block sits on it), so that a random-init predictor
    makes a real keep decision of a known size."""
    strategy = module.strategy
    if not hasattr(strategy.cfg, "threshold") or not getattr(strategy, "skim_layers", None):
        raise ConfigError(f"calibrate_keep_ratio needs a strategy with block predictors and a threshold (skim={strategy.name})")
    saved = strategy.cfg.threshold
    strategy.cfg.threshold = 0.0
    try:
        out = module(batch, mode="prune")[-1]
    finally:
        strategy.cfg.threshold = saved
    if "block_logits" not in out.extras:
        raise ConfigError(f"calibrate_keep_ratio needs a strategy that reports block logits (skim={strategy.name})")
    logits, _, valid = out.extras["block_logits"][strategy.skim_layers[0]]
    p_keep = logits.double().softmax(-1)[..., 1][valid].sort(descending=True).values
    m = min(max(round(keep_ratio * p_keep.numel()), 1), p_keep.numel())
    return float(p_keep[m - 1] if m == p_keep.numel() else (p_keep[m - 1] + p_keep[m]) / 2)


def benchmark(cfg: DictConfig) -> dict:
    from hydra.utils import instantiate
    from tqdm.auto import tqdm

    validate_config(cfg)
    check_options(cfg)
    if cfg.get("ckpt_path"):
        read_checkpoint(cfg.ckpt_path, "ckpt_path")
    torch.manual_seed(cfg.seed)
    device = _device(cfg.device)
    out_dir = Path(cfg.paths.output_dir)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("validate")
    skim_mod, dense_mod = build_modules(cfg, datamodule)
    skim_mod.to(device)
    dense_mod.to(device)
    # model.length_groups (also from a checkpoint's config) for both models alike: with it the dense model pays no
    # batch padding either
    length_groups = dense_mod.encoder.length_groups = skim_mod.encoder.length_groups
    if cfg.get("calibrate_keep_ratio") is not None:
        first = make_batches(datamodule, max(cfg.batch_sizes), 1, device)[0]
        skim_mod.strategy.cfg.threshold = calibrate_threshold(skim_mod, first, cfg.calibrate_keep_ratio)
        log.info("calibrated skim.threshold=%.8g (keeps %.3f of the first skim layer's blocks)", skim_mod.strategy.cfg.threshold, cfg.calibrate_keep_ratio)
    skim_impls = list(dict.fromkeys(resolve_skim_attention(skim_mod, a) for a in cfg.skim_attention))
    built_impl = skim_mod.encoder.backbone.config._attn_implementation
    combos = [(bs, dt) for bs in cfg.batch_sizes for dt in cfg.dtypes]
    results = []
    bar = tqdm(total=len(combos) * (len(skim_impls) + len(cfg.dense_attention)), desc="benchmark", disable=not cfg.progress_bar)
    for bs, dt in combos:
        if dt != "fp32" and device.type == "cpu" and dt == "fp16":
            raise ConfigError("fp16 autocast is not supported on CPU; use bf16")
        batches = make_batches(datamodule, bs, cfg.num_batches, device)
        dtype = DTYPES[dt]
        runs = [(dense_mod, attn, "prune") for attn in cfg.dense_attention]
        runs += [(skim_mod, impl, skim_mod.strategy.cfg.eval_mode) for impl in skim_impls]
        timed = time_models(runs, batches, device, dtype, cfg.warmup, cfg.repeats)
        bar.update(len(runs))
        dense = dict(zip(cfg.dense_attention, timed))
        for d in dense.values():
            d.pop("outputs")
        for impl, skim_t in zip(skim_impls, timed[len(cfg.dense_attention):]):
            skim_gf, dense_gf, kept, as_run = analytic_gflops(skim_mod, skim_t.pop("outputs"), skim_mod.strategy.cfg.eval_mode)
            row = {
                "batch_size": bs,
                "dtype": dt,
                "skim": skim_t | {"attn": impl, "gflops_per_example": skim_gf},
                "kept_ratio_per_layer": kept,
                "dense": {},
            }
            for attn, d in dense.items():
                speed = d["seconds"] / skim_t["seconds"]
                analytic = dense_gf / skim_gf
                row["dense"][attn] = d | {
                    "gflops_per_example": dense_gf, "speedup": speed, "analytic_speedup": analytic, "realised_over_analytic": speed / analytic,
                    # "as run" models one padded width per batch, which length groups do not have
                    "analytic_speedup_as_run": None if length_groups else as_run,
                    "realised_over_as_run": None if length_groups else speed / as_run,
                }
            results.append(row)
        set_attn(skim_mod, built_impl)
    bar.close()
    report = {
        "device": device_name(device),
        "versions": _versions(),
        "padding": datamodule.padding,
        "data": datamodule.describe(),
        "model": skim_mod.hparams["model"].get("name"),
        "skim": OmegaConf.to_container(cfg.skim, resolve=True) if not cfg.get("ckpt_path") else dict(skim_mod.hparams["skim"] or {}),
        "ckpt_path": cfg.get("ckpt_path"),
        "calibrated_threshold": skim_mod.strategy.cfg.threshold if cfg.get("calibrate_keep_ratio") is not None else None,
        "num_batches": cfg.num_batches,
        "warmup": cfg.warmup,
        "repeats": cfg.repeats,
        "length_groups": length_groups,
        "results": results,
    }
    write_json(out_dir / "benchmark.json", report)
    md = markdown(report)
    (out_dir / "benchmark.md").write_text(md)
    print(md)
    flat = flat_metrics(report)
    if cfg.get("results_file"):
        append_result(cfg.results_file, run_record(cfg, flat, {"padding": datamodule.padding, "device": report["device"]}, skim_mod.strategy))
    return flat


def flat_metrics(report: dict) -> dict[str, float]:
    flat = {}
    first_attn = report["results"][0]["skim"]["attn"] if report["results"] else None
    for r in report["results"]:
        key = f"bench/bs{r['batch_size']}_{r['dtype']}"
        # the first skim attention keeps the plain keys; the others are suffixed with their name
        sfx = "" if r["skim"]["attn"] == first_attn else f"_{r['skim']['attn']}"
        flat[f"{key}/skim_seq_per_s{sfx}"] = r["skim"]["sequences_per_s"]
        for attn, d in r["dense"].items():
            flat[f"{key}/speedup_vs_{attn}{sfx}"] = d["speedup"]
            flat[f"{key}/analytic_speedup{sfx}"] = d["analytic_speedup"]
    return flat


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def markdown(report: dict) -> str:
    lines = [
        f"# skim benchmark — {report['device']}",
        "",
        (
            f"model `{report['model']}`, skim `{report['skim'].get('name')}`, padding `{report['padding']}`, "
            f"versions {', '.join(f'{k} {v}' for k, v in report['versions'].items())}"
        ),
        "",
        "| bs | dtype | skim attn | dense attn | dense seq/s | skim seq/s | skim p50 ms | skim p90 ms | dense p50 ms | GFLOPs dense/skim | analytic × | analytic × as run | measured × | realised/analytic | realised/as run |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    if report.get("length_groups"):
        lines[2] += "; prune mode in length groups (both models)"
    if report.get("repeats", 1) > 1:
        lines[2] += f"; each batch timed {report['repeats']} times per model, taking turns, fastest kept"
    if report.get("calibrated_threshold") is not None:
        lines[2] += f"; untrained predictors, threshold calibrated to {report['calibrated_threshold']:.8g}"
    for r in report["results"]:
        s = r["skim"]
        for attn, d in r["dense"].items():
            lines.append(
                f"| {r['batch_size']} | {r['dtype']} | {s['attn']} | {attn} | {d['sequences_per_s']:.1f} | {s['sequences_per_s']:.1f} | "
                f"{s['latency_p50_ms']:.2f} | {s['latency_p90_ms']:.2f} | {d['latency_p50_ms']:.2f} | "
                f"{d['gflops_per_example']:.3f}/{s['gflops_per_example']:.3f} | {d['analytic_speedup']:.2f} | {_num(d['analytic_speedup_as_run'])} | "
                f"{d['speedup']:.2f} | {d['realised_over_analytic']:.2f} | {_num(d['realised_over_as_run'])} |"
            )
    kept = report["results"][0]["kept_ratio_per_layer"] if report["results"] else []
    lines += [
        "",
        "kept-token ratio per layer (padding excluded): " + " ".join(f"{k:.3f}" for k in kept),
        "",
        ("analytic × counts each example's own tokens; analytic × as run counts what the batches run: every example costs "
        "its batch's width at each layer (dense: the padded length; prune mode: the longest kept example), the most a "
        "batched pruned model can gain. realised/as run is the implementation's own efficiency."),
    ]
    return "\n".join(lines) + "\n"


def _versions() -> dict[str, str]:
    import lightning
    import transformers

    v = {"torch": torch.__version__, "transformers": transformers.__version__, "lightning": lightning.__version__, "skim": skim.__version__}
    if torch.cuda.is_available():
        v["cuda"] = torch.version.cuda or ""
    return v


@hydra.main(version_base="1.3", config_path="../conf", config_name="benchmark")
def main(cfg: DictConfig) -> None:
    task_wrapper(benchmark)(cfg)


if __name__ == "__main__":
    import sys

    from skim.eval import with_run_overrides

    sys.argv[1:] = with_run_overrides(sys.argv[1:], "skim.benchmark")
    run_cli(main)
