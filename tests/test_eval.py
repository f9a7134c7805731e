"""skim.eval: a checkpoint is evaluated with its run's saved config; bad checkpoints give one clear error;
and the same seed with trainer.deterministic=true gives identical metrics."""

from __future__ import annotations

import json

import pytest
from hydra.core.global_hydra import GlobalHydra

from tests.conftest import SHARED_DATA, SQUAD_DEV, require_shared
from tests.helpers.runs import compose_cfg, run_cli

TRAIN = [
    "model=tiny", "model.config_overrides.hidden_size=32", "model.config_overrides.num_hidden_layers=2",
    "data=squad_local", f"data.train_file={SQUAD_DEV}", f"data.validation_file={SQUAD_DEV}",
    "data.max_train_samples=24", "data.max_eval_samples=24", "data.batch_size=8",
    "skim=blockskim_fixed", "skim.threshold=0.5", "trainer=cpu", "trainer.max_epochs=1", "final_eval=none",
]


def _env(root):
    return {"SKIM_ROOT": str(root), "SKIM_SHARED_DATA": str(SHARED_DATA)}


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    require_shared(SQUAD_DEV)
    root = tmp_path_factory.mktemp("evalroot")
    res = run_cli(["-m", "skim.train", *TRAIN, f"hydra.run.dir={root / 'train'}"], cwd=root, env_extra=_env(root))
    assert res.returncode == 0, res.stderr[-3000:]
    return root


def test_eval_reuses_the_runs_config(trained_run):
    root = trained_run
    ckpt = root / "train" / "checkpoints" / "last.ckpt"
    res = run_cli(["-m", "skim.eval", f"ckpt_path={ckpt}", "trainer=cpu", f"hydra.run.dir={root / 'eval'}"], cwd=root, env_extra=_env(root))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "using the training run's overrides" in res.stderr
    trained = json.loads((root / "train" / "metrics.json").read_text())["metrics"]
    evaluated = json.loads((root / "eval" / "metrics.json").read_text())["metrics"]
    for k in ("val/em", "val/f1", "val/skim/kept_layer1", "val/flops/speedup"):
        assert evaluated[k] == pytest.approx(trained[k], abs=1e-6), k
    assert (root / "eval" / "predictions.json").read_bytes() == (root / "train" / "predictions.json").read_bytes()
    # an override given to eval wins over the run's own
    res = run_cli(["-m", "skim.eval", f"ckpt_path={ckpt}", "trainer=cpu", "skim.threshold=1.0", f"hydra.run.dir={root / 'eval2'}"],
                  cwd=root, env_extra=_env(root))
    assert res.returncode == 0, res.stderr[-3000:]
    skimmed = json.loads((root / "eval2" / "metrics.json").read_text())["metrics"]
    assert skimmed["val/skim/kept_layer1"] < 1.0
    # what skimming left of the gold answers: Block-Skim decides after layer 0, so every answer enters it; threshold
    # 1.0 skims the context blocks after it, and with them the answers
    assert evaluated["val/skim/answer_kept_layer0"] == skimmed["val/skim/answer_kept_layer0"] == 1.0
    assert skimmed["val/skim/answer_kept_layer1"] < evaluated["val/skim/answer_kept_layer1"]
    # skimmed_tokens.json: per layer, the tokens kept out of it; their total is what kept_layer{i} says was dropped
    census = json.loads((root / "eval2" / "skimmed_tokens.json").read_text())
    seen = census["tokens_seen"]
    for layer in census["not_entering_layer"]:
        i, top = layer["layer"], layer["top"]
        assert layer["tokens_skimmed"] == pytest.approx((1 - skimmed[f"val/skim/kept_layer{i}"]) * seen, abs=0.5)
        assert all(t["skimmed"] <= t["seen"] for t in top)
        assert [t["skimmed"] for t in top] == sorted((t["skimmed"] for t in top), reverse=True)
    assert census["not_entering_layer"][0]["tokens_skimmed"] == 0 and census["not_entering_layer"][1]["top"]
    # a wrong option is one line before anything runs
    res = run_cli(["-m", "skim.eval", f"ckpt_path={ckpt}", "trainer=cpu", "callbacks.skimmed_tokens.top_k=abc",
                   f"hydra.run.dir={root / 'eval3'}"], cwd=root, env_extra=_env(root))
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("skim: error:")]
    assert len(lines) == 1 and "callbacks.skimmed_tokens.top_k" in lines[0] and not (root / "eval3" / "metrics.json").exists()


