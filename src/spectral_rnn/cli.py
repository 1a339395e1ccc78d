"""The ``spectral-rnn`` command line: simulate, fit (optionally --refine), predict, compare, demo.

Every bad input exits with code 2 and one line on stderr
(``spectral-rnn: error: ...``), never a traceback; success exits with 0. SIGINT
exits with 130 and SIGTERM with 143, one line (``spectral-rnn: interrupted`` /
``terminated``), after the temporary files are removed.

Importing this module costs a few milliseconds (no argparse, numpy or torch): they are
imported inside :func:`main` once the signal handlers are in place, so that an interrupt
during the (slow) imports is reported like any other.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Sequence

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (20 ms at start-up)
try:  # the C module: installing handlers without importing enum keeps start-up short
    import _signal as _sig
except ImportError:  # pragma: no cover - other Python implementations
    import signal as _sig

if TYPE_CHECKING:
    import argparse

PROG = "spectral-rnn"
EXIT_USAGE = 2
#: exit code and word for each signal turned into an orderly exit
_SIGNAL_EXITS = {_sig.SIGINT: (130, "interrupted"), _sig.SIGTERM: (143, "terminated")}


def _parser_class() -> type:
    """``_Parser``: an ``ArgumentParser`` whose usage errors are one line on stderr, exit code 2
    (built on first use, so that importing this module does not import argparse)."""
    import argparse

    class _Parser(argparse.ArgumentParser):
        def error(self, message: str) -> None:  # type: ignore[override]
            where = self.prog[len(PROG):].strip() if self.prog.startswith(PROG) else ""
            hint = f" (see '{self.prog} --help')"
            text = " ".join(message.split())
            sys.stderr.write(f"{PROG}: error: {where + ': ' if where else ''}{text}{hint}\n")
            sys.exit(EXIT_USAGE)

    return _Parser


# ------------------------------------------------------------ argument types
def _number(cast, minimum: float, what: str):
    """An argparse type: ``cast(text)`` (finite) at least ``minimum``, else a one-line error naming ``what``."""

    def parse(text: str):
        import argparse

        try:
            v = cast(text)
        except (ValueError, OverflowError):
            v = None
        if v is None or not math.isfinite(v) or v < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v

    return parse


_positive_int = _number(int, 1, "a positive integer")
_nonneg_int = _number(int, 0, "a non-negative integer")
_nonneg_float = _number(float, 0.0, "a non-negative number")


def _activation(text: str):
    import argparse

    from ._checks import SpectralRNNError
    from .activations import parse_activation

    try:
        return parse_activation(text)
    except SpectralRNNError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


#: options whose value may start with '-' (an activation "-0.5,1,0.5"): argparse would read it as an option
_DASH_VALUE_OPTIONS = ("--activation",)


def _looks_like_value(token: str) -> bool:
    """A token starting with '-' that is a value, not an option: a number or a list of numbers."""
    rest = token[1:].lstrip()
    return "," in token or rest[:1].isdigit() or rest[:1] == "." or rest[:3].lower() in ("inf", "nan")


def _join_dash_values(argv: list[str]) -> list[str]:
    """``--activation -0,1,0.5`` -> ``--activation=-0,1,0.5`` (what argparse understands)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            out.extend(argv[i:])
            break
        if (a in _DASH_VALUE_OPTIONS and i + 1 < len(argv) and argv[i + 1].startswith("-")
                and _looks_like_value(argv[i + 1])):
            out.append(f"{a}={argv[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


# ------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    from .activations import Polynomial

    _Parser = _parser_class()
    p = _Parser(
        prog=PROG,
        description="Train recurrent neural networks by spectral methods (Sedghi & Anandkumar, arXiv:1603.00954).",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    act_help = ('activation: "tanh", or polynomial coefficients "c0,c1,c2", lowest order first '
                '(e.g. "0,1,0.5" = u + 0.5 u^2)')

    s = sub.add_parser("simulate", help="draw a planted model and simulate a data set from it",
                       description="Draw Gaussian AR(1) inputs and a random planted model, and write DATA.npz "
                                   "(inputs, outputs).")
    s.add_argument("--hidden-size", type=_positive_int, required=True, help="hidden units d_h (per direction for a BRNN)")
    s.add_argument("--input-dim", type=_positive_int, required=True, help="input dimension d_x")
    s.add_argument("--output-dim", type=_positive_int, required=True, help="output dimension d_y")
    s.add_argument("--sequences", type=_positive_int, required=True, help="number of sequences")
    s.add_argument("--length", type=_positive_int, required=True, help="time steps per sequence")
    s.add_argument("--activation", type=_activation, default=Polynomial([0.0, 1.0, 0.5]), help=act_help + " (default 0,1,0.5)")
    s.add_argument("--seed", type=_nonneg_int, default=0, help="random seed (default 0)")
    s.add_argument("--noise", type=_nonneg_float, default=0.1, help="output noise standard deviation (default 0.1)")
    s.add_argument("--recurrent-norm", type=_nonneg_float, default=0.3, help="spectral norm of U (and V) (default 0.3)")
    s.add_argument("--input-std", type=_nonneg_float, default=0.4, help="standard deviation of the input weights (default 0.4)")
    s.add_argument("--bidirectional", action="store_true", help="plant a bidirectional RNN (BRNN): --kind brnn")
    s.add_argument("--kind", help=KIND_HELP)
    s.add_argument("--out", required=True, metavar="DATA.npz", help="data file to write")
    s.add_argument("--truth", metavar="MODEL.safetensors", help="also write the planted model")

    f = sub.add_parser("fit", help="fit a model to a data set by the spectral method",
                       description="Fit an IO-RNN (or a BRNN) to DATA.npz and write the model file.")
    f.add_argument("data", metavar="DATA", help="data: an .npz file with 'inputs', 'outputs' and optional 'lengths'; "
                   "a directory of X.npy, Y.npy and optional lengths.npy (memory-mapped); or a Zarr store with "
                   "arrays inputs, outputs and optional lengths")
    f.add_argument("--hidden-size", type=_positive_int, required=True, help="hidden units d_h (per direction for a BRNN)")
    f.add_argument("--activation", type=_activation, required=True, help=act_help)
    f.add_argument("--out", required=True, metavar="MODEL.safetensors", help="model file to write")
    f.add_argument("--seed", type=_nonneg_int, default=0, help="seed of the estimator's random choices (default 0)")
    f.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="compute device (default cpu)")
    f.add_argument("--bidirectional", action="store_true", help="fit a bidirectional RNN (BRNN): --kind brnn")
    f.add_argument("--kind", help=KIND_HELP)
    f.add_argument("--outlier-factor", type=_number(float, 1.0, "a number above 1"), default=None,
                   help="leave out sequences whose largest |output| exceeds this many times the median over "
                        "sequences (e.g. 100; default: keep all)")
    f.add_argument("--scores", choices=("auto", "gaussian", "moment", "student-t", "score-matching", "mixture"),
                   default="auto",
                   help="law of the input innovations, hence the score function: auto (default: test the inputs; "
                        "Gaussian closed form if they look Gaussian, else the density-free score, or for "
                        "--bidirectional and tanh the density with the best held-out score-matching objective), "
                        "gaussian, moment (density-free), student-t, score-matching, mixture (Gaussian mixture)")
    f.add_argument("--first-step", choices=("auto", "own", "stationary"), default="auto",
                   help="law of each sequence's first input: its own (fitted from first steps), the stationary law "
                        "of the fitted process, or auto (default)")
    f.add_argument("--min-gap", type=_number(float, 1.0, "a number of at least 1"), default=1.5,
                   help="refuse a moment tensor whose singular-value gap at the hidden size is below this (default 1.5)")
    f.add_argument("--robust", choices=("auto", "on", "off"), default="auto",
                   help="averaging of the moment passes: auto (default: plain means, median of means when a few "
                        "extreme steps dominate), on (always median of means), off (plain means; refuse such data)")
    f.add_argument("--threads", type=_positive_int, default=None,
                   help="torch threads during the fit (default: the CPUs other jobs leave free; the BLAS pool gets one)")
    f.add_argument("--control-variate", choices=("auto", "on", "off"), default="auto",
                   help="subtract from the outputs their linear fit on neighbouring inputs in the tensor passes "
                        "(same tensor in expectation, less noise): auto (default: on for non-Gaussian inputs), "
                        "on, off")
    f.add_argument("--no-tail-check", dest="tail_check", action="store_false",
                   help="fit even when an input's innovations look too heavy-tailed for the moments to converge "
                        "(tail index below 3.5; refused by default)")
    f.add_argument("--refine", action="store_true",
                   help="refine the spectral estimate by backpropagation through time (full-batch L-BFGS up to "
                        "5e5 training steps, Adam above; early stopping on a validation split) and write the "
                        "refined model")
    f.add_argument("--max-epochs", type=_positive_int, default=100, help="refinement epochs at most (default 100)")

    r = sub.add_parser("predict", help="predict outputs (conditional mean) with a saved model",
                       description="Write PRED.npz with 'outputs' = E[y_t | inputs] (zeros on padding).")
    r.add_argument("model", metavar="MODEL.safetensors", help="model file written by 'fit' or 'simulate --truth'")
    r.add_argument("data", metavar="DATA.npz", help="data file with 'inputs' and optional 'lengths' ('outputs' unused)")
    r.add_argument("--out", required=True, metavar="PRED.npz", help="prediction file to write")
    r.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="compute device (default cpu)")

    c = sub.add_parser("compare", help="spectral vs spectral + refinement vs BPTT from random init, timed",
                       description="Fit DATA.npz three ways in one process (spectral estimate; spectral + BPTT "
                                   "refinement; BPTT from random init over lr x init-scale x seeds) and print held-out "
                                   "error, wall time, time to a common target and the ratios.")
    c.add_argument("data", metavar="DATA.npz", help="data file with 'inputs', 'outputs' and optional 'lengths'")
    c.add_argument("--hidden-size", type=_positive_int, required=True, help="hidden units d_h (per direction for a BRNN)")
    c.add_argument("--activation", type=_activation, required=True, help=act_help)
    c.add_argument("--bidirectional", action="store_true", help="compare on a bidirectional RNN (BRNN): --kind brnn")
    c.add_argument("--kind", help=KIND_HELP)
    c.add_argument("--plot", metavar="OUT.png", help="write a plot of held-out error against wall time here")
    c.add_argument("--budget", type=_nonneg_float, default=60.0,
                   help="seconds per BPTT run and for spectral + refinement (default 60)")
    c.add_argument("--seeds", type=_positive_int, default=3, help="baseline seeds per grid point (default 3)")
    c.add_argument("--truth", metavar="MODEL.safetensors",
                   help="the true model, if known: held-out error is then measured against its conditional mean")
    c.add_argument("--seed", type=_nonneg_int, default=0, help="seed of the split and the fits (default 0)")
    c.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="compute device (default cpu)")

    d = sub.add_parser("demo", help="plant a model, fit it at 1e5 and 1e6 time steps, print errors and times",
                       description="docs/method.md, 'Planted models': d_x=10, d_h=4, d_y=8, f(u)=u+0.5u^2, ||U||=0.3, "
                                   "noise 0.1, sequences of length 10.")
    d.add_argument("--seed", type=_nonneg_int, default=0, help="random seed (default 0)")

    from .cli_tag import add_tag_parser

    add_tag_parser(sub)
    return p


