"""The ablation engine and its widget UI, driven headlessly: controls built from the registry's Params
metadata, Run in a background thread to completion, a results table that grows, Stop that keeps the
measurements, reuse of finished runs."""
import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from atkit.methods import METHODS, Params, register
from atkit.methods.pgd_at import PGDAT
from atkit.core.utils import ConfigError
from atkit.workbench.ablation import (AblationSession, method_choices, param_specs, parse_text_value, results_columns,
                                     split_point)
from atkit.workbench.plots import learning_curves_figure
from atkit.workbench.widgets import AblationUI, make_control, read_control, results_html

TINY = dict(method="pgd_at", dataset="synthetic", data={"n_train": 64, "n_test": 16}, model="small_cnn", epochs=1,
            batch_size=32, max_steps_per_epoch=2, threat={"steps": 1}, schedule="constant", device="cpu",
            eval={"n_test": 16, "pgd_steps": 1, "batch_size": 16, "final_attacks": ["clean", "pgd1"], "sanity": False})


@pytest.fixture
def toy_method():
    """A method registered only for this test: its controls must appear without any change to the UI."""

    @dataclass
    class ToyParams(Params):
        strength: float = field(default=0.25, metadata={"help": "how strong", "range": (0.0, 2.0)})
        rounds: int = field(default=3, metadata={"help": "how many", "range": (1, 9)})
        flavour: str = field(default="b", metadata={"help": "which", "choices": ("a", "b")})
        switch: bool = field(default=True, metadata={"help": "on or off"})

    class Toy(PGDAT):
        name = "toy_widget_method"
        Params = ToyParams

    register(Toy)
    yield Toy
    del METHODS["toy_widget_method"]


def test_controls_come_from_the_params_metadata_of_any_registered_method(toy_method):
    specs = {s.name: s for s in param_specs("toy_widget_method")}
    assert {"strength", "rounds", "flavour", "switch", "attack_bn_mode", "random_start"} <= set(specs)
    assert (specs["strength"].kind, specs["strength"].low, specs["strength"].high) == ("float", 0.0, 2.0)
    assert (specs["rounds"].kind, specs["rounds"].default) == ("int", 3)
    assert specs["flavour"].kind == "choice" and specs["flavour"].choices == ("a", "b")
    assert specs["switch"].kind == "bool" and specs["attack_bn_mode"].kind == "choice"

    ui = AblationUI(AblationSession(TINY, runs_dir="unused"), methods=["pgd_at", "toy_widget_method"])
    ui.method.value = "toy_widget_method"
    assert set(ui.controls) == set(specs)
    strength = ui.controls["strength"]
    assert (strength.min, strength.max, strength.value) == (0.0, 2.0, 0.25)
    assert "how strong" in strength.tooltip
    assert list(ui.controls["flavour"].options) == [("a", "a"), ("b", "b")]
    ui.controls["strength"].value = 1.5
    ui.controls["switch"].value = False
    point = ui.current_point()
    assert point["method"] == "toy_widget_method" and point["strength"] == 1.5 and point["switch"] is False
    assert "rounds" not in point and "flavour" not in point  # defaults are not part of the point
    config = ui.session.config_for(point)
    assert config.method_params == {"strength": 1.5, "switch": False}


def test_specs_of_composites_and_ablation_switches():
    ducat = {s.name: s for s in param_specs("trades+ducat")}
    assert {"start_epoch", "alpha", "beta1", "beta2"} <= set(ducat) and "lam" in ducat  # DUCAT's and the base's
    assert (ducat["beta1"].low, ducat["beta1"].high) == (0.0, 1.0)
    raat = {s.name: s for s in param_specs("raat")}
    assert raat["bound"].kind == "bool" and raat["dicar"].kind == "bool" and raat["eta"].kind == "float"
    assert raat["mix_lambda"].kind == "text" and raat["mix_lambda"].optional
    rpat = {s.name: s for s in param_specs("pgd_at+rpat")}
    assert rpat["rp_distance"].choices == ("mse", "kl", "js", "cosine")
    assert rpat["rp_alpha"].kind == "text"  # a number or 'beta-' / 'beta+'


def test_parse_text_value():
    assert parse_text_value("") is None and parse_text_value("None") is None
    assert parse_text_value("3") == 3 and parse_text_value("0.25") == 0.25
    assert parse_text_value("8/255") == pytest.approx(8 / 255)
    assert parse_text_value("beta-") == "beta-" and parse_text_value("true") is True


