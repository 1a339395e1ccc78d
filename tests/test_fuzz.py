"""Seeded fuzzing of every command (issue 12): bad data files, bad model files, bad
arguments, outputs that are devices, pipes, directories or inputs, and signals.

Each case runs the command line in-process (``main(argv)``, with fd-level capture and a
per-case timeout) and checks the promises of the README:

* the exit code is 0 or 2 (130 / 143 for SIGINT / SIGTERM), never a traceback;
* exit 2 prints exactly one line on stderr and nothing on stdout (LAPACK noise included);
* no input file changes; no temporary file stays behind;
* an output is, after exit 0, a complete readable file; after a failure, as it was before.

The cases are drawn from ``SPECTRAL_RNN_FUZZ_SEED`` (default 12) and bounded in number and
time (``SPECTRAL_RNN_FUZZ_CASES``, default 300, and at most about 40 s of cases); the signal cases
start ``python -m spectral_rnn`` in a subprocess. A failure names the case's argv.
"""

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import save_file

import spectral_rnn
from _helpers import CaseTimeout, time_limit
from spectral_rnn.cli import main
from spectral_rnn.io import load_data, load_model

SEED = int(os.environ.get("SPECTRAL_RNN_FUZZ_SEED", "12"))
N_CASES = int(os.environ.get("SPECTRAL_RNN_FUZZ_CASES", "300"))
TIME_BUDGET = float(os.environ.get("SPECTRAL_RNN_FUZZ_SECONDS", "40"))
CASE_TIMEOUT = 60.0
SRC = os.path.dirname(os.path.dirname(os.path.abspath(spectral_rnn.__file__)))




def digest(path):
    """Identity of a path's state: the hash of a regular file, else its kind (or None)."""
    if os.path.islink(path) and not os.path.exists(path):
        return ("dangling link", os.readlink(path))
    if not os.path.lexists(path):
        return None
    if os.path.islink(path):
        return ("link", os.readlink(path), digest(os.path.realpath(path)) if os.path.isfile(path) else "special")
    if os.path.isfile(path):
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    return ("special", os.stat(path).st_mode)


def leftovers(*dirs):
    return [os.path.join(d, n) for d in dirs for n in os.listdir(d) if n.endswith(".tmp")]


