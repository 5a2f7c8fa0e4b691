"""Root conftest: keep `python -m hrflow`'s entry module out of doctest collection."""

collect_ignore = ["hrflow/__main__.py"]
