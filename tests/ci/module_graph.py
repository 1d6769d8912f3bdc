#!/usr/bin/env python3
"""Checks that failway's top-level modules (and the folders inside them)
form a graph without cycles: a module names another through `crate::X`
(in `use` lines or paths), `super::` climbing out of its folder counts as
naming the sibling. Prints the edges with --print; exits 1 naming each
cycle found. Test code (`tests.rs`, `#[cfg(test)]` blocks) is left out:
tests may reach anywhere."""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "src"


def strip_tests(text: str) -> str:
    # Drop `#[cfg(test)] mod x { ... }` blocks by brace matching.
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    text = "".join(out)
    return re.sub(r"//[^\n]*", "", text)


def module_of(path: Path, depth: int) -> tuple[str, ...]:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = [p for p in rel.parts if p != "mod"]
    return tuple(parts[:depth])


def graph(depth: int) -> dict:
    edges: dict = {}
    for f in ROOT.rglob("*.rs"):
        if f.name in ("tests.rs", "main.rs", "lib.rs") or "tests" in f.parts[len(ROOT.parts):-1]:
            continue
        src = module_of(f, depth)
        if len(src) < depth and depth > 1:
            continue
        text = strip_tests(f.read_text())
        for m in re.finditer(r"\bcrate::((?:\w+::)*\w+)", text):
            parts = tuple(m.group(1).split("::"))
            # Only paths into modules (the last part may be an item).
            dst = parts[:depth]
            if len(dst) < depth or dst[:len(src) - 1] != src[:-1] and depth > 1:
                if depth == 1:
                    pass
                else:
                    continue
            if not (ROOT / Path(*dst)).with_suffix(".rs").exists() and not (ROOT / Path(*dst) / "mod.rs").exists():
                continue
            if dst != src:
                edges.setdefault(src, set()).add(dst)
    return edges


def cycles(edges: dict) -> list:
    found, state = [], {}

    def visit(n, stack):
        state[n] = 1
        stack.append(n)
        for d in sorted(edges.get(n, ())):
            if state.get(d) == 1:
                found.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d, stack)
        stack.pop()
        state[n] = 2

    for n in sorted(edges):
        if n not in state:
            visit(n, [])
    return found


def main() -> int:
    edges = graph(1)
    if "--print" in sys.argv:
        for s in sorted(edges):
            print("::".join(s), "->", ", ".join(sorted("::".join(d) for d in edges[s])))
    bad = cycles(edges)
    for c in bad:
        print("module cycle:", " -> ".join("::".join(p) for p in c), file=sys.stderr)
    if not bad:
        print(f"module graph: {len(edges)} top-level modules, no cycle")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
