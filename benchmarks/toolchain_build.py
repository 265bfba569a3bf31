"""Benchmark: first GGML build vs the second (cached, same key) build, in a fresh cache.

Usage: python benchmarks/toolchain_build.py [--backend cpu] [--sandbox docker|local|auto]
The sdist download is reused from the normal cache when present (it is the network, not the build).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402


def main() -> None:
    """Time ensure_ggml_build twice in an empty cache and print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="cpu")
    parser.add_argument("--sandbox", default="auto")
    args = parser.parse_args()

    from omnimodel.paths import cache_dir

    downloads = cache_dir() / "downloads"
    with tempfile.TemporaryDirectory(prefix="omnimodel-bench-") as tmp:
        if downloads.is_dir():
            shutil.copytree(downloads, Path(tmp) / "downloads")
        os.environ["OMNIMODEL_CACHE"] = tmp
        from omnimodel.sandbox import get_sandbox
        from omnimodel.toolchain import ensure_ggml_build

        box = get_sandbox(args.sandbox)
        t0 = time.monotonic()
        first = ensure_ggml_build(args.backend, box)
        first_s = time.monotonic() - t0
        t0 = time.monotonic()
        second = ensure_ggml_build(args.backend, box)
        second_s = time.monotonic() - t0
        assert first.key == second.key
        table = Table(title=f"GGML {args.backend} build, {box.name} sandbox, {os.cpu_count()} cores")
        for col in ("run", "seconds", "ratio to first"):
            table.add_column(col)
        table.add_row("first (extract + configure + build + install)", f"{first_s:.2f}", "1.000")
        table.add_row("second (same key: reuse)", f"{second_s:.3f}", f"{second_s / first_s:.5f}")
        Console().print(table)
        Console().print(f"cmake timings of the first build: {first.info.get('timings')}")


if __name__ == "__main__":
    main()
