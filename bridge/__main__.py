"""``python -m bridge ...`` is the same as the ``monbridge`` command."""

from bridge.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
