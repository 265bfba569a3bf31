// omni_text.cpp: the policy prompt of an instruction, tokenised with llama.cpp's vocabulary code.
//
// The GGUF carries the checkpoint's tokenizer under llama.cpp's `tokenizer.ggml.*` keys and the
// arch's prompt under `omnimodel.prompt.*`. The vocabulary is loaded vocab-only through llama.cpp's
// public API from the same file; general.architecture is overridden to "llama" for that load only
// (the vocabulary keys carry no architecture prefix). The keys are checked here first: the file is
// untrusted and llama.cpp trusts some array lengths.

#include "omni_core.h"

#include "llama.h"

#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <unordered_set>

static const char * const KEY_TOKENS     = "tokenizer.ggml.tokens";
static const char * const KEY_SCORES     = "tokenizer.ggml.scores";
static const char * const KEY_TYPES      = "tokenizer.ggml.token_type";
static const char * const KEY_MODEL      = "tokenizer.ggml.model";
static const char * const PLACEHOLDER    = "{instruction}";
static const char * const STATE_SLOT     = "{state}";
static const int64_t      MAX_TOKENS     = 1 << 22;
static const size_t       MAX_TEXT_BYTES = 1 << 16;

struct omni_text {
    llama_model *       model = nullptr;  // vocabulary only
    const llama_vocab * vocab = nullptr;
    std::string         tmpl;
    bool                lowercase = false;
    bool                clean = false;  // openpi's task cleaning (strip, '_' and newlines to spaces)
    int32_t             end_token = -1;
    ~omni_text() { if (model) llama_model_free(model); }
};

static omni_error bad(const std::string & what) {
    return omni_error(OMNI_ERR_FORMAT, "model.gguf tokenizer: " + what + "; re-convert the model");
}

// Every tokenizer.ggml.* array llama.cpp reads has the type and length it assumes.
static int64_t check_tokenizer_keys(const gguf_context * g) {
    const int64_t kt = gguf_find_key(g, KEY_TOKENS);
    if (kt < 0 || gguf_get_kv_type(g, kt) != GGUF_TYPE_ARRAY || gguf_get_arr_type(g, kt) != GGUF_TYPE_STRING) throw bad(std::string(KEY_TOKENS) + " is not an array of strings");
    const int64_t n = (int64_t) gguf_get_arr_n(g, kt);
    if (n < 1 || n > MAX_TOKENS) throw bad(std::string(KEY_TOKENS) + " has " + std::to_string(n) + " entries");
    const int64_t km = gguf_find_key(g, KEY_MODEL);
    if (km < 0 || gguf_get_kv_type(g, km) != GGUF_TYPE_STRING || std::string(gguf_get_val_str(g, km)) != "llama") {
        throw bad(std::string(KEY_MODEL) + " must be \"llama\" (a SentencePiece vocabulary)");
    }
    // llama.cpp aborts on a repeated token text; an empty one it renames, which could repeat another
    std::unordered_set<std::string> seen;
    seen.reserve((size_t) n);
    for (int64_t i = 0; i < n; i++) {
        const char * t = gguf_get_arr_str(g, kt, (size_t) i);
        if (!t || !*t) throw bad("token " + std::to_string(i) + " is empty");
        if (!seen.insert(t).second) throw bad("token " + std::to_string(i) + " repeats the text of an earlier one");
    }
    const int64_t ks = gguf_find_key(g, KEY_SCORES);
    if (ks >= 0) {
        const bool ok = gguf_get_kv_type(g, ks) == GGUF_TYPE_ARRAY &&
                        (gguf_get_arr_type(g, ks) == GGUF_TYPE_FLOAT32 || gguf_get_arr_type(g, ks) == GGUF_TYPE_INT32);
        if (!ok || (int64_t) gguf_get_arr_n(g, ks) != n) throw bad(std::string(KEY_SCORES) + " must be " + std::to_string(n) + " float32 values");
    }
    const int64_t ky = gguf_find_key(g, KEY_TYPES);
    if (ky >= 0) {
        const bool ok = gguf_get_kv_type(g, ky) == GGUF_TYPE_ARRAY && gguf_get_arr_type(g, ky) == GGUF_TYPE_INT32;
        if (!ok || (int64_t) gguf_get_arr_n(g, ky) != n) throw bad(std::string(KEY_TYPES) + " must be " + std::to_string(n) + " int32 values");
        const int32_t * t = (const int32_t *) gguf_get_arr_data(g, ky);
        for (int64_t i = 0; i < n; i++) {
            if (t[i] < 0 || t[i] > 6) throw bad("token " + std::to_string(i) + " has type " + std::to_string(t[i]));
        }
    }
    for (int64_t i = 0; i < gguf_get_n_kv(g); i++) {
        const std::string k = gguf_get_key(g, i);
        const bool id_key = k.rfind("tokenizer.ggml.", 0) == 0 && k.size() > 9 && k.compare(k.size() - 9, 9, "_token_id") == 0;
        if (!id_key) continue;
        const gguf_type ty = gguf_get_kv_type(g, i);
        if (ty != GGUF_TYPE_UINT32 && ty != GGUF_TYPE_INT32) throw bad(k + " is not an integer");
        const int64_t id = ty == GGUF_TYPE_UINT32 ? (int64_t) gguf_get_val_u32(g, i) : (int64_t) gguf_get_val_i32(g, i);
        if (id < -1 || id >= n) throw bad(k + " = " + std::to_string(id) + " is outside the " + std::to_string(n) + " tokens");
    }
    return n;
}