def test_a_skimming_run_evaluated_without_its_strategy(trained_run):
    """skim=none on a Block-Skim checkpoint: its backbone and span head alone, dense; the predictors are left out (a
    strategy with weights of its own still needs them: test_mismatched_checkpoint_is_one_clear_error)."""
    root = trained_run
    ckpt = root / "train" / "checkpoints" / "last.ckpt"
    runs = {}
    for name, override in (("dense", "skim=none"), ("keep_all", "skim.threshold=0.0")):
        res = run_cli(["-m", "skim.eval", f"ckpt_path={ckpt}", "trainer=cpu", override, f"hydra.run.dir={root / name}"],
                      cwd=root, env_extra=_env(root))
        assert res.returncode == 0, res.stderr[-3000:]
        runs[name] = json.loads((root / name / "metrics.json").read_text())
    dense, keep_all = runs["dense"]["metrics"], runs["keep_all"]["metrics"]
    assert runs["dense"]["skim"] == "none" and dense["val/flops/speedup"] == 1.0
    # Block-Skim keeping every block computes what the dense backbone does (plus its predictors' cost)
    assert keep_all["val/skim/kept_mean"] == 1.0 and keep_all["val/flops/speedup"] < 1.0
    assert dense["val/f1"] == pytest.approx(keep_all["val/f1"], abs=1e-6)


def test_corrupt_checkpoint_is_one_clear_error(tmp_path):
    bad = tmp_path / "model.ckpt"
    bad.write_bytes(b"this is not a checkpoint")
    res = run_cli(["-m", "skim.eval", "model=tiny", "data=synthetic", f"ckpt_path={bad}"], cwd=tmp_path, env_extra=_env(tmp_path))
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("skim: error:")]
    assert len(lines) == 1 and "model.ckpt" in lines[0] and "not a skim checkpoint" in lines[0]
    assert "Traceback" not in res.stderr


def test_mismatched_checkpoint_is_one_clear_error(trained_run):
    root = trained_run
    ckpt = root / "train" / "checkpoints" / "last.ckpt"
    # Transkimmer's predictors are not in a Block-Skim checkpoint (skim=none loads: tested above)
    res = run_cli(["-m", "skim.eval", f"ckpt_path={ckpt}", "trainer=cpu", "skim=transkimmer", f"hydra.run.dir={root / 'bad'}"],
                  cwd=root, env_extra=_env(root))
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("skim: error:")]
    assert len(lines) == 1 and "cannot load" in lines[0]


def test_an_evaluation_that_evaluates_nothing_is_one_clear_error(trained_run):
    """trainer.limit_val_batches=0 would make Lightning skip the evaluation: exit 0, no metrics.json, no word of why."""
    root = trained_run
    ckpt = root / "train" / "checkpoints" / "last.ckpt"
    res = run_cli(["-m", "skim.eval", f"ckpt_path={ckpt}", "trainer=cpu", "+trainer.limit_val_batches=0",
                   f"hydra.run.dir={root / 'nothing'}"], cwd=root, env_extra=_env(root))  # fmt: skip
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("skim: error:")]
    assert len(lines) == 1 and "trainer.limit_val_batches=0 evaluates nothing" in lines[0]
    assert not (root / "nothing" / "metrics.json").exists()


def test_resuming_with_another_strategy_is_one_clear_error(trained_run):
    """skim.eval may score a skimming run's backbone with skim=none; resuming its training with skim=none may not (the
    optimiser state holds the predictors' parameters): one line, before any data is read, nothing written."""
    root = trained_run
    ckpt = root / "train" / "checkpoints" / "last.ckpt"
    overrides = [o for o in TRAIN if not o.startswith("skim")]
    res = run_cli(["-m", "skim.train", *overrides, "skim=none", f"ckpt_path={ckpt}", f"hydra.run.dir={root / 'resume'}"],
                  cwd=root, env_extra=_env(root))
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("skim: error:")]
    assert len(lines) == 1 and "a skim=blockskim run cannot resume as skim=none" in lines[0]
    assert "Traceback" not in res.stderr and not (root / "resume" / "metrics.json").exists()


def test_same_seed_deterministic_runs_give_identical_metrics(tmp_run_root):
    require_shared(SQUAD_DEV)
    from skim.train import train
    from skim.utils.run import task_wrapper

    results = []
    for i in range(2):
        GlobalHydra.instance().clear()
        cfg = compose_cfg([*TRAIN, "trainer.deterministic=true", "seed=7", "skim=blockskim"], output_dir=tmp_run_root / f"run{i}")
        results.append(task_wrapper(train)(cfg))
    GlobalHydra.instance().clear()
    assert results[0] == results[1]
    assert results[0]["val/loss"] > 0


