"""The ``spectral-rnn`` command line: simulate, fit (optionally --refine), predict, compare, demo.

Every bad input exits with code 2 and one line on stderr
(``spectral-rnn: error: ...``), never a traceback; success exits with 0.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import numpy as np

from ._checks import DivergenceError, InputError, SpectralRNNError, resolve_device
from .activations import Activation, Polynomial, as_polynomial, parse_activation

PROG = "spectral-rnn"
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr, exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        where = self.prog[len(PROG):].strip() if self.prog.startswith(PROG) else ""
        hint = f" (see '{self.prog} --help')"
        text = " ".join(message.split())
        sys.stderr.write(f"{PROG}: error: {where + ': ' if where else ''}{text}{hint}\n")
        sys.exit(EXIT_USAGE)


# ------------------------------------------------------------ argument types
def _number(cast, minimum: float, what: str):
    """An argparse type: ``cast(text)`` (finite) at least ``minimum``, else a one-line error naming ``what``."""

    def parse(text: str):
        try:
            v = cast(text)
        except ValueError:
            v = None
        if v is None or not np.isfinite(v) or v < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v

    return parse


_positive_int = _number(int, 1, "a positive integer")
_nonneg_int = _number(int, 0, "a non-negative integer")
_nonneg_float = _number(float, 0.0, "a non-negative number")


def _activation(text: str) -> Activation:
    try:
        return parse_activation(text)
    except SpectralRNNError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# ------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
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
    s.add_argument("--bidirectional", action="store_true", help="plant a bidirectional RNN (BRNN)")
    s.add_argument("--out", required=True, metavar="DATA.npz", help="data file to write")
    s.add_argument("--truth", metavar="MODEL.safetensors", help="also write the planted model")

    f = sub.add_parser("fit", help="fit a model to a data set by the spectral method",
                       description="Fit an IO-RNN (or a BRNN) to DATA.npz and write the model file.")
    f.add_argument("data", metavar="DATA.npz", help="data file with 'inputs', 'outputs' and optional 'lengths'")
    f.add_argument("--hidden-size", type=_positive_int, required=True, help="hidden units d_h (per direction for a BRNN)")
    f.add_argument("--activation", type=_activation, required=True, help=act_help)
    f.add_argument("--out", required=True, metavar="MODEL.safetensors", help="model file to write")
    f.add_argument("--seed", type=_nonneg_int, default=0, help="seed of the estimator's random choices (default 0)")
    f.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="compute device (default cpu)")
    f.add_argument("--bidirectional", action="store_true", help="fit a bidirectional RNN (BRNN)")
    f.add_argument("--outlier-factor", type=_number(float, 1.0, "a number above 1"), default=None,
                   help="leave out sequences whose largest |output| exceeds this many times the median over "
                        "sequences (e.g. 100; default: keep all)")
    f.add_argument("--refine", action="store_true",
                   help="refine the spectral estimate by backpropagation through time (Adam, early stopping on a "
                        "validation split) and write the refined model")
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
    c.add_argument("--bidirectional", action="store_true", help="compare on a bidirectional RNN (BRNN)")
    c.add_argument("--plot", metavar="OUT.png", help="write a plot of held-out error against wall time here")
    c.add_argument("--budget", type=_nonneg_float, default=60.0,
                   help="seconds per BPTT run and for spectral + refinement (default 60)")
    c.add_argument("--seeds", type=_positive_int, default=3, help="baseline seeds per grid point (default 3)")
    c.add_argument("--truth", metavar="MODEL.safetensors",
                   help="the true model, if known: held-out error is then measured against its conditional mean")
    c.add_argument("--seed", type=_nonneg_int, default=0, help="seed of the split and the fits (default 0)")
    c.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="compute device (default cpu)")

    d = sub.add_parser("demo", help="plant a model, fit it at 1e5 and 1e6 time steps, print errors and times",
                       description="DESIGN.md section 7: d_x=10, d_h=4, d_y=8, f(u)=u+0.5u^2, ||U||=0.3, "
                                   "noise 0.1, sequences of length 10.")
    d.add_argument("--seed", type=_nonneg_int, default=0, help="random seed (default 0)")
    return p


# ---------------------------------------------------------------- commands
def _seeds(seed: int, n: int) -> list[np.random.Generator]:
    """``n`` independent generators derived from one seed."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]


