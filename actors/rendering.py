"""Template rendering in a Jinja2 sandbox, with strict undefined variables.

A missing variable is an error naming it, never an empty string. Only `html_body` is
autoescaped: text bodies, subjects and push texts are not HTML. Compiled templates are kept per
(key, language, version, field): versions are immutable, so a compiled one never goes stale.
"""

from __future__ import annotations

import signal
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateError, UndefinedError
from jinja2 import Template as JinjaTemplate
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from clarion.persistence.records import Template

MAX_OUTPUT_CHARS = 256 * 1024
# Loops in the sandbox are bounded (range() stops at 100,000), but nested ones multiply: a
# template may spend at most this long, so a hostile one cannot hold the Templates actor.
MAX_RENDER_SECONDS = 1.0


class _OutOfTime(Exception):
    pass


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Interrupt the block after `seconds` of wall time (SIGALRM; main thread only, which is
    where an actor handles its messages). Elsewhere the block simply runs unbounded."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(_signum: int, _frame: Any) -> None:
        raise _OutOfTime()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
_CACHE_SIZE = 2048


class _TooLarge(SecurityError):
    """The template asked to build something larger than the output limit."""


class _BoundedSandbox(SandboxedEnvironment):
    """The Jinja2 sandbox, plus limits on what a hostile template can make it allocate.

    The sandbox stops attribute tricks but not `{{ 'x' * 10**9 }}`, which would build a 1 GB
    string before any output check ran and take the Templates actor down with it.
    """

    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if (isinstance(seq, (str, list, tuple)) and isinstance(times, int)
                        and len(seq) * times > MAX_OUTPUT_CHARS):
                    raise _TooLarge("a repetition larger than the output limit")
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > 128:
            raise SecurityError("an exponent larger than 128")
        return super().call_binop(context, operator, left, right)


class RenderError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class RenderedContent:
    subject: str
    body: str
    html_body: str | None
    push_title: str
    push_body: str


class Renderer:
    def __init__(self) -> None:
        self._text = _BoundedSandbox(undefined=StrictUndefined, autoescape=False)
        self._html = _BoundedSandbox(undefined=StrictUndefined, autoescape=True)
        self._compiled: OrderedDict[tuple[str, str, int, str], JinjaTemplate] = OrderedDict()

    def _compile(self, template: Template, field: str, source: str, html: bool) -> JinjaTemplate:
        key = (template.template_key, template.language, template.version, field)
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = (self._html if html else self._text).from_string(source)
            self._compiled[key] = compiled
            if len(self._compiled) > _CACHE_SIZE:
                self._compiled.popitem(last=False)
        else:
            self._compiled.move_to_end(key)
        return compiled

    def _render(self, template: Template, field: str, source: str | None,
                variables: dict[str, Any], html: bool = False) -> str | None:
        if source is None:
            return None
        try:
            out = self._compile(template, field, source, html).render(variables)
        except _OutOfTime:
            raise RenderError("template_render_timeout",
                              f"{field}: rendering took longer than {MAX_RENDER_SECONDS} s"
                              ) from None
        except UndefinedError as exc:
            raise RenderError("template_variable_missing",
                              f"{field}: {exc.message}") from None
        except _TooLarge as exc:
            raise RenderError("template_output_too_large", f"{field}: {exc}") from None
        except SecurityError as exc:
            raise RenderError("template_unsafe", f"{field}: {exc}") from None
        except TemplateError as exc:
            raise RenderError("template_render_error", f"{field}: {exc}") from None
        except MemoryError:
            raise RenderError("template_output_too_large",
                              f"{field}: the template asked for more memory than allowed") from None
        except RecursionError:
            raise RenderError("template_render_error", f"{field}: recursion too deep") from None
        except Exception as exc:  # noqa: BLE001 - whatever a template does wrong is its error,
            # never the actor's: one bad template must not fail the rest of the batch.
            raise RenderError("template_render_error",
                              f"{field}: {type(exc).__name__}: {exc}") from None
        if len(out) > MAX_OUTPUT_CHARS:
            raise RenderError("template_output_too_large",
                              f"{field}: rendered output exceeds {MAX_OUTPUT_CHARS} characters")
        return out

    def render(self, template: Template, variables: dict[str, Any]) -> RenderedContent:
        with time_limit(MAX_RENDER_SECONDS):
            return self._render_all(template, variables)

    def _render_all(self, template: Template, variables: dict[str, Any]) -> RenderedContent:
        subject = self._render(template, "subject", template.subject, variables) or ""
        body = self._render(template, "body", template.body, variables) or ""
        html = self._render(template, "html_body", template.html_body, variables, html=True)
        # Push texts default to the email's subject and text body when a template has none.
        title = self._render(template, "push_title", template.push_title, variables)
        push_body = self._render(template, "push_body", template.push_body, variables)
        return RenderedContent(subject, body, html, title or subject, push_body or body)


def language_fallbacks(*tags: str | None) -> tuple[str, ...]:
    """The languages to look a template up in, in order: each tag then its base (pt-BR → pt),
    without repeats; None and empty tags are skipped."""
    ordered: list[str] = []
    for tag in tags:
        if tag:
            ordered += [tag, tag.split("-")[0]]
    return tuple(dict.fromkeys(ordered))


def check_syntax(source: str | None, html: bool = False) -> str | None:
    """None if `source` compiles; otherwise the error with its line."""
    if source is None:
        return None
    env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=html)
    try:
        env.parse(source)
    except TemplateError as exc:
        line = getattr(exc, "lineno", None)
        return f"line {line}: {exc}" if line else str(exc)
    return None
