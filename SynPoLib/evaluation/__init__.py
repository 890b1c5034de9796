"""Evaluation harness: protocols, baselines, ablations, metrics reports (``synpo eval``).

From Python::

    from SynPoLib.evaluation import standard_methods, within_volume_case, evaluate
    cases = [within_volume_case("Thalamus_L", "colin27", labels, label=77)]
    evaluate(cases, standard_methods(preset("lite")), create_backend("lite"), {"colin27": colin_subject()},
             out=Path("eval-output/demo"), work=Path("eval-output/demo/work"), base_config=preset("lite"),
             title="demo", command="python", data="Colin27")
"""

from .datasets import (DATASETS, SCOREBOARD_STRUCTURES, FSMISDataset, Subject, aal_labels, colin_subject,
                       find_scans, fsmis_cases, resolve_structures)
from .harness import Outputs, evaluate, write_reports
from .methods import COPY, DEFAULT_ALPHAS, SYNPO, FeatureSubset, Method, select_methods, standard_methods
from .protocols import (FSMIS, PAIR, WITHIN, Case, ProtocolError, fsmis_case, fsmis_chunks, fsmis_fractions,
                        fsmis_support_slices, pairing_case, structure_slices, within_volume_case)
from .report import Results, aggregate, collect, read_csv
from .runner import evaluate_case, run_cases
from .store import ResultStore

__all__ = [
    "COPY", "Case", "DATASETS", "DEFAULT_ALPHAS", "FSMIS", "FSMISDataset", "FeatureSubset", "Method", "Outputs",
    "PAIR", "ProtocolError", "ResultStore", "Results", "SCOREBOARD_STRUCTURES", "SYNPO", "Subject", "WITHIN",
    "aal_labels", "aggregate", "colin_subject", "collect", "evaluate", "evaluate_case", "find_scans",
    "fsmis_case", "fsmis_cases", "fsmis_chunks", "fsmis_fractions", "fsmis_support_slices", "pairing_case",
    "read_csv", "resolve_structures", "run_cases", "select_methods", "standard_methods", "structure_slices",
    "within_volume_case", "write_reports",
]
