"""Comparison harness: GITSTORM against rl_zoo3's model-free algorithms, with rliable statistics and plots.

``python benchmarks/compare.py --config benchmarks/configs/cpu.yml --out runs/cpu`` (or
``python -m sb3_gitstorm.comparison.compare``) trains every (environment, algorithm, seed) of the
configuration (:mod:`~sb3_gitstorm.comparison.sweep_config`) in local worker processes or as Ray tasks
(:mod:`~sb3_gitstorm.comparison.sweep`), each with rl_zoo3's ``ExperimentManager`` and evaluated along
the way (:mod:`~sb3_gitstorm.comparison.runner`), then writes ``results.json``, ``summary.md`` and
``curves.png`` (:mod:`~sb3_gitstorm.comparison.report`). Needs the ``zoo`` extra (and ``ray`` for Ray).
"""
