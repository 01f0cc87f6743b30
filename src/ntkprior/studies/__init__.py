"""Built-in analyses on built-in or real data, each returning plain result objects that the
report lays out, the CLI prints and a notebook can use."""


def __getattr__(name):
    """Each study loads on first use (PEP 562): ``ntkprior.studies.coin`` without importing the others."""
    import importlib
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as error:
        if error.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
