#!/usr/bin/env python3
"""Off-site benchmark: Coffer against restic on a real S3 server behind added network latency.

    python3 bench/offsite.py --rtt 0,20,80 --runs 3            # issue 19, item 5

A moto S3 server (the one the test suite uses, installed in /tmp/coffer-moto-venv on first use)
listens on one port; a small TCP proxy in front of it delays every chunk it forwards by half the
round trip in each direction (a delay line: a chunk is held until its time, chunks behind it are
not held longer, so throughput is not cut). The kernel here has no netem. Both tools talk only to
the proxy, with their default connection counts.

For each round trip time and run, each tool (in alternating order) gets a fresh bucket and:
backs up the dataset (v1), backs it up after churn (v2), backs it up unchanged, restores the
latest snapshot (checked against the source), checks every byte (`check --read-data`), forgets
all but the last snapshot and prunes in one process (`forget --prune`; Coffer with `--grace 0s`,
as restic's exclusive lock allows), and copies the repository into a second fresh bucket. Each step's wall time, and the
requests it made by method, counted from moto's request log.

The dataset (generated once per scale under --workdir; `--scale 1` is about 220 MB of v1 (the issue measured ~300 MB of a similar mix)):
2,000 small text files (1-20 KB), 30 incompressible binaries (1-5 MB), and a 100 MB dump-like
text file of rows; v2 rewrites 2% of the small files, replaces one binary and changes 1% of the
dump's rows. Sizes scale with --scale.

moto is a single Python process: it is itself part of every number here, for both tools. The
`--rtt 0` table shows what the server and the machine cost without added latency.
"""

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import note_mass_deletion, wait_out_deletions  # noqa: E402  (bench/run.py)

PASSWORD = "benchmark password"
ACCESS_KEY, SECRET_KEY = "AKIABENCH", "bench-secret"
VENV = Path("/tmp/coffer-moto-venv")
STEPS = ["backup 1", "backup 2", "backup 3", "restore", "check --read-data", "forget + prune", "copy"]


def log(msg):
    print(f"[offsite] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the delaying proxy


async def pump(reader, writer, delay):
    """Forwards everything from reader to writer, each chunk `delay` seconds after it came."""
    queue = asyncio.Queue()

    async def send():
        while True:
            due, data = await queue.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        writer.close()

    sender = asyncio.create_task(send())
    try:
        while True:
            data = await reader.read(256 * 1024)
            queue.put_nowait((time.monotonic() + delay, data))
            if not data:
                break
    except ConnectionError:
        queue.put_nowait((time.monotonic(), b""))
    await sender


def proxy_main(listen_port, target_port, one_way_ms):
    delay = one_way_ms / 1000

    async def handle(client_reader, client_writer):
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(pump(client_reader, server_writer, delay),
                             pump(server_reader, client_writer, delay), return_exceptions=True)

    async def serve():
        server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


# ---------------------------------------------------------------- servers


def moto_bin():
    bin_ = VENV / "bin/moto_server"
    if (VENV / ".coffer-ready").exists() and bin_.exists():
        return bin_
    log("installing moto into " + str(VENV))
    shutil.rmtree(VENV, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(VENV / "bin/pip"), "install", "--quiet", "moto[server]"], check=True)
    (VENV / ".coffer-ready").write_text("")
    return bin_


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port):
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"nothing answers on port {port}")


