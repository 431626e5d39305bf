"""``python -m cyclegan_export`` is ``cyclegan-export``."""

from cyclegan_export.cli import main

main(prog_name="cyclegan-export")
