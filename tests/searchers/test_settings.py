"""SearchSettings: typed, checked once on construction, one flat form for the run folder."""
from __future__ import annotations

import dataclasses

import pytest

from scansearch.errors import InputError
from scansearch.searchers import DartsSettings, OptunaSettings, SearchSettings, settings_from_options
from scansearch.searchers.settings import DEFAULTS, FLAT_ORDER, SEARCHERS


def test_defaults_and_the_flat_form_round_trip():
    s = SearchSettings()
    assert (s.space, s.model, s.data, s.searcher, s.epochs) == ("local8", "local_vim_micro", "digits", "darts", 5)
    assert s.darts.warmup_epochs == 1  # the default warm-up, settled on construction
    flat = s.to_flat()
    assert tuple(flat) == FLAT_ORDER and flat == DEFAULTS and "join" not in flat
    assert SearchSettings.from_flat(flat) == s
    tpe = SearchSettings(searcher="tpe", seeds=(1, 2), set=["dim=8"], optuna=OptunaSettings(trials=7, join=True))
    assert tpe.set == ("dim=8",) and tpe.seeds == (1, 2)
    again = SearchSettings.from_flat(tpe.to_flat())
    assert again == tpe and tpe.to_flat()["join"] is True and tpe.to_flat()["set"] == ["dim=8"]


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        SearchSettings().epochs = 3


@pytest.mark.parametrize("epochs, warmup", [(1, 0), (2, 1), (5, 1)])
def test_the_default_warmup_never_takes_a_whole_run(epochs, warmup):
    assert SearchSettings(epochs=epochs).darts.warmup_epochs == warmup


@pytest.mark.parametrize("kwargs, fragment", [
    ({"epochs": 0}, "--epochs must be at least 1"),
    ({"batch_size": 0}, "--batch-size must be at least 1"),
    ({"lr": 0.0}, "--lr must be positive and finite"),
    ({"lr": float("inf")}, "--lr must be positive and finite"),
    ({"weight_decay": -1.0}, "--weight-decay must be zero or more"),
    ({"img_size": 0}, "--img-size must be at least 1"),
    ({"searcher": "annealing"}, "--searcher must be one of"),
    ({"seeds": (1, 1)}, "--seeds: a seed is repeated"),
    ({"arch_lr": 0.0}, "--arch-lr"),
    ({"darts": DartsSettings(beta_decay=-1.0)}, "--beta-decay"),
    ({"darts": DartsSettings(warmup_epochs=5)}, "--warmup-epochs"),
    ({"darts": DartsSettings(verify_epochs=-1)}, "--verify-epochs"),
    ({"darts": DartsSettings(select="best")}, "--select"),
    ({"darts": DartsSettings(alphas="uniform", select="alpha")}, "uniform alphas carry no choice"),
    ({"searcher": "tpe", "optuna": OptunaSettings(trials=0)}, "--trials must be at least 1"),
    ({"searcher": "tpe", "optuna": OptunaSettings(workers=0)}, "--workers must be at least 1"),
    ({"searcher": "tpe", "optuna": OptunaSettings(heartbeat=0.5)}, "--heartbeat must be between"),
    ({"searcher": "tpe", "optuna": OptunaSettings(evaluator="guess")}, "--evaluator must be one of"),
    ({"searcher": "tpe", "optuna": OptunaSettings(proxy="vibes")}, "--proxy must be one of"),
    ({"searcher": "tpe", "optuna": OptunaSettings(objectives="loss,beauty")}, "--objectives: unknown objective"),
    ({"searcher": "tpe", "optuna": OptunaSettings(pruner="median")}, "it needs --evaluator train"),
    ({"searcher": "tpe", "optuna": OptunaSettings(evaluator="train", supernet="run")}, "--supernet is what"),
    ({"searcher": "zero-cost", "optuna": OptunaSettings(evaluator="train")}, "drop --evaluator"),
    ({"searcher": "tpe", "optuna": OptunaSettings(storage="db.sqlite")}, "expected a database URL"),
    ({"searcher": "tpe", "optuna": OptunaSettings(storage="sqlite:///x.db", workers=2)}, "SQLite has no row locks"),
    ({"searcher": "tpe", "seeds": (0, 1), "optuna": OptunaSettings(supernet="run")}, "--seeds and --supernet"),
])
def test_each_bad_value_is_refused_on_construction_with_its_option(kwargs, fragment):
    with pytest.raises(InputError, match=None) as info:
        SearchSettings(**kwargs)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_the_zero_cost_searcher_settles_its_evaluator():
    assert SearchSettings(searcher="zero-cost").optuna.evaluator == "zero-cost"
    assert SearchSettings(searcher="zero-cost").sampler == "random"
    assert SearchSettings(searcher="tpe").sampler == "tpe"


@pytest.mark.parametrize("given, fragment", [
    ({"seed": 1, "seeds": [0, 1]}, "--seed and --seeds do not mix"),
    ({"trials": 5}, "--trials applies to the Optuna searchers"),
    ({"searcher": "tpe", "heartbeat": 10.0}, "--heartbeat applies to a database --storage"),
    ({"searcher": "nni-darts", "finetune_steps": 3}, "--finetune-steps does not apply to --searcher nni-darts"),
    ({"colour": 3}, "unknown setting 'colour'"),
])
def test_options_a_searcher_would_ignore_are_refused(given, fragment):
    with pytest.raises(InputError) as info:
        SearchSettings.from_options(given)
    assert fragment in str(info.value)


def test_options_build_the_same_settings_as_python():
    given = {"searcher": "tpe", "trials": 12, "epochs": 2, "set": ["dim=8"], "select": "alpha"}
    assert settings_from_options(given) == SearchSettings(
        searcher="tpe", epochs=2, set=("dim=8",), darts=DartsSettings(select="alpha"), optuna=OptunaSettings(trials=12))


def test_a_stored_setting_of_the_wrong_kind_names_the_file():
    with pytest.raises(InputError, match=r"run/config.yaml: setting 'epochs' has a bad value 'five'"):
        SearchSettings.from_flat({"epochs": "five"}, where="run/config.yaml")
    assert SearchSettings.from_flat({"lr": 1, "img_size": None}, where="x").lr == 1  # an int where a float goes


def test_one_search_per_seed_gets_its_own_study_in_a_shared_storage():
    s = SearchSettings(searcher="tpe", seeds=(3, 4), optuna=OptunaSettings(storage="s.journal", study="st"))
    one = s.for_seed(4)
    assert (one.seed, one.seeds, one.optuna.study) == (4, None, "st-seed-4")
    assert SearchSettings(seeds=(3, 4)).for_seed(3).optuna.study == "scansearch"  # darts: no study


def test_resume_and_join_need_their_folder_and_storage(tmp_path):
    with pytest.raises(InputError, match="--resume needs --out"):
        settings_from_options({}, resume=True)
    with pytest.raises(InputError, match="--join needs --storage"):
        settings_from_options({}, join=True)
    with pytest.raises(InputError, match="--join starts a run folder of its own"):
        settings_from_options({"storage": "x.journal"}, join=True, resume=True)
    with pytest.raises(InputError, match="not a run folder"):
        settings_from_options({}, resume=True, run_dir=tmp_path / "none")


def test_every_searcher_name_builds():
    for name in SEARCHERS:
        if name != "gp":  # needs scipy, an extra
            assert SearchSettings(searcher=name).searcher == name