# ---------------------------------------------------------------- commands
def _seeds(seed: int, n: int) -> list:
    """``n`` independent generators derived from one seed."""
    import numpy as np

    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]


KIND_HELP = ("model kind: a name registered in spectral_rnn.kinds (iornn, brnn, ...); default iornn, "
             "brnn with --bidirectional")


def _kind(a: argparse.Namespace):
    """The registered model kind the command asks for (``--kind``, or ``--bidirectional``)."""
    from .kinds import resolve_kind

    return resolve_kind(getattr(a, "kind", None), a.bidirectional)


def _simulate_bytes(a: argparse.Namespace) -> int:
    """Peak memory of ``simulate`` (float64 arrays): inputs and their noise, the hidden states
    and drives of each chain, the outputs, their noise and the sum, and the weights."""
    steps = a.sequences * a.length
    chains = _kind(a).n_chains
    d_x, d_h, d_y = a.input_dim, a.hidden_size, a.output_dim
    return 8 * (steps * (2 * d_x + 2 * chains * d_h + 3 * d_y) + 6 * d_x * d_x
                + chains * (4 * d_h * d_h + d_h * (d_x + d_y)))


def _predict_bytes(model, X) -> int:
    """Peak memory of ``model.predict(X)`` in float64: the inputs as float64 (when they are
    not already), the drive and states of each chain, and the outputs."""
    n, T, d_x = X.shape
    chains = len(model.chains)
    copy = 0 if X.dtype.itemsize == 8 else d_x
    return 8 * n * T * (copy + d_x + 2 * chains * model.d_h + model.d_y)


