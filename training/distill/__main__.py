"""``python -m training.distill``: the same as ``cyclegan-distill``."""

from training.distill.cli import main

if __name__ == "__main__":
    main(prog_name="cyclegan-distill")
