"""The package's shape: imports between fmcli's modules point one way (no circle, lazy imports
inside functions included), and importing the CLI stays light."""

import ast
import os

import fmcli

ROOT = os.path.dirname(fmcli.__file__)


def modules():
    """{module name: path} of every module of the package."""
    out = {}
    for folder, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, f), os.path.dirname(ROOT))[:-3]
                name = rel.replace(os.sep, ".")
                out[name[:-len(".__init__")] if name.endswith(".__init__") else name] = os.path.join(folder, f)
    return out


def imports(path, known):
    """The fmcli modules a file imports, anywhere in it (module level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from fmcli.io import cache` imports the module fmcli.io.cache
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                     for a in node.names]
        else:
            continue
        out.update(n for n in names if n in known)
    return out


def find_circle(graph):
    """A list of modules forming an import circle in `graph` ({module: imported modules}), or None."""
    state, path = {}, []

    def visit(m):
        state[m] = "open"
        path.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == "open":
                return path[path.index(d):] + [d]
            if d not in state:
                found = visit(d)
                if found:
                    return found
        path.pop()
        state[m] = "done"
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def package_graph():
    known = modules()
    graph = {m: imports(p, known) - {m} for m, p in known.items()}
    # a package's __init__ imported by its submodules is not an edge that matters here
    return {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}


def test_no_import_circle():
    circle = find_circle(package_graph())
    assert circle is None, "import circle: " + " -> ".join(circle)


def test_the_check_finds_a_circle(tmp_path):
    """Not vacuous: the check reports the circle data -> io.cache -> io.libsvm -> data that the
    package once had (one edge a lazy import inside a function)."""
    known = {"fmcli.data": "a", "fmcli.io.cache": "b", "fmcli.io.libsvm": "c", "fmcli.x": "d"}
    texts = {"a": "def f():\n    from fmcli.io.cache import x\n", "b": "from fmcli.io import libsvm\n",
             "c": "from fmcli.data import SparseData\n", "d": "import fmcli.data\n"}
    for name, text in texts.items():
        (tmp_path / name).write_text(text)
    graph = {m: imports(str(tmp_path / p), known) for m, p in known.items()}
    assert find_circle(graph) == ["fmcli.data", "fmcli.io.cache", "fmcli.io.libsvm", "fmcli.data"]
    graph["fmcli.io.libsvm"] = set()
    assert find_circle(graph) is None
