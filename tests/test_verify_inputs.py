"""`netdef verify`'s input (--input FILE.npy, --input-scale S), the note on a callable model's own weights that
partly differ from the .wts, and the YAML row named with the first divergent layer."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from netdef.cli import main  # noqa: E402
from netdef.errors import OptionError  # noqa: E402
from netdef.options import BuildOptions, parse_input_shape  # noqa: E402
from netdef.verify import verify  # noqa: E402
from netdef.wts import read_wts, write_wts  # noqa: E402
import test_verify  # noqa: E402

TINY_MODEL = test_verify.TINY_MODEL
tiny = test_verify.tiny  # the fixture: the tiny model's module on sys.path, its YAML, its .wts

# the tiny model with ReLU6 after its first BatchNorm: a YAML row of `act: relu` differs only where a value exceeds 6
RELU6_MODEL = TINY_MODEL.replace("nn.BatchNorm2d(8), nn.ReLU()", "nn.BatchNorm2d(8), nn.ReLU6()")


@pytest.fixture
def relu6(tiny, tmp_path, monkeypatch):
    """(yaml path (act: relu), .wts path): the tiny network against the model `relu6_model:make`, whose first
    activation is a ReLU6 the YAML does not have."""
    (tmp_path / "relu6_model.py").write_text(RELU6_MODEL)
    yaml, wts = tiny
    return yaml(), wts


def test_a_clamp_at_6_is_unseen_by_the_standard_normal_input_and_seen_at_a_larger_scale(relu6, tmp_path, capsys):
    """ReLU6 against ReLU: the random standard-normal input never reaches 6, so verify passes; --input-scale 10
    makes large values common and names the first divergent layer, and so does a given input of large values."""
    yaml, wts = relu6
    assert main(["verify", yaml, "-w", wts, "--model", "relu6_model:make", "--cpu"]) == 0  # the blind spot
    capsys.readouterr()
    assert main(["verify", yaml, "-w", wts, "--model", "relu6_model:make", "--cpu", "--input-scale", "10"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("first divergent layer: conv2 (PyTorch module bn2): max rel error"), out
    assert "random input x10" in out
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype(np.float32) * 20
    np.save(tmp_path / "big.npy", x)
    assert main(["verify", yaml, "-w", wts, "--model", "relu6_model:make", "--cpu", "--input",
                 str(tmp_path / "big.npy")]) == 1
    out = capsys.readouterr().out
    assert out.startswith("first divergent layer: conv2 (PyTorch module bn2)") and "batch 2, input big.npy" in out
    # the network that has the ReLU6 passes at either
    fixed = tmp_path / "relu6.yaml"
    fixed.write_text(open(yaml).read().replace("bn: bn1, act: relu", "bn: bn1, act: relu6"))
    assert main(["verify", str(fixed), "-w", wts, "--model", "relu6_model:make", "--cpu", "--input-scale", "10"]) == 0
    report = verify(str(fixed), wts, "relu6_model:make", cpu=True, input_data=x, log=lambda m: None)
    assert report.ok and "batch 2, input given" in report.mode


def test_a_given_input_that_does_not_fit_names_the_file_and_the_expected_shape(tiny, tmp_path, capsys):
    yaml, wts = tiny
    cases = {"small.npy": (np.zeros((1, 3, 8, 8), np.float32),
                           r"small\.npy: shape \(1, 3, 8, 8\) float32; the network's input 'input' is \(1, 3, 16, 16\) "
                           r"float32 \(build it at the file's size with --input-shape 8x8\)$"),
             "chw.npy": (np.zeros((3, 16, 16), np.float32),
                         r"chw\.npy: shape \(3, 16, 16\) float32; the network's input 'input' is \(B, 3, 16, 16\) "
                         r"float32, a batch of B \(one image: save it with its batch dimension, x\[None\]\)$"),
             "ints.npy": (np.zeros((1, 3, 16, 16), np.uint8),
                          r"ints\.npy: uint8 values; the network's input 'input' is \(1, 3, 16, 16\) float32: give "
                          r"the float values the model takes"),
             "nan.npy": (np.full((1, 3, 16, 16), np.nan, np.float32), r"nan\.npy: holds values that are not finite")}
    for name, (x, message) in cases.items():
        np.save(tmp_path / name, x)
        with pytest.raises(OptionError, match=message):
            verify(yaml(), wts, "tiny_model:make", cpu=True, input_data=tmp_path / name, log=lambda m: None)
    np.save(tmp_path / "two.npy", np.zeros((2, 3, 16, 16), np.float32))
    with pytest.raises(OptionError, match=r"two\.npy: shape \(2, 3, 16, 16\), a batch of 2, not 1 \(--batch\)"):
        verify(yaml(), wts, "tiny_model:make", cpu=True, batch=1, input_data=str(tmp_path / "two.npy"))
    np.savez(tmp_path / "several.npz", a=np.zeros(1), b=np.zeros(1))
    assert main(["verify", yaml(), "-w", wts, "--model", "tiny_model:make", "--cpu", "--input",
                 str(tmp_path / "several.npz")]) == 1
    assert "several.npz: holds several arrays (.npz); give one array as .npy" in capsys.readouterr().err
    assert main(["verify", yaml(), "-w", wts, "--model", "tiny_model:make", "--cpu", "--input",
                 str(tmp_path / "none.npy")]) == 1
    assert f"--input {tmp_path / 'none.npy'}: no such file" in capsys.readouterr().err
    with pytest.raises(OptionError, match=r"--input-scale scales the random input; --input gives one"):
        verify(yaml(), wts, "tiny_model:make", cpu=True, input_data=np.zeros((1, 3, 16, 16)), input_scale=2.0)
    for bad in (0.0, -1.0, float("inf"), True):
        with pytest.raises(OptionError, match=r"--input-scale .*: expected a positive number"):
            verify(yaml(), wts, "tiny_model:make", cpu=True, input_scale=bad)
    with pytest.raises(OptionError, match=r"--input-scale 2: the network takes uint8 images"):
        verify(yaml(), wts, "tiny_model:make", cpu=True, input_scale=2, opts=BuildOptions(input_dtype="uint8"))


def test_a_given_input_of_a_dynamic_size_is_checked_at_its_own_size(tiny, tmp_path, capsys):
    yaml, wts = tiny
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((1, 3, 24, 32)).astype(np.float32))
    assert main(["verify", yaml(), "-w", wts, "--model", "tiny_model:make", "--cpu", "--input-shape",
                 "16x16:16x16:32x32", "--input", str(tmp_path / "x.npy")]) == 0
    out = capsys.readouterr().out
    assert out.count("PASS") == 1 and "input 24x32, input x.npy" in out  # once, at the file's size
    _, r = parse_input_shape("16x16:16x16:20x20")
    with pytest.raises(OptionError, match=r"x\.npy: its size 24x32: outside the input range"):
        verify(yaml(), wts, "tiny_model:make", cpu=True, opts=BuildOptions(input_range=r),
               input_data=str(tmp_path / "x.npy"))


def test_a_callable_models_weights_that_differ_from_the_wts_in_some_tensors_get_a_note(tiny, tmp_path, capsys):
    """A .wts whose conv3.weight was transposed on the way (another layout) passes verify, which loads it into
    both sides; the model's own weights (a seeded callable's, the .wts's origin) differ from it in that tensor
    alone: a note names it. A fresh model of other random weights (all differ) and the .wts's own get none."""
    yaml, wts = tiny
    tensors = read_wts(wts)
    shape = tensors["conv3.weight"].shape
    tensors["conv3.weight"] = tensors["conv3.weight"].reshape(16, 16, 3, 3).transpose(1, 0, 2, 3).reshape(shape)
    bad = tmp_path / "transposed.wts"
    write_wts(bad, tensors)
    assert main(["verify", yaml(), "-w", str(bad), "--model", "tiny_model:make", "--cpu"]) == 0
    err = capsys.readouterr().err
    assert (f"note: the weights of tiny_model:make differ from {bad} in 1 of " in err
            and "tensors (conv3.weight; the most in conv3.weight, by " in err and "transposed" in err), err
    logs = []
    from tiny_model import make  # the tiny fixture's module

    assert verify(yaml(), str(bad), make(), cpu=True, log=logs.append).ok  # a module passed in: the same note
    assert any("the weights of the Tiny given differ from" in m and "(conv3.weight;" in m for m in logs), logs
    (tmp_path / "fresh_model.py").write_text(TINY_MODEL.replace("torch.manual_seed(0)", "torch.manual_seed(5)")
                                             .replace("randomize_batchnorm(model, 0)", "randomize_batchnorm(model, 5)"))
    for source in ("fresh_model:make", "tiny_model:make"):  # every tensor differs / none does
        assert main(["verify", yaml(), "-w", wts, "--model", source, "--cpu"]) == 0
        assert "differ from" not in capsys.readouterr().err
    (tmp_path / "plain_model.py").write_text(TINY_MODEL.replace("randomize_batchnorm(model, 0)", "pass"))
    assert main(["export", "plain_model:make", "-o", str(tmp_path / "plain.wts"), "--seed", "3"]) == 0
    capsys.readouterr()  # a fresh model's BatchNorm ones and zeros equal the .wts's: no sign of its origin
    assert main(["verify", yaml(), "-w", str(tmp_path / "plain.wts"), "--model", "fresh_model:make", "--cpu"]) == 0
    assert "differ from" not in capsys.readouterr().err


