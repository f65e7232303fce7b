"""Defaults that several modules share, defined once."""
from __future__ import annotations

# YOLO post-processing, as YOLOv5's non_max_suppression (the plugin header's defaults agree)
CONF_THRES = 0.25
IOU_THRES = 0.45
IOU_THRES_ANCHOR_FREE = 0.7  # YOLOv8/YOLO11 (anchor-free heads): Ultralytics' predictor default (`yolo predict`)
MAX_DET = 300
MAX_NMS = 30000  # candidates per image that enter NMS (YOLOv5's max_nms; the plugin's topk)

# files read as images (detection inputs, calibration folders)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
