#!/usr/bin/env python3
"""include-cycles.py — fails when the modules of src/ include each other in a circle.

A module is a .c file together with the header of the same name next to it
(src/core/runtime.c + src/core/runtime.h); a header without a .c of its own
(model.h, batch.h's batch.c is a module, runtime_state.h belongs to nobody)
is a module by itself.  Module A depends on module B when any file of A
includes a file of B (quoted includes, resolved against src/ and the file's
own directory).  A cycle means two parts of the code cannot be understood,
tested or replaced apart from each other, so CI refuses one.

    scripts/include-cycles.py            check src/, print the modules in dependency order
    scripts/include-cycles.py --quiet    only errors

Exit status 0 without cycles, 1 with (each cycle printed as a path).
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
INC = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def module_of(path):
    """src-relative path -> module name (path without extension)."""
    return os.path.splitext(path)[0]


def main():
    quiet = "--quiet" in sys.argv
    files = []
    for dp, _, fn in os.walk(ROOT):
        for f in fn:
            if f.endswith((".c", ".h")):
                files.append(os.path.relpath(os.path.join(dp, f), ROOT))
    known = set(files)
    deps = {}
    for f in files:
        m = module_of(f)
        deps.setdefault(m, set())
        with open(os.path.join(ROOT, f), encoding="utf-8", errors="replace") as fh:
            text = fh.read()
        for inc in INC.findall(text):
            cand = [inc, os.path.normpath(os.path.join(os.path.dirname(f), inc))]
            target = next((c for c in cand if c in known), None)
            if target is None:
                continue  # generated or system header
            t = module_of(target)
            if t != m:
                deps[m].add(t)

    # Tarjan's strongly connected components
    index, low, stack, on, sccs = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(deps.get(v, ())):
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
            sccs.append(comp)

    for v in sorted(deps):
        if v not in index:
            visit(v)
    cycles = [sorted(c) for c in sccs if len(c) > 1]
    if cycles:
        for c in cycles:
            print("include cycle among: " + ", ".join(c), file=sys.stderr)
            # one concrete path through the cycle
            members = set(c)
            start = c[0]
            path, cur, seen = [start], start, {start}
            while True:
                nxt = sorted(d for d in deps[cur] if d in members)
                step = next((n for n in nxt if n not in seen), nxt[0])
                path.append(step)
                if step in seen:
                    break
                seen.add(step)
                cur = step
            print("  e.g. " + " -> ".join(path), file=sys.stderr)
        return 1
    if not quiet:
        # Tarjan emits components dependencies-first: print that order
        for comp in sccs:
            m = comp[0]
            print(f"{m}: {' '.join(sorted(deps[m])) or '-'}")
        print(f"include-cycles: {len(deps)} modules, no cycle", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
