"""``python -m runtime.bench``: the same as ``cyclegan-bench``."""

from runtime.bench.cli import main

if __name__ == "__main__":
    main(prog_name="cyclegan-bench")
