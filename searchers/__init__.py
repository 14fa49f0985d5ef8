"""The search: settings, the searchers (DARTS, Optuna, NNI) and the pipeline that runs them.

    from scansearch.searchers import SearchSettings, run_search

    outcome = run_search(SearchSettings(space="local8", epochs=1), out="runs/demo")

See ``docs/searching.md`` and ``docs/architecture.md``.
"""
from scansearch.searchers.darts_searcher import DartsSearcher
from scansearch.searchers.nni_searcher import NNISearcher
from scansearch.searchers.optuna_searcher import OptunaSearcher
from scansearch.searchers.pipeline import run_search, searcher_for
from scansearch.searchers.searcher import Prepared, RunContext, Searcher, SearchOutcome, prepare
from scansearch.searchers.settings import (DartsSettings, OptunaSettings, SearchSettings, resumed_settings,
                                           settings_from_options)

__all__ = ["DartsSearcher", "DartsSettings", "NNISearcher", "OptunaSearcher", "OptunaSettings", "Prepared",
           "RunContext", "SearchOutcome", "SearchSettings", "Searcher", "prepare", "resumed_settings", "run_search",
           "searcher_for", "settings_from_options"]
