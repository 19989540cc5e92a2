"""Template rendering in a Jinja2 sandbox, with strict undefined variables.

A missing variable is an error naming it, never an empty string. Only `html_body` is
autoescaped: text bodies, subjects and push texts are not HTML. Compiled templates are kept per
(key, language, version, field): versions are immutable, so a compiled one never goes stale.

Templates are hostile input: the sandbox bounds what they can allocate (actors/
template_limits.py), SIGALRM bounds each item's time, and a `RenderBudget` each batch's.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateError, UndefinedError
from jinja2 import Template as JinjaTemplate
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from clarion.actors.messages import RenderItem, Rendering
from clarion.actors.template_limits import MAX_OUTPUT_CHARS, BoundedSandbox, TooLarge
from clarion.persistence.records import Template

# Per item: a template may spend at most this long (loops in the sandbox are bounded, but nested
# ones multiply). Per batch: once the batch has spent its budget, the items left are refused
# without rendering, so one hostile batch holds the Templates actor for a few seconds, not for
# a second per item (a batch of 1,000 such items once meant 17 minutes).
MAX_RENDER_SECONDS = 1.0
BATCH_RENDER_SECONDS = 3.0


class _OutOfTime(BaseException):
    """SIGALRM fired. A BaseException, so no `except Exception` on the way swallows it."""


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


class RenderBudget:
    """The render time left to one batch (`BATCH_RENDER_SECONDS` from its creation)."""

    def __init__(self, seconds: float = BATCH_RENDER_SECONDS,
                 clock: Callable[[], float] = time.monotonic,
                 per_item: float = MAX_RENDER_SECONDS) -> None:
        self._clock = clock
        self._seconds = seconds
        self._per_item = per_item
        self._ends = clock() + seconds

    def for_item(self) -> float:
        """The time limit of the next item; RenderError once the budget is spent."""
        left = self._ends - self._clock()
        if left <= 0:
            raise RenderError("template_render_timeout",
                              f"the batch spent its render time ({self._seconds:g} s) before"
                              " this item; send it again, or in a smaller batch")
        return min(self._per_item, left)


_CACHE_SIZE = 2048


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
    sms_body: str


class Renderer:
    def __init__(self) -> None:
        self._text = BoundedSandbox(undefined=StrictUndefined, autoescape=False)
        self._html = BoundedSandbox(undefined=StrictUndefined, autoescape=True)
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
            out = self._generate(self._compile(template, field, source, html), variables)
        except _OutOfTime:
            raise RenderError("template_render_timeout",
                              f"{field}: rendering took longer than its time limit"
                              f" ({MAX_RENDER_SECONDS:g} s, or what was left of its batch's"
                              f" {BATCH_RENDER_SECONDS:g} s)") from None
        except UndefinedError as exc:
            raise RenderError("template_variable_missing",
                              f"{field}: {exc.message}") from None
        except TooLarge as exc:
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
        return out

    @staticmethod
    def _generate(compiled: JinjaTemplate, variables: dict[str, Any]) -> str:
        """Render, counting the output as it comes: past the limit it stops, instead of
        building the whole text first and measuring it after."""
        pieces: list[str] = []
        size = 0
        for piece in compiled.generate(variables):
            size += len(piece)
            if size > MAX_OUTPUT_CHARS:
                raise TooLarge(f"rendered output exceeds {MAX_OUTPUT_CHARS} characters")
            pieces.append(piece)
        return "".join(pieces)

    def render(self, template: Template, variables: dict[str, Any],
               budget: RenderBudget | None = None) -> RenderedContent:
        """Render every field within the item's time limit (shortened to what is left of the
        batch's `budget`); RenderError says what went wrong."""
        seconds = budget.for_item() if budget is not None else MAX_RENDER_SECONDS
        try:
            with time_limit(seconds):
                return self._render_all(template, variables)
        except _OutOfTime:
            # The alarm rang between two fields (inside one, `_render` names the field).
            raise RenderError("template_render_timeout",
                              f"rendering took longer than its time limit ({seconds:.2g} s)"
                              ) from None

    def _render_all(self, template: Template, variables: dict[str, Any]) -> RenderedContent:
        subject = self._render(template, "subject", template.subject, variables) or ""
        body = self._render(template, "body", template.body, variables) or ""
        html = self._render(template, "html_body", template.html_body, variables, html=True)
        # Push texts default to the email's subject and text body when a template has none.
        title = self._render(template, "push_title", template.push_title, variables)
        push_body = self._render(template, "push_body", template.push_body, variables)
        # An SMS is the shortest text the template has: its own, else the push's, else the body.
        sms_body = self._render(template, "sms_body", template.sms_body, variables)
        return RenderedContent(subject, body, html, title or subject, push_body or body,
                               sms_body or push_body or body)


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


def render_item(renderer: Renderer, item: RenderItem, languages: dict[str, Template],
                budget: RenderBudget | None = None) -> Rendering:
    """Render one request in the first of its languages the template has (`languages`: the
    template's versions by language), or say why not: the one rule, for the Templates actor
    and for the Gateway's own renders."""
    if not languages:
        what = f"version {item.version} of " if item.version else ""
        return Rendering(item.correlation_id, False, error_code="template_not_found",
                         error=f"no {what}template '{item.template_key}'")
    language = next((lang for lang in item.languages if lang in languages), None)
    if language is None:
        return Rendering(
            item.correlation_id, False, error_code="template_language_unavailable",
            error=f"template '{item.template_key}' exists in {sorted(languages)},"
            f" not in {list(item.languages)}",
        )
    template = languages[language]
    try:
        content = renderer.render(template, item.variables, budget)
    except RenderError as exc:
        return Rendering(item.correlation_id, False, error_code=exc.code, error=exc.message)
    return Rendering(
        item.correlation_id, True, template.version, language, content.subject,
        content.body, content.html_body, content.push_title, content.push_body,
        content.sms_body, fallback_channels=tuple(template.fallback_channels or ()),
    )
