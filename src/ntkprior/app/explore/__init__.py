"""``ntkprior explore``: the prior you can touch, in the browser.

A small local web server (:mod:`~ntkprior.app.explore.server`, FastAPI) over the library
(:mod:`~ntkprior.app.explore.views`: every number on the page is a call into ``ntkprior``) and a
static page (``static/``: plotly.js from the installed ``plotly`` package, no CDN). Training runs
go to child processes (:mod:`~ntkprior.app.explore.jobs`). Needs ``pip install "ntkprior[explore]"``.
"""