class Servers:
    """moto, with its request log in a file, and one proxy per round trip time."""

    def __init__(self, work):
        self.log_path = work / "moto.log"
        self.moto_port = free_port()
        self.moto = subprocess.Popen([str(moto_bin()), "-H", "127.0.0.1", "-p", str(self.moto_port)],
                                     stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT)
        wait_for(self.moto_port)
        self.proxies = {}

    def proxy(self, rtt_ms):
        if rtt_ms not in self.proxies:
            port = free_port()
            proc = subprocess.Popen([sys.executable, __file__, "--proxy", str(port), str(self.moto_port),
                                     str(rtt_ms / 2)])
            wait_for(port)
            self.proxies[rtt_ms] = (port, proc)
        return self.proxies[rtt_ms][0]

    def bucket(self, name):
        req = urllib.request.Request(f"http://127.0.0.1:{self.moto_port}/{name}", method="PUT")
        urllib.request.urlopen(req).read()

    def log_offset(self):
        return self.log_path.stat().st_size

    def requests_since(self, offset):
        """Requests by method logged since `offset` (LIST: a GET of a bucket's listing).

        moto's server colours the request line of every answer but a 200 with ANSI escapes
        (206 ranged GETs, 204 DELETEs, 404s): they are stripped before matching."""
        counts = {}
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            text = re.sub(r"\x1b\[[0-9;]*m", "", f.read().decode(errors="replace"))
            for line in text.splitlines():
                m = re.search(r'"(GET|PUT|POST|DELETE|HEAD) (\S+) HTTP/[\d.]+" (\d+)', line)
                if not m:
                    continue
                method, path = m.group(1), m.group(2)
                key, _, query = path.partition("?")
                bucket_only = key.strip("/").count("/") == 0
                if method == "GET" and bucket_only and re.search(r"list-type=|prefix=|delimiter=", query):
                    method = "LIST"
                counts[method] = counts.get(method, 0) + 1
        return counts

    def stop(self):
        for _, proc in self.proxies.values():
            proc.terminate()
        self.moto.terminate()


# ---------------------------------------------------------------- dataset


