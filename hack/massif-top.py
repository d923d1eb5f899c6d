#!/usr/bin/env python3
"""The top allocation sites at the heap's peak in a valgrind massif profile of a release binary.

    valgrind --tool=massif --threshold=0.5 --depth=40 --massif-out-file=F tencent-cert-operator run ...
    hack/massif-top.py F [--top 15] [--depth 2]

Massif needs no special build: it profiles the very binary a benchmark measured (the release build keeps its
symbol table; fat LTO inlines much, so a site is the outermost function that was not inlined). Each site is
named by its first `--depth` frames outside the allocator and the standard collections (the rules of
`hack/dhat-top.py`), so that a `Vec::push` is reported where it is called. Bytes are those live at massif's
peak snapshot; sites below massif's `--threshold` are reported as one line.
"""
import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
dhat_top = __import__("dhat-top")

LINE = re.compile(r"^(\s*)n(\d+): (\d+) (.*)$")


def parse_peak(text: str):
    """The peak snapshot's tree as (bytes, frame, children) nodes."""
    snapshots = text.split("#-----------\nsnapshot=")
    peak = next((s for s in snapshots if "heap_tree=peak" in s), None)
    if peak is None:
        raise SystemExit("no peak snapshot in the profile")
    lines = peak.split("heap_tree=peak\n", 1)[1].splitlines()
    pos = 0

    def node():
        nonlocal pos
        match = LINE.match(lines[pos])
        pos += 1
        count, size, frame = int(match.group(2)), int(match.group(3)), match.group(4)
        children = [node() for _ in range(count)]
        return size, frame, children

    return node()


def symbol(frame: str) -> str:
    # "0xADDR: symbol (in /path/binary)" (massif writes the address in capitals) -> "symbol"
    frame = re.sub(r"^0x[0-9A-Fa-f]+: ", "", frame)
    return re.sub(r" \(in [^)]*\)$", "", frame)


def frame_name(frame: str) -> str:
    return dhat_top.name(symbol(frame))


def noise(frame: str) -> bool:
    if frame.startswith("in ") and "places" in frame:
        return False
    return dhat_top.noise(symbol(frame)) or symbol(frame) in ("malloc", "realloc", "calloc")


def sites(tree, depth: int):
    out = defaultdict(int)

    def walk(node, named):
        size, frame, children = node
        if not noise(frame):
            named = named + [frame_name(frame)]
        if len(named) >= depth or not children:
            out[" <- ".join(named) or frame_name(frame)] += size
            return
        for child in children:
            walk(child, named)
        rest = size - sum(child[0] for child in children)
        if rest > 0:
            out[" <- ".join(named + ["…"])] += rest

    size, _, children = tree
    for child in children:
        walk(child, [])
    return size, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("profile")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--depth", type=int, default=2)
    args = parser.parse_args()
    total, found = sites(parse_peak(Path(args.profile).read_text()), args.depth)
    print(f"heap at the peak: {total / 2**20:.2f} MiB\n")
    print("| MiB | share | site |\n|---|---|---|")
    for site, size in sorted(found.items(), key=lambda item: -item[1])[: args.top]:
        print(f"| {size / 2**20:.2f} | {100 * size / total:.1f} % | {site} |")


if __name__ == "__main__":
    main()
