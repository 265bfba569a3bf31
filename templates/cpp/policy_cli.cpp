// policy_cli: run, validate and benchmark a generated native policy through its C API (any arch).
//
//   policy_cli run      MODEL.gguf (--inputs IN.gguf | --image A.png [--image B.png] --state v,.. (--instruction TEXT | --tokens id,..)) [--out OUT.gguf]
//   policy_cli validate MODEL.gguf REFERENCE_DIR OUT_DIR
//   policy_cli bench    MODEL.gguf [--inputs IN.gguf] [-n 10] [--warmup 1]
// common options: --threads N  --ngl N  --flash-attn 0|1  --no-crop  --no-mmap
//
// An inputs GGUF (the analyzer's reference/end_to_end.gguf is one) holds `images` (0..255,
// n x S x S x 3), `proprio` (raw) and `token_ids` (I32); with --raw (or without `images`) it runs
// the forward pass alone on `pixel_values` (n x 6 x S x S) and `proprio_norm` and prints normalised
// actions. Images are decoded with stb_image (PNG, JPEG, BMP, PPM; RGB, omni_image_size square);
// --instruction goes through the model's prompt template and tokenizer (omni_predict_text);
// --proprio is --state's other name. Results go to stdout as JSON lines.

#include "omnimodel_policy.h"

#include "ggml.h"
#include "gguf.h"

#define STB_IMAGE_IMPLEMENTATION
#define STBI_FAILURE_USERMSG
#include "stb_image.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <string>
#include <sys/stat.h>
#include <vector>

struct cli_args {
    std::string cmd, model, ref_dir, out_dir, inputs, out, instruction;
    bool has_instruction = false;
    std::vector<std::string> images;
    std::vector<float> proprio;
    std::vector<int32_t> tokens;
    int n_iter = 10, n_warmup = 1;
    bool raw = false;  // --raw: pixel_values + proprio_norm, normalised actions
    omni_params params = omni_default_params();
};

static int usage() {
    std::fprintf(stderr,
                 "usage: policy_cli run MODEL.gguf (--inputs IN.gguf | --image A.png ... --state v,... (--instruction TEXT | --tokens id,...)) [--out OUT.gguf]\n"
                 "       policy_cli validate MODEL.gguf REFERENCE_DIR OUT_DIR\n"
                 "       policy_cli bench MODEL.gguf [--inputs IN.gguf] [-n N] [--warmup N]\n"
                 "options: --threads N --ngl N --flash-attn 0|1 --no-crop --no-mmap --raw\n");
    return 2;
}

static std::string json_escape(const std::string & s) {
    std::string o;
    for (char c : s) {
        if (c == '"' || c == '\\') { o += '\\'; o += c; }
        else if (c == '\n') o += "\\n";
        else if ((unsigned char) c < 0x20) o += ' ';
        else o += c;
    }
    return o;
}

static int fail(const std::string & msg) {
    std::printf("{\"status\": \"error\", \"message\": \"%s\"}\n", json_escape(msg).c_str());
    std::fprintf(stderr, "error: %s\n", msg.c_str());
    return 1;
}

template <typename T>
static std::vector<T> parse_list(const char * s) {
    std::vector<T> out;
    std::string cur;
    for (const char * p = s;; p++) {
        if (*p == ',' || *p == '\0') {
            if (!cur.empty()) out.push_back((T) std::strtod(cur.c_str(), nullptr));
            cur.clear();
            if (*p == '\0') break;
        } else {
            cur += *p;
        }
    }
    return out;
}

