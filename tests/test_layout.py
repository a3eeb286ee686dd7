"""The package's import structure: no import cycle between modules or between subpackages, and no import inside
a function that only dodges one (docs/architecture.md "Layout")."""
import ast
import collections
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent / "jfacediag"


def _modules():
  out = {}
  for p in ROOT.rglob("*.py"):
    parts = p.relative_to(ROOT.parent).with_suffix("").parts
    out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
  return out


MODULES = _modules()


def _owner(name):
  """The jfacediag module an import name refers to (a name imported from a package resolves to the package)."""
  while name and name not in MODULES:
    name = name.rpartition(".")[0]
  return name


def _imports(node, package):
  if isinstance(node, ast.Import):
    names = [a.name for a in node.names]
  elif isinstance(node, ast.ImportFrom):
    base = node.module or ""
    if node.level:
      base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
    names = [f"{base}.{a.name}" for a in node.names]
  else:
    return []
  return [_owner(n) for n in names if n.startswith("jfacediag")]


def _graph():
  """({module: modules imported at module level, package __init__s included}, [(module, target, line)] of
  imports inside functions)."""
  top, late = collections.defaultdict(set), []
  for name, path in MODULES.items():
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in tree.body:
      for t in _imports(node, package):
        parts = t.split(".")
        top[name] |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)} - {name}
    for fn in ast.walk(tree):
      if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
        late += [(name, t, node.lineno) for node in ast.walk(fn) for t in _imports(node, package)]
  return top, late


def _reaches(graph, src, dst):
  seen, todo = set(), [src]
  while todo:
    x = todo.pop()
    if x == dst:
      return True
    if x not in seen:
      seen.add(x)
      todo.extend(graph[x])
  return False


def _subpackage(module):
  parts = module.split(".")
  return ".".join(parts[:2]) if len(parts) > 1 and (ROOT / parts[1]).is_dir() else module


def _dodges(top, late):
  return [f"{a}:{line} imports {b}, which imports {a} back" for a, b, line in late if _reaches(top, b, a)]


def _package_cycles(top, late):
  edges = collections.defaultdict(set)
  for a, targets in list(top.items()) + [(a, {b}) for a, b, _ in late]:
    for b in targets:
      pa, pb = _subpackage(a), _subpackage(b)
      if pa != pb and pb != "jfacediag":
        edges[pa].add(pb)
  return sorted(f"{a} <-> {b}" for a in list(edges) for b in edges[a] if a < b and _reaches(edges, b, a))


def test_no_import_inside_a_function_dodges_a_cycle():
  top, late = _graph()
  assert len(MODULES) > 40 and "jfacediag.models" in top["jfacediag.network"]  # The walk sees the package.
  assert not _dodges(top, late), "\n".join(_dodges(top, late))


def test_no_cycle_between_subpackages():
  top, late = _graph()
  assert not _package_cycles(top, late)


def test_the_checks_find_planted_cycles():
  top, late = _graph()
  # convert/cli.py imports models: models importing convert back, late or at module level, closes a loop.
  planted = [("jfacediag.models.vgg", "jfacediag.convert.cli", 1)]
  assert _dodges(top, late + planted)
  assert "jfacediag.convert <-> jfacediag.models" in _package_cycles(top, late + planted)
  top["jfacediag.models.vgg"].add("jfacediag.convert.mapping")
  assert "jfacediag.convert <-> jfacediag.models" in _package_cycles(top, late)


def test_the_architecture_page_names_every_module():
  readme = (ROOT.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
  layout = readme[readme.index("## Layout"):]
  layout = layout[:layout.index("```", layout.index("```") + 3)]
  files = [p for p in sorted(ROOT.rglob("*.py")) + sorted((ROOT.parent / "tools").glob("*.py"))
           if p.name not in ("__init__.py", "__main__.py")]
  missing = [str(p.relative_to(ROOT.parent)) for p in files if p.name not in layout]
  assert len(files) > 40 and not missing, missing
