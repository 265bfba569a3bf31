"""A generated GGML C program (matmul then softmax through ggml-backend), checked against numpy."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from omnimodel.errors import ToolchainError
from omnimodel.sandbox import Sandbox, get_sandbox
from omnimodel.sandbox.cmake_project import compile_and_run_cmake_project

PROGRAM_NAME = "omni_selfcheck"

_CMAKE = """cmake_minimum_required(VERSION 3.14)
project(omni_selfcheck C)
find_package(ggml REQUIRED)
add_executable(omni_selfcheck main.c)
target_link_libraries(omni_selfcheck PRIVATE ggml::ggml ggml::ggml-base)
"""

# ggml_mul_mat(a, b) with a: [K, M] and b: [K, N] (ne0 first) gives [M, N]: in row-major terms
# C (N x M) = B (N x K) @ A (M x K)^T; ggml_soft_max then normalises each row of C.
_MAIN = """#include <stdio.h>
#include <string.h>
#include "ggml.h"
#include "ggml-alloc.h"
#include "ggml-backend.h"

#define M {m}
#define K {k}
#define N {n}

static const float A[M * K] = {{ {a} }};
static const float B[N * K] = {{ {b} }};

int main(int argc, char ** argv) {{
    const char * want = argc > 1 ? argv[1] : "cpu";
    ggml_backend_t backend = strcmp(want, "cuda") == 0
        ? ggml_backend_init_by_type(GGML_BACKEND_DEVICE_TYPE_GPU, NULL)
        : ggml_backend_init_by_type(GGML_BACKEND_DEVICE_TYPE_CPU, NULL);
    if (!backend) {{ fprintf(stderr, "no %s backend\\n", want); return 3; }}

    struct ggml_init_params params = {{ ggml_tensor_overhead() * 8 + ggml_graph_overhead(), NULL, true }};
    struct ggml_context * ctx = ggml_init(params);
    struct ggml_tensor * a = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, K, M);
    struct ggml_tensor * b = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, K, N);
    ggml_backend_buffer_t weights = ggml_backend_alloc_ctx_tensors(ctx, backend);
    ggml_backend_tensor_set(a, A, 0, sizeof(A));
    ggml_backend_tensor_set(b, B, 0, sizeof(B));

    struct ggml_tensor * cur = ggml_mul_mat(ctx, a, b);
    cur = ggml_soft_max(ctx, cur);
    struct ggml_cgraph * gf = ggml_new_graph(ctx);
    ggml_build_forward_expand(gf, cur);

    ggml_gallocr_t galloc = ggml_gallocr_new(ggml_backend_get_default_buffer_type(backend));
    if (!ggml_gallocr_alloc_graph(galloc, gf)) {{ fprintf(stderr, "graph allocation failed\\n"); return 4; }}
    if (ggml_backend_graph_compute(backend, gf) != GGML_STATUS_SUCCESS) {{ fprintf(stderr, "compute failed\\n"); return 5; }}

    static float out[M * N];
    ggml_backend_tensor_get(cur, out, 0, sizeof(out));
    printf("backend %s\\n", ggml_backend_name(backend));
    for (int i = 0; i < M * N; ++i) printf("%.9e\\n", out[i]);

    ggml_gallocr_free(galloc);
    ggml_backend_buffer_free(weights);
    ggml_free(ctx);
    ggml_backend_free(backend);
    return 0;
}}
"""


@dataclass
class SelfCheck:
    """Outcome of the generated program against numpy."""

    backend_name: str
    max_abs_err: float
    values: int
    build_s: float
    run_s: float
    sandbox: str


def write_matmul_softmax_project(
    dest: Path, *, m: int = 16, k: int = 32, n: int = 8, seed: int = 0
) -> np.ndarray:
    """Write main.c + CMakeLists.txt into `dest`; return the expected output (N x M, row-major) from numpy."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(-1, 1, size=(m, k)).astype(np.float32)
    b = rng.uniform(-1, 1, size=(n, k)).astype(np.float32)
    dest.mkdir(parents=True, exist_ok=True)
    fmt = lambda x: ", ".join(f"{v:.9e}f" for v in x.ravel())  # noqa: E731
    (dest / "main.c").write_text(_MAIN.format(m=m, k=k, n=n, a=fmt(a), b=fmt(b)))
    (dest / "CMakeLists.txt").write_text(_CMAKE)
    logits = b.astype(np.float64) @ a.astype(np.float64).T
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def parse_output(stdout: str) -> tuple[str, np.ndarray]:
    """The backend name and the printed values of the generated program."""
    lines = stdout.strip().splitlines()
    if not lines or not lines[0].startswith("backend "):
        raise ToolchainError(f"self-check program printed no result: {stdout[:200]!r}")
    return lines[0].split(" ", 1)[1], np.array([float(x) for x in lines[1:]], dtype=np.float64)


def run_selfcheck(workdir: Path, backend: str = "cpu", sandbox: str | Sandbox = "auto") -> SelfCheck:
    """Generate, build and run the program in the sandbox against the cached GGML build; compare to numpy."""
    from omnimodel.toolchain.build import ensure_ggml_build

    box = get_sandbox(sandbox) if isinstance(sandbox, str) else sandbox
    ggml = ensure_ggml_build(backend, box)
    src, build = workdir / "src", workdir / "build"
    expected = write_matmul_softmax_project(src)
    t0 = time.monotonic()
    res = compile_and_run_cmake_project(
        src,
        build,
        box,
        ggml,
        run=[PROGRAM_NAME, backend],
        run_memory_mb=0 if box.name == "local" and backend == "cuda" else None,
    )
    elapsed = time.monotonic() - t0
    failed = res.failed_step()
    if failed:
        name, step = failed
        raise ToolchainError(
            f"self-check {name} failed in the {box.name} sandbox (exit {step.exit_code}, "
            f"killed_by={step.killed_by}): {step.stderr.strip()[-400:]}"
        )
    name, values = parse_output(res.run.stdout)
    if values.size != expected.size:
        raise ToolchainError(f"self-check printed {values.size} values, expected {expected.size}")
    err = float(np.max(np.abs(values - expected.ravel())))
    return SelfCheck(name, err, int(values.size), elapsed - res.run.wall_s, res.run.wall_s, box.name)
