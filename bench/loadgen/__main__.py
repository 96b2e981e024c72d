"""``python -m bench.loadgen clients|publish|followers``: see :mod:`bench.loadgen`."""

from __future__ import annotations

import argparse
import ctypes
import time

from bench.procs import raise_nofile


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.loadgen", description="load generator for scripts/bench"
    )
    sub = parser.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("clients")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--proto", choices=["bus", "socketio"], default="bus")
    c.add_argument("--deadline", type=float, default=1800.0)
    p = sub.add_parser("publish")
    p.add_argument("--port", required=True, help="port, or ports separated by commas")
    p.add_argument("--path", default="/api/websocket/broadcast")
    p.add_argument("--conns", type=int, default=4)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument(
        "--rate", type=float, default=0.0, help="events/s in total (0: as fast as possible)"
    )
    p.add_argument("--pad", type=int, default=0, help="extra characters in each event")
    p.add_argument("--count", type=int, default=0, help="stop after this many events (0: none)")
    p.add_argument(
        "--batch", type=int, default=0, help="events per request, as {'events': [...]} (0: one)"
    )
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per HTTP exchange")
    p.add_argument("--deadline", type=float, default=600.0)
    f = sub.add_parser("followers")
    f.add_argument("--ports", required=True, help="ports separated by commas")
    f.add_argument("--clients", type=int, default=10)
    f.add_argument("--kind", choices=["resuming", "steady"], default="resuming")
    f.add_argument("--live", type=float, default=0.5, help="seconds connected per visit")
    f.add_argument("--away", type=float, default=0.2, help="seconds disconnected between visits")
    f.add_argument("--timeout", type=float, default=10.0)
    f.add_argument("--deadline", type=float, default=600.0)
    return parser.parse_args(argv)


def keep_buffers_on_the_heap() -> None:
    """Fix glibc's mmap threshold at 1 MiB and its trim threshold at 4 MiB, so that the 256 KiB
    receive buffers come from the heap and stay there. At glibc's defaults (128 KiB, raised only
    by chance when some earlier large block is freed) each read could also cost an mmap, an
    mremap and a munmap (or two brk), and the clients' system CPU would depend on what the
    process happened to allocate before."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 4 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def main() -> None:
    args = parse_args()
    raise_nofile()
    keep_buffers_on_the_heap()
    if args.mode == "clients":
        from bench.loadgen.subscribers import Clients

        Clients(args.port, args.proto, time.monotonic() + args.deadline).run()
    elif args.mode == "followers":
        from bench.loadgen.followers import followers

        followers(args)
    else:
        from bench.loadgen.publisher import Publisher

        Publisher(args).run()


if __name__ == "__main__":
    main()
