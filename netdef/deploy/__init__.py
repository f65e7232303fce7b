"""Deployment outside netdef: raw TensorRT plans and Triton model repositories.

A netdef engine file is a JSON header followed by the TensorRT plan; only netdef reads it. `plan.py` writes the
bare plan (what trtexec, Triton, DeepStream and C++ programs deserialize) with a sidecar `PLAN.json` holding
netdef's metadata, and reads such plans back (`netdef info`, `Engine(...)`). `triton.py` turns an engine into a
Triton model repository: `config.pbtxt` for the TensorRT backend, the plan, and the plugin libraries it needs.
`serve.py` serves an engine through Triton itself with PyTriton (`netdef serve`): one model instance per GPU.
"""
