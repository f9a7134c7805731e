"""Every config composes: the full model x data x skim grid, every experiment, both entry points."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from tests.helpers.runs import CONF, ROOT, compose_cfg

CONF_DIR = Path(CONF)
MODELS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
DATA = sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml"))
SKIMS = sorted(p.stem for p in (CONF_DIR / "skim").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
GROUPS = {g: sorted(p.stem for p in (CONF_DIR / g).glob("*.yaml")) for g in ("trainer", "logger", "callbacks", "debug")}


@pytest.fixture(autouse=True)
def _clear_hydra():
    GlobalHydra.instance().clear()
    yield
    GlobalHydra.instance().clear()


def test_grid_is_not_empty():
    assert {"bert-base", "bert-large", "minilm", "tiny"} <= set(MODELS)
    assert {"roberta-base", "distilbert-base", "albert-base", "tiny-roberta", "tiny-distilbert", "tiny-albert"} <= set(MODELS)
    assert {"squad", "squad_v2"} <= set(DATA)
    assert {"none", "blockskim"} <= set(SKIMS)


# Every pair of choices composes: a covering array of model x data x skim in which each (model, data), (data, skim)
# and (model, skim) pair appears in at least one composed config. That is every interaction there is (a data config
# reads only model.tokenizer, a skim config only data.name / data.task / data.transkimmer_coefficient, and a model
# config neither), in one composition per (model, data) pair (each ~0.2 s) instead of the 3-way product.
QA_DATA, CLS_DATA = "squad", "sst2"


def _pairwise(models: list[str], data: list[str], skims: list[str]) -> list[tuple[str, str, str]]:
    """Greedy covering array: every (model, data) pair once, each with the skim that covers the most (data, skim) and
    (model, skim) pairs not yet seen (ties: the next skim in a rotating order, so the grid is the same on every run
    and the remaining rows spread over all skims)."""
    todo = {("d", d, s) for d in data for s in skims} | {("m", m, s) for m in models for s in skims}
    rows = []
    for d in data:
        for m in models:
            k = len(rows) % len(skims)
            s = max(skims[k:] + skims[:k], key=lambda s: (("d", d, s) in todo) + (("m", m, s) in todo))
            todo -= {("d", d, s), ("m", m, s)}
            rows.append((m, d, s))
    assert not todo, f"pairs left uncovered: {sorted(todo)[:5]}"
    return rows


GRID = [("train", m, d, s) for m, d, s in _pairwise(MODELS, DATA, SKIMS)]
# the eval entry point shares every group with train (whose grid above has every pair): each data set and each skim
# config once is enough to catch a group or an interpolation it lacks
GRID += [("eval", "tiny", d, "none") for d in DATA] + [("eval", "tiny", QA_DATA, s) for s in SKIMS if s != "none"]


@pytest.mark.parametrize("entry,model,data,skim", GRID)
def test_grid_composes_and_resolves(model, data, skim, entry, tmp_path):
    overrides = [f"model={model}", f"data={data}", f"skim={skim}"]
    if entry == "eval":
        overrides.append("ckpt_path=/some/model.ckpt")
    cfg = compose_cfg(overrides, config_name=entry, output_dir=tmp_path)
    OmegaConf.resolve(cfg)
    assert cfg.skim.name == skim.split("_")[0]  # presets such as blockskim_fixed keep their strategy name
    assert cfg.data.task in ("qa", "cls")
    assert cfg.module._target_.startswith("skim.tasks.")
    assert cfg.optimized_metric == cfg.data.monitor
    # every data set states Transkimmer's coefficient (a new one cannot silently fall back to another's)
    assert isinstance(cfg.data.transkimmer_coefficient, float)


def test_transkimmer_coefficient_comes_from_the_data_config(tmp_path):
    # the paper's scripts: GLUE and IMDB 0.5, SQuAD v2 0.3 (used for every QA set), 20 Newsgroups and Yelp 0.2
    expected = {"squad": 0.3, "squad_v2": 0.3, "synthetic": 0.3, "sst2": 0.5, "imdb": 0.5, "20news": 0.2, "yelp": 0.2}
    for data, value in expected.items():
        GlobalHydra.instance().clear()
        cfg = compose_cfg(["model=tiny", f"data={data}", "skim=transkimmer"], output_dir=tmp_path)
        assert cfg.skim.skim_coefficient == value, data


def test_best_checkpoint_mode_follows_the_monitored_metric(tmp_path):
    # a fixed "max" kept the epoch with the highest validation loss as the best weights under data.monitor=val/loss
    for overrides, mode in ((["data=sst2"], "max"), (["data=sst2", "data.monitor=val/loss"], "min"), (["data=squad"], "max")):
        GlobalHydra.instance().clear()
        cfg = compose_cfg(["model=tiny", *overrides], output_dir=tmp_path)
        assert cfg.callbacks.model_checkpoint.mode == mode, overrides


def test_synthetic_files_follow_the_synthetic_dir(tmp_path):
    # data.synthetic.dir alone used to write the new set there while training read older files at the default path
    for data, suffix in (("synthetic", ".json"), ("synthetic_sentiment", ".jsonl")):
        GlobalHydra.instance().clear()
        cfg = compose_cfg(["model=tiny", f"data={data}", f"data.synthetic.dir={tmp_path}/x"], output_dir=tmp_path)
        assert (cfg.data.train_file, cfg.data.validation_file) == (f"{tmp_path}/x/train{suffix}", f"{tmp_path}/x/dev{suffix}")


@pytest.mark.parametrize("group,choice", [(g, c) for g, cs in GROUPS.items() for c in cs])
def test_every_group_option_composes(group, choice, tmp_path):
    from skim.tasks.base_module import validate_config

    cfg = compose_cfg(["model=tiny", f"{group}={choice}"], output_dir=tmp_path)
    OmegaConf.resolve(cfg)
    validate_config(cfg)  # and the entry points' own checks accept it (trainer, model, optim, evaluation options)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiments_compose(experiment, tmp_path):
    from skim.tasks.base_module import validate_config

    cfg = compose_cfg([f"experiment={experiment}"], output_dir=tmp_path)
    OmegaConf.resolve(cfg)
    validate_config(cfg)


def test_typed_skim_config_rejects_bad_values(tmp_path):
    with pytest.raises(Exception, match="threshold"):
        compose_cfg(["skim=blockskim", "skim.threshold=abc"], output_dir=tmp_path)
    with pytest.raises(Exception, match="treshold"):
        compose_cfg(["skim=blockskim", "skim.treshold=0.1"], output_dir=tmp_path)


@pytest.mark.parametrize(
    "overrides",
    [
        ["hparams_search=blockskim_optuna", "skim=blockskim", "experiment=quickstart"],
        ["hydra/launcher=joblib_local"],
        ["hydra/launcher=slurm_gpu"],
        ["trainer=ddp"],
        ["trainer=ddp_cpu"],
    ],
)
def test_sweep_and_launcher_configs_compose(overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=CONF):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    if "hparams_search=blockskim_optuna" in overrides:
        assert cfg.optimized_metric == "val/objective"
        assert "skim.threshold" in cfg.hydra.sweeper.params
    if any(o.startswith("hydra/launcher") for o in overrides):
        assert cfg.hydra.launcher._target_.startswith("hydra_plugins.")


def _readme_commands() -> list[str]:
    """Every ``python -m skim.<entry>`` line of the README's bash blocks whose entry point is a Hydra app."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #", 1)[0].strip()
            entry = re.match(r"python -m skim\.(\w+)", line)
            # "<the same overrides>" and "..." stand for other overrides; the example strategy is copied in first
            skip = "..." in line or "<the same" in line or "skim=keep_every_other" in line
            if entry and (CONF_DIR / f"{entry[1]}.yaml").exists() and not skip:
                commands.append(line)
    return commands


