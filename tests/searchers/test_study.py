"""Optuna searchers without training: the genotype encoding, the study loop, resume, workers.

The evaluator here is a function of the layers with a known best genotype, so a sampler's
result can be checked exactly and in milliseconds.
"""
from __future__ import annotations

import multiprocessing
import math

import optuna
import pytest
from optuna.trial import TrialState

from scansearch.searchers.encoding import EncodingError, GenotypeEncoding
from scansearch.searchers.study import (FINISHED, Objective, StudyError, check_objectives, create_study, fill_queue,
                                        journal_storage, known_genotypes, make_sampler, run_study, stale_to_failed)
from scansearch.spaces import load_space

optuna.logging.set_verbosity(optuna.logging.WARNING)
LOCAL8 = load_space("local8")
TARGET = {"w2", "w2_flip"}


def w2_loss(layers, trial=None):
    """Lower the more w2-family directions a genotype keeps; 0 when every layer keeps both."""
    return {"loss": float(sum(len(TARGET - set(layer)) for layer in layers)), "top1": 0.5}


def test_every_choice_is_a_valid_layer_and_round_trips():
    enc = GenotypeEncoding(LOCAL8, layers=3)
    assert len(enc.choices) == math.comb(8, 4) == 70
    assert enc.size == 70 ** 3
    for value in enc.choices:
        layer = enc.decode_layer(value)
        assert len(layer) == 4 and len(set(layer)) == 4 and set(layer) <= set(LOCAL8.patterns)
        assert enc.encode_layer(layer) == value
        assert enc.encode_layer(tuple(reversed(layer))) == value  # order does not matter
    layers = (("h", "h_flip", "v", "v_flip"), ("w2", "w2_flip", "h", "v"), ("w7", "w7_flip", "v_flip", "h_flip"))
    assert enc.decode(enc.params(layers)) == tuple(tuple(sorted(l, key=LOCAL8.patterns.index)) for l in layers)


def test_none_is_a_choice_only_where_the_space_has_it():
    with_none = GenotypeEncoding(load_space("local8_none"), layers=2)
    assert "none" in with_none.choices and with_none.decode_layer("none") == "none"
    assert with_none.encode_layer("none") == "none"
    with pytest.raises(EncodingError, match="no 'none'"):
        GenotypeEncoding(LOCAL8, layers=2).encode_layer("none")


@pytest.mark.parametrize("layer, match", [(("h", "h", "v", "w2"), "distinct"), (("h", "v"), "keeps 4"),
                                          (("h", "v", "w2", "zz"), "'zz'")])
def test_bad_layers_are_refused(layer, match):
    with pytest.raises(EncodingError, match=match):
        GenotypeEncoding(LOCAL8, layers=1).encode_layer(layer)
    with pytest.raises(EncodingError):
        GenotypeEncoding(LOCAL8, layers=1).decode_layer("h+h+v+w2")


def test_known_genotypes_are_distinct_and_valid():
    enc = GenotypeEncoding(LOCAL8, layers=2)
    known = known_genotypes(enc)
    assert set(known) == {"cross", "localmamba_baseline"}  # local8's all-rows pick is cross itself
    assert len({tuple(v) for v in known.values()}) == len(known)
    two = GenotypeEncoding(LOCAL8, layers=2, k=2)
    assert known_genotypes(two) == {"rows": (("h", "h_flip"),) * 2}


@pytest.mark.parametrize("objectives, match", [((), "at least one"), (("speed",), "unknown"),
                                               (("latency_ms", "loss"), "first objective"),
                                               (("loss", "loss"), "repeated")])
def test_bad_objectives(objectives, match):
    with pytest.raises(StudyError, match=match):
        check_objectives(objectives)


def _study(tmp_path, sampler="tpe", seed=0, trials=40, resume=False, enc=None, objectives=("loss",)):
    enc = enc or GenotypeEncoding(LOCAL8, layers=2)
    storage = journal_storage(tmp_path / "study.journal")
    return create_study(storage, "s", objectives, make_sampler(sampler, seed, objectives, trials), None,
                        resume=resume, encoding=enc), enc


