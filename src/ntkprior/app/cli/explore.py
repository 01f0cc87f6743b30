"""``ntkprior explore``: start the interactive explorer (a local web server) and open the browser."""

from __future__ import annotations

import socket
import webbrowser

import typer

from ntkprior.app.cli.base import app, example, fails_cleanly

LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: the Host headers a loopback server answers (anything else is another site's page: DNS rebinding)
LOOPBACK_HOSTS = ["127.0.0.1", "localhost"]


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port); port 0 picks a free one. A taken port is a ``ValueError``."""
    if not 0 <= port <= 65535:
        raise ValueError(f"--port: expected 0-65535 (0: any free port), got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ValueError(f"--host/--port: cannot listen on {host}:{port} ({exc.strerror}); pick another "
                         "--port (0: any free port)") from None
    sock.listen(128)
    return sock


@app.command("explore", epilog=example("ntkprior explore", "ntkprior explore --port 8051 --no-browser"))
@fails_cleanly
def explore(host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (default: this machine "
                                     "only; anything else lets others on the network use it)"),
            port: int = typer.Option(8050, "--port", help="port to listen on (0: any free port)"),
            no_browser: bool = typer.Option(False, "--no-browser", help="do not open a browser tab"),
            time_limit: float = typer.Option(300.0, "--time-limit", help="seconds a training run may take "
                                             "before it is stopped"),
            ) -> None:
    """Explore the prior in the browser: add training points with the mouse, change the architecture,
    and watch the NNGP, NTK-GP and gradient-descent posteriors, the eigenmodes and candidate labels
    follow; train real networks beside them. Needs `pip install "ntkprior[explore]"`.
    """
    try:
        import uvicorn

        from ntkprior.app.explore.server import create_app
    except ImportError as exc:
        raise ValueError(f'explore: needs the explorer\'s dependencies ({exc.name} is missing); '
                         'pip install "ntkprior[explore]"') from None
    if not time_limit > 0:
        raise ValueError(f"--time-limit: expected a positive number of seconds, got {time_limit:g}")
    sock = bind_socket(host, port)
    bound = sock.getsockname()[1]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{bound}/"
    if host not in LOOPBACK:
        typer.echo(f"warning: listening on {host}: anyone who can reach it can use the explorer", err=True)
    allowed = LOOPBACK_HOSTS if host in ("127.0.0.1", "localhost") else None
    server = uvicorn.Server(uvicorn.Config(create_app(time_limit=time_limit, allowed_hosts=allowed),
                                           log_level="warning"))
    typer.echo(f"ntkprior explore: {url}  (Ctrl-C stops it)")
    if not no_browser:
        webbrowser.open(url)
    server.run(sockets=[sock])
