"""Code identity: what a piece of code reads, found before it runs, as a manifest and a hash.

:func:`code_identity` takes a class (a Recipe, an ExperimentState, any class), a function, a
method, a ``functools.partial`` or a callable object, and returns a :class:`CodeIdentity`: a
``fingerprint`` (hex SHA-256) and the ``manifest`` it hashes, one :class:`ManifestEntry` per
ingredient, so that a change can be explained (:func:`manifest_changes`).

What counts
-----------
* **Classes**: every method and property each class of the MRO defines (called or not), seen
  through decorators with or without ``functools.wraps`` (the wrapper's code and closure, and
  ``__wrapped__``); its plain-value class attributes by value; its bases. Dagger's own classes
  (and those from ``base`` up) count only for what the user patched onto them (the seed's
  ``Recipe.run = MethodType(run, Recipe)``). ``VERSION`` set on a subclass of a dagger class
  pins the class's code identity to that string: nothing else of it is read.
* **Functions** (user code): the normalised source (the syntax tree unparsed, docstrings
  dropped: comments, docstrings and layout do not count); the module-level names the code reads
  (``LOAD_GLOBAL``/``LOAD_NAME`` in the bytecode, nested code included, attribute chains
  through user modules such as ``helpers.scale`` resolved; imports inside the function too);
  closure cells and defaults by value.
* **Values** met on the way: plain values by their canonical encoding
  (:mod:`dagger.hashing`); user functions and classes as nodes of their own, followed
  transitively (recursion terminates: each object is visited once); objects of user classes by
  their class and their attributes.
* **Libraries**: a module of the standard library counts as ``python X.Y``, a module inside an
  installed distribution (site-packages) as its distribution name and version, never by source.
  Dagger's own modules count by nothing, so upgrading dagger changes no id.
* **Untracked**: a name whose value cannot be encoded (a logger, a connection, a model held in a
  global), and state the code changes itself (a global or closure variable it assigns with
  ``global``/``nonlocal``, or visibly mutates: ``calls.append(x)``, ``cache[key] = x``,
  ``config.lr = x``) never raise and never change the fingerprint; they are listed in the
  manifest with kind ``untracked``.
* **Not seen**: names reached dynamically (``getattr(module, name)``, ``globals()[name]``),
  attributes read from ``self`` beyond the class's own namespace, what a library does inside.

"User code" means modules that are neither in the standard library nor inside a site-packages
folder: ``__main__``, notebooks, the user's own modules (an editable install included).

Without source (a REPL, ``exec``), the compiled code stands in, with one warning per process:
such ids may change with the Python version.

Cost
----
The analysis of a code object (reading and parsing its file, normalising, scanning bytecode) is
done once per process and cached by the code object itself (a weak reference: nothing is kept
alive). Everything else (values of globals, class attributes, closure cells, defaults) is read
again on every call, so an edited constant or ``Train.FACTOR = 5`` in a running notebook is
seen. To make that cheap, the identity of a class or function is kept with the list of slots
its walk read and a marker of what each held (a weak reference, an immutable builtin, or the
digest of a mutable value); the next call re-reads the slots and walks again only if one
changed. ``benchmarks/bench_identity.py`` measures both costs.

Manifest entries
----------------
``ManifestEntry(kind, name, digest, value)``: ``kind`` is one of :data:`KINDS`; ``name`` is a
dotted name, relative to the module of the object asked about (``LABEL_SMOOTHING``,
``Smooth.run``, ``helpers.scale``, ``make_scale.<locals>.<lambda>.k``); ``digest`` is a hex
SHA-256 ("" for untracked entries); ``value`` is short printable text (``"0.1"``,
``"torch 2.14.1"``, the source location of code). Names are unique per kind. The fingerprint
hashes the sorted ``(kind, name, digest)`` triples of tracked entries, so the order of the
manifest (the order the code was met) does not matter.
"""

from __future__ import annotations

import ast
import builtins
import collections
import dataclasses
import dis
import enum
import functools
import hashlib
import importlib.metadata
import importlib.util
import itertools
import linecache
import logging
import operator
import os
import re
import reprlib
import sys
import sysconfig
import threading
import types
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

from .errors import HashingError
from .hashing import encode, identity_name, module_identity, qualified_name

__all__ = [
    "KINDS",
    "SCHEME",
    "CodeIdentity",
    "ManifestEntry",
    "class_fingerprint",
    "code_digest",
    "code_identity",
    "code_reads",
    "function_fingerprint",
    "identity_check",
    "manifest_changes",
]

logger = logging.getLogger("dagger")

SCHEME = "dagger-code-identity-2"
"""Mixed into every fingerprint; bump it when the rules above change."""

KINDS = (
    "class",
    "method",
    "property",
    "function",
    "version",
    "class attribute",
    "instance attribute",
    "global",
    "closure",
    "default",
    "argument",
    "module",
    "untracked",
)
"""Every ``ManifestEntry.kind``."""

_CODE_KINDS = frozenset({"class", "method", "property", "function"})


@dataclasses.dataclass(frozen=True)
class ManifestEntry:
    """One ingredient of a code identity.

    Attributes:
        kind: One of :data:`KINDS`.
        name: Dotted name, relative to the module of the object the identity is of.
        digest: Hex SHA-256 of the ingredient ("" when untracked).
        value: Short printable text: a value's repr, ``"torch 2.14.1"``, a code location.
    """

    kind: str
    name: str
    digest: str
    value: str

    def to_json(self) -> dict[str, str]:
        """A JSON-ready dict: ``{"kind", "name", "digest", "value"}``."""
        return {"kind": self.kind, "name": self.name, "digest": self.digest, "value": self.value}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ManifestEntry:
        """The entry :meth:`to_json` wrote."""
        return cls(
            str(data["kind"]), str(data["name"]), str(data["digest"]), str(data.get("value", ""))
        )

    def __str__(self) -> str:
        return f"{self.kind} {self.name}" + (f" {self.value}" if self.value else "")


