// TensorRT plugin "NetdefYoloDecodeNms" (IPluginV2DynamicExt, TensorRT 8.6 .. 11): YOLO decode + NMS.
//
// Inputs, all float32 or all float16, linear: layout 0 the nl raw YOLOv5 Detect maps (B, na*(5+nc+extra), H_l,
// W_l); layout 1 one decoded anchor-free prediction (B, 4+nc+extra, N) (x, y, w, h pixels, class probabilities).
// Outputs: num_dets (B, 1) int32, boxes (B, K, 4) float32 x1y1x2y2 (input pixels), scores (B, K) float32,
// classes (B, K) int32, and with extra > 0 extras (B, K, extra) float32; K = max_det, zero padded.
// Fields: layout (int32, default 0), nc, extra (int32, default 0), layout 0 only: na, nl (int32), strides
// (int32[nl]), anchors (float32[nl*na*2], pixels); conf_thres, iou_thres (float32), max_det, topk (int32).
// Serialized data: version 1 (layout 0 without extra, as before layouts existed) or 2 (layout and extra first).
#include "yolo_decode_nms.h"

#include <NvInfer.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

namespace netdef {
namespace {

char const* const kPluginName = "NetdefYoloDecodeNms";
char const* const kPluginVersion = "1";
constexpr int32_t kSerialPlain = 1;   // layout 0, extra 0: the format engines built before layouts existed
constexpr int32_t kSerialLayout = 2;  // layout and extra follow the version

std::mutex gErrorMutex;
std::string gLastError;

void setError(std::string const& msg) {
    std::lock_guard<std::mutex> lock(gErrorMutex);
    gLastError = msg;
    std::fprintf(stderr, "[netdef plugin %s] %s\n", kPluginName, msg.c_str());
}

struct Config {
    int32_t layout = kLayoutAnchors, extra = 0;
    int32_t nc = 0, na = 0, nl = 0;
    std::vector<int32_t> strides;
    std::vector<float> anchors;
    float conf_thres = 0.25f, iou_thres = 0.45f;
    int32_t max_det = 300, topk = 30000;

    // Empty when valid, else what is wrong.
    std::string check() const {
        if (layout != kLayoutAnchors && layout != kLayoutDecoded) return "layout must be 0 (anchors) or 1 (decoded)";
        if (nc < 1) return "nc must be >= 1";
        if (extra < 0) return "extra must be >= 0";
        if (layout == kLayoutDecoded) {
            if (nl != 0 || na != 0 || !strides.empty() || !anchors.empty())
                return "layout 1 (decoded) takes no nl, na, strides or anchors";
        } else {
            if (nl < 1 || nl > kMaxLevels) return "nl must be 1.." + std::to_string(kMaxLevels);
            if (na < 1 || na > kMaxAnchors) return "na must be 1.." + std::to_string(kMaxAnchors);
            if (static_cast<int>(strides.size()) != nl) return "strides needs nl values";
            for (int32_t s : strides)
                if (s < 1) return "strides must be positive";
            if (static_cast<int>(anchors.size()) != nl * na * 2) return "anchors needs nl*na*2 values";
        }
        if (!(conf_thres >= 0.f && conf_thres < 1.f)) return "conf_thres must be in [0, 1)";
        if (!(iou_thres > 0.f && iou_thres <= 1.f)) return "iou_thres must be in (0, 1]";
        if (max_det < 1) return "max_det must be >= 1";
        if (topk < 1 || topk > kMaxTopK) return "topk must be 1.." + std::to_string(kMaxTopK);
        return {};
    }

    int32_t serialVersion() const { return layout == kLayoutAnchors && extra == 0 ? kSerialPlain : kSerialLayout; }

    size_t serialSize() const {  // version [layout extra] nc na nl strides anchors conf iou max_det topk
        size_t const ints = (serialVersion() == kSerialLayout ? 2 : 0) + 5 + strides.size();
        return sizeof(int32_t) * (1 + ints) + sizeof(float) * (2 + anchors.size());
    }

    int32_t nbInputs() const { return layout == kLayoutDecoded ? 1 : nl; }
    int32_t nbOutputs() const { return extra > 0 ? 5 : 4; }
};

template <typename T>
void put(char*& p, T v) {
    std::memcpy(p, &v, sizeof(T));
    p += sizeof(T);
}

template <typename T>
bool get(char const*& p, char const* end, T& v) {
    if (p + sizeof(T) > end) return false;
    std::memcpy(&v, p, sizeof(T));
    p += sizeof(T);
    return true;
}

class YoloDecodeNmsPlugin final : public nvinfer1::IPluginV2DynamicExt {
public:
    explicit YoloDecodeNmsPlugin(Config cfg) : mCfg(std::move(cfg)) {}

