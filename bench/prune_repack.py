#!/usr/bin/env python3
"""Prune's memory when it repacks: Coffer against restic on a repack-heavy repository.

    python3 bench/prune_repack.py --runs 5 [--coffer BINARY] [--coffer-base BINARY]

bench/run.py's forget + prune step repacks little (its churn leaves most packs whole). Here
most packs are repacked: a tree of 1,200 files (20 directories of 60, 50-600 KB, half of them
random bytes, half repetitive text: 370 MiB) is backed up, 40% of the files (those whose name
ends in 1, 2, 5 or 6) are deleted, the tree is backed up again, and `forget --keep-last 1
--prune` removes the first snapshot (Coffer with `--grace 0s`, as restic's exclusive lock
allows; both at their default --max-unused, 5%). So every pack that held a deleted file
is repacked.

Each tool's repository is built once (under --workdir, default /tmp/coffer-prune-bench); every
run prunes a fresh copy of it, alternating the tools, and reports wall time and peak RSS
(`wait4` rusage). Medians, and every run's numbers, are printed.
"""

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

PASSWORD = "benchmark password"


def generate(src: Path) -> None:
    rng = random.Random(7)
    for d in range(20):
        folder = src / f"d{d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(60):
            n = rng.randint(50_000, 600_000)
            if i % 2:
                data = rng.randbytes(n)
            else:
                line = "".join(rng.choice("abcdefghij klmnop\n") for _ in range(2000))
                data = (line * (n // len(line) + 1))[:n].encode()
            (folder / f"f{i}").write_bytes(data)


def run(cmd, env) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of `cmd`, which must succeed."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    err = proc.stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed: {err}")
    return wall, usage.ru_maxrss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workdir", default="/tmp/coffer-prune-bench")
    parser.add_argument("--coffer", default=str(Path(__file__).resolve().parent.parent / "target/release/coffer"))
    parser.add_argument("--coffer-base", help="a second Coffer binary, run as `coffer-base`")
    parser.add_argument("--restic", default=shutil.which("restic"))
    args = parser.parse_args()

    work = Path(args.workdir)
    src = work / "src"
    if not src.exists():
        generate(src)
    tools = {"coffer": args.coffer}
    if args.coffer_base:
        tools["coffer-base"] = args.coffer_base
    if args.restic:
        tools["restic"] = args.restic

    def env_for(tool: str, repo: Path) -> dict:
        if tool == "restic":
            return dict(os.environ, RESTIC_REPOSITORY=str(repo), RESTIC_PASSWORD=PASSWORD)
        return dict(os.environ, COFFER_REPO=str(repo), COFFER_PASSWORD=PASSWORD)

    prepared = {}
    for tool, binary in tools.items():
        repo = work / f"before-prune-{tool}"
        cur = work / "cur"
        shutil.rmtree(repo, ignore_errors=True)
        shutil.rmtree(cur, ignore_errors=True)
        shutil.copytree(src, cur)
        env = env_for(tool, repo)
        run([binary, "init"] + (["-q"] if tool == "restic" else []), env)
        run([binary, "backup", "-q", str(cur)], env)
        for f in cur.rglob("f*"):
            if f.name[-1] in "1256":
                f.unlink()
        run([binary, "backup", "-q", str(cur)], env)
        shutil.rmtree(cur)
        prepared[tool] = repo

    results = {tool: [] for tool in tools}
    order = list(tools)
    for r in range(args.runs):
        for tool in order if r % 2 == 0 else order[::-1]:
            copy = work / f"run-{tool}"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(prepared[tool], copy)
            subprocess.run(["sync"], check=True)
            cmd = [tools[tool], "forget", "--keep-last", "1", "--prune"]
            if tool != "restic":
                cmd += ["--grace", "0s"]
            wall, rss = run(cmd, env_for(tool, copy))
            results[tool].append((wall, rss))
            print(f"run {r + 1} {tool}: {wall:.2f} s, peak RSS {rss / 1024:.1f} MiB", flush=True)
            shutil.rmtree(copy)

    print("\n| tool | wall s (median) | peak RSS MiB (median) | peak RSS MiB (every run) |")
    print("|---|---|---|---|")
    for tool, rs in results.items():
        walls = [w for w, _ in rs]
        rsss = [m / 1024 for _, m in rs]
        every = ", ".join(f"{m:.1f}" for m in rsss)
        print(f"| {tool} | {statistics.median(walls):.2f} | {statistics.median(rsss):.1f} | {every} |")


if __name__ == "__main__":
    main()
