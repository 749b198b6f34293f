"""Progress: the text-or-widget decision, the lines a final evaluation and a CLI training print, the CLI's
one-line Ctrl-C and plain --help text."""
import io
import json
import os
import re
import sys
from pathlib import Path

import pytest
import yaml

from atkit.workbench import cli
from atkit.evaluation import evaluate
from atkit.core.progress import (PROGRESS_ENV, LineProgress, Phases, decide_progress_mode, eta_seconds, progress_bar,
                            progress_mode)
from atkit.core.utils import ConfigError

from helpers import TinyConvNet, make_blobs

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_decision_text_in_headless_kernels_widgets_only_with_a_front_end():
    lab = "/usr/bin/python3 /venv/bin/jupyter-lab notebooks/"
    assert decide_progress_mode(None, "ZMQInteractiveShell", lab, False) == "widget"
    for runner in ("/venv/bin/python /venv/bin/papermill a.ipynb b.ipynb -f p.yaml",
                   "python -m papermill a.ipynb b.ipynb", "jupyter-nbconvert --execute a.ipynb",
                   "python -m pytest -q tests/test_notebooks.py"):
        assert decide_progress_mode(None, "ZMQInteractiveShell", runner, False) == "lines", runner
    assert decide_progress_mode(None, None, "bash", True) == "bar"  # a terminal
    assert decide_progress_mode(None, None, "bash", False) == "lines"  # a pipe or a log file
    assert decide_progress_mode(None, "TerminalInteractiveShell", "bash", True) == "bar"
    assert decide_progress_mode("LINES", "ZMQInteractiveShell", lab, False) == "lines"  # the override wins
    assert decide_progress_mode("widget", None, "bash", False) == "widget"
    with pytest.raises(ConfigError, match="ATKIT_PROGRESS='bars' is not a progress mode; accepted: widget, bar"):
        decide_progress_mode("bars", None, "", False)


def test_progress_mode_reads_the_environment(monkeypatch):
    monkeypatch.setenv(PROGRESS_ENV, "off")
    assert progress_mode() == "off"
    monkeypatch.delenv(PROGRESS_ENV)
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal (also under pytest -s)
    assert progress_mode() == "lines"  # no kernel, no terminal: plain lines


def test_line_progress_prints_whole_lines_with_counts_and_eta():
    out = io.StringIO()
    bar = LineProgress(total=4, desc="attack", unit="img", interval=0.0, file=out)
    bar.update(1)
    bar.update(3)  # the last update prints nothing: the closing line says it
    bar.set_postfix_str("25.00%")
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in out.getvalue()
    assert re.fullmatch(r"attack: 1/4 img \(25%\), [0-9.]+ s, ETA [0-9.]+ s", lines[0])
    assert re.fullmatch(r"attack: 4/4 img in [0-9.]+ s, 25\.00%", lines[1])
    assert eta_seconds(1, 4, 10.0) == 30.0
    quiet = io.StringIO()
    for _ in progress_bar(range(3), desc="x", mode="off", file=quiet):
        pass
    assert quiet.getvalue() == ""


def test_a_tiny_final_evaluation_reports_attack_by_attack_and_check_by_check():
    x, y = make_blobs(24, seed=3)
    model = TinyConvNet().eval()
    out, statuses = io.StringIO(), []
    phases = Phases("final evaluation [final]", mode="lines", file=out, on_status=statuses.append, interval=0.0)
    evaluate(model, x, y, attacks=["clean", "pgd2"], batch_size=8, progress=phases,
             sanity={"n": 8, "checks": ["monotone_steps", "zero_gradients"], "steps_attacks": ["fgsm", "pgd2"]})
    lines = out.getvalue().splitlines()
    assert any(re.fullmatch(r"final evaluation \[final\] clean: 24/24 img in [0-9.]+ s, [0-9.]+ % \[[0-9.]+, [0-9.]+\] \(n=[0-9]+\)", ln) for ln in lines)
    assert any(re.fullmatch(r"final evaluation \[final\] pgd2: 8/24 img \(33%\), [0-9.]+ s, ETA [0-9.]+ s", ln)
               for ln in lines), lines  # images done and an ETA while the attack runs
    assert any(re.fullmatch(r"final evaluation \[final\] pgd2: 24/24 img in [0-9.]+ s, [0-9.]+ % \[[0-9.]+, [0-9.]+\] \(n=[0-9]+\)", ln) for ln in lines)
    checks = [ln for ln in lines if "(check " in ln]
    assert [ln.split(" (check")[0] for ln in checks] == ["final evaluation [final] sanity monotone_steps",
                                                         "final evaluation [final] sanity zero_gradients"]
    assert "(check 1/2): passed" in checks[0] or "(check 1/2): FAILED" in checks[0]
    assert any(ln.startswith("final evaluation [final] sanity monotone_steps pgd2: 8/8 img in") for ln in lines)
    assert lines[-1].startswith("final evaluation [final] sanity checks ")
    assert any(s.startswith("final evaluation [final] sanity zero_gradients (check 2/2) ...") for s in statuses)


