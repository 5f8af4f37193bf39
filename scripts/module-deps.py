#!/usr/bin/env python3
"""Which modules of a crate name which (`crate::m` paths, `use` groups
included), and the import circles among them.

    scripts/module-deps.py crates/tenantfusion/src          # edges, then circles
    scripts/module-deps.py --check crates/tenantfusion/src  # exit 1 on a circle
    scripts/module-deps.py --check                          # every crate (CI)

A module is a top-level file (or directory) of `src`; `#[cfg(test)]` code
counts too, since a test module that needs a circle shows one. Given a
module directory instead (one with a `mod.rs`), its children are checked
against each other through `super::` paths; `mod.rs` is their parent, whose
items they may all use.
"""
import os
import re
import sys


def top_modules(src):
    mods = {}
    for name in os.listdir(src):
        path = os.path.join(src, name)
        if name.endswith(".rs") and name not in ("lib.rs", "main.rs", "mod.rs"):
            mods[name[:-3]] = [path]
        elif os.path.isdir(path):
            files = []
            for root, _, names in os.walk(path):
                files += [os.path.join(root, n) for n in names if n.endswith(".rs")]
            mods[name] = files
    return mods


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def named(text, mods, prefix):
    """Modules of `mods` that `text` names through `prefix` (`crate::`, or
    `super::` among the children of a module directory)."""
    found = set()
    for m in re.finditer(r"\b" + prefix, text):
        rest = text[m.end():]
        if rest.startswith("{"):
            depth, i = 0, 0
            for i, c in enumerate(rest):
                depth += c == "{"
                depth -= c == "}"
                if depth == 0:
                    break
            group = rest[1:i]
            # Only the names at the group's first level.
            level, item, items = 0, "", []
            for c in group:
                if c in "{":
                    level += 1
                elif c in "}":
                    level -= 1
                elif c == "," and level == 0:
                    items.append(item)
                    item = ""
                    continue
                item += c
            items.append(item)
            for it in items:
                head = re.match(r"\s*([a-z_][a-z0-9_]*)", it)
                if head:
                    found.add(head.group(1))
        else:
            head = re.match(r"([a-z_][a-z0-9_]*)", rest)
            if head:
                found.add(head.group(1))
    return {f for f in found if f in mods}


def circles(edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

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
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def main():
    args = sys.argv[1:]
    check = "--check" in args
    args = [a for a in args if a != "--check"]
    if not args:
        # Every crate's modules, and the children of every module directory.
        root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates")
        for crate in sorted(os.listdir(root)):
            src = os.path.join(root, crate, "src")
            for here, _, names in sorted(os.walk(src)):
                if here == src or "mod.rs" in names:
                    args.append(os.path.relpath(here))
    failed = False
    for src in args:
        mods = top_modules(src)
        prefix = "super::" if os.path.exists(os.path.join(src, "mod.rs")) else "crate::"
        edges = {}
        for m, files in mods.items():
            text = "".join(strip_comments(open(f).read()) for f in files)
            edges[m] = named(text, mods, prefix) - {m}
        if not check:
            for m in sorted(edges):
                print(f"{m} -> {' '.join(sorted(edges[m]))}")
        found = circles(edges)
        for comp in found:
            print(f"{src}: import circle: {' '.join(comp)}")
        failed |= bool(found)
        if not found:
            print(f"{src}: no import circle among {len(mods)} modules")
    sys.exit(1 if failed and check else 0)


main()