static bool parse_args(int argc, char ** argv, cli_args & a) {
    if (argc < 3) return false;
    a.cmd = argv[1];
    a.model = argv[2];
    int i = 3;
    if (a.cmd == "validate") {
        if (argc < 5) return false;
        a.ref_dir = argv[3];
        a.out_dir = argv[4];
        i = 5;
    }
    for (; i < argc; i++) {
        std::string k = argv[i];
        auto next = [&]() -> const char * { return i + 1 < argc ? argv[++i] : nullptr; };
        const char * v = nullptr;
        if (k == "--no-crop") { a.params.center_crop = 0; continue; }
        if (k == "--no-mmap") { a.params.use_mmap = 0; continue; }
        if (k == "--raw") { a.raw = true; continue; }
        if (!(v = next())) return false;
        if (k == "--threads") a.params.n_threads = std::atoi(v);
        else if (k == "--ngl") a.params.n_gpu_layers = std::atoi(v);
        else if (k == "--flash-attn") a.params.flash_attn = std::atoi(v);
        else if (k == "--inputs") a.inputs = v;
        else if (k == "--out") a.out = v;
        else if (k == "--image") a.images.push_back(v);
        else if (k == "--proprio" || k == "--state") a.proprio = parse_list<float>(v);
        else if (k == "--instruction") { a.instruction = v; a.has_instruction = true; }
        else if (k == "--tokens") a.tokens = parse_list<int32_t>(v);
        else if (k == "-n") a.n_iter = std::max(1, std::atoi(v));
        else if (k == "--warmup") a.n_warmup = std::max(0, std::atoi(v));
        else return false;
    }
    return true;
}

// ----------------------------------------------------------------------------- GGUF tensors as float arrays

struct array_f32 {
    std::vector<float>   data;
    std::vector<int64_t> shape;  // numpy order
};

struct gguf_file {
    gguf_context * g = nullptr;
    ggml_context * ctx = nullptr;
    explicit gguf_file(const std::string & path) {
        gguf_init_params p = {false, &ctx};
        g = gguf_init_from_file(path.c_str(), p);
    }
    ~gguf_file() {
        if (ctx) ggml_free(ctx);
        if (g) gguf_free(g);
    }
    ggml_tensor * tensor(const char * name) const { return ctx ? ggml_get_tensor(ctx, name) : nullptr; }
    std::string str(const char * key) const {
        const int64_t id = g ? gguf_find_key(g, key) : -1;
        return id >= 0 && gguf_get_kv_type(g, id) == GGUF_TYPE_STRING ? gguf_get_val_str(g, id) : "";
    }
};

static bool to_array(const ggml_tensor * t, array_f32 & out) {
    const int64_t n = ggml_nelements(t);
    out.data.resize(n);
    out.shape.clear();
    for (int i = ggml_n_dims(t) - 1; i >= 0; i--) out.shape.push_back(t->ne[i]);
    if (t->type == GGML_TYPE_F32) {
        std::memcpy(out.data.data(), t->data, n * sizeof(float));
    } else if (t->type == GGML_TYPE_I32) {
        for (int64_t i = 0; i < n; i++) out.data[i] = (float) ((const int32_t *) t->data)[i];
    } else if (ggml_get_type_traits(t->type)->to_float) {
        ggml_get_type_traits(t->type)->to_float(t->data, out.data.data(), n);
    } else {
        return false;
    }
    return true;
}

static bool write_array(const std::string & path, const std::string & module, const array_f32 & a) {
    ggml_init_params ip = {ggml_tensor_overhead() * 2 + a.data.size() * sizeof(float) + 1024, nullptr, false};
    ggml_context * ctx = ggml_init(ip);
    int64_t ne[4] = {1, 1, 1, 1};
    const int nd = (int) a.shape.size();
    for (int i = 0; i < nd; i++) ne[i] = a.shape[nd - 1 - i];
    ggml_tensor * t = ggml_new_tensor(ctx, GGML_TYPE_F32, std::max(1, nd), ne);
    ggml_set_name(t, "out");
    std::memcpy(t->data, a.data.data(), a.data.size() * sizeof(float));
    gguf_context * g = gguf_init_empty();
    gguf_set_val_str(g, "omnimodel.module.name", module.c_str());
    // GGUF drops trailing ne of 1 (leading numpy 1s): keep the full numpy shape as metadata
    std::vector<int64_t> shape(a.shape.begin(), a.shape.end());
    gguf_set_arr_data(g, "omnimodel.out.shape", GGUF_TYPE_INT64, shape.data(), shape.size());
    gguf_add_tensor(g, t);
    const std::string tmp = path + ".tmp";
    const bool ok = gguf_write_to_file(g, tmp.c_str(), false) && std::rename(tmp.c_str(), path.c_str()) == 0;
    gguf_free(g);
    ggml_free(ctx);
    return ok;
}

// ----------------------------------------------------------------------------- inputs of one step

