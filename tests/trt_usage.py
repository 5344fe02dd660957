"""Which TensorRT API edgekit's code uses, checked against one version's real surface (tests/trt_bindings).

An AST walk with a little type inference: `trt` (a parameter of that name, `import_tensorrt()`, or
`import tensorrt as trt`) is the module; `trt.Builder(logger)` is a Builder; a method's result has the type
its pybind signature returns (`builder.create_network()` -> INetworkDefinition); `self.x = ...` types carry
across a class's methods; a function's parameters take the types of its call sites (`_use_dla(trt,
builder, config, ...)`).
Each access is a Use: attribute read, property write, call (argument count and keyword names against
every overload), subclass override (`def get_batch(self, names)` against the base's virtual), or a probe.

A Use is optional when guarded (`if hasattr(trt.BuilderFlag, "TF32")`, `getattr(x, "name", default)`), and
on the weak path when it only runs for weakly typed builds (builder precision flags, INT8 calibrators):
inside `if plan.typing == "weak":` / `if built.calibrate:`, or in a function in WEAK_FUNCTIONS."""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from trt_bindings import Surface

WEAK_TEST = re.compile(r"\btyping\s*==\s*['\"]weak['\"]|\.calibrate\b")
WEAK_FUNCTIONS = frozenset({"make_entropy_calibrator"})  # calibrator_trt: INT8 calibration of weak builds


@dataclass(frozen=True)
class T:
    """An inferred value: the module, a class object, an instance, a (bound) method, or edgekit's own code."""

    kind: str  # module | class | instance | method | local_fn | local_class | local_instance
    name: str = ""  # TensorRT qualname, or the local def/class name
    attr: str = ""  # method name
    bound: bool = False
    node: ast.AST | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Ctx:
    weak: bool = False
    guarded: frozenset = frozenset()  # (owner, name) made optional by a hasattr() in an enclosing if


@dataclass
class Use:
    where: str  # file:line
    owner: str  # TensorRT class qualname, "" = the module
    name: str
    what: str  # get | set | call | override | probe | dynamic
    weak: bool = False
    optional: bool = False
    problem: str | None = None
    deprecated: bool = False  # the version's docs mark it [DEPRECATED]

    def __str__(self) -> str:
        owner = f"trt.{self.owner}" if self.owner else "trt"
        flags = "".join([" [weak path]" if self.weak else "", " [optional]" if self.optional else "",
                         " [deprecated]" if self.deprecated else ""])
        return f"{self.where}: {owner}.{self.name} ({self.what}){flags}" + (f": {self.problem}" if self.problem else "")


def accepts(params: list[dict], nargs: int | None, kwnames: tuple[str, ...]) -> bool:
    """Whether a call with `nargs` positional arguments (None = unknown, *args) and these keywords binds."""
    pos = [p for p in params if p["kind"] == "pos"]
    varargs = any(p["kind"] == "varargs" for p in params)
    varkw = any(p["kind"] == "varkw" for p in params)
    named = {p["name"] for p in params if p["kind"] in ("pos", "kwonly")}
    if nargs is not None and nargs > len(pos) and not varargs:
        return False
    if any(k not in named for k in kwnames) and not varkw:
        return False
    filled = set(kwnames) | {p["name"] for p in pos[:nargs if nargs is not None else len(pos)]}
    return all(p["default"] or p["name"] in filled for p in params if p["kind"] in ("pos", "kwonly"))


def fmt_sigs(sigs: list[dict]) -> str:
    return " | ".join("(" + ", ".join(p["name"] + ("=" if p["default"] else "") for p in s["params"]) + ")"
                      for s in sigs) or "(no signature)"


