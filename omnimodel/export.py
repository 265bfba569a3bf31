"""`omnimodel export`: a run's native policy as a folder a robot uses without Python.

Layout: lib/ (libomnimodel_policy.so and the GGML libraries it links, RUNPATH $ORIGIN), include/,
bin/policy_cli (RUNPATH $ORIGIN/../lib), model.gguf, example/ (step.c, Makefile), README.md. The
prompt is tokenised inside the library (llama.cpp's vocabulary code, linked in statically).
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

from omnimodel.errors import ConfigError, ToolchainError

LIBRARY = "libomnimodel_policy.so"
EXAMPLE_INSTRUCTION = "put the bowl on the plate"
DT_NEEDED, DT_STRTAB, DT_RUNPATH, DT_RPATH = 1, 5, 29, 15


# ---------------------------------------------------------------- ELF dynamic section (64-bit little-endian)
def _dynamic(data: bytes) -> tuple[list[tuple[int, int, int]], int]:
    """(tag, value, file offset of the entry) of each dynamic entry, and the file offset of .dynstr."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ToolchainError(
            "not a 64-bit little-endian ELF file; export supports Linux x86-64/aarch64 builds"
        )
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    loads, dyn = [], None
    for i in range(phnum):
        p_type, _, p_offset, p_vaddr, _, p_filesz = struct.unpack_from("<IIQQQQ", data, phoff + i * phentsize)
        if p_type == 1:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == 2:
            dyn = (p_offset, p_filesz)
    if dyn is None:
        raise ToolchainError("the ELF file has no dynamic section; is it a shared build?")
    entries = []
    for off in range(dyn[0], dyn[0] + dyn[1], 16):
        tag, val = struct.unpack_from("<qQ", data, off)
        if tag == 0:
            break
        entries.append((tag, val, off))
    strtab_vaddr = next(v for t, v, _ in entries if t == DT_STRTAB)
    strtab = next(o + strtab_vaddr - v for v, o, n in loads if v <= strtab_vaddr < v + n)
    return entries, strtab


def _cstr(data: bytes, at: int) -> str:
    return data[at : data.index(b"\0", at)].decode()


def elf_needed_and_runpath(path: Path) -> tuple[list[str], list[str]]:
    """An ELF file's NEEDED sonames and its RUNPATH (or RPATH) entries."""
    data = path.read_bytes()
    entries, strtab = _dynamic(data)
    needed = [_cstr(data, strtab + v) for t, v, _ in entries if t == DT_NEEDED]
    runpath = [
        p
        for t, v, _ in entries
        if t in (DT_RUNPATH, DT_RPATH)
        for p in _cstr(data, strtab + v).split(":")
        if p
    ]
    return needed, runpath


def set_runpath(path: Path, runpath: str) -> None:
    """Overwrite the RUNPATH string in place (the new one must not be longer than the old)."""
    data = bytearray(path.read_bytes())
    entries, strtab = _dynamic(bytes(data))
    for t, v, _ in entries:
        if t in (DT_RUNPATH, DT_RPATH):
            old = _cstr(bytes(data), strtab + v)
            if len(runpath) > len(old):
                raise ToolchainError(
                    f"{path}: RUNPATH {old!r} is shorter than {runpath!r}; set LD_LIBRARY_PATH instead"
                )
            data[strtab + v : strtab + v + len(old)] = runpath.encode().ljust(len(old), b"\0")
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------- the export
def check_run(run_dir: Path) -> None:
    """Refuse a run that is not built or whose validation failed (one line naming the fix)."""
    lib = run_dir / "build" / LIBRARY
    for need in (lib, run_dir / "build" / "policy_cli", run_dir / "model.gguf"):
        if not need.exists():
            raise ToolchainError(f"{need}: missing; the run is not built, finish `omnimodel port` first")
    report = run_dir / "report.json"
    if not report.exists():
        raise ConfigError(f"{report}: missing; export only validated runs (finish `omnimodel port`)")
    status = json.loads(report.read_text()).get("status")
    if status != "ok":
        raise ConfigError(
            f"{run_dir}: the port's validation failed (report status {status!r}); fix the port before exporting"
        )


def _ggml_libs(lib: Path) -> tuple[list[Path], list[str]]:
    """The GGML libraries `lib` links (transitively, from its RUNPATH dirs) and the system libs left to the OS."""
    found, system, todo = {}, set(), [lib]
    while todo:
        needed, runpath = elf_needed_and_runpath(todo.pop())
        for name in needed:
            if name in found or name in system:
                continue
            hit = next(
                (Path(d) / name for d in runpath if "$ORIGIN" not in d and (Path(d) / name).exists()), None
            )
            if hit is None or not name.startswith("libggml"):
                system.add(name)
            else:
                found[name] = hit
                todo.append(hit)
    return list(found.values()), sorted(system)


