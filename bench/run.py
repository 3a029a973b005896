#!/usr/bin/env python3
"""Side-by-side benchmark: Coffer against restic (and rustic / borg when installed).

One command (see docs/benchmarks.md):

    python3 bench/run.py --scale 10 --runs 3

1. Generates the standard dataset once (cached under --workdir):
   - a pgbench database (`pgbench -i -s SCALE`) in a throwaway PostgreSQL cluster, every account
     given 84 characters of random text (pgbench leaves them blank), dumped with
     `pg_dump -Fc -Z0` (v1); then 1,000 pgbench transactions and a second dump (the dump-dedup
     step's "after"); then an UPDATE of 1% of the accounts with new random text and a third dump
     (v2, the churned state);
   - an uploads tree of a few thousand text files plus incompressible binary files (random bytes,
     50 KB to 5 MB), and a second version with about 2% of the files changed or added;
   - a `.env` file.
2. Runs each tool into a fresh local repository, the same steps in the same order, alternating
   the order of tools between runs: first backup (v1), second backup after churn (v2), third
   backup with nothing changed, restore of the latest snapshot, forget keeping one snapshot plus
   prune, full data check. Then the dump-dedup step alone: back up dump 1, then dump 2, and report
   the bytes the second adds.
3. Prints one table per step: median wall time, CPU time (user+sys), peak RSS, bytes added to the
   repository, and the ratio Coffer / restic.

Nothing here is a test: it measures. Wall times are medians of --runs runs.
"""

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PASSWORD = "benchmark password"
DATASET_VERSION = 2


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- measurement


def measure(cmd, env=None, stdin_path=None, cwd=None):
    """Runs cmd; returns wall seconds, CPU seconds and peak RSS (KiB) of it and its children."""
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdin=stdin, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, cwd=cwd)
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    if stdin_path:
        stdin.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {code}:\n{stderr.decode(errors='replace')}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "user": usage.ru_utime,
            "sys": usage.ru_stime, "rss_kib": usage.ru_maxrss}


def dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except FileNotFoundError:
                pass
    return total


# ---------------------------------------------------------------- dataset


class Postgres:
    """A throwaway cluster on a Unix socket, as in shared/TESTING.md."""

    def __init__(self, base):
        self.base = Path(base)
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: float(p.parent.name))
        if not bins:
            sys.exit("PostgreSQL server binaries not found: apt-get install postgresql")
        self.bin = bins[-1]
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def start(self):
        if self.base.exists():
            shutil.rmtree(self.base)
        self.base.mkdir(parents=True)
        if self.as_user:
            shutil.chown(self.base, "postgres")
        subprocess.run(self.as_user + [str(self.bin / "initdb"), "-D", str(self.base / "data"), "-U", "postgres",
                                       "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync", "-N"],
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run(self.as_user + [str(self.bin / "pg_ctl"), "-D", str(self.base / "data"), "-l",
                                       str(self.base / "server.log"), "-w", "-t", "60", "-o",
                                       f"-k {self.base} -p 5432 -c listen_addresses='' -c fsync=off "
                                       f"-c synchronous_commit=off", "start"],
                       check=True, stdout=subprocess.DEVNULL)
        self.env = dict(os.environ, PGHOST=str(self.base), PGPORT="5432", PGUSER="postgres")

    def run(self, *args, **kw):
        return subprocess.run([str(self.bin / args[0])] + list(args[1:]), env=self.env, check=True, **kw)

    def dump(self, db, out):
        with open(out, "wb") as f:
            self.run("pg_dump", "-Fc", "-Z0", "-d", db, stdout=f)

    def stop(self):
        subprocess.run(self.as_user + [str(self.bin / "pg_ctl"), "-D", str(self.base / "data"), "-m", "immediate",
                                       "-w", "stop"], stdout=subprocess.DEVNULL)
        shutil.rmtree(self.base, ignore_errors=True)


WORDS = ("invoice customer upload order report account payment shipment photo archive note draft "
         "project user session token record backup restore message thread comment attachment").split()


def text_file(rng, size):
    out = []
    n = 0
    while n < size:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 15))) + f" {rng.randint(0, 10**9)}\n"
        out.append(line)
        n += len(line)
    return "".join(out)[:size].encode()


