// omni_core.cpp: the model-independent half of every generated policy (see omni_core.h).

#include "omni_core.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <memory>
#include <sys/mman.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

static const int GRAPH_SIZE = 16384;

// ----------------------------------------------------------------------------- graph pieces

ggml_tensor * attention(ggml_context * ctx, ggml_tensor * Q, ggml_tensor * K, ggml_tensor * V, float scale,
                        const graph_opts & opt, ggml_tensor * kq_mask) {
    const int64_t head_dim = Q->ne[0], n_head = Q->ne[1], n_tokens = Q->ne[2], batch = Q->ne[3];
    ggml_tensor * q = ggml_permute(ctx, Q, 0, 2, 1, 3);  // [head_dim, n_q, n_head, batch]
    ggml_tensor * k = ggml_permute(ctx, K, 0, 2, 1, 3);  // [head_dim, n_kv, n_head_kv, batch]
    ggml_tensor * cur;
    if (opt.flash_attn) {
        ggml_tensor * v = ggml_permute(ctx, V, 0, 2, 1, 3);
        // K/V in F16 as llama.cpp's cache keeps them; every backend's kernel takes that.
        k = ggml_cast(ctx, k, GGML_TYPE_F16);
        v = ggml_cast(ctx, v, GGML_TYPE_F16);
        ggml_tensor * mask = kq_mask ? ggml_cast(ctx, kq_mask, GGML_TYPE_F16) : nullptr;
        cur = ggml_flash_attn_ext(ctx, q, k, v, mask, scale, 0.0f, 0.0f);
        ggml_prec_set_acc(cur, GGML_PREC_F32);  // [head_dim, n_head, n_q, batch]
    } else {
        ggml_tensor * kq = ggml_mul_mat(ctx, k, q);  // [n_kv, n_q, n_head, batch]
        kq = ggml_soft_max_ext(ctx, kq, kq_mask, scale, 0.0f);
        ggml_tensor * v = ggml_cont(ctx, ggml_permute(ctx, V, 1, 2, 0, 3));  // [n_kv, head_dim, n_head_kv, batch]
        cur = ggml_mul_mat(ctx, v, kq);                                      // [head_dim, n_q, n_head, batch]
        cur = ggml_cont(ctx, ggml_permute(ctx, cur, 0, 2, 1, 3));             // [head_dim, n_head, n_q, batch]
    }
    return ggml_reshape_3d(ctx, cur, head_dim * n_head, n_tokens, batch);
}

void need(const ggml_tensor * t, const char * what) {
    if (!t) throw omni_error(OMNI_ERR_FORMAT, std::string("model.gguf lacks a tensor needed by ") + what + "; re-convert it");
}

// ----------------------------------------------------------------------------- metadata

omni_core::~omni_core() {
    if (sched) ggml_backend_sched_free(sched);
    for (auto b : buffers) ggml_backend_buffer_free(b);
    if (backend_gpu) ggml_backend_free(backend_gpu);
    if (backend_cpu) ggml_backend_free(backend_cpu);
    if (map_addr) munmap(map_addr, map_size);
    if (ctx_w) ggml_free(ctx_w);
    if (gguf) gguf_free(gguf);
}

static double kv_number(const gguf_context * g, int64_t id) {
    const void * p = gguf_get_val_data(g, id);
    switch (gguf_get_kv_type(g, id)) {
        case GGUF_TYPE_UINT8:   return *(const uint8_t  *) p;
        case GGUF_TYPE_INT8:    return *(const int8_t   *) p;
        case GGUF_TYPE_UINT16:  return *(const uint16_t *) p;
        case GGUF_TYPE_INT16:   return *(const int16_t  *) p;
        case GGUF_TYPE_UINT32:  return *(const uint32_t *) p;
        case GGUF_TYPE_INT32:   return *(const int32_t  *) p;
        case GGUF_TYPE_UINT64:  return (double) *(const uint64_t *) p;
        case GGUF_TYPE_INT64:   return (double) *(const int64_t  *) p;
        case GGUF_TYPE_FLOAT32: return *(const float    *) p;
        case GGUF_TYPE_FLOAT64: return *(const double   *) p;
        case GGUF_TYPE_BOOL:    return *(const int8_t   *) p ? 1.0 : 0.0;
        default: throw omni_error(OMNI_ERR_FORMAT, std::string("metadata key ") + gguf_get_key(g, id) + " is not a number");
    }
}