    // ---------------------------------------------------------------- IPluginV2
    char const* getPluginType() const noexcept override { return kPluginName; }
    char const* getPluginVersion() const noexcept override { return kPluginVersion; }
    int32_t getNbOutputs() const noexcept override { return mCfg.nbOutputs(); }
    int32_t initialize() noexcept override { return 0; }
    void terminate() noexcept override {}
    void destroy() noexcept override { delete this; }
    void setPluginNamespace(char const* ns) noexcept override { mNamespace = ns ? ns : ""; }
    char const* getPluginNamespace() const noexcept override { return mNamespace.c_str(); }

    size_t getSerializationSize() const noexcept override { return mCfg.serialSize(); }

    void serialize(void* buffer) const noexcept override {
        char* p = static_cast<char*>(buffer);
        put(p, mCfg.serialVersion());
        if (mCfg.serialVersion() == kSerialLayout) {
            put(p, mCfg.layout);
            put(p, mCfg.extra);
        }
        put(p, mCfg.nc);
        put(p, mCfg.na);
        put(p, mCfg.nl);
        for (int32_t s : mCfg.strides) put(p, s);
        for (float a : mCfg.anchors) put(p, a);
        put(p, mCfg.conf_thres);
        put(p, mCfg.iou_thres);
        put(p, mCfg.max_det);
        put(p, mCfg.topk);
    }

    // ---------------------------------------------------------------- IPluginV2Ext
    nvinfer1::DataType getOutputDataType(
        int32_t index, nvinfer1::DataType const* /*inputTypes*/, int32_t /*nbInputs*/) const noexcept override {
        return (index == 0 || index == 3) ? nvinfer1::DataType::kINT32 : nvinfer1::DataType::kFLOAT;
    }

    // ---------------------------------------------------------------- IPluginV2DynamicExt
    nvinfer1::IPluginV2DynamicExt* clone() const noexcept override {
        try {
            auto* p = new YoloDecodeNmsPlugin(mCfg);
            p->setPluginNamespace(mNamespace.c_str());
            return p;
        } catch (...) {
            return nullptr;
        }
    }

    nvinfer1::DimsExprs getOutputDimensions(int32_t outputIndex, nvinfer1::DimsExprs const* inputs,
        int32_t /*nbInputs*/, nvinfer1::IExprBuilder& exprBuilder) noexcept override {
        nvinfer1::DimsExprs out{};
        out.d[0] = inputs[0].d[0];
        nvinfer1::IDimensionExpr const* K = exprBuilder.constant(mCfg.max_det);
        switch (outputIndex) {
        case 0: out.nbDims = 2; out.d[1] = exprBuilder.constant(1); break;
        case 1: out.nbDims = 3; out.d[1] = K; out.d[2] = exprBuilder.constant(4); break;
        case 4: out.nbDims = 3; out.d[1] = K; out.d[2] = exprBuilder.constant(mCfg.extra); break;
        default: out.nbDims = 2; out.d[1] = K; break;
        }
        return out;
    }

    bool supportsFormatCombination(int32_t pos, nvinfer1::PluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t /*nbOutputs*/) noexcept override {
        nvinfer1::PluginTensorDesc const& d = inOut[pos];
        if (d.format != nvinfer1::TensorFormat::kLINEAR) return false;
        if (pos < nbInputs) {
            bool const fp = d.type == nvinfer1::DataType::kFLOAT || d.type == nvinfer1::DataType::kHALF;
            return fp && (pos == 0 || d.type == inOut[0].type);
        }
        int const o = pos - nbInputs;
        return d.type == ((o == 0 || o == 3) ? nvinfer1::DataType::kINT32 : nvinfer1::DataType::kFLOAT);
    }

    void configurePlugin(nvinfer1::DynamicPluginTensorDesc const* /*in*/, int32_t /*nbInputs*/,
        nvinfer1::DynamicPluginTensorDesc const* /*out*/, int32_t /*nbOutputs*/) noexcept override {}

