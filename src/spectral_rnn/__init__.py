"""spectral-rnn: train recurrent neural networks by spectral methods.

Where things are:

* the law of the inputs: :mod:`spectral_rnn.processes`; its score functions: :mod:`spectral_rnn.scores`
* the moment tensor ``E[y_t (x) S_2(x_t | x_{t-1})]`` and its streamed contractions: :mod:`spectral_rnn.moments`
* its decomposition (Jennrich + ALS): :mod:`spectral_rnn.decomposition`
* the scales and the recurrent matrix U (instrument equations): :mod:`spectral_rnn.estimators`
"""

from ._checks import DivergenceError, IllConditionedError, InputError, SpectralRNNError
from .activations import Activation, Polynomial, Tanh, as_activation
from .compare import Comparison, run_comparison
from .datasets import PlantedProblem, make_planted
from .decomposition import CPDecomposer, Decomposition, decompose, decompose_projected
from .estimators import SpectralBRNN, SpectralIORNN
from .io import load_data, load_model, save_data, save_model
from .metrics import match_units, parameter_errors, prediction_error
from .models import BRNN, IORNN
from .moments import StepStream, cross_moment
from .processes import AR1Process, GaussianAR1, LogDensityProcess, MarkovProcess, choose_law
from .refine import History, refine, train_bptt
from .scores import GaussianLaw, MarginalLaw, MomentLaw, SmoothLaw, StepScores, StudentTLaw
from .torch_export import PolynomialRNN, from_torch, to_torch
from .stability import StabilityReport, stabilize
from .torch_export import TorchRNN

__version__ = "0.1.0"

__all__ = [
    "AR1Process",
    "GaussianLaw",
    "LogDensityProcess",
    "MarginalLaw",
    "SmoothLaw",
    "MomentLaw",
    "StepScores",
    "StudentTLaw",
    "choose_law",
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
    "InputError",
    "MarkovProcess",
    "PlantedProblem",
    "Polynomial",
    "PolynomialRNN",
    "SpectralBRNN",
    "SpectralIORNN",
    "SpectralRNNError",
    "StabilityReport",
    "StepStream",
    "Tanh",
    "TorchRNN",
    "as_activation",
    "cross_moment",
    "decompose",
    "decompose_projected",
    "from_torch",
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
    "stabilize",
    "to_torch",
    "train_bptt",
]
