"""``python -m training`` is ``cyclegan-train`` (handy under ``torchrun -m training``)."""

from training.cli import main

main()
