"""`python -m tests.ops.images [--log-dir DIR]`: build the container test's images (stand-in
bases, then the project's image), reusing what is cached; print their tags as JSON."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
from pathlib import Path

from tests.ops.images import EXIT_FILE, ImageBuildError, build_all


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.ops.images", description=__doc__)
    parser.add_argument(
        "--log-dir", type=Path, default=None, help="build logs, one per image (default: a temp dir)"
    )
    args = parser.parse_args()
    # Stopped (the test session ended first): unwind, so a half-made root filesystem is removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="lehnz-image-build-"))
    print(f"build logs in {log_dir}", file=sys.stderr, flush=True)
    code = 1
    try:
        tags = build_all(log_dir)
        print(json.dumps(tags, indent=2), flush=True)
        code = 0
    except ImageBuildError as error:
        print(error, file=sys.stderr)
    finally:
        # For a process that did not start the build (another pytest-xdist worker): it is over.
        (log_dir / EXIT_FILE).write_text(str(code))
    return code


if __name__ == "__main__":
    sys.exit(main())
