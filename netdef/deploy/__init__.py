"""Deployment outside netdef: raw TensorRT plans and Triton model repositories.

A netdef engine file is a JSON header followed by the TensorRT plan; only netdef reads it. `plan.py` writes the
bare plan (what trtexec, Triton, DeepStream and C++ programs deserialize) with a sidecar `PLAN.json` holding
netdef's metadata, and reads such plans back (`netdef info`, `Engine(...)`). `triton.py` turns an engine into a
Triton model repository: `config.pbtxt` for the TensorRT backend, the plan, and the plugin libraries it needs.
`serve.py` serves an engine through the Triton PyTriton bundles (`netdef serve`): a model repository whose model
instances, one per GPU, run the engine inside Triton's Python stub (`stub_model.py`); `serve_detect.py` is the
images -> detections model served beside a YOLO engine's tensors, `serve_stats.py` reads Triton's statistics.
"""