README_COMMANDS = _readme_commands()
# what the README's placeholder runs were trained with, for the entry points that take a run's overrides (skim.eval)
PLACEHOLDER_RUNS = {"transkimmer": "experiment=cpu_sst2_minilm_transkimmer", "dense": "experiment=cpu_squad_minilm_dense",
                    "": "experiment=cpu_squad_minilm_blockskim"}  # fmt: skip


def test_readme_has_commands_of_every_entry_point():
    entries = {c.split()[2] for c in README_COMMANDS}
    assert {"skim.train", "skim.eval", "skim.benchmark", "skim.oracle", "skim.block_probe", "skim.visualize"} <= entries
    assert len(README_COMMANDS) >= 40


@pytest.mark.parametrize("command", README_COMMANDS, ids=range(len(README_COMMANDS)))
def test_readme_commands_compose(command, tmp_path):
    """A renamed option or config would leave the README's commands stale: each composes as users paste it, a
    ``<run>`` placeholder being a run folder with the overrides of the README's run of that kind, and a sweep (``-m``)
    as its first job."""
    from skim.eval import with_run_overrides
    from skim.strategies import build_strategy
    from skim.tasks.base_module import validate_config

    def run_folder(placeholder: re.Match) -> str:
        kind = next(k for k in PLACEHOLDER_RUNS if k in placeholder[1])
        folder = tmp_path / (kind or "run")
        (folder / ".hydra").mkdir(parents=True, exist_ok=True)
        (folder / ".hydra" / "overrides.yaml").write_text(f"- {PLACEHOLDER_RUNS[kind]}\n")
        return str(folder)

    tokens = shlex.split(re.sub(r"[\w./]*<([^>]*)>", run_folder, command))
    config_name, args = tokens[2].removeprefix("skim."), tokens[3:]
    if config_name in ("eval", "benchmark", "visualize"):  # the entry points that take the run's overrides
        args = with_run_overrides(args, "test")
    sweep = "-m" in args
    overrides = []
    for i, arg in enumerate(args):
        if arg in ("-m", "--multirun", "--cfg") or (i and args[i - 1] == "--cfg"):
            continue
        key, value = arg.split("=", 1)
        overrides.append(f"{key}={value.split(',', 1)[0] if sweep and not value.startswith('[') else value}")
    cfg = compose_cfg(overrides, config_name=config_name, output_dir=tmp_path)
    OmegaConf.resolve(cfg)
    # and the checks the entry points run first: a value the strategy refuses (skim.eval_decision=expectd) fails here
    if "skim" in cfg:  # (skim.oracle has no strategy)
        validate_config(cfg)
        # a budget baseline's match_run is read when the strategy is built: it must be a finished run
        build_strategy({k: v for k, v in OmegaConf.to_container(cfg.skim).items() if k != "match_run"})
