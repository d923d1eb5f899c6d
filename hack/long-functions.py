#!/usr/bin/env python3
"""List Rust functions longer than a limit, outside tests.

Usage: hack/long-functions.py [--limit N] [--reasons] [PATH ...]   (default: src crates, limit 80)

A function is an `fn` item whose body is brace-matched after stripping comments, strings, char
literals and raw strings. Lines are counted from the `fn` line to the closing brace, inclusive.
Skipped: items under `#[cfg(test)]` (modules and single items), `#[test]`/`#[tokio::test]`
functions, files under `tests/`, `benches/` and files named `tests.rs`. Nested functions are
reported on their own and also counted in their parent.

A function may stay long when a comment in the three lines above its `fn` (or above its
attributes) starts with `// long:` and gives the reason; `--reasons` prints that reason, and the
exit status is 1 when a function over the limit has none.
"""
import os
import re
import sys

LONG_MARK = re.compile(r"//\s*long:\s*(.*)")


def strip(src):
    """Replace comments, strings and char literals with spaces, keeping newlines and offsets."""
    out = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif src.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", src[i:j]))
            i = j
        else:
            m = re.match(r'b?r(#*)"', src[i:i + 260]) if c in "br" and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")) else None
            if m:
                end = src.find('"' + m.group(1), i + m.end())
                end = n if end < 0 else end + 1 + len(m.group(1))
                out.append(re.sub(r"[^\n]", " ", src[i:end]))
                i = end
            elif c == '"':
                j = i + 1
                while j < n and src[j] != '"':
                    j += 2 if src[j] == "\\" else 1
                out.append(re.sub(r"[^\n]", " ", src[i:j + 1]))
                i = j + 1
            elif c == "'":
                # char literal ('x', '\n', '\u{..}') vs lifetime ('a)
                m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", src[i:i + 12])
                if m:
                    out.append(" " * m.end())
                    i += m.end()
                else:
                    out.append(c)
                    i += 1
            else:
                out.append(c)
                i += 1
    return "".join(out)


def match_brace(code, open_at):
    depth = 0
    for j in range(open_at, len(code)):
        if code[j] == "{":
            depth += 1
        elif code[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return len(code) - 1


def test_ranges(code):
    """Byte ranges of items marked #[cfg(test)], #[test] or #[tokio::test]."""
    ranges = []
    for m in re.finditer(r"#\[\s*(cfg\s*\(\s*test\s*\)|test|tokio::test[^\]]*)\s*\]", code):
        # the item the attribute applies to: the next `{` or `;` at depth 0
        j = m.end()
        while j < len(code) and code[j] not in "{;":
            j += 1
        if j < len(code) and code[j] == "{":
            ranges.append((m.start(), match_brace(code, j)))
        else:
            ranges.append((m.start(), j))
    return ranges


FN = re.compile(r"\bfn\s+([A-Za-z_][A-Za-z0-9_]*)")


def functions(path):
    with open(path, encoding="utf-8") as f:
        src = f.read()
    code = strip(src)
    lines = src.split("\n")
    skips = test_ranges(code)
    impl_of = impl_ranges(code)
    for m in FN.finditer(code):
        if any(a <= m.start() <= b for a, b in skips):
            continue
        j = m.end()
        depth = 0
        while j < len(code):
            ch = code[j]
            if ch in "(<[":
                depth += 1
            elif ch in ")>]":
                depth -= 1 if not (ch == ">" and code[j - 1] == "-") else 0
            elif ch == ";" and depth <= 0:
                j = -1  # declaration without a body (trait item)
                break
            elif ch == "{" and depth <= 0:
                break
            j += 1
        if j < 0 or j >= len(code):
            continue
        end = match_brace(code, j)
        first = code.count("\n", 0, m.start())
        last = code.count("\n", 0, end)
        name = m.group(1)
        owner = next((t for a, b, t in impl_of if a < m.start() < b), None)
        yield (f"{owner}::{name}" if owner else name), first + 1, last - first + 1, reason(lines, first)


def impl_ranges(code):
    out = []
    for m in re.finditer(r"\bimpl\b(?:\s*<[^{]*?>)?\s+([^{;]+?)\s*(?:where[^{]*)?\{", code):
        head = m.group(1)
        ty = head.split(" for ")[-1].strip()
        ty = re.sub(r"<.*", "", ty).split("::")[-1].strip()
        out.append((m.start(), match_brace(code, m.end() - 1), ty))
    return out


def reason(lines, first):
    k = first - 1
    seen = 0
    while k >= 0 and seen < 8:
        s = lines[k].strip()
        m = LONG_MARK.search(s)
        if m:
            return m.group(1).strip()
        if s.startswith("#[") or s.startswith("//") or s.startswith("///"):
            k -= 1
            seen += 1
            continue
        break
    return None


def rust_files(paths):
    for p in paths:
        if os.path.isfile(p):
            yield p
            continue
        for root, dirs, files in os.walk(p):
            dirs[:] = sorted(d for d in dirs if d not in ("tests", "benches", "target", ".git"))
            for f in sorted(files):
                if f.endswith(".rs") and f != "tests.rs":
                    yield os.path.join(root, f)


def main(argv):
    limit, show_reasons, paths = 80, False, []
    it = iter(argv)
    for a in it:
        if a == "--limit":
            limit = int(next(it))
        elif a == "--reasons":
            show_reasons = True
        else:
            paths.append(a)
    rows = []
    for path in rust_files(paths or ["src", "crates"]):
        for name, line, length, why in functions(path):
            if length > limit:
                rows.append((length, path, line, name, why))
    rows.sort(key=lambda r: (-r[0], r[1]))
    print(f"| file | function | lines |" + (" reason |" if show_reasons else ""))
    print("|---|---|---|" + ("---|" if show_reasons else ""))
    for length, path, line, name, why in rows:
        print(f"| {path}:{line} | {name} | {length} |" + (f" {why or '—'} |" if show_reasons else ""))
    unexplained = sum(1 for r in rows if not r[4])
    print(f"\n{len(rows)} functions over {limit} lines, {unexplained} without a `// long:` reason", file=sys.stderr)
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