bool omni_core::has(const std::string & key) const { return gguf_find_key(gguf, key.c_str()) >= 0; }

double omni_core::num(const std::string & key, double fallback) const {
    const int64_t id = gguf_find_key(gguf, key.c_str());
    if (id < 0) return fallback;
    const double v = kv_number(gguf, id);
    if (!std::isfinite(v)) throw omni_error(OMNI_ERR_FORMAT, "GGUF metadata key " + key + " is not finite; re-convert the model");
    return v;
}

double omni_core::num_req(const std::string & key) const {
    if (!has(key)) throw omni_error(OMNI_ERR_FORMAT, "GGUF metadata key " + key + " missing; re-convert the model with `omnimodel port`");
    return num(key, 0.0);
}

std::vector<double> omni_core::nums(const std::string & key) const {
    std::vector<double> out;
    const int64_t id = gguf_find_key(gguf, key.c_str());
    if (id < 0) return out;
    if (gguf_get_kv_type(gguf, id) != GGUF_TYPE_ARRAY) throw omni_error(OMNI_ERR_FORMAT, key + " is not an array");
    const size_t n = gguf_get_arr_n(gguf, id);
    const enum gguf_type type = gguf_get_arr_type(gguf, id);
    if (type == GGUF_TYPE_STRING || type == GGUF_TYPE_ARRAY) throw omni_error(OMNI_ERR_FORMAT, key + ": unsupported array element type");
    const void * p = gguf_get_arr_data(gguf, id);
    out.reserve(n);
    for (size_t i = 0; i < n; i++) {
        switch (type) {
            case GGUF_TYPE_FLOAT32: out.push_back(((const float   *) p)[i]); break;
            case GGUF_TYPE_FLOAT64: out.push_back(((const double  *) p)[i]); break;
            case GGUF_TYPE_INT32:   out.push_back(((const int32_t *) p)[i]); break;
            case GGUF_TYPE_UINT32:  out.push_back(((const uint32_t*) p)[i]); break;
            case GGUF_TYPE_INT8:    out.push_back(((const int8_t  *) p)[i]); break;
            case GGUF_TYPE_UINT8:   out.push_back(((const uint8_t *) p)[i]); break;
            case GGUF_TYPE_BOOL:    out.push_back(((const int8_t  *) p)[i] ? 1.0 : 0.0); break;
            default: throw omni_error(OMNI_ERR_FORMAT, key + ": unsupported array element type");
        }
    }
    return out;
}

std::vector<float> omni_core::floats(const std::string & key) const {
    std::vector<float> v;
    for (double x : nums(key)) v.push_back((float) x);
    return v;
}

std::string omni_core::str(const std::string & key, const std::string & fallback) const {
    const int64_t id = gguf_find_key(gguf, key.c_str());
    if (id < 0) return fallback;
    if (gguf_get_kv_type(gguf, id) != GGUF_TYPE_STRING) throw omni_error(OMNI_ERR_FORMAT, key + " is not a string");
    return gguf_get_val_str(gguf, id);
}

ggml_tensor * omni_core::tensor(const std::string & name) const { return ggml_get_tensor(ctx_w, name.c_str()); }

void omni_core::collect(named_tensors & nt, const std::string & prefix) const {
    nt.prefix = prefix;
    for (ggml_tensor * t = ggml_get_first_tensor(ctx_w); t; t = ggml_get_next_tensor(ctx_w, t)) {
        const std::string n = t->name;
        if (n.compare(0, prefix.size(), prefix) == 0) nt.t[n.substr(prefix.size())] = t;
    }
}

