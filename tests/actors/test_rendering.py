"""Template rendering: strict variables, a sandbox, escaping only for HTML, bounded output."""

from __future__ import annotations

import time
from typing import Any

import pytest

from clarion.actors.rendering import (
    MAX_OUTPUT_CHARS,
    RenderBudget,
    RenderedContent,
    Renderer,
    RenderError,
    check_syntax,
)
from clarion.persistence.records import Template


def template(*, subject: str = "Hello {{ name }}", body: str = "Dear {{ name }}, welcome.",
             html_body: str | None = None, push_title: str | None = None,
             push_body: str | None = None, key: str = "welcome", language: str = "en",
             version: int = 1) -> Template:
    return Template(key, language, version, subject, body, html_body=html_body,
                    push_title=push_title, push_body=push_body)


@pytest.fixture
def renderer() -> Renderer:
    return Renderer()


def test_variables_are_filled_in_every_field(renderer: Renderer) -> None:
    t = template(subject="Hi {{ name }}", body="Your code is {{ code }}.",
                 html_body="<p>Code {{ code }}</p>", push_title="{{ name }}, your code",
                 push_body="{{ code }}")

    out = renderer.render(t, {"name": "Ada", "code": 1234})

    assert out.subject == "Hi Ada"
    assert out.body == "Your code is 1234."
    assert out.html_body == "<p>Code 1234</p>"
    assert out.push_title == "Ada, your code"
    assert out.push_body == "1234"


def test_a_missing_variable_is_an_error_naming_it(renderer: Renderer) -> None:
    t = template(subject="Hi", body="Your code is {{ verification_code }}.")

    with pytest.raises(RenderError) as raised:
        renderer.render(t, {"name": "Ada"})

    assert raised.value.code == "template_variable_missing"
    assert "verification_code" in raised.value.message
    assert "body" in raised.value.message  # and the field it is missing from


def test_a_missing_variable_is_never_rendered_as_an_empty_string(renderer: Renderer) -> None:
    t = template(subject="Hi", body="x", html_body="<p>{{ missing }}</p>")

    with pytest.raises(RenderError) as raised:
        renderer.render(t, {})

    assert raised.value.code == "template_variable_missing"
    assert "missing" in raised.value.message


def test_html_body_is_autoescaped_but_subject_body_and_push_texts_are_not(
        renderer: Renderer) -> None:
    value = "<b>Ada & \"Bob\"</b>"
    t = template(subject="{{ v }}", body="{{ v }}", html_body="<p>{{ v }}</p>",
                 push_title="{{ v }}", push_body="{{ v }}")

    out = renderer.render(t, {"v": value})

    assert out.html_body == "<p>&lt;b&gt;Ada &amp; &#34;Bob&#34;&lt;/b&gt;</p>"
    assert out.subject == value
    assert out.body == value
    assert out.push_title == value
    assert out.push_body == value


def test_a_template_without_html_body_renders_none_for_it(renderer: Renderer) -> None:
    assert renderer.render(template(), {"name": "Ada"}).html_body is None


# Classic Jinja sandbox escapes. Each one must be refused outright by the sandbox.
ESCAPES = [
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__.mro() }}",
    "{{ ().__class__.__bases__[0].__subclasses__() }}",
    "{{ ''|attr('__class__') }}",
    "{{ '{0.__class__}'.format(name) }}",
    "{{ joiner.__init__.__globals__ }}",  # (lipsum is gone: tests/security)
    "{{ cycler.__init__.__globals__ }}",
    "{{ namespace.__init__.__globals__['os'] }}",
    "{{ self.__init__.__globals__ }}",
    "{{ range.__globals__ }}",
]


@pytest.mark.parametrize("source", ESCAPES)
@pytest.mark.parametrize("field", ["subject", "body", "html_body", "push_title"])
def test_the_sandbox_refuses_attribute_escapes_and_leaks_nothing(
        renderer: Renderer, source: str, field: str) -> None:
    fields: dict[str, Any] = {"subject": "s", "body": "b", "html_body": None, "push_title": None,
                              field: source}
    t = template(**fields)

    with pytest.raises(RenderError) as raised:
        renderer.render(t, {"name": "Ada"})

    assert raised.value.code == "template_unsafe"
    assert raised.value.message.startswith(f"{field}: ")
    for leak in ("<class", "<function", "<module", "object at 0x", "subclasses__() at"):
        assert leak not in raised.value.message


