// omni_core.h: the model-independent GGML runtime every generated policy links (OmniModel.cpp).
//
// An architecture's graph file (omnimodel/archs/<arch>/graph.cpp.j2, rendered next to this file)
// includes this header, the generated name table (omni_names.h) and its skills, and defines one
// omni_model: how to read its hyper-parameters and weights from the GGUF, and how to build its
// forward pass from skills. Everything else lives here and in omni_core.cpp: opening and
// bounds-checking the GGUF, mmap, backends and the CPU/GPU layer split, the scheduler, running a
// graph, persistent backend tensors (KV caches), per-module dispatch and the C API.

#ifndef OMNI_CORE_H
#define OMNI_CORE_H

#include "omnimodel_policy.h"

#include "ggml.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "gguf.h"

#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <regex>
#include <stdexcept>
#include <string>
#include <vector>

// An error with the omni_status the C API returns for it.
struct omni_error : std::runtime_error {
    int code;
    omni_error(int c, const std::string & msg) : std::runtime_error(msg), code(c) {}
};

struct graph_opts {
    bool flash_attn = false;
};

// Every GGUF tensor under a role's prefix by its name after the prefix (`proprio.ls.scale_factor`
// -> "ls.scale_factor"): a graph function (a skill or LLM-written) reads parameter names it alone
// knows through get() without a change to the arch's graph file.
struct named_tensors {
    std::string prefix;
    std::map<std::string, ggml_tensor *> t;
    bool has(const std::string & n) const { return t.count(n) != 0; }
    ggml_tensor * get(const std::string & n) const {
        auto it = t.find(n);
        if (it == t.end()) throw omni_error(OMNI_ERR_FORMAT, "model.gguf lacks tensor " + prefix + n + "; re-convert the model");
        return it->second;
    }
};

// Hyper-parameters of the two block families skills share (a ViT tower, a decoder-only LLM).
struct vit_hparams {
    int   n_embd = 0, n_head = 0, n_layer = 0, n_ff = 0;
    int   patch = 14, image = 224, n_registers = 0;
    bool  class_token = false, layer_scale = false;
    float eps = 1e-6f;
    float mean[3] = {0.5f, 0.5f, 0.5f}, std[3] = {0.5f, 0.5f, 0.5f};

    int n_patches() const { return (image / patch) * (image / patch); }
    int n_prefix()  const { return (class_token ? 1 : 0) + n_registers; }
    int n_used()    const { return n_layer - 1; }  // blocks 0..depth-2: the second-to-last output
};

struct llm_hparams {
    int   n_embd = 0, n_head = 0, n_head_kv = 0, n_layer = 0, n_vocab = 0, n_ctx_orig = 2048;
    float eps = 1e-6f, rope_base = 10000.0f;
    int   bos = 1, stop = 2, placeholder = 1;
};

// ----------------------------------------------------------------------------- shared graph pieces

// Norm weights, biases and LayerScale may be stored in any type; the graph adds them in F32.
static inline ggml_tensor * to_f32(ggml_context * ctx, ggml_tensor * t) {
    return t->type == GGML_TYPE_F32 ? t : ggml_cast(ctx, t, GGML_TYPE_F32);
}

// y = W x (+ b); W may be any GGML type, x is F32 with the input features in ne[0].
static inline ggml_tensor * linear(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b) {
    ggml_tensor * cur = ggml_mul_mat(ctx, w, x);
    return b ? ggml_add(ctx, cur, to_f32(ctx, b)) : cur;
}

static inline ggml_tensor * layer_norm(ggml_context * ctx, ggml_tensor * x, ggml_tensor * w, ggml_tensor * b, float eps) {
    ggml_tensor * cur = ggml_norm(ctx, x, eps);
    cur = ggml_mul(ctx, cur, to_f32(ctx, w));
    return ggml_add(ctx, cur, to_f32(ctx, b));
}

// Multi-head attention; kq_mask nullptr = every token sees every key. Q: [head_dim, n_head,
// n_q, batch]; K, V: [head_dim, n_head_kv, n_kv, batch] (n_kv may exceed n_q: a KV cache);
// kq_mask: additive F32 [n_kv, n_q] -> [head_dim * n_head, n_q, batch].
ggml_tensor * attention(ggml_context * ctx, ggml_tensor * Q, ggml_tensor * K, ggml_tensor * V, float scale,
                        const graph_opts & opt, ggml_tensor * kq_mask = nullptr);