struct step {
    bool                 raw = false;   // pixel_values + normalised proprio
    std::vector<uint8_t> images;        // n x S x S x 3
    std::vector<float>   pixel_values;  // n x 6 x S x S
    int                  n_images = 0;
    std::vector<float>   proprio;
    std::vector<int32_t> tokens;
    bool                 text = false;  // tokens come from `instruction` inside the library
    std::string          instruction;
};

// An image file (stb_image: PNG, JPEG, BMP, PPM, ...) of S x S pixels as RGB; "" or the reason it is refused.
static std::string read_image(const std::string & path, int S, std::vector<uint8_t> & out) {
    int w = 0, h = 0, c = 0;
    stbi_uc * px = stbi_load(path.c_str(), &w, &h, &c, 3);
    if (!px) return path + ": cannot decode (" + (stbi_failure_reason() ? stbi_failure_reason() : "unknown") + ")";
    std::string err;
    if (w != S || h != S) {
        err = path + ": " + std::to_string(w) + "x" + std::to_string(h) + " pixels, the policy takes " + std::to_string(S) + "x" + std::to_string(S);
    } else {
        out.insert(out.end(), px, px + (size_t) S * S * 3);
    }
    stbi_image_free(px);
    return err;
}

static std::string load_step(const cli_args & a, const omni_policy * P, step & s) {
    const int S = omni_image_size(P);
    if (!a.inputs.empty()) {
        gguf_file in(a.inputs);
        if (!in.g) return a.inputs + ": not a readable GGUF file";
        array_f32 arr;
        const ggml_tensor * ti = in.tensor("images");
        const ggml_tensor * tx = in.tensor("pixel_values");
        if (ti && !a.raw) {
            to_array(ti, arr);
            for (float v : arr.data) s.images.push_back((uint8_t) std::min(255.0f, std::max(0.0f, v)));
            s.n_images = (int) (arr.data.size() / ((size_t) 3 * S * S));
        } else if (tx) {
            to_array(tx, arr);
            s.raw = true;
            s.pixel_values = arr.data;
            s.n_images = (int) (arr.data.size() / ((size_t) 6 * S * S));
        } else {
            return a.inputs + ": needs an `images` or a `pixel_values` tensor";
        }
        // the forward pass alone takes normalised proprio (`proprio_norm`, else `proprio` as given)
        const ggml_tensor * tp = s.raw && in.tensor("proprio_norm") ? in.tensor("proprio_norm") : in.tensor("proprio");
        const ggml_tensor * tt = in.tensor("token_ids");
        if ((!tp && omni_proprio_dim(P) > 0) || !tt) return a.inputs + ": needs `proprio` and `token_ids` tensors";
        if (tp) {
            to_array(tp, arr);
            s.proprio = arr.data;
        }
        to_array(tt, arr);
        for (float v : arr.data) s.tokens.push_back((int32_t) v);
        return "";
    }
    if (a.cmd == "bench" && a.images.empty()) {
        // a synthetic step of the released size: gradient images, zero proprio, 34 prompt tokens
        s.n_images = omni_n_images(P);
        s.images.resize((size_t) s.n_images * S * S * 3);
        for (size_t i = 0; i < s.images.size(); i++) s.images[i] = (uint8_t) ((i * 7) % 251);
        s.proprio.assign(omni_proprio_dim(P), 0.0f);
        s.tokens.push_back(1);
        for (int i = 0; i < 33; i++) s.tokens.push_back(3 + i);
        return "";
    }
    for (const auto & path : a.images) {
        const std::string err = read_image(path, S, s.images);
        if (!err.empty()) return err;
    }
    s.n_images = (int) a.images.size();
    s.proprio = a.proprio;
    s.tokens = a.tokens;
    s.text = a.has_instruction;
    s.instruction = a.instruction;
    if (s.text && !s.tokens.empty()) return "pass --instruction or --tokens, not both";
    if (s.n_images == 0 || (s.tokens.empty() && !s.text)) return "run needs --inputs, or --image, --state and --instruction (or --tokens)";
    return "";
}

static int predict(omni_policy * P, const step & s, float * out) {
    if (s.raw) {
        return omni_predict_raw(P, s.pixel_values.data(), s.n_images, s.proprio.data(), (int) s.proprio.size(),
                                s.tokens.data(), (int) s.tokens.size(), out);
    }
    if (s.text) {
        return omni_predict_text(P, s.images.data(), s.n_images, s.proprio.data(), (int) s.proprio.size(), s.instruction.c_str(), out);
    }
    return omni_predict(P, s.images.data(), s.n_images, s.proprio.data(), (int) s.proprio.size(), s.tokens.data(),
                        (int) s.tokens.size(), out);
}