// llama.cpp's log during the vocabulary load: kept quiet, the first error line kept for the message.
static std::mutex g_log_mutex;
static std::string g_llama_error;

static void quiet_log(ggml_log_level level, const char * text, void *) {
    if (level == GGML_LOG_LEVEL_ERROR && text && g_llama_error.empty()) {
        g_llama_error = text;
        while (!g_llama_error.empty() && (g_llama_error.back() == '\n' || g_llama_error.back() == ' ')) g_llama_error.pop_back();
    }
}

static llama_model * load_vocab(const std::string & path) {
    std::lock_guard<std::mutex> lock(g_log_mutex);
    ggml_log_callback prev_cb = nullptr;
    void * prev_ud = nullptr;
    llama_log_get(&prev_cb, &prev_ud);
    llama_log_set(quiet_log, nullptr);
    g_llama_error.clear();
    llama_model_kv_override ov[2];
    std::memset(ov, 0, sizeof(ov));
    std::snprintf(ov[0].key, sizeof(ov[0].key), "%s", "general.architecture");
    ov[0].tag = LLAMA_KV_OVERRIDE_TYPE_STR;
    std::snprintf(ov[0].val_str, sizeof(ov[0].val_str), "%s", "llama");
    llama_model_params mp = llama_model_default_params();
    mp.vocab_only = true;
    mp.kv_overrides = ov;
    llama_model * m = llama_model_load_from_file(path.c_str(), mp);
    llama_log_set(prev_cb, prev_ud);
    if (!m) throw bad("llama.cpp cannot load the vocabulary (" + (g_llama_error.empty() ? std::string("no message") : g_llama_error) + ")");
    return m;
}

// llama.cpp's Unicode tables (src/unicode.h; compiled into libllama.a, not in its public header).
uint32_t              unicode_tolower(uint32_t cpt);
std::vector<uint32_t> unicode_cpts_from_utf8(const std::string & utf8);
std::string           unicode_cpt_to_utf8(uint32_t cpt);

static std::vector<uint32_t> code_points(const std::string & s) {
    try {
        return unicode_cpts_from_utf8(s);
    } catch (const std::exception &) {
        throw omni_error(OMNI_ERR_INVALID_ARGUMENT, "omni_predict_text: the instruction is not valid UTF-8");
    }
}

// Python's str.lower() for every code point with a one-code-point lower case (all but a handful).
static std::string lower_utf8(const std::string & s) {
    std::string out;
    out.reserve(s.size());
    for (uint32_t c : code_points(s)) out += unicode_cpt_to_utf8(unicode_tolower(c));
    return out;
}

// Python's str.isspace(): bidi classes WS, B, S and category Zs.
static bool is_py_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

// openpi's clean_task: task.strip().replace("_", " ").replace("\n", " ").
static std::string clean_utf8(const std::string & s) {
    const std::vector<uint32_t> cpts = code_points(s);
    size_t b = 0, e = cpts.size();
    while (b < e && is_py_space(cpts[b])) b++;
    while (e > b && is_py_space(cpts[e - 1])) e--;
    std::string out;
    out.reserve(s.size());
    for (size_t i = b; i < e; i++) out += (cpts[i] == '_' || cpts[i] == '\n') ? std::string(" ") : unicode_cpt_to_utf8(cpts[i]);
    return out;
}