// A required tensor: a one-line error naming what needs it when the GGUF lacks it.
void need(const ggml_tensor * t, const char * what);

// ----------------------------------------------------------------------------- the runtime

struct omni_core {
    omni_params      params{};
    int              n_threads = 1;
    graph_opts       opt;
    std::string      path;

    gguf_context *   gguf = nullptr;
    ggml_context *   ctx_w = nullptr;  // tensor metadata of every weight
    void *           map_addr = nullptr;
    size_t           map_size = 0;
    std::vector<ggml_backend_buffer_t> buffers;
    ggml_backend_t   backend_cpu = nullptr;
    ggml_backend_t   backend_gpu = nullptr;
    ggml_backend_sched_t sched = nullptr;
    std::vector<uint8_t> compute_meta;

    // The CPU/GPU split: n_gpu_layers counts the model's repeated blocks; layer_of tells a
    // tensor's block (-1: not a block, placed on the GPU only when everything is).
    int n_layer = 0;
    std::function<int(const char *)> layer_of;

    // Wall time of each graph run of the last omni_predict* call, by stage label (run_graph's).
    std::vector<std::pair<std::string, double>> timings;

    omni_core() = default;
    omni_core(const omni_core &) = delete;
    omni_core & operator=(const omni_core &) = delete;
    ~omni_core();

    // Metadata; keys are complete (the name table's KEY_* constants).
    bool                has(const std::string & key) const;
    double              num(const std::string & key, double fallback) const;
    double              num_req(const std::string & key) const;
    std::vector<double> nums(const std::string & key) const;
    std::vector<float>  floats(const std::string & key) const;
    std::string         str(const std::string & key, const std::string & fallback = "") const;

    ggml_tensor * tensor(const std::string & name) const;  // nullptr when absent
    void collect(named_tensors & nt, const std::string & prefix) const;  // every tensor under prefix

    bool on_gpu(int il) const;  // whether block il's weights (and its state) live on the GPU

    // Allocate every tensor of `ctx` (created with no_alloc) in one buffer kept for the policy's
    // life, on the GPU when `gpu` and a GPU is in use, zero-filled: persistent state such as a KV cache.
    void alloc_state(ggml_context * ctx, bool gpu);
};

// One graph evaluation: build() creates inputs with input() and returns the output tensor;
// nodes that must run without feeding the output (writes into a KV cache) go through expand().
struct graph_run {
    ggml_context * ctx = nullptr;
    ggml_cgraph *  gf = nullptr;
    ggml_tensor *  out = nullptr;
    std::vector<std::pair<ggml_tensor *, const void *>> inputs;

    ggml_tensor * input(ggml_type type, int n_dims, const int64_t * ne, const void * data, const char * name);
    void expand(ggml_tensor * t) { ggml_build_forward_expand(gf, t); }
};

// `stage` labels the run in C.timings (e.g. "prompt", "decode"): omni_last_timings reports them.
std::vector<float> run_graph(omni_core & C, const std::function<ggml_tensor *(graph_run &)> & build,
                             std::vector<int64_t> * out_ne = nullptr, const char * stage = "forward");

// ----------------------------------------------------------------------------- per-module runs

struct module_result {
    std::vector<float>   data;
    std::vector<int64_t> shape;  // numpy order
};

std::vector<int64_t> ne_of(const omni_tensor & t);  // GGML ne of a numpy-ordered tensor (4 entries)

// omni_run_module's dispatch: module-name patterns of the reference model and their graphs.
struct module_table {
    using fn = std::function<module_result(omni_core &, const std::smatch &, const omni_tensor *, int)>;
    std::vector<std::pair<std::regex, fn>> entries;

    void add(const std::string & pattern, fn f) { entries.emplace_back(std::regex(pattern), std::move(f)); }
    bool knows(const std::string & name) const;
    module_result run(omni_core & C, const std::string & name, const omni_tensor * in, int n_in) const;
};