def test_cli_train_prints_one_line_per_epoch_and_the_final_evaluation(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(PROGRESS_ENV, "lines")
    config = dict(method="pgd_at", dataset="synthetic", data={"n_train": 64, "n_test": 16}, model="small_cnn",
                  epochs=1, batch_size=32, threat={"steps": 1}, schedule="constant", device="cpu",
                  eval={"n_test": 16, "pgd_steps": 1, "batch_size": 16, "final_attacks": ["clean", "pgd1"],
                        "sanity": False})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli.main(["train", str(path), "--out-dir", str(tmp_path / "runs")]) == 0
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    epochs = [ln for ln in err if ln.startswith("epoch 1/1  ")]
    assert len(epochs) == 1, err
    assert re.fullmatch(r"epoch 1/1  loss [0-9.]+  test clean [0-9.]+%, pgd1 [0-9.]+% \(n=16\)  "
                        r"[0-9.]+ s \+ eval [0-9.]+ s", epochs[0]), epochs[0]
    assert any(re.fullmatch(r"final evaluation \[final\] pgd1: 16/16 img in [0-9.]+ s, [0-9.]+ % \[[0-9.]+, [0-9.]+\] \(n=[0-9]+\)", ln) for ln in err)
    # One epoch: the best checkpoint is the final model, evaluated once and recorded under both names.
    assert ("final evaluation: final model (= the best checkpoint), clean, pgd1 on 16 test images; no sanity checks"
            in captured.err)
    assert sum("final evaluation [final] pgd1: 16/16" in ln for ln in err) == 1 and "[best]" not in captured.err
    run_dir = json.loads(captured.out)["run_dir"]
    evaluation = json.loads((Path(run_dir) / "eval.json").read_text())
    assert evaluation["best"]["same_weights_as"] == "final"
    assert evaluation["best"]["accuracy"] == evaluation["final"]["accuracy"]
    assert captured.out.count("\n") == 1 and '"status": "finished"' in captured.out  # stdout: the JSON line only

    assert cli.main(["train", str(path), "--out-dir", str(tmp_path / "runs"), "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_ctrl_c_in_atkit_notebook_ends_with_one_line(tmp_path, capsys, monkeypatch):
    import papermill

    seen = {}

    def interrupted(*args, **kwargs):
        seen["progress"] = os.environ.get(PROGRESS_ENV)
        seen["streamed"] = kwargs.get("stdout_file") is sys.stderr  # the kernel's lines reach the terminal
        raise KeyboardInterrupt

    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    monkeypatch.setattr(papermill, "execute_notebook", interrupted)
    assert cli.main(["notebook", "mse_perception", "--out", str(tmp_path / "nb")]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("notebook interrupted; what it wrote so far is in ")
    assert seen["progress"] == "lines" and seen["streamed"]  # the kernel papermill starts prints text progress
    assert PROGRESS_ENV not in os.environ  # restored afterwards


def test_help_texts_are_plain_text():
    parser = cli.build_parser()
    texts = [parser.format_help()]
    for action in parser._subparsers._group_actions:  # every subcommand's --help
        texts += [sub.format_help() for sub in action.choices.values()]
    assert len(texts) == 1 + len(parser._subparsers._group_actions[0].choices)  # the main help and each command's
    for text in texts:
        assert not re.search(r"``|:(class|func|mod|meth):|\*\*", text), text


def test_autoattack_says_what_a_stage_will_cost_then_reports_passes_and_an_eta_inside_it():
    """Inside each official sub-attack (whose code reports nothing between batches): before it starts, images x its
    forward passes per image; after the first batch a time estimate; during it the forward passes done against
    that bound with an ETA."""
    x, y = make_blobs(16, seed=3)
    model = TinyConvNet().eval()
    out = io.StringIO()
    phases = Phases("eval", mode="lines", file=out, interval=0.0)
    evaluate(model, x, y, attacks=["clean", "apgd(n_iter=5)"], batch_size=8, progress=phases)
    text = out.getvalue()
    planned = re.search(r"apgd-ce: (\d+) images x up to 5 forward passes each", text)
    assert planned, text
    images = int(planned.group(1))
    assert images >= 1
    if images > 8:  # more than one batch: the first one gives a time estimate for the rest of the stage
        assert re.search(r"apgd-ce: first batch 8 images in [0-9.]+ s, about [0-9.]+ s more for this stage", text)
    assert re.search(rf"apgd-ce [0-9,]+/{images * 5:,} forward passes, ETA at most [0-9.]+ s", text), text
