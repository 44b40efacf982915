"""The `spine` command line: an interface like the pages, above ``db`` and ``spine_core``."""
