// netdef's letterbox of one HxWx3 uint8 image as a single kernel, written to give the same pixels, bit for bit, as
// the torch letterbox of netdef/tools/preprocess.py on the GPU (cv2.resize INTER_LINEAR's fixed-point arithmetic,
// BGR->RGB, /255, grey padding), straight into a (3, H, W) plane set of float32 or float16 (an engine's input).
//
// One thread per output pixel of the padded image (a block row per output row), its three channels. Inside the
// resized image (rows [top, top + nh), columns [left, left + nw)) it resizes through the tap tables netdef computes
// on the host (preprocess._device_taps: int32 rows i0, i1, a0, a1 of n_out entries each, horizontal and vertical);
// a same-size image (nh == h, nw == w) passes null tables and is copied. Elsewhere it writes `fill` (114 / 255).
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(__half* p, float v) { *p = __float2half_rn(v); }

template <typename T>
__global__ void letterboxKernel(uint8_t const* src, int h, int w, int nh, int nw, int top, int left, int bgr,
                                int const* cols, int const* rows, T* out, int64_t plane, int64_t row, int ow,
                                float fill, float scale) {
    int const x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y;  // one block row per output row
    if (x >= ow) return;
    T* dst = out + y * row + x;
    int const yy = y - top, xx = x - left;
    if (yy < 0 || yy >= nh || xx < 0 || xx >= nw) {
        for (int c = 0; c < 3; ++c) store(dst + c * plane, fill);
        return;
    }
    int value[3];
    if (cols == nullptr) {
        uint8_t const* p = src + (static_cast<int64_t>(yy) * w + xx) * 3;
        for (int c = 0; c < 3; ++c) value[c] = p[c];
    } else {
        int const x0 = cols[xx], x1 = cols[nw + xx], a0 = cols[2 * nw + xx], a1 = cols[3 * nw + xx];
        int const y0 = rows[yy], y1 = rows[nh + yy], b0 = rows[2 * nh + yy], b1 = rows[3 * nh + yy];
        uint8_t const* r0 = src + static_cast<int64_t>(y0) * w * 3;
        uint8_t const* r1 = src + static_cast<int64_t>(y1) * w * 3;
        for (int c = 0; c < 3; ++c) {
            int const upper = r0[x0 * 3 + c] * a0 + r0[x1 * 3 + c] * a1;  // the horizontal pass, scaled by 2048
            int const lower = r1[x0 * 3 + c] * a0 + r1[x1 * 3 + c] * a1;
            int const v = ((((upper >> 4) * b0) >> 16) + (((lower >> 4) * b1) >> 16) + 2) >> 2;
            value[c] = v < 0 ? 0 : (v > 255 ? 255 : v);
        }
    }
    for (int c = 0; c < 3; ++c) store(dst + c * plane, static_cast<float>(value[bgr ? 2 - c : c]) * scale);
}

}  // namespace

extern "C" {

// Letterbox `src` (h x w x 3 uint8, device memory) into `out` (channel stride `plane`, row stride `row`, in
// elements; oh x ow pixels; float32, or float16 when `half`) on `stream`: pixel values times `scale` (1 / 255 as
// a float32, as torch's CUDA division by a scalar multiplies by its reciprocal), `fill` outside the image.
// Returns the CUDA error code (0: none).
__attribute__((visibility("default"))) int netdef_letterbox(
    void const* src, int h, int w, int nh, int nw, int top, int left, int bgr, void const* cols, void const* rows,
    void* out, int half, int64_t plane, int64_t row, int oh, int ow, float fill, float scale, void* stream) {
    if (oh <= 0 || ow <= 0) return 0;
    if (oh > 65535) return static_cast<int>(cudaErrorInvalidValue);  // a grid row per output row
    dim3 const grid(static_cast<unsigned>((ow + kThreads - 1) / kThreads), static_cast<unsigned>(oh));
    auto const s = static_cast<cudaStream_t>(stream);
    auto const in = static_cast<uint8_t const*>(src);
    auto const c = static_cast<int const*>(cols);
    auto const r = static_cast<int const*>(rows);
    if (half) {
        letterboxKernel<__half><<<grid, kThreads, 0, s>>>(in, h, w, nh, nw, top, left, bgr, c, r,
                                                           static_cast<__half*>(out), plane, row, ow, fill, scale);
    } else {
        letterboxKernel<float><<<grid, kThreads, 0, s>>>(in, h, w, nh, nw, top, left, bgr, c, r,
                                                          static_cast<float*>(out), plane, row, ow, fill, scale);
    }
    return static_cast<int>(cudaGetLastError());
}

// The name of CUDA error `code` ("cudaErrorInvalidValue"), for netdef's error messages.
__attribute__((visibility("default"))) char const* netdef_cuda_error_name(int code) {
    return cudaGetErrorName(static_cast<cudaError_t>(code));
}

}  // extern "C"