def test_points_split_into_config_keys_and_hyperparameters():
    overrides, hparams = split_point({"method": "pgd_at+ducat", "start_epoch": 3, "beta1": 0.5, "seed": 2,
                                      "eps255": 4, "config.start_epoch": 0}, "pgd_at+ducat")
    # DUCAT's start_epoch is its window start, not RunConfig.start_epoch (that one needs the config. prefix).
    assert hparams == {"start_epoch": 3, "beta1": 0.5}
    assert overrides == {"seed": 2, "eps255": 4, "start_epoch": 0}
    with pytest.raises(ConfigError, match="Did you mean 'rp_alpha'"):
        split_point({"rp_alpah": 0.2}, "pgd_at+rpat")
    session = AblationSession(TINY, runs_dir="unused")
    config = session.config_for({"method": "trades", "lam": 3.0, "eps255": 4})
    assert config.method == "trades" and config.method_params == {"lam": 3.0}
    threat = config.threat_model()
    assert threat.eps == pytest.approx(4 / 255) and threat.step_size == pytest.approx(1 / 255)  # ratio kept


def test_run_button_trains_in_a_thread_and_the_results_table_grows(tmp_path):
    session = AblationSession(TINY, runs_dir=tmp_path / "runs")
    ui = AblationUI(session, methods=["pgd_at", "pgd_at+rpat"], evaluation="full")  # the base's final attacks
    statuses: list[str] = []
    ui.status.observe(lambda change: statuses.append(change["new"]), names="value")
    ui.method.value = "pgd_at+rpat"
    ui.controls["rp_distance"].value = "kl"
    thread = ui.on_run()
    assert thread is not None and ui.run_button.disabled and not ui.stop_button.disabled
    assert ui.wait(timeout=300)
    table = session.table()
    assert len(table) == 1
    row = table.iloc[0]
    assert row["status"] == "finished" and row["method"] == "pgd_at+rpat" and not row["reused"]
    assert 0 <= row["final_clean"] <= 100 and 0 <= row["final_pgd1"] <= 100 and 0 <= row["best_clean"] <= 100
    assert '"rp_distance": "kl"' in row["method_params"]
    assert ui.progress.value == ui.progress.max == 2  # two steps, counted as they happen
    assert ui.live.value[:4] == b"\x89PNG" and ui.tradeoff_plot.value[:4] == b"\x89PNG"
    assert "rp_distance=kl" in ui.table.value and not ui.run_button.disabled and ui.stop_button.disabled
    # The status line said what was going on: training, the epoch's evaluation, the final evaluation by attack.
    assert any("training epoch 1/1" in s for s in statuses)
    assert any("epoch 1/1: evaluating on 16 test images" in s for s in statuses)
    assert any("final evaluation [final] pgd1: 16/16 img in" in s for s in statuses)
    # One epoch: the best checkpoint is the final model, evaluated once (the same numbers under both names).
    assert any("final evaluation: final model (= the best checkpoint)" in s for s in statuses)
    assert not any("[best]" in s for s in statuses) and row["best_clean"] == row["final_clean"]
    assert "final_mean[pgd1]" in row and "final_mean" not in row  # Mean named by the attack it uses

    ui.controls["rp_distance"].value = "cosine"
    ui.on_run()
    assert ui.wait(timeout=300)
    assert len(session.table()) == 2 and len(ui.session.tradeoff()) == 2
    assert "rp_distance=cosine" in ui.table.value

    # The same point again: the finished run is reused, not trained again.
    ui.controls["rp_distance"].value = "kl"
    ui.on_run()
    assert ui.wait(timeout=300)
    last = session.table().iloc[-1]
    assert bool(last["reused"]) and last["run_dir"] == row["run_dir"] and last["final_clean"] == row["final_clean"]
    assert len(list((tmp_path / "runs").iterdir())) == 2


def test_stop_ends_the_run_cleanly_and_keeps_what_it_measured(tmp_path):
    session = AblationSession(dict(TINY, epochs=40), runs_dir=tmp_path / "runs")
    ui = AblationUI(session, live_plot=False)
    ui.on_run()
    began = time.time()
    while time.time() - began < 300:
        trainer = session.trainer
        if trainer is not None and len(trainer.history) >= 1:
            break
        time.sleep(0.05)
    ui.on_stop()
    assert ui.wait(timeout=300)
    row = session.table().iloc[-1]
    assert row["status"] == "stopped"
    assert 1 <= row["epochs_done"] < 40
    # The last evaluated epoch's numbers, in their own columns (not the final evaluation's, which did not run).
    assert row["final_source"] == "last epoch" and 0 <= row["last_epoch_clean"] <= 100
    assert not any(c.startswith("final_") and c != "final_source" for c in session.table().columns)
    assert ui.progress.bar_style == "warning" and not ui.run_button.disabled
    assert len(session.tradeoff()) == 1


