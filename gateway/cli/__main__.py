"""``python -m gateway.cli``: the same as the ``slimserve`` command."""
import sys

from gateway.cli.main import main

sys.exit(main())
