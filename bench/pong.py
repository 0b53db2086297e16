"""Agent steps per second of the Pong REINFORCE reference, against two yardsticks.

  (a) the original loop (`--faithful`: one env, dense frames, in one process),
  (b) this implementation with the given (default) num_envs / num_workers,
  (c) the ceiling: the bare emulator with the same gymnasium settings and random
      UP/DOWN actions, one process per core, no preprocessing, no learning.

Each runs for a fixed wall time on this machine, one after the other.  Usage:

    python bench/pong.py [--seconds 45] [--num_envs 8] [--num_workers 2] [--env_groups 2] [--dtype float64]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

REF = Path(__file__).resolve().parent.parent / "content" / "refs" / "pong-reinforce" / "pong.py"


def load_pong():
    spec = importlib.util.spec_from_file_location("pong_reinforce", REF)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def learner_rate(pong, args) -> tuple[float, str]:
    """Steps/s of the training loop (environment setup excluded), and the cores it kept busy."""
    before = os.times()
    _, info = pong.train(args)
    after = os.times()
    main = (after.user - before.user) + (after.system - before.system)
    workers = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    seconds = info["loop_seconds"]
    return info["loop_steps"] / seconds, (f"main {main / seconds:.2f}, workers {workers / seconds:.2f} "
                                          "(with their emulators' start-up)")


def raw_worker(seconds: float, seed: int, conn) -> None:
    pong = load_pong()
    import numpy as np

    env, rng = pong.make_env(), np.random.default_rng(seed)
    env.reset(seed=seed)
    conn.recv()  # start together
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        _, _, terminated, truncated, _ = env.step(int(rng.integers(2, 4)))
        steps += 1
        if terminated or truncated:
            env.reset()
    conn.send((steps, time.perf_counter() - t0))


def raw_rate(seconds: float, processes: int) -> float:
    ctx = mp.get_context("fork")
    pipes, procs = [], []
    for i in range(processes):
        here, there = ctx.Pipe()
        p = ctx.Process(target=raw_worker, args=(seconds, i, there))
        p.start()
        pipes.append(here)
        procs.append(p)
    time.sleep(3)  # let every emulator load its ROM before the clock starts
    for c in pipes:
        c.send("go")
    results = [c.recv() for c in pipes]
    for p in procs:
        p.join()
    return sum(steps / secs for steps, secs in results)


def main() -> None:
    pong = load_pong()
    defaults = pong.Args()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=45.0, help="wall time of each measurement")
    parser.add_argument("--num_envs", type=int, default=defaults.num_envs)
    parser.add_argument("--num_workers", type=int, default=defaults.num_workers)
    parser.add_argument("--env_groups", type=int, default=defaults.env_groups)
    parser.add_argument("--dtype", default=defaults.dtype)
    parser.add_argument("--skip", default="", help="comma-separated subset of a,b,c to skip")
    ns = parser.parse_args()
    cores = os.cpu_count()
    base = dataclasses.replace(defaults, max_wall_seconds=ns.seconds, max_episodes=10**9, log_seconds=1e9)
    rows = {}
    if "a" not in ns.skip:
        faithful = dataclasses.replace(base, faithful=True)
        rows["a"] = ("faithful original loop (1 env, dense)", *learner_rate(pong, faithful))
    if "b" not in ns.skip:
        b_args = dataclasses.replace(base, num_envs=ns.num_envs, num_workers=ns.num_workers,
                                     env_groups=ns.env_groups, dtype=ns.dtype)
        label = (f"this implementation ({ns.num_envs} envs, {ns.num_workers} workers, "
                 f"{ns.env_groups} groups, {ns.dtype})")
        rows["b"] = (label, *learner_rate(pong, b_args))
    if "c" not in ns.skip:
        rows["c"] = (f"raw emulator, random actions, {cores} processes", raw_rate(ns.seconds, cores), "")
    print(f"\nPong agent steps per second, {ns.seconds:.0f} s each, {cores} cores\n")
    print("| run | what | steps/s | cores busy |\n|---|---|---:|---|")
    for key, (label, rate, busy) in rows.items():
        print(f"| {key} | {label} | {rate:,.0f} | {busy} |")
    if "a" in rows and "b" in rows:
        print(f"\nb/a = {rows['b'][1] / rows['a'][1]:.2f}")
    if "b" in rows and "c" in rows:
        print(f"b/c = {rows['b'][1] / rows['c'][1]:.2f}")


if __name__ == "__main__":
    main()
