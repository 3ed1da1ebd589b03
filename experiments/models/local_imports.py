"""The study's own files a builder imports, found by reading its source (nothing is imported or run).

A builder file (`builder = "models.py:build"`) may import helpers from its own folder:
`from blocks import residual_block` with blocks.py beside models.py, a local package
(`import nets`, nets/__init__.py and the submodules it names), and relative imports inside such
a package. Those files are part of the model as much as the builder file is, so their bytes are
hashed with it (:func:`builder_digest`): editing a helper retrains the model. The search:

- reads every `import` and `from ... import` statement of the file with :mod:`ast` (at any depth:
  inside functions, `try` blocks and `if TYPE_CHECKING` too), never running it;
- resolves each against the builder's folder (which the runner puts first on sys.path when it
  imports the file), or, for an importable `package.module:build`, against that module's place on
  sys.path, keeping only files under the builder's folder: the standard library and installed
  packages are not the study's code and are not read;
- follows what it finds, file by file, each once (so modules importing each other terminate).

A name that resolves to no file (a typo, a module that only exists elsewhere) is skipped here;
importing the builder reports it before training. Imports made by name at run time
(`importlib.import_module(name)`) and data files the builder reads are not seen.
"""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

from experiments.artifacts.files import file_sha256


def _module_file(root: Path, dotted: str) -> list[Path]:
    """The files that importing `dotted` from `root` runs, outermost package first: each
    package's __init__.py and the module's own file ([] where the module is no file under root)."""
    files: list[Path] = []
    folder = root
    parts = dotted.split(".")
    for position, part in enumerate(parts):
        if not part.isidentifier():
            return []
        package = folder / part
        init = package / "__init__.py"
        if init.is_file():
            files.append(init)
            folder = package
        elif position == len(parts) - 1 and (folder / f"{part}.py").is_file():
            files.append(folder / f"{part}.py")
        elif package.is_dir():  # a namespace package: nothing to run, but its modules are found
            folder = package
        else:
            return []
    return files


def _imported_names(tree: ast.AST, package: str) -> list[str]:
    """The dotted module names a module's statements import, relative imports made absolute
    against `package` (the importing module's package, "" for a top-level module). For
    `from a import b` both a and a.b are named: b may be a submodule."""
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                if node.level > len(parts):
                    continue  # beyond the top package (or in a top-level module): Python refuses it
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            if not module:
                continue
            names.append(module)
            names.extend(f"{module}.{alias.name}" for alias in node.names if alias.name != "*")
    return names


def _module_name(root: Path, path: Path) -> tuple[str, str]:
    """(module name, package) of a file under root: a/b.py is ("a.b", "a"), a/__init__.py ("a", "a")."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
        return ".".join(parts), ".".join(parts)
    return ".".join(parts), ".".join(parts[:-1])


def local_imports(builder_file: Path, root: Path | None = None) -> list[Path]:
    """The files under `builder_file`'s folder that it imports, directly or through each other,
    sorted, the builder file itself left out. `root` is where absolute imports are looked up: the
    builder's folder for a builder file (the default), the sys.path entry holding the package for
    an importable module."""
    builder_file = Path(builder_file).resolve()
    folder = builder_file.parent
    root = Path(root).resolve() if root is not None else folder
    found: set[Path] = set()
    pending = [builder_file]
    seen = {builder_file}
    while pending:
        path = pending.pop()
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (OSError, SyntaxError, ValueError):
            continue  # hashed as bytes all the same; importing it reports what is wrong
        try:
            package = _module_name(root, path)[1]
        except ValueError:
            package = ""
        for name in _imported_names(tree, package):
            for file in _module_file(root, name):
                file = file.resolve()
                if file in seen or not file.is_relative_to(folder):
                    continue
                seen.add(file)
                found.add(file)
                pending.append(file)
    return sorted(found, key=lambda file: file.relative_to(folder).as_posix())


def builder_digest(builder_file: Path, root: Path | None = None) -> str:
    """The sha256 a keras model's hash carries for its code: the builder file's own digest when
    it imports no file of its folder (so runs made before imports were hashed keep their hashes),
    else a digest of it together with each imported file's path relative to the folder and bytes
    (so moving the study folder keeps the hash). OSError when the builder file cannot be read."""
    builder_file = Path(builder_file).resolve()
    own = file_sha256(builder_file)
    imported = {}
    for file in local_imports(builder_file, root):
        try:
            imported[file.relative_to(builder_file.parent).as_posix()] = file_sha256(file)
        except OSError:
            imported[file.relative_to(builder_file.parent).as_posix()] = "unreadable"
    if not imported:
        return own
    return hashlib.sha256(json.dumps({"builder": own, "imports": imported}, sort_keys=True).encode()).hexdigest()
