"""One search run, from the request to the outputs.

- :mod:`.request`: what to tune, parsed and validated once (program, resources, config, space);
- :mod:`.session`: one search run: the results folder held, the strategy run, interruption,
  the outputs written and the optimal command;
- :mod:`.outcome`: what every strategy returns (:class:`~.outcome.SearchOutcome` of
  :class:`~.outcome.Measurement`) and the runner it needs;
- :mod:`.strategy`: the strategy protocol and its two kinds, ``measured`` (:mod:`.measured`,
  DeepSpeed's order, every candidate run for real) and ``simulated`` (:mod:`.simulated`, an
  Optuna study over the cost model, the top predictions verified by :mod:`.verify`);
- :mod:`.twin`: an in-memory twin of the runner for testing search logic;
- :mod:`.outputs`: summary.txt, ds_config_optimal.json, cmd_optimal.txt, results.json,
  predictions.json.

Nothing is imported here, so that :mod:`simtune.dsconfig` can read a storage URL with
:mod:`.study_storage` without loading the strategies.
"""