def make_uploads(root, scale, rng):
    """A few thousand text files plus random binaries; about (10 + 6*scale) MB at scale."""
    n_text = 300 * scale
    n_bin = 4 * scale
    for i in range(n_text):
        d = root / f"{2020 + i % 6}" / f"{1 + i % 12:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"note-{i:06d}.txt").write_bytes(text_file(rng, rng.randint(1_000, 20_000)))
    for i in range(n_bin):
        d = root / "media"
        d.mkdir(parents=True, exist_ok=True)
        ext = rng.choice(["jpg", "pdf", "png"])
        (d / f"file-{i:05d}.{ext}").write_bytes(os.urandom(rng.randint(50_000, 5_000_000)))


def churn_uploads(root, rng):
    """Change or add about 2% of the files."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    for p in rng.sample(files, max(1, len(files) // 100)):
        if p.suffix == ".txt":
            p.write_bytes(p.read_bytes() + text_file(rng, 500))
        else:
            data = bytearray(p.read_bytes())
            data[len(data) // 2:len(data) // 2 + 4096] = os.urandom(4096)
            p.write_bytes(bytes(data))
    for i in range(max(1, len(files) // 100)):
        (root / "2026" / "new").mkdir(parents=True, exist_ok=True)
        (root / "2026" / "new" / f"added-{i:05d}.txt").write_bytes(text_file(rng, rng.randint(1_000, 20_000)))


def make_dataset(work, scale):
    data = work / "data"
    # Bump DATASET_VERSION whenever what is generated changes, so cached datasets are rebuilt.
    marker = data / f"complete-v{DATASET_VERSION}-scale-{scale}"
    if marker.exists():
        return data
    if data.exists():
        shutil.rmtree(data)
    (data / "v1").mkdir(parents=True)
    (data / "v2").mkdir()
    rng = random.Random(2026)
    log(f"generating dataset at scale {scale} in {data}")
    pg = Postgres(Path(tempfile.gettempdir()) / f"coffer-bench-pg-{os.getpid()}")
    pg.start()
    try:
        pg.run("createdb", "bench")
        pg.run("pgbench", "-i", "-q", "-s", str(scale), "bench", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # pgbench leaves every account's 84-byte filler blank, so its dump is mostly padding that
        # compresses ~60:1. Real application rows carry text: give every account one (hex, which
        # compresses about 2:1 like typical row data), then compact the table.
        pg.run("psql", "-q", "-d", "bench", "-c",
               "UPDATE pgbench_accounts SET filler = left(md5(random()::text) || md5(random()::text)"
               " || md5(random()::text), 84)")
        pg.run("psql", "-q", "-d", "bench", "-c", "VACUUM FULL ANALYZE pgbench_accounts")
        pg.dump("bench", data / "v1" / "db.dump")
        pg.run("pgbench", "-n", "-t", "1000", "-c", "1", "bench", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pg.dump("bench", data / "dump-after-1000-tx.dump")
        pg.run("psql", "-q", "-d", "bench", "-c",
               "UPDATE pgbench_accounts SET filler = md5(random()::text) || md5(random()::text) WHERE aid % 100 = 0")
        pg.dump("bench", data / "v2" / "db.dump")
    finally:
        pg.stop()
    make_uploads(data / "v1" / "uploads", scale, rng)
    shutil.copytree(data / "v1" / "uploads", data / "v2" / "uploads")
    churn_uploads(data / "v2" / "uploads", rng)
    for v in ("v1", "v2"):
        (data / v / ".env").write_text("DATABASE_URL=postgres://app:secret@db/app\nSECRET_KEY=0123456789abcdef\n")
        os.chmod(data / v / ".env", 0o600)
    marker.write_text("ok\n")
    return data


def sync_tree(src, dst):
    """Make dst equal to src, rewriting only files that differ (so unchanged files keep their
    inode and mtime, as on a real server between two nightly backups)."""
    subprocess.run(["cp", "-a", "--no-preserve=links", "-u", "-T", str(src), str(dst)], check=True)
    for root, dirs, files in os.walk(dst, topdown=False):
        rel = Path(root).relative_to(dst)
        for name in files + dirs:
            if not (Path(src) / rel / name).exists():
                p = Path(root) / name
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def set_tree(version_dir, dst):
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(version_dir, dst, copy_function=shutil.copy2)


# ---------------------------------------------------------------- tools


class Tool:
    name = ""

    def __init__(self, work):
        self.repo = work / f"repo-{self.name}"

    def fresh(self):
        if self.repo.exists():
            shutil.rmtree(self.repo)


class Coffer(Tool):
    name = "coffer"

    def __init__(self, work, binary, name="coffer"):
        self.name = name
        super().__init__(work)
        self.bin = str(binary)
        self.env = dict(os.environ, COFFER_REPO=str(self.repo), COFFER_PASSWORD=PASSWORD)

    def init(self):
        measure([self.bin, "init", "-q"], self.env)

    def backup(self, path):
        return measure([self.bin, "backup", "-q", str(path)], self.env)

    def backup_stdin(self, file, name):
        return measure([self.bin, "backup", "-q", "--stdin-name", name], self.env, stdin_path=file)

    def restore(self, target):
        return measure([self.bin, "restore", "-q", "latest", "--target", str(target)], self.env)

    def forget_prune(self):
        # --grace 0s: no backup runs concurrently here, so delete at once, as restic's prune does
        # under its exclusive lock (Coffer's default keeps condemned data for 24 h).
        return measure([self.bin, "forget", "-q", "--keep-last", "1", "--prune", "--grace", "0s"], self.env)

    def check(self):
        return measure([self.bin, "check", "-q", "--read-data"], self.env)


class Restic(Tool):
    name = "restic"

    def __init__(self, work):
        super().__init__(work)
        self.env = dict(os.environ, RESTIC_REPOSITORY=str(self.repo), RESTIC_PASSWORD=PASSWORD,
                        RESTIC_CACHE_DIR=str(work / "restic-cache"))

    def init(self):
        measure(["restic", "init", "-q"], self.env)

    def backup(self, path):
        return measure(["restic", "backup", "-q", str(path)], self.env)

    def backup_stdin(self, file, name):
        return measure(["restic", "backup", "-q", "--stdin", "--stdin-filename", name], self.env, stdin_path=file)

    def restore(self, target):
        return measure(["restic", "restore", "-q", "latest", "--target", str(target)], self.env)

    def forget_prune(self):
        return measure(["restic", "forget", "-q", "--keep-last", "1", "--prune"], self.env)

    def check(self):
        return measure(["restic", "check", "-q", "--read-data"], self.env)


class Rustic(Tool):
    """rustic (a Rust reimplementation of restic's format), when `rustic` is on PATH."""
    name = "rustic"

    def __init__(self, work):
        super().__init__(work)
        self.env = dict(os.environ, RUSTIC_REPOSITORY=str(self.repo), RUSTIC_PASSWORD=PASSWORD,
                        RUSTIC_CACHE_DIR=str(work / "rustic-cache"), RUSTIC_NO_PROGRESS="true")

    def init(self):
        measure(["rustic", "init"], self.env)

    def backup(self, path):
        return measure(["rustic", "backup", str(path)], self.env)

    def backup_stdin(self, file, name):
        # --force: without it rustic 0.11 takes an unchanged parent entry for stdin and reads nothing.
        return measure(["rustic", "backup", "--force", "--stdin-filename", name, "-"], self.env, stdin_path=file)

    def restore(self, target):
        return measure(["rustic", "restore", "latest", str(target)], self.env)

    def forget_prune(self):
        # --instant-delete: delete at once, as restic does and Coffer's --grace 0s (rustic keeps
        # condemned packs for 23 h by default, like Coffer's 24 h grace).
        return measure(["rustic", "forget", "--keep-last", "1", "--prune", "--instant-delete"], self.env)

    def check(self):
        return measure(["rustic", "check", "--read-data"], self.env)


class Borg(Tool):
    """BorgBackup 1.2 (Debian's borgbackup), with its defaults: repokey-blake2, lz4."""
    name = "borg"

    def __init__(self, work):
        super().__init__(work)
        self.env = dict(os.environ, BORG_REPO=str(self.repo), BORG_PASSPHRASE=PASSWORD,
                        BORG_CACHE_DIR=str(work / "borg-cache"), BORG_CONFIG_DIR=str(work / "borg-config"),
                        BORG_BASE_DIR=str(work / "borg-base"), BORG_RELOCATED_REPO_ACCESS_IS_OK="yes",
                        BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes")
        self.archives = 0

    def fresh(self):
        super().fresh()
        for d in ("borg-cache", "borg-config", "borg-base"):
            shutil.rmtree(self.repo.parent / d, ignore_errors=True)
        self.archives = 0

    def _next(self):
        self.archives += 1
        return f"::a{self.archives}"

    def init(self):
        measure(["borg", "init", "--encryption=repokey-blake2"], self.env)

    def backup(self, path):
        return measure(["borg", "create", self._next(), str(path)], self.env)

    def backup_stdin(self, file, name):
        return measure(["borg", "create", "--stdin-name", name, self._next(), "-"], self.env, stdin_path=file)

    def restore(self, target):
        target.mkdir(parents=True, exist_ok=True)
        return measure(["borg", "extract", f"::a{self.archives}"], self.env, cwd=target)

    def forget_prune(self):
        a = measure(["borg", "prune", "--keep-last", "1"], self.env)
        b = measure(["borg", "compact"], self.env)
        return {"wall": a["wall"] + b["wall"], "cpu": a["cpu"] + b["cpu"], "rss_kib": max(a["rss_kib"], b["rss_kib"])}

    def check(self):
        return measure(["borg", "check", "--verify-data"], self.env)


# ---------------------------------------------------------------- main

STEPS = ["first backup", "second backup (churn)", "third backup (unchanged)", "restore latest",
         "forget + prune", "check --read-data"]


def run_tool(tool, data, work, skip, run):
    # Every run backs up and restores its own, never-deleted directories (all removed at the end):
    # ext4 skips recently deleted inodes when it allocates new ones, one inode-table lookup each,
    # so creating thousands of files right after deleting thousands costs several times more
    # kernel time than creating them on a settled file system, whichever tool does it.
    src = work / "trees" / f"src-{tool.name}-{run}"
    set_tree(data / "v1", src)
    tool.fresh()
    tool.init()
    results = {}

    def step(name, fn):
        before = dir_bytes(tool.repo)
        # Flush what the harness (copying the source trees) and earlier steps left dirty, so
        # that the kernel writing it back does not slow the step measured: each tool is timed
        # on its own work. A tool that leaves its writes in the page cache is not charged for
        # writing them back later; one that writes them out at once is.
        os.sync()
        r = fn()
        r["added"] = dir_bytes(tool.repo) - before
        results[name] = r

    step("first backup", lambda: tool.backup(src))
    sync_tree(data / "v2", src)
    step("second backup (churn)", lambda: tool.backup(src))
    step("third backup (unchanged)", lambda: tool.backup(src))
    target = work / "trees" / f"restore-{tool.name}-{run}"
    step("restore latest", lambda: tool.restore(target))
    results["repository after two backups"] = {"size": dir_bytes(tool.repo)}
    if "prune" not in skip:
        step("forget + prune", tool.forget_prune)
    if "check" not in skip:
        step("check --read-data", tool.check)
    return results


def dump_dedup(tool, data):
    tool.fresh()
    tool.init()
    tool.backup_stdin(data / "v1" / "db.dump", "db.dump")
    before = dir_bytes(tool.repo)
    os.sync()
    r = tool.backup_stdin(data / "dump-after-1000-tx.dump", "db.dump")
    r["added"] = dir_bytes(tool.repo) - before
    return r


# ext4 without a journal (this machine's root file system) will not reuse an inode deleted less
# than 60 s ago, or 360 s while its inode-table block is dirty - which every new inode allocated
# next to it makes it. It skips each such inode with one buffer-cache lookup per allocation, so
# creating thousands of files within 6 minutes of deleting thousands of others costs several
# times the kernel CPU (perf: ext4_create -> find_inode_bit -> recently_deleted), whichever tool
# creates them. The harness deletes its trees only at the end of an invocation, and an
# invocation starts no sooner than this after the last one deleted them.
SETTLE_AFTER_DELETION_S = 365


# One marker for every benchmark here (bench/offsite.py too): their work directories share a disk.
DELETION_MARKER = Path(tempfile.gettempdir()) / "coffer-bench-last-mass-deletion"


def note_mass_deletion():
    os.sync()
    DELETION_MARKER.write_text(f"{time.time()}\n")


def wait_out_deletions():
    marker = DELETION_MARKER
    try:
        since = time.time() - float(marker.read_text())
    except (OSError, ValueError):
        return
    if since < SETTLE_AFTER_DELETION_S:
        wait = SETTLE_AFTER_DELETION_S - since
        log(f"waiting {wait:.0f} s: trees were deleted {since:.0f} s ago and ext4 skips inodes "
            f"deleted in the last {SETTLE_AFTER_DELETION_S} s when it creates files")
        time.sleep(wait)


def fmt_bytes(n):
    for unit in ["B", "KiB", "MiB", "GiB"]:
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return str(n)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=int, default=10, help="pgbench scale (x100k rows) and uploads size factor")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "coffer-bench")
    ap.add_argument("--coffer", type=Path, default=Path(__file__).resolve().parent.parent / "target/release/coffer")
    ap.add_argument("--coffer-base", type=Path,
                    help="a second Coffer binary (e.g. built from the commit before a change), run in the "
                         "same invocation as `coffer-base` so that before and after share the machine's state")
    ap.add_argument("--skip", default="", help="comma-separated steps to skip: prune,check")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument("--tools", default="coffer,restic,rustic,borg",
                    help="tools to run, those not installed are skipped (restic is required)")
    ap.add_argument("--generate-only", action="store_true", help="generate the dataset and stop")
    args = ap.parse_args()

    if not args.coffer.exists():
        sys.exit(f"{args.coffer} missing: cargo build --release -p coffer-cli")
    if shutil.which("restic") is None:
        sys.exit("restic missing: apt-get install restic")
    args.workdir.mkdir(parents=True, exist_ok=True)
    data = make_dataset(args.workdir, args.scale)
    log(f"dataset: v1 {fmt_bytes(dir_bytes(data / 'v1'))}, v2 {fmt_bytes(dir_bytes(data / 'v2'))}")

    if args.generate_only:
        return
    trees = args.workdir / "trees"
    if trees.exists():
        shutil.rmtree(trees)
        note_mass_deletion()
    wait_out_deletions()
    wanted = set(args.tools.split(","))
    tools = [Coffer(args.workdir, args.coffer), Restic(args.workdir)]
    if args.coffer_base:
        if not args.coffer_base.exists():
            sys.exit(f"{args.coffer_base} missing")
        tools.insert(1, Coffer(args.workdir, args.coffer_base, name="coffer-base"))
    for cls, exe in ((Rustic, "rustic"), (Borg, "borg")):
        if cls.name in wanted:
            if shutil.which(exe):
                tools.append(cls(args.workdir))
            else:
                log(f"{exe} not installed: skipped")
    raw = {t.name: [] for t in tools}
    dedup = {t.name: [] for t in tools}
    for run in range(args.runs):
        order = tools[run % len(tools):] + tools[:run % len(tools)]
        for tool in order:
            log(f"run {run + 1}/{args.runs}: {tool.name}")
            raw[tool.name].append(run_tool(tool, data, args.workdir, set(args.skip.split(",")), run))
            dedup[tool.name].append(dump_dedup(tool, data))
        for tool in tools:
            tool.fresh()
    shutil.rmtree(trees, ignore_errors=True)
    note_mass_deletion()

    def med(name, step, key):
        vals = [r[step][key] for r in raw[name] if step in r]
        return statistics.median(vals) if vals else float("nan")

    print(f"\nDataset scale {args.scale}: v1 {fmt_bytes(dir_bytes(data / 'v1'))}; medians of {args.runs} runs\n")
    print("| step | tool | wall s | CPU s | peak RSS MiB | added | wall ratio /restic | RSS ratio /restic |")
    print("|---|---|---|---|---|---|---|---|")
    for step in STEPS:
        if not any(step in r for r in raw["coffer"]):
            continue
        for t in tools:
            wall, cpu, rss, added = (med(t.name, step, k) for k in ("wall", "cpu", "rss_kib", "added"))
            ratio = ""
            if t.name.startswith("coffer"):
                rw = med("restic", step, "wall")
                rr = med("restic", step, "rss_kib")
                ratio = f"{wall / rw:.2f} | {rss / rr:.2f}" if rw and rr else " | "
            else:
                ratio = " | "
            print(f"| {step} | {t.name} | {wall:.2f} | {cpu:.2f} | {rss / 1024:.0f} | {fmt_bytes(added)} | {ratio} |")
    print()
    for t in tools:
        size = statistics.median(r["repository after two backups"]["size"] for r in raw[t.name])
        print(f"repository size after two backups, {t.name}: {fmt_bytes(size)}")
    print("\nDump dedup (second -Fc -Z0 dump after 1,000 pgbench transactions, via stdin):")
    for t in tools:
        added = statistics.median(r["added"] for r in dedup[t.name])
        total = os.path.getsize(data / "dump-after-1000-tx.dump")
        print(f"  {t.name}: adds {fmt_bytes(added)} for a {fmt_bytes(total)} dump ({100 * added / total:.1f}%)")
    theirs = statistics.median(r["added"] for r in dedup["restic"])
    for t in tools:
        if t.name.startswith("coffer") and theirs:
            ours = statistics.median(r["added"] for r in dedup[t.name])
            print(f"  {t.name} / restic: {ours / theirs:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"raw": raw, "dedup": dedup}, indent=1))


if __name__ == "__main__":
    main()
