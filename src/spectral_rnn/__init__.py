"""spectral-rnn: train recurrent neural networks by spectral methods.

Where things are:

* the law of the inputs: :mod:`spectral_rnn.processes`; its score functions: :mod:`spectral_rnn.scores`
* the moment tensor ``E[y_t (x) S_2(x_t | x_{t-1})]`` and its streamed contractions: :mod:`spectral_rnn.moments`
* its decomposition (Jennrich + ALS): :mod:`spectral_rnn.decomposition`
* the scales and the recurrent matrix U (instrument equations): :mod:`spectral_rnn.recurrence`
"""

import sys
import types

# Names are imported on first use (PEP 562), so that ``import spectral_rnn.cli`` stays light:
# the command line installs its signal handlers before torch is imported, and an
# interrupt during that (slow) import is then reported in one line.
_EXPORTS = {
    "._checks": ("DivergenceError", "IllConditionedError", "InputError", "NotFittedError", "SpectralRNNError",
                  "SpectralRNNWarning"),
    ".activations": ("Activation", "Polynomial", "Tanh", "as_activation"),
    ".compare": ("Comparison", "run_comparison"),
    ".corpora": ("TaggedCorpus", "load_corpus", "load_elecdemand", "read_conllu", "split_corpus"),
    ".datasets": ("PlantedProblem", "make_planted"),
    ".decomposition": ("CPDecomposer", "Decomposition", "decompose", "decompose_projected"),
    ".estimators": ("SpectralBRNN", "SpectralIORNN"),
    ".io": ("load_data", "load_model", "save_data", "save_model"),
    ".kinds": ("ModelKind", "from_torch", "get_kind"),
    ".metrics": ("match_units", "parameter_errors", "prediction_error"),
    ".models": ("BRNN", "IORNN"),
    ".moments": ("StepStream", "cross_moment"),
    ".processes": ("AR1Process", "GaussianAR1", "LogDensityProcess", "MarkovProcess", "choose_law", "select_density"),
    ".refine": ("History", "refine", "train_bptt"),
    ".scores": ("GaussianLaw", "MarginalLaw", "MixtureLaw", "MomentLaw", "SmoothLaw", "StepScores", "StudentTLaw"),
    ".stability": ("StabilityReport", "stabilize"),
    ".tag_start": ("SpectralStart", "fit_spectral_start", "spectral_start"),
    ".tagger": ("Tagger", "load_tagger", "save_tagger", "train_tagger"),
    ".torch_export": ("PolynomialRNN", "TorchRNN", "to_torch"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


class _Package(types.ModuleType):
    """This package as a module object: when the import system binds a submodule whose name
    is also an exported function (``spectral_rnn.refine``), the function wins, as it did when
    this file imported everything eagerly."""

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, types.ModuleType) and name in _WHERE and value.__name__ == f"{__name__}.{name}":
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__version__ = "0.1.0"

__all__ = [
    "AR1Process",
    "GaussianLaw",
    "LogDensityProcess",
    "MarginalLaw",
    "SmoothLaw",
    "MixtureLaw",
    "MomentLaw",
    "StepScores",
    "StudentTLaw",
    "choose_law",
    "select_density",
    "BRNN",
    "Activation",
    "CPDecomposer",
    "Comparison",
    "Decomposition",
    "DivergenceError",
    "GaussianAR1",
    "History",
    "IORNN",
    "IllConditionedError",
    "NotFittedError",
    "InputError",
    "MarkovProcess",
    "ModelKind",
    "PlantedProblem",
    "Polynomial",
    "PolynomialRNN",
    "SpectralBRNN",
    "SpectralIORNN",
    "SpectralRNNError",
    "SpectralRNNWarning",
    "SpectralStart",
    "StabilityReport",
    "StepStream",
    "Tanh",
    "TorchRNN",
    "as_activation",
    "cross_moment",
    "decompose",
    "decompose_projected",
    "fit_spectral_start",
    "from_torch",
    "get_kind",
    "load_data",
    "load_model",
    "make_planted",
    "match_units",
    "parameter_errors",
    "prediction_error",
    "refine",
    "run_comparison",
    "save_data",
    "save_model",
    "spectral_start",
    "stabilize",
    "to_torch",
    "train_bptt",
]
