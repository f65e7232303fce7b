// YOLO decode + class-aware greedy NMS, matching YOLOv5's (layout 0) and Ultralytics' (layout 1)
// non_max_suppression with one best class per box:
//   1. decodeKernel: best class per candidate; layout 0 decodes YOLOv5's maps (sigmoid, conf = obj * cls, kept
//      when obj > conf_thres and conf > conf_thres), layout 1 reads decoded x, y, w, h and class probabilities
//      (kept when the best > conf_thres). Kept candidates are appended per image with a sort key (score
//      descending, candidate index): the score's 32 bits above the index's `indexBits(A)` bits.
//   2. cub segmented radix sort of the keys' 32 + indexBits(A) bits (not all 64: fewer passes), one segment per
//      image.
//   3. nmsKernel (one block per image): the top `topk` candidates, greedy suppression of same-class boxes with
//      IoU > iou_thres (torchvision.ops.nms semantics; layout 1 on boxes offset by class x 7680 as Ultralytics),
//      stopping at max_det kept boxes.
//   4. extrasKernel: the kept candidates' extra channels (mask coefficients, keypoints), as they are (layout 0:
//      times the objectness, as YOLOv5's NMS leaves them).
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

// Where a candidate's channels are: channel f at feats[level][base + f * step]; layout 0 also its anchor k of
// the level and its cell (x, y).
struct Where {
    int level, k, x, y;
    int64_t base, step;
};

__device__ Where locate(YoloDecodeNmsParams const& p, int b, int anchor) {
    Where at{};
    if (p.layout == kLayoutDecoded) {
        at.base = static_cast<int64_t>(b) * (4 + p.nc + p.extra) * p.n + anchor;
        at.step = p.n;
        return at;
    }
    int local = anchor;
    while (at.level < p.nl - 1 && local >= p.na * p.h[at.level] * p.w[at.level]) {
        local -= p.na * p.h[at.level] * p.w[at.level];
        ++at.level;
    }
    int const W = p.w[at.level], hw = p.h[at.level] * W, no = 5 + p.nc + p.extra;
    int const cell = local % hw;
    at.k = local / hw;
    at.x = cell % W;
    at.y = cell / W;
    at.base = (static_cast<int64_t>(b) * p.na * no + static_cast<int64_t>(at.k) * no) * hw + cell;
    at.step = hw;
    return at;
}

// The first class channel: after x, y, w, h (and YOLOv5's objectness).
__host__ __device__ __forceinline__ int firstClass(YoloDecodeNmsParams const& p) {
    return p.layout == kLayoutDecoded ? 4 : 5;
}

struct Layout {
    size_t count, begin, end, keysIn, keysOut, boxes, cls, sortedBoxes, sortedCls, kept, cubTemp, cubBytes, total;
};

// The bits a candidate index (< A) takes in a sort key (computed on the host, passed to the kernels as `shift`).
int indexBits(int A) {
    int bits = 1;
    while (bits < 31 && (1 << bits) < A) ++bits;
    return bits;
}

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
    L.kept = take(B * static_cast<size_t>(p.max_det) * sizeof(int));
    L.cubBytes = 0;
    cudaError_t err = cub::DeviceSegmentedRadixSort::SortKeys(nullptr, L.cubBytes, static_cast<uint64_t const*>(nullptr),
        static_cast<uint64_t*>(nullptr), static_cast<int>(B * A), static_cast<int>(B), static_cast<int const*>(nullptr),
        static_cast<int const*>(nullptr), 0, 32 + indexBits(static_cast<int>(A)));
    L.cubTemp = take(L.cubBytes);
    L.total = off + kAlign;  // room to align the workspace pointer
    return err;
}

