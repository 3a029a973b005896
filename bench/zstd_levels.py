#!/usr/bin/env python3
"""Size and speed of zstd levels 1-3 on data cut into blocks, the way Coffer stores blobs.

    pip install zstandard
    python3 bench/zstd_levels.py [--block-kib 16] [--limit-mib 60] NAME=PATH_OR_GLOB ...

Each corpus is the concatenation of the files a glob matches (in name order, up to
--limit-mib), cut into blocks of --block-kib (16 KiB: the average dump chunk; 1024: the
average file chunk), each block compressed on its own. Prints, per level, the compressed size
as a share of the input and the compression speed on one core. This is how
docs/benchmarks.md ("Compression of dump chunks") chose the default dump compression level.
"""

import argparse
import glob
import time

import zstandard


def corpus(pattern, limit):
    out = bytearray()
    for path in sorted(glob.glob(pattern, recursive=True)):
        try:
            with open(path, "rb") as f:
                out += f.read(limit - len(out))
        except OSError:
            continue
        if len(out) >= limit:
            break
    return bytes(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--block-kib", type=int, default=16)
    ap.add_argument("--limit-mib", type=int, default=60)
    ap.add_argument("corpora", nargs="+", metavar="NAME=PATH_OR_GLOB")
    args = ap.parse_args()
    block = args.block_kib * 1024
    print(f"zstd {'.'.join(map(str, zstandard.ZSTD_VERSION))}, blocks of {args.block_kib} KiB")
    print("| corpus | MiB | " + " | ".join(f"level {l} size | level {l} MB/s" for l in (1, 2, 3)) + " |")
    print("|---|---|" + "---|---|" * 3)
    for spec in args.corpora:
        name, _, pattern = spec.partition("=")
        data = corpus(pattern, args.limit_mib << 20)
        if not data:
            print(f"| {name} | no data | |")
            continue
        cells = []
        for level in (1, 2, 3):
            c = zstandard.ZstdCompressor(level=level)
            start = time.perf_counter()
            size = sum(len(c.compress(data[i:i + block])) for i in range(0, len(data), block))
            seconds = time.perf_counter() - start
            cells.append(f"{100 * size / len(data):.1f}% | {len(data) / seconds / 1e6:.0f}")
        print(f"| {name} | {len(data) >> 20} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