def _cmd_simulate(a: argparse.Namespace) -> int:
    from ._checks import check_memory
    from .io import check_output_path, data_writer, model_bytes, write_atomically
    from .processes import GaussianAR1

    check_output_path(a.out)
    if a.truth is not None:
        check_output_path(a.truth, [a.out])
    check_memory(_simulate_bytes(a), f"simulating {a.sequences} x {a.length} steps (d_x={a.input_dim}, "
                                     f"d_h={a.hidden_size}, d_y={a.output_dim})")
    r_proc, r_inputs, r_model, r_noise = _seeds(a.seed, 4)
    proc = GaussianAR1.random(a.input_dim, random_state=r_proc)
    X = proc.sample(a.sequences, a.length, random_state=r_inputs)
    model = _kind(a).planted(a.input_dim, a.hidden_size, a.output_dim, activation=a.activation,
                             recurrent_norm=a.recurrent_norm, input_std=a.input_std, random_state=r_model)
    Y = model.simulate(X, noise_std=a.noise, random_state=r_noise)
    outputs = [(a.out, data_writer(inputs=X, outputs=Y))]
    if a.truth is not None:
        blob = model_bytes(model)
        outputs.append((a.truth, lambda fh: fh.write(blob)))
    write_atomically(outputs)  # both files or neither
    extra = f", true model -> {a.truth}" if a.truth else ""
    print(f"simulated {model!r}: {a.sequences} sequences x {a.length} steps -> {a.out}{extra}")
    return 0


