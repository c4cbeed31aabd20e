"""
Checks the structure of training/ (README.md there): reads every module's imports (all of them, also those
inside functions) with Python's own parser, and fails when the modules import each other in a loop or when a
module imports a script (a file with a command line: only scripts may import modules, never the reverse).
Prints the modules floor by floor (a module stands above everything it imports). Exits 1 if not.

  /usr/bin/python3 training/test_imports.py
"""
import ast
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def local_imports(path, local):
    """The modules of training/ that a file imports, anywhere in it."""
    tree = ast.parse(open(path).read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & local


def is_script(path):
    """A file that runs as a command: it has an `if __name__ == "__main__":` block."""
    return '__name__ == "__main__"' in open(path).read()


def floors(graph):
    """Each module's floor: 1 for a module that imports none of the others, else one above its highest import.
    Raises on a loop, naming it."""
    floor, visiting = {}, []

    def visit(m):
        if m in floor:
            return floor[m]
        if m in visiting:
            raise ValueError("import loop: " + " -> ".join(visiting[visiting.index(m):] + [m]))
        visiting.append(m)
        floor[m] = 1 + max((visit(d) for d in graph[m]), default=0)
        visiting.pop()
        return floor[m]

    for m in sorted(graph):
        visit(m)
    return floor


def main():
    files = {f[:-3]: os.path.join(HERE, f) for f in os.listdir(HERE) if f.endswith(".py")}
    graph = {m: local_imports(p, set(files)) - {m} for m, p in files.items()}
    scripts = {m for m, p in files.items() if is_script(p)}
    bad = sorted(f"{m} imports the script {d}" for m, deps in graph.items() for d in deps & scripts)
    try:
        floor = floors(graph)
    except ValueError as e:
        bad.append(str(e))
    if bad:
        print("\n".join(bad), file=sys.stderr)
        sys.exit(1)
    edges = sum(len(d) for d in graph.values())
    print(f"{len(graph)} modules, {edges} imports between them, no loop; {len(scripts)} scripts, none imported")
    for f in sorted(set(floor.values()), reverse=True):
        names = sorted(m for m in floor if floor[m] == f)
        print(f"  floor {f}: " + ", ".join(m + (" (script)" if m in scripts else "") for m in names))
    assert len(floor) == len(files) > 0


if __name__ == "__main__":
    main()