@dataclasses.dataclass(frozen=True)
class CodeIdentity:
    """The code identity of a class, function or callable object.

    Attributes:
        fingerprint: Hex SHA-256 of the tracked entries of ``manifest`` (and :data:`SCHEME`).
        manifest: Every ingredient, in the order the analysis met it (root first).
    """

    fingerprint: str
    manifest: tuple[ManifestEntry, ...]

    @property
    def untracked(self) -> tuple[ManifestEntry, ...]:
        """Entries read by the code that are not part of the identity."""
        return tuple(entry for entry in self.manifest if entry.kind == "untracked")

    def to_json(self) -> dict[str, Any]:
        """``{"fingerprint": hex, "manifest": [entry dicts]}``, ready for ``json.dumps``."""
        return {
            "fingerprint": self.fingerprint,
            "manifest": [entry.to_json() for entry in self.manifest],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CodeIdentity:
        """The identity :meth:`to_json` wrote."""
        return cls(
            str(data["fingerprint"]),
            tuple(ManifestEntry.from_json(entry) for entry in data.get("manifest", ())),
        )

    def __str__(self) -> str:
        return "\n".join(str(entry) for entry in self.manifest)


def _sha(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def _fingerprint_of(entries: Iterable[ManifestEntry]) -> str:
    # Sorted: the order the analysis met things in is not part of the identity.
    tracked = sorted(
        f"{entry.kind}\x00{entry.name}\x00{entry.digest}"
        for entry in entries
        if entry.kind != "untracked"
    )
    return _sha(SCHEME, *tracked)


# -- where code lives ---------------------------------------------------------------------------

_USER, _DAGGER, _STDLIB, _LIBRARY = "user", "dagger", "stdlib", "library"

# module name -> (kind, top-level name, "dist version"); only for modules in sys.modules.
_MODULE_KINDS: dict[str, tuple[str, str, str]] = {}
_DISTRIBUTIONS: dict[str, str] = {}  # top-level module name -> "dist version"
_site_folders: tuple[str, ...] | None = None
_packages_distributions: Mapping[str, list[str]] | None = None
_PYTHON = f"python {sys.version_info.major}.{sys.version_info.minor}"


def _site_dirs() -> tuple[str, ...]:
    global _site_folders
    if _site_folders is None:
        import site

        found: dict[str, None] = {}
        candidates = [*sys.path]
        try:
            candidates += [*site.getsitepackages(), site.getusersitepackages()]
        except AttributeError:  # some embedded interpreters lack them
            pass
        candidates += [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
        for folder in candidates:
            if folder and os.path.basename(folder.rstrip(os.sep)) in (
                "site-packages",
                "dist-packages",
            ):
                found[os.path.realpath(folder) + os.sep] = None
        _site_folders = tuple(found)
    return _site_folders


@functools.cache
def _stdlib_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    return tuple(
        dict.fromkeys(os.path.realpath(paths[key]) + os.sep for key in ("stdlib", "platstdlib"))
    )


def _normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


@functools.cache
def _installed_distributions() -> dict[str, tuple[str, str]]:
    """Normalised name -> (name, version) of every distribution in a site folder, read from
    the folder names alone (``{name}-{version}.dist-info``, the wheel format, PEP 427): one
    directory listing instead of parsing each distribution's metadata."""
    found: dict[str, tuple[str, str]] = {}
    for folder in _site_dirs():  # in sys.path order: the first one found is imported
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for entry in names:
            if entry.endswith(".dist-info"):
                name, _, version = entry[: -len(".dist-info")].partition("-")
                if name and version:
                    found.setdefault(_normalised(name), (name, version))
    return found


def _distribution_version(top: str) -> str:
    """``"dist version"`` of the distribution that installed top-level module ``top``."""
    cached = _DISTRIBUTIONS.get(top)
    if cached is not None:
        return cached
    found = None
    installed = _installed_distributions().get(_normalised(top))
    if installed is not None:
        found = f"{installed[0]} {installed[1]}"
    if found is None:
        global _packages_distributions
        if _packages_distributions is None:
            # Reads every distribution's file list: slow (about half a second), so only for
            # modules whose distribution has another name (sklearn: scikit-learn).
            _packages_distributions = importlib.metadata.packages_distributions()
        names = _packages_distributions.get(top) or []
        if names:
            try:
                found = f"{names[0]} {importlib.metadata.version(names[0])}"
            except importlib.metadata.PackageNotFoundError:
                found = None
    if found is None:
        module = sys.modules.get(top)
        version = getattr(module, "__version__", None)
        found = f"{top} {version if isinstance(version, str) else 'unknown version'}"
    _DISTRIBUTIONS[top] = found
    return found


def _module_kind(name: str | None) -> tuple[str, str, str]:
    """``(kind, top-level name, version text)`` of the module called ``name``."""
    if not name:
        return (_USER, "", "")
    cached = _MODULE_KINDS.get(name)
    if cached is not None:
        return cached
    top = name.partition(".")[0]
    module = sys.modules.get(name)
    if top == "dagger":
        result = (_DAGGER, top, "")
    elif name == "__main__" or (module is None and top not in sys.modules):
        # A script, a notebook, or code run by exec() under a made-up name.
        result = (_USER, top, "")
    else:
        path = _module_path(module if module is not None else sys.modules[top])
        if path is not None and path.startswith(_site_dirs()):
            result = (_LIBRARY, top, _distribution_version(top))
        elif (top in sys.stdlib_module_names or top == "builtins") and (
            path is None or path.startswith(_stdlib_dirs())
        ):
            result = (_STDLIB, top, _PYTHON)
        elif path is None and module is not None and not hasattr(module, "__path__"):
            result = (_STDLIB, top, _PYTHON)  # compiled into the interpreter
        else:
            result = (_USER, top, "")
    if module is not None:
        _MODULE_KINDS[name] = result
    return result


def _module_path(module: types.ModuleType) -> str | None:
    path = getattr(module, "__file__", None)
    if path is None:
        paths = list(getattr(module, "__path__", None) or [])
        path = paths[0] if paths else None
    return os.path.realpath(path) if isinstance(path, str) else None


def _function_home(func: types.FunctionType) -> str | None:
    # The module whose globals the code reads, not __module__: functools.wraps copies
    # __module__ from the wrapped function onto a library's wrapper.
    name = func.__globals__.get("__name__")
    return name if isinstance(name, str) else None


def _class_home(cls: type) -> str:
    module = cls.__module__
    if module == "builtins" and getattr(builtins, cls.__name__, None) is not cls:
        return ""  # a class made by exec() without __name__ in its globals: user code
    return module


def _relative(module: str | None, qualname: str, root_module: str | None) -> str:
    if not module or module == root_module:
        return qualname
    # A script's module by its importable name: __main__ or not, the same manifest.
    if module == "__main__" or root_module == "__main__":
        module = module_identity(module)
        if module == module_identity(root_module or ""):
            return qualname
    return f"{module}.{qualname}"


def _resolves_to(module: str | None, qualname: str, obj: Any) -> bool:
    """Whether ``module.qualname`` names ``obj`` (so the name is a stable handle for it)."""
    if not module or "<" in qualname:
        return False
    found: Any = sys.modules.get(module)
    try:
        for part in qualname.split("."):
            found = vars(found).get(part) if isinstance(found, type) else getattr(found, part)
    except Exception:  # an arbitrary __getattr__ may raise anything
        return False
    if isinstance(found, staticmethod):
        found = found.__func__
    return found is obj


# -- source and bytecode analysis, once per code object -----------------------------------------


@dataclasses.dataclass(frozen=True)
class _CodeInfo:
    digest: str
    location: str
    reads: tuple[tuple[str, ...], ...]  # attribute chains rooted at a global name
    imports: tuple[tuple[int, str, tuple[str, ...] | None], ...]  # (level, module, from-names)
    writes: frozenset[str]  # globals and cells the code changes (state, not configuration)
    has_source: bool

    @functools.cached_property
    def entry_digest(self) -> str:
        return _sha("code", self.digest)


_CODE_INFOS: dict[int, tuple[weakref.ref[types.CodeType], _CodeInfo]] = {}


@dataclasses.dataclass(frozen=True)
class _SourceFile:
    lines: list[str]  # linecache's list: the same object while the file is unchanged
    index: dict[int, list[ast.AST]]  # function and lambda nodes by first line
    # (first line, name) -> signatures of the code objects compiling this text gives; None
    # when the text does not compile on its own (then the syntax tree is trusted)
    compiled: dict[tuple[int, str], list[tuple[Any, ...]]] | None


_FILE_TREES: collections.OrderedDict[str, _SourceFile] = collections.OrderedDict()
_warned_stale: set[str] = set()
_FILE_TREES_KEPT = 16
_lock = threading.RLock()
_warned_no_source = False

_LOADS = frozenset({"LOAD_GLOBAL", "LOAD_NAME", "LOAD_FROM_DICT_OR_GLOBALS"})
_ATTRS = frozenset({"LOAD_ATTR", "LOAD_METHOD"})
_STORES = frozenset({"STORE_GLOBAL", "DELETE_GLOBAL"})
_DEREF_LOADS = frozenset({"LOAD_DEREF", "LOAD_CLASSDEREF"})
# What may come between ``IMPORT_NAME`` and the names it binds.
_KEEPS_IMPORT = frozenset(
    {
        "IMPORT_NAME",
        "IMPORT_FROM",
        "STORE_FAST",
        "STORE_NAME",
        "STORE_DEREF",
        "POP_TOP",
        "LOAD_CONST",
    }
)
_NAME_LOADS = _LOADS | _DEREF_LOADS
# Methods that change a list, dict, set or deque in place.
_MUTATORS = frozenset(
    {
        "append",
        "appendleft",
        "extend",
        "extendleft",
        "insert",
        "pop",
        "popleft",
        "popitem",
        "remove",
        "clear",
        "update",
        "setdefault",
        "add",
        "discard",
        "sort",
        "reverse",
        "rotate",
        "__setitem__",
        "__delitem__",
    }
)


def _code_info(code: types.CodeType, module_globals: Mapping[str, Any] | None) -> _CodeInfo:
    key = id(code)
    cached = _CODE_INFOS.get(key)
    if cached is not None and cached[0]() is code:
        return cached[1]
    with _lock:
        info = _analyse(code, module_globals)

        def forget(_: object, key: int = key) -> None:
            _CODE_INFOS.pop(key, None)

        _CODE_INFOS[key] = (weakref.ref(code, forget), info)
    return info


def _analyse(code: types.CodeType, module_globals: Mapping[str, Any] | None) -> _CodeInfo:
    reads: dict[tuple[str, ...], None] = {}
    imports: dict[tuple[int, str, tuple[str, ...] | None], None] = {}
    writes: set[str] = set()
    _scan(code, reads, imports, writes)
    source_digest = _source_digest(code, module_globals)
    location = f"{os.path.basename(code.co_filename)}:{code.co_firstlineno}"
    has_source = source_digest is not None
    if source_digest is None:
        _warn_no_source(code, module_globals)
        source_digest = hashlib.sha256(repr(_code_parts(code)).encode()).hexdigest()
    return _CodeInfo(
        source_digest, location, tuple(reads), tuple(imports), frozenset(writes), has_source
    )


def _scan(
    code: types.CodeType,
    reads: dict[tuple[str, ...], None],
    imports: dict[tuple[int, str, tuple[str, ...] | None], None],
    writes: set[str],
) -> None:
    """Collect what ``code`` (and the code nested in it) reads, imports and writes.

    Reads are attribute chains rooted at a global (``helpers.scale`` is ``("helpers",
    "scale")``). Writes are the globals and closure variables the code changes: assigned
    (``global``, ``nonlocal``), or visibly mutated (``calls.append(x)``, ``cache[key] = x``,
    ``config.lr = x``); those are state the code keeps, not configuration, so untracked.
    """
    chain: list[str] | None = None
    chain_is_global = False
    constants: list[Any] = []
    recent: collections.deque[dis.Instruction] = collections.deque(maxlen=3)
    pending_import: tuple[int, str, list[str] | None] | None = None

    def close_chain() -> None:
        nonlocal chain
        if chain is not None:
            if len(chain) > 1 and chain[1] in _MUTATORS:
                writes.add(chain[0])
            if chain_is_global:
                reads[tuple(chain)] = None
            chain = None

    def close_import() -> None:
        nonlocal pending_import
        if pending_import is not None:
            level, name, names = pending_import
            imports[(level, name, tuple(names) if names is not None else None)] = None
            pending_import = None

    def target_of(back: int) -> None:
        # The container of ``x[k] = v`` / ``del x[k]`` / ``x.a = v``, when x is a plain name.
        if len(recent) >= back and recent[-back].opname in _NAME_LOADS:
            writes.add(str(recent[-back].argval))

    for instruction in dis.get_instructions(code):
        op = instruction.opname
        if op in _ATTRS and chain is not None:
            chain.append(str(instruction.argval))
            recent.append(instruction)
            continue
        close_chain()
        if op in _LOADS or op in _DEREF_LOADS:
            chain = [str(instruction.argval)]
            chain_is_global = op in _LOADS
        elif op in _STORES:
            writes.add(str(instruction.argval))
        elif op in ("STORE_DEREF", "DELETE_DEREF") and instruction.argval in code.co_freevars:
            writes.add(str(instruction.argval))  # nonlocal
        elif op in ("STORE_SUBSCR", "DELETE_SUBSCR"):
            target_of(2)
        elif op in ("STORE_ATTR", "DELETE_ATTR"):
            target_of(1)
        elif op == "IMPORT_NAME":
            close_import()
            level = constants[-2] if len(constants) >= 2 and isinstance(constants[-2], int) else 0
            fromlist = constants[-1] if constants else None
            pending_import = (level, str(instruction.argval), [] if fromlist else None)
        elif op == "IMPORT_FROM" and pending_import is not None:
            if pending_import[2] is None:  # import a.b as c: binds a.b itself
                pending_import = (pending_import[0], pending_import[1], [])
                close_import()
            else:
                pending_import[2].append(str(instruction.argval))
        if op not in _KEEPS_IMPORT:
            close_import()
        if op == "LOAD_CONST":
            constants.append(instruction.argval)
        recent.append(instruction)
    close_chain()
    close_import()
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _scan(const, reads, imports, writes)


def _code_parts(code: types.CodeType) -> tuple[Any, ...]:
    consts = tuple(
        _code_parts(const) if isinstance(const, types.CodeType) else repr(const)
        for const in code.co_consts
    )
    return (code.co_code, consts, code.co_names, code.co_varnames, code.co_freevars)


def _warn_no_source(code: types.CodeType, module_globals: Mapping[str, Any] | None) -> None:
    global _warned_no_source
    # Code a library generates with exec() runs in made-up globals (namedtuple's __new__ in
    # "namedtuple_Point"); the user's exec() runs in theirs, or in globals without a name.
    name = module_globals.get("__name__") if module_globals is not None else None
    generated = code.co_filename == "<string>" and isinstance(name, str) and name not in sys.modules
    if _warned_no_source or generated or code.co_filename in _warned_stale:
        return  # code generated by a library (namedtuple); a stale file warned already
    _warned_no_source = True
    logger.warning(
        "dagger could not read the source of `%s` (defined in a REPL or by exec?); its "
        "compiled code stands in for it, so ids built from it may change with the Python "
        "version. Set VERSION on the class to pin them.",
        code.co_qualname if hasattr(code, "co_qualname") else code.co_name,
    )


def _signature(code: types.CodeType) -> tuple[Any, ...]:
    """What a code object computes, without line numbers: equal for code compiled from the
    same text."""
    constants = tuple(repr(c) for c in code.co_consts if not isinstance(c, types.CodeType))
    return (code.co_code, code.co_names, code.co_varnames, code.co_freevars, constants)


def _compiled_signatures(
    text: str, filename: str
) -> dict[tuple[int, str], list[tuple[Any, ...]]] | None:
    try:
        module = compile(text, filename, "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return None
    found: dict[tuple[int, str], list[tuple[Any, ...]]] = {}
    stack = [module]
    while stack:
        code = stack.pop()
        found.setdefault((code.co_firstlineno, code.co_name), []).append(_signature(code))
        stack += (c for c in code.co_consts if isinstance(c, types.CodeType))
    return found


def _source_file(filename: str, module_globals: Mapping[str, Any] | None) -> _SourceFile | None:
    """The parsed source of a file (docstrings dropped from the whole tree, once per file:
    they never count), and what its text compiles to."""
    lines = linecache.getlines(filename, module_globals)  # type: ignore[arg-type]
    if not lines:
        return None
    cached = _FILE_TREES.get(filename)
    if cached is not None and cached.lines is lines:
        _FILE_TREES.move_to_end(filename)
        return cached
    text = "".join(lines)
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return None
    index: dict[int, list[ast.AST]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            _drop_docstring(node)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
            index.setdefault(first, []).append(node)
        elif isinstance(node, ast.Lambda):
            index.setdefault(node.lineno, []).append(node)
    source = _SourceFile(lines, index, _compiled_signatures(text, filename))
    _FILE_TREES[filename] = source
    if len(_FILE_TREES) > _FILE_TREES_KEPT:
        _FILE_TREES.popitem(last=False)
    return source


def _arguments(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> list[str]:
    args = node.args
    names = [a.arg for a in (*args.posonlyargs, *args.args)]
    if args.vararg:
        names.append(args.vararg.arg)
    names += [a.arg for a in args.kwonlyargs]
    if args.kwarg:
        names.append(args.kwarg.arg)
    return names


def _code_arguments(code: types.CodeType) -> list[str]:
    count = code.co_argcount + code.co_kwonlyargcount
    count += bool(code.co_flags & 0x04) + bool(code.co_flags & 0x08)  # *args, **kwargs
    names = list(code.co_varnames[:count])
    # co_varnames orders *args after keyword-only arguments; compare as sets of names.
    return names


def _find_node(code: types.CodeType, index: dict[int, list[ast.AST]]) -> ast.AST | None:
    candidates = index.get(code.co_firstlineno, [])
    named: list[ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda]
    if code.co_name == "<lambda>":
        named = [node for node in candidates if isinstance(node, ast.Lambda)]
    else:
        named = [
            node
            for node in candidates
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.name == code.co_name
        ]
    arguments = sorted(_code_arguments(code))
    matching = [node for node in named if sorted(_arguments(node)) == arguments]
    if len(matching) <= 1:
        return matching[0] if matching else None
    # Several lambdas start on this line: the one whose body holds the code's first position.
    positions = [
        (line, column)
        for line, _, column, end_column in code.co_positions()
        if line is not None and column is not None and not (column == 0 and end_column == 0)
    ]
    if not positions:
        return None
    first = min(positions)
    inside = [
        node
        for node in matching
        if isinstance(node, ast.Lambda)
        and (node.body.lineno, node.body.col_offset)
        <= first
        <= (node.body.end_lineno or 0, node.body.end_col_offset or 0)
    ]
    inside.sort(key=lambda node: (node.lineno, node.col_offset))
    return inside[-1] if inside else None


def _drop_docstring(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
    body = node.body
    if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        node.body = body[1:] or [ast.Pass()]


def _source_digest(code: types.CodeType, module_globals: Mapping[str, Any] | None) -> str | None:
    filename = code.co_filename
    pseudo = not filename or (filename.startswith("<") and filename.endswith(">"))
    if pseudo and filename not in linecache.cache:  # IPython registers its cells there
        return None
    source = _source_file(filename, module_globals)
    if source is None:
        return None
    if source.compiled is not None and _signature(code) not in source.compiled.get(
        (code.co_firstlineno, code.co_name), ()
    ):
        # The file was edited after this code was loaded (a module edited on disk while a
        # notebook runs): its text is not what runs. The running code stands in for it, so
        # a state it computes never takes the id of the edited source.
        if filename not in _warned_stale:
            _warned_stale.add(filename)
            logger.warning(
                "dagger: %s changed after it was imported; ids use the code that runs "
                "(the version loaded). Restart (or importlib.reload the module) to run the "
                "edited code.",
                filename,
            )
        return None
    node = _find_node(code, source.index)
    if node is None:
        return None
    # ast.unparse gives one canonical text for a syntax tree (comments, layout and quoting
    # gone; docstrings were dropped when the file was parsed) and, unlike ast.dump, does not
    # change when a Python release adds node fields.
    normalised = ast.unparse(node)
    return hashlib.sha256(normalised.encode()).hexdigest()


# -- the walk -----------------------------------------------------------------------------------

# Names a class body defines that are bookkeeping of Python or of a library, not behaviour,
# and caches Python adds to a class later (pickling a recipe sets ``__slotnames__``).
_SKIPPED_MEMBERS = frozenset(
    {
        "__slotnames__",
        "_abc_cache",
        "_abc_negative_cache",
        "_abc_negative_cache_version",
        "_abc_registry",
        "__module__",
        "__qualname__",
        "__doc__",
        "__dict__",
        "__weakref__",
        "__annotations__",
        "__orig_bases__",
        "__parameters__",
        "__slots__",
        "__firstlineno__",
        "__static_attributes__",
        "__abstractmethods__",
        "_abc_impl",
        "__dataclass_fields__",
        "__dataclass_params__",
        "__match_args__",
        "__protocol_attrs__",
        "__non_callable_proto_members__",
        "_is_protocol",
        "__type_params__",
    }
)
_DESCRIPTOR_TYPES = (
    types.MemberDescriptorType,
    types.GetSetDescriptorType,
    types.WrapperDescriptorType,
    types.MethodDescriptorType,
    type(vars(collections.namedtuple("_Probe", "field"))["field"]),  # a named tuple's field
)
_MAX_OBJECT_DEPTH = 6

# Manifests are stored in every record: the text of a value whose name says it is a secret is
# left out (its digest still counts).
_SECRET = re.compile(r"(?i)secret|token|passw|api_?key|credential|private_?key")

_short_repr = reprlib.Repr()
_short_repr.maxstring = 60
_short_repr.maxother = 60
_short_repr.maxlist = _short_repr.maxtuple = _short_repr.maxset = _short_repr.maxdict = 6
_short_repr.maxlevel = 3


def _short(value: Any) -> str:
    """Short printable text of a value, for a manifest."""
    kind = type(value)
    module = kind.__module__.partition(".")[0]
    if module == "numpy" and hasattr(value, "shape") and hasattr(value, "dtype"):
        if getattr(value, "ndim", 1) == 0:
            return repr(value.item())
        return f"array {value.dtype} {tuple(value.shape)}"
    if module == "torch" and hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"tensor {value.dtype} {tuple(value.shape)}"
    if isinstance(value, enum.Enum):
        return f"{kind.__name__}.{value._name_}" if value._name_ else repr(value)
    try:
        text = _short_repr.repr(value)
    except Exception:  # an arbitrary __repr__ may raise anything
        text = f"<{qualified_name(kind)}>"
    return text if len(text) <= 80 else text[:77] + "..."


def _plain_function(member: Any) -> Any:
    if isinstance(member, staticmethod | classmethod):
        member = member.__func__
    if isinstance(member, types.MethodType):  # the seed's MethodType(run, Recipe)
        member = member.__func__
    return member


def _is_generated(member: Any) -> bool:
    """A dataclass's generated method (``__repr__`` under reprlib's wrapper included): the
    class's field spec entry stands for it."""
    for _ in range(8):
        wrapped = getattr(member, "__wrapped__", None)
        if wrapped is None:
            break
        member = wrapped
    return isinstance(member, types.FunctionType) and member.__code__.co_filename == "<string>"


def _dataclass_spec(cls: type) -> tuple[Any, ...]:
    params = vars(cls).get("__dataclass_params__")
    fields = []
    for field in vars(cls)["__dataclass_fields__"].values():
        fields.append(
            (
                field.name,
                str(field.type),
                field.default is not dataclasses.MISSING,
                field.default_factory is not dataclasses.MISSING,
                field.init,
                field.compare,
                bool(getattr(field, "kw_only", False)),
            )
        )
    return (repr(params), fields)


def _wrapped(value: Any) -> Any:
    """The function a callable object of a library wraps (``functools.lru_cache``), if any."""
    if isinstance(value, type) or not callable(value):
        return None
    try:
        wrapped = object.__getattribute__(value, "__wrapped__")
    except AttributeError:
        return None
    return wrapped if isinstance(wrapped, types.FunctionType | types.MethodType) else None


def _instance_attributes(obj: Any) -> list[tuple[str, Any]]:
    found: dict[str, Any] = {}
    for klass in reversed(type(obj).__mro__):
        slots = vars(klass).get("__slots__", ())
        for slot in (slots,) if isinstance(slots, str) else slots:
            if slot not in ("__dict__", "__weakref__") and hasattr(obj, slot):
                found[slot] = getattr(obj, slot)
    found.update(getattr(obj, "__dict__", {}))
    return sorted(found.items())


# -- checks: is a cached identity still right? -------------------------------------------------
#
# A walk records, for every slot it read (a class's namespace, a function's code, cells and
# defaults, a global, a module attribute), how to read it again and a marker of what it held.
# The next call re-reads the slots; when every one still holds the same thing, the identity is
# the same and the walk is skipped. Markers hold weak references, immutable builtins or digests,
# never a user object, so a cached identity keeps nothing alive.


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


_MISSING = _Sentinel("missing")
_DEAD = _Sentinel("dead")
_EMPTY = _Sentinel("empty cell")

_ATOMIC = frozenset({type(None), bool, int, float, complex, str, bytes, _Sentinel})
_BY_IDENTITY = (
    types.FunctionType,
    type,
    types.ModuleType,
    types.CodeType,
    types.BuiltinFunctionType,
    types.MethodType,
    enum.Enum,
    functools.partial,
    functools.cached_property,
    functools.partialmethod,
)

# Marker tags.
_IS, _REF, _EQ, _CONTENT, _WRAP, _PROP, _TYPE, _ANY = range(8)

Marker = tuple[Any, ...]
# A reader appends the current content of the slots it watches to a list; the markers of all
# readers, in order, say what those slots held (see code_identity).
Reader = Callable[[list[Any]], None]
Validation = tuple[tuple[Reader, ...], Marker]


def _marker(value: Any) -> Marker | None:
    """How to tell that a slot still holds ``value`` without keeping it alive (None: can't)."""
    kind = type(value)
    if kind in _ATOMIC:
        return (_IS, value)
    if (kind is tuple or kind is frozenset) and all(type(item) in _ATOMIC for item in value):
        return (_IS, value)
    if isinstance(value, staticmethod | classmethod):
        inner = _marker(value.__func__)
        if inner is None:
            try:  # a callable object (functools.lru_cache): its identity
                inner = (_REF, weakref.ref(value.__func__))
            except TypeError:
                return None
        return (_WRAP, kind, inner)
    if isinstance(value, property):
        accessors = tuple(_marker(f) for f in (value.fget, value.fset, value.fdel))
        return None if None in accessors else (_PROP, accessors)
    if isinstance(value, _BY_IDENTITY):
        try:
            return (_REF, weakref.ref(value))
        except TypeError:
            return None
    if isinstance(value, _DESCRIPTOR_TYPES):
        return (_TYPE, weakref.ref(kind))
    return None


# Calls a weak reference (map(_CALL, refs): their referents). operator.call is a third
# faster than the slot wrapper weakref.ref.__call__.
_CALL = operator.call


def _picker(positions: list[int]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """The items at ``positions`` of a sequence, as a tuple, in one C-level call."""
    if len(positions) == 1:
        position = positions[0]
        return lambda values: (values[position],)
    return operator.itemgetter(*positions)


def _compile(markers: Sequence[Marker]) -> Marker:
    """A group of markers, checked against a sequence of values mostly at C speed: identity
    with the referents of weak references and with immutable builtins (one comparison of
    them all), then the rest."""
    ref_positions, refs, atom_positions, atoms, others = [], [], [], [], []
    equal_positions, equals = [], []
    for position, marker in enumerate(markers):
        tag = marker[0]
        if tag == _REF:
            ref_positions.append(position)
            refs.append(marker[1])
        elif tag == _IS or (
            tag == _EQ and (marker[1] == () or (type(marker[1]) is int and 0 <= marker[1] < 256))
        ):
            atom_positions.append(position)  # () and small ints are singletons: `is` works
            atoms.append(marker[1])
        elif tag == _EQ:
            # counts and tuples (of names, of a dagger class's members): one tuple comparison
            # of them all compares each pair with ==, as _holds does
            equal_positions.append(position)
            equals.append(marker[1])
        elif tag != _ANY:
            others.append((position, marker))
    positions = ref_positions + atom_positions
    return (
        len(markers),
        _picker(positions) if positions else None,
        tuple(refs),
        tuple(atoms),
        _picker(equal_positions) if equal_positions else None,
        tuple(equals),
        tuple(others),
    )


def _group_holds(values: Sequence[Any], group: Marker) -> bool:
    count, pick, refs, atoms, pick_equal, equals, others = group
    if len(values) != count:
        return False
    if pick is not None:
        targets = tuple(map(_CALL, refs))
        if None in targets:  # a referent died: whatever the slot holds now is something else
            return False
        if not all(map(operator.is_, pick(values), targets + atoms)):
            return False
    if pick_equal is not None and pick_equal(values) != equals:
        return False
    return not others or all(_holds(values[position], marker) for position, marker in others)


def _dagger_owned(value: Any) -> bool:
    """Whether ``value`` (in a dagger class's namespace) is dagger's own or an immutable
    builtin: a check may hold it without keeping anything of the user's alive."""
    if type(value) in _ATOMIC or isinstance(value, _DESCRIPTOR_TYPES):
        return True
    if isinstance(value, staticmethod | classmethod):
        value = value.__func__
    if isinstance(value, property):
        return all(f is None or _dagger_owned(f) for f in (value.fget, value.fset, value.fdel))
    if isinstance(value, types.FunctionType):
        return _module_kind(_function_home(value))[0] == _DAGGER
    if isinstance(value, type):
        return _module_kind(_class_home(value))[0] == _DAGGER
    if type(value) in (list, tuple, set, frozenset):
        return all(type(item) in _ATOMIC for item in value)
    if type(value) is dict:
        return all(type(item) in _ATOMIC for pair in value.items() for item in pair)
    return False


def _holds(current: Any, marker: Marker) -> bool:
    tag = marker[0]
    if tag == _IS:
        return current is marker[1]
    if tag == _REF:
        target = marker[1]()
        return target is not None and current is target
    if tag == _EQ:
        return bool(current == marker[1])
    if tag == _CONTENT:
        try:
            return hashlib.sha256(encode(current)).hexdigest() == marker[1]
        except HashingError:
            return False
    if tag == _WRAP:
        return type(current) is marker[1] and _holds(current.__func__, marker[2])
    if tag == _PROP:
        return isinstance(current, property) and all(
            map(_holds, (current.fget, current.fset, current.fdel), marker[1])
        )
    if tag == _TYPE:
        return type(current) is marker[1]()
    return tag == _ANY


class _Gone(Exception):
    """A reader's object was collected: the cached identity cannot be checked."""


# Readers of slots; each holds weak references only, and raises _Gone when its object died.
def _live(ref: weakref.ref[Any]) -> Any:
    obj = ref()
    if obj is None:
        raise _Gone
    return obj


def _read_value(read: Callable[[], Any]) -> Reader:
    return lambda out: out.append(read())


def _read_attribute(ref: weakref.ref[Any], name: str) -> Callable[[], Any]:
    return lambda: getattr(_live(ref), name, _MISSING)


def _read_module(name: str) -> Callable[[], Any]:
    return lambda: sys.modules.get(name, _MISSING)


def _read_namespace(ref: weakref.ref[type]) -> Reader:
    """A class's member names (one tuple), then its members."""

    def read(out: list[Any]) -> None:
        cls = ref()  # _live, inlined: readers run for every promise of a tree
        if cls is None:
            raise _Gone
        members = vars(cls)
        out.append(tuple(members))
        out += members.values()

    return read


def _read_members(ref: weakref.ref[type]) -> Reader:
    """A class's members as one tuple."""

    def read(out: list[Any]) -> None:
        cls = ref()
        if cls is None:
            raise _Gone
        out.append(tuple(vars(cls).values()))

    return read


def _read_classes(ref: weakref.ref[type], attribute: str) -> Reader:
    """``__bases__`` or ``__mro__``: their count, then the classes."""

    def read(out: list[Any]) -> None:
        cls = ref()
        if cls is None:
            raise _Gone
        classes = getattr(cls, attribute)
        out.append(len(classes))
        out += classes

    return read


def _read_globals(ref: weakref.ref[types.FunctionType], names: tuple[str, ...]) -> Reader:
    """The values of ``names`` in the globals of the function ``ref`` (one module)."""
    missing = itertools.repeat(_MISSING)

    def read(out: list[Any]) -> None:
        out += map(_live(ref).__globals__.get, names, missing)

    return read


def _function_state(func: types.FunctionType, out: list[Any]) -> None:
    """Append what an identity reads of the function object itself, in a fixed order:
    code, ``__wrapped__``, defaults (count first), keyword defaults (names first), cells."""
    attributes = func.__dict__
    out += (func.__code__, attributes.get("__wrapped__", _MISSING) if attributes else _MISSING)
    defaults = func.__defaults__
    if defaults is None:
        out.append(0)
    else:
        out.append(len(defaults))
        out += defaults
    keyword = func.__kwdefaults__
    if keyword is None:
        out.append(())
    else:
        out.append(tuple(keyword))
        out += keyword.values()
    for cell in func.__closure__ or ():
        try:
            out.append(cell.cell_contents)
        except ValueError:
            out.append(_EMPTY)


def _read_functions(refs: tuple[weakref.ref[types.FunctionType], ...]) -> Reader:
    def read(out: list[Any]) -> None:
        for ref in refs:
            _function_state(_live(ref), out)

    return read


def _read_simple_functions(refs: tuple[weakref.ref[types.FunctionType], ...]) -> Reader:
    """Functions that had no defaults, closure or attributes (the common case): their code,
    and what would show that they have some now."""

    def read(out: list[Any]) -> None:
        for ref in refs:
            func = ref()
            if func is None:
                raise _Gone
            out += (
                func.__code__,
                func.__defaults__,
                func.__kwdefaults__,
                func.__closure__,
                len(func.__dict__),
            )

    return read


# Readers that run none of the user's code: they read class namespaces and bases and the
# slots of function objects (a _read_value reader may call a module's __getattr__ or a
# descriptor).
_PLAIN_READERS: dict[types.CodeType, str] = {
    reader(*arguments).__code__: kind
    for kind, reader, arguments in (
        ("namespace", _read_namespace, (None,)),
        ("members", _read_members, (None,)),
        ("classes", _read_classes, (None, "__bases__")),
        ("globals", _read_globals, (None, ())),
        ("simple functions", _read_simple_functions, ((),)),
        ("functions", _read_functions, ((),)),
    )
}


# -- the walk itself ----------------------------------------------------------------------------


class _Walk:
    """One analysis: a work list of objects, the entries found, the names given, the checks."""

    def __init__(self, root_module: str | None, base: type | None) -> None:
        self.root_module = root_module
        self.base = base
        self.entries: list[ManifestEntry] = []
        self.keys: set[tuple[str, str]] = set()
        self.names: dict[int, str] = {}  # id(object) -> its node name
        self.taken: dict[str, int] = {}  # node name -> id(object)
        self.alive: list[Any] = []  # keeps visited objects alive, so ids stay unique
        self.queue: collections.deque[tuple[Any, str, str, int]] = collections.deque()
        # how to check the identity later: readers and their markers; None once impossible
        self.checks: list[tuple[Reader, list[Marker]]] | None = []
        # id(module globals) -> (a function of that module, name -> marker of its value)
        self.global_markers: dict[int, tuple[weakref.ref[Any], dict[str, Marker]]] = {}
        # the functions expanded, and the markers of their state, flat (see _function_state)
        self.function_refs: list[weakref.ref[types.FunctionType]] = []
        self.function_markers: list[Marker] = []
        # functions without defaults, closure or attributes, and the markers of their state
        self.simple_refs: list[weakref.ref[types.FunctionType]] = []
        self.simple_markers: list[Marker] = []
        self.code_calls = 0
        # validation()'s checks as one generated function, when they allow it
        self.plain_check: Callable[[], bool] | None = None

    # -- entries and checks ------------------------------------------------------------------

    def add(self, kind: str, name: str, digest: str, value: str) -> None:
        key = (kind, name)
        if key not in self.keys:
            self.keys.add(key)
            self.entries.append(ManifestEntry(kind, name, digest, value))

    def untracked(self, name: str, why: str) -> None:
        self.add("untracked", name, "", why)

    def watch(self, read: Callable[[], Any], value: Any, fallback: Marker | None = None) -> None:
        """Remember to check, next time, that ``read()`` still gives ``value``.

        ``fallback`` is the marker to use when ``value`` has none of its own (see
        :meth:`value`).
        """
        if self.checks is None:
            return
        marker = _marker(value) or fallback
        if marker is None:
            self.checks = None  # cannot tell cheaply: the next call walks again
        else:
            self.checks.append((_read_value(read), [marker]))

    def watch_classes(self, cls: type, attribute: str) -> None:
        if self.checks is not None:
            classes = getattr(cls, attribute)
            markers = [(_EQ, len(classes)), *((_REF, weakref.ref(k)) for k in classes)]
            self.checks.append((_read_classes(weakref.ref(cls), attribute), markers))

    def watch_global(self, func: types.FunctionType, name: str, marker: Marker | None) -> None:
        """The global ``name`` of ``func``'s module: checked with all that module's globals."""
        if self.checks is None:
            return
        if marker is None:
            self.checks = None
            return
        key = id(func.__globals__)
        if key not in self.global_markers:
            self.global_markers[key] = (weakref.ref(func), {})
        self.global_markers[key][1].setdefault(name, marker)

    def validation(self) -> Validation | None:
        """How a later call checks this identity: every reader, and all markers compiled."""
        if self.checks is None:
            return None
        checks = [*self.checks]
        for ref, by_name in self.global_markers.values():
            checks.append((_read_globals(ref, tuple(by_name)), list(by_name.values())))
        if self.function_refs:
            checks.append((_read_functions(tuple(self.function_refs)), self.function_markers))
        if self.simple_refs:
            read = _read_simple_functions(tuple(self.simple_refs))
            checks.append((read, self.simple_markers))
        readers = tuple(reader for reader, _ in checks)
        self.plain_check = _generate_check(checks)
        return (readers, _compile([marker for _, markers in checks for marker in markers]))

    def relative(self, module: str | None, qualname: str) -> str:
        return _relative(module, qualname, self.root_module)

    def unique(self, name: str, obj: Any) -> str:
        candidate, number = name, 1
        while candidate in self.taken and self.taken[candidate] != id(obj):
            number += 1
            candidate = f"{name}#{number}"
        return candidate

    def library(self, module: str | None) -> str | None:
        """For code of a library or of dagger: record the library and return its kind."""
        kind, top, version = _module_kind(module)
        if kind == _USER:
            return None
        if kind != _DAGGER and top != "builtins":
            self.add("module", top, _sha("module", top, version), version)
        return kind

    def remember(self, obj: Any, name: str) -> None:
        self.names[id(obj)] = name
        self.taken.setdefault(name, id(obj))
        self.alive.append(obj)

    # -- nodes: functions, classes, modules ----------------------------------------------------

    def node(self, obj: Any, name: str, kind: str) -> str:
        """Make sure ``obj`` is in the manifest; return the name it goes by there.

        ``name`` is used when ``obj`` has no stable name of its own (a lambda, a closure,
        a function found in a class attribute under another name).
        """
        known = self.names.get(id(obj))
        if known is not None:
            return known
        if isinstance(obj, types.FunctionType):
            home = _function_home(obj)
            found = self.library(home)
            if found is not None:
                # Named by where its code lives: functools.wraps copies the wrapped function's
                # names onto a library's wrapper.
                real = f"{'dagger' if found == _DAGGER else home}.{obj.__code__.co_qualname}"
                if obj.__closure__ is None and "__wrapped__" not in obj.__dict__:
                    self.remember(obj, real)
                    return real
                # A library's wrapper (a decorator's product): a node of its own under the
                # path it was found at, whose closure leads to the user's function.
                node_name = self.unique(name, obj)
                self.remember(obj, node_name)
                version = _module_kind(home)[2]
                self.add(kind, node_name, _sha("library code", real, version), real)
                self.queue.append((obj, node_name, "library function", 0))
                return node_name
            if _resolves_to(obj.__module__, obj.__qualname__, obj):
                name = self.relative(obj.__module__, obj.__qualname__)
            node_name = self.unique(name, obj)
            self.remember(obj, node_name)
            self.queue.append((obj, node_name, kind, 0))
            return node_name
        if isinstance(obj, type):
            home = _class_home(obj)
            found = self.library(home)
            if found == _DAGGER:
                self.expand_dagger_class(obj)
                return identity_name(obj)
            if found is not None:
                node_name = identity_name(obj)
                self.remember(obj, node_name)
                return node_name
            if _resolves_to(home, obj.__qualname__, obj):
                name = self.relative(home, obj.__qualname__)
            node_name = self.unique(name, obj)
            self.remember(obj, node_name)
            self.queue.append((obj, node_name, "class", 0))
            return node_name
        if isinstance(obj, types.ModuleType):
            found = self.library(obj.__name__)
            if found is None:
                self.untracked(name, f"user module {obj.__name__}, read as a whole")
            node_name = "dagger" if found == _DAGGER else module_identity(obj.__name__)
            self.remember(obj, node_name)
            return node_name
        # builtin functions, ufuncs and other callables of libraries
        module = getattr(obj, "__module__", None) or type(obj).__module__
        self.library(module if isinstance(module, str) else None)
        node_name = identity_name(obj)
        self.remember(obj, node_name)
        return node_name

    def reference(self, kind: str, path: str, obj: Any) -> None:
        """``path`` (a global, a cell, an attribute) holds the function, class or module."""
        if isinstance(obj, type):
            node_kind = "class"
        else:
            node_kind = kind if kind in ("method", "property") else "function"
        target = self.node(obj, path, node_kind)
        if target != path:
            self.add(kind, path, _sha("reference", target), f"= {target}")

    def run(self) -> None:
        while self.queue:
            obj, name, kind, depth = self.queue.popleft()
            if kind == "class":
                self.expand_class(obj, name)
            elif kind == "library function":
                self.expand_wrapper(obj, name)
            elif kind == "object":
                self.expand_object(obj, name, depth)
            else:
                self.expand_function(obj, name, kind)

    # -- functions -----------------------------------------------------------------------------

    def expand_function(self, func: types.FunctionType, name: str, kind: str) -> None:
        code = func.__code__
        info = _code_info(code, func.__globals__)
        self.add(kind, name, info.entry_digest, info.location)
        markers = [
            _marker(code),
            self.expand_wrapped(func, name),
            *self.expand_defaults(func, name),
            *self.expand_cells(func, name, writes=info.writes),
        ]
        self.watch_function(func, markers)
        module = _function_home(func)
        for chain in info.reads:
            self.global_read(func, module, chain, info.writes)
        for level, imported, names in info.imports:
            self.import_read(func, module, level, imported, names)

    def expand_wrapper(self, func: types.FunctionType, name: str) -> None:
        """A library's wrapper: its version counts, and the user's code it wraps (in
        ``__wrapped__`` or its closure); the library's own state in its closure does not."""
        defaults = func.__defaults__ or ()
        keyword = func.__kwdefaults__ or {}
        markers = [
            _marker(func.__code__),
            self.expand_wrapped(func, name),
            *([(_ANY,)] * (1 + len(defaults) + 1 + len(keyword))),
            *self.expand_cells(func, name, library=True),
        ]
        self.watch_function(func, markers)

    def user_code(self, value: Any) -> bool:
        """Whether ``value`` is a function or class of user code."""
        if isinstance(value, types.MethodType):
            value = value.__func__
        if isinstance(value, types.FunctionType):
            return _module_kind(_function_home(value))[0] == _USER
        if isinstance(value, type):
            return _module_kind(_class_home(value))[0] == _USER
        return False

    def watch_function(self, func: types.FunctionType, markers: list[Marker | None]) -> None:
        if self.checks is None:
            return
        if None in markers:
            self.checks = None
            return
        if (
            func.__defaults__ is None
            and func.__kwdefaults__ is None
            and func.__closure__ is None
            and not func.__dict__
        ):
            self.simple_refs.append(weakref.ref(func))
            self.simple_markers += (
                (_REF, weakref.ref(func.__code__)),
                *([(_IS, None)] * 3),
                (_EQ, 0),
            )
            return
        self.function_refs.append(weakref.ref(func))
        self.function_markers.extend(cast(list[Marker], markers))

    def expand_wrapped(self, func: types.FunctionType, name: str) -> Marker | None:
        wrapped = vars(func).get("__wrapped__", _MISSING)
        fallback = None
        if wrapped is not _MISSING:
            fallback = self.value("closure", f"{name}.__wrapped__", wrapped)
        return _marker(wrapped) or fallback

    def expand_cells(
        self,
        func: types.FunctionType,
        name: str,
        library: bool = False,
        writes: frozenset[str] = frozenset(),
    ) -> list[Marker | None]:
        markers: list[Marker | None] = []
        for var, cell in zip(func.__code__.co_freevars, func.__closure__ or (), strict=False):
            try:
                content: Any = cell.cell_contents
            except ValueError:
                content = _EMPTY
            if content is _EMPTY:
                self.add("closure", f"{name}.{var}", _sha("empty cell"), "<empty>")
                markers.append(_marker(content))
            elif var == "__class__" and isinstance(content, type) and id(content) in self.names:
                markers.append(_marker(content))  # super()'s cell: the class being described
            elif library and not self.user_code(content):
                markers.append((_ANY,))  # a library's own state: not part of any identity
            elif var in writes:
                self.untracked(f"{name}.{var}", "closure variable the code changes")
                markers.append((_ANY,))
            else:
                fallback = self.value("closure", f"{name}.{var}", content)
                markers.append(_marker(content) or fallback)
        return markers

    def expand_defaults(self, func: types.FunctionType, name: str) -> list[Marker | None]:
        defaults = func.__defaults__ or ()
        markers: list[Marker | None] = [(_EQ, len(defaults))]
        if defaults:
            code = func.__code__
            positional = code.co_varnames[: code.co_argcount]
            names = positional[len(positional) - len(defaults) :]
            for parameter, default in zip(names, defaults, strict=True):
                fallback = self.value("default", f"{name}.{parameter}", default)
                markers.append(_marker(default) or fallback)
        keyword = func.__kwdefaults__ or {}
        markers.append((_EQ, tuple(keyword)))
        for parameter, default in keyword.items():
            fallback = self.value("default", f"{name}.{parameter}", default)
            markers.append(_marker(default) or fallback)
        return markers

    def global_read(
        self,
        func: types.FunctionType,
        module: str | None,
        chain: tuple[str, ...],
        writes: frozenset[str],
    ) -> None:
        head = chain[0]
        path = self.relative(module, head)
        if head in writes:
            self.untracked(path, "global the code changes")
            return
        namespace = func.__globals__
        value = namespace.get(head, _MISSING)
        if value is _MISSING:
            self.watch_global(func, head, _marker(value))  # defining it later counts
            scope = namespace.get("__builtins__", builtins)
            scope = vars(scope) if isinstance(scope, types.ModuleType) else scope
            if head not in scope:  # not a builtin (len, print): a name not defined yet
                self.add("global", path, _sha("undefined"), "undefined")
            return
        if isinstance(value, types.ModuleType) and value.__name__ == head:
            # ``import math`` binds the module under its own name: nothing to say but the
            # module itself (an alias, ``import numpy as np``, gets an entry of its own).
            path = head

        def first(held: Any, fallback: Marker | None) -> None:
            self.watch_global(func, head, _marker(held) or fallback)

        self.resolve(first, value, path, chain[1:])

    def resolve(
        self,
        first: Callable[[Any, Marker | None], None],
        value: Any,
        path: str,
        rest: Sequence[str],
    ) -> None:
        """Follow ``value.a.b`` while it goes through user modules, then record what it holds.

        ``first(value, fallback)`` watches the slot ``value`` was read from.
        """
        watch = first
        for attribute in rest:
            if not isinstance(value, types.ModuleType) or _module_kind(value.__name__)[0] != _USER:
                break
            watch(value, None)
            module_name = value.__name__
            read = _read_attribute(weakref.ref(value), attribute)
            watch = functools.partial(self.watch, read)
            value = getattr(value, attribute, _MISSING)
            path = self.relative(module_name, attribute)
            if value is _MISSING:
                watch(value, None)
                self.add("global", path, _sha("undefined"), "undefined")
                return
        watch(value, self.value("global", path, value))

    def import_read(
        self,
        func: types.FunctionType,
        module: str | None,
        level: int,
        imported: str,
        names: tuple[str, ...] | None,
    ) -> None:
        """``import x`` / ``from x import y`` inside a function."""
        try:
            if level:
                package = func.__globals__.get("__package__") or (module or "").rpartition(".")[0]
                imported = importlib.util.resolve_name("." * level + imported, package)
        except (ImportError, ValueError):
            return
        read = _read_module(imported)
        target = sys.modules.get(imported, _MISSING)
        self.watch(read, target)
        if target is _MISSING:
            kind = self.unimported(imported)
            if kind == _USER:
                self.untracked(imported, "user module not imported yet")
            return
        if self.library(imported) is not None:
            return
        if not names:
            self.untracked(imported, f"user module {imported}, read as a whole")
            return
        for attribute in names:
            self.resolve(functools.partial(self.watch, read), target, imported, (attribute,))

    def unimported(self, name: str) -> str:
        """Kind of a module a function imports but that is not imported yet (not imported)."""
        top = name.partition(".")[0]
        if top == "dagger":
            return _DAGGER
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            spec = None
        origin = getattr(spec, "origin", None)
        if isinstance(origin, str) and os.path.realpath(origin).startswith(_site_dirs()):
            version = _distribution_version(top)
            self.add("module", top, _sha("module", top, version), version)
            return _LIBRARY
        if top in sys.stdlib_module_names:
            self.add("module", top, _sha("module", top, _PYTHON), _PYTHON)
            return _STDLIB
        return _USER

    # -- values --------------------------------------------------------------------------------

    def value(self, kind: str, path: str, value: Any, depth: int = 0) -> Marker | None:
        """Record what ``path`` holds: by value, as a reference to code, or as untracked.

        Returns:
            How a check can tell the slot still holds an equivalent value when identity is not
            enough: the digest of its encoding (if that met no code), the type of an untracked
            value; None if only a new walk can tell.
        """
        if isinstance(value, types.FunctionType | type | types.ModuleType):
            self.reference(kind, path, value)
            return None
        if isinstance(value, types.MethodType):
            self.reference(kind, path, value.__func__)
            self.value(kind, f"{path}.__self__", value.__self__, depth + 1)
            return None
        if isinstance(value, types.BuiltinFunctionType):
            owner = getattr(value, "__self__", None)
            if owner is None or isinstance(owner, types.ModuleType):
                self.reference(kind, path, value)
                return None
        wrapped = _wrapped(value)
        if wrapped is not None:
            # A callable object wrapping a function (functools.lru_cache): the function.
            self.library(type(value).__module__)
            self.reference(kind, path, wrapped)
            try:
                return (_REF, weakref.ref(value))
            except TypeError:
                return None
        calls = self.code_calls
        try:
            encoded = encode(value, code=self.code_reference)
        except HashingError:
            return self.unencodable(kind, path, value, depth)
        digest = hashlib.sha256(encoded).hexdigest()
        shown = "<hidden>" if _SECRET.search(path.rpartition(".")[2]) else _short(value)
        self.add(kind, path, digest, shown)
        return (_CONTENT, digest) if self.code_calls == calls else None

    def unencodable(self, kind: str, path: str, value: Any, depth: int) -> Marker | None:
        cls = type(value)
        module = _class_home(cls)
        if (
            _module_kind(module)[0] == _USER
            and depth < _MAX_OBJECT_DEPTH
            and all(
                klass is object or _module_kind(_class_home(klass))[0] == _USER
                for klass in cls.__mro__
            )
        ):
            # An object of the user's own class: its class's code and its attributes.
            class_name = self.node(cls, self.relative(module, cls.__qualname__), "class")
            known = self.names.get(id(value))
            if known is not None:
                self.add(kind, path, _sha("reference", known), f"= {known}")
                return None
            self.remember(value, path)
            self.add(kind, path, _sha("object", class_name), f"{class_name} object")
            self.queue.append((value, path, "object", depth))
            return None
        name = getattr(value, "__name__", None)
        if callable(value) and isinstance(name, str) and self.library(module) is not None:
            # A library's callable that is not a function (a numpy ufunc, a jit function).
            target = f"{module}.{name}"
            self.add(kind, path, _sha("reference", target), f"= {target}")
            return None
        self.untracked(path, qualified_name(cls))
        if issubclass(cls, list | tuple | dict | set | frozenset) or dataclasses.is_dataclass(cls):
            return None  # what it holds may become encodable: only a new walk can tell
        # Any other value of this type is untracked just the same.
        return (_TYPE, weakref.ref(cls))

    def expand_object(self, obj: Any, path: str, depth: int) -> None:
        # Attributes of an object change in place, unseen by any check: walk again each time.
        self.checks = None
        for attribute, content in _instance_attributes(obj):
            self.value("instance attribute", f"{path}.{attribute}", content, depth + 1)

    def code_reference(self, obj: Any) -> str:
        """The ``code`` callback for values: a function or class in a value is a node too."""
        self.code_calls += 1
        if isinstance(obj, types.MethodType):
            obj = obj.__func__
        qualname = str(getattr(obj, "__qualname__", None) or getattr(obj, "__name__", "?"))
        module = getattr(obj, "__module__", None)
        module = module if isinstance(module, str) else None
        return _sha("reference", self.node(obj, self.relative(module, qualname), "function"))

    # -- classes -------------------------------------------------------------------------------

    def pinned(self, cls: type) -> str | None:
        """VERSION of a subclass of a dagger class, if set."""
        version = getattr(cls, "VERSION", None)
        if version is None:
            return None
        if any(_module_kind(_class_home(k))[0] == _DAGGER for k in cls.__mro__[1:]):
            return str(version)
        return None

    def expand_class(self, cls: type, name: str) -> None:
        ref = weakref.ref(cls)
        version = self.pinned(cls)
        if version is not None:
            self.watch_classes(cls, "__mro__")
            self.watch(_read_attribute(ref, "VERSION"), getattr(cls, "VERSION", None))
            self.add("version", name, _sha("version", version), version)
            return
        bases = [self.base_name(base) for base in cls.__bases__ if base is not object]
        self.watch_classes(cls, "__bases__")
        self.add("class", name, _sha("class", *bases), f"{cls.__name__}({', '.join(bases)})")
        members = vars(cls)
        contents: dict[str, Marker | None] = {}
        if not (self.base is not None and issubclass(self.base, cls)):
            dataclass = "__dataclass_fields__" in members
            if dataclass:
                spec = _dataclass_spec(cls)
                self.add(
                    "class attribute",
                    f"{name}.__dataclass_fields__",
                    hashlib.sha256(encode(spec)).hexdigest(),
                    "fields " + ", ".join(field[0] for field in spec[1]),
                )
            is_enum = isinstance(cls, enum.EnumMeta)
            for attribute in sorted(members):
                member = members[attribute]
                if attribute in _SKIPPED_MEMBERS:
                    continue
                if is_enum and (
                    isinstance(member, cls)
                    or (attribute.startswith("_") and attribute.endswith("_"))
                ):
                    continue
                if dataclass and _is_generated(member):
                    continue
                contents[attribute] = self.member(name, attribute, member)
            if is_enum:
                pairs = [(item._name_, item._value_) for item in cast(Any, cls)]
                self.value("class attribute", f"{name}.__members__", pairs)
        self.watch_namespace(ref, members, contents)

    def watch_namespace(
        self, ref: weakref.ref[type], members: Mapping[str, Any], contents: dict[str, Marker | None]
    ) -> None:
        if self.checks is None:
            return
        if not contents and all(map(_dagger_owned, members.values())):
            # A dagger class nobody patched (every recipe's identity checks Recipe): its own
            # objects may be held, and one tuple comparison in C checks them all. Equality is
            # enough here: its functions and descriptors compare by identity, and its plain
            # attributes are not part of any identity. Names need no check: a patch brings a
            # new object (a user's function), and a removal or addition changes the count.
            self.checks.append((_read_members(ref), [(_EQ, tuple(members.values()))]))
            return
        markers: list[Marker] = [(_EQ, tuple(members))]
        for attribute, member in members.items():
            if attribute in _SKIPPED_MEMBERS:
                markers.append((_ANY,))
                continue
            marker = _marker(member)
            if marker is None:
                if attribute not in contents:
                    markers.append((_ANY,))  # a member this walk did not read
                    continue
                marker = contents[attribute]
                if marker is None:
                    self.checks = None
                    return
            markers.append(marker)
        self.checks.append((_read_namespace(ref), markers))

    def base_name(self, base: type) -> str:
        """Name of a base class in the manifest; a user base becomes a node of its own."""
        home = _class_home(base)
        kind = _module_kind(home)[0]
        if kind == _USER:
            return self.node(base, self.relative(home, base.__qualname__), "class")
        if kind == _DAGGER:
            self.expand_dagger_class(base)
        else:
            self.library(home)
        return identity_name(base)

    def expand_dagger_class(self, cls: type) -> None:
        """Dagger's own classes count only for what the user patched onto them."""
        if id(cls) in self.names:
            return
        self.remember(cls, identity_name(cls))
        name = identity_name(cls)
        members = vars(cls)
        contents: dict[str, Marker | None] = {}
        for attribute in sorted(members):
            member = members[attribute]
            function = _plain_function(member)
            if isinstance(function, property):
                function = function.fget
            if (
                isinstance(function, types.FunctionType)
                and _module_kind(_function_home(function))[0] == _USER
            ):
                contents[attribute] = self.member(name, attribute, member)
        self.watch_namespace(weakref.ref(cls), members, contents)
        for base in cls.__bases__:
            if base is not object and _module_kind(_class_home(base))[0] == _DAGGER:
                self.expand_dagger_class(base)

    def member(self, owner: str, attribute: str, member: Any) -> Marker | None:
        """One member of a class's namespace; returns a fallback marker, as :meth:`value`."""
        path = f"{owner}.{attribute}"
        function = _plain_function(member)
        if isinstance(function, types.FunctionType):
            self.code(path, function, "method")
            return None
        if function is not member:  # a staticmethod or classmethod of another callable
            self.value("method", path, function)
            return None
        if isinstance(member, property):
            for suffix, accessor in (
                ("", member.fget),
                (".setter", member.fset),
                (".deleter", member.fdel),
            ):
                if accessor is not None:
                    self.code(path + suffix, accessor, "property")
            return None
        if isinstance(member, functools.cached_property):
            self.code(path, member.func, "property")
            return None
        if isinstance(member, functools.partialmethod):
            self.code(path, member.func, "method")
            self.value("argument", f"{path}.args", (member.args, member.keywords))
            return None
        if isinstance(member, _DESCRIPTOR_TYPES):
            return None
        return self.value("class attribute", path, member)

    def code(self, path: str, function: Any, kind: str) -> None:
        """A method or a property's accessor: a node under its own path, or a reference."""
        if (
            isinstance(function, types.FunctionType)
            and id(function) not in self.names
            and _module_kind(_function_home(function))[0] == _USER
        ):
            node_name = self.unique(path, function)
            self.remember(function, node_name)
            self.queue.append((function, node_name, kind, 0))
            if node_name != path:
                self.add(kind, path, _sha("reference", node_name), f"= {node_name}")
            return
        self.value(kind, path, function)


# -- public entry points ------------------------------------------------------------------------


class _Local(threading.local):
    def __init__(self) -> None:
        # (id(obj), id(base)) of the identities this thread is computing or checking
        self.busy: set[tuple[int, int]] = set()


_local = _Local()


def _no_base() -> None:
    return None


# (id(obj), id(base)) -> (weakref to obj, weakref to base (or _no_base), checks, identity,
# the checks as one call when they cannot re-enter code_identity (else None))
_IDENTITIES: dict[
    tuple[int, int],
    tuple[
        weakref.ref[Any],
        Callable[[], Any],
        Validation,
        CodeIdentity,
        Callable[[], bool] | None,
    ],
] = {}


def _generate_check(checks: Sequence[tuple[Reader, Sequence[Marker]]]) -> Callable[[], bool] | None:
    """The checks of a cached identity as one generated function, straight-line code that
    reads each slot and compares it with its marker (3x faster than the general readers and
    :func:`_group_holds`; a tree of 100,000 promises checks its recipe class 100,000 times).

    Only for checks that cannot run the user's code, and so cannot ask for a code identity
    again (the caller then needs no re-entry guard): readers of class namespaces, bases and
    function slots, and markers that compare by identity or equality with builtins. None
    otherwise. The function returns True when every slot still holds what its marker says,
    False (or raises) when not: the caller then takes the general path, which decides.
    """
    space: dict[str, Any] = {"_vars": vars, "_tuple": tuple, "_len": len, "_MISSING": _MISSING}
    lines = ["def check():"]

    def constant(value: Any) -> str:
        name = f"_k{len(space)}"
        space[name] = value
        return name

    def compare(expression: str, marker: Marker) -> bool:
        """Append the lines that return False unless ``expression`` passes ``marker``."""
        tag = marker[0]
        if tag == _ANY:
            return True
        if tag == _IS or (
            tag == _EQ and (marker[1] == () or (type(marker[1]) is int and 0 <= marker[1] < 256))
        ):
            lines.append(f" if ({expression}) is not {constant(marker[1])}: return False")
        elif tag == _EQ and type(marker[1]) in (int, str, bytes, float, tuple, frozenset):
            lines.append(f" if not (({expression}) == {constant(marker[1])}): return False")
        elif tag == _REF:
            lines.append(f" _t = {constant(marker[1])}()")
            lines.append(f" if _t is None or ({expression}) is not _t: return False")
        else:
            return False
        return True

    for reader, markers in checks:
        code = getattr(reader, "__code__", None)
        kind = _PLAIN_READERS.get(code) if code is not None else None
        if code is None or kind is None:
            return None
        cells = reader.__closure__ or ()
        free = dict(zip(code.co_freevars, [cell.cell_contents for cell in cells], strict=True))
        at = 0  # position in markers
        if kind in ("namespace", "members", "classes"):
            lines.append(f" _c = {constant(free['ref'])}()")
            lines.append(" if _c is None: return False")
        if kind == "members":
            if not compare("_tuple(_vars(_c).values())", markers[0]):
                return None
            continue
        if kind == "namespace":
            lines.append(" _m = _vars(_c)")
            if markers[0][0] != _EQ or not compare("_tuple(_m)", markers[0]):
                return None  # the names' count fixes the unpacking below
            items = [f"_v{index}" for index in range(len(markers) - 1)]
            if items:
                lines.append(f" {', '.join(items)}, = _m.values()")
            for item, marker in zip(items, markers[1:], strict=True):
                if not compare(item, marker):
                    return None
            continue
        if kind == "classes":
            attribute = free["attribute"]
            if attribute not in ("__bases__", "__mro__"):
                return None
            lines.append(f" _s = _c.{attribute}")
            if not compare("_len(_s)", markers[0]):
                return None
            items = [f"_v{index}" for index in range(len(markers) - 1)]
            if items:
                lines.append(f" {', '.join(items)}, = _s")
            for item, marker in zip(items, markers[1:], strict=True):
                if not compare(item, marker):
                    return None
            continue
        if kind == "globals":
            lines.append(f" _f = {constant(free['ref'])}()")
            lines.append(" if _f is None: return False")
            lines.append(" _g = _f.__globals__.get")
            for name, marker in zip(free["names"], markers, strict=True):
                if not compare(f"_g({constant(name)}, _MISSING)", marker):
                    return None
            continue
        if kind == "functions":
            at = _generate_function_checks(free["refs"], markers, lines, compare, constant)
            if at != len(markers):
                return None
            continue
        # simple functions: five slots each
        for ref in free["refs"]:
            lines.append(f" _f = {constant(ref)}()")
            lines.append(" if _f is None: return False")
            for slot in ("__code__", "__defaults__", "__kwdefaults__", "__closure__"):
                if not compare(f"_f.{slot}", markers[at]):
                    return None
                at += 1
            if not compare("_len(_f.__dict__)", markers[at]):
                return None
            at += 1
    lines.append(" return True")
    # Compiled when first called, not now: compiling a class's check costs more than the
    # rest of its first identity (a recipe reaching 50 functions: ~15 ms), and many classes
    # are fingerprinted once per process. The stub runs in the check's namespace and takes
    # the compiled code on its first call, so whoever holds it runs that code directly.
    source = "\n".join(lines)
    check = types.FunctionType(_deferred_check.__code__, space, "check")
    space["_compile_me"] = functools.partial(_compile_check, check, source, space)
    return check


def _deferred_check() -> bool:
    """The code a generated check starts with; it runs with the check's namespace as its
    globals, where ``_compile_me`` compiles the check and runs it."""
    compile_me: Callable[[], bool] = globals()["_compile_me"]
    return compile_me()


def _compile_check(check: types.FunctionType, source: str, space: dict[str, Any]) -> bool:
    """Compile a generated check, give its code to ``check`` (the stub every cache holds) and
    run it once."""
    exec(compile(source, "<dagger code-identity check>", "exec"), space)
    check.__code__ = space["check"].__code__
    space["check"] = check
    space.pop("_compile_me", None)
    return bool(check())


def _generate_function_checks(
    refs: Sequence[weakref.ref[types.FunctionType]],
    markers: Sequence[Marker],
    lines: list[str],
    compare: Callable[[str, Marker], bool],
    constant: Callable[[Any], str],
) -> int:
    """Append to ``lines`` the checks of :func:`_read_functions`'s slots, in its order (code,
    ``__wrapped__``, defaults count then values, keyword-default names then values, cells;
    see :func:`_function_state`); return how many markers they use (-1: cannot be generated,
    the general readers check instead)."""
    at = 0

    def unpack(count: int, source: str) -> bool:
        """Unpack ``count`` values of ``source`` and compare each with the next marker."""
        nonlocal at
        items = [f"_v{index}" for index in range(count)]
        lines.append(f" {', '.join(items)}, = {source}")
        for item in items:
            if not compare(item, markers[at]):
                return False
            at += 1
        return True

    for ref in refs:
        func = ref()
        if func is None:
            return -1
        lines.append(f" _f = {constant(ref)}()")
        lines.append(" if _f is None: return False")
        if not compare("_f.__code__", markers[at]):
            return -1
        lines.append(" _a = _f.__dict__")
        wrapped = "(_a.get('__wrapped__', _MISSING) if _a else _MISSING)"
        if not compare(wrapped, markers[at + 1]):
            return -1
        count = markers[at + 2]
        at += 3
        if count[0] != _EQ or type(count[1]) is not int:
            return -1
        lines.append(" _d = _f.__defaults__")
        if count[1] == 0:
            lines.append(" if _d: return False")  # None and () both read as no defaults
        else:
            lines.append(f" if _d is None or _len(_d) != {count[1]}: return False")
            if not unpack(count[1], "_d"):
                return -1
        names = markers[at]
        at += 1
        if names[0] != _EQ or type(names[1]) is not tuple:
            return -1
        lines.append(" _w = _f.__kwdefaults__")
        if not names[1]:
            lines.append(" if _w: return False")
        else:
            lines.append(f" if _w is None or _tuple(_w) != {constant(names[1])}: return False")
            if not unpack(len(names[1]), "_w.values()"):
                return -1
        cells = len(func.__closure__ or ())
        if cells:  # as many as the code's free variables, and the code was compared above
            lines.append(" _l = _f.__closure__")
            for index in range(cells):
                # an empty cell raises here: the caller then takes the general path
                if not compare(f"_l[{index}].cell_contents", markers[at]):
                    return -1
                at += 1
    return at


_READS = 0


def code_reads() -> int:
    """How many code identities this process has asked for so far. Two readings that differ
    say that what was computed between them read code: an id whose recipe properties hold a
    function, a class or another recipe (a run checks that such code is unchanged)."""
    return _READS


def code_identity(obj: Any, base: type | None = None) -> CodeIdentity:
    """The code identity of a class, function, method, partial or callable object.

    Args:
        obj: A class (its code below ``base``), a function (its code, closures, defaults and
            what it reads), a bound method (its function and what it is bound to), a
            ``functools.partial`` (its function and arguments), or any other callable object
            (its class's code and its instance attributes).
        base: For a class: the dagger class it extends (``Recipe``, ``ExperimentState``); the
            members of ``base`` and of the classes above it count only where the user
            patched them in.

    Returns:
        The fingerprint and the manifest (see the module documentation for the entry format).
        Never raises for a value it cannot encode: that name is listed as untracked.
    """
    global _READS
    _READS += 1
    key = (id(obj), id(base))
    cached = _IDENTITIES.get(key)
    # The common case, without the re-entry guard: a check that runs none of the user's code
    # cannot ask for this identity again. Once per promise of a tree.
    if cached is not None and cached[4] is not None and cached[0]() is obj and cached[1]() is base:
        try:
            if cached[4]():
                return cached[3]
        except Exception:  # a slot that cannot be read as it was: the full path decides
            pass
    busy = _local.busy
    if key in busy:
        # Asked again while computing or checking it: a recipe whose code reads a global
        # holding an instance of that recipe, whose encoding asks for the recipe's identity.
        name = identity_name(obj)
        entry = ManifestEntry("function", name, _sha("recursive", name), "(recursive)")
        return CodeIdentity(_fingerprint_of((entry,)), (entry,))
    busy.add(key)
    try:
        cached = _IDENTITIES.get(key)
        if cached is not None and cached[0]() is obj and cached[1]() is base:
            # _still_valid, inlined: this runs once per promise of a tree
            readers, group = cached[2]
            current: list[Any] = []
            try:
                for reader in readers:
                    reader(current)
            except Exception:  # _Gone, or a slot that cannot be read any more: recompute
                return _compute(obj, base, key)
            if _group_holds(current, group):
                return cached[3]
        return _compute(obj, base, key)
    finally:
        busy.discard(key)


def identity_check(obj: Any, base: type | None = None) -> Callable[[], bool] | None:
    """The check behind :func:`code_identity`'s cached answer for ``obj``: a function of no
    arguments that returns True while that answer still holds (no slot it was computed from
    has changed), and False (or raises) once it may not. None when there is no cached answer,
    or its check cannot run without the re-entry guard (it would read the user's code).

    For a caller that applies one class many times (100,000 recipes of a sweep): while the
    check passes, ``code_identity(obj, base)`` returns what it returned last; when it fails,
    the caller asks :func:`code_identity` again.
    """
    cached = _IDENTITIES.get((id(obj), id(base)))
    if cached is None or cached[0]() is not obj or cached[1]() is not base:
        return None
    return cached[4]


def _compute(obj: Any, base: type | None, key: tuple[int, int]) -> CodeIdentity:
    if isinstance(obj, type):
        module: str | None = _class_home(obj)
    else:
        target = obj.__func__ if isinstance(obj, types.MethodType) else obj
        target = target.func if isinstance(target, functools.partial) else target
        module = getattr(target, "__module__", None)
        if not isinstance(module, str):
            module = type(target).__module__
    walk = _Walk(module, base)
    _start(walk, obj)
    walk.run()
    identity = CodeIdentity(_fingerprint_of(walk.entries), tuple(walk.entries))
    validation = walk.validation()
    if validation is not None and isinstance(obj, type | types.FunctionType):
        _remember_identity(key, obj, base, validation, identity, walk.plain_check)
    return identity


def _remember_identity(
    key: tuple[int, int],
    obj: Any,
    base: type | None,
    validation: Validation,
    identity: CodeIdentity,
    plain_check: Callable[[], bool] | None,
) -> None:
    def forget(ref: weakref.ref[Any]) -> None:
        entry = _IDENTITIES.get(key)
        if entry is not None and entry[0] is ref:
            _IDENTITIES.pop(key, None)

    _IDENTITIES[key] = (
        weakref.ref(obj, forget),
        _no_base if base is None else weakref.ref(base),
        validation,
        identity,
        plain_check,
    )


def _start(walk: _Walk, obj: Any) -> None:
    if isinstance(obj, type):
        walk.node(obj, walk.relative(_class_home(obj), obj.__qualname__), "class")
    elif isinstance(obj, types.FunctionType):
        walk.node(obj, walk.relative(obj.__module__, obj.__qualname__), "function")
    elif isinstance(obj, types.MethodType):
        _start(walk, obj.__func__)
        walk.value("argument", "__self__", obj.__self__)
    elif isinstance(obj, functools.partial):
        _start(walk, obj.func)
        walk.value("argument", "partial.args", tuple(obj.args))
        walk.value("argument", "partial.keywords", dict(obj.keywords))
    elif isinstance(obj, types.BuiltinFunctionType | types.ModuleType):
        walk.node(obj, getattr(obj, "__name__", "?"), "function")
    elif callable(obj) and _module_kind(_class_home(type(obj)))[0] == _USER:
        cls = type(obj)
        name = walk.node(cls, walk.relative(_class_home(cls), cls.__qualname__), "class")
        walk.remember(obj, f"{name}()")
        walk.queue.append((obj, f"{name}()", "object", 0))
    else:
        walk.value("argument", getattr(obj, "__name__", type(obj).__name__), obj)


def code_digest(obj: Any) -> str:
    """Hex fingerprint of ``obj``'s code identity: the ``code`` callback of hashing.

    Pass it as ``dagger.hashing.encode(value, code=code_digest)`` so that functions and
    classes inside values are hashed by what they compute. A value that refers back to an
    object whose identity is being computed (directly or not) gets a digest of its name.
    """
    return code_identity(obj).fingerprint


def class_fingerprint(cls: type, base: type, always: tuple[str, ...] = ("run",)) -> str:
    """Fingerprint of the code a class adds below ``base`` (``code_identity(cls, base)``).

    ``always`` is kept for callers of the first engine: members patched onto ``base`` (the
    seed's ``Recipe.run = MethodType(...)``) always count now, whatever their name.
    """
    del always
    return code_identity(cls, base).fingerprint


def function_fingerprint(func: Any) -> str:
    """Fingerprint of a function's code identity (``code_identity(func)``)."""
    return code_identity(func).fingerprint


# -- explaining a change ------------------------------------------------------------------------


def _entries(manifest: Iterable[ManifestEntry | Mapping[str, Any]]) -> list[ManifestEntry]:
    return [
        entry if isinstance(entry, ManifestEntry) else ManifestEntry.from_json(entry)
        for entry in manifest
    ]


def manifest_changes(
    old: Iterable[ManifestEntry | Mapping[str, Any]],
    new: Iterable[ManifestEntry | Mapping[str, Any]],
) -> list[str]:
    """Human lines saying which tracked ingredients differ between two manifests.

    Args:
        old: The manifest of the stored state (entries, or their JSON dicts).
        new: The manifest of the state about to be computed.

    Returns:
        One line per difference, in the new manifest's order, removals last:
        ``"global LABEL_SMOOTHING 0.1 -> 0.3"``, ``"code of Smooth.run changed"``,
        ``"module torch: torch 2.14.1 -> torch 2.15.0"``, ``"VERSION of Smooth 1 -> 2"``,
        ``"global helpers.EPS added (1e-08)"``, ``"method Smooth.extra removed"``.
        Untracked entries never appear: they are not part of the identity.
    """
    before = {(e.kind, e.name): e for e in _entries(old) if e.kind != "untracked"}
    after = {(e.kind, e.name): e for e in _entries(new) if e.kind != "untracked"}
    lines = []
    for key, entry in after.items():
        previous = before.get(key)
        if previous is None:
            shown = f" ({entry.value})" if entry.value and entry.kind not in _CODE_KINDS else ""
            lines.append(f"{entry.kind} {entry.name} added{shown}")
        elif previous.digest != entry.digest:
            lines.append(_change(previous, entry))
    for key, entry in before.items():
        if key not in after:
            shown = f" ({entry.value})" if entry.value and entry.kind not in _CODE_KINDS else ""
            lines.append(f"{entry.kind} {entry.name} removed{shown}")
    return lines


def _change(old: ManifestEntry, new: ManifestEntry) -> str:
    if new.kind in _CODE_KINDS:
        return f"code of {new.name} changed"
    if new.kind == "version":
        return f"VERSION of {new.name} {old.value} -> {new.value}"
    if new.kind == "module":
        return f"module {new.name}: {old.value} -> {new.value}"
    if old.value != new.value:
        return f"{new.kind} {new.name} {old.value} -> {new.value}"
    return f"{new.kind} {new.name} changed"
