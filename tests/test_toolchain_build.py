"""GGML source pinning and extraction, build keys, and the cached CPU build (reuse, layout, atomicity)."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import time
from pathlib import Path

import pytest
from conftest import require

from omnimodel.errors import ToolchainError
from omnimodel.toolchain import build as build_mod
from omnimodel.toolchain import source as source_mod


def _fake_ggml(root: Path) -> Path:
    (root / "include").mkdir(parents=True)
    (root / "include" / "ggml.h").write_text("// fake\n")
    (root / "CMakeLists.txt").write_text("project(x)\n")
    return root


def test_source_override_accepts_ggml_or_llama_checkout(tmp_path, monkeypatch):
    ggml = _fake_ggml(tmp_path / "llama.cpp" / "ggml")
    monkeypatch.setenv(source_mod.SOURCE_ENV, str(tmp_path / "llama.cpp"))
    assert source_mod.ggml_source_dir() == ggml.resolve()
    monkeypatch.setenv(source_mod.SOURCE_ENV, str(ggml))
    assert source_mod.ggml_source_dir() == ggml.resolve()


def test_source_override_without_ggml_h_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv(source_mod.SOURCE_ENV, str(tmp_path))
    with pytest.raises(ToolchainError, match="OMNIMODEL_GGML_SOURCE"):
        source_mod.ggml_source_dir()


def test_override_hash_follows_content(tmp_path):
    ggml = _fake_ggml(tmp_path / "g")
    first = source_mod.source_hash(ggml)
    assert first == source_mod.source_hash(ggml)
    (ggml / "include" / "ggml.h").write_text("// changed\n")
    assert source_mod.source_hash(ggml) != first


def test_extract_takes_only_ggml_and_refuses_traversal(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in [
            (source_mod._GGML_PREFIX + "include/ggml.h", b"// h"),
            (source_mod._GGML_PREFIX + "src/ggml.c", b"int x;"),
            (source_mod._GGML_PREFIX + "../../evil.txt", b"no"),
            ("llama_cpp_python-x/other/file.py", b"no"),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    sdist = tmp_path / "s.tar.gz"
    sdist.write_bytes(buf.getvalue())
    dest = tmp_path / "out"
    dest.mkdir()
    source_mod._extract_ggml(sdist, dest)
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert files == ["include/ggml.h", "src/ggml.c"]
    assert not list(tmp_path.rglob("evil.txt"))


def test_build_key_changes_with_each_input():
    base = ("sdist-a", "cpu", ["-DX=1"], "docker:sha256:1")
    keys = {build_mod.build_key(*base)}
    keys.add(build_mod.build_key("sdist-b", *base[1:]))
    keys.add(build_mod.build_key(base[0], "cuda", *base[2:]))
    keys.add(build_mod.build_key(base[0], base[1], ["-DX=2"], base[3]))
    keys.add(build_mod.build_key(*base[:3], "docker:sha256:2"))
    assert len(keys) == 5
    assert build_mod.build_key(*base) == build_mod.build_key(*base)


def test_cpu_flags_link_backends_directly_and_skip_tests():
    flags = build_mod.cmake_flags("cpu")
    assert "-DGGML_BACKEND_DL=OFF" in flags and "-DGGML_BUILD_TESTS=OFF" in flags
    assert not any("CUDA" in f for f in flags)


def test_cuda_without_nvcc_names_the_fix(monkeypatch):
    monkeypatch.setattr(build_mod, "nvcc_path", lambda: None)
    with pytest.raises(ToolchainError, match="nvcc"):
        build_mod.cmake_flags("cuda")


def test_cuda_without_cublas_names_the_fix(monkeypatch, tmp_path):
    fake = tmp_path / "cuda" / "bin" / "nvcc"
    fake.parent.mkdir(parents=True)
    fake.write_text("#!/bin/sh\n")
    monkeypatch.setattr(build_mod, "nvcc_path", lambda: fake)
    monkeypatch.setattr(build_mod, "cublas_path", lambda nvcc: None)
    with pytest.raises(ToolchainError, match="libcublas"):
        build_mod.cmake_flags("cuda")


def test_cuda_arch_from_env(monkeypatch):
    monkeypatch.setenv(build_mod.CUDA_ARCH_ENV, "90")
    assert build_mod.detect_cuda_arch() == "90"


def test_unknown_backend_rejected():
    with pytest.raises(ToolchainError, match="unknown GGML backend"):
        build_mod.cmake_flags("metal")


def test_pinned_source_has_ggml_headers():
    source = source_mod.ggml_source_dir()
    assert (source / "include" / "ggml.h").is_file() and (source / "include" / "ggml-backend.h").is_file()
    assert source_mod.source_hash(source) == f"sdist-{source_mod.SDIST_SHA256}"


def test_cpu_build_layout_and_reuse():
    require(shutil.which("c++") is not None and shutil.which("cmake") is not None, "a C++ compiler and cmake")
    first = build_mod.ensure_ggml_build("cpu", "local")
    t0 = time.monotonic()
    again = build_mod.ensure_ggml_build("cpu", "local")
    reuse_s = time.monotonic() - t0
    assert again.prefix == first.prefix and again.key == first.key
    assert reuse_s < 5.0, f"reusing a cached build took {reuse_s:.1f} s"
    for lib in ("libggml.so", "libggml-base.so", "libggml-cpu.so"):
        assert (first.lib_dir / lib).exists(), lib
    assert (first.include_dir / "ggml-backend.h").is_file()
    assert (first.cmake_dir / "ggml-config.cmake").is_file()
    info = json.loads((first.prefix / build_mod.BUILD_INFO).read_text())
    assert info["key"] == first.key and info["timings"]["build_s"] > 0 and "-DGGML_NATIVE=ON" in info["flags"]
    # Never half-visible: no work or temp directories remain beside finished builds.
    leftovers = [
        p.name for p in build_mod.builds_root().iterdir() if p.name.startswith(".work-cpu-" + first.key)
    ]
    assert leftovers == []
    assert first in build_mod.list_builds()


def test_llama_extract_takes_only_the_parts_libllama_needs(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in ("CMakeLists.txt", "src/llama.cpp", "include/llama.h", "ggml/cmake/common.cmake",
                     "ggml/src/ggml.c", "tools/server/server.cpp", "src/../../evil.txt"):  # fmt: skip
            info = tarfile.TarInfo(source_mod._LLAMA_PREFIX + name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    sdist = tmp_path / "s.tar.gz"
    sdist.write_bytes(buf.getvalue())
    dest = tmp_path / "out"
    dest.mkdir()
    source_mod._extract(sdist, dest, source_mod._LLAMA_PREFIX, source_mod._LLAMA_PARTS)
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert files == ["CMakeLists.txt", "ggml/cmake/common.cmake", "include/llama.h", "src/llama.cpp"]
    assert not list(tmp_path.rglob("evil.txt"))


def test_llama_build_is_keyed_by_its_ggml_build_and_reused(tmp_path, monkeypatch):
    from omnimodel.toolchain import llama as llama_mod

    monkeypatch.setattr(llama_mod, "builds_root", lambda: tmp_path)
    g1 = build_mod.GGMLBuild(tmp_path / "g1", "cpu", "k1")
    g2 = build_mod.GGMLBuild(tmp_path / "g2", "cpu", "k2")
    assert llama_mod.build_key(g1) != llama_mod.build_key(g2)
    key = llama_mod.build_key(g1)
    prefix = tmp_path / f"cpu-{key}"
    (prefix / "lib").mkdir(parents=True)
    (prefix / "lib" / llama_mod.LIBRARY).write_bytes(b"!<arch>\n")
    (prefix / llama_mod.BUILD_INFO).write_text(json.dumps({"key": key}))

    def no_build(*args):
        raise AssertionError("a complete cached build was rebuilt")

    monkeypatch.setattr(llama_mod, "_build", no_build)
    got = llama_mod.ensure_llama_build(g1, object())
    assert got.prefix == prefix and got.library.is_file()