    size_t getWorkspaceSize(nvinfer1::PluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::PluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept override {
        YoloDecodeNmsParams p;
        if (!params(inputs, nbInputs, p)) return 0;
        return yoloWorkspaceSize(p);
    }

    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* /*outputDesc*/,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override {
        YoloDecodeNmsParams p;
        if (!params(inputDesc, mCfg.nbInputs(), p)) return 1;
        bool const half = inputDesc[0].type == nvinfer1::DataType::kHALF;
        float* extras = mCfg.extra > 0 ? static_cast<float*>(outputs[4]) : nullptr;
        cudaError_t const err = yoloDecodeNms(p, inputs, half, static_cast<int32_t*>(outputs[0]),
            static_cast<float*>(outputs[1]), static_cast<float*>(outputs[2]), static_cast<int32_t*>(outputs[3]),
            extras, workspace, yoloWorkspaceSize(p), stream);
        if (err != cudaSuccess) {
            setError(std::string("enqueue failed: ") + cudaGetErrorString(err));
            return 1;
        }
        return 0;
    }

private:
    // Kernel parameters from the input descriptors; false (with a message) when the shapes do not fit.
    bool params(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, YoloDecodeNmsParams& p) const {
        if (nbInputs != mCfg.nbInputs()) {
            setError("expected " + std::to_string(mCfg.nbInputs()) + " inputs, got " + std::to_string(nbInputs));
            return false;
        }
        p.batch = in[0].dims.d[0];
        p.layout = mCfg.layout;
        p.nl = mCfg.nl;
        p.na = mCfg.na;
        p.nc = mCfg.nc;
        p.extra = mCfg.extra;
        p.conf_thres = mCfg.conf_thres;
        p.iou_thres = mCfg.iou_thres;
        p.max_det = mCfg.max_det;
        p.topk = mCfg.topk;
        if (mCfg.layout == kLayoutDecoded) {
            nvinfer1::Dims const& d = in[0].dims;
            if (d.nbDims != 3 || d.d[1] != 4 + mCfg.nc + mCfg.extra || d.d[2] < 1) {
                setError("input 0 must be (B, 4+nc+extra=" + std::to_string(4 + mCfg.nc + mCfg.extra) + ", N)");
                return false;
            }
            p.n = d.d[2];
            return p.batch >= 1;
        }
        int const no = mCfg.nc + 5 + mCfg.extra;
        for (int l = 0; l < mCfg.nl; ++l) {
            nvinfer1::Dims const& d = in[l].dims;
            if (d.nbDims != 4 || d.d[0] != p.batch || d.d[1] != mCfg.na * no || d.d[2] < 1 || d.d[3] < 1) {
                setError("input " + std::to_string(l) + " must be (B, na*(5+nc+extra)=" + std::to_string(mCfg.na * no)
                    + ", H, W) with the same B as input 0");
                return false;
            }
            p.h[l] = d.d[2];
            p.w[l] = d.d[3];
            p.stride[l] = static_cast<float>(mCfg.strides[l]);
            for (int k = 0; k < mCfg.na; ++k) {
                p.anchors[(l * kMaxAnchors + k) * 2] = mCfg.anchors[(l * mCfg.na + k) * 2];
                p.anchors[(l * kMaxAnchors + k) * 2 + 1] = mCfg.anchors[(l * mCfg.na + k) * 2 + 1];
            }
        }
        return p.batch >= 1;
    }

    Config mCfg;
    std::string mNamespace;
};

class YoloDecodeNmsCreator final : public nvinfer1::IPluginCreator {
public:
    YoloDecodeNmsCreator() {
        auto add = [this](char const* name, nvinfer1::PluginFieldType type, int32_t length) {
            mFields.emplace_back(name, nullptr, type, length);
        };
        add("layout", nvinfer1::PluginFieldType::kINT32, 1);
        add("nc", nvinfer1::PluginFieldType::kINT32, 1);
        add("extra", nvinfer1::PluginFieldType::kINT32, 1);
        add("na", nvinfer1::PluginFieldType::kINT32, 1);
        add("nl", nvinfer1::PluginFieldType::kINT32, 1);
        add("strides", nvinfer1::PluginFieldType::kINT32, -1);
        add("anchors", nvinfer1::PluginFieldType::kFLOAT32, -1);
        add("conf_thres", nvinfer1::PluginFieldType::kFLOAT32, 1);
        add("iou_thres", nvinfer1::PluginFieldType::kFLOAT32, 1);
        add("max_det", nvinfer1::PluginFieldType::kINT32, 1);
        add("topk", nvinfer1::PluginFieldType::kINT32, 1);
        mCollection.nbFields = static_cast<int32_t>(mFields.size());
        mCollection.fields = mFields.data();
    }

    char const* getPluginName() const noexcept override { return kPluginName; }
    char const* getPluginVersion() const noexcept override { return kPluginVersion; }
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override { return &mCollection; }
    void setPluginNamespace(char const* ns) noexcept override { mNamespace = ns ? ns : ""; }
    char const* getPluginNamespace() const noexcept override { return mNamespace.c_str(); }