// ----------------------------------------------------------------------------- the policy boundary

// tf.image.crop_and_resize (bilinear) of the centred box of `area` (LIBERO evals: 0.9), in float32,
// back to uint8 by truncating x * 255.5 (tf.image.convert_image_dtype with saturation). HWC, 3 channels.
void omni_center_crop(const uint8_t * src, uint8_t * dst, int H, int W, float area);

// ----------------------------------------------------------------------------- the prompt (omni_text.cpp)

// The generic prompt keys (omnimodel/ggufio/constants.py Keys.Omnimodel). The template's
// "{instruction}" slot takes the instruction (cleaned as openpi does when clean_instruction, then
// lower-cased when lowercase_instruction); when prompt.state is true its "{state}" slot takes the
// robot state, which the arch's omni_model::prompt_text writes (e.g. as 256 bins).
static const char * const OMNI_KEY_PROMPT_TEMPLATE  = "omnimodel.prompt.template";
static const char * const OMNI_KEY_PROMPT_LOWERCASE = "omnimodel.prompt.lowercase_instruction";
static const char * const OMNI_KEY_PROMPT_CLEAN     = "omnimodel.prompt.clean_instruction";
static const char * const OMNI_KEY_PROMPT_END_TOKEN = "omnimodel.prompt.end_token";
static const char * const OMNI_KEY_PROMPT_STATE     = "omnimodel.prompt.state";

// The GGUF's tokenizer (llama.cpp's vocabulary, loaded vocab-only) and the arch's prompt template.
struct omni_text;
omni_text *          omni_text_load(const omni_core & C, int n_vocab);  // nullptr when the GGUF has no tokenizer
void                 omni_text_free(omni_text * T);
// The template with the instruction in its slot and each (placeholder, value) of `fields` in theirs.
std::string          omni_text_fill(const omni_text & T, const char * instruction,
                                    const std::vector<std::pair<std::string, std::string>> & fields = {});
std::vector<int32_t> omni_text_tokens(const omni_text & T, const std::string & text);  // BOS first, end token last
std::vector<int32_t> omni_text_prompt(const omni_text & T, const char * instruction);  // fill, then tokens

// ----------------------------------------------------------------------------- an architecture

// What an arch's graph file implements; omni_core.cpp's C API calls nothing else.
struct omni_model {
    module_table modules;

    virtual ~omni_model() = default;
    // Before the weights are placed: read hyper-parameters, find tensors, set C.n_layer/C.layer_of.
    virtual void init(omni_core & C) = 0;
    // After: allocate persistent state (C.alloc_state).
    virtual void ready(omni_core & C) { (void) C; }

    virtual int n_images() const = 0;
    virtual int image_size() const = 0;
    virtual int state_dim() const = 0;
    virtual int action_chunk() const = 0;
    virtual int action_dim() const = 0;
    virtual int n_vocab() const = 0;
    virtual int bos() const = 0;

    // uint8 HWC images + raw state + token ids -> un-normalised actions (chunk x dim).
    virtual void predict(omni_core & C, const uint8_t * images, int n_images, const float * state, int n_state,
                         const int32_t * ids, int n_ids, float * actions) = 0;
    // processor output + normalised state -> normalised actions.
    virtual void predict_raw(omni_core & C, const float * pixel_values, int n_images, const float * state, int n_state,
                             const int32_t * ids, int n_ids, float * actions) = 0;
    // The prompt text of one step (omni_predict_text, omni_prompt_tokens*) from the instruction and
    // the raw state (state may be NULL). Default: the GGUF's template around the instruction; an
    // arch whose prompt carries the state (prompt.state) overrides it to fill "{state}".
    virtual std::string prompt_text(const omni_text & T, const char * instruction, const float * state, int n_state) const {
        (void) state; (void) n_state;
        return omni_text_fill(T, instruction);
    }
    // A new episode (omni_reset): a sampling policy restarts its noise stream from `seed`, so an
    // episode's draws depend on its seed alone. Deterministic policies ignore it.
    virtual void reset(uint64_t seed) { (void) seed; }
};

// Defined by the arch's graph file.
extern const char * const OMNI_ARCH;
omni_model * omni_new_model();

#endif  // OMNI_CORE_H
