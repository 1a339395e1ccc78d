"""spectral-rnn: train recurrent neural networks by spectral methods.

Where things are:

* the moment tensor ``E[y_t (x) S_2(x_t | x_{t-1})]`` and its streamed contractions: :mod:`spectral_rnn.moments`
* its decomposition (Jennrich + ALS): :mod:`spectral_rnn.decomposition`
* the scales and the recurrent matrix U (instrument equations): :mod:`spectral_rnn.estimators`
"""

from ._checks import DivergenceError, IllConditionedError, InputError, SpectralRNNError
from .activations import Polynomial
from .datasets import PlantedProblem, make_planted
from .decomposition import CPDecomposer, Decomposition, decompose, decompose_projected
from .estimators import SpectralBRNN, SpectralIORNN
from .io import load_data, load_model, save_data, save_model
from .metrics import match_units, parameter_errors, prediction_error
from .models import BRNN, IORNN
from .moments import StepStream, cross_moment
from .processes import GaussianAR1, MarkovProcess

__version__ = "0.1.0"

__all__ = [
    "BRNN",
    "CPDecomposer",
    "Decomposition",
    "DivergenceError",
    "GaussianAR1",
    "IORNN",
    "IllConditionedError",
    "InputError",
    "MarkovProcess",
    "PlantedProblem",
    "Polynomial",
    "SpectralBRNN",
    "SpectralIORNN",
    "SpectralRNNError",
    "StepStream",
    "cross_moment",
    "decompose",
    "decompose_projected",
    "load_data",
    "load_model",
    "make_planted",
    "match_units",
    "parameter_errors",
    "prediction_error",
    "save_data",
    "save_model",
]