def _cmd_simulate(a: argparse.Namespace) -> int:
    from .io import check_output_path, save_data, save_model
    from .models import BRNN, IORNN
    from .processes import GaussianAR1

    check_output_path(a.out)
    if a.truth is not None:
        check_output_path(a.truth, [a.out])
    r_proc, r_inputs, r_model, r_noise = _seeds(a.seed, 4)
    proc = GaussianAR1.random(a.input_dim, random_state=r_proc)
    X = proc.sample(a.sequences, a.length, random_state=r_inputs)
    cls = BRNN if a.bidirectional else IORNN
    model = cls.random(a.input_dim, a.hidden_size, a.output_dim, activation=a.activation,
                       recurrent_norm=a.recurrent_norm, input_std=a.input_std, random_state=r_model)
    Y = model.simulate(X, noise_std=a.noise, random_state=r_noise)
    save_data(a.out, inputs=X, outputs=Y)
    if a.truth is not None:
        save_model(model, a.truth)
    extra = f", true model -> {a.truth}" if a.truth else ""
    print(f"simulated {model!r}: {a.sequences} sequences x {a.length} steps -> {a.out}{extra}")
    return 0


def _cmd_fit(a: argparse.Namespace) -> int:
    from .estimators import SpectralIORNN, check_activation
    from .io import check_output_path, load_data, save_model

    from .odd_route import uses_odd_route

    check_output_path(a.out, [a.data])
    if not uses_odd_route(a.activation):  # tanh, odd polynomials: the third-order route
        check_activation(as_polynomial(a.activation))
    resolve_device(a.device)
    if a.bidirectional:
        try:
            from .estimators import SpectralBRNN as Estimator
        except ImportError:
            raise InputError("--bidirectional needs SpectralBRNN, which this version of spectral-rnn lacks") from None
    else:
        Estimator = SpectralIORNN
    X, Y, lengths = load_data(a.data)
    if Y is None:
        raise InputError(f"{a.data} has no array 'outputs': fitting needs inputs and outputs")
    # the bar (tqdm, shown once a fit passes 1 s) goes to a terminal only, not into logs
    est = Estimator(hidden_size=a.hidden_size, activation=a.activation, device=a.device,
                    random_state=a.seed, progress=sys.stderr.isatty(), outlier_factor=a.outlier_factor)
    t0 = time.perf_counter()
    est.fit(X, Y, lengths)
    seconds = time.perf_counter() - t0
    model = est.model_
    n_steps = est.n_steps_
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
    from .io import check_output_path, load_data, load_model, save_data

    check_output_path(a.out, [a.model, a.data])
    resolve_device(a.device)
    model = load_model(a.model)
    X, _, lengths = load_data(a.data)
    if X.shape[2] != model.d_x:
        raise InputError(f"{a.data} has inputs of dimension {X.shape[2]}, the model in {a.model} expects {model.d_x}")
    Y = model.predict(X, lengths, device=a.device)
    out = {"outputs": Y}
    if lengths is not None:
        out["lengths"] = lengths
    save_data(a.out, **out)
    print(f"predicted {X.shape[0]} sequences x {X.shape[1]} steps with {model!r} -> {a.out}")
    return 0


def run_demo(seed: int = 0, steps: Sequence[int] = (100_000, 1_000_000), out=None) -> list[dict]:
    """DESIGN.md section 7 demo: plant, simulate, fit at each N, print a table. Returns its rows."""
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
    from .compare import run_comparison
    from .io import check_output_path, load_data, load_model

    if a.plot is not None:
        check_output_path(a.plot, [a.data])
    resolve_device(a.device)
    X, Y, lengths = load_data(a.data)
    if Y is None:
        raise InputError(f"{a.data} has no array 'outputs': comparing needs inputs and outputs")
    truth = load_model(a.truth) if a.truth is not None else None
    comp = run_comparison(X, Y, lengths, hidden_size=a.hidden_size, activation=a.activation,
                          bidirectional=a.bidirectional, truth=truth, budget=a.budget, seeds=a.seeds,
                          random_state=a.seed, device=a.device, plot=a.plot, progress=sys.stderr.isatty(),
                          log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(comp.table())
    if a.plot is not None:
        print(f"plot -> {a.plot}")
    return 0


def _cmd_demo(a: argparse.Namespace) -> int:
    run_demo(a.seed)
    return 0


_COMMANDS = {"simulate": _cmd_simulate, "fit": _cmd_fit, "predict": _cmd_predict, "compare": _cmd_compare,
             "demo": _cmd_demo}


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror + (f": {exc.filename}" if exc.filename else "")
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 success, 2 bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, already reported)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return _COMMANDS[args.command](args)
    except (SpectralRNNError, ValueError, OSError) as exc:
        sys.stderr.write(f"{PROG}: error: {_one_line(exc)}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
