"""``python -m runtime``: the same as ``cyclegan-run``."""

from runtime.cli import main

if __name__ == "__main__":
    main(prog_name="cyclegan-run")
