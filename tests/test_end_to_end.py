"""scripts/compare_end_to_end.py's pipelines on the CPU: with one PyTorch YOLOv5n standing in for the engine,
the cv2 (Ultralytics) pipeline and netdef's Detector give the same boxes on scikit-image's photos."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("cv2")
pytest.importorskip("skimage")
from netdef.testing import yolov5_reference as ref

from netdef.tools.detect import Detector, OutputLayout  # noqa: E402

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "compare_end_to_end.py"


@pytest.fixture(scope="module")
def e2e():
    sys.path.insert(0, str(SCRIPT.parent))  # as `python scripts/compare_end_to_end.py` has it: its neighbour script
    spec = importlib.util.spec_from_file_location("compare_end_to_end", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["compare_end_to_end"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not ref.yolov5_available(), reason="needs the reference: pip install --no-deps yolov5==7.0.14")
def test_cv2_and_netdef_pipelines_agree(e2e, yolov5_models):
    model, _ = yolov5_models("yolov5n")  # shared with tests/test_yolov5.py
    model.eval()

    def infer(x):
        with torch.no_grad():
            return model(x)[0]

    photos = e2e.photos_bgr()
    conf, iou = 0.02, 0.45  # random weights: a low threshold so that there are boxes to compare
    ours = Detector(lambda x: {"output": infer(x)}, (640, 640), OutputLayout("raw", {"pred": "output"}), conf, iou,
                    100, (1, 4), torch.device("cpu"))
    a = e2e.cv2_pipeline(infer, (640, 640), torch.device("cpu"), conf, iou, 100)(photos)
    b = e2e.detector_pipeline(ours)(photos)
    counts = e2e.count(a)
    assert sum(counts) > 0, "no boxes: the comparison would prove nothing"
    assert abs(sum(counts) - sum(e2e.count(b))) <= max(2, sum(counts) // 50)
    for (ba, sa, _), (bb, sb, _), im in zip(a, b, photos):
        assert ba.device.type == bb.device.type == "cpu"
        if len(ba) and len(bb):  # the best box is the same (letterboxes differ by at most 1/255)
            assert np.abs(ba[0].numpy() - bb[0].numpy()).max() < 2.0
            assert abs(float(sa[0]) - float(sb[0])) < 1e-2
            assert (ba[:, [0, 2]] <= im.shape[1]).all() and (ba[:, [1, 3]] <= im.shape[0]).all()
