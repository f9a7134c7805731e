"""What a user sees of a run: console and log-file lines, progress without a terminal, ``--help``, the README's
config-group table, and the report of a partial evaluation. One real ``python -m skim.train`` subprocess serves
the run-based checks."""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.helpers.runs import CONF, ROOT, run_cli


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A real quickstart job cut to 3 steps, validation limited to its first batch, stdout not a terminal."""
    root = tmp_path_factory.mktemp("run_output")
    res = run_cli(
        [
            "-m", "skim.train", "experiment=quickstart", "trainer.max_epochs=1", "+trainer.max_steps=3",
            "+trainer.limit_val_batches=1", "data.synthetic.train_size=64", "data.synthetic.val_size=100",
            "callbacks.progress_bar.interval_s=0", "final_eval=last",
        ],
        cwd=root,
        env_extra={"SKIM_ROOT": str(root)},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    (run_dir,) = (root / "logs" / "quickstart" / "runs").iterdir()
    return res, run_dir, root


def test_each_info_line_once_on_the_console_and_once_in_the_log_file(tiny_run):
    res, run_dir, _ = tiny_run
    console = res.stdout + res.stderr
    log_file = (run_dir / "quickstart.log").read_text()
    # lightning.fabric (seeding), lightning.pytorch (trainer) and skim's own loggers
    for line in ("Seed set to 42", "`Trainer.fit` stopped: `max_steps=3` reached.", "epoch 0: step 3/3 (100%)"):
        assert console.count(line) == 1, (line, console[-3000:])
        assert log_file.count(line) == 1, (line, log_file)


def test_lightning_imported_before_logging_is_configured_still_logs_once():
    # imported first, Lightning installs handlers of its own and stops propagation (the import-time fallback);
    # the job-start hook must undo that too, so that no job depends on import order
    code = (
        "import logging, sys\n"
        "import lightning.pytorch, lightning.fabric\n"
        "logging.basicConfig(stream=sys.stdout, format='ROOT %(message)s', level=logging.INFO)\n"
        "from skim.callbacks.hydra_logging import route_lightning_logs_to_root\n"
        "route_lightning_logs_to_root()\n"
        "for name in ('lightning.pytorch.x', 'lightning.fabric.x', 'lightning.x'):\n"
        "    logging.getLogger(name).info('probe %s', name)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr
    out = res.stdout + res.stderr
    for name in ("lightning.pytorch.x", "lightning.fabric.x", "lightning.x"):
        assert out.count(f"probe {name}") == 1, out
        assert f"ROOT probe {name}" in res.stdout


def test_progress_is_logged_when_stdout_is_not_a_terminal(tiny_run):
    res, run_dir, _ = tiny_run
    for step in (1, 2, 3):
        assert re.search(rf"\[skim\.progress\]\[INFO\] - epoch 0: step {step}/3 \(\d+%\), [\d.]+ s/it", res.stdout), res.stdout
    assert "validation: batch 1/1 (100%)" in res.stdout
    # no carriage-return tqdm bars in a log
    assert "it/s]" not in res.stdout and "\r" not in res.stdout
    assert "epoch 0: step 3/3 (100%)" in (run_dir / "quickstart.log").read_text()


def test_report_marks_a_partial_evaluation(tiny_run, capsys):
    from skim.report import PARTIAL_MARK, main

    _, run_dir, root = tiny_run
    record = json.loads((run_dir / "metrics.json").read_text())
    scored, evaluated = int(record["metrics"]["val/num_scored"]), record["data_info"]["eval_examples"]
    assert 0 < scored < evaluated == 100
    assert main(["--file", str(root / "logs" / "results.jsonl")]) == 0
    table = capsys.readouterr().out
    assert f"| {scored}/100 {PARTIAL_MARK} |" in table
    # the share of answers that reached the output, a QA column of its own
    assert "val/skim/answer_reachable" in table.splitlines()[0]
    assert f"| {record['metrics']['val/skim/answer_reachable']:.3f} |" in table
    assert table.rstrip().endswith("not comparable with complete rows.")


class _LitProbe:
    """Lightning's BoringModel with 5 training and 2 validation batches, fitted by a real Trainer."""

    @staticmethod
    def fit(progress) -> None:
        import lightning.pytorch as pl
        from lightning.pytorch.demos.boring_classes import BoringModel

        trainer = pl.Trainer(
            max_epochs=1, limit_train_batches=5, limit_val_batches=2, callbacks=[progress], logger=False,
            enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu",
        )
        trainer.fit(BoringModel())


