// YOLOv5 (v6 head) decode + class-aware greedy NMS, matching YOLOv5's non_max_suppression:
//   1. decodeKernel: sigmoid, box decode, conf = obj * cls, best class; candidates with obj > conf_thres
//      and conf > conf_thres are appended per image with a 64-bit sort key (score descending, anchor index).
//   2. cub segmented radix sort of the keys, one segment per image.
//   3. nmsKernel (one block per image): the top `topk` candidates, greedy suppression of same-class boxes
//      with IoU > iou_thres (torchvision.ops.batched_nms semantics), stopping at max_det kept boxes.
#include "yolo_decode_nms.h"

#include <cub/cub.cuh>
#include <cuda_fp16.h>

#include <algorithm>

namespace netdef {
namespace {

constexpr int kDecodeThreads = 256;
constexpr int kNmsThreads = 512;
constexpr size_t kAlign = 256;

struct FeatPtrs {
    void const* p[kMaxLevels];
};

__device__ __forceinline__ float load(float const* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load(__half const* p, int64_t i) { return __half2float(p[i]); }
__device__ __forceinline__ float sigmoid(float x) { return 1.f / (1.f + expf(-x)); }

size_t alignUp(size_t v) { return (v + kAlign - 1) / kAlign * kAlign; }

struct Layout {
    size_t count, begin, end, keysIn, keysOut, boxes, cls, sortedBoxes, sortedCls, cubTemp, cubBytes, total;
};

int topkOf(YoloDecodeNmsParams const& p) {
    return static_cast<int>(std::min<int64_t>(p.topk, yoloNumAnchors(p)));
}

cudaError_t makeLayout(YoloDecodeNmsParams const& p, Layout& L) {
    size_t const B = p.batch, A = static_cast<size_t>(yoloNumAnchors(p)), T = topkOf(p);
    size_t off = 0;
    auto take = [&off](size_t bytes) {
        size_t at = off;
        off = alignUp(off + bytes);
        return at;
    };
    L.count = take(B * sizeof(int));
    L.begin = take(B * sizeof(int));
    L.end = take(B * sizeof(int));
    L.keysIn = take(B * A * sizeof(uint64_t));
    L.keysOut = take(B * A * sizeof(uint64_t));
    L.boxes = take(B * A * sizeof(float4));
    L.cls = take(B * A * sizeof(int));
    L.sortedBoxes = take(B * T * sizeof(float4));
    L.sortedCls = take(B * T * sizeof(int));
    L.cubBytes = 0;
    cudaError_t err = cub::DeviceSegmentedRadixSort::SortKeys(nullptr, L.cubBytes, static_cast<uint64_t const*>(nullptr),
        static_cast<uint64_t*>(nullptr), static_cast<int>(B * A), static_cast<int>(B), static_cast<int const*>(nullptr),
        static_cast<int const*>(nullptr), 0, 64);
    L.cubTemp = take(L.cubBytes);
    L.total = off + kAlign;  // room to align the workspace pointer
    return err;
}

template <typename T>
__global__ void decodeKernel(YoloDecodeNmsParams p, FeatPtrs feats, int A, int* count, uint64_t* keys, float4* boxes,
    int* classes) {
    int64_t const gid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (gid >= static_cast<int64_t>(p.batch) * A) return;
    int const b = static_cast<int>(gid / A);
    int const anchor = static_cast<int>(gid % A);

    int level = 0, local = anchor;
    while (level < p.nl - 1 && local >= p.na * p.h[level] * p.w[level]) {
        local -= p.na * p.h[level] * p.w[level];
        ++level;
    }
    int const H = p.h[level], W = p.w[level], hw = H * W, no = p.nc + 5;
    int const k = local / hw, cell = local % hw, y = cell / W, x = cell % W;
    T const* src = static_cast<T const*>(feats.p[level]);
    // element [b, k*no + f, y, x]
    int64_t const base = (static_cast<int64_t>(b) * p.na * no + static_cast<int64_t>(k) * no) * hw + cell;

    float const obj = sigmoid(load(src, base + 4LL * hw));
    if (!(obj > p.conf_thres)) return;
    float best = -1.f;
    int bestClass = 0;
    for (int c = 0; c < p.nc; ++c) {
        float const conf = sigmoid(load(src, base + static_cast<int64_t>(5 + c) * hw)) * obj;
        if (conf > best) {  // first maximum wins, like torch.max
            best = conf;
            bestClass = c;
        }
    }
    if (!(best > p.conf_thres)) return;

    float const stride = p.stride[level];
    float const sx = sigmoid(load(src, base)), sy = sigmoid(load(src, base + hw));
    float const tw = sigmoid(load(src, base + 2LL * hw)) * 2.f, th = sigmoid(load(src, base + 3LL * hw)) * 2.f;
    float const cx = (sx * 2.f + (x - 0.5f)) * stride;
    float const cy = (sy * 2.f + (y - 0.5f)) * stride;
    float const bw = (tw * tw) * p.anchors[(level * kMaxAnchors + k) * 2];
    float const bh = (th * th) * p.anchors[(level * kMaxAnchors + k) * 2 + 1];

    int const slot = atomicAdd(count + b, 1);
    size_t const at = static_cast<size_t>(b) * A;
    // Ascending order of ~bits(score) is descending score (scores are positive); ties: lower anchor first.
    keys[at + slot] = (static_cast<uint64_t>(~__float_as_uint(best)) << 32) | static_cast<uint32_t>(anchor);
    boxes[at + anchor] = make_float4(cx - bw / 2.f, cy - bh / 2.f, cx + bw / 2.f, cy + bh / 2.f);
    classes[at + anchor] = bestClass;
}

__global__ void segmentsKernel(int const* count, int* begin, int* end, int batch, int A) {
    for (int b = threadIdx.x; b < batch; b += blockDim.x) {
        begin[b] = b * A;
        end[b] = b * A + count[b];
    }
}

__device__ __forceinline__ float iou(float4 a, float4 b) {  // torchvision's box_iou arithmetic
    float const w = fmaxf(fminf(a.z, b.z) - fmaxf(a.x, b.x), 0.f);
    float const h = fmaxf(fminf(a.w, b.w) - fmaxf(a.y, b.y), 0.f);
    float const inter = w * h;
    float const areaA = (a.z - a.x) * (a.w - a.y), areaB = (b.z - b.x) * (b.w - b.y);
    return inter / (areaA + areaB - inter);
}

__global__ void nmsKernel(YoloDecodeNmsParams p, int A, int T, int const* count, uint64_t const* sortedKeys,
    float4 const* boxes, int const* classes, float4* sBoxes, int* sCls, int32_t* numDets, float* outBoxes,
    float* outScores, int32_t* outClasses) {
    extern __shared__ unsigned char removed[];
    int const b = blockIdx.x, tid = threadIdx.x, nt = blockDim.x;
    int const n = min(count[b], T);
    uint64_t const* keys = sortedKeys + static_cast<size_t>(b) * A;
    float4 const* imgBoxes = boxes + static_cast<size_t>(b) * A;
    int const* imgCls = classes + static_cast<size_t>(b) * A;
    float4* cand = sBoxes + static_cast<size_t>(b) * T;
    int* candCls = sCls + static_cast<size_t>(b) * T;
    for (int j = tid; j < n; j += nt) {
        uint32_t const anchor = static_cast<uint32_t>(keys[j]);
        cand[j] = imgBoxes[anchor];
        candCls[j] = imgCls[anchor];
        removed[j] = 0;
    }
    __syncthreads();

    int const K = p.max_det;
    float4* ob = reinterpret_cast<float4*>(outBoxes) + static_cast<size_t>(b) * K;
    float* os = outScores + static_cast<size_t>(b) * K;
    int32_t* oc = outClasses + static_cast<size_t>(b) * K;
    int kept = 0;  // the same in every thread: each iteration's branch is uniform
    for (int i = 0; i < n && kept < K; ++i) {
        if (removed[i]) continue;
        float4 const box = cand[i];
        int const cls = candCls[i];
        if (tid == 0) {
            ob[kept] = box;
            os[kept] = __uint_as_float(~static_cast<uint32_t>(keys[i] >> 32));
            oc[kept] = cls;
        }
        if (++kept == K) break;
        for (int j = i + 1 + tid; j < n; j += nt) {
            if (!removed[j] && candCls[j] == cls && iou(box, cand[j]) > p.iou_thres) removed[j] = 1;
        }
        __syncthreads();
    }
    for (int k = kept + tid; k < K; k += nt) {
        ob[k] = make_float4(0.f, 0.f, 0.f, 0.f);
        os[k] = 0.f;
        oc[k] = 0;
    }
    if (tid == 0) numDets[b] = kept;
}

} // namespace

int64_t yoloNumAnchors(YoloDecodeNmsParams const& p) {
    int64_t n = 0;
    for (int l = 0; l < p.nl; ++l) n += static_cast<int64_t>(p.na) * p.h[l] * p.w[l];
    return n;
}

size_t yoloWorkspaceSize(YoloDecodeNmsParams const& p) {
    Layout L{};
    return makeLayout(p, L) == cudaSuccess ? L.total : 0;
}

cudaError_t yoloDecodeNms(YoloDecodeNmsParams const& p, void const* const* feats, bool half, int32_t* num_dets,
    float* boxes, float* scores, int32_t* classes, void* workspace, size_t workspace_size, cudaStream_t stream) {
    if (p.nl < 1 || p.nl > kMaxLevels || p.na < 1 || p.na > kMaxAnchors || p.nc < 1 || p.max_det < 1
        || p.topk < 1 || p.topk > kMaxTopK || p.batch < 1) {
        return cudaErrorInvalidValue;
    }
    int64_t const A64 = yoloNumAnchors(p);
    if (A64 < 1 || A64 * p.batch > INT32_MAX) return cudaErrorInvalidValue;
    int const A = static_cast<int>(A64), T = topkOf(p);
    Layout L{};
    cudaError_t err = makeLayout(p, L);
    if (err != cudaSuccess) return err;
    if (L.total > workspace_size) return cudaErrorInvalidValue;
    char* ws = reinterpret_cast<char*>(alignUp(reinterpret_cast<size_t>(workspace)));
    int* count = reinterpret_cast<int*>(ws + L.count);
    int* begin = reinterpret_cast<int*>(ws + L.begin);
    int* end = reinterpret_cast<int*>(ws + L.end);
    uint64_t* keysIn = reinterpret_cast<uint64_t*>(ws + L.keysIn);
    uint64_t* keysOut = reinterpret_cast<uint64_t*>(ws + L.keysOut);
    float4* cand = reinterpret_cast<float4*>(ws + L.boxes);
    int* candCls = reinterpret_cast<int*>(ws + L.cls);
    float4* sBoxes = reinterpret_cast<float4*>(ws + L.sortedBoxes);
    int* sCls = reinterpret_cast<int*>(ws + L.sortedCls);

    FeatPtrs fp{};
    for (int l = 0; l < p.nl; ++l) fp.p[l] = feats[l];
    if ((err = cudaMemsetAsync(count, 0, sizeof(int) * p.batch, stream)) != cudaSuccess) return err;
    int64_t const total = static_cast<int64_t>(p.batch) * A;
    unsigned const blocks = static_cast<unsigned>((total + kDecodeThreads - 1) / kDecodeThreads);
    if (half) {
        decodeKernel<__half><<<blocks, kDecodeThreads, 0, stream>>>(p, fp, A, count, keysIn, cand, candCls);
    } else {
        decodeKernel<float><<<blocks, kDecodeThreads, 0, stream>>>(p, fp, A, count, keysIn, cand, candCls);
    }
    segmentsKernel<<<1, 256, 0, stream>>>(count, begin, end, p.batch, A);
    size_t cubBytes = L.cubBytes;
    err = cub::DeviceSegmentedRadixSort::SortKeys(ws + L.cubTemp, cubBytes, keysIn, keysOut, static_cast<int>(total),
        p.batch, begin, end, 0, 64, stream);
    if (err != cudaSuccess) return err;
    nmsKernel<<<p.batch, kNmsThreads, T, stream>>>(p, A, T, count, keysOut, cand, candCls, sBoxes, sCls, num_dets,
        boxes, scores, classes);
    return cudaGetLastError();
}

} // namespace netdef