def test_known_genotypes_run_first_and_tpe_beats_random_on_a_known_optimum(tmp_path):
    study, enc = _study(tmp_path)
    result = run_study(study, Objective(enc, w2_loss, ("loss",)), 40)
    assert [t.user_attrs.get("known") for t in study.trials[:2]] == ["cross", "localmamba_baseline"]
    assert study.trials[0].value == 4.0 and study.trials[1].value == 0.0  # cross keeps no w2; the baseline both
    assert result.best[0].value == 0.0
    # without the baseline enqueued, the sampler has to find the optimum: 15 of 70 choices a layer hold both
    plain = optuna.create_study(sampler=make_sampler("tpe", 0, ("loss",), 60))
    plain.optimize(Objective(enc, w2_loss, ("loss",)), n_trials=60)
    rand = optuna.create_study(sampler=make_sampler("random", 0, ("loss",), 60))
    rand.optimize(Objective(enc, w2_loss, ("loss",)), n_trials=60)
    assert plain.best_value == 0.0
    assert sum(t.value for t in plain.trials[30:]) < sum(t.value for t in rand.trials[30:])


def test_a_repeated_genotype_is_not_evaluated_again(tmp_path):
    calls = []

    def counting(layers, trial=None):
        calls.append(layers)
        return w2_loss(layers)

    enc = GenotypeEncoding(LOCAL8, layers=1, k=7)  # 8 choices: samplers repeat themselves
    study, _ = _study(tmp_path, sampler="random", enc=enc)
    run_study(study, Objective(enc, counting, ("loss",)), 30)
    assert len(study.trials) == 30
    assert len(calls) == len({tuple(c) for c in calls}) <= 8


def test_resume_runs_to_the_total_and_retries_a_trial_left_running(tmp_path):
    study, enc = _study(tmp_path)
    run_study(study, Objective(enc, w2_loss, ("loss",)), 10)
    # a process killed mid-trial leaves it RUNNING in the journal
    fill_queue(study, 11)
    dead = study.ask()
    enc.suggest(dead)
    again, _ = _study(tmp_path, resume=True, enc=enc)
    assert stale_to_failed(again) == [dead.number]
    run_study(again, Objective(enc, w2_loss, ("loss",)), 15)
    trials = again.get_trials(deepcopy=False)
    assert len(again.get_trials(deepcopy=False, states=FINISHED)) == 15
    assert [t.state for t in trials if t.number == dead.number] == [TrialState.FAIL]
    retry = [t for t in trials if t.user_attrs.get("retry_of") == dead.number]
    assert len(retry) == 1 and retry[0].params == trials[dead.number].params
    with pytest.raises(StudyError, match="no study"):
        create_study(journal_storage(tmp_path / "other.journal"), "s", ("loss",), None, None, resume=True,
                     encoding=enc)


def test_pareto_front_of_loss_and_ssm_layers(tmp_path):
    enc = GenotypeEncoding(load_space("local8_none"), layers=2)

    def loss_of(layers, trial=None):
        return {"loss": float(sum(2 if layer == "none" else len(TARGET - set(layer)) for layer in layers))}

    study, _ = _study(tmp_path, sampler="nsga2", enc=enc, objectives=("loss", "ssm_layers"), trials=60)
    result = run_study(study, Objective(enc, loss_of, ("loss", "ssm_layers")), 60)
    front = {tuple(t.values) for t in result.best}
    assert (0.0, 2.0) in front  # the baseline: both layers keep w2 and w2_flip
    for loss, ssm in front:      # no member is dominated by another
        assert not any(l2 <= loss and s2 <= ssm and (l2, s2) != (loss, ssm) for l2, s2 in front)