bool omni_core::on_gpu(int il) const {
    const int ngl = params.n_gpu_layers;
    if (!backend_gpu || ngl == 0) return false;
    if (ngl < 0 || ngl >= n_layer) return true;
    return il >= 0 && il >= n_layer - ngl;
}

void omni_core::alloc_state(ggml_context * ctx, bool gpu) {
    ggml_backend_t be = gpu && backend_gpu ? backend_gpu : backend_cpu;
    ggml_backend_buffer_t buf = ggml_backend_alloc_ctx_tensors(ctx, be);
    if (!buf) throw omni_error(OMNI_ERR_BACKEND, std::string("cannot allocate the policy's state on ") + ggml_backend_name(be));
    ggml_backend_buffer_clear(buf, 0);
    buffers.push_back(buf);
}

// ----------------------------------------------------------------------------- loading

// Every tensor's data must lie inside the file: gguf_init_from_file does not read the data
// section (no_alloc), so a truncated file is caught here, naming the tensor.
static void check_tensor_bounds(const omni_core & C, size_t file_size) {
    const size_t data = gguf_get_data_offset(C.gguf);
    if (data > file_size) throw omni_error(OMNI_ERR_FORMAT, C.path + ": truncated before the tensor data (byte " + std::to_string(file_size) + "); re-convert the model");
    const int64_t n = gguf_get_n_tensors(C.gguf);
    for (int64_t i = 0; i < n; i++) {
        const char * name = gguf_get_tensor_name(C.gguf, i);
        const size_t off = gguf_get_tensor_offset(C.gguf, i), nbytes = gguf_get_tensor_size(C.gguf, i);
        if (off > file_size - data || nbytes > file_size - data - off) {
            throw omni_error(OMNI_ERR_FORMAT, C.path + ": truncated at byte " + std::to_string(file_size) + ", tensor " + name +
                                                  " needs bytes up to " + std::to_string(data + off + nbytes) + "; re-convert the model");
        }
    }
}

static void init_backends(omni_core & C) {
    C.backend_cpu = ggml_backend_cpu_init();
    if (!C.backend_cpu) throw omni_error(OMNI_ERR_BACKEND, "cannot initialise the CPU backend");
    ggml_backend_cpu_set_n_threads(C.backend_cpu, C.n_threads);
    if (C.params.n_gpu_layers != 0) {
        ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_GPU);
        if (!dev) throw omni_error(OMNI_ERR_BACKEND, "n_gpu_layers set but this GGML build has no GPU backend; rebuild GGML with CUDA or pass n_gpu_layers=0");
        C.backend_gpu = ggml_backend_dev_init(dev, nullptr);
        if (!C.backend_gpu) throw omni_error(OMNI_ERR_BACKEND, "cannot initialise the GPU backend");
    }
}

