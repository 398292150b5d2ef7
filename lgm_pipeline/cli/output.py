"""What ``lgm sync`` prints, and where: progress on stderr, the summary on stdout.

Dagster's event log (hundreds of DEBUG events per sync) always reaches the instance, so the UI shows it;
the terminal gets it only with ``--verbose``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

#: Dagster's console logger level when not --verbose: above ERROR, so step failures (with their stack
#: traces) stay in the instance and the summary says what failed, in one line, with the run id.
QUIET_DAGSTER_LEVEL = "CRITICAL"


@dataclass(frozen=True)
class Output:
    verbose: bool = False
    quiet: bool = False
    json: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Output:
        return cls(
            verbose=bool(getattr(args, "verbose", False)),
            quiet=bool(getattr(args, "quiet", False)),
            json=bool(getattr(args, "json", False)),
        )

    @property
    def dagster_level(self) -> str | None:
        """The console level for the runs (None: Dagster's own, DEBUG)."""
        return None if self.verbose else QUIET_DAGSTER_LEVEL

    def progress(self, message: str) -> None:
        if not self.quiet:
            print(f"  {message}", file=sys.stderr, flush=True)

    def notice(self, message: str) -> None:
        """Shown even with --quiet (an interruption)."""
        print(message, file=sys.stderr, flush=True)

    def error(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def summary(self, text: str) -> None:
        print(text, flush=True)


@contextmanager
def hide_dagster_warnings(verbose: bool) -> Iterator[None]:
    """Without --verbose, no beta/preview/superseded warnings from Dagster: they address the developers."""
    if verbose:
        yield
        return
    from dagster_shared.utils.warnings import BetaWarning, PreviewWarning, SupersessionWarning

    with warnings.catch_warnings():
        for category in (BetaWarning, PreviewWarning, SupersessionWarning):
            warnings.filterwarnings("ignore", category=category)
        yield
