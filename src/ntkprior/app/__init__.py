"""What a person touches: the command line (``cli``), the HTML report (``report``, layout only)
and the figures (``plots``, no computation)."""
