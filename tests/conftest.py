"""Session-wide set-up for every test."""

from __future__ import annotations

import signal

# A suite started in the background by a non-interactive shell (`nohup make test &`, some CI
# runners) inherits SIGINT ignored, and so would every migbench it starts: the tests of Ctrl-C
# (KeyboardInterrupt in the runner, a SIGINTed `migbench run` exiting 130) would then test
# nothing and fail. Python's own handler is restored here; a handled signal is reset to its
# default in the children, so they get Ctrl-C too.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