def _cmd_fit(a: argparse.Namespace) -> int:
    from ._checks import InputError, resolve_device
    from .activations import as_polynomial
    from . import estimators
    from .estimators import check_activation
    from .io import check_output_path, load_data, save_model

    from .odd_route import uses_odd_route

    check_output_path(a.out, [a.data])
    if not uses_odd_route(a.activation):  # tanh, odd polynomials: the third-order route
        check_activation(as_polynomial(a.activation))
    resolve_device(a.device)
    kind = _kind(a)
    if kind.estimator is None:
        raise InputError(f"no spectral estimator fits models of kind {kind.name!r} yet")
    Estimator = getattr(estimators, kind.estimator)
    if os.path.isdir(a.data):  # a directory of .npy files (memory-mapped) or a Zarr store: read by slices
        from .sources import open_data_dir

        X, Y, lengths = open_data_dir(a.data)
    else:
        X, Y, lengths = load_data(a.data)
    if Y is None:
        raise InputError(f"{a.data} has no array 'outputs': fitting needs inputs and outputs")
    # the bar (tqdm, shown once a fit passes 1 s) goes to a terminal only, not into logs
    est = Estimator(hidden_size=a.hidden_size, activation=a.activation, device=a.device,
                    random_state=a.seed, progress=sys.stderr.isatty(), outlier_factor=a.outlier_factor,
                    scores=a.scores, first_step=a.first_step, min_gap=a.min_gap, robust=a.robust,
                    n_threads=a.threads, tail_check=a.tail_check,
                    control_variate={"auto": "auto", "on": True, "off": False}[a.control_variate])
    t0 = time.perf_counter()
    est.fit(X, Y, lengths)
    seconds = time.perf_counter() - t0
    model = est.model_
    n_steps = est.n_steps_
    print(f"scores: {est.scores_} ({est.scores_reason_})")
    if est.robust_:
        print("moments: median of means over blocks of steps (a few extreme steps dominated the plain means)")
    if est.stability_.changed:
        print(f"stability: {est.stability_}")
    if est.n_dropped_:
        print(f"left out {est.n_dropped_} of {X.shape[0]} sequences with extreme outputs (--outlier-factor)")
    if a.refine:
        from .refine import refine

        t0 = time.perf_counter()
        model, hist = refine(model, X, Y, lengths, max_epochs=a.max_epochs, random_state=a.seed, device=a.device,
                             progress=sys.stderr.isatty())
        if hist.stabilized:
            print(f"refinement start: {hist.stabilization}")
        print(f"refined by backpropagation: {hist.epoch[-1]} epochs in {time.perf_counter() - t0:.2f} s, validation "
              f"relative MSE {hist.val_loss[0]:.3g} -> {hist.best_val_loss:.3g} ({hist.stop_reason})")
    save_model(model, a.out)
    print(f"fitted {model!r} on {n_steps} time steps in {seconds:.2f} s -> {a.out}")
    return 0