def _worker(path, seed):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    enc = GenotypeEncoding(LOCAL8, layers=2)
    study = create_study(journal_storage(path), "s", ("loss",), make_sampler("random", seed, ("loss",), 24), None,
                         resume=True, encoding=enc)
    run_study(study, Objective(enc, w2_loss, ("loss",)), 24, fill=False)


def test_two_worker_processes_share_one_journal_study(tmp_path):
    study, enc = _study(tmp_path)
    assert fill_queue(study, 24) == 24 - len(known_genotypes(enc))  # the creator enqueues every slot
    spawn = multiprocessing.get_context("spawn")
    workers = [spawn.Process(target=_worker, args=(str(tmp_path / "study.journal"), seed)) for seed in (1, 2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0, 0]
    trials = study.get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert numbers == list(range(len(trials)))  # every trial recorded once
    finished = [t for t in trials if t.state in FINISHED]
    assert len(finished) == 24  # workers take only queued trials: none runs over
    assert all(t.state == TrialState.COMPLETE for t in trials)


def test_costs_count_flops_params_latency_and_ssm_layers():
    from scansearch.genotype import Genotype
    from scansearch.searchers.evaluators import Costs

    template = Genotype(layers=(("h", "h_flip", "v", "v_flip"),) * 2, model="local_vim_micro", grid=(8, 8),
                        provenance={"img_size": 8, "model_overrides": {"dim": 8, "depth": 2, "d_state": 4}})
    costs = Costs(template, num_classes=4, img_size=8, in_chans=1, repeats=3)
    four = costs((("h", "h_flip", "v", "v_flip"),) * 2, ("flops", "params", "latency_ms", "ssm_layers"))
    assert four["ssm_layers"] == 2 and four["latency_ms"] > 0 and four["params"] > 0
    assert costs((("h", "h_flip", "v", "v_flip"),) * 2, ("ssm_layers",)) == {"ssm_layers": 2.0}
    from scansearch.flops import count_flops
    from scansearch.models import build_model
    model = build_model(template, num_classes=4, img_size=8, in_chans=1)
    assert four["flops"] == count_flops(model, 8, 1)


def test_a_worker_waits_for_a_stale_trial_fails_it_and_runs_its_genotype_again(tmp_path):
    """A database storage with heartbeats: a trial whose worker died (no beat for the grace
    period) is failed and enqueued again, and a worker with an empty queue waits for it."""
    from scansearch.searchers.study import QueueStudy, rdb_storage

    enc = GenotypeEncoding(LOCAL8, layers=2)
    storage = rdb_storage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat=1)
    study = create_study(storage, "s", ("loss",), make_sampler("random", 0, ("loss",), 6), None, resume=False,
                         encoding=enc, trials=6)
    assert isinstance(study, QueueStudy) and study.heartbeat == 1
    assert fill_queue(study, 6) == 6 - len(known_genotypes(enc)) and fill_queue(study, 6) == 0
    dead = study.ask()  # a worker takes a trial, beats once, and dies
    enc.suggest(dead)
    storage.record_heartbeat(dead._trial_id)
    worker = create_study(rdb_storage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat=1), "s", ("loss",),
                          make_sampler("random", 1, ("loss",), 6), None, resume=True, encoding=enc)
    run_study(worker, Objective(enc, w2_loss, ("loss",)), 6, fill=False)
    trials = worker.get_trials(deepcopy=False)
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 6
    assert trials[dead.number].state == TrialState.FAIL
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE and retry[0].params == trials[dead.number].params


def test_a_diverged_trial_gives_its_slot_to_a_fresh_genotype(tmp_path):
    from scansearch.errors import DivergenceError

    study, enc = _study(tmp_path, sampler="random", trials=8)

    def diverging(layers, trial=None):
        if trial.number == 4:
            raise DivergenceError("nan")
        return w2_loss(layers)

    run_study(study, Objective(enc, diverging, ("loss",)), 8)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states.count(TrialState.COMPLETE) == 8 and states.count(TrialState.FAIL) == 1
    assert TrialState.WAITING not in states