def test_a_failing_point_is_a_row_not_an_exception(tmp_path):
    session = AblationSession(TINY, runs_dir=tmp_path / "runs")
    row = session.run({"method": "pgd_at", "epochs": 0})
    assert row["status"] == "failed" and "epochs" in row["error"]
    assert session.table().iloc[0]["status"] == "failed"


def test_dataclass_fields_unchanged_by_ui(toy_method):
    # Building controls must not mutate the registered Params defaults.
    AblationUI(AblationSession(TINY, runs_dir="unused"), methods=["toy_widget_method"])
    defaults = {f.name: f.default for f in dataclasses.fields(toy_method.Params)}
    assert defaults["strength"] == 0.25 and defaults["rounds"] == 3


def test_a_stop_inside_an_epoch_is_marked_partial_not_counted_and_resumed_from_the_last_complete_epoch(tmp_path):
    base = dict(TINY, epochs=3, max_steps_per_epoch=3, data={"n_train": 96, "n_test": 16})
    session = AblationSession(base, runs_dir=tmp_path / "runs")

    def stop_in_epoch_two(trainer, steps_done):
        if steps_done == trainer.steps_per_epoch + 1:  # the first step of epoch 2
            session.request_stop()

    row = session.run({"method": "pgd_at"}, on_step=stop_in_epoch_two)
    assert row["status"] == "stopped" and row["epochs_done"] == 1
    assert row["partial_epoch"] == "epoch 2: 1/3 steps (not counted)"
    run_dir = Path(row["run_dir"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [r["epoch"] for r in metrics["history"]] == [1, 2] and metrics["history"][-1]["partial"] is True
    assert metrics["epochs_done"] == 1 and metrics["best_epoch"] == 1  # a partial epoch is never "best"
    assert torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)["epoch"] == 1
    html = results_html(session.table())
    assert "epoch 2: 1/3 steps (not counted)" in html

    again = session.run({"method": "pgd_at"})  # resumed from epoch 1: epoch 2 runs in full, then epoch 3
    assert again["run_dir"] == row["run_dir"] and again["status"] == "finished" and again["epochs_done"] == 3
    assert again["partial_epoch"] == ""
    history = json.loads((run_dir / "metrics.json").read_text())["history"]
    assert [(r["epoch"], r["steps"], r.get("partial", False)) for r in history] == [(1, 3, False), (2, 3, False),
                                                                                      (3, 3, False)]


def test_the_table_keeps_one_attack_per_column_beside_a_stopped_run(tmp_path):
    # Finished runs are scored by the final PGD-2, the stopped one only has its per-epoch PGD-1: separate columns,
    # Mean/NRR named by their attack, and the trade-off plot uses PGD-2 only.
    base = dict(TINY, epochs=2, eval=dict(TINY["eval"], final_attacks=["clean", "pgd2"]))
    session = AblationSession(base, runs_dir=tmp_path / "runs")
    done = session.run({"method": "pgd_at"})
    session.run({"method": "pgd_at", "seed": 1}, on_step=lambda t, k: session.request_stop() if k == 3 else None)
    table = session.table()
    finished, stopped = table.iloc[0], table.iloc[1]
    assert done["status"] == "finished" and stopped["status"] == "stopped"
    columns = results_columns(table)
    assert {"final_pgd2", "final_mean[pgd2]", "final_nrr[pgd2]", "last_epoch_pgd1", "last_epoch_mean[pgd1]"} <= set(
        columns)
    assert not {"final_mean", "final_nrr", "final_pgd1"} & set(columns)
    assert math.isnan(stopped["final_pgd2"]) and math.isnan(finished["last_epoch_pgd1"])
    assert finished["final_mean[pgd2]"] == pytest.approx((finished["final_clean"] + finished["final_pgd2"]) / 2)
    assert stopped["partial_epoch"] == "epoch 2: 1/2 steps (not counted)" and stopped["epochs_done"] == 1
    trade = session.tradeoff()
    assert list(trade["robust_metric"]) == ["pgd2"] and list(trade["source"]) == ["final"]


def test_every_menu_shows_its_value_never_a_blank_box():
    """A Dropdown given value=None selects nothing (a blank box): every choice control of every method and
    composite shows its default's label, and reads back the default."""
    seen_none = 0
    for method in method_choices():
        for spec in param_specs(method):
            if spec.kind != "choice":
                continue
            w = make_control(spec)
            assert w.index is not None and w.label == ("default (None)" if spec.default is None else str(spec.default))
            assert read_control(spec, w) == spec.default, (method, spec.name)
            seen_none += spec.default is None
    assert seen_none > 0  # attack_bn_mode and random_start default to None for every method
    ui = AblationUI(AblationSession(TINY, runs_dir="unused"), method="pgd_at",
                    method_params={"attack_bn_mode": "train", "random_start": None})
    assert ui.controls["attack_bn_mode"].label == "train" and ui.controls["random_start"].label == "default (None)"
    assert ui.method.label == "pgd_at"


def test_the_layout_keeps_figures_at_their_aspect_beside_a_scrolling_table_and_no_image_before_a_figure():
    ui = AblationUI(AblationSession(TINY, runs_dir="unused"))
    top, results, _log = ui.widget.children
    # Rows align at the top (a stretched row drew the learning curves about 2x too tall); figures keep their aspect.
    assert top.layout.align_items == results.layout.align_items == "flex-start"
    assert ui.live.layout.height == ui.tradeoff_plot.layout.height == "auto"
    # The trade-off plot comes first at a fixed width; the table scrolls in the rest of the row.
    assert results.children == (ui.tradeoff_box, ui.table_box) and ui.tradeoff_box.layout.flex == "0 0 auto"
    assert ui.table_box.layout.overflow == "auto" and ui.table_box.layout.min_width == "0"
    # No Image widget (a broken-image icon while empty) until there is a figure.
    assert ui.live not in ui.live_box.children and ui.tradeoff_plot not in ui.tradeoff_box.children
    assert "no runs yet" in ui.table.value


@pytest.mark.parametrize("epochs,ticks", [([1], [1.0]), ([1, 2, 3], [1.0, 2.0, 3.0])])
def test_learning_curves_put_ticks_on_whole_epochs(epochs, ticks):
    history = [{"epoch": e, "train_loss": 2.0 / e, "train_adv_acc": 10.0 * e, "test_clean_acc": 20.0 * e,
                "test_pgd10_acc": 5.0 * e} for e in epochs]
    fig = learning_curves_figure(history)
    fig.canvas.draw()
    for ax in fig.axes:
        assert list(ax.get_xticks()) == ticks
        assert [t.get_text() for t in ax.get_xticklabels()] == [str(int(t)) for t in ticks]
    if len(epochs) == 1:  # not 0.96-1.04 around a lone point
        assert all(ax.get_xlim() == (0.0, 2.0) for ax in fig.axes)
    many = learning_curves_figure([{"epoch": e, "train_loss": 1.0, "test_clean_acc": 50.0} for e in range(1, 31)])
    assert all(float(t).is_integer() for ax in many.axes for t in ax.get_xticks())


def test_quick_evaluation_is_the_default_stated_and_full_reevaluates_the_same_run(tmp_path):
    base = dict(TINY, eval=dict(TINY["eval"], sanity=True, sanity_n_test=8))  # full: clean, PGD-1, sanity checks
    session = AblationSession(base, runs_dir=tmp_path / "runs")
    with pytest.raises(ConfigError, match="'fast'"):
        AblationUI(session, evaluation="fast")
    ui = AblationUI(session, live_plot=False)
    assert ui.evaluation.value == "quick"
    assert "clean, pgd20 on up to 500 test images; no sanity checks" in ui.evaluation_note.value
    ui.on_run()
    assert ui.wait(timeout=300)
    quick = session.table().iloc[-1]
    run_dir = Path(quick["run_dir"])
    final = json.loads((run_dir / "eval.json").read_text())["final"]
    assert set(final["accuracy"]) == {"clean", "pgd20"} and final["n"] == 16 and not final["checks"]
    assert quick["evaluated"] == "16 img, clean, pgd20" and "evaluated (quick asked): 16 img" in ui.status.value
    assert "evaluated" in results_columns(session.table()) and "16 img, clean, pgd20" in ui.table.value
    assert ui.live_box.children == () or ui.live not in ui.live_box.children  # live_plot=False: no curves drawn
    assert ui.tradeoff_box.children == (ui.tradeoff_plot,) and ui.tradeoff_plot.value[:4] == b"\x89PNG"

    ui.evaluation.value = "full"
    assert "clean, pgd1 on the whole test set; sanity checks on up to 8 of them" in ui.evaluation_note.value
    ui.on_run()
    assert ui.wait(timeout=300)
    full = session.table().iloc[-1]
    assert full["run_dir"] == str(run_dir) and bool(full["reused"])  # trained once, evaluated again
    final = json.loads((run_dir / "eval.json").read_text())["final"]
    assert {"clean", "pgd1"} <= set(final["accuracy"]) and final["checks"]
    assert full["evaluated"].startswith("16 img, sanity checks")

    ui.evaluation.value = "quick"  # a quick request keeps the evaluation that is there: nothing runs again
    before = (run_dir / "eval.json").stat().st_mtime_ns
    ui.on_run()
    assert ui.wait(timeout=300)
    assert (run_dir / "eval.json").stat().st_mtime_ns == before
    assert session.table().iloc[-1]["evaluated"] == full["evaluated"]
    assert len(list((tmp_path / "runs").iterdir())) == 1