def _cmd_predict(a: argparse.Namespace) -> int:
    from ._checks import InputError, check_memory, resolve_device
    from .io import check_output_path, load_data, load_model, save_data

    check_output_path(a.out, [a.model, a.data])
    resolve_device(a.device)
    model = load_model(a.model)
    X, _, lengths = load_data(a.data)
    if X.shape[2] != model.d_x:
        raise InputError(f"{a.data} has inputs of dimension {X.shape[2]}, the model in {a.model} expects {model.d_x}")
    check_memory(_predict_bytes(model, X), f"predicting {X.shape[0]} x {X.shape[1]} steps with {model!r}")
    Y = model.predict(X, lengths, device=a.device)  # DivergenceError on non-finite outputs: nothing is written
    out = {"outputs": Y}
    if lengths is not None:
        out["lengths"] = lengths
    save_data(a.out, **out)
    print(f"predicted {X.shape[0]} sequences x {X.shape[1]} steps with {model!r} -> {a.out}")
    return 0


def run_demo(seed: int = 0, steps: Sequence[int] = (100_000, 1_000_000), out=None) -> list[dict]:
    """Demo of docs/method.md, 'Planted models': plant, simulate, fit at each N, print a table. Returns its rows."""
    from ._checks import DivergenceError
    from .activations import Polynomial
    from .estimators import SpectralIORNN
    from .metrics import parameter_errors, prediction_error
    from .models import IORNN
    from .processes import GaussianAR1

    out = sys.stdout if out is None else out
    d_x, d_h, d_y, length, noise = 10, 4, 8, 10, 0.1
    f = Polynomial([0.0, 1.0, 0.5])
    r_proc, r_model, r_test, *r_data = _seeds(seed, 3 + 2 * len(steps))
    proc = GaussianAR1.random(d_x, random_state=r_proc)
    true = IORNN.random(d_x, d_h, d_y, activation=f, recurrent_norm=0.3, random_state=r_model)
    X_test = proc.sample(20_000, length, random_state=r_test)
    Y_test = true.predict(X_test)  # the true conditional mean
    print(f"planted IO-RNN: d_x={d_x}, d_h={d_h}, d_y={d_y}, f(u)=u+0.5u^2, ||U||_2=0.3, "
          f"output noise {noise}, sequences of length {length}, seed {seed}", file=out)
    print("relative Frobenius errors after matching units; prediction: held-out MSE of the conditional mean "
          "relative to the output variance (200000 test steps)", file=out)
    header = f"{'N':>9} {'err A1':>8} {'err U':>8} {'err A2':>8} {'pred rel. MSE':>14} {'fit (s)':>8}"
    print(header, file=out)
    print("-" * len(header), file=out)
    rows = []
    for i, n_steps in enumerate(steps):
        n_seq = max(1, n_steps // length)
        X = proc.sample(n_seq, length, random_state=r_data[2 * i])
        Y = true.simulate(X, noise_std=noise, random_state=r_data[2 * i + 1])
        est = SpectralIORNN(d_h, f, random_state=seed)
        t0 = time.perf_counter()
        est.fit(X, Y)
        seconds = time.perf_counter() - t0
        err = parameter_errors(true, est.model_)
        try:
            pred = prediction_error(Y_test, est.predict(X_test))
            shown = f"{pred:.2e}"
        except DivergenceError:  # a quadratic recursion can blow up on rare inputs
            pred, shown = float("nan"), "diverged"
        row = {"N": n_seq * length, **err, "prediction": pred, "seconds": seconds}
        rows.append(row)
        print(f"{row['N']:>9.0e} {err['A1']:>8.4f} {err['U']:>8.4f} {err['A2']:>8.4f} {shown:>14} {seconds:>8.2f}",
              file=out)
    return rows


def _cmd_compare(a: argparse.Namespace) -> int:
    from ._checks import InputError, resolve_device
    from .compare import check_plot_path, run_comparison
    from .io import check_input_file, load_data, load_model

    if a.plot is not None:  # extension, matplotlib and path checked before the long run
        check_plot_path(a.plot, [a.data, a.truth])
    if a.truth is not None:
        check_input_file(a.truth, "model")
    resolve_device(a.device)
    X, Y, lengths = load_data(a.data)
    if Y is None:
        raise InputError(f"{a.data} has no array 'outputs': comparing needs inputs and outputs")
    truth = load_model(a.truth) if a.truth is not None else None
    comp = run_comparison(X, Y, lengths, hidden_size=a.hidden_size, activation=a.activation,
                          kind=_kind(a).name, truth=truth, budget=a.budget, seeds=a.seeds,
                          random_state=a.seed, device=a.device, plot=a.plot, progress=sys.stderr.isatty(),
                          log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(comp.table())
    if a.plot is not None:
        print(f"plot -> {a.plot}")
    return 0


def _cmd_demo(a: argparse.Namespace) -> int:
    run_demo(a.seed)
    return 0


def _cmd_tag(a: argparse.Namespace) -> int:
    from ._checks import InputError
    from .cli_tag import cmd_tag

    try:
        return cmd_tag(a)
    except ModuleNotFoundError as exc:  # conllu, scikit-learn: the optional "tagging" extra
        raise InputError(f"the tag commands need the package {exc.name!r}: pip install 'spectral-rnn[tagging]'") from None


_COMMANDS = {"simulate": _cmd_simulate, "fit": _cmd_fit, "predict": _cmd_predict, "compare": _cmd_compare,
             "demo": _cmd_demo, "tag": _cmd_tag}


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        text = "not enough memory" + (f": {exc}" if str(exc) else "")
    elif isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror + (f": {exc.filename}" if exc.filename else "")
    else:
        text = str(exc) or type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= 1000 else text[:997] + "..."


class _Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM during a command: a ``KeyboardInterrupt``, so every ``finally`` and
    ``except BaseException`` cleanup on the way out runs (temporary files are removed)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _SignalGuard:
    """While a command runs, SIGINT and SIGTERM raise :class:`_Interrupted` (once; later
    signals are only recorded, so that the cleanup is not cut short). A signal the parent
    process set to be ignored stays ignored. On exit the previous handlers come back; with
    ``keep=True`` (the process's own entry point) ours stays, only recording, so that a
    signal during interpreter shutdown prints no traceback."""

    def __init__(self, keep: bool = False) -> None:
        self.keep = keep
        self.received: int | None = None
        self.armed = True
        self.saved: dict = {}

    def __enter__(self) -> "_SignalGuard":
        for signum in _SIGNAL_EXITS:
            try:
                if _sig.getsignal(signum) == _sig.SIG_IGN:
                    continue  # ignored by whoever started us (a shell's background job): leave it so
                self.saved[signum] = _sig.signal(signum, self._handle)
            except (ValueError, OSError):  # not the main thread, or an exotic embedding
                pass
        return self

    def _handle(self, signum: int, frame) -> None:
        if self.received is None:
            self.received = signum
        if self.armed:
            self.armed = False
            raise _Interrupted(signum)

    def __exit__(self, *exc) -> None:
        self.armed = False
        if not self.keep:
            for signum, old in self.saved.items():
                _sig.signal(signum, old if old is not None else _sig.SIG_DFL)

    def report(self, signum: int | None) -> int:
        code, word = _SIGNAL_EXITS.get(signum if signum is not None else _sig.SIGINT, (130, "interrupted"))
        try:
            sys.stderr.write(f"{PROG}: {word}\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        return code


def _run(argv: Sequence[str] | None) -> int:
    """Parse and run one command; expected errors become one line and exit code 2."""
    import warnings

    with warnings.catch_warnings():
        # overflow warnings, torch's notes...: the command line shows nothing of them; the library's
        # own warnings (a result it doubts: SpectralRNNWarning) one line each after a command that
        # succeeded (a failed one shows its one error line only)
        warnings.simplefilter("ignore")
        import numpy as np

        from ._checks import SpectralRNNError, SpectralRNNWarning

        doubts: list[str] = []
        warnings.simplefilter("always", SpectralRNNWarning)
        warnings.showwarning = lambda message, *_args, **_kw: doubts.append(str(message))

        with np.errstate(all="ignore"):
            parser = build_parser()
            args_in = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
            try:
                args = parser.parse_args(_join_dash_values(args_in))
            except SystemExit as exc:  # --help (0) or a usage error (2, already reported)
                return exc.code if isinstance(exc.code, int) else EXIT_USAGE
            try:
                code = _COMMANDS[args.command](args)
                if code == 0:
                    for text in dict.fromkeys(doubts):  # each distinct warning once
                        sys.stderr.write(f"{PROG}: warning: {_one_line(Exception(text))}\n")
                return code
            except (SpectralRNNError, ValueError, OSError, MemoryError) as exc:
                sys.stderr.write(f"{PROG}: error: {_one_line(exc)}\n")
                return EXIT_USAGE
            except RuntimeError as exc:  # torch's allocator failing is the one RuntimeError expected here
                text = str(exc)
                if "can't allocate memory" not in text and "out of memory" not in text.lower():
                    raise
                sys.stderr.write(f"{PROG}: error: not enough memory ({_one_line(exc)[-200:]})\n")
                return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 success, 2 bad input, 130 SIGINT, 143 SIGTERM).

    ``argv=None`` reads ``sys.argv`` (the ``spectral-rnn`` program itself).
    """
    try:
        guard = _SignalGuard(keep=argv is None)
        with guard:
            try:
                code = _run(argv)
                guard.armed = False  # from here on a signal is only recorded
            except KeyboardInterrupt as exc:
                guard.armed = False
                return guard.report(getattr(exc, "signum", None) or guard.received)
            if guard.received is not None:  # a signal some library swallowed: still not a success
                return guard.report(guard.received)
            return code
    except KeyboardInterrupt:  # before the guard was in place
        return _SignalGuard().report(_sig.SIGINT)
