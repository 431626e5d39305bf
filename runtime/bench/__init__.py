"""``cyclegan-bench``: engines side by side (:mod:`.benchmark`), the end-to-end paths
(:mod:`.e2e`), the machine (:mod:`.machine`), multiply-accumulate counts (:mod:`.macs`) and the
report (:mod:`.report`)."""
