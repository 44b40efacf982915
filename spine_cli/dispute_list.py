"""`spine disputes list`: the disputes as CSV or as an aligned text table for a terminal."""

from __future__ import annotations

import csv
from typing import IO

from db.dispute_list import LIST_COLUMNS, dispute_rows, list_query
from db.workspace import open_workspace
from spine_core.config import Settings
from spine_core.csv_safe import safe_dict


def _rows_for(settings: Settings, status: str) -> list[dict[str, str]]:
    list_query(status)  # refuse a bad status before opening the database
    ws = open_workspace(settings)
    with ws.sessions() as session:
        return dispute_rows(session, status)


def disputes_list_csv(settings: Settings, out_stream: IO[str], status: str = "open") -> int:
    """Write the disputes (``open``, ``decided`` or ``all``) as CSV; returns the number of rows."""
    rows = _rows_for(settings, status)
    writer = csv.DictWriter(out_stream, fieldnames=LIST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(safe_dict(r) for r in rows)  # no cell a spreadsheet runs as a formula
    return len(rows)


def disputes_list_table(settings: Settings, out_stream: IO[str], status: str = "open") -> int:
    """Write the disputes as an aligned text table for a terminal; returns the number of rows."""
    rows = _rows_for(settings, status)
    columns = [c for c in LIST_COLUMNS if c not in ("priority", "closed_at")]
    widths = {c: max([len(c), *(len(r[c]) for r in rows)]) for c in columns}
    out_stream.write("  ".join(c.ljust(widths[c]) for c in columns).rstrip() + "\n")
    for row in rows:
        out_stream.write("  ".join(row[c].ljust(widths[c]) for c in columns).rstrip() + "\n")
    if not rows:
        out_stream.write(f"(no {'' if status == 'all' else status + ' '}disputes)\n")
    return len(rows)