template <typename T>
__global__ void decodeKernel(YoloDecodeNmsParams p, FeatPtrs feats, int A, int shift, int* count, uint64_t* keys,
    float4* boxes, int* classes) {
    int64_t const gid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (gid >= static_cast<int64_t>(p.batch) * A) return;
    int const b = static_cast<int>(gid / A);
    int const anchor = static_cast<int>(gid % A);
    Where const at = locate(p, b, anchor);
    T const* src = static_cast<T const*>(feats.p[at.level]);
    auto channel = [&](int f) { return load(src, at.base + f * at.step); };
    bool const decoded = p.layout == kLayoutDecoded;

    float obj = 1.f;
    if (!decoded) {
        obj = sigmoid(channel(4));
        if (!(obj > p.conf_thres)) return;
    }
    int const first = firstClass(p);
    float best = -1.f;
    int bestClass = 0;
    for (int c = 0; c < p.nc; ++c) {
        float const conf = decoded ? channel(first + c) : sigmoid(channel(first + c)) * obj;
        if (conf > best) {  // first maximum wins, like torch.max
            best = conf;
            bestClass = c;
        }
    }
    if (!(best > p.conf_thres)) return;

    float cx, cy, bw, bh;
    if (decoded) {
        cx = channel(0);
        cy = channel(1);
        bw = channel(2);
        bh = channel(3);
    } else {
        float const stride = p.stride[at.level];
        float const sx = sigmoid(channel(0)), sy = sigmoid(channel(1));
        float const tw = sigmoid(channel(2)) * 2.f, th = sigmoid(channel(3)) * 2.f;
        cx = (sx * 2.f + (at.x - 0.5f)) * stride;
        cy = (sy * 2.f + (at.y - 0.5f)) * stride;
        bw = (tw * tw) * p.anchors[(at.level * kMaxAnchors + at.k) * 2];
        bh = (th * th) * p.anchors[(at.level * kMaxAnchors + at.k) * 2 + 1];
    }

    int const slot = atomicAdd(count + b, 1);
    size_t const base = static_cast<size_t>(b) * A;
    // Ascending order of ~bits(score) is descending score (scores are positive); ties: lower index first.
    keys[base + slot] = (static_cast<uint64_t>(~__float_as_uint(best)) << shift) | static_cast<uint32_t>(anchor);
    boxes[base + anchor] = make_float4(cx - bw / 2.f, cy - bh / 2.f, cx + bw / 2.f, cy + bh / 2.f);
    classes[base + anchor] = bestClass;
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

// keptIndex (B, K): the kept boxes' candidate indices, -1 past the last (read by extrasKernel; nullptr: not needed).
__global__ void nmsKernel(YoloDecodeNmsParams p, int A, int shift, int T, int const* count, uint64_t const* sortedKeys,
    float4 const* boxes, int const* classes, float4* sBoxes, int* sCls, int32_t* numDets, float* outBoxes,
    float* outScores, int32_t* outClasses, int* keptIndex) {
    extern __shared__ unsigned char removed[];
    int const b = blockIdx.x, tid = threadIdx.x, nt = blockDim.x;
    int const n = min(count[b], T);
    uint64_t const mask = (uint64_t{1} << shift) - 1;
    uint64_t const* keys = sortedKeys + static_cast<size_t>(b) * A;
    float4 const* imgBoxes = boxes + static_cast<size_t>(b) * A;
    int const* imgCls = classes + static_cast<size_t>(b) * A;
    float4* cand = sBoxes + static_cast<size_t>(b) * T;
    int* candCls = sCls + static_cast<size_t>(b) * T;
    float const classOffset = p.layout == kLayoutDecoded ? kClassOffset : 0.f;
    for (int j = tid; j < n; j += nt) {
        uint32_t const anchor = static_cast<uint32_t>(keys[j] & mask);
        float4 const box = imgBoxes[anchor];
        int const cls = imgCls[anchor];
        float const off = static_cast<float>(cls) * classOffset;  // the boxes IoU is computed on
        cand[j] = make_float4(box.x + off, box.y + off, box.z + off, box.w + off);
        candCls[j] = cls;
        removed[j] = 0;
    }
    __syncthreads();

    int const K = p.max_det;
    float4* ob = reinterpret_cast<float4*>(outBoxes) + static_cast<size_t>(b) * K;
    float* os = outScores + static_cast<size_t>(b) * K;
    int32_t* oc = outClasses + static_cast<size_t>(b) * K;
    int* ok = keptIndex ? keptIndex + static_cast<size_t>(b) * K : nullptr;
    int kept = 0;  // the same in every thread: each iteration's branch is uniform
    for (int i = 0; i < n && kept < K; ++i) {
        if (removed[i]) continue;
        float4 const box = cand[i];
        int const cls = candCls[i];
        if (tid == 0) {
            uint32_t const anchor = static_cast<uint32_t>(keys[i] & mask);
            ob[kept] = imgBoxes[anchor];
            os[kept] = __uint_as_float(~static_cast<uint32_t>(keys[i] >> shift));
            oc[kept] = cls;
            if (ok) ok[kept] = static_cast<int>(anchor);
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
        if (ok) ok[k] = -1;
    }
    if (tid == 0) numDets[b] = kept;
}

// extras (B, K, E): channel e after the class scores of each kept candidate; zero rows past num_dets.
template <typename T>
__global__ void extrasKernel(YoloDecodeNmsParams p, FeatPtrs feats, int const* keptIndex, float* extras) {
    int64_t const gid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    int64_t const perImage = static_cast<int64_t>(p.max_det) * p.extra;
    if (gid >= p.batch * perImage) return;
    int const b = static_cast<int>(gid / perImage);
    int const e = static_cast<int>(gid % p.extra);
    int const anchor = keptIndex[gid / p.extra];
    float v = 0.f;
    if (anchor >= 0) {
        Where const at = locate(p, b, anchor);
        T const* src = static_cast<T const*>(feats.p[at.level]);
        v = load(src, at.base + (firstClass(p) + p.nc + e) * at.step);
        // YOLOv5's non_max_suppression scales every channel after objectness by it (`x[:, 5:] *= x[:, 4:5]`),
        // the mask coefficients included: so does layout 0, to give YOLOv5-seg's masks exactly.
        if (p.layout != kLayoutDecoded) v *= sigmoid(load(src, at.base + 4 * at.step));
    }
    extras[gid] = v;
}

template <typename T>
void launchDecode(YoloDecodeNmsParams const& p, FeatPtrs const& fp, int A, int shift, unsigned blocks, int* count,
    uint64_t* keys, float4* cand, int* candCls, cudaStream_t stream) {
    decodeKernel<T><<<blocks, kDecodeThreads, 0, stream>>>(p, fp, A, shift, count, keys, cand, candCls);
}

template <typename T>
void launchExtras(YoloDecodeNmsParams const& p, FeatPtrs const& fp, int const* kept, float* extras,
    cudaStream_t stream) {
    int64_t const total = static_cast<int64_t>(p.batch) * p.max_det * p.extra;
    unsigned const blocks = static_cast<unsigned>((total + kDecodeThreads - 1) / kDecodeThreads);
    extrasKernel<T><<<blocks, kDecodeThreads, 0, stream>>>(p, fp, kept, extras);
}

bool valid(YoloDecodeNmsParams const& p) {
    bool const shape = p.layout == kLayoutDecoded
        ? p.n >= 1
        : p.layout == kLayoutAnchors && p.nl >= 1 && p.nl <= kMaxLevels && p.na >= 1 && p.na <= kMaxAnchors;
    return shape && p.nc >= 1 && p.extra >= 0 && p.max_det >= 1 && p.topk >= 1 && p.topk <= kMaxTopK
        && p.batch >= 1 && static_cast<int64_t>(p.batch) * p.max_det * p.extra <= INT32_MAX;
}

} // namespace

int64_t yoloNumAnchors(YoloDecodeNmsParams const& p) {
    if (p.layout == kLayoutDecoded) return p.n;
    int64_t n = 0;
    for (int l = 0; l < p.nl; ++l) n += static_cast<int64_t>(p.na) * p.h[l] * p.w[l];
    return n;
}

size_t yoloWorkspaceSize(YoloDecodeNmsParams const& p) {
    Layout L{};
    return makeLayout(p, L) == cudaSuccess ? L.total : 0;
}

cudaError_t yoloDecodeNms(YoloDecodeNmsParams const& p, void const* const* feats, bool half, int32_t* num_dets,
    float* boxes, float* scores, int32_t* classes, float* extras, void* workspace, size_t workspace_size,
    cudaStream_t stream) {
    if (!valid(p) || (p.extra > 0 && extras == nullptr)) return cudaErrorInvalidValue;
    int64_t const A64 = yoloNumAnchors(p);
    if (A64 < 1 || A64 * p.batch > INT32_MAX) return cudaErrorInvalidValue;
    int const A = static_cast<int>(A64), T = topkOf(p), shift = indexBits(A);
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
    int* kept = p.extra > 0 ? reinterpret_cast<int*>(ws + L.kept) : nullptr;

    FeatPtrs fp{};
    int const inputs = p.layout == kLayoutDecoded ? 1 : p.nl;
    for (int l = 0; l < inputs; ++l) fp.p[l] = feats[l];
    if ((err = cudaMemsetAsync(count, 0, sizeof(int) * p.batch, stream)) != cudaSuccess) return err;
    int64_t const total = static_cast<int64_t>(p.batch) * A;
    unsigned const blocks = static_cast<unsigned>((total + kDecodeThreads - 1) / kDecodeThreads);
    if (half) {
        launchDecode<__half>(p, fp, A, shift, blocks, count, keysIn, cand, candCls, stream);
    } else {
        launchDecode<float>(p, fp, A, shift, blocks, count, keysIn, cand, candCls, stream);
    }
    segmentsKernel<<<1, 256, 0, stream>>>(count, begin, end, p.batch, A);
    size_t cubBytes = L.cubBytes;
    err = cub::DeviceSegmentedRadixSort::SortKeys(ws + L.cubTemp, cubBytes, keysIn, keysOut, static_cast<int>(total),
        p.batch, begin, end, 0, 32 + shift, stream);
    if (err != cudaSuccess) return err;
    nmsKernel<<<p.batch, kNmsThreads, T, stream>>>(p, A, shift, T, count, keysOut, cand, candCls, sBoxes, sCls,
        num_dets, boxes, scores, classes, kept);
    if (kept != nullptr) {
        if (half) {
            launchExtras<__half>(p, fp, kept, extras, stream);
        } else {
            launchExtras<float>(p, fp, kept, extras, stream);
        }
    }
    return cudaGetLastError();
}

} // namespace netdef
