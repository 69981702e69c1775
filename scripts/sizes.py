#!/usr/bin/env python3
"""Fails when a source file grows past 700 lines or a function past 120
(docs/ARCHITECTURE.md), not counting `#[cfg(test)]` modules at the end of a
file. What was already over when the rule came is listed in
scripts/sizes-allowed.txt with its size then: it may shrink, never grow.

    python3 scripts/sizes.py [REPO_DIR]
"""
import re
import sys
from pathlib import Path

MAX_FILE, MAX_FN = 700, 120
repo = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
FN = re.compile(r"^(\s*)(?:pub(?:\([a-z]+\))? )?(?:async )?(?:unsafe )?fn (\w+)")


def code_of(text: str) -> list:
    cut = re.search(r"(?m)^#\[cfg\(test\)\]\s*\n\s*mod \w+\s*\{", text)
    return (text[: cut.start()] if cut else text).split("\n")


def sizes(path: Path):
    lines = code_of(path.read_text())
    yield "", len(lines)
    i = 0
    while i < len(lines):
        m = FN.match(lines[i])
        if m and not lines[i].rstrip().endswith(";"):
            indent = m.group(1)
            j = i + 1
            while j < len(lines) and lines[j].rstrip() != indent + "}":
                j += 1
            if j < len(lines):
                yield m.group(2), j - i + 1
        i += 1


def main() -> int:
    allowed = {}
    listed = repo / "scripts" / "sizes-allowed.txt"
    for line in listed.read_text().splitlines() if listed.exists() else []:
        if line.strip() and not line.startswith("#"):
            place, n = line.rsplit(" ", 1)
            allowed[place] = int(n)
    bad = []
    for path in sorted(repo.glob("crates/*/src/**/*.rs")):
        rel = path.relative_to(repo).as_posix()
        for name, n in sizes(path):
            limit = MAX_FN if name else MAX_FILE
            place = f"{rel}:{name}" if name else rel
            if n > max(limit, allowed.get(place, 0)):
                what = f"function {name}" if name else "file"
                was = f" (allowed {allowed[place]})" if place in allowed else ""
                bad.append(f"{place}: {what} of {n} lines, over {limit}{was}")
    for b in bad:
        print(b)
    if bad:
        print(f"{len(bad)} over the size limits: split them (docs/ARCHITECTURE.md)")
        return 1
    print(f"no file over {MAX_FILE} lines and no function over {MAX_FN}, but those listed in scripts/sizes-allowed.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