// Copy a set of tensors from the mapped file into one buffer of `buft`.
static void upload(omni_core & C, ggml_backend_buffer_type_t buft, const std::vector<ggml_tensor *> & ts, const uint8_t * data) {
    if (ts.empty()) return;
    const size_t align = ggml_backend_buft_get_alignment(buft);
    size_t total = 0;
    for (auto t : ts) total += GGML_PAD(ggml_backend_buft_get_alloc_size(buft, t), align);
    ggml_backend_buffer_t buf = ggml_backend_buft_alloc_buffer(buft, total);
    if (!buf) throw omni_error(OMNI_ERR_BACKEND, "cannot allocate " + std::to_string(total >> 20) + " MiB of weights on " + ggml_backend_buft_name(buft));
    ggml_backend_buffer_set_usage(buf, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
    C.buffers.push_back(buf);
    ggml_tallocr alloc = ggml_tallocr_new(buf);
    for (auto t : ts) {
        if (ggml_tallocr_alloc(&alloc, t) != GGML_STATUS_SUCCESS) throw omni_error(OMNI_ERR_BACKEND, std::string("cannot place ") + t->name);
        const int64_t id = gguf_find_tensor(C.gguf, t->name);
        ggml_backend_tensor_set(t, data + gguf_get_tensor_offset(C.gguf, id), 0, ggml_nbytes(t));
    }
}

static void load_tensors(omni_core & C) {
    const int fd = open(C.path.c_str(), O_RDONLY);
    if (fd < 0) throw omni_error(OMNI_ERR_IO, "cannot open " + C.path);
    struct stat st{};
    if (fstat(fd, &st) != 0) { close(fd); throw omni_error(OMNI_ERR_IO, "cannot stat " + C.path); }
    C.map_size = (size_t) st.st_size;
    check_tensor_bounds(C, C.map_size);
    C.map_addr = mmap(nullptr, C.map_size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (C.map_addr == MAP_FAILED) { C.map_addr = nullptr; throw omni_error(OMNI_ERR_IO, "cannot mmap " + C.path); }
    const uint8_t * data = (const uint8_t *) C.map_addr + gguf_get_data_offset(C.gguf);

    std::vector<ggml_tensor *> cpu, gpu;
    for (ggml_tensor * t = ggml_get_first_tensor(C.ctx_w); t; t = ggml_get_next_tensor(C.ctx_w, t)) {
        const int il = C.layer_of ? C.layer_of(t->name) : -1;
        const bool g = C.backend_gpu && (il >= 0 ? C.on_gpu(il) : (C.params.n_gpu_layers < 0 || C.params.n_gpu_layers >= C.n_layer));
        (g ? gpu : cpu).push_back(t);
    }
    if (C.backend_gpu) upload(C, ggml_backend_get_default_buffer_type(C.backend_gpu), gpu, data);
    if (C.params.use_mmap) {
        // CPU weights stay in the page cache: one buffer over the whole mapping.
        ggml_backend_buffer_t buf = ggml_backend_cpu_buffer_from_ptr(C.map_addr, C.map_size);
        if (!buf) throw omni_error(OMNI_ERR_BACKEND, "cannot wrap the mapped file in a CPU buffer");
        ggml_backend_buffer_set_usage(buf, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
        C.buffers.push_back(buf);
        for (auto t : cpu) {
            const int64_t id = gguf_find_tensor(C.gguf, t->name);
            void * addr = (void *) (data + gguf_get_tensor_offset(C.gguf, id));
            if (ggml_backend_tensor_alloc(buf, t, addr) != GGML_STATUS_SUCCESS) throw omni_error(OMNI_ERR_BACKEND, std::string("cannot map ") + t->name);
        }
    } else {
        upload(C, ggml_backend_cpu_buffer_type(), cpu, data);
        munmap(C.map_addr, C.map_size);
        C.map_addr = nullptr;
    }
    if (C.map_addr && !gpu.empty() && cpu.empty()) { munmap(C.map_addr, C.map_size); C.map_addr = nullptr; }
}

static void init_scheduler(omni_core & C) {
    std::vector<ggml_backend_t> backends;
    if (C.backend_gpu) backends.push_back(C.backend_gpu);
    backends.push_back(C.backend_cpu);  // the CPU comes last: it takes what the GPU cannot
    C.sched = ggml_backend_sched_new(backends.data(), nullptr, (int) backends.size(), GRAPH_SIZE, false, false);
    if (!C.sched) throw omni_error(OMNI_ERR_BACKEND, "cannot create the backend scheduler");
    C.compute_meta.resize(ggml_tensor_overhead() * GRAPH_SIZE + ggml_graph_overhead_custom(GRAPH_SIZE, false));
}

// ----------------------------------------------------------------------------- graph running

ggml_tensor * graph_run::input(ggml_type type, int n_dims, const int64_t * ne, const void * data, const char * name) {
    ggml_tensor * t = ggml_new_tensor(ctx, type, n_dims, ne);
    ggml_set_name(t, name);
    ggml_set_input(t);
    inputs.push_back({t, data});
    return t;
}

std::vector<float> run_graph(omni_core & C, const std::function<ggml_tensor *(graph_run &)> & build, std::vector<int64_t> * out_ne,
                             const char * stage) {
    const auto t0 = std::chrono::steady_clock::now();
    ggml_init_params ip = {C.compute_meta.size(), C.compute_meta.data(), true};
    graph_run R;
    R.ctx = ggml_init(ip);
    R.gf = ggml_new_graph_custom(R.ctx, GRAPH_SIZE, false);
    try {
        R.out = build(R);
        ggml_set_output(R.out);
        ggml_build_forward_expand(R.gf, R.out);
        ggml_backend_sched_reset(C.sched);
        if (!ggml_backend_sched_alloc_graph(C.sched, R.gf)) throw omni_error(OMNI_ERR_COMPUTE, "cannot allocate the compute graph (out of memory?)");
        for (auto & in : R.inputs) ggml_backend_tensor_set(in.first, in.second, 0, ggml_nbytes(in.first));
        if (ggml_backend_sched_graph_compute(C.sched, R.gf) != GGML_STATUS_SUCCESS) throw omni_error(OMNI_ERR_COMPUTE, "graph computation failed");
        std::vector<float> out(ggml_nelements(R.out));
        ggml_backend_tensor_get(R.out, out.data(), 0, ggml_nbytes(R.out));
        if (out_ne) out_ne->assign(R.out->ne, R.out->ne + 4);
        ggml_backend_sched_reset(C.sched);
        ggml_free(R.ctx);
        C.timings.emplace_back(stage, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
        return out;
    } catch (...) {
        ggml_backend_sched_reset(C.sched);
        ggml_free(R.ctx);
        throw;
    }
}

std::vector<int64_t> ne_of(const omni_tensor & t) {
    std::vector<int64_t> ne(4, 1);
    for (int i = 0; i < t.n_dims; i++) ne[i] = t.shape[t.n_dims - 1 - i];
    return ne;
}

bool module_table::knows(const std::string & name) const {
    for (const auto & e : entries) {
        if (std::regex_match(name, e.first)) return true;
    }
    return false;
}

module_result module_table::run(omni_core & C, const std::string & name, const omni_tensor * in, int n_in) const {
    if (n_in < 1 || !in || !in[0].data || in[0].n_dims < 1 || in[0].n_dims > 4) throw omni_error(OMNI_ERR_INVALID_ARGUMENT, name + ": expects at least one input tensor of 1 to 4 dimensions");
    for (int i = 0; i < n_in; i++) {
        if (!in[i].data || in[i].n_dims < 1 || in[i].n_dims > 4) throw omni_error(OMNI_ERR_INVALID_ARGUMENT, name + ": input " + std::to_string(i) + " is not a 1- to 4-dimensional tensor");
        for (int d = 0; d < in[i].n_dims; d++) {
            if (in[i].shape[d] < 1) throw omni_error(OMNI_ERR_INVALID_ARGUMENT, name + ": input " + std::to_string(i) + " has an empty dimension");
        }
    }
    std::smatch m;
    for (const auto & e : entries) {
        if (std::regex_match(name, m, e.first)) return e.second(C, m, in, n_in);
    }
    throw omni_error(OMNI_ERR_UNKNOWN_MODULE, "no graph for module " + name);
}

// ----------------------------------------------------------------------------- policy boundary

void omni_center_crop(const uint8_t * src, uint8_t * dst, int H, int W, float area) {
    const float scale = std::sqrt(area);
    const float y1 = (1.0f - scale) / 2.0f, x1 = y1;
    const float y2 = (1.0f + scale) / 2.0f, x2 = y2;
    const float inv255 = (float) (1.0 / 255.0);
    const float hs = (y2 - y1) * (float) (H - 1) / (float) (H - 1);
    const float ws = (x2 - x1) * (float) (W - 1) / (float) (W - 1);
    for (int y = 0; y < H; y++) {
        const float in_y = y1 * (float) (H - 1) + (float) y * hs;
        const int top = (int) std::floor(in_y), bot = (int) std::ceil(in_y);
        const float yl = in_y - (float) top;
        for (int x = 0; x < W; x++) {
            const float in_x = x1 * (float) (W - 1) + (float) x * ws;
            const int left = (int) std::floor(in_x), right = (int) std::ceil(in_x);
            const float xl = in_x - (float) left;
            for (int c = 0; c < 3; c++) {
                auto px = [&](int yy, int xx) { return (float) src[((size_t) yy * W + xx) * 3 + c] * inv255; };
                const float t = px(top, left) + (px(top, right) - px(top, left)) * xl;
                const float b = px(bot, left) + (px(bot, right) - px(bot, left)) * xl;
                float v = t + (b - t) * yl;
                v = std::min(1.0f, std::max(0.0f, v));
                dst[((size_t) y * W + x) * 3 + c] = (uint8_t) (v * 255.5f);
            }
        }
    }
}

// ----------------------------------------------------------------------------- C API

struct omni_policy {
    omni_core                   core;
    std::unique_ptr<omni_model> model;
    omni_text *                 text = nullptr;  // nullptr: the GGUF carries no tokenizer
    omni_policy() = default;
    omni_policy(const omni_policy &) = delete;
    omni_policy & operator=(const omni_policy &) = delete;
    ~omni_policy() { omni_text_free(text); }
};

static thread_local std::string g_last_error;

template <typename F>
static int guarded(F f) {
    try {
        f();
        g_last_error.clear();
        return OMNI_OK;
    } catch (const omni_error & e) {
        g_last_error = e.what();
        return e.code;
    } catch (const std::bad_alloc &) {
        g_last_error = "out of memory";
        return OMNI_ERR_COMPUTE;
    } catch (const std::exception & e) {
        g_last_error = e.what();
        return OMNI_ERR_INTERNAL;
    } catch (...) {
        g_last_error = "unknown error";
        return OMNI_ERR_INTERNAL;
    }
}

extern "C" {

omni_params omni_default_params(void) {
    omni_params p;
    p.n_threads = 0;
    p.n_gpu_layers = 0;
    p.flash_attn = -1;
    p.center_crop = 1;
    p.use_mmap = 1;
    return p;
}

const char * omni_last_error(void) { return g_last_error.c_str(); }

const char * omni_arch(void) { return OMNI_ARCH; }

omni_policy * omni_load(const char * gguf_path, const omni_params * params) {
    omni_policy * out = nullptr;
    guarded([&] {
        if (!gguf_path) throw omni_error(OMNI_ERR_INVALID_ARGUMENT, "omni_load: gguf_path is NULL");
        auto P = std::make_unique<omni_policy>();
        omni_core & C = P->core;
        C.path = gguf_path;
        C.params = params ? *params : omni_default_params();
        C.n_threads = C.params.n_threads > 0 ? C.params.n_threads : (int) std::max(1u, std::thread::hardware_concurrency());
        gguf_init_params gp = {true, &C.ctx_w};
        C.gguf = gguf_init_from_file(gguf_path, gp);
        if (!C.gguf) throw omni_error(OMNI_ERR_IO, std::string(gguf_path) + ": not a readable GGUF file (missing, truncated or corrupt)");
        const std::string arch = C.str("general.architecture");
        if (arch != OMNI_ARCH) {
            throw omni_error(OMNI_ERR_FORMAT, std::string(gguf_path) + " holds a " + (arch.empty() ? "model of no named" : arch) +
                                                  " architecture; this library runs " + OMNI_ARCH + " (port the model with its own arch)");
        }
        P->model.reset(omni_new_model());
        P->model->init(C);
        init_backends(C);
        C.opt.flash_attn = C.params.flash_attn < 0 ? C.backend_gpu != nullptr : C.params.flash_attn != 0;
        load_tensors(C);
        init_scheduler(C);
        P->model->ready(C);
        P->text = omni_text_load(C, P->model->n_vocab());  // after load_tensors checked the file's extent
        out = P.release();
    });
    return out;
}

void omni_free(omni_policy * policy) { delete policy; }

int omni_reset(omni_policy * P, uint64_t seed) {
    return guarded([&] {
        if (!P) throw omni_error(OMNI_ERR_INVALID_ARGUMENT, "omni_reset: policy is NULL");
        P->model->reset(seed);
    });
}

int omni_n_images(const omni_policy * p)     { return p ? p->model->n_images() : 0; }
int omni_image_size(const omni_policy * p)   { return p ? p->model->image_size() : 0; }
int omni_proprio_dim(const omni_policy * p)  { return p ? p->model->state_dim() : 0; }
int omni_action_chunk(const omni_policy * p) { return p ? p->model->action_chunk() : 0; }
int omni_action_dim(const omni_policy * p)   { return p ? p->model->action_dim() : 0; }

static void check_step_args(const omni_policy * P, const void * images, int n_images, const float * proprio, int n_proprio,
                            const int32_t * ids, int n_tokens, const float * out) {
    if (!P || !images || (n_proprio > 0 && !proprio) || !ids || !out) throw omni_error(OMNI_ERR_INVALID_ARGUMENT, "omni_predict: NULL argument");
    if (n_images < 1 || n_images > 16) throw omni_error(OMNI_ERR_INVALID_ARGUMENT, "omni_predict: n_images must be 1..16, got " + std::to_string(n_images));
    const omni_model & M = *P->model;
    if (n_proprio != M.state_dim()) throw omni_error(OMNI_ERR_INVALID_ARGUMENT, "omni_predict: proprio has " + std::to_string(n_proprio) + " values, the model expects " + std::to_string(M.state_dim()));
    if (n_tokens < 1 || ids[0] != M.bos()) throw omni_error(OMNI_ERR_INVALID_ARGUMENT, "omni_predict: token_ids must start with BOS");
    for (int i = 0; i < n_tokens; i++) {
        if (ids[i] < 0 || ids[i] >= M.n_vocab()) throw omni_error(OMNI_ERR_INVALID_ARGUMENT, "omni_predict: token id " + std::to_string(ids[i]) + " outside the vocabulary");
    }
}

int omni_predict_raw(omni_policy * P, const float * pixel_values, int n_images, const float * proprio, int n_proprio,
                     const int32_t * token_ids, int n_tokens, float * actions_out) {
    return guarded([&] {
        check_step_args(P, pixel_values, n_images, proprio, n_proprio, token_ids, n_tokens, actions_out);
        P->core.timings.clear();
        P->model->predict_raw(P->core, pixel_values, n_images, proprio, n_proprio, token_ids, n_tokens, actions_out);
    });
}

int omni_predict(omni_policy * P, const uint8_t * images, int n_images, const float * proprio, int n_proprio,
                 const int32_t * token_ids, int n_tokens, float * actions_out) {
    return guarded([&] {
        check_step_args(P, images, n_images, proprio, n_proprio, token_ids, n_tokens, actions_out);
        P->core.timings.clear();
        P->model->predict(P->core, images, n_images, proprio, n_proprio, token_ids, n_tokens, actions_out);
    });
}

static const omni_text & text_of(const omni_policy * P) {
    if (!P) throw omni_error(OMNI_ERR_INVALID_ARGUMENT, "omni_predict_text: policy is NULL");
    if (!P->text) throw omni_error(OMNI_ERR_FORMAT, "model.gguf carries no tokenizer (tokenizer.ggml.*); re-convert it from a checkpoint with its tokenizer files, or pass token ids to omni_predict");
    return *P->text;
}

// The prompt ids of one step: the arch's prompt text (the instruction, and the state where the
// prompt carries it) through the GGUF's tokenizer.
static std::vector<int32_t> prompt_ids(const omni_policy * P, const char * instruction, const float * state, int n_state) {
    const omni_text & T = text_of(P);
    if (n_state < 0 || (n_state > 0 && !state)) throw omni_error(OMNI_ERR_INVALID_ARGUMENT, "omni_prompt_tokens: n_state must be >= 0 with a non-NULL state");
    return omni_text_tokens(T, P->model->prompt_text(T, instruction, state, n_state));
}

static int copy_ids(const std::vector<int32_t> & ids, int32_t * ids_out, int capacity) {
    if (ids_out) std::memcpy(ids_out, ids.data(), sizeof(int32_t) * (size_t) std::min((int) ids.size(), std::max(0, capacity)));
    return (int) ids.size();
}

int omni_prompt_tokens(omni_policy * P, const char * instruction, int32_t * ids_out, int capacity) {
    int n = 0;
    const int rc = guarded([&] { n = copy_ids(prompt_ids(P, instruction, nullptr, 0), ids_out, capacity); });
    return rc == OMNI_OK ? n : rc;
}

int omni_prompt_tokens_state(omni_policy * P, const char * instruction, const float * state, int n_state, int32_t * ids_out, int capacity) {
    int n = 0;
    const int rc = guarded([&] { n = copy_ids(prompt_ids(P, instruction, state, n_state), ids_out, capacity); });
    return rc == OMNI_OK ? n : rc;
}

int omni_predict_text(omni_policy * P, const uint8_t * images, int n_images, const float * state, int n_state,
                      const char * instruction, float * actions_out) {
    return guarded([&] {
        const std::vector<int32_t> ids = prompt_ids(P, instruction, state, n_state);
        check_step_args(P, images, n_images, state, n_state, ids.data(), (int) ids.size(), actions_out);
        P->core.timings.clear();
        P->model->predict(P->core, images, n_images, state, n_state, ids.data(), (int) ids.size(), actions_out);
    });
}

int omni_run_module(omni_policy * P, const char * module_name, const omni_tensor * inputs, int n_inputs,
                    float * out, int64_t out_capacity, int64_t out_shape[4], int * out_n_dims) {
    return guarded([&] {
        if (!P || !module_name || !inputs || !out_shape || !out_n_dims) throw omni_error(OMNI_ERR_INVALID_ARGUMENT, "omni_run_module: NULL argument");
        module_result r = P->model->modules.run(P->core, module_name, inputs, n_inputs);
        if (r.shape.size() > 4) throw omni_error(OMNI_ERR_INTERNAL, std::string(module_name) + ": output has more than 4 dimensions");
        *out_n_dims = (int) r.shape.size();
        for (size_t i = 0; i < r.shape.size(); i++) out_shape[i] = r.shape[i];
        if ((int64_t) r.data.size() > out_capacity || !out) throw omni_error(OMNI_ERR_BUFFER_TOO_SMALL, "omni_run_module: output needs " + std::to_string(r.data.size()) + " floats");
        std::memcpy(out, r.data.data(), r.data.size() * sizeof(float));
    });
}

int omni_last_timings(const omni_policy * policy, const char ** stages, double * ms, int capacity) {
    if (!policy) return 0;
    const auto & T = policy->core.timings;
    for (int i = 0; i < (int) T.size() && i < capacity; i++) {
        if (stages) stages[i] = T[i].first.c_str();
        if (ms) ms[i] = T[i].second;
    }
    return (int) T.size();
}

int omni_has_module(const omni_policy * policy, const char * module_name) {
    return policy && module_name && policy->model->modules.knows(module_name) ? 1 : 0;
}

}  // extern "C"
