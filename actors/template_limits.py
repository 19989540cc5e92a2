"""The Jinja2 sandbox templates render in, bounded in memory as well as in time.

Template text comes from API callers, so it is hostile input. Jinja's sandbox stops attribute
tricks, not allocations: `'x'.ljust(10**7)`, `''|center(10**7)` and `'%010000000d' % 1` each
build 10 MB before any output check could run, and `'x'.ljust(4*10**10)` asks for 40 GB in one C
call that no signal interrupts. So every operation that sizes its result from an argument is
checked *before* it runs, against `MAX_OUTPUT_CHARS` (characters, or items for a list):

* operators: `*` (repetition), `+`, `~` (concatenation), `%` (printf widths), `**` and `*` on
  integers (their size in bits);
* calls of built-in methods: any integer argument beyond the limit (`ljust`, `center`, `zfill`,
  `int.to_bytes`, ...), and the sizes `join`, `replace`, `expandtabs`, `translate` and
  `format`/`format_map` (widths in the spec) would produce;
* the filters that size their output from an argument: `center`, `indent`, `format`, `join`,
  `replace`, `batch`, `slice`, `wordwrap`, `urlize`;
* `range` (a range longer than the limit is refused), and no `lipsum`;
* output: the rendered text is counted as it is produced, and so is every buffer a template
  fills (macros, `{% set %}` and `{% call %}` blocks), so a loop cannot pile up memory for the
  whole time limit.

Lists and dicts are immutable here (`ImmutableSandboxedEnvironment`): `l.extend(l)` in a loop
doubled a list until memory ran out. Time is bounded elsewhere (actors/rendering.py): per item
by SIGALRM, per batch by a budget.
"""

from __future__ import annotations

import re
import string
import types
from collections.abc import Callable, Iterable
from typing import Any

from jinja2 import filters as jinja_filters
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.sandbox import MAX_RANGE, ImmutableSandboxedEnvironment, SecurityError

MAX_OUTPUT_CHARS = 256 * 1024
# An integer this many bits long (about 30,000 digits) is far beyond any amount a notification
# shows and still cheap to multiply; larger ones make `*` and `**` slow C calls.
MAX_INT_BITS = 100_000
MAX_EXPONENT = 128
# Text a filter inserts again and again (`wordwrap`'s wrapstring, `urlize`'s attributes).
_MAX_INSERT = 1024

_Sized = (str, bytes, bytearray, list, tuple)
# A printf conversion: %[(name)][flags][width][.precision][length]type
_PERCENT = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")
_DIGITS = re.compile(r"\d+")


class TooLarge(SecurityError):
    """The template asked to build something larger than the output limit."""


def _refuse(what: str, limit: str = f"the output limit ({MAX_OUTPUT_CHARS})") -> TooLarge:
    return TooLarge(f"{what} larger than {limit}")


def _size(value: Any) -> int:
    return len(value) if isinstance(value, _Sized) else 0


def _text_size(value: Any) -> int:
    """The length `value` has once written out (as `~` and `join` write it)."""
    return len(value) if isinstance(value, str) else len(str(value))


def check_percent(fmt: Any, values: Any) -> None:
    """`fmt % values` would pad a field wider than the limit."""
    if not isinstance(fmt, (str, bytes)):
        return
    text = fmt if isinstance(fmt, str) else fmt.decode("latin-1")
    starred = False
    for width, precision in _PERCENT.findall(text):
        for number in (width, precision):
            if number == "*":
                starred = True
            elif number and int(number) > MAX_OUTPUT_CHARS:
                raise _refuse("a %-format width")
    if starred:
        given = values if isinstance(values, tuple) else (values,)
        if any(isinstance(v, int) and abs(v) > MAX_OUTPUT_CHARS for v in given):
            raise _refuse("a %-format width")


def check_format_spec(fmt: str) -> None:
    """`fmt.format(...)` would pad a field wider than the limit (a width in a nested field,
    `{:{}}`, is refused: it could be anything)."""
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # str.format raises the same error itself
    for _, name, spec, _ in fields:
        if name is None or not spec:
            continue
        if "{" in spec:
            raise SecurityError("a nested format field ({:{}}) is not allowed")
        if any(int(n) > MAX_OUTPUT_CHARS for n in _DIGITS.findall(spec)):
            raise _refuse("a format width")