def generate(work, scale):
    # One directory per scale: switching scales deletes no dataset (a mass deletion slows the
    # restores that follow it, see one_run).
    root = work / f"data-{scale:g}"
    done = root / ".complete"
    if done.exists():
        return root
    if root.exists():
        shutil.rmtree(root)
        note_mass_deletion()
    rng = random.Random(19)
    v1 = root / "v1"
    (v1 / "uploads").mkdir(parents=True)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9)))
             for _ in range(5000)]

    def text(n):
        out, size = [], 0
        while size < n:
            w = rng.choice(words)
            out.append(w)
            size += len(w) + 1
        return " ".join(out).encode()[:n]

    small = max(1, int(2000 * scale))
    for i in range(small):
        (v1 / "uploads" / f"note-{i:05}.txt").write_bytes(text(rng.randint(1000, 20000)))
    for i in range(max(1, int(30 * scale))):
        (v1 / "uploads" / f"blob-{i:03}.bin").write_bytes(rng.randbytes(rng.randint(1, 5) << 20))
    rows = int(100e6 * scale) // 100
    with open(v1 / "app.dump", "wb") as f:
        for r in range(rows):
            f.write(b"%09d\t" % r + text(89) + b"\n")
    v2 = root / "v2"
    changed = []
    for i in rng.sample(range(small), max(1, small // 50)):
        changed.append((f"uploads/note-{i:05}.txt", text(rng.randint(1000, 20000))))
    changed.append(("uploads/blob-000.bin", rng.randbytes(3 << 20)))
    dump = bytearray((v1 / "app.dump").read_bytes())
    for r in rng.sample(range(rows), max(1, rows // 100)):
        dump[r * 100 + 10: r * 100 + 99] = text(89)
    changed.append(("app.dump", bytes(dump)))
    v2.mkdir()
    for rel, content in changed:
        (v2 / rel).parent.mkdir(parents=True, exist_ok=True)
        (v2 / rel).write_bytes(content)
    done.write_text("")
    return root


def tree_bytes(path):
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def same_tree(a, b):
    fa = sorted(p.relative_to(a) for p in Path(a).rglob("*") if p.is_file())
    fb = sorted(p.relative_to(b) for p in Path(b).rglob("*") if p.is_file())
    return fa == fb and all((Path(a) / p).read_bytes() == (Path(b) / p).read_bytes() for p in fa)


# ---------------------------------------------------------------- tools


def run(cmd, env, stdin=None):
    start = time.monotonic()
    proc = subprocess.run([str(c) for c in cmd], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, input=stdin)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n"
                           f"{proc.stderr.decode(errors='replace')}")
    return wall


class Coffer:
    name = "coffer"

    def __init__(self, binary, port, bucket, bucket2):
        self.bin = binary
        self.env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
                        AWS_REGION="us-east-1", AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
                        AWS_ALLOW_HTTP="true", COFFER_PASSWORD=PASSWORD, COFFER_PROGRESS_FPS="0",
                        COFFER_REPO=f"s3://{bucket}/repo")
        self.repo, self.repo2 = f"s3://{bucket}/repo", f"s3://{bucket2}/repo"

    def init(self):
        run([self.bin, "-q", "init"], self.env)
        run([self.bin, "-q", "init"], dict(self.env, COFFER_REPO=self.repo2))

    def steps(self, src, target):
        c = [self.bin, "-q"]
        return {
            "backup": lambda: run(c + ["backup", src], self.env),
            "restore": lambda: run(c + ["restore", "latest", "--target", target], self.env),
            "check --read-data": lambda: run(c + ["check", "--read-data"], self.env),
            "forget + prune": lambda: run(c + ["forget", "--keep-last", "1", "--prune", "--grace", "0s"],
                                          self.env),
            "copy": lambda: run(c + ["copy", "--from-repo", self.repo],
                                dict(self.env, COFFER_REPO=self.repo2, COFFER_FROM_PASSWORD=PASSWORD)),
        }


class Restic:
    name = "restic"

    def __init__(self, binary, port, bucket, bucket2, work):
        self.bin = binary
        base = f"s3:http://127.0.0.1:{port}"
        self.repo, self.repo2 = f"{base}/{bucket}/repo", f"{base}/{bucket2}/repo"
        self.pwfile = work / "restic-password"
        self.pwfile.write_text(PASSWORD)
        self.env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
                        RESTIC_PASSWORD=PASSWORD, RESTIC_REPOSITORY=self.repo,
                        RESTIC_CACHE_DIR=str(work / "restic-cache"))

    def init(self):
        run([self.bin, "init"], self.env)
        run([self.bin, "init"], dict(self.env, RESTIC_REPOSITORY=self.repo2))

    def steps(self, src, target):
        r = [self.bin, "-q"]
        return {
            "backup": lambda: run(r + ["backup", src], self.env),
            "restore": lambda: run(r + ["restore", "latest", "--target", target], self.env),
            "check --read-data": lambda: run(r + ["check", "--read-data"], self.env),
            "forget + prune": lambda: run(r + ["forget", "--keep-last", "1", "--prune"], self.env),
            "copy": lambda: run(r + ["copy", "--from-repo", self.repo, "--from-password-file", self.pwfile],
                                dict(self.env, RESTIC_REPOSITORY=self.repo2)),
        }


def one_run(tool, servers, data, work, label):
    """The steps of one tool into fresh buckets; {step: (wall, requests)}.

    Its source and restore trees are new directories, deleted only at the end of the invocation
    (see run.py's SETTLE_AFTER_DELETION_S: on this machine's journal-less ext4, creating files
    within minutes of deleting thousands costs several times the kernel time, whichever tool
    creates them, so deleting the last run's trees would slow the next run's restore)."""
    src = work / "trees" / f"src-{label}"
    target = work / "trees" / f"restored-{label}"
    shutil.rmtree(src, ignore_errors=True)
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(data / "v1", src)
    tool.init()
    steps = tool.steps(src, target)
    out = {}

    def timed(name, action):
        offset = servers.log_offset()
        wall = action()
        time.sleep(0.3)  # moto writes its log line after answering
        out[name] = (wall, servers.requests_since(offset))

    timed("backup 1", steps["backup"])
    for rel in (p.relative_to(data / "v2") for p in (data / "v2").rglob("*") if p.is_file()):
        shutil.copyfile(data / "v2" / rel, src / rel)
    timed("backup 2", steps["backup"])
    timed("backup 3", steps["backup"])
    timed("restore", steps["restore"])
    restored = target / str(src.resolve()).lstrip("/")
    if not same_tree(src, restored):
        raise RuntimeError(f"{tool.name}: the restore differs from the source")
    timed("check --read-data", steps["check --read-data"])
    timed("forget + prune", steps["forget + prune"])
    timed("copy", steps["copy"])
    return out


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--proxy":
        proxy_main(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rtt", default="0,20,80", help="round trip times in ms, comma-separated")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--scale", type=float, default=1.0, help="1 is about 220 MB")
    ap.add_argument("--workdir", default="/tmp/coffer-offsite")
    ap.add_argument("--coffer", default=str(Path(__file__).resolve().parent.parent / "target/release/coffer"))
    ap.add_argument("--restic", default=shutil.which("restic") or "restic")
    ap.add_argument("--json", help="write every measurement to this file")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    data = generate(work, args.scale)
    log(f"dataset: v1 {tree_bytes(data / 'v1') / 1e6:.0f} MB, v2 changes {tree_bytes(data / 'v2') / 1e6:.0f} MB")
    trees = work / "trees"
    if trees.exists():
        shutil.rmtree(trees)
        note_mass_deletion()
    wait_out_deletions()
    servers = Servers(work)
    results = {}  # (rtt, tool, step) -> [(wall, requests)]
    counter = 0
    try:
        for rtt in [int(x) for x in args.rtt.split(",")]:
            port = servers.proxy(rtt)
            for r in range(args.runs):
                order = ["coffer", "restic"] if (r % 2 == 0) else ["restic", "coffer"]
                for name in order:
                    counter += 1
                    b1, b2 = f"bench-{counter}-a", f"bench-{counter}-b"
                    servers.bucket(b1)
                    servers.bucket(b2)
                    tool = (Coffer(args.coffer, port, b1, b2) if name == "coffer"
                            else Restic(args.restic, port, b1, b2, work))
                    log(f"rtt {rtt} ms, run {r + 1}: {name}")
                    for step, m in one_run(tool, servers, data, work, f"{name}-{counter}").items():
                        results.setdefault((rtt, name, step), []).append(m)
    finally:
        servers.stop()
        shutil.rmtree(trees, ignore_errors=True)
        note_mass_deletion()
    if args.json:
        Path(args.json).write_text(json.dumps(
            [{"rtt_ms": k[0], "tool": k[1], "step": k[2], "runs": v} for k, v in results.items()], indent=1))
    report(results, args)


def report(results, args):
    rtts = sorted({k[0] for k in results})
    print(f"\nWall time, medians of {args.runs} runs (coffer / restic within each run, then the median)\n")
    print("| step | " + " | ".join(f"{t} ms: coffer | restic | ratio" for t in rtts) + " |")
    print("|---|" + "---|---|---|" * len(rtts))
    for step in STEPS:
        cells = []
        for t in rtts:
            c = [w for w, _ in results[(t, "coffer", step)]]
            r = [w for w, _ in results[(t, "restic", step)]]
            ratio = statistics.median(a / b for a, b in zip(c, r))
            cells.append(f"{statistics.median(c):.2f} s | {statistics.median(r):.2f} s | {ratio:.2f}")
        print(f"| {step} | " + " | ".join(cells) + " |")
    print("\nRequests by method (first run at the first round trip time; every run's counts are in --json)\n")
    print("| step | coffer | restic |")
    print("|---|---|---|")
    t = rtts[0]

    def fmt(counts):
        return ", ".join(f"{k} {counts[k]}" for k in ("GET", "LIST", "HEAD", "PUT", "POST", "DELETE") if k in counts)

    for step in STEPS:
        print(f"| {step} | {fmt(results[(t, 'coffer', step)][0][1])} | {fmt(results[(t, 'restic', step)][0][1])} |")


if __name__ == "__main__":
    main()