def test_the_sandbox_refuses_mro_and_subclasses_of_a_type_passed_as_a_variable(
        renderer: Renderer) -> None:
    for source in ("{{ v.mro() }}", "{{ v.__subclasses__() }}", "{{ v.__mro__ }}"):
        with pytest.raises(RenderError) as raised:
            renderer.render(template(body=source), {"name": "Ada", "v": str})
        assert raised.value.code == "template_unsafe", source


def test_output_over_the_limit_is_refused(renderer: Renderer) -> None:
    t = template(body="{{ blob }}")

    with pytest.raises(RenderError) as raised:
        renderer.render(t, {"name": "Ada", "blob": "x" * (MAX_OUTPUT_CHARS + 1)})

    assert raised.value.code == "template_output_too_large"
    assert raised.value.message.startswith("body: ")


def test_output_grown_by_the_template_itself_is_refused(renderer: Renderer) -> None:
    t = template(html_body="{{ 'ab' * size }}")

    with pytest.raises(RenderError) as raised:
        renderer.render(t, {"name": "Ada", "size": MAX_OUTPUT_CHARS})

    assert raised.value.code == "template_output_too_large"


def test_output_of_exactly_the_limit_is_accepted(renderer: Renderer) -> None:
    t = template(body="{{ blob }}")

    out = renderer.render(t, {"name": "Ada", "blob": "x" * MAX_OUTPUT_CHARS})

    assert len(out.body) == MAX_OUTPUT_CHARS


def test_push_title_and_body_default_to_subject_and_body(renderer: Renderer) -> None:
    t = template(subject="Hi {{ name }}", body="Welcome, {{ name }}")

    out = renderer.render(t, {"name": "Ada"})

    assert out.push_title == "Hi Ada"
    assert out.push_body == "Welcome, Ada"


def test_push_texts_of_their_own_are_used_when_the_template_has_them(
        renderer: Renderer) -> None:
    t = template(push_title="Ping", push_body="{{ name }} says hi")

    out = renderer.render(t, {"name": "Ada"})

    assert (out.push_title, out.push_body) == ("Ping", "Ada says hi")


def test_a_new_version_with_different_text_renders_the_new_text(renderer: Renderer) -> None:
    v1 = template(subject="Old {{ name }}", body="old body", version=1)
    v2 = template(subject="New {{ name }}", body="new body", version=2)

    assert renderer.render(v1, {"name": "Ada"}).subject == "Old Ada"
    assert renderer.render(v2, {"name": "Ada"}).subject == "New Ada"
    assert renderer.render(v2, {"name": "Ada"}).body == "new body"
    assert renderer.render(v1, {"name": "Bob"}).subject == "Old Bob"


def test_each_language_of_a_version_renders_its_own_text(renderer: Renderer) -> None:
    en = template(subject="Hello {{ name }}", language="en")
    pt = template(subject="Olá {{ name }}", language="pt-BR")

    assert renderer.render(en, {"name": "Ada"}).subject == "Hello Ada"
    assert renderer.render(pt, {"name": "Ada"}).subject == "Olá Ada"


def test_each_field_of_a_template_is_compiled_on_its_own(renderer: Renderer) -> None:
    t = template(subject="S {{ name }}", body="B {{ name }}", html_body="<i>H</i>",
                 push_title="PT", push_body="PB")

    first = renderer.render(t, {"name": "Ada"})
    again = renderer.render(t, {"name": "Bob"})

    assert first == RenderedContent("S Ada", "B Ada", "<i>H</i>", "PT", "PB", "PB")
    assert again == RenderedContent("S Bob", "B Bob", "<i>H</i>", "PT", "PB", "PB")


def test_an_sms_is_its_own_text_else_the_push_body_else_the_text_body(
        renderer: Renderer) -> None:
    own = template(body="B {{ name }}", push_body="P {{ name }}")
    own = Template(own.template_key, own.language, own.version, own.subject, own.body,
                   push_body=own.push_body, sms_body="SMS {{ name }}")
    assert renderer.render(own, {"name": "Ada"}).sms_body == "SMS Ada"
    assert renderer.render(template(body="B {{ name }}", push_body="P {{ name }}"),
                           {"name": "Ada"}).sms_body == "P Ada"
    assert renderer.render(template(body="B {{ name }}"), {"name": "Ada"}).sms_body == "B Ada"


def test_a_missing_variable_in_the_sms_names_the_field(renderer: Renderer) -> None:
    t = template(subject="S", body="B")
    t = Template(t.template_key, t.language, t.version, t.subject, t.body,
                 sms_body="{{ code }}")
    with pytest.raises(RenderError) as caught:
        renderer.render(t, {})
    assert caught.value.code == "template_variable_missing"
    assert "sms_body" in caught.value.message


