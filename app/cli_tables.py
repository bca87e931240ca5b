"""Tables of the `lehnz` command that never cut what must be copied.

An identifier column (slug, org id, key id, job id, file name) is always shown whole, on one
line. When the terminal is too narrow for everything, the other columns wrap, then the least
important ones are dropped (a note on stderr says which; `--json` has them all) unless every
column matters; when the table still does not fit, each row is printed as `name: value` lines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Table


@dataclass(frozen=True)
class Column:
    header: str
    identifier: bool = False  # never cut, never dropped
    justify: str = "left"


def _overhead(columns: int) -> int:
    return 3 * columns + 1  # rich's default box: one space of padding each side, one border each


def _longest_word(text: str) -> int:
    return max((cell_len(word) for word in text.split()), default=0)


def _fits(columns: Sequence[Column], rows: Sequence[Sequence[str]], keep: list[int], width: int) -> bool:
    need = _overhead(len(keep))
    for index in keep:
        cells = [row[index] for row in rows]
        if columns[index].identifier:
            need += max([cell_len(columns[index].header), *(cell_len(c) for c in cells)])
        else:  # a wrapping column needs at least its longest word
            need += max([_longest_word(columns[index].header), *(_longest_word(c) for c in cells)])
    return need <= width


def print_table(
    out: Console, columns: Sequence[Column], rows: Sequence[Sequence[str]], *,
    title: str | None = None, note: Console | None = None, drop: bool = True,
) -> None:
    """Print `rows` under `columns`. When they do not fit, the non-identifier columns are dropped
    from the right-most on (`drop`), else (or when even the identifiers do not fit) each row is
    printed as `name: value` lines."""
    width = out.width
    keep = list(range(len(columns)))
    optional = [i for i, column in enumerate(columns) if not column.identifier] if drop else []
    dropped: list[str] = []
    while not _fits(columns, rows, keep, width) and optional:
        index = optional.pop()
        keep.remove(index)
        dropped.append(columns[index].header)
    if not _fits(columns, rows, keep, width):
        print_records(out, columns, rows, title=title)
        return
    table = Table(title=title)
    for index in keep:
        column = columns[index]
        if column.identifier:
            table.add_column(column.header, no_wrap=True, justify=column.justify)  # type: ignore[arg-type]
        else:
            table.add_column(column.header, overflow="fold", justify=column.justify)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*(escape(row[index]) for index in keep))
    out.print(table)
    if dropped and note is not None:
        note.print(f"(not shown at this width: {', '.join(reversed(dropped))}; --json shows everything)",
                   style="dim", soft_wrap=True, highlight=False)


def print_records(
    out: Console, columns: Sequence[Column], rows: Sequence[Sequence[str]], *, title: str | None = None
) -> None:
    """Each row as `header: value` lines, rows separated by a blank line; nothing is cut."""
    if title:
        out.print(escape(title), style="italic", soft_wrap=True, highlight=False)
    label = max((cell_len(c.header) for c in columns), default=0)
    for number, row in enumerate(rows):
        if number:
            out.print()
        for column, value in zip(columns, row, strict=True):
            name = escape(column.header).ljust(label)
            out.print(f"{name}  {escape(value)}", soft_wrap=True, highlight=False)
