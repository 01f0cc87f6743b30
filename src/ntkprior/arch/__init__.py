"""One description of a network -> its finite torch module and its infinite-width kernel map:
layers (``layers``) and the one-line architecture grammar (``spec``)."""