// ----------------------------------------------------------------------------- commands

static int cmd_run(const cli_args & a, omni_policy * P) {
    step s;
    const std::string err = load_step(a, P, s);
    if (!err.empty()) return fail(err);
    const int chunk = omni_action_chunk(P), dim = omni_action_dim(P);
    std::vector<float> actions((size_t) chunk * dim);
    if (predict(P, s, actions.data()) != OMNI_OK) return fail(omni_last_error());
    std::printf("{\"status\": \"ok\", \"normalized\": %s, \"actions\": [", s.raw ? "true" : "false");
    for (int c = 0; c < chunk; c++) {
        std::printf("%s[", c ? ", " : "");
        for (int d = 0; d < dim; d++) std::printf("%s%.9g", d ? ", " : "", actions[(size_t) c * dim + d]);
        std::printf("]");
    }
    std::printf("]}\n");
    if (!a.out.empty()) {
        array_f32 arr{actions, {chunk, dim}};
        if (!write_array(a.out, "actions", arr)) return fail("cannot write " + a.out);
    }
    return 0;
}

static int cmd_validate(const cli_args & a, omni_policy * P) {
    DIR * dir = opendir(a.ref_dir.c_str());
    if (!dir) return fail("cannot open reference directory " + a.ref_dir);
    std::vector<std::string> files;
    while (dirent * e = readdir(dir)) {
        const std::string n = e->d_name;
        if (n.size() > 5 && n.compare(n.size() - 5, 5, ".gguf") == 0) files.push_back(n);
    }
    closedir(dir);
    std::sort(files.begin(), files.end());
    mkdir(a.out_dir.c_str(), 0755);
    int n_ok = 0, n_failed = 0;
    std::vector<std::string> skipped;
    for (const auto & f : files) {
        gguf_file ref(a.ref_dir + "/" + f);
        if (!ref.g) { n_failed++; std::printf("{\"module\": \"%s\", \"status\": \"error\", \"message\": \"unreadable GGUF\"}\n", json_escape(f).c_str()); continue; }
        std::string name = ref.str("omnimodel.module.name");
        if (name.empty()) name = f.substr(0, f.size() - 5);
        if (!omni_has_module(P, name.c_str())) { skipped.push_back(name); continue; }
        std::vector<array_f32> ins;
        for (int k = 0;; k++) {
            const ggml_tensor * t = ref.tensor(("in." + std::to_string(k)).c_str());
            if (!t) break;
            ins.emplace_back();
            to_array(t, ins.back());
        }
        if (ins.empty() && name == "end_to_end") {
            // the analyzer's end-to-end cache names its inputs; the forward pass alone runs on them
            for (const char * n : {"pixel_values", "token_ids", "proprio_norm"}) {
                const ggml_tensor * t = ref.tensor(n);
                if (!t) break;
                ins.emplace_back();
                to_array(t, ins.back());
            }
        }
        if (ins.empty()) {
            n_failed++;
            std::printf("{\"module\": \"%s\", \"status\": \"error\", \"message\": \"reference has no in.0\"}\n", json_escape(name).c_str());
            continue;
        }
        std::vector<omni_tensor> ts;
        for (const auto & x : ins) {
            omni_tensor t{};
            t.data = x.data.data();
            t.n_dims = (int) std::min<size_t>(4, x.shape.size());
            for (int d = 0; d < t.n_dims; d++) t.shape[d] = x.shape[x.shape.size() - t.n_dims + d];
            ts.push_back(t);
        }
        int64_t cap = 0;
        if (const ggml_tensor * t = ref.tensor("out")) cap = ggml_nelements(t);
        array_f32 out;
        int64_t shape[4];
        int nd = 0;
        const auto t0 = std::chrono::steady_clock::now();
        out.data.resize(std::max<int64_t>(cap, 1));
        int rc = omni_run_module(P, name.c_str(), ts.data(), (int) ts.size(), out.data.data(), (int64_t) out.data.size(), shape, &nd);
        if (rc == OMNI_ERR_BUFFER_TOO_SMALL) {
            int64_t n = 1;
            for (int d = 0; d < nd; d++) n *= shape[d];
            out.data.resize(n);
            rc = omni_run_module(P, name.c_str(), ts.data(), (int) ts.size(), out.data.data(), n, shape, &nd);
        }
        const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        if (rc != OMNI_OK) {
            n_failed++;
            std::printf("{\"module\": \"%s\", \"status\": \"error\", \"message\": \"%s\"}\n", json_escape(name).c_str(), json_escape(omni_last_error()).c_str());
            continue;
        }
        int64_t n = 1;
        for (int d = 0; d < nd; d++) { out.shape.push_back(shape[d]); n *= shape[d]; }
        out.data.resize(n);
        if (!write_array(a.out_dir + "/" + name + ".gguf", name, out)) return fail("cannot write into " + a.out_dir);
        n_ok++;
        std::printf("{\"module\": \"%s\", \"status\": \"ok\", \"ms\": %.3f}\n", json_escape(name).c_str(), ms);
    }
    std::printf("{\"status\": \"%s\", \"ran\": %d, \"failed\": %d, \"skipped\": [", n_failed ? "error" : "ok", n_ok, n_failed);
    for (size_t i = 0; i < skipped.size(); i++) std::printf("%s\"%s\"", i ? ", " : "", json_escape(skipped[i]).c_str());
    std::printf("]}\n");
    return n_failed ? 1 : 0;
}

