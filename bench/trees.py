#!/usr/bin/env python3
"""Side by side on file trees: Coffer against restic (issue 18's "Measure").

    python3 bench/trees.py --constructed --tree /root/.rustup/toolchains --runs 3

For every tree: each tool backs it up into a fresh local repository (first backup), backs it up
again unchanged, and restores the latest snapshot into a new directory; the order of the tools
alternates between runs. Wall time and peak RSS (wait4) of each step; medians over the runs.
Every restore is checked against the source: the same entries with the same types, sizes and
modes, hard links kept as links, sparse files as sparse, extended attributes equal, and the
contents of up to 300 files (chosen with a fixed seed) equal byte for byte. A tool that restores
something else is reported, not timed as if it had.

`--constructed` builds the test tree of issue 18 in the work directory: a 1 GiB sparse file with
three 1 MiB data extents, a 2 MiB file with 13 hard links (inside and across directories), files
with a user xattr, a POSIX ACL and (as root, with setcap) a file capability, a FIFO, a character
device (as root) and a Unix socket, plus 2,000 small files.

Restore trees are kept until the end of the run: deleting many files shortly before creating many
makes ext4 slower for whoever comes next (docs/benchmarks.md, "The command").
"""

import argparse
import os
import random
import shutil
import socket
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PASSWORD = "benchmark password"


def log(msg):
    print(f"[trees] {msg}", file=sys.stderr, flush=True)


def build_constructed(root: Path):
    if (root / ".complete").exists():
        return
    if root.exists():
        shutil.rmtree(root)
    (root / "links/a").mkdir(parents=True)
    (root / "links/b").mkdir(parents=True)
    with open(root / "sparse.img", "wb") as f:
        f.truncate(1 << 30)
        for offset in (0, 512 << 20, (1 << 30) - (1 << 20)):
            f.seek(offset)
            f.write(os.urandom(1 << 20))
    (root / "links/a/lib.so").write_bytes(os.urandom(2 << 20))
    for i in range(12):
        target = root / ("links/a" if i % 2 else "links/b") / f"lib-{i}.so"
        os.link(root / "links/a/lib.so", target)
    small = root / "small"
    small.mkdir()
    rng = random.Random(18)
    for i in range(2000):
        (small / f"f{i:04}.txt").write_bytes(rng.randbytes(rng.randint(100, 8000)))
    attrs = root / "attrs"
    attrs.mkdir()
    (attrs / "comment").write_text("with a user xattr\n")
    os.setxattr(attrs / "comment", "user.comment", b"kept by the backup")
    (attrs / "acl").write_text("with an ACL\n")
    if shutil.which("setfacl"):
        subprocess.run(["setfacl", "-m", "u:1234:rw", str(attrs / "acl")], check=True)
        subprocess.run(["setfacl", "-d", "-m", "u:1234:rx", str(attrs)], check=True)
    (attrs / "ping").write_bytes(b"\x7fELF not really")
    if os.geteuid() == 0 and shutil.which("setcap"):
        subprocess.run(["setcap", "cap_net_raw+ep", str(attrs / "ping")], check=True)
    special = root / "special"
    special.mkdir()
    os.mkfifo(special / "fifo")
    if os.geteuid() == 0:
        os.mknod(special / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(special / "agent.sock"))
    sock.close()
    (root / ".complete").write_text("")


def measure(cmd, env):
    """Runs cmd; its wall seconds and peak RSS (KiB), taken by /usr/bin/time: on Linux a
    process forked from this one starts with this one's peak RSS as its own (it survives exec),
    and this one holds the listings of large trees."""
    with tempfile.NamedTemporaryFile("r") as out:
        start = time.monotonic()
        proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", out.name] + [str(c) for c in cmd],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wall = time.monotonic() - start
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n"
                               f"{proc.stderr.decode(errors='replace')}")
        return {"wall": wall, "rss_kib": int(out.read().split()[-1])}


# ---------------------------------------------------------------- checking a restore