class Walker:
    """Walks one file's AST against one surface; `run()` returns its Uses."""

    def __init__(self, source: str, filename: str, surface: Surface) -> None:
        self.tree, self.file, self.s = ast.parse(source), filename, surface
        self.param_types: dict[tuple[int, str], T] = {}
        self.self_attrs: dict[tuple[str, str], T] = {}
        self.local_bases: dict[str, list[str]] = {}  # local class -> its TensorRT bases
        self.assigned: set[tuple[str, str]] = set()  # (local class, attribute) set on self anywhere
        self.uses: list[Use] = []

    def run(self) -> list[Use]:
        for i in range(6):  # to a fixpoint: call sites and self.x types feed the next pass
            before = (dict(self.param_types), dict(self.self_attrs), set(self.assigned))
            self.uses = []
            self.body(self.tree.body, {}, Ctx())
            if i > 0 and before == (dict(self.param_types), dict(self.self_attrs), set(self.assigned)):
                break
        return self.uses

    # ---- records ---------------------------------------------------------------------------------
    def use(self, node: ast.AST, owner: str, name: str, what: str, ctx: Ctx, *, optional: bool = False,
            problem: str | None = None) -> None:
        self.uses.append(Use(f"{self.file}:{getattr(node, 'lineno', 0)}", owner, name, what, ctx.weak,
                             optional or (owner, name) in ctx.guarded, problem))

    def lookup(self, base: T | None, name: str, node: ast.AST, ctx: Ctx, what: str, *,
               optional: bool = False) -> tuple[T | None, dict | None]:
        """A member of a TensorRT module/class/instance: records the Use, returns (its type, its entry)."""
        if base is None or base.kind not in ("module", "class", "instance", "local_instance"):
            return None, None
        if base.kind == "local_instance":
            owners = self.local_bases.get(base.name, [])
            if not owners or (base.name, name) in self.assigned or self.defines(base, name):
                return self.self_attrs.get((base.name, name)), None
            owner = owners[0]
        else:
            owner = "" if base.kind == "module" else base.name
        m = self.s.member(owner, name)
        label = f"trt.{owner}" if owner else "the tensorrt module"
        problem = None if m else f"{label} has no '{name}' in TensorRT {self.s.version}"
        if m and what == "set" and not (m["kind"] == "property" and m["writable"]):
            problem = f"{label}.{name} is not a writable property in TensorRT {self.s.version}"
        self.use(node, owner, name, what, ctx, optional=optional, problem=problem)
        self.uses[-1].deprecated = bool(m and m.get("deprecated"))
        if m is None:
            return None, None
        if m["kind"] == "class":
            return T("class", m["type"] or f"{owner}.{name}".lstrip(".")), m
        if m["kind"] in ("value", "property"):
            q = self.s.known_class(m["type"])
            return (T("instance", q) if q else None), m
        return T("method", owner, name, bound=base.kind != "class" or m.get("static", False)), m

    def defines(self, base: T, name: str) -> bool:
        return any(isinstance(n, ast.FunctionDef) and n.name == name for n in base.node.body) if base.node else False

    # ---- statements --------------------------------------------------------------------------------
    def body(self, stmts: list[ast.stmt], scope: dict, ctx: Ctx) -> None:
        for st in stmts:  # defs are visible before their line (called from code above them)
            if isinstance(st, ast.FunctionDef):
                scope.setdefault(st.name, T("local_fn", st.name, node=st))
            elif isinstance(st, ast.ClassDef):
                scope.setdefault(st.name, T("local_class", st.name, node=st))
        for st in stmts:
            self.stmt(st, scope, ctx)

    def stmt(self, st: ast.stmt, scope: dict, ctx: Ctx) -> None:
        if isinstance(st, ast.FunctionDef):
            self.function(st, scope, ctx, owner_class=None)
        elif isinstance(st, ast.ClassDef):
            self.klass(st, scope, ctx)
        elif isinstance(st, (ast.Assign, ast.AnnAssign)):
            value = self.ev(st.value, scope, ctx) if st.value is not None else None
            for target in (st.targets if isinstance(st, ast.Assign) else [st.target]):
                self.assign(target, st.value, value, scope, ctx)
        elif isinstance(st, ast.Import):
            for alias in st.names:
                if alias.name in ("tensorrt", "tensorrt_bindings"):
                    scope[alias.asname or alias.name] = T("module")
        elif isinstance(st, ast.If):
            self.ev(st.test, scope, ctx)
            guarded = ctx.guarded | self.hasattr_guards(st.test, scope)
            weak = ctx.weak or bool(WEAK_TEST.search(ast.unparse(st.test)))
            self.body(st.body, scope, replace(ctx, weak=weak, guarded=frozenset(guarded)))
            self.body(st.orelse, scope, ctx)
        else:
            for child in ast.iter_child_nodes(st):
                if isinstance(child, ast.expr):
                    self.ev(child, scope, ctx)
                elif isinstance(child, ast.stmt):
                    self.stmt(child, scope, ctx)
                else:
                    self.children(child, scope, ctx)

    def function(self, fn: ast.FunctionDef, scope: dict, ctx: Ctx, owner_class: str | None) -> None:
        inner = dict(scope)
        args = fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs
        for i, a in enumerate(args):
            if a.arg == "trt":
                inner[a.arg] = T("module")
            elif i == 0 and owner_class is not None:
                inner[a.arg] = T("local_instance", owner_class, node=scope[owner_class].node)
            elif (id(fn), a.arg) in self.param_types:
                inner[a.arg] = self.param_types[(id(fn), a.arg)]
            else:
                inner.pop(a.arg, None)
        self.body(fn.body, inner, replace(ctx, weak=ctx.weak or fn.name in WEAK_FUNCTIONS))

    def klass(self, cls: ast.ClassDef, scope: dict, ctx: Ctx) -> None:
        bases = [self.ev(b, scope, ctx) for b in cls.bases]
        self.local_bases[cls.name] = [b.name for b in bases if b is not None and b.kind == "class"]
        scope[cls.name] = T("local_class", cls.name, node=cls)
        for st in cls.body:
            if isinstance(st, ast.FunctionDef):
                self.override(cls, st, ctx)
                self.function(st, scope, ctx, owner_class=cls.name)
            else:
                self.stmt(st, scope, ctx)

    def override(self, cls: ast.ClassDef, fn: ast.FunctionDef, ctx: Ctx) -> None:
        """A method of a TensorRT subclass that TensorRT calls back must take what TensorRT passes."""
        for owner in self.local_bases.get(cls.name, []):
            m = self.s.member(owner, fn.name)
            if fn.name == "__init__" or m is None or m["kind"] != "method":
                continue
            npos = len(fn.args.posonlyargs + fn.args.args)
            required = npos - len(fn.args.defaults)
            ok = any(required <= len(s["params"]) and (len(s["params"]) <= npos or fn.args.vararg)
                     for s in m["sigs"])
            self.use(fn, owner, fn.name, "override", ctx, problem=None if ok else (
                f"{fn.name}() takes {npos} argument(s) with self; TensorRT {self.s.version} calls "
                f"trt.{owner}.{fn.name}{fmt_sigs(m['sigs'])}"))

    def assign(self, target: ast.expr, value_node: ast.expr | None, value: T | None, scope: dict, ctx: Ctx) -> None:
        if isinstance(target, ast.Name):
            if value is not None:
                scope[target.id] = value
            else:
                scope.pop(target.id, None)
        elif isinstance(target, ast.Attribute):
            base = self.ev(target.value, scope, ctx)
            if base is not None and base.kind == "local_instance":  # edgekit's own attribute (self.x = ...)
                self.assigned.add((base.name, target.attr))
                if value is not None:
                    self.self_attrs[(base.name, target.attr)] = value
            else:
                self.lookup(base, target.attr, target, ctx, "set")
        elif isinstance(target, ast.Tuple):
            values = value_node.elts if isinstance(value_node, ast.Tuple) else [None] * len(target.elts)
            for t, v in zip(target.elts, values):
                self.assign(t, v, self.ev(v, scope, ctx) if v is not None else None, scope, ctx)
        else:
            self.ev(target, scope, ctx)

    def hasattr_guards(self, test: ast.expr, scope: dict) -> set:
        out = set()
        for n in ast.walk(test):
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "hasattr" \
                    and len(n.args) == 2 and isinstance(n.args[1], ast.Constant):
                base = self.ev(n.args[0], scope, Ctx(), record=False)
                if base is not None and base.kind in ("module", "class", "instance"):
                    out.add(("" if base.kind == "module" else base.name, n.args[1].value))
        return out

    # ---- expressions ---------------------------------------------------------------------------------
    def children(self, node: ast.AST, scope: dict, ctx: Ctx) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                self.ev(child, scope, ctx)
            elif not isinstance(child, ast.stmt):
                self.children(child, scope, ctx)

    def ev(self, node: ast.expr | None, scope: dict, ctx: Ctx, record: bool = True) -> T | None:
        if node is None:
            return None
        if not record:  # typing only (a hasattr guard's subject): evaluate on a throwaway list
            saved, self.uses = self.uses, []
            try:
                return self.ev(node, scope, ctx)
            finally:
                self.uses = saved
        if isinstance(node, ast.Name):
            return scope.get(node.id)
        if isinstance(node, ast.Attribute):
            return self.lookup(self.ev(node.value, scope, ctx), node.attr, node, ctx, "get")[0]
        if isinstance(node, ast.Call):
            return self.call(node, scope, ctx)
        if isinstance(node, ast.Lambda):
            inner = {k: v for k, v in scope.items() if k not in {a.arg for a in node.args.args}}
            self.ev(node.body, inner, ctx)
            return None
        self.children(node, scope, ctx)
        return None

    def call(self, node: ast.Call, scope: dict, ctx: Ctx) -> T | None:
        f, args = node.func, node.args
        if isinstance(f, ast.Name) and f.id in ("getattr", "hasattr") and len(args) >= 2:
            return self.getattr_call(node, scope, ctx)
        if isinstance(f, ast.Name) and f.id == "import_tensorrt":
            return T("module")
        start = len(self.uses)
        if isinstance(f, ast.Attribute):
            ft, entry = self.lookup(self.ev(f.value, scope, ctx), f.attr, f, ctx, "call")
        else:
            ft, entry = self.ev(f, scope, ctx), None
        head = self.uses[-1] if len(self.uses) > start else None  # the callee's own Use (looked up last)
        arg_types = [self.ev(a.value if isinstance(a, ast.Starred) else a, scope, ctx) for a in args]
        for k in node.keywords:
            self.ev(k.value, scope, ctx)
        nargs = None if any(isinstance(a, ast.Starred) for a in args) else len(args)
        kwnames = tuple(k.arg for k in node.keywords if k.arg is not None)
        if ft is None:
            return None
        if ft.kind in ("class", "method"):
            if head is None:
                self.use(node, ft.name, ft.attr or "__init__", "call", ctx)
                head = self.uses[-1]
            return self.check_call(head, ft, entry, nargs, kwnames)
        if ft.kind == "local_fn" and ft.node is not None:
            self.bind(ft.node, arg_types, node.keywords, scope, skip=0)
        elif ft.kind == "local_class" and ft.node is not None:
            init = next((n for n in ft.node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
            if init is not None:
                self.bind(init, arg_types, node.keywords, scope, skip=1)
            return T("local_instance", ft.name, node=ft.node)
        return None

    def getattr_call(self, node: ast.Call, scope: dict, ctx: Ctx) -> T | None:
        """getattr(x, "name"[, default]) reads a member (optional with a default); hasattr() probes one;
        a computed name is a dynamic use, which the tests must cover some other way."""
        f, args = node.func, node.args
        base = self.ev(args[0], scope, ctx)
        for a in args[2:]:
            self.ev(a, scope, ctx)
        if not (isinstance(args[1], ast.Constant) and isinstance(args[1].value, str)):
            self.ev(args[1], scope, ctx)
            if base is not None and base.kind in ("module", "class", "instance"):
                self.use(node, "" if base.kind == "module" else base.name, "?", "dynamic", ctx)
            return None
        if f.id == "hasattr":
            self.lookup(base, args[1].value, node, ctx, "probe", optional=True)
            return None
        return self.lookup(base, args[1].value, node, ctx, "get", optional=len(args) > 2)[0]

    def check_call(self, use: Use, ft: T, entry: dict | None, nargs: int | None, kwnames: tuple) -> T | None:
        """Argument count and keyword names against every overload; the result typed by the first's return."""
        if ft.kind == "class":
            q, entry = ft.name, self.s.member(ft.name, "__init__")
            if entry is None:
                if not self.s.enum(q) and use.problem is None:
                    use.problem = f"trt.{q} cannot be constructed in TensorRT {self.s.version} (no __init__)"
                return T("instance", q)
            drop, result = 1, T("instance", q)
        else:
            entry = entry or self.s.member(ft.name, ft.attr)
            if entry is None or entry["kind"] != "method":
                return None
            drop, result = (1 if ft.bound and not entry.get("static") else 0), None
            ret = self.s.known_class(entry["sigs"][0]["returns"]) if entry["sigs"] else None
            result = T("instance", ret) if ret else None
        sigs = entry["sigs"]
        n = None if nargs is None else nargs + drop
        if sigs and not any(accepts(s["params"], n, kwnames) for s in sigs) and use.problem is None:
            use.problem = (f"called with {nargs} positional argument(s)"
                           + (f" and {', '.join(k + '=' for k in kwnames)}" if kwnames else "")
                           + f"; TensorRT {self.s.version} has {fmt_sigs(sigs)}" + (" (self included)" if drop else ""))
        return result

    def bind(self, fn: ast.FunctionDef, arg_types: list, keywords: list, scope: dict, skip: int) -> None:
        params = [a.arg for a in fn.args.posonlyargs + fn.args.args][skip:]
        for name, t in zip(params, arg_types):
            if t is not None and t.kind in ("module", "instance"):
                self.param_types[(id(fn), name)] = t
        for k in keywords:
            t = scope.get(k.value.id) if isinstance(k.value, ast.Name) else None
            if k.arg and t is not None and t.kind in ("module", "instance"):
                self.param_types[(id(fn), k.arg)] = t


def trt_uses(source: str, filename: str, surface: Surface) -> list[Use]:
    return Walker(source, filename, surface).run()


def file_uses(path: Path, root: Path, surface: Surface) -> list[Use]:
    return trt_uses(path.read_text(), str(path.relative_to(root)), surface)
