// YOLO decode + class-aware NMS on the GPU: the kernels, free of TensorRT so they can be tested alone.
//
// Two input layouts, one pipeline (filter + best class, sort, greedy NMS, gather of the kept rows):
//   layout 0: YOLOv5's raw anchor maps (B, na*(5+nc+extra), H_l, W_l), one per level, decoded here.
//   layout 1: one already-decoded tensor (B, 4+nc+extra, N) channel-first, as the anchor-free YOLOv8/YOLO11
//             heads give it: boxes x, y, w, h in pixels, class probabilities, no objectness.
// `extra` channels per candidate (mask coefficients, keypoints) are copied for the kept boxes.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace netdef {

constexpr int kMaxLevels = 8;    // detection levels (P3..P10)
constexpr int kMaxAnchors = 16;  // anchors per level
constexpr int kMaxTopK = 32768;  // candidates entering NMS per image (one flag byte each in shared memory)
constexpr int kLayoutAnchors = 0;  // YOLOv5 raw anchor maps
constexpr int kLayoutDecoded = 1;  // one decoded (B, 4 + nc + extra, N) tensor
constexpr float kClassOffset = 7680.f;  // layout 1: Ultralytics' max_wh, the per-class box offset of its NMS

// What the kernels need; dims are the actual ones of this enqueue.
struct YoloDecodeNmsParams {
    int batch = 0;
    int layout = kLayoutAnchors;
    int nl = 0;     // layout 0: levels
    int na = 0;     // layout 0: anchors per level
    int nc = 0;     // classes
    int extra = 0;  // channels per candidate after the class scores, copied for the kept boxes
    int n = 0;      // layout 1: candidates per image
    int h[kMaxLevels] = {};
    int w[kMaxLevels] = {};
    float stride[kMaxLevels] = {};
    float anchors[kMaxLevels * kMaxAnchors * 2] = {};  // pixels, [level][anchor][w, h]
    float conf_thres = 0.25f;
    float iou_thres = 0.45f;
    int max_det = 300;  // K: boxes per image in the outputs
    int topk = 30000;   // highest-scoring candidates per image that enter NMS (max_nms)
};

// Candidates (boxes before filtering) per image: layout 0 the sum over levels of na * h * w, layout 1 n.
int64_t yoloNumAnchors(YoloDecodeNmsParams const& p);

// Workspace bytes for these params (monotone in batch and spatial size).
size_t yoloWorkspaceSize(YoloDecodeNmsParams const& p);

// feats: layout 0 the nl maps, layout 1 the one tensor; all float (half == false) or __half (half == true).
// Outputs: num_dets (B, 1) int32, boxes (B, K, 4) float x1y1x2y2, scores (B, K) float, classes (B, K) int32,
// extras (B, K, extra) float (nullptr when extra == 0); rows >= num_dets are zero.
// Returns cudaSuccess or the first CUDA error.
cudaError_t yoloDecodeNms(YoloDecodeNmsParams const& p, void const* const* feats, bool half, int32_t* num_dets,
    float* boxes, float* scores, int32_t* classes, float* extras, void* workspace, size_t workspace_size,
    cudaStream_t stream);

} // namespace netdef
