"""Built-in analyses on built-in or real data, each returning plain result objects that the
report lays out, the CLI prints and a notebook can use."""
