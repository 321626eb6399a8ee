"""The application on top of the sj_qvm library: the ``sj-qvm`` command and the jobs it runs.

* :mod:`.cli`: the ``sj-qvm`` command (``sj-qvm demo``, ``--version``).
* :mod:`.digits`: the handwritten-digits job.
* The DVS training pipeline (``examples/*/train.py``): :mod:`.pipeline_args` (its command line),
  :mod:`.pipeline` (the job: data, training through :func:`sj_qvm.qat.fit`, conversion),
  :mod:`.registry` (the datasets it trains on), :mod:`.ddp` (torch.distributed setup),
  :mod:`.evaluate` (accuracy over T, results.json and the report files), :mod:`.report` (what the
  terminal shows), :mod:`.checkpoint` and :mod:`.run_folder` (the output folder).
* :mod:`.arguments`: the command lines' shared parser rules (one-line errors, exit code 2).

The library (``import sj_qvm``) never imports this package.
"""
