#!/usr/bin/env python3
"""Copies bench/results/core.md into docs/benchmarks.md, between the
<!-- core-table:begin --> and <!-- core-table:end --> markers.

usage: update_docs.py DOC.md TABLE.md
"""
import sys

doc, table = sys.argv[1], open(sys.argv[2]).read()
text = open(doc).read()
begin, end = "<!-- core-table:begin -->", "<!-- core-table:end -->"
head, rest = text.split(begin, 1)
_, tail = rest.split(end, 1)
with open(doc, "w") as f:
    f.write(head + begin + "\n" + table + end + tail)
