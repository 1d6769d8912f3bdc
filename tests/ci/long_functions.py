#!/usr/bin/env python3
"""Lists functions in src/ longer than a limit (default 100 lines), test code
left out (`tests.rs`, files under a `tests/` folder, `#[cfg(test)]` modules).
Exits 1 when any is found. A function's length runs from its `fn` line to
its closing brace, found by brace matching outside strings and comments."""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "src"
LIMIT = int(sys.argv[1]) if len(sys.argv) > 1 else 100


def code_mask(text: str) -> str:
    """The text with strings, chars and comments blanked (same length)."""
    out = list(text)
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            for k in range(i, j):
                out[k] = " "
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            for k in range(i, j):
                if out[k] != "\n":
                    out[k] = " "
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + len(m.group(0)))
            j = n if j < 0 else j + len(end)
            for k in range(i, j):
                if out[k] != "\n":
                    out[k] = " "
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            for k in range(i, min(j + 1, n)):
                if out[k] != "\n":
                    out[k] = " "
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 4]):
            m = re.match(r"'(\\.|[^\\'])'", text[i:])
            for k in range(i, i + len(m.group(0))):
                out[k] = " "
            i += len(m.group(0))
        else:
            i += 1
    return "".join(out)


def matching(mask: str, open_at: int) -> int:
    depth = 0
    for j in range(open_at, len(mask)):
        if mask[j] == "{":
            depth += 1
        elif mask[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return len(mask) - 1


def test_spans(mask: str) -> list:
    spans = []
    for m in re.finditer(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", mask):
        spans.append((m.start(), matching(mask, m.end() - 1)))
    return spans


def main() -> int:
    long = []
    for f in sorted(ROOT.rglob("*.rs")):
        rel = f.relative_to(ROOT)
        if f.name == "tests.rs" or "tests" in rel.parts[:-1]:
            continue
        text = f.read_text()
        mask = code_mask(text)
        skip = test_spans(mask)
        for m in re.finditer(r"\bfn\s+(\w+)[^;{]*\{", mask):
            if any(a <= m.start() <= b for a, b in skip):
                continue
            end = matching(mask, m.end() - 1)
            start_line = mask.count("\n", 0, m.start()) + 1
            lines = mask.count("\n", m.start(), end) + 1
            if lines > LIMIT:
                long.append((lines, f"{rel}:{start_line}", m.group(1)))
    for lines, where, name in sorted(long, reverse=True):
        print(f"{where}: fn {name} is {lines} lines (limit {LIMIT})", file=sys.stderr)
    if not long:
        print(f"long functions: none over {LIMIT} lines in src/")
    return 1 if long else 0


if __name__ == "__main__":
    sys.exit(main())