def test_benchmark_a_checkpoint_with_its_runs_config_and_another_threshold(trained_run):
    root = trained_run
    ckpt = root / "train" / "checkpoints" / "last.ckpt"
    kept = {}
    for thr in ("0.0", "1.0"):
        out = root / f"bench{thr}"
        res = run_cli(["-m", "skim.benchmark", f"ckpt_path={ckpt}", f"skim.threshold={thr}", "batch_sizes=[4]", "dtypes=[fp32]",
                       "num_batches=2", "warmup=0", "progress_bar=false", f"hydra.run.dir={out}"], cwd=root, env_extra=_env(root))
        assert res.returncode == 0, res.stderr[-3000:]
        assert "using the training run's overrides" in res.stderr
        report = json.loads((out / "benchmark.json").read_text())
        assert report["skim"]["name"] == "blockskim_fixed" or report["skim"]["min_answer_tokens"] == 1
        assert report["skim"]["threshold"] == float(thr)
        kept[thr] = report["results"][0]["kept_ratio_per_layer"]
    assert kept["0.0"] == [1.0, 1.0]
    assert kept["1.0"][1] < 1.0  # threshold 1: only the protected [CLS]/question blocks survive layer 0


def test_run_overrides_go_before_the_first_given_override(tmp_path):
    from skim.eval import with_run_overrides

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / ".hydra" / "overrides.yaml").write_text("- experiment=cpu_squad_minilm_blockskim\n- skim.threshold=0.2\n- trainer=cpu\n"
                                                   "- task_name=fixed_rule\n- final_eval=best\n")  # fmt: skip
    ckpt = f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"
    # a multirun: Hydra's parser takes the overrides as one positional list after the flags; the run's task_name
    # names its evaluations (without it the experiment's task_name would name them after another run)
    assert with_run_overrides(["-m", ckpt, "skim.threshold=0.1,0.5"], "skim.eval") == [
        "-m", "experiment=cpu_squad_minilm_blockskim", "task_name=fixed_rule", ckpt, "skim.threshold=0.1,0.5"]
    # the run's skim.threshold applies when none is given; trainer and training-only settings never carry over
    assert with_run_overrides([ckpt, "--cfg", "job"], "skim.eval") == [
        "experiment=cpu_squad_minilm_blockskim", "skim.threshold=0.2", "task_name=fixed_rule", ckpt, "--cfg", "job"]
    assert with_run_overrides(["skim.threshold=0.1"], "skim.eval") == ["skim.threshold=0.1"]  # no checkpoint: nothing added
    # Block-Skim's two threshold options stand in for each other: one given now drops the run's other
    (run / ".hydra" / "overrides.yaml").write_text("- skim=blockskim\n- skim.layer_thresholds=[0.5,0.5]\n")
    assert with_run_overrides([ckpt, "skim.threshold=0.3"], "skim.eval") == ["skim=blockskim", ckpt, "skim.threshold=0.3"]


@pytest.mark.parametrize("entry", ["eval", "benchmark", "visualize"])
def test_a_run_trained_with_optimiser_overrides_composes_for_every_checkpoint_entry_point(tmp_path, entry):
    """optim.* of the training run never carries over: no checkpoint entry point builds an optimiser, and not all of
    them have every optim key (a run trained with optim.skim_lr could not be evaluated)."""
    from skim.eval import with_run_overrides

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- experiment=cpu_sst2_minilm_transkimmer\n- optim.skim_lr=1.0e-3\n"
                                                   "- optim.lr=2.0e-4\n")  # fmt: skip
    args = with_run_overrides([f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"], f"skim.{entry}")
    assert args[0] == "experiment=cpu_sst2_minilm_transkimmer" and not any(a.startswith("optim.") for a in args)
    GlobalHydra.instance().clear()
    cfg = compose_cfg(args, config_name=entry)
    assert cfg.skim.name == "transkimmer"


def test_checkpoint_runs_with_the_requested_attention(trained_run):
    root = trained_run
    ckpt = root / "train" / "checkpoints" / "last.ckpt"
    args = ["-m", "skim.benchmark", f"ckpt_path={ckpt}", "batch_sizes=[4]", "dtypes=[fp32]", "num_batches=1", "warmup=0",
            "progress_bar=false"]
    res = run_cli([*args, "model.attn_implementation=eager", f"hydra.run.dir={root / 'bench_eager'}"], cwd=root, env_extra=_env(root))
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((root / "bench_eager" / "benchmark.json").read_text())
    assert report["results"][0]["skim"]["attn"] == "eager"  # the override reaches a model loaded from a checkpoint
    res = run_cli([*args, "model.attn_implementation=sdpa", f"hydra.run.dir={root / 'bench_sdpa'}"], cwd=root, env_extra=_env(root))
    assert res.returncode != 0
    assert [ln for ln in res.stderr.splitlines() if ln.startswith("skim: error:") and "attn_implementation" in ln]
