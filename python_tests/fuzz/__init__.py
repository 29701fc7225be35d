"""Seeded fuzzing of every sniper op (raw ``torch.ops.sniper.*``, the ``sniper_ext.ops`` wrappers and the
``sniper_ext.nn`` modules), each call in a child process so that a crash or a hang is reported, not fatal.

* ``cases.py``: what is called. ``make_case(seed, index)`` builds case ``index`` deterministically: a valid
  random call of one target (round robin over all targets), then zero to two hostile mutations.
* ``runner.py``: how it is called. ``run(...)`` drives child processes (forked from a forkserver that has
  imported torch) and returns one record per case; ``python -m fuzz.runner --seed S --case I`` (from
  ``python_tests``) replays one case in-process, with its traceback.

The acceptance rule is written down in ``python_tests/test_fuzz.py`` and implemented in ``cases.judge``.
"""
