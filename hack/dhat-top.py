#!/usr/bin/env python3
"""The top allocation sites of a dhat heap profile (dhat-heap.json from a `--features dhat-heap` build).

    hack/dhat-top.py target/bench-memory/dhat/dhat-n5000.json [--top 15] [--at gmax|end] [--depth 4]

`gmax` (default): bytes live at the global peak of the heap (`gb`), the figure peak RSS follows; `end`: bytes
still live when the process stopped (`eb`). Each site is named by its first frames outside the allocator,
the standard library's collections and dhat itself, so that a `Vec::push` is reported where it is called.
Sites with the same named frames are merged.
"""

import argparse
import json
import re
from collections import defaultdict

# Frames that say nothing about who allocates: the allocator, dhat, and the standard library's and
# hashbrown's collections (inlined frames carry no crate prefix, so their source file says it; in a
# `profiling` build the standard library's frames name `src/raw_vec/…`, `src/vec/…` without `alloc/`).
NOISE_SYMBOL = re.compile(
    r"^(\[root\]|<dhat::|dhat::|__rustc::|__rust|alloc::|<alloc::|core::|<core::|std::|<std::|hashbrown::|"
    r"<hashbrown::|<T as alloc|<\[T\]|<u8 as|<str as|<\[u8\]>|bytes::|<bytes::)"
)
NOISE_FILE = re.compile(
    r"\((alloc/src/|core/src/|std/src/|dhat-[0-9.]+/src/|bytes-[0-9.]+/src/|src/raw_vec/|src/vec/|src/boxed\.rs|src/string\.rs|src/sync\.rs|src/raw/|src/map\.rs|src/rustc_entry\.rs|src/set\.rs|\?\?\?)"
)


def noise(frame: str) -> bool:
    symbol = re.sub(r"^0x[0-9a-f]+: ", "", frame)
    if NOISE_SYMBOL.match(symbol):
        return True
    # An unknown file says nothing; a generic std name like `insert<...>` with a std file neither.
    return bool(NOISE_FILE.search(symbol)) and not re.match(r"^[<]?[a-z_0-9]+::[a-z_]", symbol)


def name(frame: str) -> str:
    # "0xADDR: symbol (path/file.rs:LINE:COL)" -> "symbol (file.rs:LINE)"
    frame = re.sub(r"^0x[0-9a-f]+: ", "", frame)
    frame = re.sub(r"::h[0-9a-f]{16}", "", frame)
    frame = re.sub(r"\(([^()]*/)?([^/()]+\.rs):(\d+):\d+\)$", r"(\2:\3)", frame)
    return frame


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("profile")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--at", choices=["gmax", "end"], default="gmax")
    parser.add_argument("--depth", type=int, default=3)
    args = parser.parse_args()
    with open(args.profile) as f:
        profile = json.load(f)
    frames = profile["ftbl"]
    bytes_key, blocks_key = ("gb", "gbk") if args.at == "gmax" else ("eb", "ebk")
    sites = defaultdict(lambda: [0, 0])
    total = 0
    for pp in profile["pps"]:
        live = pp[bytes_key]
        total += live
        if live == 0:
            continue
        named = [frames[i] for i in pp["fs"] if not noise(frames[i])]
        key = " <- ".join(name(f) for f in named[: args.depth]) or "(allocator only)"
        sites[key][0] += live
        sites[key][1] += pp[blocks_key]
    print(f"{args.profile}: {total / 1048576:.1f} MiB live at {args.at} in {len(profile['pps'])} sites")
    print("| MiB | share | blocks | site (first frames outside the allocator and collections) |")
    print("|---|---|---|---|")
    for key, (live, blocks) in sorted(sites.items(), key=lambda kv: -kv[1][0])[: args.top]:
        print(f"| {live / 1048576:.2f} | {100 * live / max(total, 1):.1f} % | {blocks} | {key} |")


if __name__ == "__main__":
    main()