static int cmd_bench(const cli_args & a, omni_policy * P) {
    step s;
    const std::string err = load_step(a, P, s);
    if (!err.empty()) return fail(err);
    std::vector<float> actions((size_t) omni_action_chunk(P) * omni_action_dim(P));
    for (int i = 0; i < a.n_warmup; i++) {
        if (predict(P, s, actions.data()) != OMNI_OK) return fail(omni_last_error());
    }
    std::vector<double> ms;
    std::vector<std::string> stage_names;
    std::vector<std::vector<double>> stage_ms;  // per graph run of a step, in order
    for (int i = 0; i < a.n_iter; i++) {
        const auto t0 = std::chrono::steady_clock::now();
        if (predict(P, s, actions.data()) != OMNI_OK) return fail(omni_last_error());
        ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
        const int n_st = omni_last_timings(P, nullptr, nullptr, 0);
        std::vector<const char *> names(n_st);
        std::vector<double> st(n_st);
        omni_last_timings(P, names.data(), st.data(), n_st);
        if (stage_ms.size() < (size_t) n_st) { stage_ms.resize(n_st); stage_names.resize(n_st); }
        for (int k = 0; k < n_st; k++) { stage_names[k] = names[k]; stage_ms[k].push_back(st[k]); }
    }
    auto median_of = [](std::vector<double> v) {
        std::sort(v.begin(), v.end());
        const size_t n = v.size();
        return n == 0 ? 0.0 : n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
    };
    std::vector<double> sorted = ms;
    std::sort(sorted.begin(), sorted.end());
    const size_t n = sorted.size();
    std::string stages = "[";
    for (size_t k = 0; k < stage_ms.size(); k++) {
        char buf[160];
        std::snprintf(buf, sizeof buf, "%s{\"stage\": \"%s\", \"median_ms\": %.3f}", k ? ", " : "", json_escape(stage_names[k]).c_str(), median_of(stage_ms[k]));
        stages += buf;
    }
    stages += "]";
    std::printf("{\"status\": \"ok\", \"n\": %zu, \"median_ms\": %.3f, \"min_ms\": %.3f, \"max_ms\": %.3f, \"threads\": %d, \"n_gpu_layers\": %d, \"stages\": %s}\n",
                n, median_of(ms), sorted.front(), sorted.back(), a.params.n_threads, a.params.n_gpu_layers, stages.c_str());
    return 0;
}

int main(int argc, char ** argv) {
    cli_args a;
    if (!parse_args(argc, argv, a)) return usage();
    if (a.cmd != "run" && a.cmd != "validate" && a.cmd != "bench") return usage();
    omni_policy * P = omni_load(a.model.c_str(), &a.params);
    if (!P) return fail(omni_last_error());
    int rc = 2;
    if (a.cmd == "run") rc = cmd_run(a, P);
    else if (a.cmd == "validate") rc = cmd_validate(a, P);
    else rc = cmd_bench(a, P);
    omni_free(P);
    return rc;
}