def entries(root: Path):
    """relative path -> lstat, for every entry below root (root itself excluded)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            out[str(p.relative_to(root))] = os.lstat(p)
    return out


def xattrs(path: Path):
    try:
        return {n: os.getxattr(path, n, follow_symlinks=False) for n in os.listxattr(path, follow_symlinks=False)}
    except OSError:
        return {}


def compare(source: Path, restored: Path):
    """Differences between source and its restored copy (at most 10), as text."""
    a = {k: v for k, v in entries(source).items() if k != ".complete"}
    b = {k: v for k, v in entries(restored).items() if k != ".complete"}
    problems = []
    # Sockets cannot be restored meaningfully; both tools skip them.
    missing = [k for k, st in a.items() if k not in b and not stat.S_ISSOCK(st.st_mode)]
    if missing:
        problems.append(f"{len(missing)} entries missing, e.g. {missing[:3]}")
    groups_a, groups_b = {}, {}
    for rel, st in a.items():
        got = b.get(rel)
        if got is None:
            continue
        if stat.S_IFMT(st.st_mode) != stat.S_IFMT(got.st_mode) or st.st_mode != got.st_mode:
            problems.append(f"{rel}: mode {oct(st.st_mode)} restored as {oct(got.st_mode)}")
        elif stat.S_ISREG(st.st_mode):
            if st.st_size != got.st_size:
                problems.append(f"{rel}: size {st.st_size} restored as {got.st_size}")
            if st.st_blocks * 2 < st.st_size // 512 and got.st_blocks > 2 * st.st_blocks + 64:
                problems.append(f"{rel}: sparse ({st.st_blocks} blocks) restored dense ({got.st_blocks})")
            if st.st_nlink > 1:
                groups_a.setdefault((st.st_dev, st.st_ino), set()).add(rel)
                groups_b.setdefault((got.st_dev, got.st_ino), set()).add(rel)
        if xattrs(source / rel) != xattrs(restored / rel):
            problems.append(f"{rel}: extended attributes differ")
        if len(problems) >= 10:
            return problems
    linked_a = sorted(sorted(g) for g in groups_a.values())
    linked_b = sorted(sorted(g) for g in groups_b.values() if len(g) > 1)
    if linked_a != linked_b:
        problems.append(f"hard links: {len(linked_a)} groups in the source, {len(linked_b)} restored")
    regular = sorted(k for k, st in a.items() if stat.S_ISREG(st.st_mode) and k in b)
    for rel in random.Random(7).sample(regular, min(300, len(regular))):
        if not same_content(source / rel, restored / rel):
            problems.append(f"{rel}: content differs")
            break
    return problems


def same_content(x: Path, y: Path):
    with open(x, "rb") as fx, open(y, "rb") as fy:
        while True:
            bx, by = fx.read(1 << 20), fy.read(1 << 20)
            if bx != by:
                return False
            if not bx:
                return True


# ---------------------------------------------------------------- tools


class Coffer:
    name = "coffer"

    def __init__(self, binary, repo):
        self.bin, self.repo = binary, repo
        self.env = dict(os.environ, COFFER_REPO=str(repo), COFFER_PASSWORD=PASSWORD, COFFER_PROGRESS_FPS="0")

    def init(self):
        measure([self.bin, "-q", "init"], env=self.env)

    def backup(self, tree):
        return measure([self.bin, "-q", "backup", str(tree)], env=self.env)

    def restore(self, target):
        return measure([self.bin, "-q", "restore", "latest", "--target", str(target)], env=self.env)


class Restic:
    name = "restic"

    def __init__(self, binary, repo):
        self.bin, self.repo = binary, repo
        self.env = dict(os.environ, RESTIC_REPOSITORY=str(repo), RESTIC_PASSWORD=PASSWORD)

    def init(self):
        measure([self.bin, "init"], env=self.env)

    def backup(self, tree):
        return measure([self.bin, "backup", "-q", str(tree)], env=self.env)

    def restore(self, target):
        return measure([self.bin, "restore", "-q", "latest", "--target", str(target)], env=self.env)


def restored_root(target: Path, tree: Path):
    """Both tools restore a tree at its absolute path below the target."""
    return target / str(tree.resolve()).lstrip("/")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", action="append", default=[], help="a real tree to back up (repeatable)")
    ap.add_argument("--constructed", action="store_true", help="also the constructed tree of issue 18")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", default="/tmp/coffer-trees")
    ap.add_argument("--coffer", default=str(Path(__file__).resolve().parent.parent / "target/release/coffer"))
    ap.add_argument("--restic", default=shutil.which("restic") or "restic")
    args = ap.parse_args()
    if not Path("/usr/bin/time").exists():
        sys.exit("/usr/bin/time is needed for peak RSS: apt-get install time")
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    trees = [Path(t) for t in args.tree]
    if args.constructed:
        build_constructed(work / "constructed")
        trees.insert(0, work / "constructed")
    if not trees:
        sys.exit("nothing to measure: give --tree PATH and/or --constructed")
    scratch = work / "runs"
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir()
    results = {}  # (tree, tool, step) -> [measurements]
    failures = []
    for t_index, tree in enumerate(trees):
        for run in range(args.runs):
            tools = [Coffer(args.coffer, scratch / f"t{t_index}-r{run}-coffer"),
                     Restic(args.restic, scratch / f"t{t_index}-r{run}-restic")]
            if run % 2:
                tools.reverse()
            for tool in tools:
                log(f"{tree} run {run + 1}: {tool.name}")
                tool.init()
                target = scratch / f"t{t_index}-r{run}-{tool.name}-restored"
                steps = [("first backup", lambda: tool.backup(tree)),
                         ("unchanged backup", lambda: tool.backup(tree)),
                         ("restore", lambda: tool.restore(target))]
                for step, action in steps:
                    results.setdefault((str(tree), tool.name, step), []).append(action())
                problems = compare(tree, restored_root(target, tree))
                if problems:
                    failures.append((str(tree), tool.name, run, problems))
    print(f"\nmedians of {args.runs} runs; wall seconds, peak RSS MiB\n")
    for tree in trees:
        files = sum(1 for _ in entries(tree))
        print(f"### {tree} ({files:,} entries)\n")
        print("| step | coffer wall | restic wall | coffer / restic | coffer RSS | restic RSS |")
        print("|---|---|---|---|---|---|")
        for step in ("first backup", "unchanged backup", "restore"):
            c = results[(str(tree), "coffer", step)]
            r = results[(str(tree), "restic", step)]
            cw, rw = statistics.median(m["wall"] for m in c), statistics.median(m["wall"] for m in r)
            cr = statistics.median(m["rss_kib"] for m in c) / 1024
            rr = statistics.median(m["rss_kib"] for m in r) / 1024
            print(f"| {step} | {cw:.2f} s | {rw:.2f} s | {cw / rw:.2f} | {cr:.0f} | {rr:.0f} |")
        print()
    if failures:
        print("### Restores that differ from their source\n")
        for tree, tool, run, problems in failures:
            print(f"- {tool}, run {run + 1}, {tree}: " + "; ".join(problems[:5]))
    else:
        print("Every restore matched its source.")


if __name__ == "__main__":
    main()