def test_every_row_names_the_yaml_row_that_made_its_layer(tiny):
    yaml, wts = tiny
    path = yaml()
    report = verify(path, wts, "tiny_model:make", cpu=True, log=lambda m: None)
    where = {r.layer: r.where for r in report.rows}
    assert where == {"conv1": f"{path}:6: row 0 (ConvBnAct)", "conv2": f"{path}:7: row 1 (ConvBnAct)",
                     "conv3": f"{path}:8: row 2 (ConvBnAct)", "(output) out": f"{path}:8: row 2 (ConvBnAct)"}


def test_a_uint8_network_takes_uint8_images_as_input(tiny, tmp_path):
    """A network that normalizes uint8 images itself takes a uint8 file (the model gets it normalized, as the
    network computes it); float values are refused, naming the file and the input's shape and type."""
    yaml, wts = tiny
    opts = BuildOptions(input_dtype="uint8", input_mean=(0.5, 0.4, 0.3), input_std=(0.2, 0.25, 0.3))
    np.save(tmp_path / "image.npy", np.random.default_rng(2).integers(0, 256, (1, 3, 16, 16), dtype=np.uint8))
    report = verify(yaml(), wts, "tiny_model:make", cpu=True, opts=opts, input_data=tmp_path / "image.npy",
                    log=lambda m: None)
    assert report.ok and "input image.npy" in report.mode, report.table()
    np.save(tmp_path / "floats.npy", np.zeros((1, 3, 16, 16), np.float32))
    with pytest.raises(OptionError, match=r"floats\.npy: float32 values; the network's input 'input' is "
                                          r"\(1, 3, 16, 16\) uint8: uint8 images of 0\.\.255"):
        verify(yaml(), wts, "tiny_model:make", cpu=True, opts=opts, input_data=tmp_path / "floats.npy")


def test_a_torch_tensor_is_an_input_and_a_state_dict_or_factory_is_no_model(tiny):
    """verify's input_data takes a torch tensor as it takes an array; a state_dict, a model's factory or a
    DataParallel wrapper given as `model` is refused before any work, saying what to give."""
    import torch

    yaml, wts = tiny
    x = torch.randn(2, 3, 16, 16)
    report = verify(yaml(), wts, "tiny_model:make", cpu=True, input_data=x, log=lambda m: None)
    assert report.ok and "batch 2, input given" in report.mode
    import tiny_model

    for model, says in ((tiny_model.make().state_dict(), r"\(OrderedDict\): not a torch module; give the module the "
                                                         r"weights belong to"),
                        (tiny_model.make, r"\(function\): not a torch module; give the module it makes \(make\(\)\)"),
                        (3, r"\(int\): not a torch module; give a torch module or a source such as"),
                        (torch.nn.DataParallel(tiny_model.make()), r"\(DataParallel\): a wrapper whose keys start with "
                                                                   r"module\.; give the model it wraps, its \.module")):
        with pytest.raises(OptionError, match=says):
            verify(yaml(), wts, model, cpu=True, log=lambda m: None)
