"""The real entry point on the real stack: tiny BERT, real SQuAD slices, CSV and offline W&B loggers."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra.core.global_hydra import GlobalHydra

from skim.train import train
from skim.utils.run import task_wrapper
from tests.conftest import SQUAD_DEV, require_shared
from tests.helpers.runs import compose_cfg, run_cli

SLICE = [
    "model=tiny",
    "data=squad_local",
    f"data.train_file={SQUAD_DEV}",
    f"data.validation_file={SQUAD_DEV}",
    "data.max_train_samples=64",
    "data.max_eval_samples=64",
    "data.batch_size=16",
    "data.eval_batch_size=32",
    "trainer=cpu",
    "trainer.max_epochs=1",
    "model.config_overrides.hidden_size=64",
    "model.config_overrides.num_hidden_layers=2",
]


@pytest.fixture(autouse=True)
def _clear_hydra():
    GlobalHydra.instance().clear()
    yield
    GlobalHydra.instance().clear()


def _train(overrides, tmp_run_root):
    out = tmp_run_root / "run"
    cfg = compose_cfg(overrides, output_dir=out)
    return task_wrapper(train)(cfg), out


@pytest.mark.parametrize("skim", ["none", "blockskim", "blockskim_question"])
def test_train_on_a_real_squad_slice(skim, tmp_run_root):
    require_shared(SQUAD_DEV)
    metrics, out = _train([*SLICE, f"skim={skim}"], tmp_run_root)
    assert 0.0 <= metrics["val/em"] <= metrics["val/f1"] <= 100.0
    preds = json.loads((out / "predictions.json").read_text())
    assert len(preds) == 64  # every example scored exactly once
    record = json.loads((out / "metrics.json").read_text())
    assert record["padding"] == "dynamic" and record["skim"] == skim.split("_")[0]
    assert record["data_info"]["eval_examples"] == 64
    # wall-clock of the fit, its final validation inside it
    assert 0 < record["timing"]["last_validation_s"] < record["timing"]["fit_s"]
    rows = list(csv.DictReader((out / "csv" / "metrics.csv").read_text().splitlines()))
    assert any(r.get("val/f1") for r in rows)
    results = (tmp_run_root / "logs" / "results.jsonl").read_text().splitlines()
    assert json.loads(results[-1])["metrics"]["val/f1"] == metrics["val/f1"]
    ckpts = list((out / "checkpoints").glob("*.ckpt"))
    assert ckpts
    assert metrics["val/flops/dense_gflops"] <= metrics["val/flops/dense_padded_gflops"]
    if skim.startswith("blockskim"):
        assert "val/skim/block_recall_layer0" in metrics and "val/skim/block_auc_layer0" in metrics
        stats = json.loads((out / "skim_stats.json").read_text())
        answer, other = sum(stats["layer0"]["answer"]), sum(stats["layer0"]["other"])
        assert len(stats["layer0"]["answer"]) == len(stats["p_edges"]) and answer > 0 and other > 0
        assert answer / (answer + other) == pytest.approx(metrics["val/skim/block_answer_share_layer0"])
        assert 0.0 <= metrics["val/skim/kept_layer1"] <= 1.0
        # the predictors' cost is counted: with little skimming, skim FLOPs can exceed dense ones
        assert metrics["val/flops/skim_gflops"] > 0
    else:
        assert metrics["val/skim/kept_layer1"] == 1.0
        assert metrics["val/flops/speedup"] == pytest.approx(1.0)


def test_wandb_offline_one_run_per_job(tmp_run_root):
    require_shared(SQUAD_DEV)
    import wandb

    metrics, out = _train([*SLICE, "logger=many", "data.max_train_samples=16", "data.max_eval_samples=16"], tmp_run_root)
    assert wandb.run is None  # finished by the train function
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    run_id = (out / "wandb_run_id").read_text().strip()
    assert runs[0].name.endswith(run_id)
    assert "val/f1" in metrics


def test_cli_prints_config_from_any_directory(tmp_path):
    res = run_cli(["-m", "skim.train", "model=bert-base", "skim=none", "data=squad", "--cfg", "job"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "bert-base-uncased" in res.stdout and "name: none" in res.stdout


def _bad_run(tmp_path, extra):
    """The real command line in its own process: the one-line error, the exit status, nothing half-written."""
    res = run_cli(
        ["-m", "skim.train", "experiment=quickstart", "model.config_overrides.num_hidden_layers=1", "logger=csv", *extra],
        cwd=tmp_path,
        env_extra={"SKIM_ROOT": str(tmp_path)},
    )
    runs = list((tmp_path / "logs").glob("*/runs/*"))
    return res, runs


def _bad_run_here(tmp_run_root, capsys, extra):
    """The same run in this process (the error path is task_wrapper's, whichever way it is started): what a bad
    input makes of it, without the seconds a new interpreter takes."""
    GlobalHydra.instance().clear()
    out = tmp_run_root / "logs" / "quickstart" / "runs" / "bad"
    cfg = compose_cfg(["experiment=quickstart", "model.config_overrides.num_hidden_layers=1", "logger=csv", *extra],
                      output_dir=out)  # fmt: skip
    with pytest.raises(SystemExit) as exit_:
        task_wrapper(train)(cfg)
    return SimpleNamespace(returncode=exit_.value.code, stderr=capsys.readouterr().err), [out]


def _assert_clean_failure(res, runs, *needles):
    assert res.returncode != 0
    err_lines = [ln for ln in res.stderr.splitlines() if ln.startswith("skim: error:")]
    assert len(err_lines) == 1, res.stderr[-2000:]
    for needle in needles:
        assert needle in err_lines[0], err_lines[0]
    assert "Traceback" not in res.stderr
    for run in runs:
        assert not (run / "metrics.json").exists() and not (run / "predictions.json").exists()
        assert (run / "FAILED").exists()


def test_missing_data_file_is_one_clear_error(tmp_run_root, capsys):
    res, runs = _bad_run_here(tmp_run_root, capsys, ["data.train_file=/nonexistent/train.json"])
    _assert_clean_failure(res, runs, "/nonexistent/train.json", "not found")


def test_json_that_is_not_squad_is_one_clear_error(tmp_run_root, capsys):
    bad = tmp_run_root / "bad.json"
    bad.write_text(json.dumps({"version": "1.1", "articles": []}))
    res, runs = _bad_run_here(tmp_run_root, capsys, [f"data.train_file={bad}"])
    _assert_clean_failure(res, runs, "bad.json", "no top-level field 'data'")


def test_wrong_answer_start_is_one_clear_error(tmp_path):
    bad = tmp_path / "offsets.json"
    doc = {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": "Paris is the capital of France.",
           "qas": [{"id": "q-17", "question": "What is the capital?", "answers": [{"text": "Paris", "answer_start": 3}]}]}]}]}
    bad.write_text(json.dumps(doc))
    res, runs = _bad_run(tmp_path, [f"data.validation_file={bad}"])
    assert res.returncode == 2  # DataError's exit status, from the real command line
    _assert_clean_failure(res, runs, "offsets.json", "q-17", "answer_start")


def test_incompatible_combination_is_one_clear_error(tmp_run_root, capsys):
    res, runs = _bad_run_here(tmp_run_root, capsys, ["skim=blockskim", "model.attn_implementation=sdpa"])
    _assert_clean_failure(res, runs, "attn_implementation")


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("trainer.max_epochs=abc", "trainer.max_epochs must be an integer or null, got 'abc' (str)"),
        ("+trainer.no_such_option=1", "unknown trainer option(s) 'no_such_option'"),
        ("trainer.precision=33", "trainer.precision must be one of 64, 32, 16, 'transformer-engine'"),
        # checked by Lightning itself when the trainer is built: still one line
        ("trainer.devices=[0]", "trainer: TypeError: `devices` selected with `CPUAccelerator` should be an int > 0"),
    ],
)
def test_a_bad_trainer_option_is_one_clear_error_before_any_data(tmp_run_root, capsys, override, needle):
    # Lightning checks none of these types itself: trainer.max_epochs=abc failed in the fit loop, after tokenising
    res, runs = _bad_run_here(tmp_run_root, capsys, [override])
    _assert_clean_failure(res, runs, needle)
    assert not list(tmp_run_root.glob("**/*.arrow")) and not list(tmp_run_root.glob("data/**/*.json"))


def test_unknown_option_names_it(tmp_path):
    res = run_cli(["-m", "skim.train", "model=tiny", "data.no_such_option=3"], cwd=tmp_path, env_extra={"SKIM_ROOT": str(tmp_path)})
    assert res.returncode != 0
    assert "no_such_option" in res.stderr
    assert not list(Path(tmp_path).glob("logs/*/runs/*/metrics.json"))


# a command line Hydra cannot compose: one skim: error line naming the override, exit 2, no run directory
COMPOSITION_ERRORS = [
    ("skim.train", ["skim=transkimmer", "skim.tau=abc"], ["skim.tau=abc", "could not be converted to Float"]),
    ("skim.train", ["experiment=no_such_experiment"], ["experiment/no_such_experiment", "quickstart_cls"]),
    ("skim.train", ["data.batch_size=["], ["override 'data.batch_size=['"]),
    ("skim.train", ["skim.no_such_key=1"], ["skim.no_such_key", "+skim.no_such_key=1"]),
    ("skim.train", ["-m", "seed=1,2", "skim=transkimmer", "skim.tau=abc"], ["skim.tau=abc"]),
    *[(prog, ["skim=transkimmer", "skim.tau=abc"], ["skim.tau=abc"])
      for prog in ("skim.eval", "skim.benchmark", "skim.visualize", "skim.block_probe", "skim.keep_pressure")],
    ("skim.oracle", ["skim=transkimmer"], ["Could not override 'skim'"]),  # the oracle has no strategy to choose
]  # fmt: skip


@pytest.mark.parametrize(("prog", "args", "needles"), COMPOSITION_ERRORS, ids=lambda v: v if isinstance(v, str) else None)
def test_a_command_line_that_does_not_compose_is_one_clear_error(tmp_path, prog, args, needles):
    res = run_cli(["-m", prog, *args], cwd=tmp_path, env_extra={"SKIM_ROOT": str(tmp_path)})
    assert res.returncode == 2, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("skim: error:"), res.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Config search path" not in lines[0]
    assert not (tmp_path / "logs").exists() and not (tmp_path / "multirun").exists()


def test_eval_a_checkpoint_with_another_threshold(tmp_run_root, caplog):
    require_shared(SQUAD_DEV)
    from skim.eval import evaluate

    metrics, out = _train([*SLICE, "skim=blockskim", "data.max_train_samples=32", "data.max_eval_samples=32"], tmp_run_root)
    ckpt = out / "checkpoints" / "last.ckpt"
    GlobalHydra.instance().clear()
    eval_out = tmp_run_root / "eval"
    cfg = compose_cfg(
        [*SLICE, "skim=blockskim", "skim.threshold=1.0", "skim.protect_special=true", f"ckpt_path={ckpt}", "data.max_eval_samples=32"],
        config_name="eval",
        output_dir=eval_out,
    )
    with caplog.at_level("INFO", logger="skim.tasks.checkpoint"):
        m2 = task_wrapper(evaluate)(cfg)
    assert "differ from the checkpoint's run: threshold: 0.01 -> 1.0; protect_special: False -> True" in caplog.text
    # threshold 1 drops every block but the protected ones: kept ratio falls, the run still scores every example
    assert m2["val/skim/kept_layer0"] == 1.0
    assert m2["val/skim/kept_layer1"] < 1.0
    assert m2["val/skim/kept_layer1"] <= metrics["val/skim/kept_layer1"]
    assert len(__import__("json").loads((eval_out / "predictions.json").read_text())) == 32
    record = __import__("json").loads((eval_out / "metrics.json").read_text())
    # the record says which skim settings were measured (the training run's threshold was the default 0.01)
    assert record["skim_config"]["threshold"] == 1.0 and record["skim_config"]["protect_special"] is True


def test_transkimmer_on_squad_v2_slice_with_a_coefficient_warmup(tmp_run_root):
    from tests.conftest import SHARED_DATA

    v2 = SHARED_DATA / "squad_v2.0" / "dev-v2.0.reconstructed.json.gz"
    require_shared(v2)
    overrides = [o for o in SLICE if not o.startswith(("data=", "data.train_file", "data.validation_file"))]
    metrics, out = _train(
        [*overrides, "data=squad_v2", "data.hub_name=null", f"data.train_file={v2}", f"data.validation_file={v2}", "skim=transkimmer",
         "skim.coefficient_warmup=0.5", "trainer.log_every_n_steps=1"],
        tmp_run_root,
    )
    assert {"val/HasAns_f1", "val/NoAns_f1", "val/f1"} <= set(metrics)
    assert (out / "null_odds.json").exists()
    assert len(json.loads((out / "predictions.json").read_text())) == 64
    # the share of answers the Gumbel samples left reachable, per training step
    rows = list(csv.DictReader((out / "csv" / "metrics.csv").read_text().splitlines()))
    reachable = [float(r["train/skim/answer_reachable"]) for r in rows if r.get("train/skim/answer_reachable")]
    assert reachable and all(0.0 <= v <= 1.0 for v in reachable)
    # the skim loss's weight rises linearly from 0 over the first half of the fit's steps, then stays at the coefficient
    weight = {int(r["step"]): float(r["train/skim/skim_coefficient"]) for r in rows if r.get("train/skim/skim_coefficient")}
    full, steps = json.loads((out / "metrics.json").read_text())["skim_config"]["skim_coefficient"], len(weight)
    assert sorted(weight) == list(range(steps)) and steps >= 4
    assert [weight[s] for s in range(steps)] == pytest.approx([full * min(s / (0.5 * steps), 1.0) for s in range(steps)])


def test_wandb_config_holds_choices_and_overrides_once(tmp_run_root):
    """The real W&B run's config has the group choices and the command-line overrides to filter on, and the data
    settings once, under ``data`` (Lightning's own hparams logging used to repeat them at the top level)."""
    require_shared(SQUAD_DEV)
    import wandb

    cfg = compose_cfg([*SLICE, "logger=wandb", "data.max_train_samples=16", "data.max_eval_samples=16"], output_dir=tmp_run_root / "run")
    try:
        train(cfg)
        values = dict(wandb.run.config)
    finally:
        wandb.finish()
    assert values["choices"]["data"] == "squad_local" and values["choices"]["skim"] == "none"
    assert "data=squad_local" in values["overrides"]
    assert values["data"]["batch_size"] == 16
    assert not {"batch_size", "max_seq_length", "train_file", "hub_name"} & set(values)


def test_learning_rate_follows_transformers_linear_warmup_schedule(minilm_path):
    """optim.scheduler is a transformers scheduler (get_scheduler): linear warm-up over warmup_ratio of the steps,
    then linear decay to 0, stepped per optimiser step."""
    import lightning.pytorch as pl

    from skim.tasks.qa_module import QAModule

    model = {"pretrained_name_or_path": minilm_path, "random_init": True,
             "config_overrides": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}}
    module = QAModule(model=model, optim={"lr": 1e-3, "warmup_ratio": 0.2, "scheduler": "linear"})
    module.trainer = pl.Trainer(max_steps=10, max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert conf["lr_scheduler"]["interval"] == "step"
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step(), sched.step()
    expected = [0.0, 5e-4] + [1e-3 * (10 - s) / 8 for s in range(2, 10)]
    assert lrs == pytest.approx(expected)


def test_skim_lr_gives_the_strategy_its_own_rate_under_the_same_schedule(minilm_path):
    """optim.skim_lr: the strategy's parameters (and only they) learn at their own rate, warmed up and decayed by the
    same schedule; weight decay still spares biases and norms. Without it the groups are the two of earlier runs."""
    import lightning.pytorch as pl

    from skim.tasks.qa_module import QAModule

    model = {"pretrained_name_or_path": minilm_path, "random_init": True,
             "config_overrides": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}}
    skim = {"name": "blockskim", "skim_layers": [0]}
    optim = {"lr": 1e-4, "weight_decay": 0.01, "warmup_ratio": 0.2, "scheduler": "linear"}
    trainer = pl.Trainer(max_steps=10, max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    plain = QAModule(model=model, skim=skim, optim=optim)
    plain.trainer = trainer
    assert [(g["initial_lr"], g["weight_decay"]) for g in plain.configure_optimizers()["optimizer"].param_groups] == [(1e-4, 0.01), (1e-4, 0.0)]

    module = QAModule(model=model, skim=skim, optim={**optim, "skim_lr": 1e-3})
    module.trainer = trainer
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    names = {id(p): n for n, p in module.named_parameters()}
    strategy = {id(p) for p in module.strategy.parameters()}
    assert strategy and sum(len(g["params"]) for g in opt.param_groups) == len(names)
    for g in opt.param_groups:
        own = {id(p) in strategy for p in g["params"]}
        assert len(own) == 1 and g["initial_lr"] == (1e-3 if own.pop() else 1e-4) and g["lr"] == 0.0  # warm-up from 0
        assert (g["weight_decay"] == 0.01) == all(p.ndim >= 2 and not names[id(p)].endswith(".bias") for p in g["params"])
    for _ in range(3):
        opt.step(), sched.step()
    assert sorted(g["lr"] for g in opt.param_groups) == pytest.approx([1e-4 * 7 / 8] * 2 + [1e-3 * 7 / 8] * 2)  # step 3 of 10