    nvinfer1::IPluginV2* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc) noexcept override {
        try {
            Config cfg;
            std::vector<std::string> seen;
            for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i) {
                nvinfer1::PluginField const& f = fc->fields[i];
                std::string const key = f.name;
                std::string const err = read(f, key, cfg);
                if (!err.empty()) {
                    setError(std::string(name ? name : "") + ": field '" + key + "': " + err);
                    return nullptr;
                }
                seen.push_back(key);
            }
            std::vector<std::string> required = {"nc"};
            if (cfg.layout == kLayoutAnchors) required = {"nc", "na", "nl", "strides", "anchors"};
            for (std::string const& key : required) {
                if (std::find(seen.begin(), seen.end(), key) == seen.end()) {
                    setError(std::string(name ? name : "") + ": missing field '" + key + "'");
                    return nullptr;
                }
            }
            std::string const bad = cfg.check();
            if (!bad.empty()) {
                setError(std::string(name ? name : "") + ": " + bad);
                return nullptr;
            }
            auto* p = new YoloDecodeNmsPlugin(cfg);
            p->setPluginNamespace(mNamespace.c_str());
            return p;
        } catch (...) {
            setError("createPlugin: out of memory");
            return nullptr;
        }
    }

    nvinfer1::IPluginV2* deserializePlugin(char const* name, void const* data, size_t length) noexcept override {
        try {
            char const* p = static_cast<char const*>(data);
            char const* end = p + length;
            Config cfg;
            int32_t version = 0;
            bool ok = get(p, end, version) && (version == kSerialPlain || version == kSerialLayout);
            if (ok && version == kSerialLayout) ok = get(p, end, cfg.layout) && get(p, end, cfg.extra);
            ok = ok && get(p, end, cfg.nc) && get(p, end, cfg.na) && get(p, end, cfg.nl) && cfg.nl >= 0
                && cfg.nl <= kMaxLevels && cfg.na >= 0 && cfg.na <= kMaxAnchors;
            if (ok) {
                cfg.strides.resize(cfg.nl);
                cfg.anchors.resize(static_cast<size_t>(cfg.nl) * cfg.na * 2);
                for (auto& s : cfg.strides) ok = ok && get(p, end, s);
                for (auto& a : cfg.anchors) ok = ok && get(p, end, a);
                ok = ok && get(p, end, cfg.conf_thres) && get(p, end, cfg.iou_thres) && get(p, end, cfg.max_det)
                    && get(p, end, cfg.topk) && p == end && cfg.check().empty();
            }
            if (!ok) {
                setError(std::string(name ? name : "") + ": damaged or incompatible serialized plugin data "
                    "(rebuild the engine)");
                return nullptr;
            }
            auto* plugin = new YoloDecodeNmsPlugin(cfg);
            plugin->setPluginNamespace(mNamespace.c_str());
            return plugin;
        } catch (...) {
            setError("deserializePlugin: out of memory");
            return nullptr;
        }
    }

private:
    static std::string read(nvinfer1::PluginField const& f, std::string const& key, Config& cfg) {
        using nvinfer1::PluginFieldType;
        auto ints = [&f](std::vector<int32_t>& out) -> std::string {
            if (f.type != PluginFieldType::kINT32) return "must be int32";
            auto const* v = static_cast<int32_t const*>(f.data);
            out.assign(v, v + f.length);
            return {};
        };
        auto floats = [&f](std::vector<float>& out) -> std::string {
            if (f.type != PluginFieldType::kFLOAT32) return "must be float32";
            auto const* v = static_cast<float const*>(f.data);
            out.assign(v, v + f.length);
            return {};
        };
        std::vector<int32_t> iv;
        std::vector<float> fv;
        std::string err;
        if (key == "strides") return ints(cfg.strides);
        if (key == "anchors") return floats(cfg.anchors);
        if (key == "layout" || key == "nc" || key == "extra" || key == "na" || key == "nl" || key == "max_det"
            || key == "topk") {
            if (!(err = ints(iv)).empty()) return err;
            if (iv.size() != 1) return "must be one value";
            int32_t& dst = key == "layout" ? cfg.layout : key == "nc" ? cfg.nc : key == "extra" ? cfg.extra
                : key == "na" ? cfg.na : key == "nl" ? cfg.nl : key == "max_det" ? cfg.max_det : cfg.topk;
            dst = iv[0];
            return {};
        }
        if (key == "conf_thres" || key == "iou_thres") {
            if (!(err = floats(fv)).empty()) return err;
            if (fv.size() != 1) return "must be one value";
            (key == "conf_thres" ? cfg.conf_thres : cfg.iou_thres) = fv[0];
            return {};
        }
        return "unknown field";
    }

    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mCollection{};
    std::string mNamespace;
};

} // namespace
} // namespace netdef

using netdef::YoloDecodeNmsCreator;
REGISTER_TENSORRT_PLUGIN(YoloDecodeNmsCreator);

extern "C" {

// The last error message of this library's plugins ("" if none), for netdef's Python error messages.
__attribute__((visibility("default"))) char const* netdef_plugin_last_error() {
    std::lock_guard<std::mutex> lock(netdef::gErrorMutex);
    return netdef::gLastError.c_str();
}

} // extern "C"