omni_text * omni_text_load(const omni_core & C, int n_vocab) {
    if (gguf_find_key(C.gguf, KEY_TOKENS) < 0) return nullptr;
    const int64_t n = check_tokenizer_keys(C.gguf);
    if (n_vocab > 0 && n > n_vocab) throw bad(std::to_string(n) + " tokens but the model embeds " + std::to_string(n_vocab));
    auto T = std::make_unique<omni_text>();
    T->tmpl = C.str(OMNI_KEY_PROMPT_TEMPLATE);  // may be absent (an arch that writes none): omni_predict_text then says so
    if (!T->tmpl.empty() && T->tmpl.find(PLACEHOLDER) == std::string::npos) throw bad(std::string(OMNI_KEY_PROMPT_TEMPLATE) + " has no " + PLACEHOLDER);
    if (C.num(OMNI_KEY_PROMPT_STATE, 0.0) != 0.0 && T->tmpl.find(STATE_SLOT) == std::string::npos) {
        throw bad(std::string(OMNI_KEY_PROMPT_STATE) + " is set but " + OMNI_KEY_PROMPT_TEMPLATE + " has no " + STATE_SLOT);
    }
    T->lowercase = C.num(OMNI_KEY_PROMPT_LOWERCASE, 0.0) != 0.0;
    T->clean = C.num(OMNI_KEY_PROMPT_CLEAN, 0.0) != 0.0;
    T->model = load_vocab(C.path);
    T->vocab = llama_model_get_vocab(T->model);
    const std::string end = C.str(OMNI_KEY_PROMPT_END_TOKEN);
    if (!end.empty()) {
        for (int32_t i = 0; i < llama_vocab_n_tokens(T->vocab) && T->end_token < 0; i++) {
            const char * t = llama_vocab_get_text(T->vocab, i);
            if (t && end == t) T->end_token = i;
        }
        if (T->end_token < 0) throw bad(std::string(OMNI_KEY_PROMPT_END_TOKEN) + " '" + end + "' is not a token");
    }
    return T.release();
}

void omni_text_free(omni_text * T) { delete T; }

std::string omni_text_fill(const omni_text & T, const char * instruction,
                           const std::vector<std::pair<std::string, std::string>> & fields) {
    if (!instruction) throw omni_error(OMNI_ERR_INVALID_ARGUMENT, "omni_predict_text: instruction is NULL");
    if (T.tmpl.empty()) {
        throw omni_error(OMNI_ERR_FORMAT, std::string("model.gguf has no ") + OMNI_KEY_PROMPT_TEMPLATE + " (its arch's metadata writes it); pass token ids to omni_predict");
    }
    std::string inst = instruction;
    if (inst.size() > MAX_TEXT_BYTES) throw omni_error(OMNI_ERR_INVALID_ARGUMENT, "omni_predict_text: instruction longer than 64 KiB");
    if (T.clean) inst = clean_utf8(inst);
    if (T.lowercase) inst = lower_utf8(inst);
    // one pass over the template, so a placeholder's text inside a value is never substituted again
    std::vector<std::pair<std::string, std::string>> slots = {{PLACEHOLDER, inst}};
    slots.insert(slots.end(), fields.begin(), fields.end());
    std::string text;
    for (size_t i = 0; i < T.tmpl.size();) {
        bool hit = false;
        for (const auto & f : slots) {
            if (T.tmpl.compare(i, f.first.size(), f.first) == 0) {
                text += f.second;
                i += f.first.size();
                hit = true;
                break;
            }
        }
        if (!hit) text += T.tmpl[i++];
    }
    return text;
}

std::vector<int32_t> omni_text_tokens(const omni_text & T, const std::string & text) {
    std::vector<int32_t> ids(text.size() + 8);
    int32_t n = 0;
    try {
        n = llama_tokenize(T.vocab, text.data(), (int32_t) text.size(), ids.data(), (int32_t) ids.size(), true, false);
        if (n < 0) {
            ids.resize((size_t) -n);
            n = llama_tokenize(T.vocab, text.data(), (int32_t) text.size(), ids.data(), (int32_t) ids.size(), true, false);
        }
    } catch (const std::out_of_range &) {
        // a SentencePiece vocabulary without byte tokens has no way to write an unknown character
        throw omni_error(OMNI_ERR_INVALID_ARGUMENT, "omni_predict_text: the instruction has a character the model's vocabulary cannot encode");
    }
    if (n < 0) throw omni_error(OMNI_ERR_INTERNAL, "omni_predict_text: llama_tokenize failed");
    ids.resize((size_t) n);
    if (T.end_token >= 0 && (ids.empty() || ids.back() != T.end_token)) ids.push_back(T.end_token);
    return ids;
}

std::vector<int32_t> omni_text_prompt(const omni_text & T, const char * instruction) {
    return omni_text_tokens(T, omni_text_fill(T, instruction));
}