def test_progress_lines_are_throttled_to_the_interval(caplog):
    from skim.callbacks.progress import ProgressBar

    with caplog.at_level(logging.INFO, logger="skim.progress"):
        _LitProbe.fit(ProgressBar(interval_s=3600))
    lines = [r.getMessage() for r in caplog.records if r.name == "skim.progress"]
    # within the hour: only the end of the epoch and of the validation are reported
    assert len(lines) == 2, lines
    assert lines[0].startswith("epoch 0: step 5/5 (100%)") and lines[1].startswith("validation: batch 2/2 (100%)")


def test_a_terminal_gets_the_tqdm_bar_and_no_log_lines(caplog, monkeypatch):
    import fcntl
    import struct
    import termios

    from skim.callbacks.progress import ProgressBar

    master, slave = os.openpty()
    # a new pty is 0 columns wide, which tqdm's dynamic width would honour with empty bars
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    terminal = os.fdopen(slave, "w")
    chunks: list[bytes] = []

    def drain():
        # a pty's buffer is small: read it while the run writes, until the slave side closes
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    monkeypatch.setattr(sys, "stdout", terminal)
    progress = ProgressBar(interval_s=0)
    try:
        with caplog.at_level(logging.INFO, logger="skim.progress"):
            _LitProbe.fit(progress)
    finally:
        monkeypatch.undo()
        terminal.close()
        reader.join(timeout=10)
        os.close(master)
    assert not progress.log_lines
    assert not [r for r in caplog.records if r.name == "skim.progress"]
    assert b"Epoch 0" in b"".join(chunks) and b"5/5" in b"".join(chunks)


def test_help_lists_the_groups_users_choose_and_no_schema(tmp_path):
    res = run_cli(["-m", "skim.train", "--help"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "schema" not in res.stdout
    (skim_line,) = [ln for ln in res.stdout.splitlines() if ln.startswith("skim: ")]
    options = skim_line.removeprefix("skim: ").split(", ")
    assert options == sorted(p.stem for p in (Path(CONF) / "skim").glob("*.yaml"))
    assert {"blockskim", "blockskim_fixed", "transkimmer", "truncate", "none"} <= set(options)


def _readme_config_groups() -> dict[str, list[str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Config groups (`conf/`)", 1)[1].split("\n## ", 1)[0]
    groups = {}
    for row in section.splitlines():
        m = re.match(r"\| `([^`]+)` \| (.*) \|$", row)
        if m:
            # option names are backticked, several may share one pair of backticks; `*_local` stands for a family
            groups[m.group(1)] = [tok for span in re.findall(r"`([^`]+)`", m.group(2)) for tok in span.split()]
    return groups


def test_readme_lists_every_config_group_and_option():
    conf = Path(CONF)
    documented = _readme_config_groups()
    # every folder of choosable configs; conf/hydra itself holds skim's Hydra settings and conf/local the
    # gitignored per-machine file, neither of them a choice
    on_disk = {str(p.parent.relative_to(conf)) for p in conf.rglob("*.yaml") if p.parent != conf}
    on_disk -= {"hydra", "local"}
    assert on_disk - set(documented) == set(), "config groups missing from README's table"
    for group, tokens in documented.items():
        assert (conf / group).is_dir(), f"README lists a config group {group!r} that conf/ does not have"
        missing = [p.stem for p in sorted((conf / group).glob("*.yaml")) if not any(fnmatch.fnmatchcase(p.stem, t) for t in tokens)]
        assert not missing, f"conf/{group}: {missing} missing from README's config-group table"