def test_a_compiled_version_is_reused_because_versions_are_immutable(
        renderer: Renderer) -> None:
    # The cache key is (key, language, version, field): the same version is never compiled twice,
    # so a (forbidden) edit in place of a stored version would not be seen.
    renderer.render(template(subject="First {{ name }}", version=5), {"name": "Ada"})

    out = renderer.render(template(subject="Edited {{ name }}", version=5), {"name": "Ada"})

    assert out.subject == "First Ada"


def test_a_separate_renderer_has_its_own_cache() -> None:
    Renderer().render(template(subject="First", version=5), {"name": "Ada"})

    out = Renderer().render(template(subject="Second", version=5), {"name": "Ada"})

    assert out.subject == "Second"


def test_check_syntax_accepts_a_good_template_and_none() -> None:
    assert check_syntax("Hello {{ name }}{% if vip %}, dear guest{% endif %}") is None
    assert check_syntax("<p>{{ name }}</p>", html=True) is None
    assert check_syntax(None) is None


def test_check_syntax_reports_an_unclosed_if_with_its_line() -> None:
    source = "Hello {{ name }},\nthanks for joining.\n{% if vip %}You are a VIP."

    message = check_syntax(source)

    assert message is not None
    assert "line 3" in message
    assert "endif" in message


def test_check_syntax_reports_a_broken_expression_with_its_line() -> None:
    message = check_syntax("Hello,\n{{ name }\nbye", html=True)

    assert message is not None
    assert "line 2" in message


def test_check_syntax_does_not_render_so_an_undefined_variable_is_not_a_syntax_error() -> None:
    assert check_syntax("{{ never_defined.anywhere }}") is None


# A stored template can fail in ways Jinja does not wrap in a TemplateError. Each must still come
# back as a RenderError: anything else escapes the Templates actor's RenderBatch handler, Thespian
# returns the batch as a PoisonMessage and the Gateway fails *every* item of it with a 500.
UNWRAPPED_FAILURES = [
    pytest.param("{{ 'x' * 10**15 }}", id="MemoryError-from-repetition"),
    pytest.param("{{ name|center(10**15) }}", id="MemoryError-from-a-filter"),
    pytest.param("{{ '{:>999999999999999}'.format(name) }}", id="MemoryError-from-format"),
    pytest.param("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", id="RecursionError"),
    pytest.param("{{ name.encode('no-such-codec') }}", id="LookupError"),
    pytest.param("{{ name|truncate(-1) }}", id="AssertionError"),
]


@pytest.mark.parametrize("source", UNWRAPPED_FAILURES)
def test_any_failure_of_a_template_comes_back_as_a_render_error(
        renderer: Renderer, source: str) -> None:
    assert check_syntax(source) is None  # such a template is accepted when it is created

    with pytest.raises(RenderError) as raised:
        renderer.render(template(body=source), {"name": "Ada"})

    assert raised.value.code in {"template_render_error", "template_output_too_large",
                                 "template_unsafe"}
    assert raised.value.message.startswith("body: ")


def test_a_template_that_would_loop_for_ever_is_stopped_with_a_clear_error(
        renderer: Renderer) -> None:
    import time

    hostile = ("{% for i in range(100000) %}{% for j in range(100000) %}"
               "{% endfor %}{% endfor %}done")
    started = time.monotonic()
    with pytest.raises(RenderError) as raised:
        renderer.render(template(body=hostile), {"name": "Ada"})
    assert raised.value.code == "template_render_timeout"
    assert time.monotonic() - started < 5
    # The renderer is fine afterwards.
    assert renderer.render(template(body="Hi {{ name }}", version=2),
                           {"name": "Ada"}).body == "Hi Ada"


def test_a_batch_budget_shortens_an_items_time_limit_and_then_refuses_the_rest() -> None:
    now = [0.0]
    budget = RenderBudget(3.0, clock=lambda: now[0])

    assert budget.for_item() == 1.0
    now[0] = 2.5
    assert budget.for_item() == 0.5
    now[0] = 3.0
    with pytest.raises(RenderError) as raised:
        budget.for_item()
    assert raised.value.code == "template_render_timeout"


def test_a_render_stops_at_its_batchs_budget_not_at_a_full_second(renderer: Renderer) -> None:
    slow = template(body="{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
                         "{% endfor %}")
    budget = RenderBudget(0.3)

    started = time.monotonic()
    with pytest.raises(RenderError) as raised:
        renderer.render(slow, {"name": "Ada"}, budget)
    assert raised.value.code == "template_render_timeout"
    assert time.monotonic() - started < 0.6
