"""report.html: a gap run (or a comparison of runs) explored item by item, in a browser.

``items.py`` joins each item's answers with what it said and the clips it was heard in,
``audio.py`` copies those clips beside the page, ``build.py`` writes the page and opens it;
``assets/`` holds its plain script, style and template.
"""

from salad_eval.page.build import (
    find_page,
    open_page,
    rebuild_run_page,
    write_comparison_page,
    write_run_page,
)

__all__ = [
    "find_page",
    "open_page",
    "rebuild_run_page",
    "write_comparison_page",
    "write_run_page",
]
