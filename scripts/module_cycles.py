#!/usr/bin/env python3
"""Fails when the modules (or the folders) of a crate import each other in a circle.

Reads every `crates/*/src/**/*.rs`, takes each file as one module, and
draws an arrow from a module to every module of the same crate it names
with `crate::...` or `super::...` (in `use` lines and in paths), leaving out
`#[cfg(test)]` modules at the end of a file. Folders are checked too: an
arrow between files of two folders (or a folder and a file beside it) is an
arrow between them. Prints every circle it finds,
with the names that tie it, and exits 1; exits 0 when there are none.

    python3 scripts/module_cycles.py [REPO_DIR]
"""
import re
import sys
from pathlib import Path

repo = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
PATH = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
GROUP = re.compile(r"\b(crate|super)::\{([^;]*?)\};", re.S)


def module_of(src: Path, f: Path) -> tuple:
    parts = list(f.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("lib", "main", "mod"):
        parts = parts[:-1]
    return tuple(parts)


def without_tests(text: str) -> str:
    cut = re.search(r"#\[cfg\(test\)\]\s*mod \w+\s*\{", text)
    return text[: cut.start()] if cut else text


def paths_in(text: str):
    """Every `crate::a::b` / `super::a` path, groups `crate::{a, b::c}` expanded."""
    for m in GROUP.finditer(text):
        for piece in re.split(r",", re.sub(r"\{[^{}]*\}", "", m.group(2))):
            piece = piece.strip()
            if piece:
                yield m.group(1), ["" ] + piece.split("::")
    for m in PATH.finditer(text):
        yield m.group(1), m.group(2).split("::")


def reexports(root: Path) -> dict:
    """Names the crate root re-exports (`pub use module::{A, b::C}`), each to its module's path."""
    out = {}
    if not root.exists():
        return out
    text = re.sub(r"//[^\n]*", "", root.read_text())
    for m in re.finditer(r"pub use (\w+)((?:::\w+)*)::\{([^;]*?)\};", text, re.S):
        for piece in m.group(3).split(","):
            segs = [p for p in piece.strip().split("::") if p]
            if segs:
                out[segs[-1].split(" as ")[-1].strip()] = [m.group(1)] + [x for x in m.group(2).split("::") if x] + segs
    for m in re.finditer(r"pub use (\w+)((?:::\w+)+);", text):
        segs = [m.group(1)] + [x for x in m.group(2).split("::") if x]
        out[segs[-1]] = segs
    return out


def circles(edges: dict) -> list:
    """The strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
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
                comps.append(sorted(comp))

    sys.setrecursionlimit(10000)
    nodes = set(edges) | {w for targets in edges.values() for w in targets}
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return comps


def main() -> int:
    found = 0
    for src in sorted(repo.glob("crates/*/src")):
        files = {module_of(src, f): f for f in src.rglob("*.rs")}
        crate_root = src / "lib.rs" if (src / "lib.rs").exists() else src / "main.rs"
        exported = reexports(crate_root)
        edges = {}
        for mod, f in files.items():
            text = re.sub(r"//[^\n]*", "", without_tests(f.read_text()))
            is_dir_module = f.stem in ("lib", "main", "mod")
            for root, segs in paths_in(text):
                segs = [s for s in segs if s]
                if root == "crate":
                    base = []
                    if segs and segs[0] in exported and f != crate_root:
                        segs = exported[segs[0]] + segs[1:]
                else:  # super: the parent of this module
                    base = list(mod[:-1]) if not is_dir_module else list(mod[:-1])
                target = None
                full = base + segs
                for n in range(len(full), 0, -1):
                    if tuple(full[:n]) in files:
                        target = tuple(full[:n])
                        break
                if target is None or target == mod or target == ():
                    continue
                # a module reaching into its own submodules is no arrow upward
                if target[: len(mod)] == mod and mod != ():
                    continue
                names = edges.setdefault(mod, {}).setdefault(target, set())
                names.add(segs[-1] if segs else "")
        crate = src.parent.name
        rooms = {}
        for a, targets in edges.items():
            for b, names in targets.items():
                if len(a) > 1 or len(b) > 1:  # at least one side is inside a folder
                    ra, rb = a[:1], b[:1]
                    if ra != rb and ra and rb:
                        rooms.setdefault(ra, {}).setdefault(rb, set()).update(names)
        for level, graph in (("modules", edges), ("folders", rooms)):
            for comp in circles(graph):
                found += 1
                name = lambda m: "::".join(m) or "(crate root)"
                print(f"{crate}: {level} in a circle: {', '.join(name(m) for m in comp)}")
                for a in comp:
                    for b, names in sorted(graph.get(a, {}).items()):
                        if b in comp:
                            print(f"  {name(a)} -> {name(b)}: {', '.join(sorted(names))}")
    if found:
        print(f"{found} circle(s) between modules or folders; docs/ARCHITECTURE.md says what each room may import")
        return 1
    print("no circles between the modules, or the folders, of any crate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
