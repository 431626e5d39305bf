"""Distillation: a small, fast student generator trained to imitate any CycleGAN generator.

``cyclegan-distill TEACHER DATAROOT -o RUN_DIR`` (also ``python -m training.distill``); see
:mod:`training.distill.trainer` for the objective and :mod:`training.distill.students` for the
students on offer. The run folder and its checkpoints follow the training rules (locked
folder, atomic self-describing checkpoints, exact resume); ``cyclegan-export`` takes a
student's checkpoint like any training checkpoint.
"""
