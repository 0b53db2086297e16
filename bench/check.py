"""How fast `digest check` validates 1,000 and 10,000 synthetic notes (one core).

Goal: 10,000 notes in under 2 s, and linear cost (10k/1k ≤ 11x).
Run: .venv/bin/python bench/check.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.synthetic import write_content  # noqa: E402
from digest.pipeline.check import check  # noqa: E402


def time_check(content: Path, repeat: int) -> tuple[float, float]:
    """Best wall time and best CPU time of this process (CPU time is robust to a busy machine)."""
    best_wall = best_cpu = float("inf")
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        result = check(content, today=dt.date(2030, 1, 1))
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
        assert result.ok, result.lines()[:5]
    return best_wall, best_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="runs per size; the best is reported")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    args = parser.parse_args()
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            content = write_content(Path(tmp) / str(size), size)
            kib = sum(p.stat().st_size for p in content.rglob("*.yml")) / 1024
            wall, cpu = time_check(content, args.repeat)
            times[size] = cpu
            print(f"{size:>6} notes ({kib / 1024:.1f} MiB): check {wall:.3f} s wall, {cpu:.3f} s CPU "
                  f"({cpu / size * 1e6:.0f} µs/note)")
    if len(times) >= 2:
        small, large = min(times), max(times)
        print(f"CPU ratio {large}/{small}: {times[large] / times[small]:.2f}x (goal ≤ {large / small * 1.1:.0f}x); "
              f"{large} notes {'under' if times[large] < 2 else 'OVER'} the 2 s goal on one core")


if __name__ == "__main__":
    main()
