#!/usr/bin/env bash
# Create .venv and install netdef with what its demo and tests need on a machine without a GPU
# (TensorRT-RTX builds engines there). On a GPU machine install `tensorrt` (and pycuda) instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch/torchvision pinned to a matching pair. PyPI's torch 2.14.1 wheel for Linux x86_64 is a CUDA build
# (2.14.1+cu130; it runs on the CPU too): the NVIDIA libraries it pulls in (site-packages/nvidia, ~3.2 GB)
# are about half of the 6.2 GB .venv. Nothing here installs a CPU-only torch.
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1" -e ".[rtx,test]" "$@"
# Ultralytics' model definitions, the references for the YOLOv5 and YOLOv8/YOLO11/YOLO26 tests: their code
# alone (their declared requirements are a large training stack the model definitions do not use).
.venv/bin/python -m pip install -q --no-deps "yolov5==7.0.14" "ultralytics==8.4.190"
echo "installed: $(.venv/bin/python -c 'import netdef, netdef.trt_api as t; print("netdef", netdef.__version__, "with", t.version_string())')"