STEP_C = r"""/* step.c: load the policy, run one omni_predict_text on synthetic images and state, print the actions as JSON. */
#include <stdio.h>
#include <stdlib.h>
#include "omnimodel_policy.h"

int main(int argc, char ** argv) {
    const char * model = argc > 1 ? argv[1] : "../model.gguf";
    const char * instruction = argc > 2 ? argv[2] : "%(instruction)s";
    omni_params params = omni_default_params();
    omni_policy * policy = omni_load(model, &params);
    if (!policy) { fprintf(stderr, "omni_load: %s\n", omni_last_error()); return 1; }
    int n = omni_n_images(policy), s = omni_image_size(policy), np_ = omni_proprio_dim(policy);
    int chunk = omni_action_chunk(policy), dim = omni_action_dim(policy);
    uint8_t * images = malloc((size_t) n * s * s * 3);
    float * state = malloc(sizeof(float) * (np_ > 0 ? np_ : 1));
    float * actions = malloc(sizeof(float) * chunk * dim);
    for (long i = 0; i < (long) n * s * s * 3; i++) images[i] = (uint8_t) ((i * 7 + i / 3) % 256);
    for (int k = 0; k < np_; k++) state[k] = 0.1f * k - 0.3f;
    /* the library builds the arch's prompt and tokenises it (llama.cpp's vocabulary, from model.gguf) */
    int rc = omni_predict_text(policy, images, n, state, np_, instruction, actions);
    if (rc != 0) { fprintf(stderr, "omni_predict_text: %s\n", omni_last_error()); return 1; }
    printf("{\"instruction\": \"");
    for (const char * c = instruction; *c; c++) {
        if (*c == '"' || *c == '\\') putchar('\\');
        if ((unsigned char) *c >= 0x20) putchar(*c);
    }
    printf("\", \"actions\": [");
    for (int t = 0; t < chunk; t++) {
        printf("%s[", t ? ", " : "");
        for (int d = 0; d < dim; d++) printf("%s%.9g", d ? ", " : "", actions[t * dim + d]);
        printf("]");
    }
    printf("]}\n");
    free(images); free(state); free(actions);
    omni_free(policy);
    return 0;
}
"""

MAKEFILE = """CC ?= cc
step: step.c
\t$(CC) -O2 -o step step.c -I../include -L../lib -lomnimodel_policy -Wl,-rpath-link,../lib -Wl,-rpath,'$$ORIGIN/../lib'
"""


def _readme(run_dir: Path, system: list[str]) -> str:
    return f"""# Native policy exported from {run_dir.name}

No Python is needed to run it. Layout:

- `lib/` — `{LIBRARY}` and the GGML libraries it links (RUNPATH `$ORIGIN`, so keep them together)
- `include/omnimodel_policy.h` — the C API
- `bin/policy_cli` — `bin/policy_cli run model.gguf ...` (RUNPATH `$ORIGIN/../lib`)
- `model.gguf` — weights and metadata
- `example/step.c` — loads the model, runs one `omni_predict_text` (an instruction, synthetic images and state), prints the actions

System libraries the build expects on the robot: {", ".join(system)}.

## The C example

```sh
cd example && make && ./step ../model.gguf "put the bowl on the plate"
```

or by hand: `cc -O2 -o step step.c -I../include -L../lib -lomnimodel_policy -Wl,-rpath-link,../lib -Wl,-rpath,'$ORIGIN/../lib'`.
Moved elsewhere without the rpath, run with `LD_LIBRARY_PATH=/path/to/export/lib`.

```c
omni_params params = omni_default_params();
omni_policy * policy = omni_load("model.gguf", &params);
/* images: n x S x S x 3 uint8 (omni_n_images, omni_image_size), state: omni_proprio_dim floats;
   the instruction is put into the model's prompt and tokenised inside the library */
omni_predict_text(policy, images, n, state, n_state, "put the bowl on the plate", actions /* chunk x dim */);
omni_free(policy);
```

`bin/policy_cli run model.gguf --image a.png --image b.png --state 0.1,0.2,... --instruction "..."`
decodes the images (PNG, JPEG, PPM; omni_image_size square, RGB) and prints the action chunk as JSON.
`omni_predict` (token ids) stays for callers that tokenise themselves.
"""


def export_run(run_dir: str | Path, out: str | Path) -> Path:
    """Write the export folder for a built, validated run; returns `out`."""
    run_dir, out = Path(run_dir), Path(out)
    check_run(run_dir)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: exists and is not empty; pass a new folder to --out")
    build = run_dir / "build"
    ggml, system = _ggml_libs(build / LIBRARY)
    for sub in ("lib", "include", "bin", "example"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(build / LIBRARY, out / "lib" / LIBRARY)
    set_runpath(out / "lib" / LIBRARY, "$ORIGIN")
    for lib in ggml:
        shutil.copyfile(lib.resolve(), out / "lib" / lib.name)
    shutil.copyfile(build / "policy_cli", out / "bin" / "policy_cli")
    set_runpath(out / "bin" / "policy_cli", "$ORIGIN/../lib")
    for exe in (out / "bin" / "policy_cli",):
        exe.chmod(0o755)
    header = run_dir / "cpp" / "omnimodel_policy.h"
    if not header.exists():
        from omnimodel.paths import REPO_ROOT

        header = REPO_ROOT / "templates" / "cpp" / "omnimodel_policy.h"
    shutil.copyfile(header, out / "include" / "omnimodel_policy.h")
    shutil.copyfile(run_dir / "model.gguf", out / "model.gguf")
    (out / "example" / "step.c").write_text(STEP_C.replace("%(instruction)s", EXAMPLE_INSTRUCTION))
    (out / "example" / "Makefile").write_text(MAKEFILE)
    (out / "README.md").write_text(_readme(run_dir, system))
    return out
