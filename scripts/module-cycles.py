#!/usr/bin/env python3
"""Fail if any crate in the workspace has an import cycle between its modules.

    scripts/module-cycles.py            every crate (src/ of each workspace member)
    scripts/module-cycles.py gateway    one crate directory
    scripts/module-cycles.py --graph gateway   also print every edge

A module "uses" another when its code names a path into it (`use crate::relay::Relay`,
`super::frame::Frame`, `crate::hub::Hub::new()`). Items re-exported with `pub use` count
as living where they are defined. Edges between a module and its own ancestors or
descendants are not cycles (a parent re-exporting its children is normal); every other
edge is lifted to the two sibling modules under their common parent, and each set of
siblings must form a directed acyclic graph. Test modules (`#[cfg(test)] mod ...`,
`tests.rs`) are left out, as the compiled crate leaves them out.

This is a textual reading of the source, not the compiler's: it understands the usual
forms of `use` (groups, renames, `self`, `super`, globs) and written-out paths. It is
strict where it is unsure: a path that names a module counts as a use of that module.
"""

import os
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MOD_DECL = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+([a-z_][a-z0-9_]*)\s*([;{])", re.M)
CFG_TEST = re.compile(r"#\[cfg\(test\)\]\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\([^)]*\))?\s+)?mod\s+([a-z_][a-z0-9_]*)\s*([;{])")
USE_STMT = re.compile(r"\b(pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", re.S)
INLINE_PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")


def strip_comments_and_strings(text):
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:i + 40]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'r(#*)"', text[i:])
            end = text.find('"' + m.group(1), i + len(m.group(0)))
            i = n if end < 0 else end + 1 + len(m.group(1))
            out.append('""')
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            out.append('""')
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 12]):
            i += len(re.match(r"'(\\[^']*|[^\\'])'", text[i:]).group(0))
            out.append("' '")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def block_end(text, open_brace):
    depth = 0
    for k in range(open_brace, len(text)):
        if text[k] == "{":
            depth += 1
        elif text[k] == "}":
            depth -= 1
            if depth == 0:
                return k + 1
    return len(text)


def expand_use(tree):
    """`a::{b, c::{d as e, self}}` -> [["a","b"], ["a","c","d"], ["a","c"]]."""
    tree = re.sub(r"\s+", "", tree)

    def parse(s):
        # split top-level commas
        parts, depth, cur = [], 0, ""
        for ch in s:
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
            else:
                cur += ch
        if cur:
            parts.append(cur)
        result = []
        for p in parts:
            if "{" in p:
                head, inner = p.split("{", 1)
                inner = inner[: inner.rfind("}")]
                head = [x for x in head.split("::") if x]
                for tail in parse(inner):
                    if tail == ["self"]:
                        result.append(head)
                    else:
                        result.append(head + tail)
            else:
                p = re.sub(r"as[A-Za-z_][A-Za-z0-9_]*$", "", p) if "as" in p else p
                result.append([x for x in p.split("::") if x])
        return result

    # `as` renames were glued by whitespace removal: drop them before parsing
    tree = re.sub(r"(?<=[A-Za-z0-9_])as(?=[A-Za-z_][A-Za-z0-9_]*(,|\}|$))", " as ", tree)
    tree = re.sub(r" as [A-Za-z_][A-Za-z0-9_]*", "", tree)
    return [p for p in parse(tree) if p]