def check_join(separator: Any, items: list[Any]) -> None:
    total = _text_size(separator) * max(0, len(items) - 1)
    for item in items:
        total += _text_size(item)
        if total > MAX_OUTPUT_CHARS:
            raise _refuse("a join")
    if total > MAX_OUTPUT_CHARS:
        raise _refuse("a join")


def check_replace(text: Any, old: Any, new: Any, count: Any = -1) -> None:
    text, old, new = str(text), str(old), str(new)
    times = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        times = min(times, count)
    if len(text) + times * (len(new) - len(old)) > MAX_OUTPUT_CHARS:
        raise _refuse("a replace")


def _check_int_args(args: Iterable[Any]) -> None:
    for value in args:
        if isinstance(value, int) and not isinstance(value, bool) \
                and abs(value) > MAX_OUTPUT_CHARS:
            raise _refuse("an argument")


def check_builtin_call(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Refuse a call of a built-in method that would build too much; the arguments to call it
    with (a `join`'s iterable, read once to be measured, is handed over as a list)."""
    owner = getattr(func, "__self__", None)
    name = getattr(func, "__name__", "")
    if isinstance(owner, (str, bytes)):
        if name in ("format", "format_map") and isinstance(owner, str):
            check_format_spec(owner)
            return args
        if name == "join" and args:
            items = list(args[0])
            check_join(owner, items)
            return (items, *args[1:])
        if name == "replace" and len(args) >= 2:
            check_replace(owner, *args[:3])
        elif name == "expandtabs":
            tab = args[0] if args else kwargs.get("tabsize", 8)
            tabs = owner.count("\t") if isinstance(owner, str) else owner.count(b"\t")
            if isinstance(tab, int) and len(owner) + tabs * tab > MAX_OUTPUT_CHARS:
                raise _refuse("expandtabs")
        elif name == "translate" and args and isinstance(args[0], dict):
            longest = max((_size(v) for v in args[0].values()), default=1)
            if len(owner) * longest > MAX_OUTPUT_CHARS:
                raise _refuse("a translate")
    # Any built-in that takes a size (ljust, rjust, center, zfill, int.to_bytes, ...), and any
    # method of a string (Markup's wrap the built-in ones).
    if isinstance(func, types.BuiltinFunctionType) \
            or isinstance(owner, (str, bytes, bytearray, int, float)):
        _check_int_args((*args, *kwargs.values()))
    return args


def check_binop(operator: str, left: Any, right: Any) -> None:
    if operator == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, _Sized) and isinstance(times, int) \
                    and len(seq) * times > MAX_OUTPUT_CHARS:
                raise _refuse("a repetition")
        if isinstance(left, int) and isinstance(right, int) \
                and abs(left).bit_length() + abs(right).bit_length() > MAX_INT_BITS:
            raise _refuse("a product", f"{MAX_INT_BITS} bits")
    elif operator == "+":
        if isinstance(left, _Sized) and isinstance(right, _Sized) \
                and len(left) + len(right) > MAX_OUTPUT_CHARS:
            raise _refuse("a concatenation")
    elif operator == "%":
        check_percent(left, right)
    elif operator == "**" and isinstance(right, (int, float)):
        if abs(right) > MAX_EXPONENT:
            raise SecurityError(f"an exponent larger than {MAX_EXPONENT}")
        if isinstance(left, int) and abs(left).bit_length() * abs(right) > MAX_INT_BITS:
            raise _refuse("a power", f"{MAX_INT_BITS} bits")


def bounded_range(*args: int) -> range:
    """Jinja's sandboxed range: at most MAX_RANGE (100,000) numbers."""
    found = range(*args)
    if len(found) > MAX_RANGE:
        raise TooLarge(f"a range longer than {MAX_RANGE}")
    return found


class BoundedBuffer(list[Any]):
    """Where a macro, a `{% set %}` or a `{% call %}` block collects its output: refuses to
    hold more than the output limit, so a loop cannot fill memory until the time limit."""

    __slots__ = ("_chars",)

    def __init__(self) -> None:
        super().__init__()
        self._chars = 0

    def _grow(self, chars: int) -> None:
        self._chars += chars
        if self._chars > MAX_OUTPUT_CHARS:
            raise _refuse("a block's output")

    def append(self, item: Any) -> None:
        self._grow(_size(item))
        super().append(item)

    def extend(self, items: Iterable[Any]) -> None:
        items = tuple(items)
        self._grow(sum(_size(i) for i in items))
        super().extend(items)


class _BoundedCodeGenerator(CodeGenerator):
    """Jinja's code generator, but buffers are `BoundedBuffer`s and `~` is checked."""

    def buffer(self, frame: Frame) -> None:
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.bounded_buffer()")

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            join = "markup_join"
        else:
            join = "str_join"
        self.write(f"environment.checked_concat({join}, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


def _guard(original: Callable[..., Any], check: Callable[..., None],
           skip: int = 0) -> Callable[..., Any]:
    """`original` (a Jinja filter) with `check` run first on its arguments after the first
    `skip` (the eval context or environment Jinja passes some filters)."""

    def guarded(*args: Any, **kwargs: Any) -> Any:
        check(*args[skip:], **kwargs)
        return original(*args, **kwargs)

    if hasattr(original, "jinja_pass_arg"):
        guarded.jinja_pass_arg = original.jinja_pass_arg  # type: ignore[attr-defined]
    return guarded


def _center(value: Any, width: Any = 80) -> None:
    _check_int_args((width,))


def _indent(s: Any, width: Any = 4, first: bool = False, blank: bool = False) -> None:
    text = str(s)
    indent = len(width) if isinstance(width, str) else width
    if isinstance(indent, int) and len(text) + (text.count("\n") + 1) * indent > MAX_OUTPUT_CHARS:
        raise _refuse("an indent")


def _format(value: Any, *args: Any, **kwargs: Any) -> None:
    check_percent(value, args or kwargs)


def _items(value: Any, size: Any, fill_with: Any = None) -> None:
    _check_int_args((size,))


def _wordwrap(s: Any, width: Any = 79, break_long_words: bool = True,
              wrapstring: Any = None, break_on_hyphens: bool = True) -> None:
    if wrapstring is not None and len(str(wrapstring)) * (len(str(s)) + 1) > MAX_OUTPUT_CHARS:
        raise _refuse("a wordwrap")


def _urlize(value: Any, *args: Any, **kwargs: Any) -> None:
    if any(_text_size(v) > _MAX_INSERT for v in (*args, *kwargs.values()) if v is not None):
        raise _refuse("an urlize attribute")


def _join(eval_ctx: Any, value: Any, d: str = "", attribute: Any = None) -> str:
    items = list(value)
    if attribute is not None:
        items = list(map(jinja_filters.make_attrgetter(eval_ctx.environment, attribute),
                         items))
    check_join(d, items)
    return jinja_filters.sync_do_join(eval_ctx, items, d)


_join.jinja_pass_arg = jinja_filters.sync_do_join.jinja_pass_arg  # type: ignore[attr-defined]


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable Jinja2 sandbox with the checks of this module."""

    intercepted_binops = frozenset(["*", "**", "+", "%"])
    code_generator_class = _BoundedCodeGenerator

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals["range"] = bounded_range
        self.globals.pop("lipsum", None)  # lipsum(n) writes n paragraphs: nothing to send
        f = jinja_filters
        self.filters.update({
            "center": _guard(f.do_center, _center),
            "indent": _guard(f.do_indent, _indent),
            "format": _guard(f.do_format, _format),
            "join": _join,
            "replace": _guard(f.do_replace, check_replace, skip=1),
            "batch": _guard(f.do_batch, _items),
            "slice": _guard(f.sync_do_slice, _items),
            "wordwrap": _guard(f.do_wordwrap, _wordwrap, skip=1),
            "urlize": _guard(f.do_urlize, _urlize, skip=1),
        })

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        target = getattr(obj, "__wrapped__", obj)  # str.format comes wrapped by the sandbox
        checked = check_builtin_call(target, args, kwargs)
        return super().call(context, obj, *checked, **kwargs)

    def bounded_buffer(self) -> BoundedBuffer:
        return BoundedBuffer()

    def checked_concat(self, join: Callable[[Any], str], parts: tuple[Any, ...]) -> str:
        if sum(_text_size(p) for p in parts) > MAX_OUTPUT_CHARS:
            raise _refuse("a concatenation (~)")
        return join(parts)
