"""A Sphinx directive that writes the table of named model sizes from the code itself.

``.. gitstorm-sizes::`` renders every field of :class:`sb3_gitstorm.config.ModelConfig` with its value in each
named size of :data:`sb3_gitstorm.config.SIZES` (built with ``ModelConfig.from_size``), so the table cannot drift
from the sizes the library builds. The meaning of each field is the ModelConfig docstring, documented beside it.
"""

from __future__ import annotations

import dataclasses

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

from sb3_gitstorm.config import SIZES, ModelConfig


def _literal(value: object) -> nodes.literal:
    """A field value as inline code: tuples as ``a, b``, strings quoted."""
    text = ", ".join(map(str, value)) if isinstance(value, tuple) else repr(value) if isinstance(value, str) else str(value)
    return nodes.literal(text=text)


def _row(cells: list[nodes.Node]) -> nodes.row:
    row = nodes.row()
    for cell in cells:
        row += nodes.entry("", nodes.paragraph("", "", cell))
    return row


class SizesTable(SphinxDirective):
    """``gitstorm-sizes``: one row per ModelConfig field, one column per named size."""

    def run(self) -> list[nodes.Node]:
        sizes = {name: ModelConfig.from_size(name) for name in SIZES}
        group = nodes.tgroup(cols=1 + len(sizes))
        group += [nodes.colspec(colwidth=1) for _ in range(1 + len(sizes))]
        group += nodes.thead("", _row([nodes.Text("field"), *(_literal(name) for name in sizes)]))
        body = nodes.tbody()
        for field in dataclasses.fields(ModelConfig):
            body += _row([nodes.literal(text=field.name), *(_literal(getattr(config, field.name)) for config in sizes.values())])
        group += body
        return [nodes.table("", group, classes=["gitstorm-sizes"])]


def setup(app: Sphinx) -> dict[str, object]:
    app.add_directive("gitstorm-sizes", SizesTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
