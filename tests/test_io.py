"""Model files (safetensors) and data files (npz): round trips, bad files, atomic writes."""

import json
import os
import struct

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from spectral_rnn import BRNN, IORNN, InputError, Polynomial, Tanh
from spectral_rnn import io as sio
from spectral_rnn.io import check_output_path, load_data, load_model, save_data, save_model


def _transposed_view(a):
    """Same values as ``a``, stored column-major (a transposed view, not C-contiguous)."""
    v = np.ascontiguousarray(a.T).T
    assert not v.flags.c_contiguous and np.array_equal(v, a)
    return v


@pytest.fixture
def iornn():
    return IORNN.random(6, 3, 5, activation=Polynomial([0.0, 1.0, 0.5]), random_state=0)


@pytest.fixture
def brnn():
    m = BRNN.random(7, 2, 5, activation="0,1,0.5", random_state=1)
    m.backward_activation = Polynomial([0.1, -1.0, 0.25])
    return m


# ---------------------------------------------------------------- round trip
def test_iornn_round_trip(tmp_path, iornn):
    p = tmp_path / "m.safetensors"
    save_model(iornn, p)
    back = load_model(p)
    assert isinstance(back, IORNN) and back == iornn
    with safe_open(str(p), framework="numpy") as fh:
        meta = fh.metadata()
        assert set(fh.keys()) == {"A1", "U", "A2"}
        assert fh.get_tensor("A1").dtype == np.float64
    assert meta == {"format": "spectral-rnn", "format_version": "1", "kind": "iornn", "activation": "0.0,1.0,0.5"}


def test_brnn_round_trip(tmp_path, brnn):
    p = tmp_path / "b.safetensors"
    save_model(brnn, p)
    back = load_model(p)
    assert isinstance(back, BRNN) and back == brnn
    assert back.backward_activation == Polynomial([0.1, -1.0, 0.25])
    with safe_open(str(p), framework="numpy") as fh:
        meta = fh.metadata()
        assert set(fh.keys()) == {"A1", "U", "A2", "B1", "V", "B2"}
    assert meta["kind"] == "brnn" and meta["backward_activation"] == "0.1,-1.0,0.25"


@pytest.mark.parametrize("kind", ["iornn", "brnn"])
def test_round_trip_non_contiguous_weights(tmp_path, iornn, brnn, kind):
    """safetensors writes memory as it lies: transposed views must be made contiguous first."""
    model = iornn if kind == "iornn" else brnn
    expected = {k: getattr(model, k).copy() for k in model._names}
    for k in model._names:
        setattr(model, k, _transposed_view(getattr(model, k)))
    p = tmp_path / "m.safetensors"
    save_model(model, p)
    back = load_model(p)
    for k in model._names:
        np.testing.assert_array_equal(getattr(back, k), expected[k])
        assert getattr(back, k).flags.c_contiguous


def test_round_trip_other_activations(tmp_path):
    f = Polynomial([0.1, 1.0 / 3.0, -0.2, 0.05])
    m = IORNN.random(4, 2, 3, activation=f, random_state=3)
    save_model(m, tmp_path / "m.safetensors")
    assert load_model(tmp_path / "m.safetensors").activation == f  # exact


def test_loaded_model_predicts_like_the_original(tmp_path, brnn):
    X = np.random.default_rng(0).standard_normal((3, 6, 7))
    save_model(brnn, tmp_path / "b.safetensors")
    np.testing.assert_array_equal(load_model(tmp_path / "b.safetensors").predict(X), brnn.predict(X))


# ---------------------------------------------------------------- bad model files
GOOD_META = {"format": "spectral-rnn", "format_version": "1", "kind": "iornn", "activation": "0,1,0.5"}


def _tensors(d_h=3, d_x=6, d_y=5):
    rng = np.random.default_rng(0)
    return {"A1": rng.standard_normal((d_h, d_x)), "U": 0.1 * rng.standard_normal((d_h, d_h)),
            "A2": rng.standard_normal((d_h, d_y))}


def _write(path, tensors, meta):
    save_file(tensors, str(path), metadata=meta)
    return path


