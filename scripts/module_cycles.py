#!/usr/bin/env python3
"""Fails on an import cycle between the top-level modules of a crate (default: worldland-core).

A module is a file or folder directly under src/; an arrow A -> B is any `crate::B` path in A's
non-test code (everything before its `#[cfg(test)]` module; `tests.rs` files are tests). Usage: module_cycles.py [SRC_DIR]
"""
import pathlib
import re
import sys

src = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "shared/core/src")
modules = {p.stem if p.is_file() else p.name for p in src.iterdir() if p.name not in ("lib.rs", "main.rs")}
edges = {m: set() for m in modules}
for path in src.rglob("*.rs"):
    rel = path.relative_to(src)
    if rel.name in ("lib.rs", "main.rs") and len(rel.parts) == 1 or rel.name == "tests.rs":
        continue
    owner = rel.parts[0].removesuffix(".rs")
    text = path.read_text()
    cut = re.search(r"^#\[cfg\(test\)\]\s*\n\s*mod tests", text, re.M)
    if cut:
        text = text[: cut.start()]
    text = re.sub(r"//.*", "", text)
    for target in re.findall(r"\bcrate::(\w+)", text):
        if target in modules and target != owner:
            edges[owner].add(target)
    # `use crate::{a, b::c}` groups
    for group in re.findall(r"\bcrate::\{([^}]*)\}", text, re.S):
        for target in re.findall(r"(?:^|,)\s*(\w+)", group):
            if target in modules and target != owner:
                edges[owner].add(target)

# Tarjan's strongly connected components: any with two or more modules is a cycle.
index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]


def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in sorted(edges[v]):
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop()
            on.discard(w)
            comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            cycles.append(sorted(comp))


for m in sorted(modules):
    if m not in index:
        visit(m)
if cycles:
    for comp in cycles:
        arrows = [f"{a} -> {b}" for a in comp for b in sorted(edges[a]) if b in comp]
        print(f"import cycle in {src}: {', '.join(comp)} ({'; '.join(arrows)})", file=sys.stderr)
    sys.exit(1)
print(f"[checks] no import cycle between the {len(modules)} modules of {src}", file=sys.stderr)
