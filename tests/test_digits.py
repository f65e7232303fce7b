"""The digits example: LeNet trained on scikit-learn's digits, rebuilt as FP32/FP16/INT8 engines."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

from netdef import trt_api  # noqa: E402
from netdef.build import BuildOptions, define_network  # noqa: E402
from netdef.examples.digits import LeNet, accuracy, load_digits_data, run_digits, torch_logits, train_lenet  # noqa: E402
from netdef.spec import load_spec  # noqa: E402

def gpu(test):
    """A GPU test: marked `gpu` (select with -m gpu), skipped without a CUDA GPU and full TensorRT."""
    skip = pytest.mark.skipif(not trt_api.can_run_engines(), reason="needs a CUDA GPU and full TensorRT")
    return pytest.mark.gpu(skip(test))


def test_data_split():
    d = load_digits_data(seed=0)
    assert d["x_train"].shape == (1437, 1, 16, 16) and d["x_test"].shape == (360, 1, 16, 16)
    assert d["x_train"].dtype == np.float32 and 0 <= d["x_train"].min() and d["x_train"].max() == 1.0
    assert sorted(np.bincount(d["y_test"]))[0] >= 35  # stratified: every class in the test split
    np.testing.assert_array_equal(load_digits_data(seed=0)["y_test"], d["y_test"])  # fixed seed


def test_training_reaches_90_percent():
    d = load_digits_data(seed=0)
    lines: list[str] = []
    model = train_lenet(d["x_train"], d["y_train"], epochs=10, seed=0, log=lines.append)
    acc = accuracy(torch_logits(model, d["x_test"]), d["y_test"])
    print(f"RESULT digits PyTorch test accuracy after 10 epochs: {acc:.2%}")
    assert acc >= 0.90
    # a line per epoch (the example shows them on stderr), the loss going down
    assert [ln.split(":")[0].strip() for ln in lines] == [f"epoch {i}/10" for i in range(1, 11)]
    losses = [float(ln.split("training loss ")[1].split()[0]) for ln in lines]
    assert losses[-1] < losses[0] / 5


def test_yaml_keys_match_the_module(tmp_path):
    from netdef.export import export_wts

    export_wts(LeNet(), tmp_path / "lenet.wts")
    net = define_network(load_spec("lenet"), tmp_path / "lenet.wts", BuildOptions(), lambda m: None)  # strict keys
    out = net.definition.get_output(0)
    assert out.name == "logits" and tuple(out.shape) == (-1, 10)


@pytest.mark.skipif(trt_api.can_run_engines(), reason="the machine-without-GPU path")
def test_run_digits_without_gpu(tmp_path, capsys):
    res = run_digits(tmp_path, epochs=3)
    out, err = capsys.readouterr()
    assert set(res["engines"]) == {"fp32", "fp16", "int8"}
    assert all((tmp_path / f"lenet_{p}.engine").is_file() for p in res["engines"])
    assert res["calibration"] == "torch" and res["accuracy"] == {}
    assert "PyTorch test accuracy" in out and "cannot run here" in out
    assert "epoch 1/3: training loss" in err and "epoch 3/3" in err and "building the int8 engine" in err


def test_run_digits_writes_over_its_own_calibration_images_only(tmp_path, monkeypatch):
    """A --workdir holding the user's calib.npy is refused before training; an earlier run's is replaced."""
    from netdef.errors import OptionError
    from netdef.examples import digits

    calib = tmp_path / "calib.npy"
    np.save(calib, np.zeros((4, 1, 8, 8), np.float32))
    mine = calib.read_bytes()
    monkeypatch.setattr(digits, "train_lenet", lambda *a, **k: pytest.fail("trained before checking its files"))
    with pytest.raises(OptionError, match=r"calib\.npy holds other data than this example's"):
        run_digits(tmp_path, epochs=1, log=lambda m: None)
    assert calib.read_bytes() == mine
    calib.write_bytes(b"not an array")
    with pytest.raises(OptionError, match=r"calib\.npy holds other data than this example's"):
        run_digits(tmp_path, epochs=1, log=lambda m: None)
    np.save(calib, load_digits_data(1)["x_train"][:512])  # an earlier run's, of another seed: written over
    digits.check_own_file(calib, load_digits_data(0)["x_train"][:512])


@gpu
def test_run_digits_engines(tmp_path):
    """FP32/FP16/INT8 engine accuracy next to PyTorch's; INT8 within 1 percentage point of FP32."""
    res = run_digits(tmp_path)
    acc = res["accuracy"]
    print(f"RESULT digits test accuracy ({res['test_images']} images): PyTorch {res['torch_accuracy']:.2%}, "
          + ", ".join(f"{p} engine {a:.2%}" for p, a in acc.items()))
    print(f"RESULT digits engine vs PyTorch calibration (max method) largest amax difference: "
          f"{res['calibration_agreement']:.2e}")
    assert res["calibration"] == "engine"
    assert abs(acc["fp32"] - res["torch_accuracy"]) <= 1 / 360 + 1e-9
    assert abs(acc["fp16"] - acc["fp32"]) <= 0.01
    assert abs(acc["int8"] - acc["fp32"]) <= 0.01
    assert res["calibration_agreement"] < 1e-3  # the FP32 engine sees the same activations as PyTorch
