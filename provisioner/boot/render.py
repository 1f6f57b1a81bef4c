"""Jinja2 rendering (the only module importing jinja2): strict, loud templates.

Answer files (*.xml) are XML-autoescaped; boot configs (*.cfg, *.ipxe, *.j2) are not escaped, so their
callers must only pass values that were validated for that syntax (MACs, URLs, device paths).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import jinja2


class TemplateError(Exception):
    """A template is missing, malformed, or used an undefined value: nothing is rendered."""


_ENVS: dict[tuple[str, ...], jinja2.Environment] = {}


def environment(template_dirs: Sequence[str | Path]) -> jinja2.Environment:
    """A cached Environment over `template_dirs` (first directory wins: operator overrides go first)."""
    key = tuple(str(Path(d)) for d in template_dirs)
    env = _ENVS.get(key)
    if env is None:
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(list(key)),
            # select_autoescape matches on the final extension: name XML templates *.xml (not *.xml.j2).
            autoescape=jinja2.select_autoescape(enabled_extensions=("xml", "html"), default_for_string=True),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        _ENVS[key] = env
    return env


def render(template_dirs: Sequence[str | Path], name: str, context: Mapping[str, Any]) -> str:
    """Render template `name` with `context`; any Jinja problem becomes a TemplateError naming the template."""
    try:
        return environment(template_dirs).get_template(name).render(**context)
    except jinja2.TemplateNotFound:
        raise TemplateError(f"template {name!r} not found in {', '.join(map(str, template_dirs))}") from None
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"template {name!r}: {exc}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"template {name!r} line {exc.lineno}: {exc.message}") from None