# ------------------------------------------------------------------ the world
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Shared inputs (good and bad files); each case writes its outputs into its own directory."""
    d = tmp_path_factory.mktemp("fuzz")
    inp = d / "in"
    inp.mkdir()
    good = str(inp / "good.npz")
    truth = str(inp / "truth.safetensors")
    assert main(["simulate", "--hidden-size", "2", "--input-dim", "5", "--output-dim", "4", "--sequences", "300",
                 "--length", "8", "--seed", "0", "--out", good, "--truth", truth]) == 0
    assert main(["simulate", "--bidirectional", "--hidden-size", "1", "--input-dim", "5", "--output-dim", "4",
                 "--sequences", "300", "--length", "8", "--seed", "1", "--out", str(inp / "b.npz"),
                 "--truth", str(inp / "brnn.safetensors")]) == 0
    X, Y, _ = load_data(good)
    m = load_model(truth)
    rng = np.random.default_rng(SEED)
    data, models = {"good": good}, {"truth": truth, "brnn": str(inp / "brnn.safetensors")}

    def npz(name, **arrays):
        p = str(inp / f"{name}.npz")
        np.savez(p, **arrays)
        data[name] = p

    def raw(table, name, blob):
        p = str(inp / name)
        with open(p, "wb") as fh:
            fh.write(blob)
        table[name] = p

    def corrupted(table, prefix, ext, blob, n, flips):
        """``n`` truncated and ``n`` bit-flipped copies of ``blob`` (``flips`` bytes each)."""
        for i in range(n):
            raw(table, f"{prefix}trunc{i}.{ext}", blob[: int(rng.integers(1, len(blob)))])
            flipped = bytearray(blob)
            for j in rng.integers(0, len(blob), flips):
                flipped[j] ^= int(rng.integers(1, 256))
            raw(table, f"{prefix}flip{i}.{ext}", bytes(flipped))

    # valid files in unusual dtypes, orders and layouts
    npz("longdouble", inputs=X.astype(np.longdouble), outputs=Y.astype(np.longdouble))
    npz("bigendian", inputs=X.astype(">f8"), outputs=Y.astype(">f4"))
    npz("float16", inputs=X.astype(np.float16), outputs=Y.astype(np.float16))
    npz("int8", inputs=(X * 20).astype(np.int8), outputs=(Y * 20).astype(np.int8))
    npz("reversed", inputs=X[:, ::-1], outputs=Y[:, ::-1])
    npz("inputs_only", inputs=X)
    L = rng.integers(2, 9, len(X))
    npz("ragged", inputs=np.where(np.arange(8)[None, :, None] < L[:, None, None], X, np.nan), outputs=Y, lengths=L)
    # bad lengths
    for name, lengths in (("len_1e20", np.full(len(X), 1e20)), ("len_zero", np.zeros(len(X), int)),
                          ("len_long", np.full(len(X), 9)), ("len_neg", np.full(len(X), -1)),
                          ("len_frac", np.full(len(X), 2.5)), ("len_str", np.full(len(X), "5")),
                          ("len_bool", np.ones(len(X), bool)), ("len_short", np.full(3, 5)),
                          ("len_u64", np.full(len(X), 2**64 - 1, dtype=np.uint64))):
        npz(name, inputs=X, outputs=Y, lengths=lengths)
    # bad arrays
    npz("complex", inputs=X.astype(complex), outputs=Y)
    npz("bool", inputs=X > 0, outputs=Y)
    npz("str", inputs=X.astype(str), outputs=Y)
    npz("rank2", inputs=X[0], outputs=Y[0])
    npz("rank4", inputs=X[..., None], outputs=Y)
    npz("empty", inputs=X[:0], outputs=Y[:0])
    npz("mismatch_n", inputs=X, outputs=Y[:10])
    npz("mismatch_T", inputs=X, outputs=Y[:, :5])
    npz("nan", inputs=np.where(rng.random(X.shape) < 0.01, np.nan, X), outputs=Y)
    npz("inf", inputs=X, outputs=np.where(rng.random(Y.shape) < 0.01, np.inf, Y))
    npz("huge_x", inputs=X * 1e200, outputs=Y)
    npz("huge_y", inputs=X, outputs=Y * 1e250)
    npz("tiny", inputs=X * 1e-300, outputs=Y)
    npz("constant", inputs=np.ones_like(X), outputs=Y)
    npz("zeros_y", inputs=X, outputs=np.zeros_like(Y))
    npz("dim3", inputs=X[:, :, :3], outputs=Y)
    npz("few", inputs=X[:3], outputs=Y[:3])
    np.savez(str(inp / "pickle.npz"), inputs=np.array([X, None], dtype=object), outputs=Y)
    data["pickle"] = str(inp / "pickle.npz")
    np.save(str(inp / "single.npy"), X)
    data["npy"] = str(inp / "single.npy")
    corrupted(data, "", "npz", open(good, "rb").read(), 4, 20)
    raw(data, "random.npz", rng.bytes(2000))
    raw(data, "zero.npz", b"")
    raw(data, "text.npz", b"inputs,outputs\n1,2\n")

    # model files
    meta = {"format": "spectral-rnn", "format_version": "1", "kind": "iornn", "activation": "0.0,1.0,0.5"}
    W = {"A1": m.A1, "U": m.U, "A2": m.A2}

    def st(name, tensors, metadata):
        p = str(inp / f"{name}.safetensors")
        save_file(tensors, p, metadata=metadata)
        models[name] = p

    st("degree", W, {**meta, "activation": ",".join(["0"] * 500_000 + ["1"])})
    st("degree17", W, {**meta, "activation": ",".join(["0"] * 17 + ["1"])})
    st("badact", W, {**meta, "activation": "1,x"})
    st("longmeta", W, {**meta, "kind": "k" * 100_000})
    st("lstm", W, {**meta, "kind": "lstm"})
    st("version", W, {**meta, "format_version": "2"})
    st("nometa", W, None)
    st("missingU", {"A1": m.A1, "A2": m.A2}, meta)
    st("huge_A2", {**W, "A2": np.full_like(m.A2, 1e308)}, meta)
    st("huge_U", {**W, "U": np.full_like(m.U, 1e300)}, meta)
    st("nan_U", {**W, "U": np.full_like(m.U, np.nan)}, meta)
    st("int_A1", {**W, "A1": np.zeros(m.A1.shape, np.int64)}, meta)
    st("f16", {k: v.astype(np.float16) for k, v in W.items()}, meta)
    st("wrong_dx", {**W, "A1": np.zeros((2, 3))}, meta)
    st("shape", {**W, "U": np.zeros((2, 3))}, meta)
    corrupted(models, "m", "safetensors", open(truth, "rb").read(), 3, 8)
    raw(models, "mrandom.safetensors", rng.bytes(500))
    raw(models, "hugeheader.safetensors", (2**62).to_bytes(8, "little") + b"{}")
    models["npz"] = good

    # files that are not regular files, shared by data and model slots
    os.mkfifo(inp / "fifo")
    (inp / "link_fifo").symlink_to(inp / "fifo")
    (inp / "link_null").symlink_to(os.devnull)
    (inp / "dir").mkdir()
    for table in (data, models):
        table.update(fifo=str(inp / "fifo"), link_fifo=str(inp / "link_fifo"), link_null=str(inp / "link_null"),
                     dir=str(inp / "dir"), missing=str(inp / "missing"))
    inputs = sorted(set(data.values()) | set(models.values()))
    return {"root": d, "inp": str(inp), "data": data, "models": models, "inputs": inputs}


# ------------------------------------------------------------------ case generation
NUM_BAD = ["0", "-1", "x", "", "nan", "inf", "1e3", "2.5", "99999999999999999999999", "1000000000"]
ACTIVATIONS = ["0,1,0.5", "-0.5,1,0.5", "0,1,0.5,0.1", "0,0,1", "1", "", "0,1,x", ",".join(["0"] * 40),
               "nan,1,1", "0,1,1e308", "-inf", "0,1", " 0 , 1 , 0.5 "]
FLOATS = ["0", "0.1", "-1", "nan", "inf", "1e308", "x", "1e-300"]


def _choice(rng, seq, p_first=0.0):
    if p_first and rng.random() < p_first:
        return seq[0]
    return seq[int(rng.integers(len(seq)))]


def _output(rng, case_dir, world, ext, bad, own_input=None):
    """An output path and its kind: new, existing, special, one of the command's own inputs
    (``own_input``, directly or through a link), too long..."""
    if rng.random() >= bad:
        kind = _choice(rng, ["new", "new", "existing", "long250"])
    else:
        kind = _choice(rng, ["fifo", "link_null", "dir", "missing_dir", "input", "link_input", "hardlink_input",
                             "long300", "slash"])
    base = os.path.join(case_dir, "out" + ext)
    if own_input is None and kind in ("input", "link_input", "hardlink_input"):
        kind = "new"
    if kind == "existing":
        with open(base, "wb") as fh:
            fh.write(b"OLD CONTENT")
    elif kind == "fifo":
        os.mkfifo(base)
    elif kind == "link_null":
        os.symlink(os.devnull, base)
    elif kind == "dir":
        os.mkdir(base)
    elif kind == "missing_dir":
        base = os.path.join(case_dir, "no", "such", "out" + ext)
    elif kind == "input":
        base = own_input
    elif kind == "link_input":
        os.symlink(own_input, base)
    elif kind == "hardlink_input":
        if os.path.isfile(own_input):
            os.link(own_input, base)
    elif kind == "long250":
        base = os.path.join(case_dir, "o" * (250 - len(ext)) + ext)
    elif kind == "long300":
        base = os.path.join(case_dir, "o" * 300 + ext)
    elif kind == "slash":
        base = base + "/"
    return base, kind


def make_case(rng, world, case_dir):
    """(argv, outputs, valid-output check) for one random case."""
    data, models = world["data"], world["models"]
    cmd = _choice(rng, ["fit", "fit", "fit", "predict", "predict", "simulate", "simulate", "compare", "demo"])
    bad = _choice(rng, [0.0, 0.1, 0.3, 0.7])  # how hostile this case is
    valid_data = [data[k] for k in ("good", "longdouble", "bigendian", "float16", "reversed", "ragged")]
    good_data = lambda: _choice(rng, valid_data if rng.random() >= bad else list(data.values()))  # noqa: E731
    some_model = lambda: models["truth"] if rng.random() >= bad else _choice(rng, list(models.values()))  # noqa: E731
    outputs = []
    if cmd == "simulate":
        argv = ["simulate"]
        for opt, good in (("--hidden-size", "2"), ("--input-dim", "5"), ("--output-dim", "4"),
                          ("--sequences", "20"), ("--length", "5")):
            if rng.random() < 1 - bad / 5:
                argv += [opt, good if rng.random() >= bad / 2 else _choice(rng, NUM_BAD)]
        for opt in ("--noise", "--recurrent-norm", "--input-std"):
            if rng.random() < 0.15:
                argv += [opt, _choice(rng, FLOATS)]
        if rng.random() < 0.3:
            argv += ["--activation", _choice(rng, ACTIVATIONS)]
        if rng.random() < 0.2:
            argv += ["--bidirectional"]
        if rng.random() < 0.2:
            argv += ["--seed", _choice(rng, ["0", "7", "-1", "x"])]
        out, _ = _output(rng, case_dir, world, ".npz", bad)
        argv += ["--out", out]
        outputs.append((out, "data"))
        if rng.random() < 0.4:
            truth, _ = _output(rng, case_dir, world, ".safetensors", bad)
            if truth != out:
                argv += ["--truth", truth]
                outputs.append((truth, "model"))
    elif cmd == "fit":
        src = good_data()
        argv = ["fit", src, "--hidden-size", "2" if rng.random() >= bad / 2 else _choice(rng, NUM_BAD),
                "--activation", _choice(rng, ACTIVATIONS) if rng.random() < bad / 2 else "0,1,0.5"]
        for extra in (["--outlier-factor", _choice(rng, ["100", "1e308", "1", "x", "nan"])], ["--bidirectional"],
                      ["--refine", "--max-epochs", "1"], ["--seed", _choice(rng, ["3", "-1"])],
                      ["--device", _choice(rng, ["cpu", "tpu", "cuda"])], ["--frobnicate"]):
            if rng.random() < bad / 4:
                argv += extra
        out, _ = _output(rng, case_dir, world, ".safetensors", bad, src)
        argv += ["--out", out]
        outputs.append((out, "model"))
    elif cmd == "predict":
        argv = ["predict", some_model(), good_data()]
        if rng.random() < 0.1:
            argv += ["--device", _choice(rng, ["cpu", "meta", "cuda"])]
        out, _ = _output(rng, case_dir, world, ".npz", bad, _choice(rng, argv[1:3]))
        argv += ["--out", out]
        outputs.append((out, "data"))
    elif cmd == "compare":
        src = good_data()
        argv = ["compare", src, "--hidden-size", "2" if rng.random() < 0.85 else _choice(rng, NUM_BAD),
                "--activation", "0,1,0.5" if rng.random() < 0.8 else _choice(rng, ACTIVATIONS),
                "--budget", "0.02" if rng.random() >= bad else _choice(rng, ["0", "-1", "x", "inf"]), "--seeds", "1"]
        if rng.random() < 0.5:
            ext = _choice(rng, [".png", ".svg", ".pdf", ".xyz", ""])
            truth = some_model() if rng.random() < 0.3 else None
            plot, _ = _output(rng, case_dir, world, ext, bad, truth if truth and rng.random() < 0.5 else src)
            argv += ["--plot", plot]
            outputs.append((plot, "plot"))
            if truth:
                argv += ["--truth", truth]
    else:  # demo: only bad arguments (a real demo takes seconds)
        argv = ["demo", _choice(rng, ["--seed", "--frobnicate"]), _choice(rng, ["-1", "x", "nan", "1e3"])]
    return argv, outputs


def check_output(path, kind):
    """A complete, readable output of the given kind."""
    assert os.path.isfile(path) and not os.path.islink(path), path
    if kind == "data":
        with np.load(path, allow_pickle=False) as z:
            assert "outputs" in z.files
            for k in z.files:
                z[k]
    elif kind == "model":
        load_model(path)
    else:
        assert os.path.getsize(path) > 100


# ------------------------------------------------------------------ the tests
def test_fuzz_commands_in_process(world, capfd):
    rng = np.random.default_rng(SEED)
    before = {p: digest(p) for p in world["inputs"]}
    t_start = time.perf_counter()
    counts: dict = {}
    n_run = 0
    for i in range(N_CASES):
        if time.perf_counter() - t_start > TIME_BUDGET and n_run >= 40:
            break
        case_dir = os.path.join(str(world["root"]), f"case{i}")
        os.mkdir(case_dir)
        argv, outputs = make_case(rng, world, case_dir)
        state = {p: digest(p) for p, _ in outputs}
        capfd.readouterr()
        try:
            with time_limit(CASE_TIMEOUT):
                code = main(argv)
        except CaseTimeout:
            pytest.fail(f"case {i} hung: {argv}")
        except BaseException as exc:  # noqa: BLE001 - anything escaping main is a failure
            pytest.fail(f"case {i} raised {type(exc).__name__}: {exc} ({argv})")
        out, err = capfd.readouterr()
        what = f"case {i}: {argv}\nexit {code}\nstdout: {out[-500:]!r}\nstderr: {err[-2000:]!r}"
        assert code in (0, 2), what
        assert "Traceback" not in err and "Traceback" not in out, what
        assert "Warning" not in err, what
        if code == 2:
            assert out == "" and err.count("\n") == 1 and err.startswith("spectral-rnn: error: "), what
            for p, _ in outputs:
                assert digest(p) == state[p], f"output {p} changed by a failed command\n{what}"
        else:
            if argv[0] in ("fit", "predict", "simulate"):  # nothing on stderr but the library's doubts, one line each
                assert all(ln.startswith("spectral-rnn: warning: ") for ln in err.splitlines()), what
            for p, kind in outputs:
                check_output(p, kind)
        assert {p: digest(p) for p in world["inputs"]} == before, f"an input file changed\n{what}"
        assert leftovers(world["inp"], case_dir) == [], what
        counts[(argv[0], code)] = counts.get((argv[0], code), 0) + 1
        n_run += 1
        shutil.rmtree(case_dir, ignore_errors=True)
    print(f"\nfuzz: {n_run} cases in {time.perf_counter() - t_start:.1f} s (seed {SEED}):",
          ", ".join(f"{c} exit {k}: {v}" for (c, k), v in sorted(counts.items())))
    # the run covered every command, and both outcomes of the main ones
    assert n_run >= 40
    assert {c for c, _ in counts} == {"simulate", "fit", "predict", "compare", "demo"}, counts
    for c in ("simulate", "fit", "predict"):
        assert counts.get((c, 0)) and counts.get((c, 2)), counts


# ------------------------------------------------------------------ signals
def _signal_cases(world):
    """Long-enough commands for a signal to land in start-up, the work or the write."""
    inp = world["inp"]
    rng = np.random.default_rng(SEED + 1)
    big = os.path.join(inp, "long.npz")
    if not os.path.exists(big):
        np.savez(big, inputs=0.1 * rng.standard_normal((1, 150_000, 5)))
    commands = [
        ["simulate", "--hidden-size", "2", "--input-dim", "5", "--output-dim", "4", "--sequences", "100000",
         "--length", "10", "--out", "out.npz", "--truth", "truth.safetensors"],
        ["predict", world["models"]["truth"], big, "--out", "out.npz"],
        ["fit", world["data"]["good"], "--hidden-size", "2", "--activation", "0,1,0.5", "--refine",
         "--max-epochs", "100", "--out", "out.safetensors"],
    ]
    cases = []
    for i in range(5):
        argv = commands[i % len(commands)]
        signum = (signal.SIGINT, signal.SIGTERM)[int(rng.integers(2))]
        cases.append((argv, signum, float(rng.uniform(0.5, 3.0))))  # after Python's own start-up
    return cases


def test_fuzz_signals(world, tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    exits = {signal.SIGINT: (130, "interrupted"), signal.SIGTERM: (143, "terminated")}
    before = {p: digest(p) for p in world["inputs"]}
    for i, (argv, signum, delay) in enumerate(_signal_cases(world)):
        d = tmp_path / f"sig{i}"
        d.mkdir()
        (d / "out.npz").write_bytes(b"OLD")  # an earlier result that must survive an interrupt
        proc = subprocess.Popen([sys.executable, "-m", "spectral_rnn", *argv], cwd=d, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        proc.send_signal(signum)
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"{argv} did not stop after signal {signum}")
        what = f"{argv} signal {signum} after {delay:.2f} s: exit {proc.returncode}, stderr {err!r}"
        code, word = exits[signum]
        assert "Traceback" not in err, what
        if proc.returncode == 0:  # finished before the signal: complete outputs
            for name in os.listdir(d):
                if name.startswith("out") and name.endswith(".npz"):
                    check_output(str(d / name), "data")
        else:
            assert proc.returncode == code and err == f"spectral-rnn: {word}\n", what
            assert (d / "out.npz").read_bytes() == b"OLD", what
            assert not (d / "out.safetensors").exists() and not (d / "truth.safetensors").exists(), what
        assert leftovers(str(d)) == [], what
    assert {p: digest(p) for p in world["inputs"]} == before
