#!/usr/bin/env python3
"""The long ("fuzz") run of the differential test: many random attn::attention cases against
float64 torch math, with the failures grouped into classes.

    .venv/bin/python bench/fuzz/run_differential.py --cases 20000 --seed 7
    .venv/bin/python bench/fuzz/run_differential.py --seeds 1-20 --cases 2000 --jobs 2
    .venv/bin/python bench/fuzz/run_differential.py --seed 1301 --index 240 --cases 1 -v

The cases are those of test/python/test_differential.py (test/python/random_cases.py): the same
(seed, index) is the same case in both, so any failure here reruns there with
ATTN_DIFF_CASES=1 ATTN_DIFF_SEED=S ATTN_DIFF_INDEX=I. The op library comes from
$ATTN_TORCH_LIBRARY, else build/lib/libattn_torch.so; kernels are cached in $ATTN_CACHE_DIR
(default: build/test-kernel-cache). Exit status 1 when any case fails.
"""
import argparse
import collections
import multiprocessing
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "test" / "python"))
sys.path.insert(0, str(ROOT / "frontend" / "python"))
os.environ.setdefault("ATTN_TORCH_LIBRARY", str(ROOT / "build" / "lib" / "libattn_torch.so"))
os.environ.setdefault("ATTN_CACHE_DIR", str(ROOT / "build" / "test-kernel-cache"))

import random_cases as rc  # noqa: E402


def failure_class(case, problems):
    """A coarse signature: what went wrong (NaN, error, which tensors) and the case's tags."""
    kinds = sorted({"raised" if p.startswith("the op raised") else
                    ("nan" if "NaN" in p else "inf" if ": inf" in p else
                     "dtype" if "dtype" in p else "inference" if "inference" in p else
                     "error") + ":" + p.split(":")[0] for p in problems})
    return " ".join(kinds) + " | " + (", ".join(rc.tags(case)) or "-")


def run_one(job):
    seed, index = job
    case = rc.make_case(seed, index)
    problems = rc.run(case)
    return seed, index, problems


def parse_seeds(text):
    seeds = []
    for part in text.split(","):
        if "-" in part:
            lo, hi = part.split("-")
            seeds.extend(range(int(lo), int(hi) + 1))
        else:
            seeds.append(int(part))
    return seeds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=None, help="one seed")
    parser.add_argument("--seeds", default=None, help="seeds, e.g. 1-20,99")
    parser.add_argument("--cases", type=int, default=5000, help="cases per seed")
    parser.add_argument("--index", type=int, default=0, help="first case index")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--show", type=int, default=2, help="full reports printed per class")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every failure")
    args = parser.parse_args()
    seeds = parse_seeds(args.seeds) if args.seeds else [
        args.seed if args.seed is not None else rc.DEFAULT_SEED]
    jobs = [(seed, index) for seed in seeds for index in range(args.index,
                                                              args.index + args.cases)]
    classes = collections.defaultdict(list)
    started = time.time()
    done = 0
    if args.jobs > 1:
        pool = multiprocessing.get_context("spawn").Pool(args.jobs)
        results = pool.imap_unordered(run_one, jobs, chunksize=8)
    else:
        results = map(run_one, jobs)
    for seed, index, problems in results:
        done += 1
        if problems:
            case = rc.make_case(seed, index)
            signature = failure_class(case, problems)
            classes[signature].append((seed, index))
            if args.verbose or len(classes[signature]) <= args.show:
                print(rc.describe(case, problems), flush=True)
                print(flush=True)
        if done % 500 == 0:
            failed = sum(len(v) for v in classes.values())
            print(f"[{done}/{len(jobs)}] {failed} failed, {time.time() - started:.0f} s",
                  file=sys.stderr, flush=True)
    failed = sum(len(v) for v in classes.values())
    print(f"{len(jobs)} cases, {failed} failed, {len(classes)} classes, "
          f"{time.time() - started:.0f} s")
    for signature, members in sorted(classes.items(), key=lambda item: -len(item[1])):
        examples = " ".join(f"{s}:{i}" for s, i in members[:6])
        print(f"  {len(members):5d}  {signature}\n         e.g. seed:index {examples}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
