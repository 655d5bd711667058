"""The book's programs (Mac OS X Internals, chapter 8), ported to pymach.

Each ``name.py`` is a line-by-line port of ``name.c`` to pymach.mach; each
``name_pythonic.py`` does the same with the Pythonic layer. Run them with
``python -m pymach.examples.NAME``.
"""