class Crate:
    def __init__(self, src):
        self.src = src
        self.modules = {}  # tuple path -> code (tests removed)
        self.reexports = {}  # module path -> {name: absolute path list}
        for root in ("lib.rs", "main.rs"):
            if (src / root).exists():
                self.load((), src / root, src, root == "lib.rs")
                break

    def load(self, path, file, directory, _is_root):
        text = strip_comments_and_strings(file.read_text())
        text = self.drop_tests(text)
        self.modules[path] = ""
        pieces, pos = [], 0
        for m in MOD_DECL.finditer(text):
            if m.start() < pos:
                continue
            name = m.group(1)
            if m.group(2) == "{":
                start = m.end() - 1
                end = block_end(text, start)
                pieces.append(text[pos:m.start()])
                self.load_inline(path + (name,), text[start + 1:end - 1], directory / name)
                pos = end
            else:
                for cand in (directory / f"{name}.rs", directory / name / "mod.rs"):
                    if cand.exists():
                        self.load(path + (name,), cand, directory / name, False)
                        break
        pieces.append(text[pos:])
        self.modules[path] = "".join(pieces)

    def load_inline(self, path, body, directory):
        self.modules[path] = ""
        pieces, pos = [], 0
        for m in MOD_DECL.finditer(body):
            if m.start() < pos:
                continue
            if m.group(2) == "{":
                start = m.end() - 1
                end = block_end(body, start)
                pieces.append(body[pos:m.start()])
                self.load_inline(path + (m.group(1),), body[start + 1:end - 1], directory / m.group(1))
                pos = end
        pieces.append(body[pos:])
        self.modules[path] = "".join(pieces)

    @staticmethod
    def drop_tests(text):
        while True:
            m = CFG_TEST.search(text)
            if not m:
                return text
            if m.group(2) == ";":
                text = text[: m.start()] + text[m.end():]
            else:
                text = text[: m.start()] + text[block_end(text, m.end() - 1):]

    def absolute(self, here, parts):
        if not parts:
            return None
        if parts[0] == "crate":
            return list(parts[1:])
        if parts[0] in ("self", "super"):
            base = list(here)
            i = 0
            while i < len(parts) and parts[i] in ("self", "super"):
                if parts[i] == "super":
                    if not base:
                        return None
                    base.pop()
                i += 1
            return base + list(parts[i:])
        # a bare path: an item of this module's child module, or an external crate
        if tuple(here) + (parts[0],) in self.modules:
            return list(here) + list(parts)
        return None

    def module_of(self, path, seen=None):
        """The module a path points into, following `pub use` re-exports."""
        seen = seen or set()
        best = ()
        for k in range(len(path), -1, -1):
            if tuple(path[:k]) in self.modules:
                best = tuple(path[:k])
                rest = path[k:]
                break
        if rest and best in self.reexports and rest[0] in self.reexports[best]:
            key = (best, rest[0])
            if key not in seen:
                seen.add(key)
                target = self.reexports[best][rest[0]]
                return self.module_of(list(target) + list(rest[1:]), seen)
        return best

    def collect(self):
        uses = {}
        for here, code in self.modules.items():
            paths = []
            for m in USE_STMT.finditer(code):
                for parts in expand_use(m.group(2)):
                    if parts and parts[-1] == "*":
                        parts = parts[:-1]
                    ab = self.absolute(here, parts)
                    if ab is None:
                        continue
                    paths.append(ab)
                    if m.group(1):
                        self.reexports.setdefault(here, {})[ab[-1] if ab else ""] = ab
            for m in INLINE_PATH.finditer(code):
                parts = [m.group(1)] + [p for p in m.group(2).split("::") if p]
                ab = self.absolute(here, parts)
                if ab is not None:
                    paths.append(ab)
            uses[here] = paths
        edges = set()
        for here, paths in uses.items():
            for p in paths:
                target = self.module_of(p)
                if target == here:
                    continue
                if target[: len(here)] == here or here[: len(target)] == target:
                    continue  # ancestor or descendant
                k = 0
                while here[k] == target[k]:
                    k += 1
                edges.add((here[: k + 1], target[: k + 1], here, target))
        return edges


def cycles(edges):
    graph = {}
    for a, b, _, _ in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
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

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def members():
    manifest = tomllib.loads((ROOT / "Cargo.toml").read_text())
    return manifest["workspace"]["members"]


def name(path):
    return "::".join(path) or "crate"


def main(argv):
    show = "--graph" in argv
    argv = [a for a in argv if a != "--graph"]
    dirs = argv or members()
    failed = False
    for d in dirs:
        src = ROOT / d / "src"
        if not src.is_dir():
            continue
        crate = Crate(src)
        edges = crate.collect()
        if show:
            for a, b, x, y in sorted(edges):
                print(f"{d}: {name(a)} -> {name(b)}  ({name(x)} uses {name(y)})")
        for comp in cycles(edges):
            failed = True
            members_ = set(comp)
            print(f"{d}: module cycle: {' <-> '.join(name(c) for c in comp)}")
            for a, b, x, y in sorted(edges):
                if a in members_ and b in members_:
                    print(f"    {name(x)} uses {name(y)}")
    if failed:
        return 1
    print(f"no module cycles in {len(dirs)} crate(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