def _bad_files(tmp_path):
    cases = {}
    cases["missing file"] = tmp_path / "nope.safetensors"
    cases["directory"] = tmp_path
    (tmp_path / "garbage.safetensors").write_bytes(b"this is not a model\n" * 10)
    cases["garbage"] = tmp_path / "garbage.safetensors"
    (tmp_path / "empty.safetensors").write_bytes(b"")
    cases["empty file"] = tmp_path / "empty.safetensors"
    header = json.dumps({"A1": {"dtype": "F64", "shape": [3, 6], "data_offsets": [0, 144]}}).encode()
    (tmp_path / "trunc.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 10)
    cases["truncated"] = tmp_path / "trunc.safetensors"
    cases["no metadata"] = _write(tmp_path / "nometa.safetensors", _tensors(), None)
    cases["wrong format"] = _write(tmp_path / "fmt.safetensors", _tensors(), {**GOOD_META, "format": "other"})
    cases["wrong version"] = _write(tmp_path / "ver.safetensors", _tensors(), {**GOOD_META, "format_version": "99"})
    cases["unknown kind"] = _write(tmp_path / "kind.safetensors", _tensors(), {**GOOD_META, "kind": "lstm"})
    cases["no kind"] = _write(tmp_path / "nokind.safetensors", _tensors(),
                              {k: v for k, v in GOOD_META.items() if k != "kind"})
    cases["no activation"] = _write(tmp_path / "noact.safetensors", _tensors(),
                                    {k: v for k, v in GOOD_META.items() if k != "activation"})
    cases["bad activation"] = _write(tmp_path / "badact.safetensors", _tensors(), {**GOOD_META, "activation": "1,x"})
    cases["brnn without backward tensors"] = _write(tmp_path / "brnn.safetensors", _tensors(),
                                                    {**GOOD_META, "kind": "brnn", "backward_activation": "0,1,0.5"})
    t = _tensors()
    del t["U"]
    cases["missing tensor"] = _write(tmp_path / "noU.safetensors", t, GOOD_META)
    cases["extra tensor"] = _write(tmp_path / "extra.safetensors", {**_tensors(), "B1": np.zeros((3, 6))}, GOOD_META)
    cases["U not square"] = _write(tmp_path / "usq.safetensors", {**_tensors(), "U": np.zeros((3, 2))}, GOOD_META)
    cases["A2 rows"] = _write(tmp_path / "a2.safetensors", {**_tensors(), "A2": np.zeros((4, 5))}, GOOD_META)
    cases["1-d tensor"] = _write(tmp_path / "vec.safetensors", {**_tensors(), "A1": np.zeros(6)}, GOOD_META)
    cases["integer tensor"] = _write(tmp_path / "int.safetensors", {**_tensors(), "A1": np.zeros((3, 6), np.int64)},
                                     GOOD_META)
    cases["nan weight"] = _write(tmp_path / "nan.safetensors", {**_tensors(), "U": np.full((3, 3), np.nan)}, GOOD_META)
    np.savez(tmp_path / "data.npz", inputs=np.zeros((2, 3, 4)))
    cases["an npz file"] = tmp_path / "data.npz"
    return cases


def test_bad_model_files(tmp_path):
    for name, path in _bad_files(tmp_path).items():
        with pytest.raises(InputError) as info:
            load_model(path)
        msg = str(info.value)
        assert "\n" not in msg and msg, name


def test_good_file_written_by_hand_loads(tmp_path):
    m = load_model(_write(tmp_path / "ok.safetensors", _tensors(), GOOD_META))
    assert isinstance(m, IORNN) and (m.d_h, m.d_x, m.d_y) == (3, 6, 5)


def test_save_model_rejects_other_objects(tmp_path):
    with pytest.raises(InputError):
        save_model({"A1": np.zeros((2, 2))}, tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()


# ---------------------------------------------------------------- atomic writes
def test_failed_write_leaves_existing_file_untouched(tmp_path, iornn, monkeypatch):
    p = tmp_path / "m.safetensors"
    p.write_bytes(b"precious")

    def boom(fh):
        fh.write(b"half a file")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        sio._atomic_write(p, boom)
    assert p.read_bytes() == b"precious"
    assert os.listdir(tmp_path) == ["m.safetensors"]  # no temporary file left behind


def test_overwrite_replaces_file(tmp_path, iornn, brnn):
    p = tmp_path / "m.safetensors"
    save_model(iornn, p)
    save_model(brnn, p)
    assert load_model(p) == brnn
    assert os.listdir(tmp_path) == ["m.safetensors"]


def test_check_output_path(tmp_path):
    data = tmp_path / "d.npz"
    data.write_bytes(b"x")
    with pytest.raises(InputError, match="also an input"):
        check_output_path(data, [data])
    with pytest.raises(InputError, match="also an input"):
        check_output_path(tmp_path / "sub" / ".." / "d.npz", [str(data)])
    with pytest.raises(InputError, match="directory"):
        check_output_path(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        check_output_path(tmp_path / "missing" / "out.npz")
    check_output_path(tmp_path / "new.npz", [data])


def test_output_through_symlink_is_an_input(tmp_path):
    data = tmp_path / "d.npz"
    data.write_bytes(b"x")
    link = tmp_path / "link.npz"
    link.symlink_to(data)
    with pytest.raises(InputError, match="also an input"):
        check_output_path(link, [data])


# ---------------------------------------------------------------- data files
def test_data_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((4, 5, 3)), rng.standard_normal((4, 5, 2))
    lengths = np.array([5, 2, 3, 1])
    X[1, 2:] = np.nan  # padding is never read
    p = tmp_path / "data"  # no .npz suffix: written exactly here
    save_data(p, inputs=X, outputs=Y, lengths=lengths)
    assert os.listdir(tmp_path) == ["data"]
    X2, Y2, L2 = load_data(p)
    np.testing.assert_array_equal(X2, X)
    np.testing.assert_array_equal(Y2, Y)
    np.testing.assert_array_equal(L2, lengths)


def test_data_without_outputs_or_lengths(tmp_path):
    X = np.ones((2, 3, 4), dtype=np.float32)
    save_data(tmp_path / "d.npz", inputs=X, lengths=np.array([3, 3]))
    X2, Y2, L2 = load_data(tmp_path / "d.npz")
    assert X2.dtype == np.float32 and Y2 is None and L2 is None  # full lengths mean no padding


def test_data_file_with_other_array_names_says_what_it_holds(tmp_path):
    np.savez(tmp_path / "xy.npz", X=np.zeros((3, 4, 2)), Y=np.zeros((3, 4, 1)))
    with pytest.raises(InputError, match=r"no array 'inputs'.*it holds 'X', 'Y': save with numpy.savez\(path, inputs=X"):
        load_data(tmp_path / "xy.npz")


def test_integer_inputs_become_float(tmp_path):
    np.savez(tmp_path / "d.npz", inputs=np.ones((2, 3, 4), dtype=np.int32), outputs=np.ones((2, 3, 1)))
    X, _, _ = load_data(tmp_path / "d.npz")
    assert X.dtype == np.float64


def _bad_data(tmp_path):
    good_x, good_y = np.zeros((4, 5, 3)), np.zeros((4, 5, 2))
    cases = {"missing file": tmp_path / "nope.npz", "directory": tmp_path}
    (tmp_path / "text.npz").write_text("inputs,outputs\n1,2\n")
    cases["text file"] = tmp_path / "text.npz"
    (tmp_path / "empty.npz").write_bytes(b"")
    cases["empty file"] = tmp_path / "empty.npz"
    np.save(tmp_path / "single.npy", good_x)
    cases["npy file"] = tmp_path / "single.npy"
    (tmp_path / "trunc.npz").write_bytes((lambda b: b[: len(b) // 2])(_npz_bytes(tmp_path, inputs=good_x)))
    cases["truncated npz"] = tmp_path / "trunc.npz"

    def add(name, **arrays):
        path = tmp_path / (name.replace(" ", "_").replace("/", "_") + ".npz")
        np.savez(path, **arrays)
        cases[name] = path

    add("no inputs", outputs=good_y)
    add("inputs rank 2", inputs=np.zeros((4, 3)), outputs=good_y)
    add("outputs rank 4", inputs=good_x, outputs=np.zeros((4, 5, 2, 1)))
    add("empty inputs", inputs=np.zeros((0, 5, 3)), outputs=np.zeros((0, 5, 2)))
    add("string inputs", inputs=np.full((4, 5, 3), "a"), outputs=good_y)
    add("bool outputs", inputs=good_x, outputs=np.zeros((4, 5, 2), bool))
    add("complex inputs", inputs=good_x.astype(complex), outputs=good_y)
    add("nan inputs", inputs=np.where(np.arange(3) == 1, np.nan, good_x), outputs=good_y)
    add("inf outputs", inputs=good_x, outputs=np.full((4, 5, 2), np.inf))
    add("nan on a valid step", inputs=good_x, outputs=np.where(np.arange(5)[:, None] == 1, np.nan, good_y),
        lengths=np.array([5, 1, 2, 5]))
    add("mismatched n", inputs=good_x, outputs=np.zeros((3, 5, 2)))
    add("mismatched T", inputs=good_x, outputs=np.zeros((4, 6, 2)))
    add("lengths wrong shape", inputs=good_x, outputs=good_y, lengths=np.array([5, 5]))
    add("lengths zero", inputs=good_x, outputs=good_y, lengths=np.array([5, 0, 5, 5]))
    add("lengths too long", inputs=good_x, outputs=good_y, lengths=np.array([5, 6, 5, 5]))
    add("lengths fractional", inputs=good_x, outputs=good_y, lengths=np.array([5, 2.5, 5, 5]))
    add("lengths strings", inputs=good_x, outputs=good_y, lengths=np.array(["5", "5", "5", "5"]))
    np.savez(tmp_path / "objects.npz", inputs=np.array([good_x, None], dtype=object), outputs=good_y)
    cases["object (pickled) array"] = tmp_path / "objects.npz"
    return cases


def _npz_bytes(tmp_path, **arrays):
    p = tmp_path / "_tmp_full.npz"
    np.savez(p, **arrays)
    b = p.read_bytes()
    p.unlink()
    return b


def test_bad_data_files(tmp_path):
    for name, path in _bad_data(tmp_path).items():
        with pytest.raises(InputError) as info:
            load_data(path)
        msg = str(info.value)
        assert msg and "\n" not in msg, name


def test_nan_on_padding_is_fine(tmp_path):
    X = np.zeros((2, 4, 3))
    Y = np.zeros((2, 4, 1))
    X[0, 2:] = np.nan
    Y[0, 2:] = np.inf
    save_data(tmp_path / "d.npz", inputs=X, outputs=Y, lengths=np.array([2, 4]))
    _, _, lengths = load_data(tmp_path / "d.npz")
    np.testing.assert_array_equal(lengths, [2, 4])


def test_save_data_needs_arrays(tmp_path):
    with pytest.raises(InputError):
        save_data(tmp_path / "d.npz")


# ---------------------------------------------------------------- tanh models
def test_tanh_models_round_trip_with_activation_in_metadata(tmp_path):
    X = np.random.default_rng(0).standard_normal((3, 6, 7))
    models = {
        "iornn": IORNN.random(7, 3, 5, activation="tanh", input_norm=1.0, random_state=0),
        "brnn": BRNN.random(7, 2, 5, activation=Tanh(), random_state=1),
    }
    m = models["brnn"]
    models["mixed"] = BRNN(**m.parameters(), activation="tanh", backward_activation="0,1,0,-0.3333")
    for name, model in models.items():
        p = tmp_path / f"{name}.safetensors"
        save_model(model, p)
        with safe_open(str(p), framework="numpy") as fh:
            meta = fh.metadata()
        assert meta["activation"] == "tanh"
        if name != "iornn":
            assert meta["backward_activation"] == ("tanh" if name == "brnn" else "0.0,1.0,0.0,-0.3333")
        back = load_model(p)
        assert back == model and type(back) is type(model)
        assert back.activation == Tanh()
        np.testing.assert_array_equal(back.predict(X), model.predict(X))


def test_bad_activation_strings_in_model_files(tmp_path):
    for i, act in enumerate(["tanhh", "relu", "", "tanh,0"]):
        path = _write(tmp_path / f"act{i}.safetensors", _tensors(), {**GOOD_META, "activation": act})
        with pytest.raises(InputError, match="activation") as info:
            load_model(path)
        assert "\n" not in str(info.value)
    ok = load_model(_write(tmp_path / "t.safetensors", _tensors(), {**GOOD_META, "activation": "tanh"}))
    assert ok.activation == Tanh()
