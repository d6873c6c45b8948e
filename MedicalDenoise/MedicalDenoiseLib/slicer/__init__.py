"""The Slicer side without Qt, tested outside Slicer: ``logic`` (MRML nodes in, nodes out; the one module that
imports ``slicer``), ``background_job`` and ``process_tree`` (the command line in a child process, stopped
with all it started), ``comparison_view``, ``parameter_binding`` and ``dependencies`` (installing the
Python packages without touching Slicer's own). Only Slicer (or slicer-core in tests) imports it."""
