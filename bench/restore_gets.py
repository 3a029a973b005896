#!/usr/bin/env python3
"""Pack GETs of a restore from S3, counted per pack: is any pack fetched twice?

    python3 bench/restore_gets.py --scale 1 --restores 3 [--coffer PATH]

Uses bench/offsite.py's moto server and dataset (no added latency): backs up its v1 data, then v2
over it, then restores the latest snapshot --restores times, and prints for each restore its wall
time, the GETs of pack objects in moto's request log, how many packs they touched, and the packs
fetched more than once. Issue 19 asks for no more GETs than packs touched.
"""

import argparse
import collections
import re
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import offsite  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="as bench/offsite.py: 1 is about 220 MB")
    ap.add_argument("--restores", type=int, default=3)
    ap.add_argument("--workdir", default="/tmp/coffer-offsite")
    ap.add_argument("--coffer", default=str(Path(__file__).resolve().parent.parent / "target/release/coffer"))
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    data = offsite.generate(work, args.scale)
    servers = offsite.Servers(work)
    try:
        port = servers.proxy(0)
        servers.bucket("gets-a")
        servers.bucket("gets-b")
        tool = offsite.Coffer(args.coffer, port, "gets-a", "gets-b")
        cache = work / "gets-cache"
        shutil.rmtree(cache, ignore_errors=True)
        tool.env["XDG_CACHE_HOME"] = str(cache)
        src = work / "src-gets"
        shutil.rmtree(src, ignore_errors=True)
        shutil.copytree(data / "v1", src)
        tool.init()
        backup = tool.steps(src, None)["backup"]
        backup()
        for rel in (p.relative_to(data / "v2") for p in (data / "v2").rglob("*") if p.is_file()):
            shutil.copyfile(data / "v2" / rel, src / rel)
        backup()
        for i in range(args.restores):
            target = work / f"gets-target-{i}"
            shutil.rmtree(target, ignore_errors=True)
            offset = servers.log_offset()
            wall = offsite.run([args.coffer, "-q", "restore", "latest", "--target", target], tool.env)
            time.sleep(0.5)  # moto writes its log line after answering
            with open(servers.log_path, "rb") as f:
                f.seek(offset)
                text = re.sub(r"\x1b\[[0-9;]*m", "", f.read().decode(errors="replace"))
            gets = collections.Counter(m.group(1) for m in re.finditer(r'"GET (/gets-a/repo/data/\S+) HTTP', text))
            twice = [(k.rsplit("/", 1)[-1][:12], n) for k, n in gets.items() if n > 1]
            print(f"restore {i + 1}: {wall:.2f} s, pack GETs {sum(gets.values())}, packs {len(gets)}, "
                  f"fetched more than once: {twice or 'none'}", flush=True)
        shutil.rmtree(src)
    finally:
        servers.stop()


if __name__ == "__main__":
    main()
