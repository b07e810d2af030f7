"""``python -m harness``: the command line (:func:`harness.cli.main`); what ``torchrun ... -m harness sweep`` and
``accelerate launch -m harness sweep`` run in every process."""

import sys

if __name__ == "__main__":
    from harness.cli import main

    sys.exit(main())
