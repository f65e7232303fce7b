// YOLOv5 decode + class-aware NMS on the GPU: the kernels, free of TensorRT so they can be tested alone.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace netdef {

constexpr int kMaxLevels = 8;    // detection levels (P3..P10)
constexpr int kMaxAnchors = 16;  // anchors per level
constexpr int kMaxTopK = 32768;  // candidates entering NMS per image (one flag byte each in shared memory)

// What the kernels need; dims are the actual ones of this enqueue.
struct YoloDecodeNmsParams {
    int batch = 0;
    int nl = 0;  // levels
    int na = 0;  // anchors per level
    int nc = 0;  // classes
    int h[kMaxLevels] = {};
    int w[kMaxLevels] = {};
    float stride[kMaxLevels] = {};
    float anchors[kMaxLevels * kMaxAnchors * 2] = {};  // pixels, [level][anchor][w, h]
    float conf_thres = 0.25f;
    float iou_thres = 0.45f;
    int max_det = 300;  // K: boxes per image in the outputs
    int topk = 30000;   // highest-scoring candidates per image that enter NMS (YOLOv5's max_nms)
};

// Anchors (boxes before filtering) per image: sum over levels of na * h * w.
int64_t yoloNumAnchors(YoloDecodeNmsParams const& p);

// Workspace bytes for these params (monotone in batch and spatial size).
size_t yoloWorkspaceSize(YoloDecodeNmsParams const& p);

// feats[l]: level l's raw (B, na*(5+nc), H, W) map, float (half == false) or __half (half == true).
// Outputs: num_dets (B, 1) int32, boxes (B, K, 4) float x1y1x2y2, scores (B, K) float, classes (B, K) int32.
// Returns cudaSuccess or the first CUDA error.
cudaError_t yoloDecodeNms(YoloDecodeNmsParams const& p, void const* const* feats, bool half, int32_t* num_dets,
    float* boxes, float* scores, int32_t* classes, void* workspace, size_t workspace_size, cudaStream_t stream);

} // namespace netdef
